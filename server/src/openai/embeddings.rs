//! `POST /v1/embeddings`. No engine computes embeddings through the plugin ABI yet, so
//! the route answers what it will answer for any model that cannot embed: a clear
//! error naming the model and its engine (after checking the model exists).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use runanywhere::Capabilities;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The request body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    #[allow(dead_code)]
    input: Value,
    #[serde(flatten)]
    #[allow(dead_code)]
    other: Map<String, Value>,
}

/// The handler.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    let (target, loaded) = state.load(&body.model, |_| {}).await?;
    let model = loaded.model();
    let reason = if model.capabilities().contains(Capabilities::EMBEDDINGS) {
        "its engine reports embeddings, but the plugin ABI has no embeddings call yet"
    } else {
        "its engine does not compute embeddings"
    };
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "unsupported",
        format!(
            "model `{}` on engine `{}` cannot embed text: {reason}",
            target.name,
            model.engine_id()
        ),
    )
    .with_param("model"))
}
