//! A loaded ONNX decoder: its session, tokenizer and the generation loop.
//!
//! # Generation
//!
//! Every generation starts from an empty KV cache (past length 0). The whole prompt is
//! run in one session call; then each sampled token is run alone, with the previous
//! call's `present` outputs fed back as the next call's `past` inputs. The cache tensors
//! are handed over as ONNX Runtime values and never copied or inspected, so whatever
//! float type the model keeps its cache in passes through. The attention mask is all
//! ones over past plus new tokens and positions continue from the past length.
//!
//! Logits are read for the last position only; the loop itself, sampling, stop strings,
//! UTF-8 handling, limits and timing are the plugin kit's ([`generate::run`]), so this
//! engine behaves like every other one for the same request.
//!
//! # Concurrency
//!
//! `ort` runs a session through `&mut`, so the session sits behind a mutex: generations
//! on one model take turns, while tokenization (its own lock, held briefly) does not wait
//! for them.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use abi_stable::std_types::{ROption, RString, RVec};
use ort::memory::Allocator;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, Tensor};
use runanywhere_plugin_api::decode;
use runanywhere_plugin_api::generate::{self, Forward, Vocabulary};
use runanywhere_plugin_api::{
    EngineError, GenerateRequest, GenerationStats, KeyValue, LoadRequest, ModelInfo,
};
use runanywhere_tokenizer::{SpecialTokens, Vocab};
use serde_json::Value;

use crate::error::{OnnxError, Result};
use crate::layout::{self, ModelFiles};
use crate::runtime::Runtime;
use crate::signature::{self, IntInput, IntType, Port, Signature};
use crate::tokenizer;

/// Special tokens that end a turn in common chat models; those present in the
/// vocabulary count as end of generation, as in llama.cpp.
const END_OF_TURN_TOKENS: &[&str] = &[
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

/// A session and the description of how to drive it.
struct Decoder {
    session: Mutex<Session>,
    signature: Signature,
}

/// A loaded ONNX language model.
pub struct OnnxModel {
    /// `None` for a vocab-only load.
    decoder: Option<Decoder>,
    /// The tokenizer, with one entry per id the model accepts; its special tokens are
    /// the model's (end of generation included).
    tokenizer: Vocab,
    info: ModelInfo,
    /// Columns of the logits: ids below it are valid model inputs.
    vocab: u32,
    context_length: u32,
}

impl OnnxModel {
    /// Loads the model `request` names.
    pub(crate) fn load(runtime: &Runtime, request: &LoadRequest) -> Result<Self> {
        let path_str = request.model_path.as_str();
        if path_str.is_empty() {
            return Err(OnnxError::InvalidRequest("no model path given".into()));
        }
        let tokenizer_path = match &request.tokenizer_path {
            ROption::RSome(t) => Some(Path::new(t.as_str())),
            ROption::RNone => None,
        };
        let files = layout::resolve(Path::new(path_str), tokenizer_path)?;
        let hf_tokenizer = tokenizer::read(&files.tokenizer)?;

        let decoder = if request.vocab_only {
            None
        } else {
            let session = open_session(runtime, &files.onnx, request.threads)?;
            let ports = |outlets: &[ort::value::Outlet]| -> Vec<Port> {
                outlets
                    .iter()
                    .map(|o| Port {
                        name: o.name().to_string(),
                        ty: o.dtype().tensor_type(),
                        dims: o
                            .dtype()
                            .tensor_shape()
                            .map(|s| s.to_vec())
                            .unwrap_or_default(),
                    })
                    .collect()
            };
            let signature = signature::read(
                &ports(session.inputs()),
                &ports(session.outputs()),
                &files.config,
            )
            .map_err(|e| match e {
                OnnxError::Unsupported(m) => {
                    OnnxError::Unsupported(format!("{}: {m}", files.onnx.display()))
                }
                other => other,
            })?;
            Some(Decoder {
                session: Mutex::new(session),
                signature,
            })
        };

        let config = &files.config;
        let vocab = decoder
            .as_ref()
            .and_then(|d| d.signature.vocab)
            .and_then(|v| u32::try_from(v).ok())
            .or(config.vocab_size)
            .unwrap_or_else(|| {
                u32::try_from(hf_tokenizer.get_vocab_size(true)).unwrap_or(u32::MAX)
            });
        let train_context = config.context_length.unwrap_or(0);
        // Positions past the trained context fail inside the graph (absolute position
        // embeddings, fixed rotary caches), so it is the limit of a request.
        let limit = (train_context > 0).then_some(train_context);
        let context_length = decode::context_length(request.context_length, train_context, limit)
            .map_err(|e| OnnxError::InvalidRequest(e.message().to_string()))?;

        let mut eog: Vec<u32> = config.eos.clone();
        eog.extend(
            END_OF_TURN_TOKENS
                .iter()
                .filter_map(|t| hf_tokenizer.token_to_id(t)),
        );
        eog.retain(|&id| id < vocab);
        eog.sort_unstable();
        eog.dedup();

        let bos = config.bos.filter(|&b| b < vocab);
        let eos = config.eos.iter().copied().find(|&e| e < vocab);
        let tokenizer = tokenizer::vocab(hf_tokenizer, bos, eos, eog, vocab);
        let info = model_info(
            &files,
            decoder.as_ref(),
            runtime,
            request,
            vocab,
            context_length,
            tokenizer.special(),
        );
        tracing::debug!(
            model = path_str,
            onnx = %files.onnx.display(),
            vocab,
            context_length,
            vocab_only = request.vocab_only,
            "loaded ONNX model"
        );
        Ok(OnnxModel {
            decoder,
            tokenizer,
            info,
            vocab,
            context_length,
        })
    }

    /// Model facts.
    pub(crate) fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    /// The tokenizer.
    pub(crate) fn tokenizer(&self) -> &Vocab {
        &self.tokenizer
    }

    /// Text → ids the model accepts: the tokenizer may know more tokens than the model
    /// has logits for (a test model cut down to 1000 tokens, say), so its output is
    /// checked too.
    fn tokenize_for_model(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let ids = tokenizer::tokenize(&self.tokenizer, text, add_special, parse_special)?;
        if let Some(&bad) = ids.iter().find(|&&id| id >= self.vocab) {
            return Err(OnnxError::InvalidRequest(format!(
                "the tokenizer produced token id {bad}, but the model's vocabulary has {} \
                 tokens; the tokenizer does not belong to this model",
                self.vocab
            )));
        }
        Ok(ids)
    }

    /// Generates through the kit's shared loop; see the module docs.
    pub(crate) fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> std::result::Result<GenerationStats, EngineError> {
        let decoder = self.decoder.as_ref().ok_or_else(EngineError::vocab_only)?;
        let tokenize =
            |text: &str, add: bool, parse: bool| Ok(self.tokenize_for_model(text, add, parse)?);
        // Ids in rows padding the embedding past the tokenizer have no text.
        let bytes = |id: u32, out: &mut Vec<u8>| {
            out.extend_from_slice(tokenizer::piece(&self.tokenizer, id, false)?);
            Ok(())
        };
        let vocab = Vocabulary {
            size: self.vocab,
            eog: self.tokenizer.special().eog.clone(),
            tokenize: &tokenize,
            bytes: &bytes,
        };
        // A panic during an earlier generation (caught by the plugin kit) only poisons the
        // lock: every generation starts from a fresh cache, so the session is fine.
        let mut session = decoder
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut run = Run::new(&mut session, &decoder.signature, self.vocab as usize)?;
        // The whole prompt goes in one session call.
        let context = self.context_length as usize;
        generate::run(&mut run, &vocab, context, context, request, sink)
    }
}

/// The state of one generation: the session and its KV cache.
struct Run<'a> {
    session: &'a mut Session,
    signature: &'a Signature,
    /// One value per [`Signature::cache`] slot.
    cache: Vec<DynValue>,
    /// Tokens already in the cache.
    past: usize,
    /// The model's vocabulary size: the logits columns that are sampled.
    vocab: usize,
}

impl Forward for Run<'_> {
    fn reset(&mut self) -> std::result::Result<(), EngineError> {
        self.cache = empty_cache(self.signature)?;
        self.past = 0;
        Ok(())
    }

    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        logits: &mut Vec<f32>,
    ) -> std::result::Result<(), EngineError> {
        if pos != self.past {
            return Err(EngineError::internal(format!(
                "the ONNX cache holds {} positions, not {pos}",
                self.past
            )));
        }
        Ok(self.step(ids, logits)?)
    }
}

/// One empty cache tensor (past length 0) per cache slot of `signature`.
fn empty_cache(signature: &Signature) -> Result<Vec<DynValue>> {
    let allocator = Allocator::default();
    signature
        .cache
        .iter()
        .map(|slot| {
            DynTensor::new(&allocator, slot.ty, slot.empty_shape.clone())
                .map(|t| t.into_dyn())
                .map_err(|e| {
                    OnnxError::Internal(format!(
                        "cannot create the empty cache tensor {}: {e}",
                        slot.input
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()
}

impl<'a> Run<'a> {
    /// A run with an empty cache (past length 0).
    fn new(session: &'a mut Session, signature: &'a Signature, vocab: usize) -> Result<Self> {
        Ok(Run {
            session,
            signature,
            cache: empty_cache(signature)?,
            past: 0,
            vocab,
        })
    }

    /// Runs `tokens` after the cached ones, updates the cache and writes the logits of
    /// the last token into `logits`.
    fn step(&mut self, tokens: &[u32], logits: &mut Vec<f32>) -> Result<()> {
        let sig = self.signature;
        let n = tokens.len();
        let total = self.past + n;
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> =
            Vec::with_capacity(4 + sig.cache.len());
        inputs.push((
            &sig.input_ids.name,
            int_tensor(&sig.input_ids, n, tokens.iter().map(|&t| i64::from(t)))?,
        ));
        if let Some(mask) = &sig.attention_mask {
            inputs.push((
                &mask.name,
                int_tensor(mask, total, std::iter::repeat_n(1, total))?,
            ));
        }
        if let Some(positions) = &sig.position_ids {
            let start = i64::try_from(self.past).unwrap_or(i64::MAX);
            let end = i64::try_from(total).unwrap_or(i64::MAX);
            inputs.push((&positions.name, int_tensor(positions, n, start..end)?));
        }
        if let Some(flag) = &sig.use_cache_branch {
            let value = Tensor::from_array(([1usize], vec![self.past > 0]))
                .map_err(|e| OnnxError::Internal(format!("cannot create {flag}: {e}")))?;
            inputs.push((flag, value.into()));
        }
        for (slot, value) in sig.cache.iter().zip(std::mem::take(&mut self.cache)) {
            inputs.push((&slot.input, value.into()));
        }

        let mut outputs = self
            .session
            .run(inputs)
            .map_err(|e| OnnxError::Run(e.to_string()))?;
        {
            let value = outputs
                .get(&sig.logits)
                .ok_or_else(|| OnnxError::Run(format!("the `{}` output is missing", sig.logits)))?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| OnnxError::Run(format!("cannot read the logits: {e}")))?;
            logits.clear();
            logits.extend_from_slice(last_logits(shape, data, self.vocab)?);
        }
        let mut cache = Vec::with_capacity(sig.cache.len());
        for slot in &sig.cache {
            cache.push(outputs.remove(&slot.output).ok_or_else(|| {
                OnnxError::Run(format!("the `{}` output is missing", slot.output))
            })?);
        }
        self.cache = cache;
        self.past = total;
        Ok(())
    }
}

/// The logits of the last position, out of a `[.., columns]` tensor's `data`, cut to the
/// model's `vocab` columns.
///
/// Sampled ids are fed back as `input_ids`, so none may reach `vocab`. Logits wider than
/// the vocabulary are padding rows of the classifier (exports often round it up to a
/// multiple of 64 or 128) and are left out; narrower ones mean the graph does not have
/// the vocabulary its config or tokenizer says, and are refused.
fn last_logits<'d>(shape: &[i64], data: &'d [f32], vocab: usize) -> Result<&'d [f32]> {
    let columns = shape
        .last()
        .and_then(|&d| usize::try_from(d).ok())
        .filter(|&d| d > 0 && d <= data.len())
        .ok_or_else(|| OnnxError::Run(format!("the logits have an unexpected shape {shape:?}")))?;
    if columns < vocab {
        return Err(OnnxError::Unsupported(format!(
            "the graph's logits have {columns} columns but the model's vocabulary has {vocab} \
             tokens; the graph does not match its config or tokenizer"
        )));
    }
    let last = &data[data.len() - columns..];
    Ok(&last[..vocab])
}

/// A `[1, len]` integer tensor of `values`, in the input's width.
fn int_tensor(
    input: &IntInput,
    len: usize,
    values: impl Iterator<Item = i64>,
) -> Result<SessionInputValue<'static>> {
    let error = |e: ort::Error| OnnxError::Internal(format!("cannot create {}: {e}", input.name));
    let shape = [1usize, len];
    Ok(match input.ty {
        IntType::I64 => Tensor::from_array((shape, values.collect::<Vec<i64>>()))
            .map_err(error)?
            .into(),
        IntType::I32 => {
            let values = values
                .map(|v| {
                    i32::try_from(v).map_err(|_| {
                        OnnxError::InvalidRequest(format!(
                            "{v} does not fit the int32 input {}",
                            input.name
                        ))
                    })
                })
                .collect::<Result<Vec<i32>>>()?;
            Tensor::from_array((shape, values)).map_err(error)?.into()
        }
    })
}

/// Creates the session for `onnx`.
fn open_session(runtime: &Runtime, onnx: &Path, threads: u32) -> Result<Session> {
    let builder_error = |e: ort::Error<ort::session::builder::SessionBuilder>| {
        OnnxError::Internal(format!("cannot configure the ONNX Runtime session: {e}"))
    };
    let mut builder = Session::builder(&runtime.environment).map_err(|e| {
        OnnxError::Internal(format!(
            "cannot create an ONNX Runtime session builder: {e}"
        ))
    })?;
    if threads > 0 {
        builder = builder
            .with_intra_threads(threads as usize)
            .map_err(builder_error)?;
    }
    builder.commit_from_file(onnx).map_err(|e| {
        use ort::ErrorCode as C;
        let message = format!(
            "{}: ONNX Runtime cannot load the model: {}",
            onnx.display(),
            e.message()
        );
        match e.code() {
            C::NotImplemented => OnnxError::Unsupported(message),
            _ => OnnxError::InvalidModel(message),
        }
    })
}

/// The model's facts.
fn model_info(
    files: &ModelFiles,
    decoder: Option<&Decoder>,
    runtime: &Runtime,
    request: &LoadRequest,
    vocab: u32,
    context_length: u32,
    special: &SpecialTokens,
) -> ModelInfo {
    let config = &files.config;
    let mut extensions = vec![
        KeyValue::new("onnx.file", files.onnx.display().to_string()),
        KeyValue::new("tokenizer", files.tokenizer.display().to_string()),
        KeyValue::new("onnxruntime.version", runtime.version.as_str()),
        KeyValue::new("vocab_only", request.vocab_only.to_string()),
    ];
    if let Some(source) = &config.source {
        extensions.push(KeyValue::new("config", source.display().to_string()));
    }
    if let Some(d) = decoder {
        extensions.extend([
            KeyValue::new("n_layer", d.signature.layers.to_string()),
            KeyValue::new("onnx.kv_cache", d.signature.layout.name()),
            KeyValue::new(
                "threads",
                match request.threads {
                    0 => "default".to_string(),
                    n => n.to_string(),
                },
            ),
        ]);
    }
    ModelInfo {
        architecture: RString::from(config.architecture.as_deref().unwrap_or("onnx")),
        parameter_count: 0,
        context_length,
        train_context_length: config.context_length.unwrap_or(0),
        vocab_size: vocab,
        bos: ROption::from(special.bos),
        eos: ROption::from(special.eos),
        eog: RVec::from(special.eog.clone()),
        chat_template: ROption::from(
            files
                .tokenizer_config
                .as_deref()
                .and_then(chat_template)
                .map(RString::from),
        ),
        extensions: RVec::from(extensions),
    }
}

/// The chat template of `tokenizer_config.json`: a string, or a list of named templates
/// of which `default` is taken.
fn chat_template(path: &Path) -> Option<String> {
    let json: Value =
        serde_json::from_str(&runanywhere_formats::fs::read_regular_to_string(path).ok()?).ok()?;
    match json.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => items
            .iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|i| i.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_logits_takes_the_last_row() {
        let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(last_logits(&[1, 2, 3], &data, 3).unwrap(), &[3.0, 4.0, 5.0]);
    }

    #[test]
    fn logits_wider_than_the_vocabulary_are_cut_to_it() {
        // Two positions of five columns, the last two of them padding.
        let data = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        assert_eq!(last_logits(&[1, 2, 5], &data, 3).unwrap(), &[5.0, 6.0, 7.0]);
    }

    #[test]
    fn logits_narrower_than_the_vocabulary_are_refused() {
        let data = [0.0; 6];
        let err = last_logits(&[1, 2, 3], &data, 4).unwrap_err();
        assert!(matches!(err, OnnxError::Unsupported(_)), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("3 columns") && message.contains("4 tokens"),
            "{message}"
        );
        assert_eq!(
            EngineError::from(err).kind(),
            runanywhere_plugin_api::ErrorKind::UnsupportedFormat
        );
    }

    #[test]
    fn malformed_logits_shapes_are_errors() {
        let data = [0.0; 4];
        assert!(matches!(last_logits(&[], &data, 4), Err(OnnxError::Run(_))));
        assert!(matches!(
            last_logits(&[1, 0], &data, 0),
            Err(OnnxError::Run(_))
        ));
        assert!(matches!(
            last_logits(&[1, 8], &data, 4),
            Err(OnnxError::Run(_))
        ));
    }
}
