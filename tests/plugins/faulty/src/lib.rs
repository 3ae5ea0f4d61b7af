//! A test-only plugin that misbehaves on purpose, to prove the host survives.
//!
//! One library, many manifests: the manifest's `[options] fault = "..."` picks the fault.
//!
//! | fault            | behaviour                                              |
//! |------------------|--------------------------------------------------------|
//! | `init-panic`     | panics in `init`                                       |
//! | `init-error`     | `init` returns an error                                |
//! | `load-panic`     | panics in `load_model`                                 |
//! | `load-error`     | `load_model` returns `InvalidModel`                    |
//! | `generate-panic` | emits two tokens, then panics in `generate`            |
//! | `generate-error` | emits two tokens, then returns `OutOfMemory`           |
//! | `tokenize-panic` | panics in `tokenize`                                   |
//! | `info-panic`     | panics in the model's `info`                           |
//! | `none`           | behaves: emits `max_tokens` tokens "x"                 |

use runanywhere_plugin_api::{
    abi::lookup,
    export_plugin,
    sdk::{Engine, Model},
    Capabilities, EngineError, EngineInfo, ErrorKind, GenerateRequest, GenerationStats,
    InitRequest, LoadRequest, ModelInfo, SinkControl, StopReason,
};

/// The faulty engine.
pub struct FaultyEngine {
    id: String,
    fault: String,
}

impl Engine for FaultyEngine {
    type Model = FaultyModel;

    fn init(request: &InitRequest) -> Result<Self, EngineError> {
        let fault = lookup(&request.options, "fault")
            .unwrap_or("none")
            .to_string();
        match fault.as_str() {
            "init-panic" => panic!("faulty plugin: deliberate panic in init"),
            "init-error" => Err(EngineError::internal(
                "faulty plugin: deliberate init failure",
            )),
            _ => Ok(FaultyEngine {
                id: request.engine_id.to_string(),
                fault,
            }),
        }
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            id: self.id.as_str().into(),
            name: "Faulty test engine".into(),
            version: "0".into(),
            formats: vec!["faulty".into()].into(),
            capabilities: Capabilities::STREAMING | Capabilities::TOKENIZE,
            extensions: Vec::new().into(),
        }
    }

    fn load_model(&self, _request: &LoadRequest) -> Result<FaultyModel, EngineError> {
        match self.fault.as_str() {
            "load-panic" => panic!("faulty plugin: deliberate panic in load_model"),
            "load-error" => Err(EngineError::invalid_model(
                "faulty plugin: deliberate load failure",
            )),
            _ => Ok(FaultyModel {
                fault: self.fault.clone(),
            }),
        }
    }
}

/// The model of the faulty engine.
pub struct FaultyModel {
    fault: String,
}

impl Model for FaultyModel {
    fn info(&self) -> ModelInfo {
        if self.fault == "info-panic" {
            panic!("faulty plugin: deliberate panic in model info");
        }
        ModelInfo {
            architecture: "faulty".into(),
            context_length: 64,
            vocab_size: 2,
            ..Default::default()
        }
    }

    fn tokenize(&self, text: &str, _: bool, _: bool) -> Result<Vec<u32>, EngineError> {
        if self.fault == "tokenize-panic" {
            panic!("faulty plugin: deliberate panic in tokenize");
        }
        Ok(text.bytes().map(|_| 1).collect())
    }

    fn detokenize(&self, ids: &[u32]) -> Result<String, EngineError> {
        Ok("x".repeat(ids.len()))
    }

    fn token_piece(&self, _id: u32) -> Result<Vec<u8>, EngineError> {
        Ok(b"x".to_vec())
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        sink: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        let mut sent = 0;
        let reason = loop {
            if request.max_tokens > 0 && sent >= request.max_tokens {
                break StopReason::MaxTokens;
            }
            if sent == 2 {
                match self.fault.as_str() {
                    "generate-panic" => panic!("faulty plugin: deliberate panic in generate"),
                    "generate-error" => {
                        return Err(EngineError::new(
                            ErrorKind::OutOfMemory,
                            "faulty plugin: deliberate failure mid-generation",
                        ))
                    }
                    _ => {}
                }
            }
            sent += 1;
            if sink.token(1, "x") == SinkControl::Stop {
                break StopReason::Cancelled;
            }
        };
        Ok(GenerationStats {
            generated_tokens: sent,
            stop_reason: reason.code(),
            ..Default::default()
        })
    }
}

export_plugin!(FaultyEngine);
