//! Errors as each API shapes them: OpenAI's `{"error": {"message", "type", "param",
//! "code"}}` and Ollama's `{"error": "message"}`, with the HTTP status the runtime's
//! [`ErrorKind`] maps to. Every handler returns [`ApiError`] (OpenAI shape) or
//! [`OllamaError`]; nothing a request does reaches the client as a bare string.

use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use runanywhere::ErrorKind;
use serde_json::json;

/// A failed request: status, message and the fields OpenAI clients read.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and, where there is one, the fix.
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code: the runtime's error kind name (`not_found`, ...).
    pub code: &'static str,
    /// Seconds a client should wait before retrying (503s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code,
            retry_after: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 400 for a field this server does not support, naming it.
    pub fn unsupported_field(field: &str, why: &str) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported",
            format!("`{field}` is not supported: {why}"),
        )
        .with_param(field)
    }

    /// 404: no such model (or route).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500: a bug or an unexpected failure.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    /// The body's JSON could not be read (400), or was too large (413).
    pub fn from_body_rejection(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                status,
                "too_large",
                "the request body is larger than the server accepts (see `serve --max-body`)",
            );
        }
        ApiError::new(status, "invalid_request", rejection.body_text())
    }

    /// The body is not the JSON this route takes.
    pub fn from_json(error: &serde_json::Error) -> Self {
        ApiError::bad_request(format!(
            "the request body is not valid JSON for this route: {error}"
        ))
    }

    /// OpenAI's `type` for this status.
    fn openai_type(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 | 503 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The OpenAI-shaped JSON body.
    pub fn openai_body(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message,
            "type": self.openai_type(),
            "param": self.param,
            "code": self.code,
        }})
    }

    fn respond(&self, body: serde_json::Value) -> Response {
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<runanywhere::Error> for ApiError {
    fn from(error: runanywhere::Error) -> Self {
        let kind = error.kind();
        let status = status_of(kind);
        let mut api = ApiError::new(status, kind.name(), error.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            api.retry_after = Some(1);
        }
        if status.is_server_error() {
            tracing::warn!(kind = kind.name(), "request failed: {error}");
        }
        api
    }
}

/// The HTTP status of a runtime error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::ContextOverflow | ErrorKind::Unsupported => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidModel | ErrorKind::UnsupportedFormat => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::InsufficientMemory | ErrorKind::EngineUnavailable | ErrorKind::Timeout => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        // nginx's "client closed request": only logs see it.
        ErrorKind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unauthorized => StatusCode::FORBIDDEN,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Network => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(self.openai_body())
    }
}

/// An [`ApiError`] in Ollama's shape, for the `/api/*` routes.
#[derive(Debug, Clone, PartialEq)]
pub struct OllamaError(pub ApiError);

impl<E: Into<ApiError>> From<E> for OllamaError {
    fn from(error: E) -> Self {
        OllamaError(error.into())
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        self.0.respond(json!({"error": self.0.message}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_kinds_map_to_the_statuses_clients_expect() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(ErrorKind::ContextOverflow),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status_of(ErrorKind::Cancelled).as_u16(), 499);
        let e = ApiError::from(runanywhere::Error::InvalidRequest("no".into()));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.openai_body()["error"]["type"], "invalid_request_error");
        assert_eq!(e.openai_body()["error"]["code"], "invalid_request");
    }
}
