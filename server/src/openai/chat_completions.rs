//! `POST /v1/chat/completions`: the conversation rendered with the model's chat
//! template by the runtime's [`ChatSession`], generated, and returned whole or streamed
//! as server-sent events (`chat.completion.chunk`s, then `data: [DONE]`).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runanywhere::chat::ChatMessage;
use runanywhere::ChatSession;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{refuse_unknown, Lifecycle, Sampling, IGNORED};
use super::{chat_logprobs, chat_token_logprob, completion_id, usage};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::{blocking, AppState};
use crate::streaming::{finish_reason, sse, steps, Frame, Step};

/// The request body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: Option<bool>,
    stream_options: Option<super::StreamOptions>,
    #[serde(flatten)]
    sampling: Sampling,
    #[serde(flatten)]
    lifecycle: Lifecycle,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Option<Content>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

const UNSUPPORTED: &[(&str, &str)] = &[
    ("tools", "tool calling is not implemented"),
    ("tool_choice", "tool calling is not implemented"),
    ("functions", "function calling is not implemented"),
    ("function_call", "function calling is not implemented"),
    ("parallel_tool_calls", "tool calling is not implemented"),
    (
        "response_format",
        "constrained output (JSON mode, schemas) is not implemented",
    ),
    ("logit_bias", "the engines take no per-token biases"),
    ("audio", "audio output is not implemented"),
    ("modalities", "only text output is implemented"),
    ("prediction", "predicted outputs are not implemented"),
    ("reasoning_effort", "no reasoning controls"),
    ("web_search_options", "no web search"),
];

/// The request's messages for the chat template.
fn messages(input: &[InMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    input
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |field: &str| format!("messages[{i}].{field}");
            for (field, value) in &m.other {
                if value.is_null() || field == "name" {
                    continue;
                }
                return Err(ApiError::unsupported_field(
                    &at(field),
                    "messages carry `role` and `content` only (no tool calls)",
                ));
            }
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::unsupported_field(
                        &at("role"),
                        &format!("role `{other}`: roles are system, developer, user, assistant"),
                    ))
                }
            };
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(t)) => text.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::unsupported_field(
                                    &at("content"),
                                    &format!("content part `{kind}`: only text parts are read"),
                                ))
                            }
                        }
                    }
                    text
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// The handler.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    refuse_unknown(&body.other, UNSUPPORTED, IGNORED)?;
    let options = body.sampling.options(state.config.max_tokens)?;
    let logprobs = body.sampling.logprobs()?;
    let messages = messages(&body.messages)?;
    if messages.is_empty() {
        return Err(ApiError::bad_request("`messages` is empty").with_param("messages"));
    }
    let stream = body.stream.unwrap_or(false);
    let include_usage = super::StreamOptions::include_usage(&body.stream_options);
    let keep_alive = body.lifecycle.keep_alive()?;
    let (target, loaded) = state.load(&body.model, body.lifecycle.tune()?).await?;
    let seed = options.seed_or_random();
    let for_render = loaded.clone();
    let prepared = blocking(move || {
        let model = for_render.model();
        let mut session = ChatSession::new(model, None, None)?;
        Ok(session.prepare_conversation(model, &messages, &options, seed)?)
    })
    .await?;
    if prepared.dropped > 0 {
        tracing::info!(
            dropped = prepared.dropped,
            "oldest messages dropped to fit the context"
        );
    }
    let engine = loaded.model().engine_id().to_string();
    let job = state.generate(loaded, prepared.request, keep_alive, logprobs)?;
    let (id, created, model) = (completion_id("chatcmpl"), AppState::unix_now(), target.name);
    let fingerprint = format!("runanywhere-{engine}");
    if !stream {
        let done = job.collect().await?;
        return Ok(Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": done.text},
                "logprobs": logprobs.map(|_| chat_logprobs(&done.scores)),
                "finish_reason": finish_reason(done.stats.stop_reason()),
            }],
            "usage": usage(&done.stats),
            "timings": super::timings(&done.stats),
        }))
        .into_response());
    }
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": fingerprint,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let first = chunk(json!({"role": "assistant", "content": ""}), None).to_string();
    let token = Frame::new(&chunk(json!({"content": Frame::SLOT}), None));
    let events = steps(job).flat_map(move |step| {
        let mut out = Vec::new();
        match step {
            Step::Token {
                piece, score: None, ..
            } => out.push(token.render(&piece)),
            Step::Token {
                piece,
                score: Some(score),
                ..
            } => {
                let mut c = chunk(json!({"content": piece}), None);
                c["choices"][0]["logprobs"] =
                    json!({"content": [chat_token_logprob(&score)], "refusal": null});
                out.push(c.to_string());
            }
            Step::Finished(stats) => {
                out.extend(super::final_chunks(
                    chunk(json!({}), Some(finish_reason(stats.stop_reason()))),
                    chunk(json!({}), None),
                    &stats,
                    include_usage,
                ));
            }
            Step::Failed(e) => out.push(e.openai_body().to_string()),
        }
        futures_util::stream::iter(out)
    });
    Ok(sse(vec![first], events))
}
