//! The messages between a host and its engine worker, and their framing.
//!
//! Each message is one frame: a little-endian `u32` length, then that many bytes of
//! JSON. The host writes [`Request`]s to the worker's stdin; the worker writes
//! [`Event`]s to its stdout. JSON keeps the stream readable in a debugger and costs
//! little: tokens travel in batches ([`Event::Tokens`]), as many per frame as piled up
//! while the host was busy, so a fast engine is not slowed to one frame per token.
//!
//! The ABI's types (`abi_stable`'s `RString`, `RVec`, ...) are not serde types, so the
//! ones that cross have serde mirrors here (`Wire*`), converted both ways. JSON has no
//! NaN or infinity, which engines do produce (a log-probability of -inf, a NaN the
//! engine gave for "none"): every float crosses as a [`Float`], which spells those as
//! strings.

use std::io::{self, Read, Write};

use abi_stable::std_types::{ROption, RString, RVec};
use runanywhere_plugin_api::ext::{Pooling, TokenLogprob};
use runanywhere_plugin_api::{
    Capabilities, EngineError, EngineInfo, ErrorKind, GenerateRequest, GenerationStats, KeyValue,
    LoadRequest, ModelInfo, Prompt, SamplingParams,
};
use serde::{Deserialize, Serialize};

/// An `f32` that survives JSON: finite values as numbers, the rest as `"nan"`, `"inf"`
/// or `"-inf"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Float(pub(crate) f32);

impl Serialize for Float {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            x if x.is_finite() => s.serialize_f32(x),
            x if x.is_nan() => s.serialize_str("nan"),
            x if x > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }
}

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f32),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(x) => Ok(Float(x)),
            Repr::Text(t) => match t.as_str() {
                "nan" => Ok(Float(f32::NAN)),
                "inf" => Ok(Float(f32::INFINITY)),
                "-inf" => Ok(Float(f32::NEG_INFINITY)),
                other => Err(serde::de::Error::custom(format!(
                    "`{other}` is not a float"
                ))),
            },
        }
    }
}

fn floats(v: &[f32]) -> Vec<Float> {
    v.iter().copied().map(Float).collect()
}

/// Vectors as they cross.
pub(crate) fn wire_vectors(vectors: Vec<Vec<f32>>) -> Vec<Vec<Float>> {
    vectors.iter().map(|v| floats(v)).collect()
}

/// Vectors as they arrive.
pub(crate) fn vectors(wire: Vec<Vec<Float>>) -> Vec<Vec<f32>> {
    wire.into_iter()
        .map(|v| v.into_iter().map(|f| f.0).collect())
        .collect()
}

/// Frames larger than this are refused: no honest message comes near it (the biggest
/// are embeddings of a long batch), and a corrupt length must not allocate gigabytes.
const MAX_FRAME: u32 = 1 << 30;

/// Writes one frame holding `message`.
pub(crate) fn write_frame(out: &mut impl Write, message: &impl Serialize) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n <= MAX_FRAME)
        .ok_or_else(|| io::Error::other("message too large for one frame"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&body)
}

/// Reads one frame; `Ok(None)` at a clean end of the stream (the other side is gone).
pub(crate) fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes is larger than any message"),
        ));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What the host asks of a worker. Every request but [`Request::Cancel`] and
/// [`Request::Unload`] is answered by one [`Event::Reply`] with its `id` (a generation
/// first streams [`Event::Tokens`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Load a model; answered with [`Reply::Loaded`].
    Load { id: u64, request: WireLoad },
    /// Text → ids; [`Reply::Ids`].
    Tokenize {
        id: u64,
        model: u64,
        text: String,
        add_special: bool,
        parse_special: bool,
    },
    /// Ids → text; [`Reply::Text`].
    Detokenize { id: u64, model: u64, ids: Vec<u32> },
    /// One token's bytes; [`Reply::Bytes`].
    TokenPiece { id: u64, model: u64, token: u32 },
    /// A generation, with log-probabilities when `logprobs` names how many alternatives;
    /// streams [`Event::Tokens`], then [`Reply::Stats`].
    Generate {
        id: u64,
        model: u64,
        request: WireGenerate,
        logprobs: Option<u32>,
    },
    /// Embeddings; [`Reply::Vectors`].
    Embed {
        id: u64,
        model: u64,
        inputs: Vec<WirePrompt>,
        pooling: u32,
        normalize: bool,
    },
    /// Stop the generation `id` (its reply still comes, as for any generation).
    Cancel { id: u64 },
    /// Drop the model (no reply).
    Unload { model: u64 },
}

/// What a worker tells its host.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Event {
    /// The first event: the engine is initialised (its info), or why it is not.
    Ready(Result<WireEngineInfo, WireUnavailable>),
    /// The answer to the request `id`.
    Reply {
        id: u64,
        result: Result<Reply, WireError>,
    },
    /// Tokens of the generation `id`, in order.
    Tokens { id: u64, tokens: Vec<WireToken> },
    /// A log record of the worker or its plugin, for the host's log.
    Log {
        level: u8,
        plugin: bool,
        source: String,
        message: String,
    },
    /// Sent every [`super::HEARTBEAT`]: the worker is alive, and how long (ms) each call
    /// in flight (loads excepted) has gone without progress: for a generation, a token
    /// or a cancel check (the engine's sign of progress during a prefill).
    Heartbeat { idle_ms: Vec<(u64, u64)> },
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// A model loaded: its handle in the worker, its facts, and whether the plugin has
    /// the extension calls (log-probabilities, embeddings).
    Loaded {
        model: u64,
        info: WireModelInfo,
        extensions: bool,
    },
    Ids(Vec<u32>),
    Text(String),
    Bytes(Vec<u8>),
    Vectors(Vec<Vec<Float>>),
    Stats(WireStats),
}

/// Why the engine could not be initialised: the registry's ledger kind (its serde name)
/// and reason.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireUnavailable {
    pub(crate) kind: crate::registry::UnavailableKind,
    pub(crate) reason: String,
}

/// [`EngineError`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    code: u32,
    message: String,
}

impl From<&EngineError> for WireError {
    fn from(e: &EngineError) -> Self {
        WireError {
            code: e.code(),
            message: e.message().to_string(),
        }
    }
}

impl From<WireError> for EngineError {
    fn from(e: WireError) -> Self {
        EngineError::new(ErrorKind::from_code(e.code), e.message)
    }
}

/// A key/value list.
type Pairs = Vec<(String, String)>;

fn pairs(list: &[KeyValue]) -> Pairs {
    list.iter()
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn key_values(list: Pairs) -> RVec<KeyValue> {
    list.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()
}

fn strings(list: &[RString]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn option<T: Clone>(o: &ROption<T>) -> Option<T> {
    o.clone().into_option()
}

/// [`EngineInfo`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireEngineInfo {
    id: String,
    name: String,
    version: String,
    formats: Vec<String>,
    capabilities: u64,
    extensions: Pairs,
}

impl From<&EngineInfo> for WireEngineInfo {
    fn from(i: &EngineInfo) -> Self {
        WireEngineInfo {
            id: i.id.to_string(),
            name: i.name.to_string(),
            version: i.version.to_string(),
            formats: strings(&i.formats),
            capabilities: i.capabilities.0,
            extensions: pairs(&i.extensions),
        }
    }
}

impl From<WireEngineInfo> for EngineInfo {
    fn from(i: WireEngineInfo) -> Self {
        EngineInfo {
            id: i.id.into(),
            name: i.name.into(),
            version: i.version.into(),
            formats: i.formats.into_iter().map(RString::from).collect(),
            capabilities: Capabilities(i.capabilities),
            extensions: key_values(i.extensions),
        }
    }
}

/// [`LoadRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireLoad {
    model_path: String,
    tokenizer_path: Option<String>,
    context_length: u32,
    threads: u32,
    batch_size: u32,
    gpu_layers: i32,
    vocab_only: bool,
    seed: u64,
    extensions: Pairs,
}

impl From<&LoadRequest> for WireLoad {
    fn from(r: &LoadRequest) -> Self {
        WireLoad {
            model_path: r.model_path.to_string(),
            tokenizer_path: option(&r.tokenizer_path).map(|s| s.to_string()),
            context_length: r.context_length,
            threads: r.threads,
            batch_size: r.batch_size,
            gpu_layers: r.gpu_layers,
            vocab_only: r.vocab_only,
            seed: r.seed,
            extensions: pairs(&r.extensions),
        }
    }
}

impl From<WireLoad> for LoadRequest {
    fn from(r: WireLoad) -> Self {
        LoadRequest {
            model_path: r.model_path.into(),
            tokenizer_path: r.tokenizer_path.map(RString::from).into(),
            context_length: r.context_length,
            threads: r.threads,
            batch_size: r.batch_size,
            gpu_layers: r.gpu_layers,
            vocab_only: r.vocab_only,
            seed: r.seed,
            extensions: key_values(r.extensions),
        }
    }
}

/// [`ModelInfo`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireModelInfo {
    architecture: String,
    parameter_count: u64,
    context_length: u32,
    train_context_length: u32,
    vocab_size: u32,
    bos: Option<u32>,
    eos: Option<u32>,
    eog: Vec<u32>,
    chat_template: Option<String>,
    extensions: Pairs,
}

impl From<&ModelInfo> for WireModelInfo {
    fn from(i: &ModelInfo) -> Self {
        WireModelInfo {
            architecture: i.architecture.to_string(),
            parameter_count: i.parameter_count,
            context_length: i.context_length,
            train_context_length: i.train_context_length,
            vocab_size: i.vocab_size,
            bos: option(&i.bos),
            eos: option(&i.eos),
            eog: i.eog.to_vec(),
            chat_template: option(&i.chat_template).map(|s| s.to_string()),
            extensions: pairs(&i.extensions),
        }
    }
}

impl From<WireModelInfo> for ModelInfo {
    fn from(i: WireModelInfo) -> Self {
        ModelInfo {
            architecture: i.architecture.into(),
            parameter_count: i.parameter_count,
            context_length: i.context_length,
            train_context_length: i.train_context_length,
            vocab_size: i.vocab_size,
            bos: i.bos.into(),
            eos: i.eos.into(),
            eog: i.eog.into(),
            chat_template: i.chat_template.map(RString::from).into(),
            extensions: key_values(i.extensions),
        }
    }
}

/// [`Prompt`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WirePrompt {
    Text(String),
    Ids(Vec<u32>),
}

impl From<&Prompt> for WirePrompt {
    fn from(p: &Prompt) -> Self {
        match p {
            Prompt::Text(t) => WirePrompt::Text(t.to_string()),
            Prompt::Ids(ids) => WirePrompt::Ids(ids.to_vec()),
        }
    }
}

impl From<WirePrompt> for Prompt {
    fn from(p: WirePrompt) -> Self {
        match p {
            WirePrompt::Text(t) => Prompt::Text(t.into()),
            WirePrompt::Ids(ids) => Prompt::Ids(ids.into()),
        }
    }
}

/// [`SamplingParams`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireSampling {
    temperature: Float,
    top_k: u32,
    top_p: Float,
    min_p: Float,
    repeat_penalty: Float,
    repeat_window: u32,
    seed: u64,
}

/// [`GenerateRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireGenerate {
    prompt: WirePrompt,
    add_special: bool,
    parse_special: bool,
    max_tokens: u32,
    sampling: WireSampling,
    stop: Vec<String>,
    extensions: Pairs,
}

impl From<&GenerateRequest> for WireGenerate {
    fn from(r: &GenerateRequest) -> Self {
        let s = &r.sampling;
        WireGenerate {
            prompt: (&r.prompt).into(),
            add_special: r.add_special,
            parse_special: r.parse_special,
            max_tokens: r.max_tokens,
            sampling: WireSampling {
                temperature: Float(s.temperature),
                top_k: s.top_k,
                top_p: Float(s.top_p),
                min_p: Float(s.min_p),
                repeat_penalty: Float(s.repeat_penalty),
                repeat_window: s.repeat_window,
                seed: s.seed,
            },
            stop: strings(&r.stop),
            extensions: pairs(&r.extensions),
        }
    }
}

impl From<WireGenerate> for GenerateRequest {
    fn from(r: WireGenerate) -> Self {
        let s = r.sampling;
        GenerateRequest {
            prompt: r.prompt.into(),
            add_special: r.add_special,
            parse_special: r.parse_special,
            max_tokens: r.max_tokens,
            sampling: SamplingParams {
                temperature: s.temperature.0,
                top_k: s.top_k,
                top_p: s.top_p.0,
                min_p: s.min_p.0,
                repeat_penalty: s.repeat_penalty.0,
                repeat_window: s.repeat_window,
                seed: s.seed,
            },
            stop: r.stop.into_iter().map(RString::from).collect(),
            extensions: key_values(r.extensions),
        }
    }
}

/// [`GenerationStats`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireStats {
    prompt_ids: Vec<u32>,
    generated_tokens: u32,
    prefill_us: u64,
    first_token_us: u64,
    decode_us: u64,
    stop_reason: u32,
}

impl From<&GenerationStats> for WireStats {
    fn from(s: &GenerationStats) -> Self {
        WireStats {
            prompt_ids: s.prompt_ids.to_vec(),
            generated_tokens: s.generated_tokens,
            prefill_us: s.prefill_us,
            first_token_us: s.first_token_us,
            decode_us: s.decode_us,
            stop_reason: s.stop_reason,
        }
    }
}

impl From<WireStats> for GenerationStats {
    fn from(s: WireStats) -> Self {
        GenerationStats {
            prompt_ids: s.prompt_ids.into(),
            generated_tokens: s.generated_tokens,
            prefill_us: s.prefill_us,
            first_token_us: s.first_token_us,
            decode_us: s.decode_us,
            stop_reason: s.stop_reason,
        }
    }
}

/// One generated token; the log-probability fields only for a generation that asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WireToken {
    #[serde(rename = "i")]
    pub(crate) id: u32,
    #[serde(rename = "p")]
    pub(crate) piece: String,
    /// `None`: no log-probabilities asked for (or NaN: the engine gave none).
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub(crate) logprob: Option<Float>,
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) top: Vec<(u32, Float)>,
}

impl WireToken {
    /// A token with its log-probability and alternatives.
    pub(crate) fn scored(id: u32, piece: &str, logprob: f32, top: &[TokenLogprob]) -> Self {
        WireToken {
            id,
            piece: piece.to_string(),
            logprob: (!logprob.is_nan()).then_some(Float(logprob)),
            top: top.iter().map(|a| (a.id, Float(a.logprob))).collect(),
        }
    }

    /// The log-probability as the host's sinks take it (NaN when there is none).
    pub(crate) fn logprob(&self) -> f32 {
        self.logprob.map_or(f32::NAN, |f| f.0)
    }

    /// The alternatives as the ABI's type.
    pub(crate) fn top(&self) -> Vec<TokenLogprob> {
        self.top
            .iter()
            .map(|&(id, logprob)| TokenLogprob {
                id,
                logprob: logprob.0,
            })
            .collect()
    }
}

/// [`Pooling`] by its code.
pub(crate) fn pooling(code: u32) -> Pooling {
    Pooling::from_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_clean_end_is_none() {
        let mut buf = Vec::new();
        let top = [
            TokenLogprob {
                id: 3,
                logprob: -0.5,
            },
            TokenLogprob {
                id: 4,
                logprob: f32::NEG_INFINITY,
            },
        ];
        let event = Event::Tokens {
            id: 7,
            tokens: vec![WireToken::scored(3, "héllo", f32::NAN, &top)],
        };
        write_frame(&mut buf, &event).unwrap();
        write_frame(&mut buf, &Request::Cancel { id: 7 }).unwrap();
        let mut input = buf.as_slice();
        match read_frame::<Event>(&mut input).unwrap() {
            Some(Event::Tokens { id: 7, tokens }) => {
                assert_eq!(tokens[0].piece, "héllo");
                assert!(tokens[0].logprob().is_nan());
                assert_eq!(tokens[0].top()[0].logprob, -0.5);
                assert_eq!(tokens[0].top()[1].logprob, f32::NEG_INFINITY);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            read_frame::<Request>(&mut input).unwrap(),
            Some(Request::Cancel { id: 7 })
        ));
        assert!(read_frame::<Request>(&mut input).unwrap().is_none());
    }

    #[test]
    fn floats_json_cannot_hold_cross_anyway() {
        let mut buf = Vec::new();
        let sent = vec![vec![1.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]];
        let reply = Reply::Vectors(wire_vectors(sent));
        write_frame(&mut buf, &reply).unwrap();
        let Some(Reply::Vectors(back)) = read_frame::<Reply>(&mut buf.as_slice()).unwrap() else {
            panic!("not vectors");
        };
        let back = vectors(back);
        assert_eq!(back[0][0], 1.5);
        assert!(back[0][1].is_nan());
        assert_eq!(back[0][2..], [f32::INFINITY, f32::NEG_INFINITY]);
    }

    #[test]
    fn a_corrupt_length_is_an_error_not_an_allocation() {
        let bytes = u32::MAX.to_le_bytes();
        let err = read_frame::<Event>(&mut bytes.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn requests_survive_the_round_trip() {
        let mut request = GenerateRequest::new(Prompt::Ids(vec![1, 2].into()));
        request.max_tokens = 9;
        request.stop.push("END".into());
        let back: GenerateRequest = WireGenerate::from(&request).into();
        assert_eq!(back.prompt, request.prompt);
        assert_eq!(back.max_tokens, 9);
        assert_eq!(back.sampling, request.sampling);
        assert_eq!(back.stop[0].as_str(), "END");
    }
}
