//! Generation: the kit's shared loop ([`generate::run`]) over a Candle backend.
//!
//! Everything but the forward passes comes from the plugin kit: prompt checks, chunked
//! prefill (chunks of the load's batch size, 512 by default, each one forward pass with
//! the KV cache of the chunks before it), sampling, end-of-generation, `max_tokens`,
//! stop strings, a full context, a cancelling sink, UTF-8 buffering and timing. This
//! module only runs each forward pass on the model's thread pool and maps Candle's
//! errors.

use std::sync::{Mutex, PoisonError};

use runanywhere_convert::Vocab;
use runanywhere_plugin_api::generate::{self, Forward, Vocabulary};
use runanywhere_plugin_api::{EngineError, GenerateRequest, GenerationStats};

use crate::backend::Backend;
use crate::errors::forward_error;
use crate::threads::Threads;

/// What a generation needs from the model.
pub(crate) struct Generator<'m> {
    /// The vocabulary.
    pub(crate) vocab: &'m Vocab,
    /// The weights and KV cache.
    pub(crate) backend: &'m Mutex<Box<dyn Backend>>,
    /// Where forward passes run.
    pub(crate) threads: &'m Threads,
    /// Context length in tokens.
    pub(crate) context_length: usize,
    /// Ids the model accepts.
    pub(crate) n_vocab: usize,
    /// Prefill chunk size.
    pub(crate) batch: usize,
}

/// A backend whose forward passes run on a thread pool.
struct OnPool<'a> {
    backend: &'a mut dyn Backend,
    threads: &'a Threads,
}

impl Forward for OnPool<'_> {
    fn reset(&mut self) -> Result<(), EngineError> {
        self.backend.reset().map_err(forward_error)
    }

    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError> {
        let backend = &mut *self.backend;
        *logits = self
            .threads
            .run(|| backend.forward(ids, pos))
            .map_err(forward_error)?;
        Ok(())
    }
}

impl Generator<'_> {
    /// Runs one generation.
    pub(crate) fn run(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        let tokenize = |text: &str, add: bool, parse: bool| {
            self.vocab
                .tokenize(text, add, parse)
                .map_err(|e| EngineError::invalid_request(e.to_string()))
        };
        let bytes = |id: u32, out: &mut Vec<u8>| {
            out.extend_from_slice(self.vocab.text_bytes(id).unwrap_or_default());
            Ok(())
        };
        let vocab = Vocabulary {
            size: u32::try_from(self.n_vocab).unwrap_or(u32::MAX),
            eog: self.vocab.special().eog.clone(),
            tokenize: &tokenize,
            bytes: &bytes,
        };
        // One generation at a time per model. A panic in an earlier one (caught by the
        // plugin kit) only poisons the lock: the loop resets the cache it guards.
        let mut guard = self.backend.lock().unwrap_or_else(PoisonError::into_inner);
        let mut model = OnPool {
            backend: guard.as_mut(),
            threads: self.threads,
        };
        generate::run(
            &mut model,
            &vocab,
            self.context_length,
            self.batch,
            request,
            sink,
        )
    }
}
