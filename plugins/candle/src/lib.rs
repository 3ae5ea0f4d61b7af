//! The Candle engine plugin of RunAnywhere: Hugging Face's pure-Rust ML framework on the
//! CPU, reading Hugging Face folders, GGUF files and llama2.c checkpoints directly.
//!
//! # Design
//!
//! * **Formats.** [`load`] recognises the format from content and picks the Candle
//!   model that matches the file's layout (see [`backend`]): `quantized_llama` for GGUF,
//!   `llama2_c` for llama2.c checkpoints, `llama`/`qwen2` for Hugging Face folders. All
//!   arithmetic is `f32`: greedy references with logit margins of a few thousandths
//!   must come out exactly.
//! * **Tokenizers** come from `runanywhere-convert`: a folder's `tokenizer.json`, or a
//!   Hugging Face tokenizer converted from the GGUF or llama2.c vocabulary so that ids
//!   equal llama.cpp's. Its [`Vocab`] gives llama.cpp's `parse_special` and per-token
//!   byte semantics.
//! * **Validation first.** GGUF headers, llama2.c sizes and safetensors tensors are
//!   checked before Candle touches them, so a bad file is an `InvalidModel` error, not a
//!   panic (the kit would catch one, but it is not the mechanism).
//! * **Generation** ([`generate`]) keeps a KV cache for the whole generation, prefills
//!   the prompt in one forward pass (per batch), and leaves sampling, stop strings,
//!   UTF-8 buffering, limits and timing to the plugin kit. One generation runs at a time
//!   per model (the cache is behind a `Mutex`); tokenization never waits for it.
//! * **Threads** ([`threads`]): a model loaded with `threads = n` runs its forward
//!   passes on its own rayon pool of `n` threads.

mod backend;
mod errors;
mod generate;
mod load;
mod threads;

use std::sync::Mutex;

use abi_stable::std_types::{RString, RVec};
use runanywhere_convert::Vocab;
use runanywhere_plugin_api::sdk::{Engine, Model};
use runanywhere_plugin_api::{
    export_plugin, Capabilities, EngineError, EngineInfo, GenerateRequest, GenerationStats,
    InitRequest, KeyValue, LoadRequest, ModelInfo,
};

use crate::backend::Backend;
use crate::generate::Generator;
use crate::threads::Threads;

/// The engine id when the manifest gives none.
const ENGINE_ID: &str = "candle";
/// The Candle version pinned in the workspace.
const CANDLE_VERSION: &str = "0.11.1";
/// Prefill batch size when the request says 0.
const DEFAULT_BATCH: usize = 512;

/// The Candle engine.
pub struct CandleEngine {
    id: String,
}

impl Engine for CandleEngine {
    type Model = CandleModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        threads::settle_candle_thread_count();
        let id = match request.engine_id.as_str() {
            "" => ENGINE_ID.to_string(),
            id => id.to_string(),
        };
        Ok(CandleEngine { id })
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: RString::from(self.id.as_str()),
            name: RString::from("Candle"),
            version: RString::from(format!(
                "{} (candle {CANDLE_VERSION}, CPU, f32)",
                env!("CARGO_PKG_VERSION")
            )),
            formats: RVec::from(vec![
                RString::from("safetensors"),
                RString::from("gguf"),
                RString::from("llama2c"),
            ]),
            capabilities: Capabilities::STREAMING
                | Capabilities::TOKENIZE
                | Capabilities::CHAT_TEMPLATE
                | Capabilities::LOGPROBS,
            extensions: RVec::from(vec![
                KeyValue::new("candle.version", CANDLE_VERSION),
                KeyValue::new("candle.device", "cpu"),
                KeyValue::new(
                    "candle.architectures",
                    "gguf: llama; llama2c; safetensors: llama, mistral, qwen2",
                ),
            ]),
        }
    }

    fn load_model(&self, request: &LoadRequest) -> Result<CandleModel, EngineError> {
        CandleModel::load(request)
    }
}

/// A model loaded by Candle.
pub struct CandleModel {
    vocab: Vocab,
    info: ModelInfo,
    /// The weights and KV cache; `None` for a vocab-only load.
    backend: Option<Mutex<Box<dyn Backend>>>,
    threads: Threads,
    context_length: usize,
    n_vocab: usize,
    batch: usize,
}

impl CandleModel {
    fn load(request: &LoadRequest) -> Result<Self, EngineError> {
        let threads = Threads::new(request.threads)?;
        // Loading runs Candle kernels too (dequantisation, layout changes).
        let loaded = threads.run(|| load::load(request))?;
        let batch = match request.batch_size {
            0 => DEFAULT_BATCH,
            n => n as usize,
        };
        let mut info = loaded.info;
        let mut extensions = info.extensions.to_vec();
        extensions.extend([
            KeyValue::new("format", loaded.format),
            KeyValue::new("threads", threads.count().to_string()),
            KeyValue::new("batch_size", batch.to_string()),
            KeyValue::new("vocab_only", request.vocab_only.to_string()),
            KeyValue::new("dtype", "f32"),
        ]);
        info.extensions = RVec::from(extensions);
        tracing::debug!(
            path = request.model_path.as_str(),
            format = loaded.format,
            context = loaded.context_length,
            "candle loaded a model"
        );
        Ok(CandleModel {
            vocab: loaded.vocab,
            info,
            backend: loaded.backend.map(Mutex::new),
            threads,
            context_length: loaded.context_length,
            n_vocab: loaded.n_vocab,
            batch,
        })
    }

    fn check_id(&self, id: u32) -> Result<(), EngineError> {
        if (id as usize) < self.vocab.len() {
            Ok(())
        } else {
            let size = u32::try_from(self.vocab.len()).unwrap_or(u32::MAX);
            Err(EngineError::token_out_of_range(id, size))
        }
    }
}

impl Model for CandleModel {
    fn logprobs(&self) -> bool {
        // The kit's generation loop scores the tokens.
        true
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
        self.vocab
            .tokenize(text, add_special, parse_special)
            .map_err(|e| EngineError::invalid_request(e.to_string()))
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        for &id in ids {
            self.check_id(id)?;
        }
        Ok(self.vocab.detokenize(ids).unwrap_or_default())
    }

    fn token_piece(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        self.check_id(id)?;
        Ok(self.vocab.token_bytes(id).unwrap_or_default().to_vec())
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        let backend = self.backend.as_ref().ok_or_else(EngineError::vocab_only)?;
        Generator {
            vocab: &self.vocab,
            backend,
            threads: &self.threads,
            context_length: self.context_length,
            n_vocab: self.n_vocab,
            batch: self.batch,
        }
        .run(request, sink)
    }
}

export_plugin!(CandleEngine);

#[cfg(test)]
mod tests;
