//! RunAnywhere's own routes beyond the OpenAI and Ollama APIs, for managing the machine
//! from a client (the web app is the first): the catalog with the engines that can run
//! each model, the store with a re-check of its files, unloading, the cross-engine
//! benchmark, and the server's defaults.
//!
//! * `GET /v1/catalog` — the built-in catalog; each entry with `size`, the `engines`
//!   here that read its format, and whether it is `installed`.
//! * `GET /v1/store` — the store's entries (source, format, size, files, engines).
//! * `POST /v1/store/verify {"model"}` — the format check and every file's size and
//!   SHA-256 against the store's record.
//! * `POST /v1/unload {"model", "engine"?}` — unloads every loaded copy of the model
//!   (whatever its options), without loading anything first.
//! * `POST /v1/bench {"model", "engines"?, "prompt"?, "max_tokens"?, "runs"?}` — NDJSON:
//!   `{"status":"loading","engine"}`, then a `result` (the figures of `runanywhere
//!   bench --json`) or an `error` per engine, then `done`. A client that hangs up stops
//!   it within a token.
//! * `GET /v1/config` — the defaults a client shows: sampling, token cap, context,
//!   keep-alive, and the server's version.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use futures_util::StreamExt;
use runanywhere::bench::bench;
use runanywhere::store::Catalog;
use runanywhere::{CancelToken, GenerateOptions, KeepAlive, Turn};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::{blocking, AppState};

/// Most engines one benchmark request may name, and most runs per engine.
const MAX_BENCH_ENGINES: usize = 16;
const MAX_BENCH_RUNS: u32 = 20;

/// `GET /v1/catalog`.
pub async fn catalog(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let runtime = Arc::clone(&state.runtime);
    blocking(move || {
        let catalog = Catalog::builtin().map_err(|e| ApiError::internal(e.to_string()))?;
        let installed: Vec<String> = runtime
            .store()?
            .list()
            .map_err(runanywhere::Error::from)?
            .into_iter()
            .map(|e| e.id)
            .collect();
        let listing = runtime.engines().listing();
        let entries: Vec<Value> = catalog
            .models()
            .iter()
            .map(|m| {
                let engines: Vec<&str> = listing
                    .iter()
                    .filter(|e| e.status == "ok" && e.formats.contains(&m.format))
                    .map(|e| e.id.as_str())
                    .collect();
                let mut v = json!(m);
                v["size"] = json!(m.size());
                v["engines"] = json!(engines);
                v["installed"] = json!(installed.contains(&m.id));
                v
            })
            .collect();
        Ok(Json(json!({"models": entries})))
    })
    .await
}

/// `GET /v1/store`.
pub async fn store(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let runtime = Arc::clone(&state.runtime);
    blocking(move || {
        let entries = runtime.store()?.list().map_err(runanywhere::Error::from)?;
        Ok(Json(json!({"models": entries})))
    })
    .await
}

/// A body naming a model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    model: String,
    engine: Option<String>,
}

/// `POST /v1/store/verify`.
pub async fn verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ModelBody>,
) -> Result<Json<Value>, ApiError> {
    let runtime = Arc::clone(&state.runtime);
    blocking(move || {
        let store = runtime.store()?;
        let entry = store
            .get(&body.model)
            .map_err(runanywhere::Error::from)?
            .ok_or_else(|| {
                ApiError::not_found(format!("no model `{}` in the store", body.model))
                    .with_param("model")
            })?;
        let format = runanywhere_formats::verify_path(&store.model_path(&entry));
        let files = store
            .check_files(&entry.id)
            .map_err(runanywhere::Error::from)?;
        let ok = format.is_ok() && files.iter().all(|f| f.ok());
        Ok(Json(json!({
            "model": entry.id,
            "ok": ok,
            "format": format,
            "files": files,
        })))
    })
    .await
}

/// `POST /v1/unload`.
pub async fn unload(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ModelBody>,
) -> Result<Json<Value>, ApiError> {
    let manager = state.runtime.models().clone();
    let keys: Vec<_> = manager
        .loaded()
        .into_iter()
        .map(|m| m.key)
        .filter(|k| {
            state.name_of(k) == body.model && body.engine.as_deref().is_none_or(|e| e == k.engine)
        })
        .collect();
    if keys.is_empty() {
        return Err(
            ApiError::not_found(format!("`{}` is not loaded", body.model)).with_param("model"),
        );
    }
    let busy = keys.len();
    let unloaded = blocking(move || Ok(keys.iter().filter(|k| manager.unload(k)).count())).await?;
    if unloaded == 0 {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "model_busy",
            format!(
                "`{}` is generating ({busy} loaded cop{}); it unloads when idle, or try again",
                body.model,
                if busy == 1 { "y" } else { "ies" }
            ),
        )
        .with_param("model"));
    }
    Ok(Json(json!({"model": body.model, "unloaded": unloaded})))
}

/// Keep-alive as Ollama's seconds: 0 = until idle, -1 = forever.
fn keep_alive_seconds(k: KeepAlive) -> f64 {
    match k {
        KeepAlive::For(d) => d.as_secs_f64(),
        KeepAlive::UntilIdle => 0.0,
        KeepAlive::Forever => -1.0,
    }
}

/// `GET /v1/config`.
pub async fn config(State(state): State<AppState>) -> Json<Value> {
    let d = GenerateOptions::default();
    let load = &state.config.load;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "models": state.names.served().iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "max_tokens": state.config.max_tokens,
        "context_length": load.context_length,
        "keep_alive": keep_alive_seconds(state.runtime.models().config().keep_alive),
        "parallel": state.config.parallel,
        "defaults": {
            "temperature": d.temperature,
            "top_k": d.top_k,
            "top_p": d.top_p,
            "min_p": d.min_p,
            "repeat_penalty": d.repeat_penalty,
            "max_tokens": state.config.max_tokens.min(d.max_tokens),
            "seed": null,
        },
    }))
}

/// Cancels its token when dropped: held by a response body, it cancels the work behind
/// the response when the client goes (or the response ends).
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// `POST /v1/bench` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchBody {
    model: String,
    #[serde(default)]
    engines: Vec<String>,
    prompt: Option<String>,
    max_tokens: Option<u32>,
    runs: Option<u32>,
}

/// `POST /v1/bench`.
pub async fn run_bench(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<BenchBody>,
) -> Result<Response, ApiError> {
    if body.engines.len() > MAX_BENCH_ENGINES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_BENCH_ENGINES} engines per benchmark"
        ))
        .with_param("engines"));
    }
    let runs = body.runs.unwrap_or(3);
    if !(1..=MAX_BENCH_RUNS).contains(&runs) {
        return Err(ApiError::bad_request(format!(
            "`runs` must be between 1 and {MAX_BENCH_RUNS}"
        ))
        .with_param("runs"));
    }
    let max_tokens = body.max_tokens.unwrap_or(64);
    if max_tokens == 0 || max_tokens > state.config.max_tokens {
        return Err(ApiError::bad_request(format!(
            "`max_tokens` must be between 1 and {} (`serve --max-tokens`)",
            state.config.max_tokens
        ))
        .with_param("max_tokens"));
    }
    let prompt = body
        .prompt
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "Once upon a time".to_string());
    let for_resolve = state.clone();
    let model = body.model.clone();
    let (target, engines) = blocking(move || {
        let target = for_resolve.names.resolve(&for_resolve.runtime, &model)?;
        let engines = if !body.engines.is_empty() {
            body.engines
        } else if let Some(e) = target.engine.clone() {
            vec![e]
        } else {
            let format = runanywhere::format::detect(&target.resolved.path).map_err(|e| {
                ApiError::bad_request(format!("{}: {e}", target.resolved.path.display()))
                    .with_param("model")
            })?;
            for_resolve
                .runtime
                .engines()
                .engines_for(format)
                .iter()
                .map(|e| e.id().to_string())
                .collect()
        };
        Ok((target, engines))
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Value>(16);
    // The client leaving (the response body dropped) cancels the run in progress.
    let cancel = CancelToken::new();
    let turn = Turn {
        cancel: Some(cancel.clone()),
        ..Turn::default()
    };
    let guard = CancelOnDrop(cancel);
    tokio::task::spawn_blocking(move || {
        for engine in engines {
            if turn.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                tracing::info!("benchmark stopped: its client left");
                return;
            }
            let _ = tx.blocking_send(json!({"status": "loading", "engine": engine}));
            let outcome = state
                .load_target(&target, |o| o.engine = Some(engine.clone()))
                .and_then(|model| Ok(bench(&model, &prompt, max_tokens, runs, &turn)?));
            let event = match outcome {
                Ok(result) => json!({"status": "result", "result": result}),
                Err(e) => json!({"status": "error", "engine": engine, "error": e.message}),
            };
            let _ = tx.blocking_send(event);
        }
        let _ = tx.blocking_send(json!({"status": "done", "model": target.name}));
    });
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |v| {
        let _held = &guard;
        v
    });
    Ok(crate::ollama::ndjson(events))
}
