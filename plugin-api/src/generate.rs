//! The one generation loop of every engine that computes logits itself (Candle, ONNX
//! Runtime, the mock, and third-party engines): the engine implements [`Forward`]
//! (reset the cache, run ids at positions, return the last logits) and
//! [`run`] does the rest, the same way for all of them.
//!
//! 1. The prompt (text through the engine's tokenizer, or ids checked against the
//!    vocabulary) is checked by [`GenerationTracker::start`]: sampling parameters, an empty
//!    prompt, a prompt that fills the context.
//! 2. The cache is reset and the prompt is prefilled in chunks of `batch` tokens, so a
//!    short prompt is one forward pass and a long one never builds one huge activation.
//! 3. Each step samples a token with the shared [`Sampler`] (greedy at temperature 0),
//!    and [`GenerationTracker::accept`] stops at end-of-generation, `max_tokens`, stop strings, a
//!    full context or a sink that asks to stop, streaming whole UTF-8 pieces.
//!
//! llama.cpp has its own loop (its sampler chain and batch API), configured from the
//! same request and reporting through the same [`GenerationTracker`].

use crate::abi::{GenerateRequest, GenerationStats, StopReason};
use crate::decode::{prompt_ids, GenerationTracker};
use crate::emit::Score;
use crate::error::EngineError;
use crate::sampling::Sampler;
use crate::sdk::Sink;

/// A model that computes next-token logits with a KV cache.
pub trait Forward {
    /// Empties the cache: the next [`Forward::forward`] starts at position 0.
    fn reset(&mut self) -> Result<(), EngineError>;

    /// Runs `ids` at positions `pos..pos + ids.len()` (every earlier position is in the
    /// cache) and writes the logits after the last of them into `logits` (replacing its
    /// content): one per vocabulary entry. The buffer is reused across steps.
    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> Result<(), EngineError>;
}

/// Text → ids (`add_special`, `parse_special`): an engine's tokenizer.
pub type Tokenize<'a> = dyn Fn(&str, bool, bool) -> Result<Vec<u32>, EngineError> + 'a;

/// id → its text bytes, appended to a buffer.
pub type TokenBytes<'a> = dyn Fn(u32, &mut Vec<u8>) -> Result<(), EngineError> + 'a;

/// What [`run`] needs to know about the model besides its forward pass.
pub struct Vocabulary<'a> {
    /// Logits per position: ids at or above it are refused in prompts.
    pub size: u32,
    /// Ids that end a generation.
    pub eog: Vec<u32>,
    /// Text → ids (`add_special`, `parse_special`), for text prompts.
    pub tokenize: &'a Tokenize<'a>,
    /// Appends the bytes a generated id adds to the text (none for control tokens) to
    /// the buffer, which is reused across steps.
    pub bytes: &'a TokenBytes<'a>,
}

/// Runs one generation of `request` on `model` with a context of `context_length`
/// tokens, prefilling `batch` tokens per forward pass, streaming to `sink`.
pub fn run(
    model: &mut dyn Forward,
    vocab: &Vocabulary<'_>,
    context_length: usize,
    batch: usize,
    request: &GenerateRequest,
    sink: &mut dyn Sink,
) -> Result<GenerationStats, EngineError> {
    let prompt = prompt_ids(request, vocab.size, vocab.tokenize)?;
    // A tokenizer may know more ids than the model has logits (or embedding rows) for.
    if let Some(&bad) = prompt.iter().find(|&&id| id >= vocab.size) {
        return Err(EngineError::invalid_request(format!(
            "the prompt holds token {bad}, but the model's vocabulary has {} tokens; the \
             tokenizer does not belong to this model",
            vocab.size
        )));
    }
    let mut decoding =
        GenerationTracker::start(request, prompt, context_length, vocab.eog.clone(), sink)?;
    let mut sampler = Sampler::new(&request.sampling);

    model.reset()?;
    let batch = batch.max(1);
    let mut logits = Vec::new();
    let prompt_len = decoding.prompt_ids().len();
    for start in (0..prompt_len).step_by(batch) {
        // A cancel during a long prefill takes effect within one chunk.
        if decoding.cancelled() {
            return Ok(decoding.finish(StopReason::Cancelled));
        }
        let end = (start + batch).min(prompt_len);
        model.forward(&decoding.prompt_ids()[start..end], start, &mut logits)?;
    }
    decoding.prefill_done();

    let mut pos = decoding.prompt_ids().len();
    let mut bytes = Vec::new();
    // The raw logits, kept for log-probabilities when the sink wants them (sampling
    // transforms `logits` in place).
    let top = decoding.top_logprobs();
    let mut raw = Vec::new();
    let reason = loop {
        if logits.len() != vocab.size as usize {
            return Err(EngineError::internal(format!(
                "the model returned {} logits for a vocabulary of {}",
                logits.len(),
                vocab.size
            )));
        }
        if top.is_some() {
            raw.clone_from(&logits);
        }
        let id = sampler.sample(&mut logits, decoding.history());
        bytes.clear();
        (vocab.bytes)(id, &mut bytes)?;
        let score = top.map(|k| {
            let (logprob, top) = crate::ext::logprobs(&raw, id, k);
            Score { logprob, top }
        });
        if let Some(reason) = decoding.accept_scored(id, &bytes, score) {
            break reason;
        }
        model.forward(&[id], pos, &mut logits)?;
        pos += 1;
    };
    Ok(decoding.finish(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Prompt, SinkControl, StopReason};

    /// Logits that make `next[pos]` the argmax, and a record of the calls.
    struct Scripted {
        next: Vec<u32>,
        calls: Vec<(Vec<u32>, usize)>,
    }

    impl Forward for Scripted {
        fn reset(&mut self) -> Result<(), EngineError> {
            self.calls.clear();
            Ok(())
        }

        fn forward(
            &mut self,
            ids: &[u32],
            pos: usize,
            logits: &mut Vec<f32>,
        ) -> Result<(), EngineError> {
            self.calls.push((ids.to_vec(), pos));
            *logits = vec![0.0; 8];
            let last = pos + ids.len() - 1;
            logits[self.next.get(last).copied().unwrap_or(0) as usize] = 1.0;
            Ok(())
        }
    }

    fn vocab<'a>(tokenize: &'a Tokenize<'a>, bytes: &'a TokenBytes<'a>) -> Vocabulary<'a> {
        Vocabulary {
            size: 8,
            eog: vec![7],
            tokenize,
            bytes,
        }
    }

    #[test]
    fn prefills_in_chunks_then_decodes_one_token_at_a_time() {
        let tokenize = |_: &str, _: bool, _: bool| Ok(vec![1, 2, 3, 4, 5]);
        let bytes = |id: u32, out: &mut Vec<u8>| {
            out.push(b'a' + id as u8);
            Ok(())
        };
        let v = vocab(&tokenize, &bytes);
        // Position 4 (the last prompt token) predicts 6, then 5 → 6, 6 → 7 (EOG).
        let mut model = Scripted {
            next: vec![0, 0, 0, 0, 6, 6, 7],
            calls: Vec::new(),
        };
        let request = GenerateRequest::new(Prompt::Text("x".into()));
        let mut text = String::new();
        let mut sink = |_: u32, piece: &str| {
            text.push_str(piece);
            SinkControl::Continue
        };
        let stats = run(&mut model, &v, 16, 2, &request, &mut sink).unwrap();
        assert_eq!(
            model.calls,
            [
                (vec![1, 2], 0),
                (vec![3, 4], 2),
                (vec![5], 4),
                (vec![6], 5),
                (vec![6], 6)
            ]
        );
        assert_eq!(stats.stop_reason(), StopReason::EndOfGeneration);
        assert_eq!(text, "gg");
    }

    #[test]
    fn ids_past_the_model_vocabulary_and_wrong_logit_widths_are_errors() {
        let tokenize = |_: &str, _: bool, _: bool| Ok(vec![1, 9]);
        let bytes = |_: u32, _: &mut Vec<u8>| Ok(());
        let v = vocab(&tokenize, &bytes);
        let mut model = Scripted {
            next: Vec::new(),
            calls: Vec::new(),
        };
        let request = GenerateRequest::new(Prompt::Text("x".into()));
        let mut sink = |_: u32, _: &str| SinkControl::Continue;
        let err = run(&mut model, &v, 16, 2, &request, &mut sink).unwrap_err();
        assert!(err.message().contains("does not belong"), "{err}");

        struct Wide;
        impl Forward for Wide {
            fn reset(&mut self) -> Result<(), EngineError> {
                Ok(())
            }
            fn forward(
                &mut self,
                _: &[u32],
                _: usize,
                l: &mut Vec<f32>,
            ) -> Result<(), EngineError> {
                *l = vec![0.0; 9];
                Ok(())
            }
        }
        let tokenize = |_: &str, _: bool, _: bool| Ok(vec![1]);
        let v = vocab(&tokenize, &bytes);
        let err = run(&mut Wide, &v, 16, 2, &request, &mut sink).unwrap_err();
        assert!(
            err.message().contains("9 logits for a vocabulary of 8"),
            "{err}"
        );
    }
}
