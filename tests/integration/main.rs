//! Integration tests: the real `runanywhere` binary and host library with real plugins.
//! One test target; each module covers one area.

// Test helpers outside #[test] functions unwrap freely too.
#![allow(clippy::unwrap_used)]

mod compat;
mod conformance;
mod contract;
mod discovery;
mod embeddings;
mod example_engine;
mod executorch;
mod faults;
mod hardening;
mod litert;
mod llama;
mod logprobs;
mod mock_cli;
mod onnx;
mod routing;
mod runtime;
mod serve;
mod store;
mod webapp;
mod workers;
