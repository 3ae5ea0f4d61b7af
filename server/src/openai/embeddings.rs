//! `POST /v1/embeddings`: one vector per input (text or token ids), the model's last
//! hidden states mean-pooled and scaled to unit length; `encoding_format` `float` or
//! `base64` (what the `openai` client asks for by default), `dimensions` (truncated and
//! re-normalized, as OpenAI does for its v3 models).

use axum::extract::State;
use axum::Json;
use runanywhere::{Pooling, Prompt};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::request::{refuse_unknown, IGNORED};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::{blocking, AppState};

/// The request body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    model: String,
    input: Input,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// OpenAI's four input shapes.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One prompt as token ids.
    Ids(Vec<u32>),
    /// Several prompts as token ids.
    IdLists(Vec<Vec<u32>>),
}

impl Input {
    /// The inputs as prompts.
    pub fn prompts(self) -> Vec<Prompt> {
        match self {
            Input::Text(t) => vec![Prompt::Text(t.into())],
            Input::Texts(ts) => ts.into_iter().map(|t| Prompt::Text(t.into())).collect(),
            Input::Ids(ids) => vec![Prompt::Ids(ids.into())],
            Input::IdLists(l) => l.into_iter().map(|ids| Prompt::Ids(ids.into())).collect(),
        }
    }
}

/// Most inputs one request may embed.
const MAX_INPUTS: usize = 2048;

/// Embeds `inputs` on `model` (blocking): the vectors and the prompt tokens counted.
pub fn embed(
    model: &runanywhere::LoadedModel,
    inputs: &[Prompt],
    dimensions: Option<usize>,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(
            ApiError::bad_request(format!("`input` must hold 1 to {MAX_INPUTS} inputs"))
                .with_param("input"),
        );
    }
    let m = model.model();
    let mut tokens = 0;
    for input in inputs {
        tokens += match input {
            Prompt::Text(t) => m.tokenize(t.as_str(), true, false)?.len(),
            Prompt::Ids(ids) => ids.len(),
        };
    }
    let mut vectors = m.embed(inputs, Pooling::Default, true)?;
    if let Some(d) = dimensions {
        let dims = vectors.first().map_or(0, Vec::len);
        if d == 0 || d > dims {
            return Err(ApiError::bad_request(format!(
                "`dimensions` must be between 1 and the model's {dims}"
            ))
            .with_param("dimensions"));
        }
        for v in &mut vectors {
            v.truncate(d);
            let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
            if norm > 0.0 {
                v.iter_mut()
                    .for_each(|x| *x = (f64::from(*x) / norm) as f32);
            }
        }
    }
    Ok((vectors, tokens))
}

/// Standard base64 (with padding) of the vector's little-endian `f32` bytes.
fn base64(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The handler.
pub async fn handle(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EmbeddingsRequest>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&body.other, &[], IGNORED)?;
    let as_base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`encoding_format` `{other}`: float or base64"
            ))
            .with_param("encoding_format"))
        }
    };
    let (target, loaded) = state.load(&body.model, |_| {}).await?;
    let inputs = body.input.prompts();
    let dimensions = body.dimensions;
    let (vectors, tokens) = blocking(move || embed(&loaded, &inputs, dimensions)).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if as_base64 {
                json!(base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": target.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        // 1.0f32 = 00 00 80 3f; two floats = 8 bytes → 12 chars with one '='.
        assert_eq!(base64(&[1.0]), "AACAPw==");
        assert_eq!(base64(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(base64(&[]), "");
    }
}
