//! The llama.cpp engine plugin of RunAnywhere: GGUF models through
//! [llama-cpp-2](https://crates.io/crates/llama-cpp-2), which vendors llama.cpp and links
//! it statically into this `cdylib`.
//!
//! # Design
//!
//! * **Backend.** llama.cpp's backend may be initialised only once per process, so it
//!   lives in a `OnceLock` and is never freed (abi_stable never unloads a plugin
//!   library). Before it is initialised, llama.cpp's logging (which otherwise goes to
//!   stderr) is routed to `tracing`; set `RUNANYWHERE_LLAMA_LOG` (any value) to keep
//!   llama.cpp's own stderr logging when debugging a model.
//!
//! * **Files are checked in Rust first.** llama.cpp may abort the process on some
//!   malformed files, so `runanywhere_formats::gguf` walks the GGUF header (every length and count
//!   bounds-checked, tensor data within the file) before llama.cpp sees the path. Models
//!   are then opened with mmap.
//!
//! * **One context per model, created at load time.** The KV cache is allocated when
//!   the model is loaded, so a context that does not fit fails the load (with
//!   `OutOfMemory`) instead of the first generation, and generations do not pay for the
//!   allocation. In llama-cpp-2 a `LlamaContext<'a>` borrows the `LlamaModel` it came
//!   from, which would make the model struct self-referential. The borrow is only a
//!   `PhantomData`: the context really holds a C pointer to the `llama_model` that the
//!   `LlamaModel` handle owns, which stays where it is however the handle moves. So the
//!   context's lifetime is erased to `'static` once (one `unsafe` block in
//!   [`LlamaCppModel::load`]) and stored next to the model in a private field; the
//!   struct's `Drop` frees the context before the model. The context is not thread-safe,
//!   so it sits behind a `Mutex`: generations on one model run one at a time, while
//!   tokenization (which only reads the vocabulary) never waits for them.
//!
//! * **Prompt cache.** The cache keeps what the last generation ran (sequence 0). A new
//!   prompt reuses its longest common prefix with those ids (`llama_memory_seq_rm` from
//!   there on) and prefills only the rest, as llama.cpp's server does with
//!   `cache_prompt`: a chat turn that continues the conversation's tokens prefills only
//!   the new message. Outputs are those of a cold run (tested).
//!
//! * **Generation.** Every call clears the KV cache, prefills the prompt in batches of
//!   `n_batch` tokens (logits only for the last prompt token), then samples and decodes
//!   one token at a time. [`GenerationTracker`] does all the bookkeeping shared with other
//!   engines: context overflow, end-of-generation ids, `max_tokens`, stop strings and
//!   UTF-8 buffering, timing and statistics.
//!
//! * **Sampling** uses llama.cpp's own sampler chain built from the request's
//!   [`SamplingParams`], in the order the plugin kit documents: repetition penalty →
//!   top-k → top-p → min-p → temperature → draw. Temperature ≤ 0 is llama.cpp's greedy
//!   sampler (after the penalty, if any), the exact argmax of the logits with the first
//!   maximum winning ties, so greedy output matches reference token ids.

use std::ffi::{c_char, CStr};
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

mod scheduler;

use abi_stable::std_types::{ROption, RString, RVec};
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::{BatchAddError, LlamaBatch};
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::{DecodeError, LlamaModelLoadError, LogOptions};
use runanywhere_formats::gguf::{self, GgufSummary};
use runanywhere_formats::FileError;
use runanywhere_plugin_api::decode::{self, prompt_ids, GenerationTracker};
use runanywhere_plugin_api::emit::Score;
use runanywhere_plugin_api::ext::Pooling;
use runanywhere_plugin_api::sdk::{Engine, Model};
use runanywhere_plugin_api::{
    Capabilities, EngineError, EngineInfo, ErrorKind, GenerateRequest, GenerationStats,
    InitRequest, KeyValue, LoadRequest, ModelInfo, Prompt, SamplingParams, StopReason,
};

const ENGINE_ID: &str = "llama-cpp";
/// The load request extension naming how many sequences to decode together.
const PARALLEL_KEY: &str = "parallel";
/// Most parallel sequences per model.
const MAX_PARALLEL: u32 = 64;
const ENGINE_NAME: &str = "llama.cpp";
/// The llama-cpp-2 version pinned in Cargo.toml.
const LLAMA_CPP_2_VERSION: &str = "0.1.160";
/// When set (to anything), llama.cpp keeps logging to stderr.
const LOG_ENV: &str = "RUNANYWHERE_LLAMA_LOG";
/// Prefill batch size when the request says 0.
const DEFAULT_BATCH: u32 = 512;
/// `n_gpu_layers` meaning "every layer".
const ALL_LAYERS: u32 = 999;
/// `LLAMA_DEFAULT_SEED`: llama.cpp draws a random seed when given this one.
const LLAMA_RANDOM_SEED: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------------------

static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process-wide llama.cpp backend, initialised on first use.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    BACKEND
        .get_or_init(|| {
            route_logs();
            install_abort_hook();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::internal(format!("cannot initialise the llama.cpp backend: {e}")))
}

/// Sends llama.cpp's and ggml's logs to `tracing` instead of stderr, unless
/// [`LOG_ENV`] is set; the kit forwards them to the host's log (one level lower than
/// llama.cpp gives them, so they appear from `-v`).
fn route_logs() {
    if std::env::var_os(LOG_ENV).is_none() {
        // llama.cpp's own lines (its warnings are mostly about internals) show from -v.
        runanywhere_plugin_api::log::demote_target("llama-cpp-2");
        llama_cpp_2::send_logs_to_tracing(LogOptions::default().with_logs_enabled(true));
    }
}

/// Replaces ggml's abort report. By default a failed `GGML_ASSERT` prints a backtrace
/// by forking `gdb` (about 6 s) before it aborts; this hook writes the one-line message
/// instead. The process still aborts: the structural checks of `runanywhere_formats`
/// exist so that model files never get this far, and out-of-process workers are the
/// second line of defence.
fn install_abort_hook() {
    // SAFETY: `on_ggml_abort` matches `ggml_abort_callback_t` and stays valid for the
    // life of the process; setting the callback has no other precondition.
    unsafe {
        llama_cpp_sys_2::ggml_set_abort_callback(Some(on_ggml_abort));
    }
}

/// ggml's abort callback: reports the message on stderr, then returns, and ggml aborts.
extern "C" fn on_ggml_abort(message: *const c_char) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: ggml passes null or a NUL-terminated message valid during the call.
        let text = unsafe { c_string(message) };
        tracing::error!("llama.cpp aborted: {text}");
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "llama.cpp aborted the process: {}", text.trim_end());
    });
}

/// Copies a C string.
///
/// # Safety
///
/// `ptr` must be null or point at a NUL-terminated string that stays valid during the
/// call.
unsafe fn c_string(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated, as the caller guarantees.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// ggml's version and commit, e.g. `0.26.0 (abc1234)`.
fn ggml_build() -> String {
    // SAFETY: both functions take no arguments, have no preconditions and return
    // pointers to string literals compiled into ggml.
    let (version, commit) = unsafe {
        (
            llama_cpp_sys_2::ggml_version(),
            llama_cpp_sys_2::ggml_commit(),
        )
    };
    // SAFETY: each pointer is null or a NUL-terminated literal alive for the whole process.
    let (version, commit) = unsafe { (c_string(version), c_string(commit)) };
    match (version.is_empty(), commit.is_empty() || commit == "unknown") {
        (true, _) => "unknown".to_string(),
        (false, true) => version,
        (false, false) => format!("{version} ({commit})"),
    }
}

/// llama.cpp's system info line (CPU features, backends), computed once.
fn system_info() -> &'static str {
    static INFO: OnceLock<String> = OnceLock::new();
    INFO.get_or_init(|| {
        // SAFETY: takes no arguments (the backend is initialised before any engine exists)
        // and returns a pointer into a static buffer that it rebuilds on every call; the
        // `OnceLock` makes this the only call in the plugin, so nothing rebuilds it while
        // it is copied below.
        let ptr = unsafe { llama_cpp_sys_2::llama_print_system_info() };
        // SAFETY: null or a NUL-terminated string in that static buffer.
        unsafe { c_string(ptr) }.trim().to_string()
    })
}

// ---------------------------------------------------------------------------------------
// Engine
// ---------------------------------------------------------------------------------------

/// The llama.cpp engine: loads GGUF models.
pub struct LlamaEngine {
    backend: &'static LlamaBackend,
}

impl Engine for LlamaEngine {
    type Model = LlamaCppModel;

    fn init(_request: &InitRequest) -> Result<Self, EngineError> {
        let backend = backend()?;
        Ok(LlamaEngine { backend })
    }

    fn info(&self) -> EngineInfo {
        // What its models can do (each model also reports its own): listed by `engines`.
        let mut capabilities = Capabilities::STREAMING
            | Capabilities::TOKENIZE
            | Capabilities::CHAT_TEMPLATE
            | Capabilities::EMBEDDINGS
            | Capabilities::LOGPROBS
            | Capabilities::PARALLEL_SEQUENCES;
        if self.backend.supports_gpu_offload() {
            capabilities = capabilities | Capabilities::GPU_OFFLOAD;
        }
        EngineInfo {
            id: RString::from(ENGINE_ID),
            name: RString::from(ENGINE_NAME),
            version: RString::from(format!(
                "{} (llama-cpp-2 {LLAMA_CPP_2_VERSION}, ggml {})",
                env!("CARGO_PKG_VERSION"),
                ggml_build()
            )),
            formats: RVec::from(vec![RString::from("gguf")]),
            capabilities,
            extensions: RVec::from(vec![
                KeyValue::new("llama_cpp.system_info", system_info()),
                KeyValue::new(
                    "llama_cpp.gpu_offload",
                    self.backend.supports_gpu_offload().to_string(),
                ),
                KeyValue::new("llama_cpp.mmap", self.backend.supports_mmap().to_string()),
            ]),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<LlamaCppModel, EngineError> {
        LlamaCppModel::load(self.backend, request)
    }
}

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

/// A GGUF model loaded by llama.cpp, with its inference context.
pub struct LlamaCppModel {
    /// The inference context; `None` for a vocab-only load. It points into `model` and is
    /// freed before it (see the module docs and `Drop`).
    context: Option<Mutex<LlamaContext<'static>>>,
    /// With `parallel` > 1 the context belongs to the scheduler thread instead (see
    /// [`scheduler`]); stopped before `model` is freed.
    scheduler: Option<scheduler::Scheduler>,
    model: LlamaModel,
    info: ModelInfo,
    /// Vocabulary size; ids below it are valid (and fit an `i32`).
    n_vocab: u32,
    /// Every end-of-generation id.
    eog: Vec<u32>,
    /// The context length in effect (what the caller asked for; llama.cpp may round its
    /// own allocation up).
    context_length: u32,
    /// The ids whose keys and values the context's cache holds (positions 0..len of
    /// sequence 0), left by the last generation: the next one reuses their longest
    /// common prefix with its prompt and prefills only the rest, as llama.cpp's server
    /// does with `cache_prompt`. Locked only while holding `context`.
    cached: Mutex<Vec<u32>>,
    /// Worker threads of the contexts.
    threads: i32,
}

impl Drop for LlamaCppModel {
    fn drop(&mut self) {
        // The context must go before the model it was created from. (Fields are dropped
        // in declaration order anyway; this keeps it true whatever the order.)
        drop(self.context.take());
        if let Some(mut s) = self.scheduler.take() {
            s.stop();
        }
    }
}

impl LlamaCppModel {
    /// Checks the file, loads it with llama.cpp and creates the context.
    fn load(backend: &'static LlamaBackend, request: &LoadRequest) -> Result<Self, EngineError> {
        let path_str = request.model_path.as_str();
        if path_str.is_empty() {
            return Err(EngineError::invalid_request("no model path given"));
        }
        let path = Path::new(path_str);
        let summary = check_gguf(path)?;
        // llama.cpp asserts on a vocabulary of type "none" (every token-attribute lookup,
        // done here at load for the end-of-generation ids).
        let tokenizer = summary.facts.details.get("gguf.tokenizer_model");
        if let Some(kind) = tokenizer.filter(|k| matches!(k.as_str(), "none" | "no_vocab")) {
            return Err(EngineError::invalid_model(format!(
                "{path_str}: the model has no vocabulary (tokenizer.ggml.model = {kind:?}); \
                 the llama.cpp engine needs one to tokenize and generate"
            )));
        }
        if let ROption::RSome(tokenizer) = &request.tokenizer_path {
            tracing::warn!(
                tokenizer = tokenizer.as_str(),
                "llama.cpp reads the tokenizer from the GGUF file; the separate tokenizer is ignored"
            );
        }
        // `request.seed` needs no handling: llama.cpp does nothing random at load time,
        // and every generation carries its own sampling seed.

        let gpu_layers = u32::try_from(request.gpu_layers).unwrap_or(ALL_LAYERS);
        let model_params = LlamaModelParams::default()
            .with_n_gpu_layers(gpu_layers)
            .with_use_mmap(true)
            .with_vocab_only(request.vocab_only);
        let model = LlamaModel::load_from_file(backend, path, &model_params)
            .map_err(|e| load_error(path_str, e))?;

        let n_vocab = u32::try_from(model.n_vocab())
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| {
                EngineError::invalid_model(format!("{path_str}: the model has no vocabulary"))
            })?;
        let n_ctx_train = model.n_ctx_train();
        // llama.cpp runs any context (past the trained length, quality may degrade).
        let context_length = decode::context_length(request.context_length, n_ctx_train, None)?;
        if i32::try_from(context_length).is_err() {
            return Err(EngineError::invalid_request(format!(
                "context length {context_length} is too large"
            )));
        }
        let threads = match request.threads {
            0 => default_threads(),
            n => i32::try_from(n).unwrap_or(i32::MAX),
        };
        let batch = match request.batch_size {
            0 => DEFAULT_BATCH,
            n => n,
        };
        // Sequences decoded together (load option `parallel`, default 1).
        let parallel = match runanywhere_plugin_api::abi::lookup(request.extensions.as_slice(), PARALLEL_KEY) {
            None => 1,
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n @ 1..=MAX_PARALLEL) => n,
                _ => {
                    return Err(EngineError::invalid_request(format!(
                        "load option {PARALLEL_KEY} = `{v}`: a number of sequences from 1 to {MAX_PARALLEL}"
                    )))
                }
            },
        };

        let (eog, bos, eos) = {
            let vocab = model.vocab();
            // Ids below `n_vocab` (an i32) fit an i32.
            let eog: Vec<u32> = (0..n_vocab)
                .filter(|&id| vocab.is_eog(LlamaToken::new(id as i32)))
                .collect();
            let valid = |t: LlamaToken| u32::try_from(t.0).ok().filter(|&id| id < n_vocab);
            (eog, valid(vocab.bos()), valid(vocab.eos()))
        };
        let chat_template = model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok());
        let meta = |key: &str| model.meta_val_str(key).ok();

        let mut extensions = Vec::new();
        if let Some(name) = meta("general.name") {
            extensions.push(KeyValue::new("general.name", name));
        }
        if let Some(file_type) = meta("general.file_type") {
            if let Some(q) = file_type.trim().parse().ok().and_then(gguf::file_type_name) {
                extensions.push(KeyValue::new("quantization", q));
            }
            extensions.push(KeyValue::new("general.file_type", file_type));
        }
        extensions.extend([
            KeyValue::new("gguf.version", summary.version.to_string()),
            KeyValue::new("gguf.tensor_count", summary.tensor_count.to_string()),
            KeyValue::new("gguf.kv_count", summary.kv_count.to_string()),
            KeyValue::new("file_size", summary.file_size.to_string()),
            KeyValue::new("model_size", model.size().to_string()),
            KeyValue::new("n_layer", model.n_layer().to_string()),
            KeyValue::new("vocab_only", request.vocab_only.to_string()),
        ]);

        let architecture = meta("general.architecture").unwrap_or_default();
        let context = if request.vocab_only {
            None
        } else {
            extensions.extend([
                KeyValue::new("threads", threads.to_string()),
                KeyValue::new("batch_size", batch.to_string()),
                KeyValue::new("gpu_layers", gpu_layers.to_string()),
            ]);
            // Parallel sequences each get the whole context length (llama.cpp splits
            // n_ctx evenly between sequences).
            let params = LlamaContextParams::default()
                .with_n_ctx(NonZeroU32::new(context_length.saturating_mul(parallel)))
                .with_n_seq_max(parallel)
                // A step holds at least one token per sequence.
                .with_n_batch(batch.max(parallel))
                .with_n_ubatch(batch.max(parallel))
                .with_n_threads(threads)
                .with_n_threads_batch(threads);
            let context = model
                .new_context(backend, params)
                .map_err(|_| context_error(path_str, &model, context_length, batch))?;
            // SAFETY: only the lifetime changes (same type, same layout). The context
            // holds no Rust reference to `model` (just a `PhantomData`) but a C pointer to
            // the `llama_model` that `model` owns; that C object does not move when the
            // `LlamaModel` handle is moved into the struct below, and it is freed only
            // when `model` is dropped, which `Drop for LlamaCppModel` (and the field
            // order) puts after the context is freed. The `'static` context never leaves
            // the private `context` field, and it is only used through the `&self` of the
            // struct that also owns the model.
            let context =
                unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(context) };
            Some(context)
        };
        let (context, scheduler) = match context {
            Some(ctx) if parallel > 1 => (
                None,
                Some(scheduler::Scheduler::start(
                    ctx,
                    parallel as usize,
                    n_vocab,
                )?),
            ),
            other => (other.map(Mutex::new), None),
        };
        if parallel > 1 {
            extensions.push(KeyValue::new("parallel", parallel.to_string()));
            let mut caps =
                Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::PARALLEL_SEQUENCES;
            if chat_template.is_some() {
                caps = caps | Capabilities::CHAT_TEMPLATE;
            }
            extensions.push(KeyValue::new(
                runanywhere_plugin_api::abi::MODEL_CAPABILITIES_KEY,
                caps.names().join(","),
            ));
        }

        let info = ModelInfo {
            architecture: RString::from(architecture),
            parameter_count: model.n_params(),
            context_length,
            train_context_length: n_ctx_train,
            vocab_size: n_vocab,
            bos: ROption::from(bos),
            eos: ROption::from(eos),
            eog: RVec::from(eog.clone()),
            chat_template: ROption::from(chat_template.map(RString::from)),
            extensions: RVec::from(extensions),
        };
        tracing::debug!(
            path = path_str,
            context_length,
            n_vocab,
            vocab_only = request.vocab_only,
            "loaded GGUF model"
        );
        Ok(LlamaCppModel {
            context,
            scheduler,
            model,
            info,
            n_vocab,
            eog,
            context_length,
            cached: Mutex::new(Vec::new()),
            threads,
        })
    }

    /// `id` as a llama.cpp token, or `InvalidRequest` if it is not in the vocabulary.
    fn token(&self, id: u32) -> Result<LlamaToken, EngineError> {
        if id < self.n_vocab {
            // `n_vocab` came from an i32, so `id` fits one.
            Ok(LlamaToken::new(id as i32))
        } else {
            Err(EngineError::token_out_of_range(id, self.n_vocab))
        }
    }
}

impl Model for LlamaCppModel {
    fn logprobs(&self) -> bool {
        true
    }

    fn embeddings(&self) -> bool {
        self.context.is_some() || self.scheduler.is_some()
    }

    /// Each input's last hidden states (llama.cpp's embeddings mode without pooling, in
    /// a context of its own, so generation's prompt cache is untouched), pooled by the
    /// kit.
    fn embed(&self, inputs: &[Prompt], pooling: Pooling) -> Result<Vec<Vec<f32>>, EngineError> {
        if !self.embeddings() {
            return Err(EngineError::vocab_only());
        }
        let inputs: Vec<Vec<u32>> = inputs
            .iter()
            .map(|p| match p {
                Prompt::Text(t) => self.tokenize(t.as_str(), true, false),
                Prompt::Ids(ids) => {
                    for &id in ids.iter() {
                        self.token(id)?;
                    }
                    Ok(ids.to_vec())
                }
            })
            .collect::<Result<_, _>>()?;
        let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
        if inputs.iter().any(Vec::is_empty) {
            return Err(EngineError::invalid_request(
                "an input to embed has no tokens",
            ));
        }
        if longest > self.context_length as usize {
            return Err(EngineError::context_overflow(
                longest,
                self.context_length as usize,
            ));
        }
        let n = u32::try_from(longest).unwrap_or(u32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n))
            .with_n_batch(n)
            .with_n_ubatch(n)
            .with_n_threads(self.threads)
            .with_n_threads_batch(self.threads)
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::None);
        let mut ctx = self.model.new_context(backend()?, params).map_err(|e| {
            EngineError::new(
                ErrorKind::OutOfMemory,
                format!("cannot create an embeddings context of {n} tokens: {e}"),
            )
        })?;
        let mut out = Vec::with_capacity(inputs.len());
        let mut batch = LlamaBatch::new(longest, 1);
        for ids in &inputs {
            ctx.clear_kv_cache();
            batch.clear();
            for (pos, &id) in ids.iter().enumerate() {
                batch
                    .add(LlamaToken::new(id as i32), position(pos)?, &[0], true)
                    .map_err(batch_error)?;
            }
            ctx.decode(&mut batch).map_err(decode_error)?;
            let states = (0..ids.len())
                .map(|i| {
                    ctx.embeddings_ith(position(i)?)
                        .map(<[f32]>::to_vec)
                        .map_err(|e| {
                            EngineError::internal(format!("llama.cpp gave no embedding: {e}"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(runanywhere_plugin_api::ext::pool(&states, pooling)?);
        }
        Ok(out)
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        // llama.cpp takes the length as an i32 and may need a few more tokens than bytes.
        if text.len() > (i32::MAX as usize) / 2 {
            return Err(EngineError::invalid_request(format!(
                "text of {} bytes is too long to tokenize",
                text.len()
            )));
        }
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
            .into_iter()
            .map(|t| {
                u32::try_from(t.0).map_err(|_| {
                    EngineError::internal(format!("llama.cpp returned token id {}", t.0))
                })
            })
            .collect()
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let tokens = ids
            .iter()
            .map(|&id| self.token(id))
            .collect::<Result<Vec<_>, _>>()?;
        let vocab = self.model.vocab();
        let mut bytes = Vec::new();
        for token in tokens {
            vocab.token_to_piece_into(token, &mut bytes, false, None);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        let token = self.token(id)?;
        Ok(self.model.vocab().token_to_piece(token, true, None))
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        let prompt_ids = prompt_ids(request, self.n_vocab, |text, add, parse| {
            self.tokenize(text, add, parse)
        })?;
        if let Some(scheduler) = &self.scheduler {
            return self.generate_scheduled(scheduler, request, prompt_ids, sink);
        }
        let context = self.context.as_ref().ok_or_else(EngineError::vocab_only)?;

        // One generation at a time per context. A panic in an earlier generation (caught
        // by the plugin kit) only poisons the lock: the cache it left is then not trusted.
        let (mut guard, poisoned) = match context.lock() {
            Ok(guard) => (guard, false),
            Err(poisoned) => (poisoned.into_inner(), true),
        };
        context.clear_poison();
        let ctx: &mut LlamaContext<'static> = &mut guard;
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken for the generation and put back only when it ends normally: after an
        // error the cache's content is unknown, and the next generation starts afresh.
        let mut history = std::mem::take(&mut *cached);
        if poisoned {
            history.clear();
        }

        let mut decoding = GenerationTracker::start(
            request,
            prompt_ids,
            self.context_length as usize,
            self.eog.clone(),
            sink,
        )?;

        // Reuse the cached prefix the prompt shares, keeping at least the prompt's last
        // token to run (its logits give the first sample).
        let prompt_len = decoding.prompt_ids().len();
        let mut reuse = common_prefix(&history, decoding.prompt_ids()).min(prompt_len - 1);
        if reuse == 0
            || !matches!(
                ctx.clear_kv_cache_seq(Some(0), Some(position(reuse)? as u32), None),
                Ok(true)
            )
        {
            clear_memory(ctx);
            reuse = 0;
        }
        history.truncate(reuse);
        if reuse > 0 {
            tracing::debug!(
                reused = reuse,
                prefill = prompt_len - reuse,
                "reusing cached prompt tokens"
            );
        }

        // Valid ids (checked above, or produced by the tokenizer) fit an i32.
        let prompt: Vec<LlamaToken> = decoding
            .prompt_ids()
            .iter()
            .map(|&id| LlamaToken::new(id as i32))
            .collect();
        let (mut sampler, penalized) = build_sampler(&request.sampling, self.n_vocab);
        if penalized {
            // The penalty looks at the prompt too, as in the plugin kit's sampler.
            sampler.accept_many(prompt.iter());
        }

        // Prefill: the uncached rest of the prompt in batches of n_batch, logits for its
        // last token only.
        let n_batch = (ctx.n_batch() as usize).max(1);
        let mut batch = LlamaBatch::new(n_batch, 1);
        let mut logits_index = 0i32;
        for (chunk_no, chunk) in prompt[reuse..].chunks(n_batch).enumerate() {
            // A cancel during a long prefill takes effect within one batch.
            if decoding.cancelled() {
                *cached = history;
                return Ok(decoding.finish(StopReason::Cancelled));
            }
            batch.clear();
            let first = reuse + chunk_no * n_batch;
            for (i, &token) in chunk.iter().enumerate() {
                let pos = first + i;
                let is_last = pos + 1 == prompt.len();
                batch
                    .add(token, position(pos)?, &[0], is_last)
                    .map_err(batch_error)?;
            }
            ctx.decode(&mut batch).map_err(decode_error)?;
            history.extend_from_slice(&decoding.prompt_ids()[first..first + chunk.len()]);
            // Only the last chunk's value matters: its last token has the logits.
            logits_index = i32::try_from(chunk.len() - 1).unwrap_or(0);
        }
        decoding.prefill_done();

        // Decode: sample, hand the token over, run the model on it.
        let vocab = self.model.vocab();
        let mut pos = prompt.len();
        let top = decoding.top_logprobs();
        let reason = loop {
            let token = sampler.sample(ctx, logits_index);
            let id = u32::try_from(token.0).map_err(|_| {
                EngineError::internal(format!("llama.cpp sampled token id {}", token.0))
            })?;
            let piece = vocab.token_to_piece(token, false, None);
            // The sampler reads the context's logits without changing them: they are the
            // model's distribution, scored by the kit like every engine's.
            let score = top.map(|k| {
                let (logprob, top) =
                    runanywhere_plugin_api::ext::logprobs(ctx.get_logits_ith(logits_index), id, k);
                Score { logprob, top }
            });
            if let Some(reason) = decoding.accept_scored(id, &piece, score) {
                break reason;
            }
            batch.clear();
            batch
                .add(token, position(pos)?, &[0], true)
                .map_err(batch_error)?;
            ctx.decode(&mut batch).map_err(decode_error)?;
            history.push(id);
            logits_index = 0;
            pos += 1;
        };
        *cached = history;
        Ok(decoding.finish(reason))
    }
}

impl LlamaCppModel {
    /// A generation through the scheduler: it decodes, this thread keeps the sink.
    fn generate_scheduled(
        &self,
        scheduler: &scheduler::Scheduler,
        request: &GenerateRequest,
        prompt_ids: Vec<u32>,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        use scheduler::{Event, Verdict};
        let mut decoding = GenerationTracker::start(
            request,
            prompt_ids,
            self.context_length as usize,
            self.eog.clone(),
            sink,
        )?;
        let (events_tx, events) = std::sync::mpsc::sync_channel(1);
        let (verdicts, verdicts_rx) = std::sync::mpsc::channel();
        let cancelled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        scheduler.submit(scheduler::Job {
            prompt: decoding.prompt_ids().to_vec(),
            sampling: request.sampling,
            top: decoding.top_logprobs(),
            events: events_tx,
            verdicts: verdicts_rx,
            cancelled: std::sync::Arc::clone(&cancelled),
        })?;
        let vocab = self.model.vocab();
        let reason = loop {
            let event = scheduler::next_event(&events, &cancelled, &|| decoding.cancelled())?;
            match event {
                None => break StopReason::Cancelled,
                Some(Event::Failed(e)) => return Err(e),
                Some(Event::Token(id, score)) => {
                    let piece = vocab.token_to_piece(LlamaToken::new(id as i32), false, None);
                    match decoding.accept_scored(id, &piece, score) {
                        Some(reason) => {
                            let _ = verdicts.send(Verdict::Stop);
                            break reason;
                        }
                        None => {
                            if verdicts.send(Verdict::Continue).is_err() {
                                return Err(EngineError::internal(
                                    "the llama.cpp scheduler stopped during the generation",
                                ));
                            }
                        }
                    }
                }
            }
        };
        Ok(decoding.finish(reason))
    }
}

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The default thread count: half the logical CPUs (about the physical cores, which is
/// llama.cpp's own default), at least one.
///
/// ggml's worker threads busy-wait between graph nodes. With as many workers as logical
/// CPUs, any other busy process (a compiler, a second model) makes them wait on each
/// other: measured on a 2-CPU machine during a build, stories260K decoded at 27 tok/s
/// with 2 threads and 2,400 tok/s with 1. `--threads` still sets any number.
fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| i32::try_from((n.get() / 2).max(1)).unwrap_or(i32::MAX))
        .unwrap_or(1)
}

/// Empties the KV cache so a generation starts from position 0.
fn clear_memory(ctx: &mut LlamaContext<'_>) {
    // Removing every position of every sequence resets the cache's bookkeeping without
    // zeroing its buffers. It cannot fail for whole sequences; if it ever reports
    // otherwise, fall back to a full clear.
    if !matches!(ctx.clear_kv_cache_seq(None, None, None), Ok(true)) {
        ctx.clear_kv_cache();
    }
}

/// The sampler chain for `p`, and whether it applies a repetition penalty (which then
/// needs the prompt tokens accepted into it).
///
/// `LlamaSampler::sample` accepts the token it returns into every stage itself, so the
/// penalty sees generated tokens without further calls.
fn build_sampler(p: &SamplingParams, n_vocab: u32) -> (LlamaSampler, bool) {
    let n_vocab = i32::try_from(n_vocab).unwrap_or(i32::MAX);
    let penalized = p.repeat_penalty != 1.0 && p.repeat_penalty > 0.0 && p.repeat_window > 0;
    let mut stages = Vec::new();
    if penalized {
        stages.push(LlamaSampler::penalties(
            n_vocab,
            i32::try_from(p.repeat_window).unwrap_or(i32::MAX),
            p.repeat_penalty,
            0.0,
            0.0,
        ));
    }
    if p.temperature <= 0.0 {
        stages.push(LlamaSampler::greedy());
    } else {
        if p.top_k > 0 {
            stages.push(LlamaSampler::top_k(
                i32::try_from(p.top_k).unwrap_or(i32::MAX),
            ));
        }
        if p.top_p < 1.0 {
            stages.push(LlamaSampler::top_p(p.top_p, 1));
        }
        if p.min_p > 0.0 {
            stages.push(LlamaSampler::min_p(p.min_p, 1));
        }
        stages.push(LlamaSampler::temp(p.temperature));
        stages.push(LlamaSampler::dist(sampler_seed(p.seed)));
    }
    (LlamaSampler::chain(stages, true), penalized)
}

/// The request's 64-bit seed as llama.cpp's 32-bit one: seeds below 2^32 are kept as they
/// are, and the one value llama.cpp reads as "pick a random seed" is avoided.
fn sampler_seed(seed: u64) -> u32 {
    let folded = (seed ^ (seed >> 32)) as u32;
    if folded == LLAMA_RANDOM_SEED {
        folded - 1
    } else {
        folded
    }
}

/// A token position as llama.cpp's `llama_pos`.
fn position(pos: usize) -> Result<i32, EngineError> {
    i32::try_from(pos).map_err(|_| EngineError::internal(format!("position {pos} overflows")))
}

fn batch_error(e: BatchAddError) -> EngineError {
    EngineError::internal(format!("cannot fill the llama.cpp batch: {e}"))
}

fn decode_error(e: DecodeError) -> EngineError {
    match e {
        DecodeError::NoKvCacheSlot => EngineError::new(
            ErrorKind::OutOfMemory,
            "llama.cpp found no free KV-cache slot for the batch",
        ),
        other => EngineError::internal(format!("llama.cpp failed to decode: {other}")),
    }
}

fn load_error(path: &str, e: LlamaModelLoadError) -> EngineError {
    match e {
        LlamaModelLoadError::NullResult => EngineError::invalid_model(format!(
            "llama.cpp could not load {path}: its GGUF header is well-formed, but llama.cpp \
             refused the model (unsupported architecture, missing tensors or metadata, or \
             not enough memory); set {LOG_ENV}=1 to see llama.cpp's reason"
        )),
        other => EngineError::invalid_model(format!("cannot load {path}: {other}")),
    }
}

/// The error for a context llama.cpp could not create: with the parameters validated
/// beforehand, that is a KV cache or compute buffer that could not be allocated.
fn context_error(path: &str, model: &LlamaModel, n_ctx: u32, batch: u32) -> EngineError {
    let kv = kv_cache_bytes(model, n_ctx)
        .map(|bytes| {
            format!(
                "; its f16 KV cache alone needs about {} MiB",
                bytes.div_ceil(1 << 20)
            )
        })
        .unwrap_or_default();
    EngineError::new(
        ErrorKind::OutOfMemory,
        format!(
            "llama.cpp could not create a context of {n_ctx} tokens (batch {batch}) for \
             {path}{kv}; lower the context size"
        ),
    )
}

/// Estimated size of an f16 KV cache of `n_ctx` tokens.
fn kv_cache_bytes(model: &LlamaModel, n_ctx: u32) -> Option<u64> {
    let n_head = u64::from(model.n_head());
    if n_head == 0 {
        return None;
    }
    let n_embd = u64::try_from(model.n_embd()).ok()?;
    let per_token_per_layer = (n_embd / n_head) * u64::from(model.n_head_kv()) * 2 * 2;
    per_token_per_layer
        .checked_mul(u64::from(model.n_layer()))?
        .checked_mul(u64::from(n_ctx))
}

/// The structural check of the shared formats crate, as an `InvalidModel` error that
/// names the file and the problem.
fn check_gguf(path: &Path) -> Result<GgufSummary, EngineError> {
    // A readable file of another format is not this engine's: `UnsupportedFormat`, as
    // every engine answers, not `InvalidModel`.
    let mut magic = [0u8; 4];
    if let Ok(mut file) = runanywhere_formats::fs::open_regular(path) {
        let read = std::io::Read::read(&mut file, &mut magic).unwrap_or(0);
        if read == 4 && &magic != b"GGUF" {
            return Err(EngineError::unsupported_format(format!(
                "{} is not a GGUF file; the llama.cpp engine reads GGUF models",
                path.display()
            )));
        }
    }
    gguf::check_file(path).map_err(|e| match e {
        FileError::Directory { path, .. } => EngineError::invalid_model(format!(
            "{} is a directory; the llama.cpp engine loads a single .gguf file",
            path.display()
        )),
        other => EngineError::invalid_model(other.to_string()),
    })
}

runanywhere_plugin_api::export_plugin!(LlamaEngine);

#[cfg(test)]
mod tests {
    use super::*;
    use runanywhere_formats::gguf::testing::{gguf, tiny, Value};

    fn engine() -> LlamaEngine {
        let request = InitRequest {
            engine_id: RString::from(ENGINE_ID),
            manifest_dir: RString::from("."),
            options: RVec::new(),
            host_api_version: runanywhere_plugin_api::PLUGIN_API_VERSION,
        };
        match LlamaEngine::init(&request) {
            Ok(engine) => engine,
            Err(e) => panic!("init: {e}"),
        }
    }

    fn load_err(engine: &LlamaEngine, path: &Path, vocab_only: bool) -> EngineError {
        let request = LoadRequest {
            model_path: RString::from(path.display().to_string()),
            vocab_only,
            ..LoadRequest::default()
        };
        engine
            .load_model(&request)
            .err()
            .expect("the load must fail")
    }

    #[test]
    fn engine_info_and_repeated_init() {
        let info = engine().info();
        assert_eq!(info.id.as_str(), "llama-cpp");
        assert_eq!(info.name.as_str(), "llama.cpp");
        assert_eq!(info.formats.as_slice(), &[RString::from("gguf")]);
        assert!(info.capabilities.contains(
            Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::CHAT_TEMPLATE
        ));
        assert!(info.version.as_str().starts_with(env!("CARGO_PKG_VERSION")));
        // The backend is shared: a second engine initialises fine.
        let _second = engine();
    }

    #[test]
    fn bad_files_never_reach_llama_cpp() {
        let engine = engine();
        let dir = std::env::temp_dir();
        let err = load_err(&engine, &dir, false);
        assert_eq!(err.kind(), ErrorKind::InvalidModel);
        assert!(err.message().contains(&dir.display().to_string()));

        let path = dir.join(format!(
            "runanywhere-llama-test-{}.gguf",
            std::process::id()
        ));
        let mut truncated = tiny();
        truncated.truncate(truncated.len() - 1);
        let cases: [(&str, Vec<u8>); 3] = [
            ("empty", Vec::new()),
            ("garbage", b"definitely not a model".to_vec()),
            ("truncated", truncated),
        ];
        let mut results = Vec::new();
        for (name, bytes) in cases {
            std::fs::write(&path, bytes).expect("write");
            results.push((name, load_err(&engine, &path, false)));
        }
        // A well-formed header without the hyperparameters llama.cpp needs: llama.cpp
        // itself refuses it, cleanly.
        let header_only = gguf(3, &[("general.architecture", Value::Str("llama"))], &[], 0);
        std::fs::write(&path, header_only).expect("write");
        results.push(("header only", load_err(&engine, &path, true)));
        let _ = std::fs::remove_file(&path);
        for (name, err) in results {
            let expected = match name {
                "garbage" => ErrorKind::UnsupportedFormat,
                _ => ErrorKind::InvalidModel,
            };
            assert_eq!(err.kind(), expected, "{name}: {err}");
            assert!(
                err.message().contains(&path.display().to_string()),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn seeds_keep_small_values_and_avoid_the_random_seed() {
        assert_eq!(sampler_seed(0), 0);
        assert_eq!(sampler_seed(42), 42);
        assert_ne!(sampler_seed(u64::from(u32::MAX)), LLAMA_RANDOM_SEED);
        assert_ne!(sampler_seed(1 << 32), sampler_seed(0));
    }
}
