//! Generations as the async server sees them.
//!
//! A generation blocks a thread for its whole length, so it runs on tokio's blocking
//! pool and hands its tokens to the request's task through a bounded channel (a slow
//! client slows its own generation, never the server). The [`Job`] a handler holds is
//! the generation's lifeline: dropping it (the client went away, the response stream was
//! dropped) cancels the generation, which stops within one token, and frees its place at
//! once. Admission is counted per model: past `parallel + max_queue` generations on one
//! model, a request gets `503` with `Retry-After` instead of waiting without end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use runanywhere::{
    CancelToken, Error, GenerateRequest, GenerationStats, KeepAlive, LoadedModel, ModelKey,
    SinkControl, Turn,
};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::metrics::Metrics;

/// A token's log-probability, ready for the APIs: its bytes, and the alternatives with
/// their text.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `ln p` of the token (NaN: the engine gave none).
    pub logprob: f32,
    /// The token's own bytes (may be part of a character).
    pub bytes: Vec<u8>,
    /// The most likely tokens at its position, best first: bytes and `ln p`.
    pub top: Vec<(Vec<u8>, f32)>,
}

/// What a running generation reports.
#[derive(Debug)]
pub enum Event {
    /// A generated token: id, text piece, and its score when asked for.
    Token(u32, String, Option<Score>),
    /// The generation ended.
    Done(Result<GenerationStats, Error>),
}

/// The generations admitted and not yet finished.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    running: Mutex<HashMap<u64, CancelToken>>,
    per_model: Mutex<HashMap<ModelKey, usize>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Jobs {
    /// Generations admitted and not finished (running or queued).
    pub fn in_flight(&self) -> usize {
        lock(&self.running).len()
    }

    /// Cancels every generation (shutdown, after the drain time).
    pub fn cancel_all(&self) -> usize {
        let running = lock(&self.running);
        for token in running.values() {
            token.cancel();
        }
        running.len()
    }

    fn admit(
        self: &Arc<Self>,
        key: &ModelKey,
        limit: usize,
        cancel: &CancelToken,
    ) -> Result<Admission, ApiError> {
        {
            let mut per_model = lock(&self.per_model);
            let count = per_model.entry(key.clone()).or_insert(0);
            if *count >= limit {
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "{} generations are already running or queued for this model (the limit \
                         is `serve --parallel` + `--max-queue` = {limit}); retry shortly",
                        *count
                    ),
                );
                e.retry_after = Some(1);
                return Err(e);
            }
            *count += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.running).insert(id, cancel.clone());
        Ok(Admission {
            jobs: Arc::clone(self),
            key: key.clone(),
            id,
        })
    }
}

/// A generation's place; given back when the generation really ends (not when the
/// client leaves), so the counts are what the engine is doing.
struct Admission {
    jobs: Arc<Jobs>,
    key: ModelKey,
    id: u64,
}

impl Drop for Admission {
    fn drop(&mut self) {
        lock(&self.jobs.running).remove(&self.id);
        let mut per_model = lock(&self.jobs.per_model);
        if let Some(count) = per_model.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                per_model.remove(&self.key);
            }
        }
    }
}

/// A running generation, owned by the request that started it.
#[derive(Debug)]
pub struct Job {
    /// Its tokens, then its end. A channel closed without [`Event::Done`] means the
    /// generation task failed (a panic).
    pub events: mpsc::Receiver<Event>,
    cancel: CancelToken,
    timed_out: Arc<AtomicBool>,
    timer: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Job {
    /// Whether the request timeout cancelled it.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// The error for a generation the timeout cancelled.
    pub fn timeout_error(&self) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the generation did not finish within {} s (`serve --request-timeout`)",
                self.timeout.as_secs()
            ),
        )
    }

    /// Waits for the whole generation: text, ids and stats.
    pub async fn collect(mut self) -> Result<Collected, ApiError> {
        let mut out = Collected::default();
        while let Some(event) = self.events.recv().await {
            match event {
                Event::Token(id, piece, score) => {
                    out.ids.push(id);
                    out.text.push_str(&piece);
                    out.scores.extend(score);
                }
                Event::Done(Ok(stats)) => {
                    if self.timed_out() && stats.stop_reason() == runanywhere::StopReason::Cancelled
                    {
                        return Err(self.timeout_error());
                    }
                    out.stats = stats;
                    return Ok(out);
                }
                Event::Done(Err(e)) => {
                    if self.timed_out() {
                        return Err(self.timeout_error());
                    }
                    return Err(e.into());
                }
            }
        }
        Err(ended_without_result())
    }
}

/// Sends `event` unless the client is gone or the generation cancelled: a client that
/// stops reading (the channel full) never blocks the generation past its cancel (the
/// request timeout, a disconnect, shutdown). Returns whether it was delivered.
fn deliver(tx: &mpsc::Sender<Event>, mut event: Event, cancel: &CancelToken) -> bool {
    loop {
        match tx.try_send(event) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if cancel.is_cancelled() {
                    return false;
                }
                event = back;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// The error for a generation task that ended without reporting (it panicked).
pub fn ended_without_result() -> ApiError {
    ApiError::internal(
        "the generation ended without a result (the engine task failed; see the server log)",
    )
}

impl Drop for Job {
    fn drop(&mut self) {
        // The client is gone or the response is complete: either way nothing more is
        // wanted. Cancelling a finished generation does nothing.
        self.cancel.cancel();
        self.timer.abort();
    }
}

/// A whole generation.
#[derive(Debug, Default)]
pub struct Collected {
    /// The generated ids.
    pub ids: Vec<u32>,
    /// The generated text.
    pub text: String,
    /// The tokens' scores, when asked for.
    pub scores: Vec<Score>,
    /// The engine's stats.
    pub stats: GenerationStats,
}

/// How a generation is admitted and run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most generations running or queued on one model.
    pub per_model: usize,
    /// Cancel after this long.
    pub timeout: Duration,
}

/// Starts `request` on `model`, or refuses it when the model's queue is full. Must be
/// called inside the tokio runtime.
pub fn start(
    jobs: &Arc<Jobs>,
    metrics: &Arc<Metrics>,
    limits: &Limits,
    model: LoadedModel,
    request: GenerateRequest,
    keep_alive: Option<KeepAlive>,
    logprobs: Option<u32>,
) -> Result<Job, ApiError> {
    let cancel = CancelToken::new();
    let admission = jobs.admit(model.key(), limits.per_model, &cancel)?;
    let (tx, rx) = mpsc::channel(64);
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer = {
        let (cancel, timed_out, timeout) = (cancel.clone(), Arc::clone(&timed_out), limits.timeout);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            timed_out.store(true, Ordering::Relaxed);
            cancel.cancel();
        })
    };
    let metrics = Arc::clone(metrics);
    let turn = Turn {
        wait: None,
        cancel: Some(cancel.clone()),
        keep_alive,
    };
    let sink_cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut last: Option<Instant> = None;
        let cancel = sink_cancel;
        let mut send = |id: u32, piece: &str, score: Option<Score>| {
            let now = Instant::now();
            match last {
                None => metrics.first_token(now - start),
                Some(previous) => metrics.token_gap(now - previous),
            }
            last = Some(now);
            // A closed channel is a client that left, a cancel (timeout, disconnect,
            // shutdown) one that is no longer wanted: stop at once.
            match deliver(&tx, Event::Token(id, piece.to_string(), score), &cancel) {
                true => SinkControl::Continue,
                false => SinkControl::Stop,
            }
        };
        let result = match logprobs {
            None => model.generate(request, &turn, |id, piece| send(id, piece, None)),
            Some(top) => {
                let bytes = |id: u32| model.model().token_piece(id).unwrap_or_default();
                model.generate_with_logprobs(request, top, &turn, |t| {
                    let score = Score {
                        logprob: t.logprob,
                        bytes: bytes(t.id),
                        top: t.top.iter().map(|a| (bytes(a.id), a.logprob)).collect(),
                    };
                    send(t.id, t.piece, Some(score))
                })
            }
        };
        if let Ok(stats) = &result {
            metrics.tokens(
                stats.prompt_ids.len() as u64,
                u64::from(stats.generated_tokens),
            );
        }
        // The model and the place are free before the client has read the end.
        drop(model);
        drop(admission);
        deliver(&tx, Event::Done(result), &cancel);
    });
    Ok(Job {
        events: rx,
        cancel,
        timed_out,
        timer,
        timeout: limits.timeout,
    })
}
