//! The bookkeeping of one generation, shared by engines that run their own decode loop.
//!
//! [`GenerationTracker`] checks the prompt against the context, counts tokens against
//! `max_tokens` and the context, recognises end-of-generation tokens, feeds the
//! [`TextStreamer`], and measures time, so that every engine reports the same
//! [`GenerationStats`] with the same meaning. The engine only computes logits (or asks
//! its framework for the next token) and calls [`GenerationTracker::accept`].

use std::time::Instant;

use abi_stable::std_types::RVec;

use crate::abi::{GenerateRequest, GenerationStats, Prompt, StopReason};
use crate::emit::{Score, TextStreamer};
use crate::error::EngineError;

/// The prompt of `request` as token ids: a text prompt goes through `tokenize(text,
/// add_special, parse_special)`; given ids are checked against `vocab_size` so that an
/// out-of-range id is an `InvalidRequest` rather than an out-of-bounds read in a framework.
pub fn prompt_ids(
    request: &GenerateRequest,
    vocab_size: u32,
    tokenize: impl FnOnce(&str, bool, bool) -> Result<Vec<u32>, EngineError>,
) -> Result<Vec<u32>, EngineError> {
    match &request.prompt {
        Prompt::Text(text) => tokenize(text.as_str(), request.add_special, request.parse_special),
        Prompt::Ids(ids) => {
            if let Some(&bad) = ids.iter().find(|&&id| id >= vocab_size) {
                return Err(EngineError::token_out_of_range(bad, vocab_size));
            }
            Ok(ids.to_vec())
        }
    }
}

/// The context a load gets when it asks for none and the model's trained length is
/// unknown, and the most it gets by default (a model trained for 128k positions would
/// otherwise allocate a KV cache for all of them).
pub const DEFAULT_MAX_CONTEXT: u32 = 4096;

/// The context-length policy every engine applies, in one place:
///
/// * `requested` 0 (not given): the model's `trained` length, at most
///   [`DEFAULT_MAX_CONTEXT`] (which is also the answer when `trained` is 0, unknown);
/// * `requested` n: n, even above the trained length (as llama.cpp does: quality may
///   degrade past it, but the user asked);
/// * except that an engine that cannot run positions past `hard_limit` (a fixed table
///   of absolute or rotary positions) refuses a larger request with the limit in the
///   message, rather than silently running a smaller context. A default above the
///   limit is lowered to it.
pub fn context_length(
    requested: u32,
    trained: u32,
    hard_limit: Option<u32>,
) -> Result<u32, EngineError> {
    let default = match trained {
        0 => DEFAULT_MAX_CONTEXT,
        t => t.min(DEFAULT_MAX_CONTEXT),
    };
    match (requested, hard_limit) {
        (0, Some(limit)) => Ok(default.min(limit)),
        (0, None) => Ok(default),
        (n, Some(limit)) if n > limit => Err(EngineError::invalid_request(format!(
            "a context length of {n} is more than this engine can run for this model \
             ({limit} positions); ask for at most {limit}"
        ))),
        (n, _) => Ok(n),
    }
}

/// State of one generation; see the module docs.
pub struct GenerationTracker<'s> {
    emitter: TextStreamer<'s>,
    top_logprobs: Option<usize>,
    prompt_ids: Vec<u32>,
    max_tokens: u32,
    context_length: usize,
    eog: Vec<u32>,
    /// Prompt plus generated ids (what a repetition penalty looks at).
    history: Vec<u32>,
    generated: u32,
    start: Instant,
    prefill_done: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

impl<'s> GenerationTracker<'s> {
    /// Starts a generation of `request` for `prompt_ids`.
    ///
    /// Fails with `InvalidRequest` on non-finite sampling parameters or an empty prompt,
    /// and with `ContextOverflow` when the prompt fills the whole context, leaving no
    /// position to run a generated token at (`prompt_ids.len() >= context_length`).
    pub fn start(
        request: &GenerateRequest,
        prompt_ids: Vec<u32>,
        context_length: usize,
        eog: Vec<u32>,
        sink: &'s mut dyn crate::sdk::Sink,
    ) -> Result<Self, EngineError> {
        crate::sampling::validate(&request.sampling)?;
        if prompt_ids.is_empty() {
            return Err(EngineError::invalid_request(
                "the prompt is empty after tokenization (and the model adds no BOS); \
                 give a prompt (text or token ids)",
            ));
        }
        if prompt_ids.len() >= context_length {
            return Err(EngineError::context_overflow(
                prompt_ids.len() + 1,
                context_length,
            ));
        }
        let top_logprobs = sink.top_logprobs();
        Ok(GenerationTracker {
            top_logprobs,
            emitter: TextStreamer::new(request.stop.as_slice(), sink),
            history: prompt_ids.clone(),
            prompt_ids,
            max_tokens: request.max_tokens,
            context_length,
            eog,
            generated: 0,
            start: Instant::now(),
            prefill_done: None,
            first_token: None,
            last_token: None,
        })
    }

    /// The prompt ids.
    pub fn prompt_ids(&self) -> &[u32] {
        &self.prompt_ids
    }

    /// Prompt plus the ids generated so far.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Whether the host asked to stop, for engines to poll where no token is emitted
    /// (between prefill chunks): then finish with [`StopReason::Cancelled`].
    pub fn cancelled(&self) -> bool {
        self.emitter.sink_cancelled()
    }

    /// Marks the end of the prompt's forward pass.
    pub fn prefill_done(&mut self) {
        self.prefill_done.get_or_insert_with(Instant::now);
    }

    /// Takes the next token, sampled from the logits at position `history().len() - 1`.
    /// Returns `Some(reason)` when generation is over; otherwise the caller runs the
    /// model on this token and samples again.
    pub fn accept(&mut self, id: u32, bytes: &[u8]) -> Option<StopReason> {
        self.accept_scored(id, bytes, None)
    }

    /// The number of alternatives per token the sink wants log-probabilities for
    /// (`None`: it wants none), asked once at the start.
    pub fn top_logprobs(&self) -> Option<usize> {
        self.top_logprobs
    }

    /// [`GenerationTracker::accept`] with the token's [`Score`], which reaches the sink
    /// with the token.
    pub fn accept_scored(
        &mut self,
        id: u32,
        bytes: &[u8],
        score: Option<Score>,
    ) -> Option<StopReason> {
        let now = Instant::now();
        self.prefill_done.get_or_insert(now);
        if self.eog.contains(&id) {
            return Some(StopReason::EndOfGeneration);
        }
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
        self.generated += 1;
        self.history.push(id);
        if let Some(reason) = self.emitter.push_scored(id, bytes, score) {
            return Some(reason);
        }
        if self.max_tokens > 0 && self.generated >= self.max_tokens {
            return Some(StopReason::MaxTokens);
        }
        // The next forward pass would run this token at position history.len() - 1.
        if self.history.len() > self.context_length {
            return Some(StopReason::ContextFull);
        }
        None
    }

    /// Ends the generation and returns its statistics. Held text is flushed unless the
    /// generation stopped on a stop string or was cancelled.
    pub fn finish(mut self, reason: StopReason) -> GenerationStats {
        if !matches!(reason, StopReason::StopString | StopReason::Cancelled) {
            self.emitter.finish();
        }
        let us = |from: Instant, to: Option<Instant>| {
            to.map(|t| t.duration_since(from).as_micros() as u64)
                .unwrap_or(0)
        };
        GenerationStats {
            prompt_ids: RVec::from(self.prompt_ids),
            generated_tokens: self.emitter.emitted_tokens(),
            prefill_us: us(self.start, self.prefill_done),
            first_token_us: us(self.start, self.first_token),
            decode_us: self
                .first_token
                .map(|f| us(f, self.last_token))
                .unwrap_or(0),
            stop_reason: reason.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Prompt, SinkControl};

    fn request(max_tokens: u32, stop: &[&str]) -> GenerateRequest {
        let mut r = GenerateRequest::new(Prompt::Ids(RVec::from(vec![1])));
        r.max_tokens = max_tokens;
        r.stop = stop.iter().map(|s| (*s).into()).collect();
        r
    }

    #[test]
    fn stops_at_max_tokens_eog_and_full_context() {
        let mut sink = |_: u32, _: &str| SinkControl::Continue;
        let mut d =
            GenerationTracker::start(&request(2, &[]), vec![1], 100, vec![2], &mut sink).unwrap();
        assert_eq!(d.accept(5, b"a"), None);
        assert_eq!(d.accept(6, b"b"), Some(StopReason::MaxTokens));
        let stats = d.finish(StopReason::MaxTokens);
        assert_eq!(stats.generated_tokens, 2);
        assert_eq!(stats.stop_reason(), StopReason::MaxTokens);

        let mut d =
            GenerationTracker::start(&request(0, &[]), vec![1], 100, vec![2], &mut sink).unwrap();
        assert_eq!(d.accept(2, b""), Some(StopReason::EndOfGeneration));
        assert_eq!(d.finish(StopReason::EndOfGeneration).generated_tokens, 0);

        let mut d =
            GenerationTracker::start(&request(0, &[]), vec![1, 1], 4, vec![], &mut sink).unwrap();
        assert_eq!(d.accept(5, b"a"), None);
        assert_eq!(d.accept(5, b"a"), None);
        assert_eq!(d.accept(5, b"a"), Some(StopReason::ContextFull));
    }

    #[test]
    fn prompt_ids_tokenize_text_and_check_given_ids() {
        let mut r = request(0, &[]);
        r.prompt = Prompt::Ids(RVec::from(vec![1, 7]));
        assert_eq!(
            prompt_ids(&r, 8, |_, _, _| unreachable!()).unwrap(),
            vec![1, 7]
        );
        let err = prompt_ids(&r, 7, |_, _, _| unreachable!()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
        assert!(err.message().contains("token id 7"), "{}", err.message());
        r.prompt = Prompt::Text("ab".into());
        r.add_special = false;
        let ids = prompt_ids(&r, 8, |t, add, _| Ok(vec![t.len() as u32, add as u32])).unwrap();
        assert_eq!(ids, vec![2, 0]);
    }

    #[test]
    fn prompt_must_fit_and_not_be_empty() {
        let mut sink = |_: u32, _: &str| SinkControl::Continue;
        let err = GenerationTracker::start(&request(0, &[]), vec![1; 8], 8, vec![], &mut sink)
            .err()
            .unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::ContextOverflow);
        let err = GenerationTracker::start(&request(0, &[]), vec![], 8, vec![], &mut sink)
            .err()
            .unwrap();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidRequest);
    }
}
