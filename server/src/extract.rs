//! JSON bodies read with this server's errors: a body that is not JSON, not the route's
//! shape or too large gets the API's own error shape, not axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, OllamaError};

/// A JSON body; rejections in OpenAI's error shape. The content type is not checked
/// (`curl -d` sends form data's), only the body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(ApiError::from_body_rejection)?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::from_json(&e))
    }
}

/// A JSON body; rejections in Ollama's error shape. An empty body is `{}` (Ollama's
/// clients send none for some calls).
#[derive(Debug)]
pub struct OllamaJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OllamaJson<T> {
    type Rejection = OllamaError;

    async fn from_request(req: Request, state: &S) -> Result<Self, OllamaError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(ApiError::from_body_rejection)?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes)
            .map(OllamaJson)
            .map_err(|e| OllamaError(ApiError::from_json(&e)))
    }
}
