//! The host's side of a worker: starting it, talking to it, noticing its death.
//!
//! [`WorkerEngine`] supervises one engine's worker: it starts one when a call needs it
//! (after a crash, only once [`Health::restart_in`] has passed), and lists the
//! engine's health. [`Connection`] is one worker process: a reader thread dispatches
//! its events to the calls waiting for them (one channel per call, by request id), a
//! second thread keeps the last lines of its stderr, and when the stream ends the
//! reader reaps the process and records why it died, failing every call in flight
//! with that [`Crash`]. [`RemoteModel`] is a model loaded in a worker.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use runanywhere_plugin_api::{
    EngineError, EngineInfo, GenerateRequest, GenerationStats, LoadRequest, ModelInfo, Prompt,
    SinkControl, StopReason,
};
use serde::Serialize;

use super::protocol::{read_frame, write_frame, Event, Reply, Request, WireError, WireToken};
use super::WorkerConfig;
use crate::cancel::CancelToken;
use crate::manifest::Manifest;
use crate::registry::UnavailableKind;

/// How long a new worker may take to open and initialise its plugin.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a waiting call looks at its cancel token and the worker's signs of life.
const POLL: Duration = Duration::from_millis(50);
/// Lines of a worker's stderr kept for its crash report.
const STDERR_LINES: usize = 12;
/// The longest wait before restarting a worker that keeps crashing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a worker ended.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Killed by a signal (its number): a segfault, an abort, SIGKILL.
    Signal(i32),
    /// Exited on its own with this status.
    Code(i32),
    /// Killed by the host after this long without a sign of life or progress.
    Hung(Duration),
    /// Killed by the host because its messages made no sense (or could not be sent).
    Protocol(String),
    /// Could not be started at all.
    Start(String),
}

impl Exit {
    fn of(status: std::process::ExitStatus) -> Exit {
        match (status.signal(), status.code()) {
            (Some(signal), _) => Exit::Signal(signal),
            (None, Some(code)) => Exit::Code(code),
            (None, None) => Exit::Protocol(format!("ended with {status}")),
        }
    }
}

/// The conventional name of a signal, for messages.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV (segmentation fault)",
        libc::SIGABRT => "SIGABRT (aborted)",
        libc::SIGBUS => "SIGBUS (bus error)",
        libc::SIGFPE => "SIGFPE (arithmetic error)",
        libc::SIGILL => "SIGILL (illegal instruction)",
        libc::SIGKILL => "SIGKILL (killed, e.g. by the out-of-memory killer)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "a signal",
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Signal(s) => write!(
                f,
                "its worker was killed by signal {s}, {}",
                signal_name(*s)
            ),
            Exit::Code(c) => write!(f, "its worker exited with status {c}"),
            Exit::Hung(after) => write!(
                f,
                "its worker showed no progress for {:.1} s and was killed as hung",
                after.as_secs_f64()
            ),
            Exit::Protocol(why) => write!(f, "its worker broke the protocol and was killed: {why}"),
            Exit::Start(why) => write!(f, "its worker could not be started: {why}"),
        }
    }
}

/// Why a worker died: how it ended and the last lines it wrote to stderr.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Crash {
    /// How it ended.
    pub exit: Exit,
    /// Its last lines of stderr (oldest first).
    pub stderr: Vec<String>,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.exit)?;
        if !self.stderr.is_empty() {
            write!(f, "; its last output: {}", self.stderr.join(" | "))?;
        }
        Ok(())
    }
}

/// How an engine's worker has been doing, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Crashes since the last call that succeeded (0: healthy).
    pub crashes_in_a_row: u32,
    /// The last crash, if any.
    pub last_crash: Option<Crash>,
    /// How long until the next worker may start (after repeated crashes).
    pub restart_in: Option<Duration>,
}

impl Health {
    /// A sentence for the engine listing, when the engine is unhealthy.
    pub fn problem(&self) -> Option<String> {
        let crash = self
            .last_crash
            .as_ref()
            .filter(|_| self.crashes_in_a_row > 0)?;
        let times = match self.crashes_in_a_row {
            1 => "crashed".to_string(),
            n => format!("crashed {n} times in a row"),
        };
        let next = match self.restart_in {
            Some(wait) => format!(
                "the next worker starts in {:.0} s",
                wait.as_secs_f64().ceil()
            ),
            None => "the next request starts a new worker".to_string(),
        };
        Some(format!("the engine {times} ({crash}); {next}"))
    }
}

#[derive(Debug, Default)]
struct HealthState {
    in_a_row: u32,
    last: Option<(Instant, Crash)>,
}

impl HealthState {
    /// The wait before the next start: none after one crash, then 1 s, 2 s, 4 s, ...
    fn restart_in(&self) -> Option<Duration> {
        let (at, _) = self.last.as_ref()?;
        if self.in_a_row < 2 {
            return None;
        }
        let backoff = Duration::from_secs(1u64 << (self.in_a_row - 2).min(5)).min(MAX_BACKOFF);
        backoff.checked_sub(at.elapsed()).filter(|d| !d.is_zero())
    }

    fn snapshot(&self) -> Health {
        Health {
            crashes_in_a_row: self.in_a_row,
            last_crash: self.last.as_ref().map(|(_, c)| c.clone()),
            restart_in: self.restart_in(),
        }
    }
}

/// Why a call to a worker failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The engine returned an error (the worker is fine).
    Engine(EngineError),
    /// The worker died (or was killed) during the call.
    Crashed(Crash),
    /// The worker keeps crashing and will not be restarted yet.
    Backoff(String),
}

/// One engine served by workers, restarted after crashes.
pub(crate) struct WorkerEngine {
    id: String,
    manifest: PathBuf,
    config: WorkerConfig,
    current: Mutex<Option<Arc<Connection>>>,
    health: Arc<Mutex<HealthState>>,
}

impl std::fmt::Debug for WorkerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerEngine")
            .field("id", &self.id)
            .finish()
    }
}

impl WorkerEngine {
    /// Starts the worker for `manifest` and returns it with the engine's info, or the
    /// ledger entry's kind and reason when the engine cannot be had.
    pub(crate) fn start(
        manifest: &Manifest,
        config: &WorkerConfig,
    ) -> Result<(WorkerEngine, EngineInfo), (UnavailableKind, String)> {
        let engine = WorkerEngine {
            id: manifest.id.clone(),
            manifest: manifest.path.clone(),
            config: config.clone(),
            current: Mutex::new(None),
            health: Arc::default(),
        };
        let (connection, ready) =
            Connection::spawn(&engine.id, &engine.manifest, &engine.config, &engine.health)
                .map_err(|crash| {
                    (
                        UnavailableKind::WorkerFailed,
                        format!("the engine could not be started in a worker: {crash}"),
                    )
                })?;
        let info = ready.map_err(|u| {
            connection.close();
            (u.kind, u.reason)
        })?;
        *lock(&engine.current) = Some(connection);
        Ok((engine, info.into()))
    }

    /// How the engine's workers have been doing.
    pub(crate) fn health(&self) -> Health {
        lock(&self.health).snapshot()
    }

    /// Loads a model in the worker (starting one if none is running).
    pub(crate) fn load_model(
        &self,
        request: &LoadRequest,
    ) -> Result<(RemoteModel, ModelInfo), CallError> {
        let connection = self.connection()?;
        match connection.call(|id| Request::Load {
            id,
            request: request.into(),
        })? {
            Reply::Loaded {
                model,
                info,
                extensions,
            } => Ok((
                RemoteModel {
                    connection,
                    handle: model,
                    extensions,
                },
                info.into(),
            )),
            other => Err(unexpected("a load", &other)),
        }
    }

    /// The running worker, or a new one.
    fn connection(&self) -> Result<Arc<Connection>, CallError> {
        let mut current = lock(&self.current);
        if let Some(c) = current.as_ref().filter(|c| c.is_alive()) {
            return Ok(Arc::clone(c));
        }
        *current = None;
        let health = lock(&self.health).snapshot();
        if let (Some(wait), Some(problem)) = (health.restart_in, health.problem()) {
            tracing::debug!(engine = %self.id, ?wait, "not restarting the worker yet");
            return Err(CallError::Backoff(problem));
        }
        tracing::info!(engine = %self.id, "starting a new worker");
        let (connection, ready) =
            Connection::spawn(&self.id, &self.manifest, &self.config, &self.health)
                .map_err(CallError::Crashed)?;
        if let Err(u) = ready {
            connection.close();
            return Err(CallError::Engine(EngineError::internal(format!(
                "the engine's new worker could not initialise it: {}",
                u.reason
            ))));
        }
        *current = Some(Arc::clone(&connection));
        Ok(connection)
    }
}

impl Drop for WorkerEngine {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.current).take() {
            c.close();
        }
    }
}

/// What the reader thread hands a waiting call.
enum Incoming {
    Tokens(Vec<WireToken>),
    Reply(Result<Reply, WireError>),
}

/// One worker process.
struct Connection {
    engine: String,
    pid: u32,
    input: Mutex<Option<BufWriter<ChildStdin>>>,
    child: Mutex<Child>,
    next_id: AtomicU64,
    /// The calls waiting for an answer, by request id.
    pending: Mutex<HashMap<u64, Sender<Incoming>>>,
    /// How long (ms) each generation had gone without progress, at the last heartbeat.
    idle_ms: Mutex<HashMap<u64, u64>>,
    /// When the worker last sent anything.
    last_heard: Mutex<Instant>,
    /// Why the host killed it, if it did (reported instead of the SIGKILL).
    killed_for: Mutex<Option<Exit>>,
    /// Set once the worker is gone.
    crash: Mutex<Option<Crash>>,
    gone: Condvar,
    /// The host closed the worker on purpose (its end is not a crash).
    closing: AtomicBool,
    hang_timeout: Duration,
    health: Arc<Mutex<HealthState>>,
}

impl Connection {
    /// Starts a worker for the engine of `manifest` and waits for its first event.
    fn spawn(
        engine: &str,
        manifest: &Path,
        config: &WorkerConfig,
        health: &Arc<Mutex<HealthState>>,
    ) -> Result<
        (
            Arc<Connection>,
            Result<super::protocol::WireEngineInfo, super::protocol::WireUnavailable>,
        ),
        Crash,
    > {
        let started = |why: String| Crash {
            exit: Exit::Start(why),
            stderr: Vec::new(),
        };
        let program = config
            .program()
            .map_err(|e| started(format!("cannot find the runanywhere executable: {e}")))?;
        let level = tracing::level_filters::LevelFilter::current()
            .into_level()
            .map_or(0, runanywhere_plugin_api::log::level_code);
        let mut command = Command::new(&program);
        command
            .arg("worker")
            .arg("--manifest")
            .arg(manifest)
            .arg("--log-level")
            .arg(level.to_string());
        // A Rust backtrace would push the crash's first line (the panic or the failed
        // allocation) out of the kept tail; with debug logs every stderr line is logged.
        if level < runanywhere_plugin_api::log::level_code(tracing::Level::DEBUG) {
            command
                .env_remove("RUST_BACKTRACE")
                .env_remove("RUST_LIB_BACKTRACE");
        }
        if let Some(limit) = config.memory_limit {
            command.arg("--memory-limit").arg(limit.to_string());
        }
        // Its own process group: the terminal's Ctrl-C goes to the host, which cancels.
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| started(format!("{}: {e}", program.display())))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(started("its pipes were not set up".into()));
        };
        tracing::debug!(engine, pid = child.id(), program = %program.display(), "worker started");
        let connection = Arc::new(Connection {
            engine: engine.to_string(),
            pid: child.id(),
            input: Mutex::new(Some(BufWriter::new(stdin))),
            child: Mutex::new(child),
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            idle_ms: Mutex::default(),
            last_heard: Mutex::new(Instant::now()),
            killed_for: Mutex::new(None),
            crash: Mutex::new(None),
            gone: Condvar::new(),
            closing: AtomicBool::new(false),
            hang_timeout: config.hang_timeout,
            health: Arc::clone(health),
        });
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (stderr_done, stderr_finished) = mpsc::channel::<()>();
        let lines = Arc::clone(&tail);
        let name = engine.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("worker-{engine}-stderr"))
            .spawn(move || {
                keep_stderr(stderr, &lines, &name);
                drop(stderr_done);
            });
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = Arc::clone(&connection);
        let spawned = spawned.and_then(|_| {
            std::thread::Builder::new()
                .name(format!("worker-{engine}"))
                .spawn(move || reader.read_events(stdout, ready_tx, &tail, &stderr_finished))
        });
        if let Err(e) = spawned {
            connection.kill(Exit::Start(format!("cannot start its threads: {e}")));
            let _ = lock(&connection.child).wait();
            return Err(started(format!("cannot start its threads: {e}")));
        }
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(ready) => Ok((connection, ready)),
            Err(RecvTimeoutError::Disconnected) => Err(connection.wait_crash()),
            Err(RecvTimeoutError::Timeout) => {
                connection.kill(Exit::Hung(START_TIMEOUT));
                Err(connection.wait_crash())
            }
        }
    }

    /// The reader thread: dispatches events until the stream ends, then records why.
    fn read_events(
        &self,
        stdout: std::process::ChildStdout,
        ready: Sender<Result<super::protocol::WireEngineInfo, super::protocol::WireUnavailable>>,
        tail: &Mutex<VecDeque<String>>,
        stderr_finished: &Receiver<()>,
    ) {
        let mut ready = Some(ready);
        let mut input = BufReader::with_capacity(1 << 16, stdout);
        let broken = loop {
            let event = match read_frame::<Event>(&mut input) {
                Ok(Some(event)) => event,
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            };
            *lock(&self.last_heard) = Instant::now();
            match event {
                Event::Ready(r) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(r);
                    }
                }
                Event::Reply { id, result } => {
                    lock(&self.idle_ms).remove(&id);
                    if let Some(tx) = lock(&self.pending).remove(&id) {
                        let _ = tx.send(Incoming::Reply(result));
                    }
                }
                Event::Tokens { id, tokens } => {
                    lock(&self.idle_ms).insert(id, 0);
                    if let Some(tx) = lock(&self.pending).get(&id) {
                        let _ = tx.send(Incoming::Tokens(tokens));
                    }
                }
                Event::Log {
                    level,
                    plugin,
                    source,
                    message,
                } => emit_log(&self.engine, level, plugin, &source, &message),
                Event::Heartbeat { idle_ms } => {
                    *lock(&self.idle_ms) = idle_ms.into_iter().collect();
                }
            }
        };
        drop(ready);
        if let Some(why) = broken {
            self.kill(Exit::Protocol(why));
        }
        let status = self.reap();
        // The dying words come last: let the stderr thread read them first.
        let _ = stderr_finished.recv_timeout(Duration::from_secs(2));
        let crash = Crash {
            exit: lock(&self.killed_for)
                .take()
                .unwrap_or_else(|| status.map_or_else(Exit::Protocol, Exit::of)),
            stderr: lock(tail).iter().cloned().collect(),
        };
        if self.closing.load(Ordering::SeqCst) {
            tracing::debug!(engine = %self.engine, "worker closed ({})", crash.exit);
        } else {
            tracing::warn!(engine = %self.engine, pid = self.pid, "engine crashed: {crash}");
            let mut health = lock(&self.health);
            health.in_a_row += 1;
            health.last = Some((Instant::now(), crash.clone()));
        }
        *lock(&self.crash) = Some(crash);
        // Dropping the senders wakes every waiting call, which then reads the crash.
        lock(&self.pending).clear();
        self.gone.notify_all();
    }

    /// Waits for the process to end (it closed its stdout), killing it if it lingers.
    fn reap(&self) -> Result<std::process::ExitStatus, String> {
        for _ in 0..200 {
            match lock(&self.child).try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut child = lock(&self.child);
        let _ = child.kill();
        child.wait().map_err(|e| e.to_string())
    }

    fn is_alive(&self) -> bool {
        lock(&self.crash).is_none() && !self.closing.load(Ordering::SeqCst)
    }

    /// Kills the worker, reporting `why` as the reason.
    fn kill(&self, why: Exit) {
        lock(&self.killed_for).get_or_insert(why);
        let _ = lock(&self.child).kill();
    }

    /// Closes the worker's stdin: it exits, and its end is not a crash.
    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        lock(&self.input).take();
    }

    /// Why the worker died, once the reader thread has found out.
    fn wait_crash(&self) -> Crash {
        let mut crash = lock(&self.crash);
        let deadline = Instant::now() + Duration::from_secs(10);
        while crash.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Crash {
                    exit: Exit::Protocol("it stopped answering".into()),
                    stderr: Vec::new(),
                };
            }
            crash = self
                .gone
                .wait_timeout(crash, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        crash.clone().unwrap_or_else(|| Crash {
            exit: Exit::Protocol("it stopped answering".into()),
            stderr: Vec::new(),
        })
    }

    /// Sends `request`; an error means the worker is gone (or closed).
    fn send(&self, request: &Request) -> Result<(), ()> {
        let mut input = lock(&self.input);
        let Some(out) = input.as_mut() else {
            return Err(());
        };
        write_frame(out, request)
            .and_then(|()| out.flush())
            .map_err(|_| ())
    }

    /// Registers a call and sends its request (made with the call's id).
    fn start(
        &self,
        make: impl FnOnce(u64) -> Request,
    ) -> Result<(u64, Receiver<Incoming>), CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        {
            let mut pending = lock(&self.pending);
            if let Some(crash) = lock(&self.crash).clone() {
                return Err(CallError::Crashed(crash));
            }
            pending.insert(id, tx);
        }
        if self.send(&make(id)).is_err() {
            lock(&self.pending).remove(&id);
            if self.closing.load(Ordering::SeqCst) {
                return Err(CallError::Engine(EngineError::internal(
                    "the engine's worker was closed",
                )));
            }
            return Err(CallError::Crashed(self.wait_crash()));
        }
        Ok((id, rx))
    }

    /// A call that is answered by one reply.
    fn call(&self, make: impl FnOnce(u64) -> Request) -> Result<Reply, CallError> {
        let (id, rx) = self.start(make)?;
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Incoming::Reply(result)) => {
                    return result.map_err(|e| CallError::Engine(e.into()))
                }
                Ok(Incoming::Tokens(_)) => {}
                // A load reports no idle time (it has no sign of progress); other calls do.
                Err(RecvTimeoutError::Timeout) => self.check_hang(id),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(CallError::Crashed(self.wait_crash()))
                }
            }
        }
    }

    /// Kills the worker when it has been silent, or the call `id` without progress,
    /// for longer than the hang timeout.
    fn check_hang(&self, id: u64) {
        let silent = lock(&self.last_heard).elapsed();
        let idle = lock(&self.idle_ms)
            .get(&id)
            .copied()
            .map_or(Duration::ZERO, Duration::from_millis);
        let stalled = silent.max(idle);
        if stalled >= self.hang_timeout {
            tracing::warn!(engine = %self.engine, pid = self.pid, ?stalled, "worker hung; killing it");
            self.kill(Exit::Hung(stalled));
        }
    }
}

/// Reads a worker's stderr into `tail` (its last lines), passing each line to the log.
fn keep_stderr(stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>, engine: &str) {
    let mut input = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            continue;
        }
        tracing::debug!(target: "worker", engine, "stderr: {text}");
        let mut tail = lock(tail);
        if tail.len() == STDERR_LINES {
            tail.pop_front();
        }
        tail.push_back(text);
    }
}

/// Re-emits a worker's log record in the host's log: a plugin's under the `plugin`
/// target (as in-process), the worker's own under `worker`.
fn emit_log(engine: &str, level: u8, plugin: bool, source: &str, message: &str) {
    use tracing::Level;
    macro_rules! emit {
        ($target:literal) => {
            match runanywhere_plugin_api::log::level_of(level) {
                Some(Level::ERROR) => tracing::error!(target: $target, engine, source, "{message}"),
                Some(Level::WARN) => tracing::warn!(target: $target, engine, source, "{message}"),
                Some(Level::INFO) => tracing::info!(target: $target, engine, source, "{message}"),
                Some(Level::DEBUG) => tracing::debug!(target: $target, engine, source, "{message}"),
                Some(_) => tracing::trace!(target: $target, engine, source, "{message}"),
                None => {}
            }
        };
    }
    if plugin {
        emit!("plugin")
    } else {
        emit!("worker")
    }
}

fn unexpected(what: &str, reply: &Reply) -> CallError {
    let name = match reply {
        Reply::Loaded { .. } => "a loaded model",
        Reply::Ids(_) => "token ids",
        Reply::Text(_) => "text",
        Reply::Bytes(_) => "bytes",
        Reply::Vectors(_) => "vectors",
        Reply::Stats(_) => "generation stats",
    };
    CallError::Engine(EngineError::internal(format!(
        "the engine's worker answered {what} with {name}"
    )))
}

/// A model loaded in a worker. Dropping it unloads the model there.
pub(crate) struct RemoteModel {
    connection: Arc<Connection>,
    handle: u64,
    /// Whether the plugin has the extension calls (log-probabilities, embeddings).
    pub(crate) extensions: bool,
}

impl RemoteModel {
    /// Whether the worker holding the model is still running.
    pub(crate) fn is_alive(&self) -> bool {
        self.connection.is_alive()
    }

    /// The worker's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.connection.pid
    }

    pub(crate) fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, CallError> {
        match self.connection.call(|id| Request::Tokenize {
            id,
            model: self.handle,
            text: text.to_string(),
            add_special,
            parse_special,
        })? {
            Reply::Ids(ids) => Ok(ids),
            other => Err(unexpected("a tokenization", &other)),
        }
    }

    pub(crate) fn detokenize(&self, ids: &[u32]) -> Result<String, CallError> {
        match self.connection.call(|id| Request::Detokenize {
            id,
            model: self.handle,
            ids: ids.to_vec(),
        })? {
            Reply::Text(text) => Ok(text),
            other => Err(unexpected("a detokenization", &other)),
        }
    }

    pub(crate) fn token_piece(&self, token: u32) -> Result<Vec<u8>, CallError> {
        match self.connection.call(|id| Request::TokenPiece {
            id,
            model: self.handle,
            token,
        })? {
            Reply::Bytes(bytes) => Ok(bytes),
            other => Err(unexpected("a token piece", &other)),
        }
    }

    pub(crate) fn embed(
        &self,
        inputs: &[Prompt],
        pooling: u32,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, CallError> {
        match self.connection.call(|id| Request::Embed {
            id,
            model: self.handle,
            inputs: inputs.iter().map(Into::into).collect(),
            pooling,
            normalize,
        })? {
            Reply::Vectors(vectors) => {
                self.succeeded();
                Ok(super::protocol::vectors(vectors))
            }
            other => Err(unexpected("an embedding", &other)),
        }
    }

    /// Generates in the worker, calling `on_token` for each token as it arrives (with
    /// log-probabilities when `logprobs` names how many alternatives). A `Stop` from
    /// `on_token`, or `cancel`, stops the worker's generation; tokens it made meanwhile
    /// are dropped, so the caller sees what it would have in-process.
    pub(crate) fn generate(
        &self,
        request: &GenerateRequest,
        logprobs: Option<u32>,
        cancel: Option<&CancelToken>,
        on_token: &mut dyn FnMut(&WireToken) -> SinkControl,
    ) -> Result<GenerationStats, CallError> {
        let (id, rx) = self.connection.start(|id| Request::Generate {
            id,
            model: self.handle,
            request: request.into(),
            logprobs,
        })?;
        let mut call = InFlight {
            connection: &self.connection,
            id,
            finished: false,
        };
        let mut delivered = 0u32;
        let mut stopped = false;
        loop {
            match rx.recv_timeout(POLL) {
                Ok(Incoming::Tokens(tokens)) => {
                    for token in &tokens {
                        if stopped {
                            break;
                        }
                        delivered += 1;
                        let stop = on_token(token) == SinkControl::Stop
                            || cancel.is_some_and(CancelToken::is_cancelled);
                        if stop {
                            stopped = true;
                            let _ = self.connection.send(&Request::Cancel { id });
                        }
                    }
                }
                Ok(Incoming::Reply(result)) => {
                    call.finished = true;
                    let stats = match result.map_err(|e| CallError::Engine(e.into()))? {
                        Reply::Stats(stats) => stats,
                        other => return Err(unexpected("a generation", &other)),
                    };
                    let mut stats = GenerationStats::from(stats);
                    if stopped {
                        stats.generated_tokens = delivered;
                        stats.stop_reason = StopReason::Cancelled.code();
                    }
                    self.succeeded();
                    return Ok(stats);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if !stopped && cancel.is_some_and(CancelToken::is_cancelled) {
                        stopped = true;
                        let _ = self.connection.send(&Request::Cancel { id });
                    }
                    self.connection.check_hang(id);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    call.finished = true;
                    return Err(CallError::Crashed(self.connection.wait_crash()));
                }
            }
        }
    }

    /// A call worked: the engine is healthy again.
    fn succeeded(&self) {
        lock(&self.connection.health).in_a_row = 0;
    }
}

impl Drop for RemoteModel {
    fn drop(&mut self) {
        if self.connection.is_alive() {
            let _ = self
                .connection
                .send(&Request::Unload { model: self.handle });
        }
    }
}

/// A generation in the worker; one left unfinished (the caller panicked) is cancelled.
struct InFlight<'a> {
    connection: &'a Connection,
    id: u64,
    finished: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.connection.pending).remove(&self.id);
            let _ = self.connection.send(&Request::Cancel { id: self.id });
        }
    }
}
