//! The Ollama-compatible API (`/api/*`), for Ollama's clients and the tools built on
//! them: `tags`, `show`, `generate`, `chat` (NDJSON streaming, `keep_alive`,
//! `options`), `embed`, `pull` (NDJSON progress from the store's pull), `delete`, `ps`,
//! `version`. Errors in Ollama's shape (`{"error": "..."}`). Durations are nanoseconds,
//! as Ollama reports them.

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use runanywhere::chat::ChatMessage;
use runanywhere::store::{Catalog, PullOptions, PullProgress, PullSpec};
use runanywhere::{ChatSession, GenerateOptions, GenerationStats, KeepAlive, LoadOptions, Prompt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::error::{ApiError, OllamaError};
use crate::extract::OllamaJson;
use crate::state::{blocking, AppState};
use crate::streaming::{steps, Step};

type Result<T> = std::result::Result<T, OllamaError>;

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

/// Ollama's `options`: sampling (mapped onto the runtime's) and load knobs (`num_ctx`,
/// `num_thread`, `num_batch`, `num_gpu`: a model loaded with other options is another
/// loaded model). Others are refused by name.
#[derive(Debug, Default, Deserialize)]
struct Options {
    temperature: Option<f32>,
    top_k: Option<u32>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    num_predict: Option<i64>,
    stop: Option<Vec<String>>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i64>,
    num_ctx: Option<u32>,
    num_thread: Option<u32>,
    num_batch: Option<u32>,
    num_gpu: Option<i32>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl Options {
    fn generate(&self, cap: u32) -> std::result::Result<GenerateOptions, ApiError> {
        if let Some((name, _)) = self.other.iter().find(|(_, v)| !v.is_null()) {
            return Err(ApiError::unsupported_field(
                &format!("options.{name}"),
                "supported options: temperature, top_k, top_p, min_p, seed, num_predict, stop, \
                 repeat_penalty, repeat_last_n, num_ctx, num_thread, num_batch, num_gpu",
            ));
        }
        let mut o = GenerateOptions::default();
        if let Some(t) = self.temperature {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(ApiError::bad_request("`options.temperature` must be ≥ 0")
                    .with_param("options.temperature"));
            }
            o.temperature = t;
        }
        if let Some(k) = self.top_k {
            o.top_k = k;
        }
        if let Some(p) = self.top_p {
            o.top_p = p;
        }
        if let Some(p) = self.min_p {
            o.min_p = p;
        }
        if let Some(p) = self.repeat_penalty {
            o.repeat_penalty = p;
        }
        if let Some(n) = self.repeat_last_n {
            // -1 = the whole context, as Ollama reads it.
            o.repeat_last_n = u32::try_from(n).unwrap_or(u32::MAX);
        }
        o.seed = self.seed.map(|s| s as u64);
        o.max_tokens = match self.num_predict {
            // Negative: until the end (or the context) — within the server's cap.
            None => cap,
            Some(n) if n < 0 => cap,
            Some(0) => {
                return Err(ApiError::bad_request("`options.num_predict` must not be 0")
                    .with_param("options.num_predict"))
            }
            Some(n) => {
                let n = u32::try_from(n).unwrap_or(u32::MAX);
                if n > cap {
                    return Err(ApiError::bad_request(format!(
                        "`options.num_predict` = {n} is more than this server generates per \
                         request ({cap}; `serve --max-tokens`)"
                    ))
                    .with_param("options.num_predict"));
                }
                n
            }
        };
        o.stop = self.stop.clone().unwrap_or_default();
        if o.stop.iter().any(String::is_empty) {
            return Err(ApiError::bad_request("`options.stop` has an empty string")
                .with_param("options.stop"));
        }
        Ok(o)
    }

    fn tune(&self) -> impl FnOnce(&mut LoadOptions) + Send + 'static {
        let (ctx, threads, batch, gpu) =
            (self.num_ctx, self.num_thread, self.num_batch, self.num_gpu);
        move |o: &mut LoadOptions| {
            if let Some(c) = ctx {
                o.context_length = c;
            }
            if let Some(t) = threads {
                o.threads = t;
            }
            if let Some(b) = batch {
                o.batch_size = b;
            }
            if let Some(g) = gpu {
                o.gpu_layers = g;
            }
        }
    }
}

/// Ollama's `keep_alive`: seconds as a number, or a duration string (`"5m"`, `"1h"`,
/// `"0"`; negative = forever).
pub(crate) fn keep_alive(
    value: &Option<Value>,
) -> std::result::Result<Option<KeepAlive>, ApiError> {
    let bad = || {
        ApiError::bad_request("`keep_alive` must be seconds or a duration such as \"5m\" (0 unloads, negative keeps forever)")
            .with_param("keep_alive")
    };
    Ok(match value {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(KeepAlive::from_secs(
            n.as_f64().ok_or_else(bad)?.round() as i64
        )),
        Some(Value::String(s)) => Some(KeepAlive::parse(s).ok_or_else(bad)?),
        Some(_) => return Err(bad()),
    })
}

fn refuse(fields: &[(&str, bool, &str)]) -> std::result::Result<(), ApiError> {
    match fields.iter().find(|(_, set, _)| *set) {
        Some((field, _, why)) => Err(ApiError::unsupported_field(field, why)),
        None => Ok(()),
    }
}

fn is_set(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    }
}

/// `POST /api/generate` body.
#[derive(Debug, Deserialize)]
pub struct GenerateBody {
    model: String,
    #[serde(default)]
    prompt: String,
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    #[serde(default)]
    options: Options,
    suffix: Option<Value>,
    images: Option<Value>,
    format: Option<Value>,
    template: Option<Value>,
    context: Option<Value>,
    think: Option<Value>,
}

/// `POST /api/chat` body.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    model: String,
    #[serde(default)]
    messages: Vec<OllamaMessage>,
    stream: Option<bool>,
    keep_alive: Option<Value>,
    #[serde(default)]
    options: Options,
    tools: Option<Value>,
    format: Option<Value>,
    think: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct OllamaMessage {
    role: String,
    #[serde(default)]
    content: String,
    images: Option<Value>,
    tool_calls: Option<Value>,
}

/// What a finished generation reports, in Ollama's fields.
fn final_fields(stats: &GenerationStats, started: Instant, load: Duration) -> Map<String, Value> {
    let reason = match stats.stop_reason() {
        runanywhere::StopReason::MaxTokens | runanywhere::StopReason::ContextFull => "length",
        _ => "stop",
    };
    let mut m = Map::new();
    m.insert("done".into(), json!(true));
    m.insert("done_reason".into(), json!(reason));
    m.insert(
        "total_duration".into(),
        json!(started.elapsed().as_nanos() as u64),
    );
    m.insert("load_duration".into(), json!(load.as_nanos() as u64));
    m.insert("prompt_eval_count".into(), json!(stats.prompt_ids.len()));
    m.insert(
        "prompt_eval_duration".into(),
        json!(stats.prefill_us * 1000),
    );
    m.insert("eval_count".into(), json!(stats.generated_tokens));
    m.insert("eval_duration".into(), json!(stats.decode_us * 1000));
    m
}

/// NDJSON response of `values` (also the benchmark's, in `manage`).
pub(crate) fn ndjson(values: impl futures_util::Stream<Item = Value> + Send + 'static) -> Response {
    let body = Body::from_stream(values.map(|v| {
        let mut line = v.to_string();
        line.push('\n');
        Ok::<_, Infallible>(Bytes::from(line))
    }));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// Generates for `generate` and `chat`: `wrap` makes a response object of a text piece.
#[allow(clippy::too_many_arguments)]
async fn respond(
    state: AppState,
    model_name: String,
    loaded: runanywhere::LoadedModel,
    request: runanywhere::GenerateRequest,
    keep: Option<KeepAlive>,
    stream: bool,
    started: Instant,
    load: Duration,
    wrap: fn(&str) -> Map<String, Value>,
) -> Result<Response> {
    let job = state.generate(loaded, request, keep, None)?;
    let base = move |fields: Map<String, Value>| {
        let mut object = Map::new();
        object.insert("model".into(), json!(model_name));
        object.insert("created_at".into(), json!(now_rfc3339()));
        object.extend(fields);
        Value::Object(object)
    };
    if !stream {
        let done = job.collect().await.map_err(OllamaError)?;
        let mut fields = wrap(&done.text);
        fields.extend(final_fields(&done.stats, started, load));
        return Ok(Json(base(fields)).into_response());
    }
    let lines = steps(job).map(move |step| match step {
        Step::Token { piece, .. } => {
            let mut fields = wrap(&piece);
            fields.insert("done".into(), json!(false));
            base(fields)
        }
        Step::Finished(stats) => {
            let mut fields = wrap("");
            fields.extend(final_fields(&stats, started, load));
            base(fields)
        }
        Step::Failed(e) => json!({"error": e.message}),
    });
    Ok(ndjson(lines))
}

/// A request with nothing to generate loads (or, with `keep_alive` 0, unloads) the
/// model, as `ollama run` / `ollama stop` use it.
async fn load_only(
    state: &AppState,
    name: &str,
    loaded: runanywhere::LoadedModel,
    keep: Option<KeepAlive>,
    wrap: fn(&str) -> Map<String, Value>,
) -> Response {
    let reason = if keep == Some(KeepAlive::UntilIdle) {
        let key = loaded.key().clone();
        drop(loaded);
        state.runtime.models().unload(&key);
        "unload"
    } else {
        "load"
    };
    let mut fields = wrap("");
    fields.insert("model".into(), json!(name));
    fields.insert("created_at".into(), json!(now_rfc3339()));
    fields.insert("done".into(), json!(true));
    fields.insert("done_reason".into(), json!(reason));
    Json(Value::Object(fields)).into_response()
}

fn response_field(piece: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("response".into(), json!(piece));
    m
}

fn message_field(piece: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "message".into(),
        json!({"role": "assistant", "content": piece}),
    );
    m
}

/// `POST /api/generate`: a prompt, rendered with the chat template as the user's
/// message (with `system`), or as it is with `raw`.
pub async fn generate(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<GenerateBody>,
) -> Result<Response> {
    refuse(&[
        (
            "suffix",
            is_set(&body.suffix),
            "fill-in-the-middle is not implemented",
        ),
        (
            "images",
            is_set(&body.images),
            "no engine here reads images",
        ),
        (
            "format",
            is_set(&body.format),
            "constrained output (JSON, schemas) is not implemented",
        ),
        (
            "template",
            is_set(&body.template),
            "the model's own chat template is used (or `raw`)",
        ),
        (
            "context",
            is_set(&body.context),
            "the deprecated `context` is not implemented; use /api/chat",
        ),
        ("think", is_set(&body.think), "no thinking controls"),
    ])?;
    let started = Instant::now();
    let options = body.options.generate(state.config.max_tokens)?;
    let keep = keep_alive(&body.keep_alive)?;
    let (target, loaded) = state.load(&body.model, body.options.tune()).await?;
    let load = started.elapsed();
    if body.prompt.is_empty() && body.system.is_none() {
        return Ok(load_only(&state, &target.name, loaded, keep, response_field).await);
    }
    let seed = options.seed_or_random();
    let request = if body.raw {
        options.request(Prompt::Text(body.prompt.into()), seed)
    } else {
        let mut messages: Vec<ChatMessage> = body
            .system
            .iter()
            .map(|s| ChatMessage::new("system", s.clone()))
            .collect();
        messages.push(ChatMessage::new("user", body.prompt));
        render(&loaded, messages, options, seed).await?
    };
    respond(
        state,
        target.name,
        loaded,
        request,
        keep,
        body.stream.unwrap_or(true),
        started,
        load,
        response_field,
    )
    .await
}

async fn render(
    loaded: &runanywhere::LoadedModel,
    messages: Vec<ChatMessage>,
    options: GenerateOptions,
    seed: u64,
) -> std::result::Result<runanywhere::GenerateRequest, ApiError> {
    let model = loaded.clone();
    blocking(move || {
        let m = model.model();
        let mut session = ChatSession::new(m, None, None)?;
        Ok(session
            .prepare_conversation(m, &messages, &options, seed)?
            .request)
    })
    .await
}

/// `POST /api/chat`.
pub async fn chat(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ChatBody>,
) -> Result<Response> {
    refuse(&[
        (
            "tools",
            is_set(&body.tools),
            "tool calling is not implemented",
        ),
        (
            "format",
            is_set(&body.format),
            "constrained output (JSON, schemas) is not implemented",
        ),
        ("think", is_set(&body.think), "no thinking controls"),
    ])?;
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.iter().enumerate() {
        if is_set(&m.images) {
            return Err(ApiError::unsupported_field(
                &format!("messages[{i}].images"),
                "no engine here reads images",
            )
            .into());
        }
        if is_set(&m.tool_calls) {
            return Err(ApiError::unsupported_field(
                &format!("messages[{i}].tool_calls"),
                "tool calling is not implemented",
            )
            .into());
        }
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            return Err(ApiError::unsupported_field(
                &format!("messages[{i}].role"),
                &format!("role `{}`: roles are system, user, assistant", m.role),
            )
            .into());
        }
        messages.push(ChatMessage::new(&m.role, m.content.clone()));
    }
    let started = Instant::now();
    let options = body.options.generate(state.config.max_tokens)?;
    let keep = keep_alive(&body.keep_alive)?;
    let (target, loaded) = state.load(&body.model, body.options.tune()).await?;
    let load = started.elapsed();
    if messages.is_empty() {
        return Ok(load_only(&state, &target.name, loaded, keep, message_field).await);
    }
    let seed = options.seed_or_random();
    let request = render(&loaded, messages, options, seed).await?;
    respond(
        state,
        target.name,
        loaded,
        request,
        keep,
        body.stream.unwrap_or(true),
        started,
        load,
        message_field,
    )
    .await
}

/// The body of routes that name one model (`show`, `delete`, `pull`, `embed`).
#[derive(Debug, Deserialize)]
pub struct ModelBody {
    model: Option<String>,
    name: Option<String>,
    stream: Option<bool>,
}

impl ModelBody {
    fn model(&self) -> std::result::Result<String, ApiError> {
        self.model
            .clone()
            .or_else(|| self.name.clone())
            .filter(|m| !m.trim().is_empty())
            .ok_or_else(|| ApiError::bad_request("`model` is required").with_param("model"))
    }
}

fn details(format: &str) -> Value {
    json!({
        "parent_model": "",
        "format": format,
        "family": "",
        "families": null,
        "parameter_size": "",
        "quantization_level": "",
    })
}

/// `GET /api/tags`: the store's models and those the server was started with.
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>> {
    let runtime = std::sync::Arc::clone(&state.runtime);
    let entries =
        blocking(move || Ok(runtime.store()?.list().map_err(runanywhere::Error::from)?)).await?;
    let mut models: Vec<Value> = state
        .names
        .served()
        .iter()
        .filter(|s| !entries.iter().any(|e| e.id == s.name))
        .map(|s| {
            let size = std::fs::metadata(&s.reference)
                .map(|m| m.len())
                .unwrap_or(0);
            json!({
                "name": s.name, "model": s.name, "modified_at": now_rfc3339(), "size": size,
                "digest": "", "details": details(""),
            })
        })
        .collect();
    models.extend(entries.iter().map(|e| {
        json!({
            "name": e.id, "model": e.id, "modified_at": e.added, "size": e.size,
            "digest": e.sha256.clone().unwrap_or_default(), "details": details(&e.format),
        })
    }));
    Ok(Json(json!({"models": models})))
}

/// `GET /api/ps`: the loaded models.
pub async fn ps(State(state): State<AppState>) -> Json<Value> {
    let now = SystemTime::now();
    let models: Vec<Value> = state
        .runtime
        .models()
        .loaded()
        .iter()
        .map(|m| {
            // Forever shows as a date far ahead, as Ollama shows it.
            let expires = m
                .expires_in
                .and_then(|d| now.checked_add(d))
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
            let name = state.name_of(&m.key);
            json!({
                "name": name, "model": name, "size": m.bytes, "size_vram": 0, "digest": "",
                "engine": m.key.engine,
                "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
                "details": details(""),
            })
        })
        .collect();
    Json(json!({"models": models}))
}

/// `POST /api/show`: what the model file says (loaded for its vocabulary only).
pub async fn show(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<Json<Value>> {
    let name = body.model()?;
    let (_, loaded) = state.load(&name, |o| o.vocab_only = true).await?;
    let model = loaded.model();
    let info = model.info();
    let arch = info.architecture.to_string();
    let mut capabilities = vec!["completion"];
    if model
        .capabilities()
        .contains(runanywhere::Capabilities::EMBEDDINGS)
    {
        capabilities.push("embedding");
    }
    Ok(Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": info.chat_template.clone().into_option().map(|t| t.to_string()).unwrap_or_default(),
        "details": details(""),
        "model_info": {
            "general.architecture": arch,
            "general.parameter_count": info.parameter_count,
            format!("{arch}.context_length"): info.train_context_length,
            "tokenizer.vocab_size": info.vocab_size,
        },
        "capabilities": capabilities,
        "engine": model.engine_id(),
        "modified_at": now_rfc3339(),
    })))
}

/// `DELETE /api/delete`: removes a model from the store.
pub async fn delete(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<StatusCode> {
    let id = body.model()?;
    let id = id.strip_suffix(":latest").unwrap_or(&id).to_string();
    let runtime = std::sync::Arc::clone(&state.runtime);
    blocking(move || {
        runtime
            .store()?
            .remove(&id)
            .map_err(runanywhere::Error::from)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::OK)
}

/// `POST /api/embed` body.
#[derive(Debug, Deserialize)]
pub struct EmbedBody {
    model: String,
    input: crate::openai::embeddings::Input,
    #[serde(default)]
    options: Options,
    keep_alive: Option<Value>,
    dimensions: Option<usize>,
    truncate: Option<bool>,
}

/// `POST /api/embed`: unit-length vectors, as Ollama returns them.
pub async fn embed(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<EmbedBody>,
) -> Result<Json<Value>> {
    let started = Instant::now();
    if body.truncate == Some(true) {
        tracing::debug!("truncate: inputs longer than the context are refused, not cut");
    }
    let _ = keep_alive(&body.keep_alive)?;
    let (target, loaded) = state.load(&body.model, body.options.tune()).await?;
    let load = started.elapsed();
    let inputs = body.input.prompts();
    let dimensions = body.dimensions;
    let (vectors, tokens) =
        blocking(move || crate::openai::embeddings::embed(&loaded, &inputs, dimensions)).await?;
    Ok(Json(json!({
        "model": target.name,
        "embeddings": vectors,
        "total_duration": started.elapsed().as_nanos() as u64,
        "load_duration": load.as_nanos() as u64,
        "prompt_eval_count": tokens,
    })))
}

/// Pull progress as Ollama's NDJSON status objects.
struct Progress {
    tx: mpsc::Sender<Value>,
    file: String,
    total: Option<u64>,
    done: u64,
    reported: u64,
}

impl Progress {
    fn send(&self, v: Value) {
        // A client that left is noticed by `cancelled`, after the chunk in hand.
        let _ = self.tx.blocking_send(v);
    }

    fn status(&self) -> Value {
        json!({"status": format!("pulling {}", self.file), "digest": self.file,
               "total": self.total, "completed": self.done})
    }
}

impl PullProgress for Progress {
    fn start(&mut self, file: &str, total: Option<u64>, done: u64) {
        (self.file, self.total, self.done, self.reported) = (file.to_string(), total, done, done);
        self.send(self.status());
    }
    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        // About every 1% (or 1 MiB without a total): enough for a progress bar.
        let step = self.total.map(|t| (t / 100).max(1)).unwrap_or(1 << 20);
        if self.done - self.reported >= step {
            self.reported = self.done;
            self.send(self.status());
        }
    }
    fn finish(&mut self) {
        self.send(self.status());
    }
    fn note(&mut self, message: &str) {
        self.send(json!({"status": message}));
    }
    /// The client hung up (a browser's Cancel): stop, keeping the partial file so the
    /// next pull resumes. Another client pulling the same model waits on the store's
    /// lock and then resumes it.
    fn cancelled(&self) -> bool {
        self.tx.is_closed()
    }
}

/// `POST /api/pull`: a catalog id or `hf.co/OWNER/REPO/PATH[@REV]` into the store.
pub async fn pull(
    State(state): State<AppState>,
    OllamaJson(body): OllamaJson<ModelBody>,
) -> Result<Response> {
    let reference = body.model()?;
    let stream = body.stream.unwrap_or(true);
    let (tx, mut rx) = mpsc::channel::<Value>(64);
    let runtime = std::sync::Arc::clone(&state.runtime);
    let task = tokio::task::spawn_blocking(move || -> std::result::Result<String, ApiError> {
        let catalog = Catalog::builtin().map_err(|e| ApiError::internal(e.to_string()))?;
        let spec = PullSpec::parse(&reference, &catalog).map_err(runanywhere::Error::from)?;
        let mut progress = Progress {
            tx: tx.clone(),
            file: String::new(),
            total: None,
            done: 0,
            reported: 0,
        };
        progress.send(json!({"status": "pulling manifest"}));
        let store = runtime.store()?;
        let outcome = store
            .pull(
                &spec,
                &runtime.hub(),
                &PullOptions::default(),
                runtime.engines(),
                &mut progress,
            )
            .map_err(runanywhere::Error::from)?;
        progress.send(json!({"status": "verifying sha256 digest"}));
        Ok(outcome.entry().id.clone())
    });
    if !stream {
        while rx.recv().await.is_some() {}
        let id = task
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
        return Ok(Json(json!({"status": "success", "model": id})).into_response());
    }
    let events = futures_util::stream::unfold((Some(rx), Some(task)), |(rx, task)| async move {
        if let Some(mut rx) = rx {
            if let Some(v) = rx.recv().await {
                return Some((v, (Some(rx), task)));
            }
        }
        let task = task?;
        let last = match task.await {
            Ok(Ok(id)) => json!({"status": "success", "model": id}),
            Ok(Err(e)) => json!({"error": e.message}),
            Err(e) => json!({"error": format!("the pull failed: {e}")}),
        };
        Some((last, (None, None)))
    });
    Ok(ndjson(events))
}
