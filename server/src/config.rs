//! What `runanywhere serve` is told on its command line.

use std::time::Duration;

use runanywhere::LoadOptions;

/// The server's settings. `Default` is what `serve` uses without flags.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Models to load at start (`--model`): paths, store ids or catalog ids, each
    /// optionally `@ENGINE`. They are listed by `/v1/models`, and only these may be
    /// file paths: a path in a request is refused.
    pub models: Vec<String>,
    /// `NAME=MODEL` aliases (`--alias`): requests for NAME get MODEL.
    pub aliases: Vec<(String, String)>,
    /// How every model is loaded (context length, threads, ...); the engine comes from
    /// the model reference.
    pub load: LoadOptions,
    /// When set, every route but `/health` needs `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Generations that may run together on one model where its engine decodes
    /// sequences in parallel; elsewhere they take turns.
    pub parallel: usize,
    /// Requests that may wait for one model beyond those running; more get `503`.
    pub max_queue: usize,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes (larger: `413`).
    pub max_body_bytes: usize,
    /// Most tokens one request may generate (a larger `max_tokens`: `400`); also the
    /// limit of a request that names none.
    pub max_tokens: u32,
    /// A generation still running after this long is cancelled (`504`).
    pub request_timeout: Duration,
    /// On shutdown, how long in-flight generations may take to finish before they are
    /// cancelled.
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            models: Vec::new(),
            aliases: Vec::new(),
            load: LoadOptions::default(),
            api_key: None,
            parallel: 1,
            max_queue: 64,
            cors_origins: Vec::new(),
            max_body_bytes: 16 << 20,
            max_tokens: 4096,
            request_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
