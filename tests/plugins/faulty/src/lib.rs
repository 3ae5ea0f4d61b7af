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
//! | `load-abort`     | aborts the process (SIGABRT) in `load_model`           |
//! | `generate-segfault` | emits two tokens, then dies of SIGSEGV              |
//! | `generate-exit`  | emits two tokens, then exits the process with status 3 |
//! | `generate-hang`  | emits two tokens, then sleeps forever                  |
//! | `generate-alloc` | emits two tokens, then allocates until it is stopped   |
//! | `none`           | behaves: emits `max_tokens` tokens "x"                 |
//!
//! The last five end (or freeze) the whole process: the host survives them only with
//! the engine in a worker process (`isolation = "process"`).

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
            "load-abort" => {
                tracing::error!("faulty plugin: aborting in load_model");
                std::process::abort()
            }
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
                    "generate-segfault" => segfault(),
                    "generate-exit" => std::process::exit(3),
                    "generate-hang" => loop {
                        std::thread::sleep(std::time::Duration::from_secs(1));
                    },
                    "generate-alloc" => allocate_forever(),
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

/// Dies of a real segmentation fault signal, as a bad pointer in an engine would.
fn segfault() -> ! {
    // SAFETY: resetting a signal's disposition and raising it touch no memory of ours.
    // The default action (the Rust runtime installs a handler for stack overflows, which
    // ignores a raised signal) ends the process, which is what this fault is for.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::raise(libc::SIGSEGV);
    }
    std::process::abort()
}

/// Allocates (and touches) memory until the allocator or the system stops the process.
fn allocate_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 64 << 20]);
        std::hint::black_box(&hoard);
    }
}

export_plugin!(FaultyEngine);
