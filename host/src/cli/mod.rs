//! Command-line interface. The command and flag names are a contract other tools rely on.

mod args;
mod bench;
mod chat;
mod engines;
mod run;
mod tokenize;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) use args::Cli;
use args::Command;
use runanywhere::registry::{search_dirs, Registry};

/// Sets up `tracing` to stderr: warnings by default, more with `-v`, or `RUNANYWHERE_LOG`.
pub(crate) fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNANYWHERE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = Registry::discover(&search_dirs(&cli.plugins_dir));
    match cli.command {
        Command::Engines(args) => engines::run(&registry, &args),
        Command::Run(args) => run::run(&registry, &args),
        Command::Tokenize(args) => tokenize::run(&registry, &args),
        Command::Bench(args) => bench::run(&registry, &args),
        Command::Chat(args) => chat::run(&registry, &args),
    }
}

/// Loads the model named by `args` on the engine the registry selects.
/// Returns the model and the load time in milliseconds.
pub(crate) fn load_model(
    registry: &Registry,
    args: &args::ModelArgs,
    vocab_only: bool,
    seed: u64,
) -> anyhow::Result<(runanywhere::Model, f64)> {
    let path = std::path::Path::new(&args.model);
    let engine = registry.select(path, args.engine.as_deref())?;
    tracing::info!(engine = engine.id(), model = %args.model, "loading model");
    let request = runanywhere::LoadRequest {
        model_path: args.model.as_str().into(),
        tokenizer_path: args
            .tokenizer
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned().into())
            .into(),
        context_length: args.ctx_size,
        threads: args.threads,
        batch_size: args.batch_size,
        gpu_layers: args.gpu_layers,
        vocab_only,
        seed,
        extensions: Default::default(),
    };
    let start = std::time::Instant::now();
    let model = engine.load_model(request)?;
    Ok((model, start.elapsed().as_secs_f64() * 1000.0))
}

/// A seed from the clock, for runs without --seed.
pub(crate) fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Set by Ctrl-C; token sinks then ask the engine to stop.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C stops the current generation (the sink sees [`INTERRUPTED`]); a second Ctrl-C
/// before it is cleared exits.
pub(crate) fn install_ctrl_c() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}
