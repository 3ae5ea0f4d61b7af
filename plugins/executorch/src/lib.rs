//! The ExecuTorch engine plugin of RunAnywhere: language models exported to `.pte`
//! programs by ExecuTorch's own exporter (`export_llama`, optimum-executorch), run by
//! [ExecuTorch](https://pytorch.org/executorch)'s C++ runtime.
//!
//! # Design
//!
//! * **The runtime is opened at run time** ([`runtime`]): a small C shim
//!   (`shim/runanywhere_executorch.cpp`) over the `executorch` wheel's shared libraries,
//!   both put into `.executorch/` by `scripts/fetch-executorch.sh`. A missing runtime is
//!   an engine listed unavailable with that fix; ExecuTorch's symbols stay local.
//! * **The interface is read, not assumed** ([`program`]): `forward`'s signature and the
//!   metadata methods decide the vocabulary, the KV-cache length and the prefill chunk;
//!   anything else is refused as `unsupported_format` naming what is missing.
//! * **Tokenization**: a `.pte` holds no tokenizer; the request's tokenizer file or one
//!   next to the program (`tokenizer.json`, llama2.c `tok*.bin`), through the project's
//!   tokenizer crate, as every engine does.
//! * **Generation** ([`model`]): the kit's shared loop over a [`Forward`] whose cache is
//!   the program's own.
//!
//! [`Forward`]: runanywhere_plugin_api::generate::Forward

mod error;
mod model;
mod program;
mod runtime;

use std::path::Path;

use abi_stable::std_types::{RString, RVec};
use runanywhere_plugin_api::sdk::{Engine, Model, Sink};
use runanywhere_plugin_api::{
    Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats, InitRequest, KeyValue,
    LoadRequest, ModelInfo,
};

pub use model::ExecuTorchModel;

/// The engine's display name.
const ENGINE_NAME: &str = "ExecuTorch";

/// The ExecuTorch engine.
pub struct ExecuTorchEngine {
    id: String,
    runtime: runtime::Runtime,
}

impl Engine for ExecuTorchEngine {
    type Model = ExecuTorchModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        let manifest_dir = Some(Path::new(request.manifest_dir.as_str()));
        let runtime = runtime::runtime(manifest_dir)?;
        Ok(ExecuTorchEngine {
            id: request.engine_id.to_string(),
            runtime,
        })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: RString::from(self.id.as_str()),
            name: RString::from(ENGINE_NAME),
            version: RString::from(format!(
                "{} (executorch {})",
                env!("CARGO_PKG_VERSION"),
                self.runtime.version
            )),
            formats: RVec::from(vec![RString::from("pte")]),
            capabilities: Capabilities::STREAMING | Capabilities::TOKENIZE | Capabilities::LOGPROBS,
            extensions: RVec::from(vec![KeyValue::new(
                "executorch.library",
                self.runtime.library.display().to_string(),
            )]),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<ExecuTorchModel, EngineError> {
        Ok(ExecuTorchModel::load(&self.runtime, request)?)
    }
}

impl Model for ExecuTorchModel {
    fn logprobs(&self) -> bool {
        // The kit's generation loop scores the tokens.
        true
    }

    fn info(&self) -> ModelInfo {
        ExecuTorchModel::info(self)
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
        ExecuTorchModel::generate(self, request, sink)
    }
}

runanywhere_plugin_api::export_plugin!(ExecuTorchEngine);
