//! A test-only plugin built "for a future plugin API": it reports API version 9999
//! (same layout), which the host must refuse before calling anything in it.
// The symbols abi_stable generates for the root module carry no docs.
#![allow(missing_docs)]

use abi_stable::{export_root_module, prefix_type::PrefixTypeTrait};
use runanywhere_plugin_api::{
    abi::{PluginMod, PluginModRef},
    sdk::{init_engine, Engine, Model},
    EngineError, EngineInfo, GenerateRequest, GenerationStats, InitRequest, LoadRequest, ModelInfo,
};

/// The version this plugin claims.
const FUTURE_VERSION: u32 = 9999;

/// Exported like `export_plugin!` does, with the wrong number.
#[no_mangle]
pub static RUNANYWHERE_PLUGIN_API_VERSION: u32 = FUTURE_VERSION;

/// The root module, with the wrong number in its field too.
#[export_root_module]
pub fn runanywhere_root_module() -> PluginModRef {
    PluginMod {
        api_version: FUTURE_VERSION,
        init: init_engine::<FutureEngine>,
    }
    .leak_into_prefix()
}

/// Must never be initialised by a host of another version.
pub struct FutureEngine;

impl Engine for FutureEngine {
    type Model = FutureModel;
    fn init(_: &InitRequest) -> Result<Self, EngineError> {
        panic!("future-api plugin: init must not be called by a host of another API version")
    }
    fn info(&self) -> EngineInfo {
        unreachable!()
    }
    fn load_model(&self, _: &LoadRequest) -> Result<FutureModel, EngineError> {
        unreachable!()
    }
}

/// Never created.
pub struct FutureModel;

impl Model for FutureModel {
    fn info(&self) -> ModelInfo {
        unreachable!()
    }
    fn tokenize(&self, _: &str, _: bool, _: bool) -> Result<Vec<u32>, EngineError> {
        unreachable!()
    }
    fn detokenize(&self, _: &[u32]) -> Result<String, EngineError> {
        unreachable!()
    }
    fn token_piece(&self, _: u32) -> Result<Vec<u8>, EngineError> {
        unreachable!()
    }
    fn generate(
        &self,
        _: &GenerateRequest,
        _: &mut dyn runanywhere_plugin_api::sdk::Sink,
    ) -> Result<GenerationStats, EngineError> {
        unreachable!()
    }
}
