//! A loaded `.tflite` decoder: its interpreter, the KV buffers the plugin owns between
//! calls, the tokenizer, and generation through the kit's shared loop.
//!
//! # Generation
//!
//! The caches live outside the model (litert-torch's layout): one K and one V buffer per
//! layer, zeroed at the start of a generation, passed into every call and replaced by
//! the call's outputs. The prompt goes through the prefill signatures: per chunk the
//! smallest `prefill_<P>` that holds it, or the largest one for a longer chunk, padded
//! with token 0 (the padding writes cache rows past the prompt, which later steps
//! overwrite before the causal mask exposes them: see the fixture's README). A prefill
//! never runs past the end of the cache (`input_pos[0] + P ≤ S`, else the graph clamps
//! the write and corrupts the cache): near the end, a smaller signature or `decode` steps
//! take over. Then `decode`, one token per call, while positions stay below S.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use abi_stable::std_types::{ROption, RString, RVec};
use runanywhere_plugin_api::generate::{self, Forward, Vocabulary};
use runanywhere_plugin_api::sdk::Sink;
use runanywhere_plugin_api::{
    decode, EngineError, GenerateRequest, GenerationStats, KeyValue, LoadRequest, ModelInfo,
};
use runanywhere_tokenizer::Vocab;

use crate::error::{LiteRtError, Result};
use crate::graph::Graph;
use crate::runtime::Runtime;

/// A loaded LiteRT language model.
pub struct LiteRtModel {
    /// `None` for a vocab-only load.
    graph: Option<Mutex<Graph>>,
    tokenizer: Vocab,
    info: ModelInfo,
    vocab: u32,
    context_length: u32,
    /// The longest prefill signature (the kit's chunk size).
    max_chunk: usize,
}

impl LiteRtModel {
    /// Loads the model and tokenizer `request` names.
    pub(crate) fn load(runtime: &Runtime, request: &LoadRequest) -> Result<Self> {
        let path = Path::new(request.model_path.as_str());
        if path.as_os_str().is_empty() {
            return Err(LiteRtError::InvalidRequest("no model path given".into()));
        }
        check_file(path)?;
        let graph = Graph::open(runtime, path, request.threads)?;
        let vocab = u32::try_from(graph.vocab).unwrap_or(u32::MAX);
        let cache = u32::try_from(graph.cache_len).unwrap_or(u32::MAX);
        let given = match &request.tokenizer_path {
            ROption::RSome(t) => Some(PathBuf::from(t.as_str())),
            ROption::RNone => None,
        };
        let (converted, tokenizer_file) =
            runanywhere_convert::tokenizer::side_file(path, given.as_deref(), graph.vocab)
                .map_err(|e| LiteRtError::InvalidModel(e.to_string()))?;
        let mut special = converted.special;
        special.eog.extend(special.eos);
        special.eog.retain(|&id| id < vocab);
        special.eog.sort_unstable();
        special.eog.dedup();
        let tokenizer = Vocab::new(converted.tokenizer, special.clone(), graph.vocab);
        let context_length = decode::context_length(request.context_length, cache, Some(cache))
            .map_err(|e| LiteRtError::InvalidRequest(e.message().to_string()))?;
        let signatures: Vec<String> = graph.signatures.iter().map(|s| s.key.clone()).collect();
        let max_chunk = graph.signatures.iter().map(|s| s.tokens).max().unwrap_or(1);
        let info = ModelInfo {
            architecture: RString::from("llama"),
            parameter_count: 0,
            context_length,
            train_context_length: cache,
            vocab_size: vocab,
            bos: special.bos.into(),
            eos: special.eos.into(),
            eog: RVec::from(special.eog.clone()),
            chat_template: ROption::RNone,
            extensions: RVec::from(vec![
                KeyValue::new("format", "tflite"),
                KeyValue::new("tflite.version", runtime.version.as_str()),
                KeyValue::new("tflite.signatures", signatures.join(",")),
                KeyValue::new("tokenizer_file", tokenizer_file.display().to_string()),
            ]),
        };
        tracing::debug!(model = %path.display(), vocab, cache, ?signatures, "loaded TFLite model");
        Ok(LiteRtModel {
            graph: (!request.vocab_only).then(|| Mutex::new(graph)),
            tokenizer,
            info,
            vocab,
            context_length,
            max_chunk,
        })
    }

    pub(crate) fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    pub(crate) fn tokenizer(&self) -> &Vocab {
        &self.tokenizer
    }

    /// Generates through the kit's shared loop; see the module docs.
    pub(crate) fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn Sink,
    ) -> std::result::Result<GenerationStats, EngineError> {
        let graph = self.graph.as_ref().ok_or_else(EngineError::vocab_only)?;
        let tokenize = |text: &str, add: bool, parse: bool| {
            self.tokenizer
                .tokenize(text, add, parse)
                .map_err(|e| EngineError::invalid_request(format!("cannot tokenize the text: {e}")))
        };
        let bytes = |id: u32, out: &mut Vec<u8>| {
            let piece = self
                .tokenizer
                .text_bytes(id)
                .ok_or_else(|| EngineError::token_out_of_range(id, self.vocab))?;
            out.extend_from_slice(piece);
            Ok(())
        };
        let vocab = Vocabulary {
            size: self.vocab,
            eog: self.tokenizer.special().eog.clone(),
            tokenize: &tokenize,
            bytes: &bytes,
        };
        let mut graph = graph.lock().unwrap_or_else(PoisonError::into_inner);
        let kv = graph
            .cache_elements
            .iter()
            .map(|&n| vec![0f32; n])
            .collect();
        let mut run = Run {
            graph: &mut graph,
            kv,
        };
        generate::run(
            &mut run,
            &vocab,
            self.context_length as usize,
            self.max_chunk,
            request,
            sink,
        )
    }
}

/// Refuses what is not a `.tflite` file before TFLite opens it, with the format
/// check's message for damaged files (TFLite's own is a line on stderr).
fn check_file(path: &Path) -> Result<()> {
    let verification = runanywhere_formats::verify_path(path);
    if let Some(problem) = verification.problem {
        return Err(LiteRtError::InvalidModel(problem.to_string()));
    }
    if verification.format != Some(runanywhere_formats::ModelFormat::Tflite) {
        return Err(LiteRtError::Unsupported(format!(
            "{} is not a TFLite model (.tflite); this engine reads only those",
            path.display()
        )));
    }
    Ok(())
}

/// One generation: the interpreter and its KV buffers.
struct Run<'a> {
    graph: &'a mut Graph,
    kv: Vec<Vec<f32>>,
}

impl Forward for Run<'_> {
    fn reset(&mut self) -> std::result::Result<(), EngineError> {
        self.kv.iter_mut().for_each(|b| b.fill(0.0));
        Ok(())
    }

    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> std::result::Result<(), EngineError> {
        let cache = self.graph.cache_len;
        if pos + ids.len() > cache {
            return Err(LiteRtError::ContextOverflow(format!(
                "positions {pos}..{} are past the model's KV cache of {cache} positions",
                pos + ids.len()
            ))
            .into());
        }
        let vocab = u32::try_from(self.graph.vocab).unwrap_or(u32::MAX);
        if let Some(&bad) = ids.iter().find(|&&id| id >= vocab) {
            return Err(EngineError::token_out_of_range(bad, vocab));
        }
        let (mut done, mut at) = (0, pos);
        while done < ids.len() {
            let left = ids.len() - done;
            let index = pick(self.graph, left, at);
            let take = left.min(self.graph.signatures[index].tokens);
            self.graph
                .run(index, &ids[done..done + take], at, &mut self.kv, logits)?;
            done += take;
            at += take;
        }
        Ok(())
    }
}

/// The signature for `left` tokens at position `at`: the smallest prefill that holds
/// them, else the longest; only those that end inside the cache; `decode` (the last
/// signature, P = 1) when no prefill fits or one token is left.
fn pick(graph: &Graph, left: usize, at: usize) -> usize {
    let decode = graph.signatures.len() - 1;
    if left == 1 {
        return decode;
    }
    let fits: Vec<usize> = (0..decode)
        .filter(|&i| at + graph.signatures[i].tokens <= graph.cache_len)
        .collect();
    fits.iter()
        .copied()
        .find(|&i| graph.signatures[i].tokens >= left)
        .or_else(|| fits.last().copied())
        .unwrap_or(decode)
}
