//! Every type that crosses the plugin boundary.
//!
//! All of these are `#[repr(C)]` + [`StableAbi`]; abi_stable checks their layout when a
//! plugin is loaded. See the crate docs for how the ABI grows.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::{RMut, VersionStrings},
    std_types::{RBox, ROption, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::error::EngineError;

/// The plugin-API version this crate implements. See [`crate::version`] for its history.
pub const PLUGIN_API_VERSION: u32 = 1;

/// The oldest plugin-API version a host built with this crate loads. A host accepts
/// `MIN_SUPPORTED_API_VERSION..=PLUGIN_API_VERSION`, so a new version does not orphan
/// the plugins of the older ones it still supports; it tells each plugin its own version
/// in [`InitRequest::host_api_version`].
pub const MIN_SUPPORTED_API_VERSION: u32 = 1;

/// Whether a host built with this crate loads a plugin built for `version`.
pub fn supports_api_version(version: u32) -> bool {
    (MIN_SUPPORTED_API_VERSION..=PLUGIN_API_VERSION).contains(&version)
}

/// Name of the `u32` static every plugin exports with its plugin-API version, so the
/// host can refuse a plugin of another version before any layout check or call.
pub const API_VERSION_SYMBOL: &[u8] = b"RUNANYWHERE_PLUGIN_API_VERSION\0";

/// A key/value pair: manifest options, and the `extensions` of requests and infos.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: RString,
    /// The value.
    pub value: RString,
}

impl KeyValue {
    /// A new pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: RString::from(key.into()),
            value: RString::from(value.into()),
        }
    }
}

/// Looks `key` up in a key/value list.
pub fn lookup<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str())
}

/// What the host tells a plugin when it initialises an engine from a manifest.
///
/// One library may back several manifests (each gets its own engine object).
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct InitRequest {
    /// The engine id from the manifest.
    pub engine_id: RString,
    /// The directory holding the manifest (for finding side files).
    pub manifest_dir: RString,
    /// The manifest's `[options]` table, values as strings.
    pub options: RVec<KeyValue>,
    /// The host's plugin-API version.
    pub host_api_version: u32,
}

/// Optional features of an engine, as bits. New bits may be added without a version bump.
#[repr(transparent)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// Streams tokens through the sink as they are generated.
    pub const STREAMING: Capabilities = Capabilities(1 << 0);
    /// Tokenize and detokenize.
    pub const TOKENIZE: Capabilities = Capabilities(1 << 1);
    /// Reports the model's chat template.
    pub const CHAT_TEMPLATE: Capabilities = Capabilities(1 << 2);
    /// Offloads layers to a GPU (honours `gpu_layers`).
    pub const GPU_OFFLOAD: Capabilities = Capabilities(1 << 3);
    /// Computes embeddings.
    pub const EMBEDDINGS: Capabilities = Capabilities(1 << 4);
    /// Keeps a conversation's KV cache between generations.
    pub const SESSIONS: Capabilities = Capabilities(1 << 5);
    /// Decodes several sequences in one batch.
    pub const PARALLEL_SEQUENCES: Capabilities = Capabilities(1 << 6);
    /// Reports token log-probabilities.
    pub const LOGPROBS: Capabilities = Capabilities(1 << 7);

    /// Every known capability with its display name.
    pub const NAMED: [(Capabilities, &'static str); 8] = [
        (Self::STREAMING, "streaming"),
        (Self::TOKENIZE, "tokenize"),
        (Self::CHAT_TEMPLATE, "chat_template"),
        (Self::GPU_OFFLOAD, "gpu_offload"),
        (Self::EMBEDDINGS, "embeddings"),
        (Self::SESSIONS, "sessions"),
        (Self::PARALLEL_SEQUENCES, "parallel_sequences"),
        (Self::LOGPROBS, "logprobs"),
    ];

    /// The capabilities named in a comma-separated list (unknown names are skipped: a
    /// newer plugin may know more).
    pub fn from_names(list: &str) -> Capabilities {
        list.split(',')
            .map(str::trim)
            .filter_map(|n| Self::NAMED.iter().find(|(_, name)| *name == n))
            .fold(Capabilities::default(), |all, (c, _)| all | *c)
    }

    /// Whether all bits of `other` are set.
    pub fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the known capabilities that are set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED
            .iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        Capabilities(self.0 | rhs.0)
    }
}

/// The [`ModelInfo::extensions`] key holding what a loaded model can do, as a
/// comma-separated list of [`Capabilities`] names. Capabilities are a property of the
/// model (a chat template, embeddings) more than of the engine; this key carries them
/// without changing `ModelInfo`'s layout, so older hosts and plugins are unaffected.
pub const MODEL_CAPABILITIES_KEY: &str = "runanywhere.capabilities";

/// What an engine says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct EngineInfo {
    /// Stable identifier, e.g. `llama-cpp`.
    pub id: RString,
    /// Display name, e.g. `llama.cpp`.
    pub name: RString,
    /// Version of the engine (and of the framework it wraps).
    pub version: RString,
    /// Model formats it reads: `gguf`, `safetensors`, `onnx`, `llama2c`, `mock`, ...
    pub formats: RVec<RString>,
    /// Optional features.
    pub capabilities: Capabilities,
    /// Free-form extra facts (framework build flags, devices, ...).
    pub extensions: RVec<KeyValue>,
}

/// How to load a model.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default)]
pub struct LoadRequest {
    /// Path of the model file or folder.
    pub model_path: RString,
    /// Optional separate tokenizer file.
    pub tokenizer_path: ROption<RString>,
    /// Context length in tokens; 0 = the model's own.
    pub context_length: u32,
    /// Worker threads; 0 = the engine's default (usually the machine's cores).
    pub threads: u32,
    /// Prefill batch size in tokens; 0 = the engine's default.
    pub batch_size: u32,
    /// Layers to offload to a GPU; ignored where unsupported. -1 = all.
    pub gpu_layers: i32,
    /// Load only what tokenization needs.
    pub vocab_only: bool,
    /// Seed for anything random at load time.
    pub seed: u64,
    /// Optional extra knobs (unknown keys are ignored).
    pub extensions: RVec<KeyValue>,
}

/// What a loaded model says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default)]
pub struct ModelInfo {
    /// Architecture name, e.g. `llama`.
    pub architecture: RString,
    /// Number of parameters (0 if unknown).
    pub parameter_count: u64,
    /// Context length in effect for this load.
    pub context_length: u32,
    /// Context length the model was trained with (0 if unknown).
    pub train_context_length: u32,
    /// Vocabulary size.
    pub vocab_size: u32,
    /// Beginning-of-sequence token.
    pub bos: ROption<u32>,
    /// End-of-sequence token.
    pub eos: ROption<u32>,
    /// Every token that ends generation.
    pub eog: RVec<u32>,
    /// The chat template the file carries (Jinja), if any.
    pub chat_template: ROption<RString>,
    /// Free-form extra facts (quantization, file type, ...).
    pub extensions: RVec<KeyValue>,
}

/// The prompt of a generation: text (tokenized by the engine) or token ids.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, tokenized by the model's tokenizer.
    Text(RString),
    /// Token ids, used as given.
    Ids(RVec<u32>),
}

/// Sampling options. Temperature 0 means greedy (argmax).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = off.
    pub top_k: u32,
    /// Nucleus sampling threshold; 1.0 = off.
    pub top_p: f32,
    /// Drop tokens below `min_p` × the top probability; 0 = off.
    pub min_p: f32,
    /// Repetition penalty; 1.0 = off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_window: u32,
    /// Seed of the sampler's random number generator.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_window: 64,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        }
    }
}

/// One generation.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct GenerateRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Add BOS (or what the model's metadata says) when tokenizing a text prompt.
    pub add_special: bool,
    /// Parse special-token text (e.g. `<|im_start|>`) in a text prompt.
    pub parse_special: bool,
    /// At most this many generated tokens; 0 = until the context is full.
    pub max_tokens: u32,
    /// Sampling options.
    pub sampling: SamplingParams,
    /// Generation stops when the output contains one of these; it is not emitted.
    pub stop: RVec<RString>,
    /// Optional extra knobs (unknown keys are ignored).
    pub extensions: RVec<KeyValue>,
}

impl GenerateRequest {
    /// A request with default options (greedy, no limit) for `prompt`.
    pub fn new(prompt: Prompt) -> Self {
        GenerateRequest {
            prompt,
            add_special: true,
            parse_special: false,
            max_tokens: 0,
            sampling: SamplingParams::greedy(),
            stop: RVec::new(),
            extensions: RVec::new(),
        }
    }
}

/// Why a generation ended.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` were generated.
    MaxTokens,
    /// The model produced an end-of-generation token (not emitted).
    EndOfGeneration,
    /// The output contained a stop string (not emitted).
    StopString,
    /// The sink asked to stop.
    Cancelled,
    /// The context window is full.
    ContextFull,
    /// A code this build does not know.
    Unknown(u32),
}

impl StopReason {
    /// The stable integer code.
    pub fn code(self) -> u32 {
        match self {
            StopReason::MaxTokens => 1,
            StopReason::EndOfGeneration => 2,
            StopReason::StopString => 3,
            StopReason::Cancelled => 4,
            StopReason::ContextFull => 5,
            StopReason::Unknown(c) => c,
        }
    }

    /// The reason for a code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => StopReason::MaxTokens,
            2 => StopReason::EndOfGeneration,
            3 => StopReason::StopString,
            4 => StopReason::Cancelled,
            5 => StopReason::ContextFull,
            c => StopReason::Unknown(c),
        }
    }

    /// snake_case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max_tokens",
            StopReason::EndOfGeneration => "eos",
            StopReason::StopString => "stop_string",
            StopReason::Cancelled => "cancelled",
            StopReason::ContextFull => "context_full",
            StopReason::Unknown(_) => "unknown",
        }
    }
}

/// What a generation reports when it ends.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default)]
pub struct GenerationStats {
    /// The prompt as token ids (after tokenization of a text prompt).
    pub prompt_ids: RVec<u32>,
    /// Tokens passed to the sink.
    pub generated_tokens: u32,
    /// Microseconds spent on the prompt (prefill).
    pub prefill_us: u64,
    /// Microseconds from the start of `generate` to the first generated token.
    pub first_token_us: u64,
    /// Microseconds from the first to the last generated token.
    pub decode_us: u64,
    /// [`StopReason`] code.
    pub stop_reason: u32,
}

impl GenerationStats {
    /// The stop reason.
    pub fn stop_reason(&self) -> StopReason {
        StopReason::from_code(self.stop_reason)
    }
}

/// The sink's answer after each token.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkControl {
    /// Go on generating.
    Continue,
    /// Stop now (the generation ends with [`StopReason::Cancelled`]).
    Stop,
}

/// Receives generated tokens, implemented by the host.
#[sabi_trait]
pub trait TokenSink {
    /// Called once per generated token with its id and text piece. Pieces are whole
    /// UTF-8 (a character split across tokens arrives with the token that completes it)
    /// and never contain a stop string.
    ///
    /// No method may be appended to this trait: the host implements it, so a host with
    /// one more method than an older plugin expects fails abi_stable's layout check for
    /// that plugin (`FieldCountMismatch`; `tests/integration/compat.rs` shows it). See
    /// [`crate::version`].
    #[sabi(last_prefix_field)]
    fn on_token(&mut self, id: u32, piece: RStr<'_>) -> SinkControl;
}

/// The sink as passed to [`ModelApi::generate`]: borrowed for the call.
pub type SinkRef<'a> = TokenSink_TO<'a, RMut<'a, ()>>;

/// A loaded model. Dropping it unloads the model.
#[sabi_trait]
pub trait ModelApi: Send + Sync {
    /// Facts about the model.
    fn info(&self) -> ModelInfo;

    /// Text → token ids.
    fn tokenize(
        &self,
        text: RStr<'_>,
        add_special: bool,
        parse_special: bool,
    ) -> RResult<RVec<u32>, EngineError>;

    /// Token ids → text.
    fn detokenize(&self, ids: RSlice<'_, u32>) -> RResult<RString, EngineError>;

    /// The raw bytes of one token (may be partial UTF-8). Control tokens (BOS, EOS, ...)
    /// are rendered as their text, e.g. `<s>`.
    fn token_piece(&self, id: u32) -> RResult<RVec<u8>, EngineError>;

    /// Generates, calling `sink` once per token. Blocks until done.
    #[sabi(last_prefix_field)]
    fn generate(
        &self,
        request: GenerateRequest,
        sink: SinkRef<'_>,
    ) -> RResult<GenerationStats, EngineError>;
}

/// An owned model object.
pub type ModelBox = ModelApi_TO<'static, RBox<()>>;

/// An initialised engine.
#[sabi_trait]
pub trait EngineApi: Send + Sync {
    /// Facts about the engine.
    fn info(&self) -> EngineInfo;

    /// Loads a model.
    #[sabi(last_prefix_field)]
    fn load_model(&self, request: LoadRequest) -> RResult<ModelBox, EngineError>;
}

/// An owned engine object.
pub type EngineBox = EngineApi_TO<'static, RBox<()>>;

/// The root module every plugin exports (through [`crate::export_plugin!`]).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// The plugin-API version the plugin was built for; checked before any call.
    pub api_version: u32,
    /// Creates an engine for one manifest. Never unwinds.
    #[sabi(last_prefix_field)]
    pub init: extern "C" fn(InitRequest) -> RResult<EngineBox, EngineError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "runanywhere_plugin";
    const NAME: &'static str = "runanywhere_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
