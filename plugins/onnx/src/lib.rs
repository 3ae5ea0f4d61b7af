//! The ONNX Runtime engine plugin of RunAnywhere: decoder-only language models exported
//! to ONNX with a KV cache, run by [ONNX Runtime](https://onnxruntime.ai) through the
//! [`ort`](https://crates.io/crates/ort) crate.
//!
//! # Design
//!
//! * **ONNX Runtime is loaded at run time** ([`runtime`]): `ort`'s `load-dynamic` mode, so
//!   the build needs no ONNX Runtime binaries. `scripts/fetch-onnxruntime.sh` puts the
//!   library from the official PyPI wheel into the repository's `.ort/`; the plugin finds
//!   it there (or next to itself, or at `ORT_DYLIB_PATH`). When it cannot, engine
//!   initialisation fails with a message saying how to fix it, and the host lists the
//!   engine as unavailable with that reason; it never crashes the host.
//!
//! * **Models** ([`layout`]) are ONNX Runtime GenAI folders (`genai_config.json`) or
//!   Hugging Face Optimum exports (`model.onnx` + `config.json`), each with its
//!   `tokenizer.json`, or a path to the `.onnx` file itself.
//!
//! * **The graph is read, not assumed** ([`signature`]): input and output names, integer
//!   widths and the KV-cache layout (separate key/value tensors or GPT-2's combined
//!   ones) come from the session itself. A graph that is not a decoder with a cache is
//!   refused as `unsupported_format`, naming what is missing; a truncated or malformed
//!   file is `invalid_model`.
//!
//! * **Tokenization** ([`tokenizer`]) is the `tokenizers` crate on `tokenizer.json`,
//!   wrapped in `runanywhere-convert`'s `Vocab` as the Candle engine does: token pieces
//!   are raw bytes, so streamed pieces concatenate losslessly and match Candle's.
//!
//! * **Generation** ([`model`]): the prompt in one session run with an empty cache, then
//!   one token per run with the cache fed back; sampling, stop strings, UTF-8 buffering,
//!   limits and timing are the shared plugin kit's.

mod error;
mod layout;
mod model;
mod runtime;
mod signature;
mod tokenizer;

use std::path::Path;

use abi_stable::std_types::{RString, RVec};
use runanywhere_plugin_api::sdk::{Engine, Model};
use runanywhere_plugin_api::{
    Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats, InitRequest, KeyValue,
    LoadRequest, ModelInfo,
};

pub use model::OnnxModel;

/// The engine's display name.
const ENGINE_NAME: &str = "ONNX Runtime";
/// The `ort` version pinned in Cargo.toml.
const ORT_CRATE_VERSION: &str = "2.0.0-rc.15";

/// The ONNX Runtime engine.
pub struct OnnxEngine {
    id: String,
    runtime: runtime::Runtime,
}

impl Engine for OnnxEngine {
    type Model = OnnxModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        let manifest_dir = Some(Path::new(request.manifest_dir.as_str()));
        let runtime = runtime::runtime(manifest_dir)?;
        Ok(OnnxEngine {
            id: request.engine_id.to_string(),
            runtime,
        })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: RString::from(self.id.as_str()),
            name: RString::from(ENGINE_NAME),
            version: RString::from(format!(
                "{} (onnxruntime {}, ort {ORT_CRATE_VERSION})",
                env!("CARGO_PKG_VERSION"),
                self.runtime.version
            )),
            formats: RVec::from(vec![RString::from("onnx")]),
            capabilities: Capabilities::STREAMING
                | Capabilities::TOKENIZE
                | Capabilities::CHAT_TEMPLATE
                | Capabilities::LOGPROBS,
            extensions: RVec::from(vec![KeyValue::new(
                "onnxruntime.library",
                self.runtime.library.display().to_string(),
            )]),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<OnnxModel, EngineError> {
        Ok(OnnxModel::load(&self.runtime, request)?)
    }
}

impl Model for OnnxModel {
    fn logprobs(&self) -> bool {
        // The kit's generation loop scores the tokens.
        true
    }

    fn info(&self) -> ModelInfo {
        OnnxModel::info(self)
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        Ok(tokenizer::tokenize(
            self.tokenizer(),
            text,
            add_special,
            parse_special,
        )?)
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        Ok(tokenizer::detokenize(self.tokenizer(), ids)?)
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        Ok(tokenizer::piece(self.tokenizer(), id, true)?.to_vec())
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        OnnxModel::generate(self, request, sink)
    }
}

runanywhere_plugin_api::export_plugin!(OnnxEngine);
