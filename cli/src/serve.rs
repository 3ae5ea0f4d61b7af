//! `runanywhere serve`: the server library (`runanywhere-server`) on a tokio runtime,
//! stopped by Ctrl-C or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use runanywhere::{LoadOptions, ManagerConfig, Runtime, RuntimeConfig};
use runanywhere_server::{Server, ServerConfig};

use super::args::ServeArgs;

pub(crate) fn run(
    plugin_dirs: Vec<PathBuf>,
    workers: runanywhere::WorkerConfig,
    args: &ServeArgs,
) -> anyhow::Result<ExitCode> {
    let ip: IpAddr = match args.host.as_str() {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        host => host.parse().with_context(|| {
            format!("--host `{host}` is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)")
        })?,
    };
    if !ip.is_loopback() && args.api_key.is_none() {
        eprintln!(
            "warning: listening on {ip} without --api-key: anyone who can reach this machine \
             can use the models"
        );
    }
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        plugin_dirs,
        models: ManagerConfig {
            budget: args.memory_budget,
            keep_alive: args.keep_alive,
        },
        workers,
        ..RuntimeConfig::default()
    }));
    let config = ServerConfig {
        models: args.models.clone(),
        aliases: args.aliases.clone(),
        load: LoadOptions {
            context_length: args.ctx_size,
            threads: args.threads,
            force: args.force,
            parallel: u32::try_from(args.parallel.max(1)).unwrap_or(u32::MAX),
            ..LoadOptions::default()
        },
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        parallel: args.parallel.max(1),
        max_queue: args.max_queue,
        cors_origins: args.cors_origins.clone(),
        max_body_bytes: usize::try_from(args.max_body).unwrap_or(usize::MAX),
        max_tokens: args.max_tokens.max(1),
        request_timeout: args.request_timeout,
        drain_timeout: args.drain_timeout,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runanywhere-serve")
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let server = Server::bind(runtime, config, SocketAddr::new(ip, args.port)).await?;
        let addr = server.local_addr().context("reading the bound address")?;
        eprintln!(
            "runanywhere serve: listening on http://{addr} (web app at /, OpenAI API under \
             /v1, Ollama API under /api; Ctrl-C stops)"
        );
        server.run(shutdown_signal()).await?;
        eprintln!("runanywhere serve: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    // Models unload as the runtime drops; leftover blocking threads are not waited for.
    tokio.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
