//! The decode loop: prefill the prompt, then sample and feed one token at a time.
//!
//! Everything but the forward passes comes from the plugin kit: [`Sampler`] picks tokens
//! from the logits (greedy at temperature 0, with the shared sampling chain otherwise),
//! and [`Decoding`] checks the prompt against the context, stops at end-of-generation
//! tokens, `max_tokens`, stop strings, a full context or a cancelling sink, buffers
//! UTF-8, and times the generation.
//!
//! The prompt is prefilled in chunks of the load's batch size (512 by default), each one
//! forward pass over the chunk with the KV cache of the chunks before it, so a short
//! prompt is one forward pass; only the logits of the last prompt position are kept.

use std::sync::{Mutex, PoisonError};

use runanywhere_convert::Vocab;
use runanywhere_plugin_api::decode::{self, Decoding};
use runanywhere_plugin_api::sampling::Sampler;
use runanywhere_plugin_api::{EngineError, GenerateRequest, GenerationStats, SinkControl};

use crate::backend::Forward;
use crate::errors::forward_error;
use crate::threads::Threads;

/// What a generation needs from the model.
pub(crate) struct Generator<'m> {
    /// The vocabulary.
    pub(crate) vocab: &'m Vocab,
    /// The weights and KV cache.
    pub(crate) backend: &'m Mutex<Box<dyn Forward>>,
    /// Where forward passes run.
    pub(crate) threads: &'m Threads,
    /// Context length in tokens.
    pub(crate) context_length: usize,
    /// Ids the model accepts.
    pub(crate) n_vocab: usize,
    /// Prefill chunk size.
    pub(crate) batch: usize,
}

impl Generator<'_> {
    /// Runs one generation.
    pub(crate) fn run(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn FnMut(u32, &str) -> SinkControl,
    ) -> Result<GenerationStats, EngineError> {
        let n_vocab = u32::try_from(self.n_vocab).unwrap_or(u32::MAX);
        let prompt = decode::prompt_ids(request, n_vocab, |text, add, parse| {
            self.vocab
                .tokenize(text, add, parse)
                .map_err(|e| EngineError::invalid_request(e.to_string()))
        })?;
        // A tokenizer may know more ids than the model has embedding rows.
        if let Some(bad) = prompt.iter().find(|&&id| id >= n_vocab) {
            return Err(EngineError::invalid_request(format!(
                "the prompt holds token {bad}, which the model (vocabulary of {n_vocab}) has no \
                 embedding for"
            )));
        }
        let eog = self.vocab.special().eog.clone();
        let mut sampler = Sampler::new(&request.sampling);
        // One generation at a time per model. A panic in an earlier one (caught by the
        // plugin kit) only poisons the lock: the cache it guards is reset below.
        let mut guard = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let backend: &mut Box<dyn Forward> = &mut guard;
        let mut decoding =
            Decoding::start(request, prompt.clone(), self.context_length, eog, sink)?;

        backend.reset().map_err(forward_error)?;
        let mut logits = Vec::new();
        for (i, chunk) in prompt.chunks(self.batch.max(1)).enumerate() {
            let pos = i * self.batch.max(1);
            logits = self
                .threads
                .run(|| backend.forward(chunk, pos))
                .map_err(forward_error)?;
        }
        decoding.prefill_done();

        let mut pos = prompt.len();
        let reason = loop {
            if logits.len() != self.n_vocab {
                return Err(EngineError::internal(format!(
                    "the model returned {} logits for a vocabulary of {}",
                    logits.len(),
                    self.n_vocab
                )));
            }
            let id = sampler.sample(&mut logits, decoding.history());
            let bytes = self.vocab.text_bytes(id).unwrap_or_default();
            if let Some(reason) = decoding.accept(id, bytes) {
                break reason;
            }
            logits = self
                .threads
                .run(|| backend.forward(&[id], pos))
                .map_err(forward_error)?;
            pos += 1;
        };
        Ok(decoding.finish(reason))
    }
}
