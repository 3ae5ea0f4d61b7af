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
use crate::jobs::Score;
use crate::state::{blocking, AppState};

/// A log-probability as JSON (`null` where the engine gave none).
fn number(x: f32) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// Chat's log-probability object for one token (`token`, `logprob`, `bytes`,
/// `top_logprobs`).
pub fn chat_token_logprob(score: &Score) -> Value {
    let top: Vec<Value> = score
        .top
        .iter()
        .map(|(bytes, lp)| {
            json!({"token": String::from_utf8_lossy(bytes), "logprob": number(*lp), "bytes": bytes})
        })
        .collect();
    json!({
        "token": String::from_utf8_lossy(&score.bytes),
        "logprob": number(score.logprob),
        "bytes": score.bytes,
        "top_logprobs": top,
    })
}

/// Chat's `logprobs` of a choice.
pub fn chat_logprobs(scores: &[Score]) -> Value {
    json!({"content": scores.iter().map(chat_token_logprob).collect::<Vec<_>>(), "refusal": null})
}

/// Completions' `logprobs` (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`),
/// offsets counted in bytes of the text from `offset`.
pub fn completion_logprobs(scores: &[Score], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    let mut tops = Vec::new();
    let mut offsets = Vec::new();
    for s in scores {
        tokens.push(json!(String::from_utf8_lossy(&s.bytes)));
        logprobs.push(number(s.logprob));
        let top: serde_json::Map<String, Value> = s
            .top
            .iter()
            .map(|(b, lp)| (String::from_utf8_lossy(b).into_owned(), number(*lp)))
            .collect();
        tops.push(Value::Object(top));
        offsets.push(json!(offset));
        offset += s.bytes.len();
    }
    json!({"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets})
}

/// A response id: `prefix-<time><counter>`, unique within the process.
pub fn completion_id(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:04x}", AppState::unix_now())
}

/// `stream_options` of chat completions and completions.
#[derive(Debug, Default, serde::Deserialize)]
pub struct StreamOptions {
    include_usage: Option<bool>,
}

impl StreamOptions {
    /// Whether the stream ends with a usage chunk.
    pub fn include_usage(options: &Option<StreamOptions>) -> bool {
        options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// The chunks that end a stream: `finish` (the chunk carrying `finish_reason`), then,
/// with `include_usage`, a copy of `blank` with no choices and the usage.
pub fn final_chunks(
    mut finish: Value,
    mut blank: Value,
    stats: &GenerationStats,
    include_usage: bool,
) -> Vec<String> {
    finish["timings"] = timings(stats);
    let mut out = vec![finish.to_string()];
    if include_usage {
        blank["choices"] = json!([]);
        blank["usage"] = usage(stats);
        out.push(blank.to_string());
    }
    out
}

/// llama.cpp server's `timings` (beside `usage` in a reply, on the chunk carrying
/// `finish_reason` in a stream): the engine's own prefill and decode figures, which a
/// client cannot measure through the network.
pub fn timings(stats: &GenerationStats) -> Value {
    let m = runanywhere::metrics::RunMetrics::new(0.0, stats);
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "prompt_n": m.prompt_tokens,
        "prompt_ms": ms(stats.prefill_us),
        "prompt_per_second": m.prefill_tok_s,
        "predicted_n": m.generated_tokens,
        "predicted_ms": ms(stats.decode_us),
        "predicted_per_second": m.decode_tok_s,
        "ttft_ms": m.ttft_ms,
    })
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
