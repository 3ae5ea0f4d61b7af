//! Parallel sequences: one scheduler thread per model (loaded with `parallel` > 1) owns
//! the llama.cpp context and decodes every active generation together, one
//! `llama_batch` per step, the way llama.cpp's server slots do.
//!
//! Each generation keeps its caller: `generate` submits a [`Job`] and then runs its own
//! [`GenerationTracker`](runanywhere_plugin_api::decode::GenerationTracker) on its own
//! thread (sink, stop strings, UTF-8, `max_tokens`), answering each token the scheduler
//! samples with a [`Verdict`]. The scheduler packs, per step, the next token of every
//! sequence that goes on and prefill chunks of new ones (decode tokens first, within
//! `n_batch`), samples each sequence with its own sampler chain, and frees a slot at once
//! when its caller stops, cancels or goes away. Slots keep their last ids, so a prompt
//! sharing a prefix with a slot's history reuses it (the prompt cache, per slot).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use runanywhere_plugin_api::emit::Score;
use runanywhere_plugin_api::{EngineError, SamplingParams};

use super::{batch_error, build_sampler, common_prefix, decode_error, position};

/// A generation handed to the scheduler.
pub(crate) struct Job {
    pub(crate) prompt: Vec<u32>,
    pub(crate) sampling: SamplingParams,
    /// Alternatives per token to score, when the caller's sink wants log-probabilities.
    pub(crate) top: Option<usize>,
    pub(crate) events: SyncSender<Event>,
    pub(crate) verdicts: Receiver<Verdict>,
    /// Set by the caller to drop the job (a cancel during prefill).
    pub(crate) cancelled: Arc<AtomicBool>,
}

/// What the scheduler tells a caller.
pub(crate) enum Event {
    /// A sampled token and its score. The caller answers with a [`Verdict`].
    Token(u32, Option<Score>),
    /// The job failed (a decode error); the caller returns it.
    Failed(EngineError),
}

/// A caller's answer to a token.
pub(crate) enum Verdict {
    /// Run the token and sample the next.
    Continue,
    /// The generation is over: free the slot.
    Stop,
}

/// A sequence slot of the context.
struct Slot {
    /// Ids whose keys and values sequence `seq` of the cache holds.
    cached: Vec<u32>,
    active: Option<Active>,
}

struct Active {
    job: Job,
    sampler: LlamaSampler,
    /// Prompt tokens not yet in the cache.
    next_prompt: usize,
    /// The sampled token to run next (decode phase).
    pending: Option<u32>,
    /// Where this slot's logits are in the current batch.
    logits_at: Option<i32>,
}

/// The handle a model keeps: submit jobs; dropping it stops the thread.
pub(crate) struct Scheduler {
    jobs: Option<Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the scheduler on `ctx` (created with `n_seq_max = slots`). The model the
    /// context came from must outlive the scheduler: [`Scheduler::stop`] joins the thread
    /// (which frees the context) and the model's `Drop` calls it first.
    pub(crate) fn start(
        ctx: LlamaContext<'static>,
        slots: usize,
        n_vocab: u32,
    ) -> Result<Scheduler, EngineError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("llama-cpp-scheduler".into())
            .spawn(move || run(ctx, slots, n_vocab, rx))
            .map_err(|e| {
                EngineError::internal(format!("cannot start the scheduler thread: {e}"))
            })?;
        Ok(Scheduler {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `job` over.
    pub(crate) fn submit(&self, job: Job) -> Result<(), EngineError> {
        self.jobs
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| EngineError::internal("the llama.cpp scheduler has stopped"))
    }

    /// Stops the thread and waits for it (its context is freed there).
    pub(crate) fn stop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long a caller waits for an event before it checks for a cancel.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// Waits for the next event, polling `cancelled` (the caller's sink) meanwhile; `None`
/// when the caller cancelled (the job is then dropped by the scheduler).
pub(crate) fn next_event(
    events: &Receiver<Event>,
    flag: &AtomicBool,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Event>, EngineError> {
    loop {
        match events.recv_timeout(POLL) {
            Ok(e) => return Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => {
                if cancelled() {
                    flag.store(true, Ordering::Relaxed);
                    return Ok(None);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(EngineError::internal(
                    "the llama.cpp scheduler stopped during the generation",
                ))
            }
        }
    }
}

/// The scheduler loop.
fn run(mut ctx: LlamaContext<'static>, n_slots: usize, n_vocab: u32, jobs: Receiver<Job>) {
    let n_batch = (ctx.n_batch() as usize).max(1);
    let mut batch = LlamaBatch::new(n_batch.max(n_slots), 1);
    let mut slots: Vec<Slot> = (0..n_slots)
        .map(|_| Slot {
            cached: Vec::new(),
            active: None,
        })
        .collect();
    loop {
        // Admit new jobs into free slots; wait for one when nothing runs.
        let busy = slots.iter().any(|s| s.active.is_some());
        let free = slots.iter().any(|s| s.active.is_none());
        if free {
            let job = if busy {
                jobs.try_recv().ok()
            } else {
                match jobs.recv() {
                    Ok(job) => Some(job),
                    Err(_) => return, // the model is gone
                }
            };
            if let Some(job) = job {
                // A caller that left while its job was queued costs no slot's cache.
                if !job.cancelled.load(Ordering::Relaxed) {
                    admit(&mut ctx, &mut slots, job, n_vocab);
                }
                continue;
            }
        }
        // Drop jobs whose callers cancelled or left.
        for (seq, slot) in slots.iter_mut().enumerate() {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.cancelled.load(Ordering::Relaxed))
            {
                release(&mut ctx, slot, seq, false);
            }
        }
        // One batch: every decoding sequence's token, then prefill chunks.
        batch.clear();
        let mut room = batch_room(n_batch, n_slots);
        let mut failed: Option<EngineError> = None;
        for (seq, slot) in slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            a.logits_at = None;
            if let Some(id) = a.pending.take() {
                let pos = slot.cached.len();
                let added = position(pos).and_then(|p| {
                    batch
                        .add(LlamaToken::new(id as i32), p, &[seq as i32], true)
                        .map_err(batch_error)
                });
                if let Err(e) = added {
                    failed = Some(e);
                    break;
                }
                a.logits_at = Some(batch.n_tokens() - 1);
                slot.cached.push(id);
                room = room.saturating_sub(1);
            }
        }
        for (seq, slot) in slots.iter_mut().enumerate() {
            if failed.is_some() || room == 0 {
                break;
            }
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if a.next_prompt >= a.job.prompt.len() {
                continue;
            }
            let end = (a.next_prompt + room).min(a.job.prompt.len());
            for i in a.next_prompt..end {
                let last = i + 1 == a.job.prompt.len();
                let added = position(i).and_then(|p| {
                    batch
                        .add(
                            LlamaToken::new(a.job.prompt[i] as i32),
                            p,
                            &[seq as i32],
                            last,
                        )
                        .map_err(batch_error)
                });
                if let Err(e) = added {
                    failed = Some(e);
                    break;
                }
                if last {
                    a.logits_at = Some(batch.n_tokens() - 1);
                }
            }
            slot.cached
                .extend_from_slice(&a.job.prompt[a.next_prompt..end]);
            room -= end - a.next_prompt;
            a.next_prompt = end;
        }
        if failed.is_none() && batch.n_tokens() > 0 {
            failed = ctx.decode(&mut batch).map_err(decode_error).err();
        }
        if let Some(e) = failed {
            // The cache's state is unknown: every running job fails, every slot forgets.
            for (seq, slot) in slots.iter_mut().enumerate() {
                if let Some(a) = slot.active.as_ref() {
                    let _ = a.job.events.send(Event::Failed(e.clone()));
                }
                release(&mut ctx, slot, seq, true);
            }
            continue;
        }
        // Sample every sequence that has logits, tell the callers, then hear them out.
        let mut asked = Vec::new();
        for (seq, slot) in slots.iter_mut().enumerate() {
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            let Some(at) = a.logits_at else { continue };
            let token = a.sampler.sample(&ctx, at);
            let id = token.0.max(0) as u32;
            let score = a.job.top.map(|k| {
                let (logprob, top) =
                    runanywhere_plugin_api::ext::logprobs(ctx.get_logits_ith(at), id, k);
                Score { logprob, top }
            });
            if a.job.events.send(Event::Token(id, score)).is_ok() {
                asked.push((seq, id));
            } else {
                release(&mut ctx, slot, seq, false);
            }
        }
        for (seq, id) in asked {
            let slot = &mut slots[seq];
            let verdict = slot
                .active
                .as_ref()
                .map(|a| a.job.verdicts.recv().unwrap_or(Verdict::Stop));
            match verdict {
                Some(Verdict::Continue) => {
                    if let Some(a) = slot.active.as_mut() {
                        a.pending = Some(id);
                    }
                }
                _ => release(&mut ctx, slot, seq, false),
            }
        }
    }
}

/// Tokens one step may hold: `n_batch`, but never fewer than one per slot.
fn batch_room(n_batch: usize, n_slots: usize) -> usize {
    n_batch.max(n_slots)
}

/// Puts `job` in the free slot whose history shares the longest prefix with its prompt,
/// reusing those cached positions.
fn admit(ctx: &mut LlamaContext<'static>, slots: &mut [Slot], job: Job, n_vocab: u32) {
    let (seq, reuse) = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .map(|(i, s)| (i, common_prefix(&s.cached, &job.prompt)))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
        .unwrap_or((0, 0));
    // Keep at least the prompt's last token to run: its logits give the first sample.
    let mut reuse = reuse.min(job.prompt.len().saturating_sub(1));
    let slot = &mut slots[seq];
    let seq_id = Some(seq as u32);
    let from = Some(reuse as u32);
    if !matches!(ctx.clear_kv_cache_seq(seq_id, from, None), Ok(true)) {
        let _ = ctx.clear_kv_cache_seq(seq_id, None, None);
        reuse = 0;
    }
    slot.cached.truncate(reuse);
    if reuse > 0 {
        tracing::debug!(slot = seq, reused = reuse, "reusing cached prompt tokens");
    }
    let (mut sampler, penalized) = build_sampler(&job.sampling, n_vocab);
    if penalized {
        let prompt: Vec<LlamaToken> = job
            .prompt
            .iter()
            .map(|&id| LlamaToken::new(id as i32))
            .collect();
        sampler.accept_many(prompt.iter());
    }
    slot.active = Some(Active {
        job,
        sampler,
        next_prompt: reuse,
        pending: None,
        logits_at: None,
    });
}

/// Frees a slot; with `forget`, its cache too.
fn release(ctx: &mut LlamaContext<'static>, slot: &mut Slot, seq: usize, forget: bool) {
    slot.active = None;
    if forget {
        slot.cached.clear();
        let _ = ctx.clear_kv_cache_seq(Some(seq as u32), None, None);
    }
}
