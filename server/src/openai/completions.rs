//! `POST /v1/completions`: a raw prompt (text, or token ids used as given), no chat
//! template; `echo` puts the prompt before the completion.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runanywhere::Prompt;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{refuse_unknown, Lifecycle, Sampling, IGNORED};
use super::{completion_id, completion_logprobs, usage};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::{blocking, AppState};
use crate::streaming::{finish_reason, sse, steps, Frame, Step};

/// The request body.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    model: String,
    prompt: PromptField,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    echo: Option<bool>,
    stream_options: Option<super::StreamOptions>,
    #[serde(flatten)]
    sampling: Sampling,
    #[serde(flatten)]
    lifecycle: Lifecycle,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// OpenAI's four prompt shapes; only one prompt per request is served.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

const UNSUPPORTED: &[(&str, &str)] = &[
    ("suffix", "fill-in-the-middle is not implemented"),
    ("best_of", "one candidate is generated per request"),
    ("logit_bias", "the engines take no per-token biases"),
];

fn prompt(field: PromptField) -> Result<Prompt, ApiError> {
    let one = |n: usize| {
        ApiError::bad_request(format!(
            "`prompt` has {n} prompts; this server takes one per request"
        ))
        .with_param("prompt")
    };
    Ok(match field {
        PromptField::Text(t) => Prompt::Text(t.into()),
        PromptField::Ids(ids) => Prompt::Ids(ids.into()),
        PromptField::Texts(mut t) if t.len() == 1 => Prompt::Text(t.remove(0).into()),
        PromptField::IdLists(mut l) if l.len() == 1 => Prompt::Ids(l.remove(0).into()),
        PromptField::Texts(t) => return Err(one(t.len())),
        PromptField::IdLists(l) => return Err(one(l.len())),
    })
}

/// The handler.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    refuse_unknown(&body.other, UNSUPPORTED, IGNORED)?;
    let options = body.sampling.options(state.config.max_tokens)?;
    let logprobs = body.sampling.logprobs()?;
    let prompt = prompt(body.prompt)?;
    let stream = body.stream.unwrap_or(false);
    let include_usage = super::StreamOptions::include_usage(&body.stream_options);
    let keep_alive = body.lifecycle.keep_alive()?;
    let (target, loaded) = state.load(&body.model, body.lifecycle.tune()?).await?;
    let echo = if body.echo.unwrap_or(false) {
        match &prompt {
            Prompt::Text(t) => t.to_string(),
            Prompt::Ids(ids) => {
                let (model, ids) = (loaded.clone(), ids.to_vec());
                blocking(move || Ok(model.model().detokenize(&ids)?)).await?
            }
        }
    } else {
        String::new()
    };
    let request = options.request(prompt, options.seed_or_random());
    let job = state.generate(loaded, request, keep_alive, logprobs)?;
    let (id, created, model) = (completion_id("cmpl"), AppState::unix_now(), target.name);
    if !stream {
        let done = job.collect().await?;
        return Ok(Json(json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "logprobs": logprobs.map(|_| completion_logprobs(&done.scores, echo.len())),
                "text": echo + &done.text,
                "finish_reason": finish_reason(done.stats.stop_reason()),
            }],
            "usage": usage(&done.stats),
            "timings": super::timings(&done.stats),
        }))
        .into_response());
    }
    let chunk = move |text: &str, finish: Option<&str>| {
        json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}],
        })
    };
    let first: Vec<String> = if echo.is_empty() {
        Vec::new()
    } else {
        vec![chunk(&echo, None).to_string()]
    };
    let token = Frame::new(&chunk(Frame::SLOT, None));
    let mut offset = echo.len();
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
                let mut c = chunk(&piece, None);
                c["choices"][0]["logprobs"] =
                    completion_logprobs(std::slice::from_ref(&score), offset);
                offset += score.bytes.len();
                out.push(c.to_string());
            }
            Step::Finished(stats) => {
                out.extend(super::final_chunks(
                    chunk("", Some(finish_reason(stats.stop_reason()))),
                    chunk("", None),
                    &stats,
                    include_usage,
                ));
            }
            Step::Failed(e) => out.push(e.openai_body().to_string()),
        }
        futures_util::stream::iter(out)
    });
    Ok(sse(first, events))
}
