//! The web app: plain ES modules, a stylesheet and one HTML page under `server/ui/`,
//! compiled into the binary (no build step, no CDN, works offline) and served at `/` and
//! `/ui/…`. The page talks only to the public API, like any other client.
//!
//! Every asset goes out with a strict Content-Security-Policy (scripts and styles from
//! this server only, no inline script, no plugins, no framing), so even a bug in the
//! page's rendering of model output could not run a script the model wrote.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The files, by name under `/ui/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../ui/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    ("app.js", JS, include_str!("../ui/app.js")),
    ("api.js", JS, include_str!("../ui/api.js")),
    ("markdown.js", JS, include_str!("../ui/markdown.js")),
    ("dom.js", JS, include_str!("../ui/dom.js")),
    ("chat.js", JS, include_str!("../ui/chat.js")),
    ("models.js", JS, include_str!("../ui/models.js")),
    ("engines.js", JS, include_str!("../ui/engines.js")),
    ("bench.js", JS, include_str!("../ui/bench.js")),
    ("settings.js", JS, include_str!("../ui/settings.js")),
    ("icon.svg", "image/svg+xml", include_str!("../ui/icon.svg")),
];
const JS: &str = "text/javascript; charset=utf-8";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is the web app's (served without the API key: the page asks for it).
pub fn is_ui(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

fn asset(name: &str) -> Response {
    let Some((_, kind, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::not_found(format!("the web app has no file `{name}`")).into_response();
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                HeaderName::from_static("referrer-policy"),
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        *body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /ui/{file}`.
pub async fn file(Path(name): Path<String>) -> Response {
    asset(&name)
}
