//! The LiteRT (TensorFlow Lite) engine plugin of RunAnywhere: decoder-only models
//! exported by Google's litert-torch (formerly ai-edge-torch) to `.tflite` files with
//! `prefill_<N>` and `decode` signatures.
//!
//! # Design
//!
//! * **The runtime is opened at run time** ([`runtime`]): the TFLite C API exported by
//!   `liblitert-lm.so` from the `litert-lm-api` wheel, put into `.litert/` by
//!   `scripts/fetch-litert.sh`, through ~25 hand-written bindings (libloading; no
//!   build-time link, no bindgen). Missing → the engine is unavailable with the fix.
//! * **Signatures are read, not assumed** ([`graph`]): names, dtypes and shapes of
//!   `tokens`, `input_pos`, the `kv_cache_*` tensors and `logits` come from the model.
//! * **The plugin owns the KV buffers** between calls ([`model`]), chooses the prefill
//!   signature per chunk and never lets a prefill run past the end of the cache.
//! * **Tokenization**: a side file (`--tokenizer`, or `tokenizer.json` / `tok*.bin` next
//!   to the model), through the project's tokenizer crate; the kit's generation loop.

mod error;
mod graph;
mod model;
mod runtime;

use std::path::Path;

use abi_stable::std_types::{RString, RVec};
use runanywhere_plugin_api::sdk::{Engine, Model, Sink};
use runanywhere_plugin_api::{
    Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats, InitRequest, KeyValue,
    LoadRequest, ModelInfo,
};

pub use model::LiteRtModel;

/// The engine's display name.
const ENGINE_NAME: &str = "LiteRT (TFLite)";

/// The ExecuTorch engine.
pub struct LiteRtEngine {
    id: String,
    runtime: runtime::Runtime,
}

impl Engine for LiteRtEngine {
    type Model = LiteRtModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        let manifest_dir = Some(Path::new(request.manifest_dir.as_str()));
        let runtime = runtime::runtime(manifest_dir)?;
        Ok(LiteRtEngine {
            id: request.engine_id.to_string(),
            runtime,
        })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: RString::from(self.id.as_str()),
            name: RString::from(ENGINE_NAME),
            version: RString::from(format!(
                "{} (tflite {})",
                env!("CARGO_PKG_VERSION"),
                self.runtime.version
            )),
            formats: RVec::from(vec![RString::from("tflite")]),
            capabilities: Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::LOGPROBS,
            extensions: RVec::from(vec![KeyValue::new(
                "tflite.library",
                self.runtime.library.display().to_string(),
            )]),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<LiteRtModel, EngineError> {
        Ok(LiteRtModel::load(&self.runtime, request)?)
    }
}

impl Model for LiteRtModel {
    fn logprobs(&self) -> bool {
        // The kit's generation loop scores the tokens.
        true
    }

    fn info(&self) -> ModelInfo {
        LiteRtModel::info(self)
    }

    fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, EngineError> {
        self.tokenizer()
            .tokenize(text, add_special, parse_special)
            .map_err(|e| EngineError::invalid_request(format!("cannot tokenize the text: {e}")))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        let vocab = self.tokenizer();
        let size = u32::try_from(vocab.len()).unwrap_or(u32::MAX);
        if let Some(&bad) = ids.iter().find(|&&id| id >= size) {
            return Err(EngineError::token_out_of_range(bad, size));
        }
        Ok(vocab.detokenize(ids).unwrap_or_default())
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        let vocab = self.tokenizer();
        let size = u32::try_from(vocab.len()).unwrap_or(u32::MAX);
        vocab
            .token_bytes(id)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| EngineError::token_out_of_range(id, size))
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn Sink,
    ) -> Result<GenerationStats, EngineError> {
        LiteRtModel::generate(self, request, sink)
    }
}

runanywhere_plugin_api::export_plugin!(LiteRtEngine);
