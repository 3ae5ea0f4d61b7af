//! Engines in their own process: a crashing engine never takes the host down.
//!
//! An engine runs either inside the host ([`Isolation::InProcess`], abi_stable objects
//! called directly: the fastest path) or in a **worker** ([`Isolation::Process`]): a
//! child process (`runanywhere worker`, see [`run`]) that opens the same plugin library
//! and serves that one engine over a framed protocol on its stdin and stdout
//! ([`protocol`]). [`crate::Engine`] and [`crate::Model`] hide which; the worker side
//! of them is [`client`].
//!
//! What the process boundary buys, and how each part of it works:
//! - **Crashes are errors.** A worker that dies (a signal, an abort, an exit) fails the
//!   calls in flight with [`Error::EngineCrashed`](crate::Error::EngineCrashed), naming
//!   the signal or exit code and the last lines it wrote to stderr. The next request
//!   starts a fresh worker; after repeated crashes, only once a growing delay has passed
//!   ([`client`]), and the engine is listed as unhealthy with the reason meanwhile.
//! - **Hangs are crashes.** The worker sends a heartbeat every [`HEARTBEAT`] with how
//!   long each generation has gone without a token or a cancel check (the kit's loops
//!   check between prefill chunks, so a long prefill is progress). A worker silent, or
//!   a generation idle, for longer than [`WorkerConfig::hang_timeout`] is killed and
//!   reported like a crash.
//! - **Memory.** [`WorkerConfig::memory_limit`] caps each worker's address space
//!   (`RLIMIT_AS`): an engine that runs away is refused memory and dies alone.
//! - **No orphans.** A worker exits when its stdin closes, which the kernel does when
//!   the host dies for any reason (SIGKILL included), and when its parent changes. It
//!   runs in its own process group, so the terminal's Ctrl-C reaches the host (which
//!   cancels the generation) rather than killing the worker.
//! - **Cancellation and logs** cross as messages: a cancel stops the worker's
//!   generation within a token (or a prefill chunk); the plugin's log records arrive in
//!   the host's log under the same `plugin` target as in-process.

pub(crate) mod client;
pub(crate) mod protocol;
mod serve;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{Crash, Exit, Health};
pub use serve::run;

/// How often a worker says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Where an engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Isolation {
    /// Inside the host process: fastest, but a crash of the engine is a crash of the host.
    #[default]
    #[serde(rename = "inproc")]
    InProcess,
    /// In a worker process of its own.
    #[serde(rename = "process")]
    Process,
}

impl Isolation {
    /// The name used in manifests and flags: `inproc` or `process`.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::InProcess => "inproc",
            Isolation::Process => "process",
        }
    }

    /// The isolation named `text` (`inproc`, `process`).
    pub fn parse(text: &str) -> Option<Isolation> {
        match text {
            "inproc" => Some(Isolation::InProcess),
            "process" => Some(Isolation::Process),
            _ => None,
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Environment variable naming the executable that runs workers (`<exe> worker ...`),
/// for programs other than `runanywhere` that use the library with process isolation.
pub const WORKER_EXE_ENV: &str = "RUNANYWHERE_WORKER_EXE";

/// How engines are isolated, and how their workers run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The isolation of every engine, whatever its manifest says (`--isolation`).
    pub force: Option<Isolation>,
    /// The isolation of engines whose manifest does not choose one (the CLI runs them
    /// in-process, a server in workers).
    pub default: Isolation,
    /// The executable whose `worker` subcommand runs a worker (`None`: the
    /// [`WORKER_EXE_ENV`] variable, else this executable).
    pub program: Option<PathBuf>,
    /// A worker silent, or a generation with no token and no progress, for this long is
    /// killed as hung.
    pub hang_timeout: Duration,
    /// Address-space limit of each worker, in bytes.
    pub memory_limit: Option<u64>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            force: None,
            default: Isolation::InProcess,
            program: None,
            hang_timeout: Duration::from_secs(120),
            memory_limit: None,
        }
    }
}

impl WorkerConfig {
    /// The isolation of the engine of `manifest`.
    pub fn isolation_of(&self, manifest: &crate::manifest::Manifest) -> Isolation {
        self.force.or(manifest.isolation).unwrap_or(self.default)
    }

    /// The executable to run workers with.
    pub(crate) fn program(&self) -> std::io::Result<PathBuf> {
        if let Some(p) = &self.program {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os(WORKER_EXE_ENV).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        std::env::current_exe()
    }
}
