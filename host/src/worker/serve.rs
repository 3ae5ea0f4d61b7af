//! The worker's side: one engine, served over stdin/stdout until the host goes away.
//!
//! The main thread reads requests; each call runs on a thread of its own (so a long
//! generation never delays a cancel, and the engine's own scheduler sees concurrent
//! generations as it would in-process). One writer thread owns stdout: it merges the
//! tokens that piled up for a generation while it was writing into one frame, so the
//! rate of frames adapts to how fast the host reads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use runanywhere_plugin_api::{EngineError, SinkControl};

use super::protocol::{
    pooling, read_frame, wire_vectors, write_frame, Event, Reply, Request, WireError, WireToken,
    WireUnavailable,
};
use super::{sys, WorkerConfig, HEARTBEAT};
use crate::cancel::CancelToken;
use crate::engine::{Engine, Model};
use crate::manifest::Manifest;

/// Most tokens in one frame.
const MAX_BATCH: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a worker for the engine of `manifest` on this process's stdin and stdout (what
/// `runanywhere worker` does; the host starts it). `log_level` is the most verbose
/// level to forward (the plugin-API's level code, 0 = none); `memory_limit` caps the
/// address space. Returns when the host closes stdin, or the engine cannot be started.
pub fn run(manifest: &Path, log_level: u8, memory_limit: Option<u64>) -> ExitCode {
    #[allow(clippy::print_stderr)]
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("runanywhere worker: {what}: {e}");
        ExitCode::FAILURE
    };
    // From the start: a plugin that hangs while it initialises must not outlive the host.
    let parent = std::os::unix::process::parent_id();
    let _ = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || loop {
            std::thread::sleep(HEARTBEAT);
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        });
    let (input, output) = match sys::take_stdio() {
        Ok(io) => io,
        Err(e) => return fail("cannot take stdin and stdout", &e),
    };
    if let Some(bytes) = memory_limit {
        if let Err(e) = sys::limit_memory(bytes) {
            return fail("cannot set the memory limit", &e);
        }
    }
    let (events, outbox) = mpsc::channel();
    let writer = match std::thread::Builder::new()
        .name("writer".into())
        .spawn(move || write_events(output, &outbox))
    {
        Ok(writer) => writer,
        Err(e) => return fail("cannot start the writer thread", &e),
    };
    forward_logs(events.clone(), log_level);

    let ready = Manifest::from_file(manifest)
        .map_err(|e| WireUnavailable {
            kind: crate::registry::UnavailableKind::InvalidManifest,
            reason: e.to_string(),
        })
        .and_then(|m| {
            // In-process here, whatever the manifest says: this is the process.
            let here = WorkerConfig {
                force: Some(super::Isolation::InProcess),
                ..WorkerConfig::default()
            };
            crate::registry::load_engine(&m, &here)
                .map_err(|(kind, reason)| WireUnavailable { kind, reason })
        });
    let engine = match ready {
        Ok(engine) => {
            let _ = events.send(Event::Ready(Ok(engine.info().into())));
            engine
        }
        Err(unavailable) => {
            // The writer returns once this is out (the log layer's sender lives on).
            let _ = events.send(Event::Ready(Err(unavailable)));
            let _ = writer.join();
            return ExitCode::SUCCESS;
        }
    };
    let worker = Arc::new(Worker {
        engine,
        events,
        models: Mutex::default(),
        next_model: AtomicU64::new(1),
        active: Mutex::default(),
    });
    let beating = Arc::clone(&worker);
    if let Err(e) = std::thread::Builder::new()
        .name("heartbeat".into())
        .spawn(move || beating.heartbeat())
    {
        return fail("cannot start the heartbeat thread", &e);
    }

    let mut input = BufReader::new(input);
    loop {
        match read_frame::<Request>(&mut input) {
            Ok(Some(request)) => worker.handle(request),
            // The host is gone (or closed us): nothing is left to do, and a generation
            // still running has no one to stream to.
            Ok(None) => std::process::exit(0),
            Err(e) => {
                tracing::error!("unreadable request from the host: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// A call in flight (loads excepted: they take as long as the model's size, with no
/// sign of progress to watch).
struct Active {
    cancel: CancelToken,
    started: Instant,
    /// Milliseconds after `started` of the last token (generations).
    last_token_ms: Arc<AtomicU64>,
}

impl Active {
    /// How long it has gone without a token or a cancel check.
    fn idle(&self) -> Duration {
        let token = self.started.elapsed().saturating_sub(Duration::from_millis(
            self.last_token_ms.load(Ordering::Relaxed),
        ));
        self.cancel
            .asked_ago()
            .map_or(token, |asked| asked.min(token))
    }
}

struct Worker {
    engine: Engine,
    events: Sender<Event>,
    models: Mutex<HashMap<u64, Arc<Model>>>,
    next_model: AtomicU64,
    active: Mutex<HashMap<u64, Active>>,
}

impl Worker {
    /// Takes one request off stdin. Nothing here blocks: this thread must always be
    /// free to read the next cancel.
    fn handle(self: &Arc<Self>, request: Request) {
        let id = match &request {
            Request::Cancel { id } => {
                if let Some(active) = lock(&self.active).get(id) {
                    active.cancel.cancel();
                }
                return;
            }
            Request::Unload { model } => {
                // Freeing a model may take a while: not on this thread.
                if let Some(model) = lock(&self.models).remove(model) {
                    let _ = std::thread::Builder::new().spawn(move || drop(model));
                }
                return;
            }
            Request::Load { .. } => None,
            Request::Tokenize { id, .. }
            | Request::Detokenize { id, .. }
            | Request::TokenPiece { id, .. }
            | Request::Generate { id, .. }
            | Request::Embed { id, .. } => Some(*id),
        };
        // Registered before the call's thread starts, so a cancel read next finds it.
        if let Some(id) = id {
            lock(&self.active).insert(
                id,
                Active {
                    cancel: CancelToken::new(),
                    started: Instant::now(),
                    last_token_ms: Arc::default(),
                },
            );
        }
        let worker = Arc::clone(self);
        let spawned = std::thread::Builder::new().spawn(move || worker.answer(request));
        if let (Err(e), Some(id)) = (spawned, id) {
            lock(&self.active).remove(&id);
            let error = EngineError::internal(format!("the worker cannot start a thread: {e}"));
            let _ = self.events.send(Event::Reply {
                id,
                result: Err(WireError::from(&error)),
            });
        }
    }

    /// Runs one call and sends its reply; a panic becomes an `Internal` error reply.
    fn answer(&self, call: Request) {
        let id = match &call {
            Request::Load { id, .. }
            | Request::Tokenize { id, .. }
            | Request::Detokenize { id, .. }
            | Request::TokenPiece { id, .. }
            | Request::Generate { id, .. }
            | Request::Embed { id, .. }
            | Request::Cancel { id } => *id,
            Request::Unload { .. } => return,
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(id, call)))
            .unwrap_or_else(|_| Err(EngineError::internal("the worker panicked in this call")));
        lock(&self.active).remove(&id);
        let _ = self.events.send(Event::Reply {
            id,
            result: result.map_err(|e| WireError::from(&e)),
        });
    }

    fn run(&self, id: u64, call: Request) -> Result<Reply, EngineError> {
        match call {
            Request::Load { request, .. } => {
                let model = self
                    .engine
                    .load_model(request.into())
                    .map_err(engine_error)?;
                let handle = self.next_model.fetch_add(1, Ordering::Relaxed);
                let info = model.info().into();
                let extensions = model.has_extensions();
                lock(&self.models).insert(handle, Arc::new(model));
                Ok(Reply::Loaded {
                    model: handle,
                    info,
                    extensions,
                })
            }
            Request::Tokenize {
                model,
                text,
                add_special,
                parse_special,
                ..
            } => self
                .model(model)?
                .tokenize(&text, add_special, parse_special)
                .map(Reply::Ids)
                .map_err(engine_error),
            Request::Detokenize { model, ids, .. } => self
                .model(model)?
                .detokenize(&ids)
                .map(Reply::Text)
                .map_err(engine_error),
            Request::TokenPiece { model, token, .. } => self
                .model(model)?
                .token_piece(token)
                .map(Reply::Bytes)
                .map_err(engine_error),
            Request::Embed {
                model,
                inputs,
                pooling: code,
                normalize,
                ..
            } => {
                let inputs: Vec<_> = inputs.into_iter().map(Into::into).collect();
                self.model(model)?
                    .embed(&inputs, pooling(code), normalize)
                    .map(|v| Reply::Vectors(wire_vectors(v)))
                    .map_err(engine_error)
            }
            Request::Generate {
                model,
                request,
                logprobs,
                ..
            } => {
                let model = self.model(model)?;
                let (cancel, started, last) = match lock(&self.active).get(&id) {
                    Some(a) => (a.cancel.clone(), a.started, Arc::clone(&a.last_token_ms)),
                    None => return Err(EngineError::internal("the generation was not registered")),
                };
                let send = |token: WireToken| {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    last.store(ms, Ordering::Relaxed);
                    let _ = self.events.send(Event::Tokens {
                        id,
                        tokens: vec![token],
                    });
                    SinkControl::Continue
                };
                let request = request.into();
                let stats = match logprobs {
                    Some(top) => model.generate_with_logprobs(request, top, Some(&cancel), |t| {
                        send(WireToken::scored(t.id, t.piece, t.logprob, t.top))
                    }),
                    None => model.generate_cancellable(request, &cancel, |token, piece| {
                        send(WireToken {
                            id: token,
                            piece: piece.to_string(),
                            logprob: None,
                            top: Vec::new(),
                        })
                    }),
                };
                stats
                    .map(|s| Reply::Stats((&s).into()))
                    .map_err(engine_error)
            }
            Request::Cancel { .. } | Request::Unload { .. } => {
                Err(EngineError::internal("cancel and unload are not calls"))
            }
        }
    }

    fn model(&self, handle: u64) -> Result<Arc<Model>, EngineError> {
        lock(&self.models).get(&handle).cloned().ok_or_else(|| {
            EngineError::invalid_request(format!("no model {handle} is loaded in this worker"))
        })
    }

    /// Says every [`HEARTBEAT`] that the worker lives, with each call's idle time.
    fn heartbeat(&self) {
        loop {
            std::thread::sleep(HEARTBEAT);
            let idle_ms = lock(&self.active)
                .iter()
                .map(|(&id, a)| (id, u64::try_from(a.idle().as_millis()).unwrap_or(u64::MAX)))
                .collect();
            if self.events.send(Event::Heartbeat { idle_ms }).is_err() {
                return;
            }
        }
    }
}

/// The engine error inside a runtime error (the worker's calls only fail with those).
fn engine_error(e: crate::Error) -> EngineError {
    match e {
        crate::Error::Engine { error, .. } => error,
        other => EngineError::internal(other.to_string()),
    }
}

/// The writer thread: frames every event, merging consecutive tokens of a generation.
fn write_events(output: File, events: &Receiver<Event>) {
    let mut out = BufWriter::with_capacity(1 << 16, output);
    let mut held: Option<Event> = None;
    loop {
        let event = match held.take() {
            Some(event) => event,
            None => match events.try_recv() {
                Ok(event) => event,
                Err(TryRecvError::Empty) => {
                    if out.flush().is_err() {
                        std::process::exit(0);
                    }
                    match events.recv() {
                        Ok(event) => event,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            },
        };
        let event = match event {
            Event::Tokens { id, mut tokens } => {
                while tokens.len() < MAX_BATCH {
                    match events.try_recv() {
                        Ok(Event::Tokens {
                            id: same,
                            tokens: more,
                        }) if same == id => tokens.extend(more),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                Event::Tokens { id, tokens }
            }
            other => other,
        };
        let last = matches!(event, Event::Ready(Err(_)));
        if write_frame(&mut out, &event).is_err() {
            // The host is gone.
            std::process::exit(0);
        }
        if last {
            // The engine could not start: nothing follows.
            break;
        }
    }
    let _ = out.flush();
}

/// Sends the worker's log records (its plugin's included) to the host, up to `level`.
fn forward_logs(events: Sender<Event>, level: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;
    let max = runanywhere_plugin_api::log::level_of(level)
        .map_or(tracing_subscriber::filter::LevelFilter::OFF, Into::into);
    let subscriber = tracing_subscriber::registry().with(Forward { events }.with_filter(max));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The tracing layer that turns events into [`Event::Log`].
struct Forward {
    events: Sender<Event>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Forward {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let source = fields.source.unwrap_or_else(|| meta.target().to_string());
        // Warnings and errors also go to stderr, at once: an engine that logs and then
        // aborts dies before the writer thread sends the record, but the host keeps
        // the last lines of stderr for the crash report.
        if *meta.level() <= tracing::Level::WARN {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{} {source}: {}", meta.level(), fields.message);
            }
        }
        let _ = self.events.send(Event::Log {
            level: runanywhere_plugin_api::log::level_code(*meta.level()),
            plugin: meta.target() == "plugin",
            source,
            message: fields.message,
        });
    }
}

/// The message and `source` of a log event; other fields are appended as `k=v`.
#[derive(Default)]
struct Fields {
    message: String,
    source: Option<String>,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_string(),
            "source" => self.source = Some(value.to_string()),
            name => self.message.push_str(&format!(" {name}={value}")),
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "source" => self.source = Some(format!("{value:?}")),
            name => self.message.push_str(&format!(" {name}={value:?}")),
        }
    }
}
