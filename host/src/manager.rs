//! [`ModelManager`]: the loaded models of a runtime, shared, kept alive for a while
//! after use, and unloaded least-recently-used first when memory runs short.
//!
//! * **Sharing.** Models are keyed by [`ModelKey`] (the resolved file, the engine and
//!   the load options). A second request for a loaded key gets the same model (an
//!   `Arc`); requests that arrive while it is loading wait for that load instead of
//!   starting another.
//! * **Keep-alive.** Each use sets the model's expiry ([`KeepAlive`]: a duration, 0 =
//!   unload as soon as it is idle, or forever). [`ModelManager::sweep`] (run on every
//!   call into the manager, and by [`ModelManager::spawn_reaper`] in long-running front
//!   ends) unloads idle models past their expiry.
//! * **Memory budget.** A load that would not fit the budget (by default the memory
//!   available now, as [`crate::memory::available`] reads it) first unloads idle models,
//!   least recently used first; if it still does not fit, it fails with
//!   [`Error::InsufficientMemory`] rather than being killed by the kernel later.
//! * **Turns.** An engine's model generates one sequence at a time. A generation waits
//!   its turn in a queue whose depth callers can read, for at most the time it allows,
//!   and stops waiting when it is cancelled.
//!
//! "Idle" means nobody is generating or waiting, and no [`LoadedModel`] handle is held
//! outside the manager: memory is only counted as freed when it really is.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use runanywhere_plugin_api::{GenerateRequest, GenerationStats, SinkControl};
use serde::Serialize;

use crate::cancel::CancelToken;
use crate::engine::Model;
use crate::error::Error;
use crate::memory::{InsufficientMemory, MemoryEstimate};
use crate::options::LoadOptions;

/// How long a model stays loaded after its last use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepAlive {
    /// For this long after the last use.
    For(Duration),
    /// Unloaded as soon as it is idle.
    UntilIdle,
    /// Until unloaded explicitly (or evicted for memory).
    Forever,
}

impl KeepAlive {
    /// Ollama's default: five minutes.
    pub const DEFAULT: KeepAlive = KeepAlive::For(Duration::from_secs(300));

    /// From seconds, as Ollama's `keep_alive` takes them: 0 = until idle, negative =
    /// forever.
    pub fn from_secs(seconds: i64) -> KeepAlive {
        match seconds {
            0 => KeepAlive::UntilIdle,
            s if s < 0 => KeepAlive::Forever,
            s => KeepAlive::For(Duration::from_secs(s.unsigned_abs())),
        }
    }

    /// A keep-alive as text, as Ollama's `keep_alive` and `serve --keep-alive` take it:
    /// seconds (`300`, `1.5`; 0 = until idle, negative = forever) or a duration (`5m`,
    /// `1h30m`; `0s` = until idle, a leading `-` = forever). `None` if it is neither.
    pub fn parse(text: &str) -> Option<KeepAlive> {
        let text = text.trim();
        if let Ok(seconds) = text.parse::<f64>() {
            return seconds
                .is_finite()
                .then(|| KeepAlive::from_secs(seconds.round() as i64));
        }
        if text.starts_with('-') {
            return Some(KeepAlive::Forever);
        }
        humantime::parse_duration(text).ok().map(|d| {
            if d.is_zero() {
                KeepAlive::UntilIdle
            } else {
                KeepAlive::For(d)
            }
        })
    }

    /// The expiry for a use ending `now` (`None` = never).
    fn expiry(self, now: Instant) -> Option<Instant> {
        match self {
            // A duration past what the clock can hold is forever.
            KeepAlive::For(d) => now.checked_add(d),
            KeepAlive::UntilIdle => Some(now),
            KeepAlive::Forever => None,
        }
    }
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive::DEFAULT
    }
}

/// What identifies a loaded model: two requests with equal keys share one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ModelKey {
    /// The resolved model path (or `mock`-style name).
    pub path: PathBuf,
    /// The engine that loads it.
    pub engine: String,
    /// The load options, without `force` (which only changes the memory check).
    pub options: LoadOptions,
}

impl ModelKey {
    /// The key for `path` on `engine` with `options`.
    pub fn new(path: PathBuf, engine: &str, options: &LoadOptions) -> Self {
        ModelKey {
            path,
            engine: engine.to_string(),
            options: LoadOptions {
                force: false,
                ..options.clone()
            },
        }
    }
}

/// How the manager is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManagerConfig {
    /// Bytes all loaded models may take together; `None` = the memory available at
    /// each load.
    pub budget: Option<u64>,
    /// The keep-alive of a use that does not choose one.
    pub keep_alive: KeepAlive,
}

/// How one generation uses a loaded model.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// How long to wait for the model when it is busy (`None` = as long as it takes).
    pub wait: Option<Duration>,
    /// Stops the wait and the generation.
    pub cancel: Option<CancelToken>,
    /// This use's keep-alive (`None` = the manager's default).
    pub keep_alive: Option<KeepAlive>,
}

/// One loaded model, as [`ModelManager::loaded`] lists it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedInfo {
    /// Its key.
    pub key: ModelKey,
    /// The memory it is estimated to take.
    pub bytes: u64,
    /// Time left until it is unloaded if unused (`None` = never).
    pub expires_in: Option<Duration>,
    /// Whether a generation is running.
    pub busy: bool,
    /// Generations waiting for their turn.
    pub queued: usize,
}

/// The loaded models. Cheap to clone (clones share the models).
#[derive(Debug, Clone)]
pub struct ModelManager {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a load finishes (successfully or not).
    loads: Condvar,
    config: ManagerConfig,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<ModelKey, Slot>,
}

#[derive(Debug)]
enum Slot {
    /// Being loaded; the estimate counts against the budget already.
    Loading(u64),
    Ready(Arc<Resident>),
}

/// A model in memory, with its turn-taking state.
#[derive(Debug)]
struct Resident {
    key: ModelKey,
    model: Model,
    bytes: u64,
    load_ms: f64,
    /// The keep-alive of a use that does not choose one.
    default_keep_alive: KeepAlive,
    /// Generations that may run at once: the engine's parallel sequences, else 1.
    slots: usize,
    use_state: Mutex<UseState>,
    turn: Condvar,
}

#[derive(Debug)]
struct UseState {
    /// Generations running now (at most the resident's `slots`).
    running: usize,
    waiting: usize,
    last_used: Instant,
    expires: Option<Instant>,
    keep_alive: KeepAlive,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Resident {
    /// Nobody generating or waiting, and no handle held outside the manager.
    fn idle(self: &Arc<Self>) -> bool {
        let u = lock(&self.use_state);
        u.running == 0 && u.waiting == 0 && Arc::strong_count(self) == 1
    }
}

impl ModelManager {
    /// A manager with `config`.
    pub fn new(config: ManagerConfig) -> Self {
        ModelManager {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                loads: Condvar::new(),
                config,
            }),
        }
    }

    /// The model for `key`: the loaded one, or one `load` makes (called at most once for
    /// concurrent requests of the same key), returning the model and its load time in
    /// milliseconds. `estimate` is the memory it will take (`None` when unknown, which
    /// skips the budget check, as does `force`).
    pub fn get_or_load(
        &self,
        key: &ModelKey,
        estimate: Option<MemoryEstimate>,
        force: bool,
        load: impl FnOnce() -> Result<(Model, f64), Error>,
    ) -> Result<LoadedModel, Error> {
        let mut state = lock(&self.shared.state);
        sweep_locked(&mut state, Instant::now());
        loop {
            match state.slots.get(key) {
                // Its worker died: the model is gone with it; load it anew.
                Some(Slot::Ready(r)) if !r.model.is_alive() => {
                    tracing::info!(model = %key.path.display(), "the model's worker died; loading it again");
                    state.slots.remove(key);
                    break;
                }
                Some(Slot::Ready(r)) => {
                    return Ok(LoadedModel {
                        resident: Arc::clone(r),
                        shared: Arc::downgrade(&self.shared),
                    })
                }
                Some(Slot::Loading(_)) => {
                    state = self
                        .shared
                        .loads
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                None => break,
            }
        }
        let bytes = estimate.map_or(0, |e| e.total());
        if let (Some(estimate), false) = (estimate, force) {
            self.make_room(&mut state, key, estimate)?;
        }
        state.slots.insert(key.clone(), Slot::Loading(bytes));
        drop(state);

        // If `load` panics, the slot must not stay `Loading` (every later request for the
        // key would wait for it forever): the guard clears it and wakes the waiters.
        let guard = LoadingGuard {
            shared: &self.shared,
            key,
        };
        let loaded = load();
        std::mem::forget(guard);
        let mut state = lock(&self.shared.state);
        let result = match loaded {
            Ok((model, load_ms)) => {
                let parallel = model
                    .capabilities()
                    .contains(runanywhere_plugin_api::Capabilities::PARALLEL_SEQUENCES);
                let slots = if parallel {
                    key.options.parallel.max(1) as usize
                } else {
                    1
                };
                let keep_alive = self.shared.config.keep_alive;
                let now = Instant::now();
                let default_keep_alive = keep_alive;
                let resident = Arc::new(Resident {
                    key: key.clone(),
                    model,
                    bytes,
                    load_ms,
                    slots,
                    use_state: Mutex::new(UseState {
                        running: 0,
                        waiting: 0,
                        last_used: now,
                        expires: keep_alive.expiry(now),
                        keep_alive,
                    }),
                    default_keep_alive,
                    turn: Condvar::new(),
                });
                state
                    .slots
                    .insert(key.clone(), Slot::Ready(Arc::clone(&resident)));
                Ok(LoadedModel {
                    resident,
                    shared: Arc::downgrade(&self.shared),
                })
            }
            Err(e) => {
                state.slots.remove(key);
                Err(e)
            }
        };
        drop(state);
        self.shared.loads.notify_all();
        result
    }

    /// Unloads idle models, least recently used first, until `estimate` fits the budget;
    /// fails when it cannot.
    fn make_room(
        &self,
        state: &mut State,
        key: &ModelKey,
        estimate: MemoryEstimate,
    ) -> Result<(), Error> {
        let need = estimate.total();
        let budget = self.shared.config.budget;
        // Bytes of the models in memory or being loaded (whose memory is not yet in the
        // kernel's figure either).
        let taken = |state: &State, loading_only: bool| -> u64 {
            state
                .slots
                .values()
                .map(|s| match s {
                    Slot::Ready(r) if !loading_only => r.bytes,
                    Slot::Ready(_) => 0,
                    Slot::Loading(bytes) => *bytes,
                })
                .sum()
        };
        // With no fixed budget: the memory available now, less what loads in flight will
        // take, plus what each eviction frees (the kernel's figure lags behind an unmap).
        let measured = match budget {
            Some(_) => 0,
            None => match crate::memory::available() {
                Some(a) => a.saturating_sub(taken(state, true)),
                None => return Ok(()),
            },
        };
        let available_now = |state: &State, freed: u64| match budget {
            Some(budget) => budget.saturating_sub(taken(state, false)),
            None => measured.saturating_add(freed),
        };
        let idle_bytes: u64 = state
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(r) if r.idle() => Some(r.bytes),
                _ => None,
            })
            .sum();
        // A load that would not fit even with every idle model gone fails before any is
        // evicted: one oversized request must not empty the manager.
        let best = match budget {
            Some(budget) => budget.saturating_sub(taken(state, false).saturating_sub(idle_bytes)),
            None => measured.saturating_add(idle_bytes),
        };
        if need > best {
            return Err(Error::InsufficientMemory(InsufficientMemory {
                path: key.path.clone(),
                estimate,
                available: available_now(state, 0),
            }));
        }
        let mut freed = 0u64;
        while need > available_now(state, freed) {
            let victim = state
                .slots
                .iter()
                .filter_map(|(k, s)| match s {
                    Slot::Ready(r) if r.idle() => Some((k.clone(), lock(&r.use_state).last_used)),
                    _ => None,
                })
                .min_by_key(|(_, used)| *used)
                .map(|(k, _)| k);
            let Some(victim) = victim else {
                break;
            };
            tracing::info!(
                model = %victim.path.display(),
                "unloading the least recently used idle model to make room"
            );
            if let Some(Slot::Ready(r)) = state.slots.remove(&victim) {
                freed = freed.saturating_add(r.bytes);
            }
        }
        Ok(())
    }

    /// The model for `key` if it is loaded (not while it is still loading).
    pub fn get(&self, key: &ModelKey) -> Option<LoadedModel> {
        match lock(&self.shared.state).slots.get(key) {
            Some(Slot::Ready(r)) if r.model.is_alive() => Some(LoadedModel {
                resident: Arc::clone(r),
                shared: Arc::downgrade(&self.shared),
            }),
            _ => None,
        }
    }

    /// The loaded models (after unloading expired idle ones).
    pub fn loaded(&self) -> Vec<LoadedInfo> {
        let mut state = lock(&self.shared.state);
        let now = Instant::now();
        sweep_locked(&mut state, now);
        let mut list: Vec<LoadedInfo> = state
            .slots
            .values()
            .filter_map(|s| match s {
                Slot::Ready(r) => {
                    let u = lock(&r.use_state);
                    Some(LoadedInfo {
                        key: r.key.clone(),
                        bytes: r.bytes,
                        expires_in: u.expires.map(|e| e.saturating_duration_since(now)),
                        busy: u.running > 0,
                        queued: u.waiting,
                    })
                }
                Slot::Loading(_) => None,
            })
            .collect();
        list.sort_by(|a, b| a.key.path.cmp(&b.key.path));
        list
    }

    /// Unloads idle models past their expiry; returns how many.
    pub fn sweep(&self) -> usize {
        sweep_locked(&mut lock(&self.shared.state), Instant::now())
    }

    /// What the manager was made with (its budget and default keep-alive).
    pub fn config(&self) -> &ManagerConfig {
        &self.shared.config
    }

    /// Unloads the model of `key` if it is idle; returns whether it did. The model is
    /// freed after the manager's lock is released (freeing a large model takes a while,
    /// and other callers should not wait for it).
    pub fn unload(&self, key: &ModelKey) -> bool {
        let mut state = lock(&self.shared.state);
        let idle = matches!(state.slots.get(key), Some(Slot::Ready(r)) if r.idle());
        let removed = if idle { state.slots.remove(key) } else { None };
        drop(state);
        drop(removed);
        idle
    }

    /// Sweeps every `interval` on a background thread until the manager (every clone)
    /// is dropped: what a long-running front end (a server) calls once.
    pub fn spawn_reaper(&self, interval: Duration) -> std::thread::JoinHandle<()> {
        let shared = Arc::downgrade(&self.shared);
        std::thread::spawn(move || loop {
            std::thread::sleep(interval);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            sweep_locked(&mut lock(&shared.state), Instant::now());
        })
    }
}

/// Removes idle models whose expiry has passed, or whose worker died.
fn sweep_locked(state: &mut State, now: Instant) -> usize {
    let expired: Vec<ModelKey> = state
        .slots
        .iter()
        .filter_map(|(k, s)| match s {
            Slot::Ready(r) if r.idle() && lock(&r.use_state).expires.is_some_and(|e| e <= now) => {
                Some(k.clone())
            }
            // Its worker died: it takes no memory any more, and cannot be used.
            Slot::Ready(r) if r.idle() && !r.model.is_alive() => Some(k.clone()),
            _ => None,
        })
        .collect();
    for k in &expired {
        tracing::debug!(model = %k.path.display(), engine = %k.engine, "keep-alive expired; unloading");
        state.slots.remove(k);
    }
    expired.len()
}

/// A handle on a model the manager holds. While a handle exists the model is not
/// unloaded (it is "in use"); drop it when the request is done.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    resident: Arc<Resident>,
    shared: Weak<Shared>,
}

impl LoadedModel {
    /// The model (tokenize, info, or generating outside the turn queue).
    pub fn model(&self) -> &Model {
        &self.resident.model
    }

    /// Its key.
    pub fn key(&self) -> &ModelKey {
        &self.resident.key
    }

    /// How long its load took, in milliseconds (when this handle shares a model
    /// loaded earlier, that load's time).
    pub fn load_ms(&self) -> f64 {
        self.resident.load_ms
    }

    /// Whether a generation is running.
    pub fn is_busy(&self) -> bool {
        lock(&self.resident.use_state).running > 0
    }

    /// Generations waiting for their turn.
    pub fn queue_depth(&self) -> usize {
        lock(&self.resident.use_state).waiting
    }

    /// Generates when it is this request's turn (see [`Turn`]), streaming to `on_token`,
    /// then sets the model's expiry.
    pub fn generate(
        &self,
        request: GenerateRequest,
        turn: &Turn,
        on_token: impl FnMut(u32, &str) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        let guard = self.wait_for_turn(turn)?;
        let result = match &turn.cancel {
            Some(cancel) => self
                .resident
                .model
                .generate_cancellable(request, cancel, on_token),
            None => self.resident.model.generate(request, on_token),
        };
        drop(guard);
        result
    }

    /// [`LoadedModel::generate`] with each token's log-probability and `top`
    /// alternatives (see [`Model::generate_with_logprobs`]).
    pub fn generate_with_logprobs(
        &self,
        request: GenerateRequest,
        top: u32,
        turn: &Turn,
        on_token: impl FnMut(&crate::engine::ScoredToken<'_>) -> SinkControl,
    ) -> Result<GenerationStats, Error> {
        let guard = self.wait_for_turn(turn)?;
        let result = self.resident.model.generate_with_logprobs(
            request,
            top,
            turn.cancel.as_ref(),
            on_token,
        );
        drop(guard);
        result
    }

    fn wait_for_turn(&self, turn: &Turn) -> Result<TurnGuard<'_>, Error> {
        let r = &self.resident;
        let start = Instant::now();
        let mut u = lock(&r.use_state);
        u.waiting += 1;
        while u.running >= r.slots {
            if turn.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                u.waiting -= 1;
                return Err(Error::Cancelled);
            }
            // Wake regularly to notice a cancellation.
            let mut slice = Duration::from_millis(20);
            if let Some(wait) = turn.wait {
                let waited = start.elapsed();
                if waited >= wait {
                    let queued = u.waiting;
                    u.waiting -= 1;
                    return Err(Error::QueueTimeout {
                        model: r.key.path.display().to_string(),
                        waited_ms: wait.as_millis() as u64,
                        queued,
                    });
                }
                slice = slice.min(wait - waited);
            }
            u = r
                .turn
                .wait_timeout(u, slice)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        u.waiting -= 1;
        u.running += 1;
        Ok(TurnGuard {
            model: self,
            keep_alive: turn.keep_alive.unwrap_or(r.default_keep_alive),
        })
    }
}

/// Held while a generation runs; hands the turn on when dropped.
struct TurnGuard<'a> {
    model: &'a LoadedModel,
    /// This turn's keep-alive: the turn that ends last sets the model's expiry (with
    /// several turns at once, not the one that started last).
    keep_alive: KeepAlive,
}

impl Drop for TurnGuard<'_> {
    fn drop(&mut self) {
        let r = &self.model.resident;
        let mut u = lock(&r.use_state);
        let now = Instant::now();
        u.running = u.running.saturating_sub(1);
        u.last_used = now;
        u.keep_alive = self.keep_alive;
        u.expires = u.keep_alive.expiry(now);
        r.turn.notify_one();
    }
}

impl Drop for LoadedModel {
    /// The last handle of a model whose keep-alive has run out (keep-alive 0 right
    /// after its use) unloads it, without waiting for a sweep.
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut state = lock(&shared.state);
        let key = &self.resident.key;
        let last_and_expired = match state.slots.get(key) {
            // This handle and the manager's own reference, nobody else.
            Some(Slot::Ready(x)) if Arc::ptr_eq(x, &self.resident) && Arc::strong_count(x) == 2 => {
                let u = lock(&x.use_state);
                u.running == 0 && u.waiting == 0 && u.expires.is_some_and(|e| e <= now)
            }
            _ => false,
        };
        if last_and_expired {
            state.slots.remove(key);
        }
    }
}

/// Clears a `Loading` slot whose load panicked (forgotten when the load returns).
struct LoadingGuard<'a> {
    shared: &'a Shared,
    key: &'a ModelKey,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        if matches!(state.slots.get(self.key), Some(Slot::Loading(_))) {
            state.slots.remove(self.key);
        }
        drop(state);
        self.shared.loads.notify_all();
    }
}
