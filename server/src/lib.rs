//! The RunAnywhere server: the runtime as a long-running service with OpenAI- and
//! Ollama-compatible HTTP APIs, so editors, chat front ends and the `openai` / `ollama`
//! client libraries can use local models.
//!
//! It is a front end like the CLI: it parses requests, maps errors to statuses and
//! frames responses; everything else (model resolution, loading and keep-alive, chat
//! templates, generation) is the [`runanywhere`] runtime's. One module per route family,
//! after mistral.rs's server: [`openai`] (chat completions, completions, embeddings,
//! models), [`ollama`], [`streaming`] (a generation as a stream of steps), [`metrics`]
//! (Prometheus), [`manage`] (our own routes: catalog, store, unload, benchmark,
//! defaults), [`ui`] (the web app at `/`), [`router`] (routes and the layers around
//! them: API key, CORS, body limit, panics → 500).
//!
//! Generations run on tokio's blocking pool ([`jobs`]); a client that disconnects
//! cancels its generation within one token. Shutdown ([`Server::run`]'s future) stops
//! accepting connections, lets in-flight generations finish for
//! [`ServerConfig::drain_timeout`], cancels the rest, and returns.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runanywhere_server::ServeError> {
//! use std::sync::Arc;
//! use runanywhere::{Runtime, RuntimeConfig};
//! use runanywhere_server::{Server, ServerConfig};
//!
//! let runtime = Arc::new(Runtime::new(RuntimeConfig::default()));
//! let server = Server::bind(runtime, ServerConfig::default(), "127.0.0.1:8080".parse().unwrap()).await?;
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod config;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod manage;
pub mod metrics;
pub mod names;
pub mod ollama;
pub mod openai;
pub mod router;
pub mod state;
pub mod streaming;
pub mod ui;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use runanywhere::Runtime;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::ServerConfig;
pub use error::ApiError;
pub use state::AppState;

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or accepting failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// A model named on the command line could not be loaded.
    #[error("cannot load `{model}`: {message}")]
    Preload {
        /// The model.
        model: String,
        /// Why.
        message: String,
    },
}

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    listener: TcpListener,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port: see [`Server::local_addr`]).
    pub async fn bind(
        runtime: Arc<Runtime>,
        config: ServerConfig,
        addr: SocketAddr,
    ) -> Result<Server, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io {
                context: format!("cannot listen on {addr}"),
                source,
            })?;
        let state = AppState::new(runtime, config);
        state.loopback.store(
            addr.ip().is_loopback(),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Server { state, listener })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (for tests and front ends that add routes).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, loading the command line's models meanwhile
    /// (`/health` says `loading` until they are). Then drains: no new connections,
    /// in-flight generations get [`ServerConfig::drain_timeout`] to finish before they are
    /// cancelled, and connections still open a few seconds after that are closed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Server { state, listener } = self;
        let _reaper = state.runtime.models().spawn_reaper(Duration::from_secs(1));
        let (stop_tx, stop_rx) = watch::channel(false);
        let preload = tokio::spawn(preload(state.clone()));
        let signal = {
            let stop_tx = stop_tx.clone();
            async move {
                shutdown.await;
                tracing::info!(
                    "shutting down: no new connections; in-flight generations may finish"
                );
                let _ = stop_tx.send(true);
            }
        };
        let app = router::router(state.clone());
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .into_future();
        let drain = state.config.drain_timeout;
        let jobs = Arc::clone(&state.jobs);
        let mut stopped = stop_rx.clone();
        let deadline = async move {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(drain).await;
            let n = jobs.cancel_all();
            if n > 0 {
                tracing::warn!("cancelled {n} generations still running after the drain time");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        let mut preload = preload;
        let mut preload_done = false;
        tokio::pin!(server, deadline);
        loop {
            tokio::select! {
                result = &mut server => {
                    return result.map_err(|source| ServeError::Io { context: "serving".into(), source });
                }
                () = &mut deadline => {
                    tracing::warn!("connections still open after the drain time; closing them");
                    return Ok(());
                }
                loaded = &mut preload, if !preload_done => {
                    preload_done = true;
                    match loaded {
                        Ok(Ok(())) => state.ready.store(true, Ordering::Relaxed),
                        Ok(Err(e)) => return Err(e),
                        Err(e) => return Err(ServeError::Preload { model: "?".into(), message: e.to_string() }),
                    }
                }
            }
        }
    }
}

/// Loads the models the command line named.
async fn preload(state: AppState) -> Result<(), ServeError> {
    for served in state
        .names
        .served()
        .iter()
        .filter(|s| s.preload)
        .cloned()
        .collect::<Vec<_>>()
    {
        tracing::info!(model = %served.name, "loading");
        state
            .load(&served.name, |_| {})
            .await
            .map_err(|e| ServeError::Preload {
                model: served.name.clone(),
                message: e.message,
            })?;
    }
    Ok(())
}
