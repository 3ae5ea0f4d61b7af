//! The OpenAI-compatible API: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`. Errors in OpenAI's shape ([`crate::error::ApiError`]).

pub mod chat_completions;
pub mod completions;
pub mod embeddings;
pub mod request;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::Json;
use runanywhere::GenerationStats;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::state::{blocking, AppState};

/// A response id: `prefix-<time><counter>`, unique within the process.
pub fn completion_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:04x}", AppState::unix_now())
}

/// OpenAI's `usage` object for a generation.
pub fn usage(stats: &GenerationStats) -> Value {
    let (prompt, completion) = (stats.prompt_ids.len(), stats.generated_tokens as usize);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    })
}

/// `GET /v1/models`: the models the server was started with (and its aliases), then the
/// store's models.
pub async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let created = state
        .started
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let served: Vec<String> = state
        .names
        .served()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let runtime = std::sync::Arc::clone(&state.runtime);
    let stored = blocking(move || Ok(runtime.store()?.list().map_err(runanywhere::Error::from)?))
        .await
        .unwrap_or_else(|e| {
            tracing::warn!("cannot list the store: {}", e.message);
            Vec::new()
        });
    let mut data: Vec<Value> = served
        .iter()
        .map(|name| json!({"id": name, "object": "model", "created": created, "owned_by": "runanywhere"}))
        .collect();
    for entry in stored {
        if served.contains(&entry.id) {
            continue;
        }
        data.push(json!({
            "id": entry.id,
            "object": "model",
            "created": created,
            "owned_by": "runanywhere",
        }));
    }
    Ok(Json(json!({"object": "list", "data": data})))
}
