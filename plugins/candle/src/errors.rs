//! How failures of the conversion library and of Candle reach the host.
//!
//! A well-formed file this engine does not read is `UnsupportedFormat`; anything
//! unreadable, truncated or inconsistent is `InvalidModel`, and every message names the
//! file. Candle failing during a forward pass on a model that loaded is a bug:
//! `Internal`.

use runanywhere_convert::ConvertError;
use runanywhere_plugin_api::EngineError;

/// The engine error for a load-time conversion error.
pub(crate) fn load_error(e: ConvertError) -> EngineError {
    match e {
        ConvertError::Unsupported { .. } => EngineError::unsupported_format(e.to_string()),
        ConvertError::OutputExists(_) => EngineError::invalid_request(e.to_string()),
        _ => EngineError::invalid_model(e.to_string()),
    }
}

/// The engine error for a failed forward pass.
pub(crate) fn forward_error(e: candle_core::Error) -> EngineError {
    EngineError::internal(format!("candle forward pass failed: {e}"))
}
