//! The request fields OpenAI's generation routes share, checked and turned into the
//! runtime's [`GenerateOptions`]. A field this server cannot honour is a `400` naming it,
//! never silently ignored.

use runanywhere::GenerateOptions;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A string or a list of strings (`stop`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// Most stop strings a request may give.
const MAX_STOPS: usize = 16;

/// Sampling and stopping fields (OpenAI's, plus llama.cpp server's `top_k`, `min_p`,
/// `repeat_penalty` and `repeat_last_n`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<OneOrMany>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    n: Option<u32>,
    top_k: Option<u32>,
    min_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<u32>,
    logprobs: Option<Value>,
    top_logprobs: Option<u32>,
}

fn out_of_range(field: &str, range: &str) -> ApiError {
    ApiError::bad_request(format!("`{field}` must be {range}")).with_param(field)
}

impl Sampling {
    /// The options these fields ask for; runtime defaults for what is missing (as
    /// llama.cpp's server: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), and at
    /// most `cap` new tokens (also the limit when none is given).
    pub fn options(&self, cap: u32) -> Result<GenerateOptions, ApiError> {
        let mut o = GenerateOptions::default();
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::bad_request(format!(
                "`n` = {n}: this server makes one choice per request (n = 1)"
            ))
            .with_param("n"));
        }
        for (field, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| v != 0.0) {
                return Err(ApiError::unsupported_field(
                    field,
                    "the engines apply llama.cpp's multiplicative `repeat_penalty` (with \
                     `repeat_last_n`) instead; send that, or leave this at 0",
                ));
            }
        }
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(out_of_range("temperature", "between 0 and 2"));
            }
            o.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(out_of_range("top_p", "in (0, 1]"));
            }
            o.top_p = p;
        }
        if let Some(p) = self.min_p {
            if !(0.0..1.0).contains(&p) {
                return Err(out_of_range("min_p", "in [0, 1)"));
            }
            o.min_p = p;
        }
        if let Some(p) = self.repeat_penalty {
            if !(p > 0.0 && p.is_finite()) {
                return Err(out_of_range("repeat_penalty", "a positive number"));
            }
            o.repeat_penalty = p;
        }
        if let Some(k) = self.top_k {
            o.top_k = k;
        }
        if let Some(n) = self.repeat_last_n {
            o.repeat_last_n = n;
        }
        // Seeds are signed in OpenAI's schema; any 64 bits will do.
        o.seed = self.seed.map(|s| s as u64);
        let (field, max) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) => ("max_completion_tokens", Some(m)),
            (None, m) => ("max_tokens", m),
        };
        o.max_tokens = match max {
            Some(0) => return Err(out_of_range(field, "at least 1")),
            Some(m) if m > cap => {
                return Err(ApiError::bad_request(format!(
                    "`{field}` = {m} is more than this server generates per request ({cap}; \
                     `serve --max-tokens`)"
                ))
                .with_param(field))
            }
            Some(m) => m,
            None => cap,
        };
        o.stop = match &self.stop {
            None => Vec::new(),
            Some(OneOrMany::One(s)) => vec![s.clone()],
            Some(OneOrMany::Many(list)) => list.clone(),
        };
        if o.stop.len() > MAX_STOPS {
            return Err(out_of_range("stop", "at most 16 strings"));
        }
        if o.stop.iter().any(String::is_empty) {
            return Err(out_of_range("stop", "non-empty strings"));
        }
        Ok(o)
    }
}

impl Sampling {
    /// How many alternatives per token the request wants with log-probabilities
    /// (`None`: no log-probabilities): chat's `logprobs: true` with `top_logprobs`, or
    /// completions' `logprobs: N`.
    pub fn logprobs(&self) -> Result<Option<u32>, ApiError> {
        let max = runanywhere::MAX_TOP_LOGPROBS;
        let top = match (&self.logprobs, self.top_logprobs) {
            (None | Some(Value::Null) | Some(Value::Bool(false)), None) => return Ok(None),
            (None | Some(Value::Null) | Some(Value::Bool(false)), Some(_)) => {
                return Err(
                    ApiError::bad_request("`top_logprobs` needs `logprobs: true`")
                        .with_param("top_logprobs"),
                )
            }
            (Some(Value::Bool(true)), k) => k.unwrap_or(0),
            (Some(Value::Number(n)), None) => match n.as_u64() {
                Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
                None => {
                    return Err(out_of_range(
                        "logprobs",
                        "a count of alternatives or a boolean",
                    ))
                }
            },
            _ => {
                return Err(out_of_range(
                    "logprobs",
                    "a boolean (chat) or a number (completions)",
                ))
            }
        };
        if top > max {
            return Err(ApiError::bad_request(format!(
                "{top} alternatives per token were asked for; at most {max}"
            ))
            .with_param(if self.top_logprobs.is_some() {
                "top_logprobs"
            } else {
                "logprobs"
            }));
        }
        Ok(Some(top))
    }
}

/// Refuses the fields of `other` (those no struct field took) that are set: those in
/// `unsupported` with the reason given, any other as unknown. `ignored` are accepted
/// without effect (bookkeeping fields such as `user`).
pub fn refuse_unknown(
    other: &Map<String, Value>,
    unsupported: &[(&str, &str)],
    ignored: &[&str],
) -> Result<(), ApiError> {
    for (field, value) in other {
        if value.is_null() || ignored.contains(&field.as_str()) {
            continue;
        }
        if let Some((_, why)) = unsupported.iter().find(|(f, _)| f == field) {
            return Err(ApiError::unsupported_field(field, why));
        }
        return Err(ApiError::unsupported_field(
            field,
            "this server does not know the field",
        ));
    }
    Ok(())
}

/// Two fields beyond OpenAI's, as Ollama's API has them, so one client (the web app) can
/// set the model's lifetime and context over the OpenAI routes: `keep_alive` (seconds or
/// a duration such as `"5m"`; 0 unloads after the reply, negative keeps forever) and
/// `num_ctx` (the context the model is loaded with).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lifecycle {
    keep_alive: Option<Value>,
    num_ctx: Option<u32>,
}

impl Lifecycle {
    /// The keep-alive asked for, if any.
    pub fn keep_alive(&self) -> Result<Option<runanywhere::KeepAlive>, ApiError> {
        crate::ollama::keep_alive(&self.keep_alive)
    }

    /// How the model's load options change.
    pub fn tune(
        &self,
    ) -> Result<impl FnOnce(&mut runanywhere::LoadOptions) + Send + 'static, ApiError> {
        if self.num_ctx == Some(0) {
            return Err(out_of_range("num_ctx", "at least 1"));
        }
        let ctx = self.num_ctx;
        Ok(move |o: &mut runanywhere::LoadOptions| {
            if let Some(c) = ctx {
                o.context_length = c;
            }
        })
    }
}

/// Bookkeeping fields clients send that change nothing here.
pub const IGNORED: &[&str] = &["user", "store", "metadata", "service_tier"];

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(json: Value) -> Sampling {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn fields_become_options_and_bad_values_name_their_field() {
        let o = sampling(
            serde_json::json!({"temperature": 0, "max_tokens": 7, "stop": "\n", "seed": -1}),
        )
        .options(100)
        .unwrap();
        assert_eq!(
            (o.temperature, o.max_tokens, o.seed),
            (0.0, 7, Some(u64::MAX))
        );
        assert_eq!(o.stop, vec!["\n".to_string()]);
        assert_eq!(
            sampling(serde_json::json!({}))
                .options(100)
                .unwrap()
                .max_tokens,
            100
        );
        let e = sampling(serde_json::json!({"max_tokens": 101}))
            .options(100)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        let e = sampling(serde_json::json!({"n": 2}))
            .options(100)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("n"));
        let e = sampling(serde_json::json!({"presence_penalty": 0.5}))
            .options(100)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("presence_penalty"));
        assert!(
            sampling(serde_json::json!({"logprobs": false, "presence_penalty": 0}))
                .options(9)
                .is_ok()
        );
        let e = sampling(serde_json::json!({"temperature": 3}))
            .options(100)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }

    #[test]
    fn logprobs_take_chat_and_completion_shapes() {
        let lp = |v: Value| sampling(v).logprobs();
        assert_eq!(lp(serde_json::json!({})).unwrap(), None);
        assert_eq!(lp(serde_json::json!({"logprobs": true})).unwrap(), Some(0));
        assert_eq!(
            lp(serde_json::json!({"logprobs": true, "top_logprobs": 5})).unwrap(),
            Some(5)
        );
        assert_eq!(lp(serde_json::json!({"logprobs": 3})).unwrap(), Some(3));
        assert_eq!(lp(serde_json::json!({"logprobs": false})).unwrap(), None);
        let e = lp(serde_json::json!({"top_logprobs": 2})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        let e = lp(serde_json::json!({"logprobs": true, "top_logprobs": 21})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let other: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"user": "u", "tools": [1], "x": null}))
                .unwrap();
        let e = refuse_unknown(&other, &[("tools", "no tool calling")], IGNORED).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools"));
        assert!(e.message.contains("no tool calling"), "{}", e.message);
    }
}
