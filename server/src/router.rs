//! The routes, and what wraps them all: the API key, CORS, the body limit, request
//! counting, and a panic in a handler becoming a `500` (the next request is served).

use std::any::Any;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{ApiError, OllamaError};
use crate::state::AppState;
use crate::{manage, ollama, openai, ui};

/// The whole API over `state`.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/engines", get(engines))
        .route("/v1/models", get(openai::models))
        .route(
            "/v1/chat/completions",
            post(openai::chat_completions::handle),
        )
        .route("/v1/completions", post(openai::completions::handle))
        .route("/v1/embeddings", post(openai::embeddings::handle))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/generate", post(ollama::generate))
        .route("/api/chat", post(ollama::chat))
        .route("/api/embed", post(ollama::embed))
        .route("/api/pull", post(ollama::pull))
        .route("/api/delete", delete(ollama::delete))
        .route("/v1/catalog", get(manage::catalog))
        .route("/v1/store", get(manage::store))
        .route("/v1/store/verify", post(manage::verify))
        .route("/v1/unload", post(manage::unload))
        .route("/v1/bench", post(manage::run_bench))
        .route("/v1/config", get(manage::config))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::file))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(state.clone(), same_origin))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    if !state.config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = state
            .config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app.with_state(state)
}

/// Whether a path belongs to Ollama's API (its errors take Ollama's shape).
fn is_ollama(path: &str) -> bool {
    path.starts_with("/api/")
}

fn shaped(path: &str, error: ApiError) -> Response {
    if is_ollama(path) {
        OllamaError(error).into_response()
    } else {
        error.into_response()
    }
}

async fn not_found(request: Request) -> Response {
    let path = request.uri().path().to_string();
    shaped(
        &path,
        ApiError::not_found(format!("no route {} {path}", request.method())),
    )
}

/// With an API key set, every route but `/health` and the web app's files needs
/// `Authorization: Bearer KEY`.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if path == "/health" || ui::is_ui(path) || request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let path = path.to_string();
            shaped(
                &path,
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "this server needs an API key: send `Authorization: Bearer <key>`",
                ),
            )
        }
    }
}

/// Refuses what a web page elsewhere could make a browser send: a request whose
/// `Origin` is neither this server nor a `--cors-origin` (a form or `text/plain` POST
/// needs no preflight, so CORS alone would not stop it from pulling, unloading or
/// generating), and, on a loopback server, a `Host` that is not a loopback name (DNS
/// rebinding). Clients that are not browsers send no `Origin` and are unaffected.
async fn same_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(message) = foreign(&state, &request) {
        let path = request.uri().path().to_string();
        return shaped(
            &path,
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        );
    }
    next.run(request).await
}

/// Why `request` is refused by [`same_origin`], if it is.
fn foreign(state: &AppState, request: &Request) -> Option<String> {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let host = header(header::HOST);
    if state.loopback.load(std::sync::atomic::Ordering::Relaxed) && !is_loopback_host(host) {
        return Some(format!(
            "Host `{host}` refused: this server listens on loopback only; use \
             http://127.0.0.1 or http://localhost"
        ));
    }
    let origin = header(header::ORIGIN);
    if origin.is_empty() || request.method() == Method::OPTIONS {
        return None;
    }
    let own = ["http", "https"]
        .iter()
        .any(|scheme| origin == format!("{scheme}://{host}"));
    let allowed = state.config.cors_origins.iter().any(|o| o == origin);
    (!own && !allowed).then(|| {
        format!(
            "a request from the web page at {origin} was refused; start `serve` with \
             `--cors-origin {origin}` to allow that page"
        )
    })
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit, so the time taken does not tell how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counts each answered request by route and status.
async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let response = next.run(request).await;
    state.metrics.request(&route, response.status().as_u16());
    response
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown".into());
    tracing::error!("a request handler panicked: {what}");
    ApiError::internal(format!("the server failed on this request (a bug): {what}")).into_response()
}

/// `GET /health`: `ok` once the start-up models are loaded, `loading` (503) before.
async fn health(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    let loaded = state.runtime.models().loaded();
    let text = state.metrics.render(&loaded, state.jobs.in_flight());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /v1/engines`: the engines and the ledger of those that failed, as
/// `runanywhere engines --json` prints them.
async fn engines(State(state): State<AppState>) -> Result<Response, ApiError> {
    let runtime = std::sync::Arc::clone(&state.runtime);
    let listing = crate::state::blocking(move || Ok(runtime.engines().listing())).await?;
    Ok(Json(listing).into_response())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_loopback_names_and_addresses() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "127.8.9.1",
            "[::1]:80",
            "[::1]",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "localhost.evil.example",
            "[::2]:80",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
