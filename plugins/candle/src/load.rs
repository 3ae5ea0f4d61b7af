//! From a `LoadRequest` to a vocabulary, a backend and the model's info.
//!
//! The format is recognised from content (a directory with `config.json`, the GGUF
//! magic, a llama2.c header), never from the extension alone. The tokenizer is the
//! file's own where it has one (GGUF), the folder's `tokenizer.json`, or the llama2.c
//! `tok*.bin` next to a checkpoint; `LoadRequest::tokenizer_path` overrides all of them.
//! Every file is checked by `runanywhere-convert` before Candle reads it.

use std::path::{Path, PathBuf};

use abi_stable::std_types::{ROption, RString, RVec};
use runanywhere_convert::gguf::GgufFile;
use runanywhere_convert::llama2c::{self, Checkpoint, Llama2cConfig};
use runanywhere_convert::tokenizer::{self, ConvertedTokenizer};
use runanywhere_convert::{llama, ConvertError, Vocab};
use runanywhere_plugin_api::{decode, EngineError, KeyValue, LoadRequest, ModelInfo};

use crate::backend::{Backend, GgufLlama, HfFolder, Llama2c, GGUF_MAX_POSITIONS};
use crate::errors::load_error;

/// What a model file is.
#[derive(Debug)]
enum Source {
    /// A Hugging Face folder.
    Folder(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
    /// A llama2.c checkpoint with its header.
    Llama2c(PathBuf, Llama2cConfig),
}

/// A loaded model before it is wrapped for the host.
pub(crate) struct Loaded {
    /// The vocabulary.
    pub(crate) vocab: Vocab,
    /// The weights; `None` for a vocab-only load.
    pub(crate) backend: Option<Box<dyn Backend>>,
    /// Facts for the host (extensions are completed by the caller).
    pub(crate) info: ModelInfo,
    /// Context length in effect.
    pub(crate) context_length: usize,
    /// Ids the model accepts (its embedding rows; the vocabulary size when vocab-only).
    pub(crate) n_vocab: usize,
    /// The file format, as in manifests.
    pub(crate) format: &'static str,
}

/// Loads the model `request` names.
pub(crate) fn load(request: &LoadRequest) -> Result<Loaded, EngineError> {
    let path_str = request.model_path.as_str();
    if path_str.is_empty() {
        return Err(EngineError::invalid_request("no model path given"));
    }
    let tokenizer_path = match &request.tokenizer_path {
        ROption::RSome(p) => Some(PathBuf::from(p.as_str())),
        ROption::RNone => None,
    };
    let requested = request.context_length as usize;
    match detect(Path::new(path_str))? {
        Source::Gguf(path) => load_gguf(
            &path,
            tokenizer_path.as_deref(),
            requested,
            request.vocab_only,
        ),
        Source::Llama2c(path, config) => load_llama2c(
            &path,
            config,
            tokenizer_path.as_deref(),
            requested,
            request.vocab_only,
        ),
        Source::Folder(dir) => load_folder(
            &dir,
            tokenizer_path.as_deref(),
            requested,
            request.vocab_only,
        ),
    }
    .map_err(LoadFailure::into_engine_error)
}

/// Recognises the format of `path` from its content.
fn detect(path: &Path) -> Result<Source, EngineError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| EngineError::invalid_model(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(Source::Folder(path.to_path_buf()));
        }
        return Err(EngineError::invalid_model(format!(
            "{} is a directory without config.json (a Hugging Face folder needs config.json, \
             *.safetensors and tokenizer.json)",
            path.display()
        )));
    }
    // A weights file inside a Hugging Face folder stands for the folder.
    if path.extension().is_some_and(|e| e == "safetensors") {
        if let Some(dir) = path.parent().filter(|d| d.join("config.json").is_file()) {
            return Ok(Source::Folder(dir.to_path_buf()));
        }
        return Err(EngineError::unsupported_format(format!(
            "{}: a bare safetensors file; give the Hugging Face folder (config.json, \
             *.safetensors, tokenizer.json)",
            path.display()
        )));
    }
    let mut head = Vec::with_capacity(28);
    runanywhere_formats::fs::open_regular(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 28), &mut head))
        .map_err(|e| EngineError::invalid_model(format!("cannot read {}: {e}", path.display())))?;
    if head.starts_with(b"GGUF") {
        return Ok(Source::Gguf(path.to_path_buf()));
    }
    match Llama2cConfig::from_header(path, &head) {
        Ok(config) => return Ok(Source::Llama2c(path.to_path_buf(), config)),
        // A plausible llama2.c header whose shape no engine runs: say so, not
        // "unrecognised content".
        Err(e) if runanywhere_formats::llama2c::Header::parse(&head).is_some() => {
            return Err(EngineError::invalid_model(e.to_string()));
        }
        Err(_) => {}
    }
    Err(EngineError::invalid_model(format!(
        "{}: {} (expected a GGUF file, a llama2.c checkpoint or a Hugging Face folder)",
        path.display(),
        if head.is_empty() {
            "the file is empty".to_string()
        } else {
            "unrecognised content".to_string()
        }
    )))
}

/// The context length for a request of `requested` (0 = the model's) on a model trained
/// with `train` positions (0 = unknown), by the kit's one policy
/// ([`decode::context_length`]); `limit` is a position table the backend cannot grow.
fn context_for(requested: usize, train: usize, limit: Option<usize>) -> Result<usize, EngineError> {
    let u = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    decode::context_length(u(requested), u(train), limit.map(u)).map(|c| c as usize)
}

/// Why a load failed: the conversion library's error, or the engine's own.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    /// Reading the model (see [`load_error`]).
    Convert(ConvertError),
    /// Anything else.
    Engine(EngineError),
}

impl From<ConvertError> for LoadFailure {
    fn from(e: ConvertError) -> Self {
        LoadFailure::Convert(e)
    }
}

impl From<EngineError> for LoadFailure {
    fn from(e: EngineError) -> Self {
        LoadFailure::Engine(e)
    }
}

impl LoadFailure {
    fn into_engine_error(self) -> EngineError {
        match self {
            LoadFailure::Convert(e) => load_error(e),
            LoadFailure::Engine(e) => e,
        }
    }
}

/// The tokenizer from an explicit file, or `default`.
fn tokenizer_or(
    explicit: Option<&Path>,
    vocab_size: usize,
    default: impl FnOnce() -> Result<ConvertedTokenizer, ConvertError>,
) -> Result<ConvertedTokenizer, ConvertError> {
    match explicit {
        Some(p) => tokenizer::from_file(p, vocab_size),
        None => default(),
    }
}

fn load_gguf(
    path: &Path,
    tokenizer_path: Option<&Path>,
    requested: usize,
    vocab_only: bool,
) -> Result<Loaded, LoadFailure> {
    let gguf = GgufFile::open(path)?;
    let arch = gguf.architecture().unwrap_or("").to_string();
    let train = gguf
        .get_u64(&format!("{arch}.context_length"))
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(0);
    let n_tokens = gguf
        .get_array("tokenizer.ggml.tokens")
        .map_or(0, <[_]>::len);
    let tok = tokenizer_or(tokenizer_path, n_tokens, || {
        tokenizer::from_gguf_vocab(&gguf)
    })?;
    let parameters: u64 = gguf
        .content()
        .tensor_infos
        .values()
        .map(|t| t.shape.elem_count() as u64)
        .sum();
    let mut extensions = vec![
        KeyValue::new("gguf.version", gguf.version().to_string()),
        KeyValue::new("file_size", gguf.file_size().to_string()),
    ];
    if let Some(name) = gguf.get_str("general.name") {
        extensions.push(KeyValue::new("general.name", name));
    }
    let (backend, vocab_size, context_length): (Option<Box<dyn Backend>>, usize, usize) =
        if vocab_only {
            (None, n_tokens, context_for(requested, train, None)?)
        } else {
            let params = llama::gguf_params(&gguf)?;
            // Candle's quantized llama has rotary tables for a fixed number of positions.
            let context = context_for(requested, train, Some(GGUF_MAX_POSITIONS))?;
            if let Some(q) = gguf.tensor_info("blk.0.attn_q.weight") {
                extensions.push(KeyValue::new("weights_type", format!("{:?}", q.ggml_dtype)));
            }
            let model = GgufLlama::load(gguf)?;
            (Some(Box::new(model)), params.vocab_size, context)
        };
    Ok(finish(
        tok,
        backend,
        vocab_size,
        &arch,
        parameters,
        train,
        context_length,
        "gguf",
        extensions,
    ))
}

fn load_llama2c(
    path: &Path,
    config: Llama2cConfig,
    tokenizer_path: Option<&Path>,
    requested: usize,
    vocab_only: bool,
) -> Result<Loaded, LoadFailure> {
    let vocab_size = config.vocab_size;
    let tok_path = match tokenizer_path {
        Some(p) => p.to_path_buf(),
        None => llama2c::find_tokenizer(path, vocab_size).ok_or_else(|| {
            ConvertError::invalid(
                path,
                format!(
                    "no llama2.c tokenizer for {vocab_size} tokens next to the checkpoint \
                     (tok{vocab_size}.bin or tokenizer.bin); give its tokenizer file (the load's tokenizer_path)"
                ),
            )
        })?,
    };
    let tok = tokenizer::from_file(&tok_path, vocab_size)?;
    let context = context_for(requested, config.seq_len, None)?;
    let extensions = vec![KeyValue::new(
        "tokenizer_file",
        tok_path.display().to_string(),
    )];
    let (backend, parameters): (Option<Box<dyn Backend>>, u64) = if vocab_only {
        (None, 0)
    } else {
        let checkpoint = Checkpoint::read(path)?;
        let parameters = checkpoint
            .tensors
            .iter()
            .filter(|(name, _)| !name.starts_with("rot."))
            .map(|(_, t)| t.elem_count() as u64)
            .sum();
        let model = Llama2c::new(checkpoint, context).map_err(|e| ConvertError::candle(path, e))?;
        (Some(Box::new(model)), parameters)
    };
    Ok(finish(
        tok,
        backend,
        vocab_size,
        "llama",
        parameters,
        config.seq_len,
        context,
        "llama2c",
        extensions,
    ))
}

fn load_folder(
    dir: &Path,
    tokenizer_path: Option<&Path>,
    requested: usize,
    vocab_only: bool,
) -> Result<Loaded, LoadFailure> {
    let folder = HfFolder::open(dir)?;
    let tok = runanywhere_convert::hf::load_tokenizer(dir, tokenizer_path)?;
    let context = context_for(requested, folder.max_positions, None)?;
    let (backend, parameters): (Option<Box<dyn Backend>>, u64) = if vocab_only {
        (None, 0)
    } else {
        let (model, parameters) = folder.load(context)?;
        (Some(Box::new(model)), parameters)
    };
    Ok(finish(
        tok,
        backend,
        folder.vocab_size,
        folder.arch.name(),
        parameters,
        folder.max_positions,
        context,
        "safetensors",
        Vec::new(),
    ))
}

/// Assembles the loaded model and its info.
#[allow(clippy::too_many_arguments)]
fn finish(
    tok: ConvertedTokenizer,
    backend: Option<Box<dyn Backend>>,
    vocab_size: usize,
    architecture: &str,
    parameters: u64,
    train_context: usize,
    context_length: usize,
    format: &'static str,
    extensions: Vec<KeyValue>,
) -> Loaded {
    let mut special = tok.special;
    if special.eog.is_empty() {
        special.eog.extend(special.eos);
    }
    let vocab = Vocab::new(tok.tokenizer, special.clone(), vocab_size);
    let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let info = ModelInfo {
        architecture: RString::from(architecture),
        parameter_count: parameters,
        context_length: to_u32(context_length),
        train_context_length: to_u32(train_context),
        vocab_size: to_u32(vocab_size),
        bos: special.bos.into(),
        eos: special.eos.into(),
        eog: RVec::from(special.eog),
        chat_template: tok.chat_template.map(RString::from).into(),
        extensions: RVec::from(extensions),
    };
    Loaded {
        vocab,
        backend,
        info,
        context_length,
        n_vocab: vocab_size,
        format,
    }
}
