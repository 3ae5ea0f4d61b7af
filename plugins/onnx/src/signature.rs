//! Reading a decoder's inputs and outputs from the graph itself.
//!
//! Exporters disagree on names, integer widths and cache layouts, so nothing is assumed:
//! the session's real inputs and outputs (names, element types, shapes) are matched
//! against the conventions in use, with `genai_config.json`'s names taking precedence.
//!
//! * token ids: `input_ids`, int32 or int64, `[batch, sequence]`;
//! * optional `attention_mask` (`[batch, past + sequence]`) and `position_ids`
//!   (`[batch, sequence]`), int32 or int64; optional `use_cache_branch` (Optimum's merged
//!   decoders), bool;
//! * the KV cache, per layer, either as separate key and value tensors
//!   (`past_key_values.N.key` / `.value` → `present.N.key` / `.value`, `[batch, heads,
//!   past, head_size]`) or combined (`past_N` → `present_N`, `[2, batch, heads, past,
//!   head_size]`, GPT-2 in ONNX Runtime GenAI);
//! * `logits`, float32, `[batch, sequence, vocab]`.
//!
//! The past-sequence axis of a cache tensor is its one dynamic axis besides the batch;
//! when the graph leaves heads or head size dynamic too, the standard layout is assumed
//! and the sizes come from the configuration. A graph that does not fit (no token-id
//! input, no logits, no cache, an input nobody knows how to feed) is refused with an
//! error naming what is missing: this engine never guesses at a graph it cannot drive.

use ort::value::TensorElementType;

use crate::error::{OnnxError, Result};
use crate::layout::ModelConfig;

/// One input or output of a graph, as the session reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Port {
    /// The name.
    pub(crate) name: String,
    /// The element type; `None` for a non-tensor value.
    pub(crate) ty: Option<TensorElementType>,
    /// The dimensions; -1 for a dynamic one.
    pub(crate) dims: Vec<i64>,
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims = self
            .dims
            .iter()
            .map(|d| {
                if *d < 0 {
                    "?".to_string()
                } else {
                    d.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        match self.ty {
            Some(ty) => write!(f, "{} ({ty}[{dims}])", self.name),
            None => write!(f, "{} (not a tensor)", self.name),
        }
    }
}

/// Width of an integer input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntType {
    /// int32.
    I32,
    /// int64.
    I64,
}

/// An integer input (ids, mask, positions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IntInput {
    /// The graph's name for it.
    pub(crate) name: String,
    /// Its element type.
    pub(crate) ty: IntType,
}

/// How each layer's cache is split into tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CacheLayout {
    /// Separate key and value tensors, `[batch, heads, past, head_size]`.
    Separate,
    /// One tensor, `[2, batch, heads, past, head_size]`.
    Combined,
}

impl CacheLayout {
    /// A short name for logs and model info.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CacheLayout::Separate => "separate key/value",
            CacheLayout::Combined => "combined key/value",
        }
    }
}

/// One cache tensor: fed from the previous step's output of the same slot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CacheSlot {
    /// Input name (`past_key_values.0.key`).
    pub(crate) input: String,
    /// Output name (`present.0.key`).
    pub(crate) output: String,
    /// Element type (float32, float16, ...), passed through untouched.
    pub(crate) ty: TensorElementType,
    /// Its shape before the first token: batch 1, past 0.
    pub(crate) empty_shape: Vec<i64>,
}

/// Everything needed to drive a decoder graph.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Signature {
    /// Token ids.
    pub(crate) input_ids: IntInput,
    /// Attention mask, when the graph takes one.
    pub(crate) attention_mask: Option<IntInput>,
    /// Position ids, when the graph takes them.
    pub(crate) position_ids: Option<IntInput>,
    /// Optimum's `use_cache_branch` flag, when present.
    pub(crate) use_cache_branch: Option<String>,
    /// The cache tensors, in layer order (key before value).
    pub(crate) cache: Vec<CacheSlot>,
    /// How the cache is split.
    pub(crate) layout: CacheLayout,
    /// Number of layers.
    pub(crate) layers: usize,
    /// The logits output.
    pub(crate) logits: String,
    /// The vocabulary size, when the logits' last axis is fixed.
    pub(crate) vocab: Option<usize>,
}

/// A naming convention for the cache.
#[derive(Debug, Clone, Copy)]
enum Template<'a> {
    Separate(&'a str, &'a str),
    Combined(&'a str),
}

impl Template<'_> {
    fn layout(self) -> CacheLayout {
        match self {
            Template::Separate(..) => CacheLayout::Separate,
            Template::Combined(_) => CacheLayout::Combined,
        }
    }

    /// The tensor names of layer `i`.
    fn names(self, i: usize) -> Vec<String> {
        let n = |t: &str| t.replace("%d", &i.to_string());
        match self {
            Template::Separate(k, v) => vec![n(k), n(v)],
            Template::Combined(c) => vec![n(c)],
        }
    }
}

const PAST_TEMPLATES: &[Template<'static>] = &[
    Template::Separate("past_key_values.%d.key", "past_key_values.%d.value"),
    Template::Separate("past_key_%d", "past_value_%d"),
    Template::Separate("past.%d.key", "past.%d.value"),
    Template::Combined("past_%d"),
    Template::Combined("past.%d"),
    Template::Combined("past_key_values.%d"),
];

const PRESENT_TEMPLATES: &[Template<'static>] = &[
    Template::Separate("present.%d.key", "present.%d.value"),
    Template::Separate("present_key_values.%d.key", "present_key_values.%d.value"),
    Template::Separate("present_key_%d", "present_value_%d"),
    Template::Combined("present_%d"),
    Template::Combined("present.%d"),
    Template::Combined("present_key_values.%d"),
];

/// The conventions to try: the configuration's names when it gives them, else all.
fn templates<'a>(
    key: Option<&'a str>,
    value: Option<&'a str>,
    combined: Option<&'a str>,
    defaults: &'a [Template<'static>],
) -> Vec<Template<'a>> {
    match (key, value, combined) {
        (Some(k), Some(v), _) => vec![Template::Separate(k, v)],
        (_, _, Some(c)) => vec![Template::Combined(c)],
        _ => defaults.to_vec(),
    }
}

fn list(ports: &[Port]) -> String {
    if ports.is_empty() {
        return "none".to_string();
    }
    ports
        .iter()
        .map(Port::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Matches the graph's `inputs` and `outputs` against the decoder conventions; see the
/// module docs.
pub(crate) fn read(inputs: &[Port], outputs: &[Port], config: &ModelConfig) -> Result<Signature> {
    let names = &config.names;
    let find = |ports: &[Port], name: &str| ports.iter().find(|p| p.name == name).cloned();
    let not_a_decoder = |what: &str| {
        OnnxError::Unsupported(format!(
            "{what}: this is not a decoder-only language model graph this engine can drive \
             (inputs: {}; outputs: {})",
            list(inputs),
            list(outputs)
        ))
    };

    let ids_name = names.input_ids.as_deref().unwrap_or("input_ids");
    let input_ids = find(inputs, ids_name)
        .ok_or_else(|| not_a_decoder(&format!("the graph has no `{ids_name}` input")))?;
    let input_ids = int_input(&input_ids)?;

    let logits_name = names.logits.as_deref().unwrap_or("logits");
    let logits = find(outputs, logits_name)
        .ok_or_else(|| not_a_decoder(&format!("the graph has no `{logits_name}` output")))?;
    if logits.ty != Some(TensorElementType::Float32) {
        return Err(OnnxError::Unsupported(format!(
            "output {logits}: only float32 logits are supported"
        )));
    }
    let vocab = logits
        .dims
        .last()
        .and_then(|&d| usize::try_from(d).ok())
        .filter(|&d| d > 0);

    let optional_int = |name: Option<&str>, default: &str| -> Result<Option<IntInput>> {
        find(inputs, name.unwrap_or(default))
            .map(|p| int_input(&p))
            .transpose()
    };
    let attention_mask = optional_int(names.attention_mask.as_deref(), "attention_mask")?;
    let position_ids = optional_int(names.position_ids.as_deref(), "position_ids")?;
    let use_cache_branch = match find(inputs, "use_cache_branch") {
        Some(p) if p.ty == Some(TensorElementType::Bool) => Some(p.name),
        Some(p) => {
            return Err(OnnxError::Unsupported(format!(
                "input {p}: expected a bool flag"
            )))
        }
        None => None,
    };

    // The cache inputs: the first convention whose layer 0 exists.
    let past_templates = templates(
        names.past_key.as_deref(),
        names.past_value.as_deref(),
        names.past.as_deref(),
        PAST_TEMPLATES,
    );
    let has_all = |ports: &[Port], wanted: &[String]| {
        wanted.iter().all(|w| ports.iter().any(|p| &p.name == w))
    };
    let layer_count = |ports: &[Port], t: Template<'_>| {
        (0..).take_while(|&i| has_all(ports, &t.names(i))).count()
    };
    let Some((past, layers)) = past_templates
        .iter()
        .map(|&t| (t, layer_count(inputs, t)))
        .find(|&(_, n)| n > 0)
    else {
        return Err(OnnxError::Unsupported(format!(
            "the graph has no KV-cache inputs (past_key_values.N.key/value or past_N): \
             export the model with its cache (Optimum: a decoder \"with past\"); inputs: {}",
            list(inputs)
        )));
    };
    let present_templates = templates(
        names.present_key.as_deref(),
        names.present_value.as_deref(),
        names.present.as_deref(),
        PRESENT_TEMPLATES,
    );
    let Some(present) = present_templates
        .iter()
        .copied()
        .filter(|t| t.layout() == past.layout())
        .find(|&t| layer_count(outputs, t) >= layers)
    else {
        return Err(OnnxError::Unsupported(format!(
            "the graph takes {layers} layers of KV cache ({}, ...) but does not return them \
             (no present.N / present_N outputs for every layer); outputs: {}",
            past.names(0).join(", "),
            list(outputs)
        )));
    };
    if config.layers.is_some_and(|n| n != layers) {
        tracing::warn!(
            graph = layers,
            config = ?config.layers,
            "the configuration's layer count differs from the graph's; using the graph's"
        );
    }

    let mut cache = Vec::with_capacity(layers * 2);
    for i in 0..layers {
        for (input, output) in past.names(i).into_iter().zip(present.names(i)) {
            let port = find(inputs, &input).ok_or_else(|| {
                OnnxError::Internal(format!(
                    "cache input {input} vanished while reading the graph"
                ))
            })?;
            cache.push(cache_slot(&port, output, past.layout(), config)?);
        }
    }

    // Every input must be one this engine feeds.
    let mut known: Vec<&str> = vec![input_ids.name.as_str()];
    known.extend(attention_mask.iter().map(|i| i.name.as_str()));
    known.extend(position_ids.iter().map(|i| i.name.as_str()));
    known.extend(use_cache_branch.iter().map(String::as_str));
    known.extend(cache.iter().map(|c| c.input.as_str()));
    let unknown: Vec<&Port> = inputs
        .iter()
        .filter(|p| !known.contains(&p.name.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(OnnxError::Unsupported(format!(
            "the graph has input(s) this engine does not know how to feed: {}",
            unknown
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }

    Ok(Signature {
        input_ids,
        attention_mask,
        position_ids,
        use_cache_branch,
        cache,
        layout: past.layout(),
        layers,
        logits: logits.name,
        vocab,
    })
}

/// An int32/int64 input of rank 2.
fn int_input(port: &Port) -> Result<IntInput> {
    let ty = match port.ty {
        Some(TensorElementType::Int32) => IntType::I32,
        Some(TensorElementType::Int64) => IntType::I64,
        _ => {
            return Err(OnnxError::Unsupported(format!(
                "input {port}: expected int32 or int64"
            )))
        }
    };
    if port.dims.len() != 2 {
        return Err(OnnxError::Unsupported(format!(
            "input {port}: expected [batch, sequence]"
        )));
    }
    Ok(IntInput {
        name: port.name.clone(),
        ty,
    })
}

/// The empty shape (batch 1, past 0) of a cache input.
fn cache_slot(
    port: &Port,
    output: String,
    layout: CacheLayout,
    config: &ModelConfig,
) -> Result<CacheSlot> {
    let ty = match port.ty {
        Some(
            ty @ (TensorElementType::Float32
            | TensorElementType::Float16
            | TensorElementType::Bfloat16),
        ) => ty,
        _ => {
            return Err(OnnxError::Unsupported(format!(
                "cache input {port}: expected a float tensor"
            )))
        }
    };
    let (rank, batch_axis) = match layout {
        CacheLayout::Separate => (4, 0),
        CacheLayout::Combined => (5, 1),
    };
    let mut dims = port.dims.clone();
    if dims.len() != rank {
        return Err(OnnxError::Unsupported(format!(
            "cache input {port}: expected {rank} dimensions ({})",
            match layout {
                CacheLayout::Separate => "[batch, heads, past, head_size]",
                CacheLayout::Combined => "[2, batch, heads, past, head_size]",
            }
        )));
    }
    if layout == CacheLayout::Combined {
        if dims[0] > 0 && dims[0] != 2 {
            return Err(OnnxError::Unsupported(format!(
                "cache input {port}: the first axis of a combined cache must be 2 (key, value)"
            )));
        }
        dims[0] = 2;
    }
    dims[batch_axis] = 1;
    let dynamic: Vec<usize> = (0..rank).filter(|&a| dims[a] < 0).collect();
    match dynamic.as_slice() {
        [] => {
            return Err(OnnxError::Unsupported(format!(
                "cache input {port}: every axis is fixed; a static-size KV cache is not \
                 supported (export with a dynamic past-sequence axis)"
            )))
        }
        [past] => dims[*past] = 0,
        _ => {
            // Standard layout: [.., heads, past, head_size].
            let past = rank - 2;
            let fill = [
                (rank - 3, config.kv_heads, "the number of key/value heads"),
                (rank - 1, config.head_size, "the head size"),
            ];
            for (axis, value, what) in fill {
                if dims[axis] < 0 {
                    let value = value.ok_or_else(|| {
                        OnnxError::Unsupported(format!(
                            "cache input {port}: {what} is dynamic in the graph and the \
                             configuration ({}) does not give it",
                            config
                                .source
                                .as_ref()
                                .map_or("none found".to_string(), |p| p.display().to_string())
                        ))
                    })?;
                    dims[axis] = i64::try_from(value).unwrap_or(i64::MAX);
                }
            }
            dims[past] = 0;
        }
    }
    Ok(CacheSlot {
        input: port.name.clone(),
        output,
        ty,
        empty_shape: dims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use TensorElementType::{Bool, Float32, Int32, Int64};

    fn port(name: &str, ty: TensorElementType, dims: &[i64]) -> Port {
        Port {
            name: name.to_string(),
            ty: Some(ty),
            dims: dims.to_vec(),
        }
    }

    /// The I/O of onnx/tiny-random-gpt2-fp32's past.onnx.
    fn gpt2() -> (Vec<Port>, Vec<Port>) {
        let mut inputs = vec![
            port("input_ids", Int32, &[-1, -1]),
            port("position_ids", Int32, &[-1, -1]),
            port("attention_mask", Int32, &[-1, -1]),
        ];
        let mut outputs = vec![port("logits", Float32, &[-1, -1, 1000])];
        for i in 0..5 {
            inputs.push(port(&format!("past_{i}"), Float32, &[2, -1, 4, -1, 8]));
            outputs.push(port(&format!("present_{i}"), Float32, &[2, -1, 4, -1, 8]));
        }
        (inputs, outputs)
    }

    #[test]
    fn genai_gpt2_combined_cache() {
        let (inputs, outputs) = gpt2();
        let s = read(&inputs, &outputs, &ModelConfig::default()).unwrap();
        assert_eq!(s.layout, CacheLayout::Combined);
        assert_eq!(s.layers, 5);
        assert_eq!(s.vocab, Some(1000));
        assert_eq!(s.input_ids.ty, IntType::I32);
        assert!(s.attention_mask.is_some() && s.position_ids.is_some());
        assert_eq!(s.cache.len(), 5);
        assert_eq!(s.cache[3].input, "past_3");
        assert_eq!(s.cache[3].output, "present_3");
        assert_eq!(s.cache[0].empty_shape, vec![2, 1, 4, 0, 8]);
    }

    #[test]
    fn optimum_separate_cache_with_dynamic_heads_uses_the_config() {
        let mut inputs = vec![
            port("input_ids", Int64, &[-1, -1]),
            port("attention_mask", Int64, &[-1, -1]),
            port("use_cache_branch", Bool, &[1]),
        ];
        let mut outputs = vec![port("logits", Float32, &[-1, -1, -1])];
        for i in 0..2 {
            for kv in ["key", "value"] {
                inputs.push(port(
                    &format!("past_key_values.{i}.{kv}"),
                    Float32,
                    &[-1, -1, -1, -1],
                ));
                outputs.push(port(
                    &format!("present.{i}.{kv}"),
                    Float32,
                    &[-1, -1, -1, -1],
                ));
            }
        }
        let err = read(&inputs, &outputs, &ModelConfig::default()).unwrap_err();
        assert!(err.to_string().contains("key/value heads"), "{err}");
        let config = ModelConfig {
            kv_heads: Some(2),
            head_size: Some(16),
            ..ModelConfig::default()
        };
        let s = read(&inputs, &outputs, &config).unwrap();
        assert_eq!(s.layout, CacheLayout::Separate);
        assert_eq!(s.layers, 2);
        assert_eq!(s.vocab, None);
        assert_eq!(s.position_ids, None);
        assert_eq!(s.use_cache_branch.as_deref(), Some("use_cache_branch"));
        let names: Vec<(&str, &str)> = s
            .cache
            .iter()
            .map(|c| (c.input.as_str(), c.output.as_str()))
            .collect();
        assert_eq!(names[1], ("past_key_values.0.value", "present.0.value"));
        assert_eq!(s.cache[0].empty_shape, vec![1, 2, 0, 16]);
    }

    #[test]
    fn graphs_that_are_not_decoders_are_refused_with_what_is_missing() {
        let config = ModelConfig::default();
        let identity = [port("x", Float32, &[1])];
        let y = [port("y", Float32, &[1])];
        let err = read(&identity, &y, &config).unwrap_err();
        assert!(matches!(err, OnnxError::Unsupported(_)));
        assert!(err.to_string().contains("no `input_ids` input"), "{err}");
        assert!(err.to_string().contains("x (f32[1])"), "{err}");

        let (inputs, mut outputs) = gpt2();
        let no_cache: Vec<Port> = inputs.iter().take(3).cloned().collect();
        let err = read(&no_cache, &outputs, &config).unwrap_err();
        assert!(err.to_string().contains("no KV-cache inputs"), "{err}");

        outputs.retain(|p| p.name != "present_4");
        let err = read(&inputs, &outputs, &config).unwrap_err();
        assert!(err.to_string().contains("does not return them"), "{err}");

        let (mut inputs, outputs) = gpt2();
        inputs.push(port("token_type_ids", Int64, &[-1, -1]));
        let err = read(&inputs, &outputs, &config).unwrap_err();
        assert!(err.to_string().contains("token_type_ids"), "{err}");

        let (mut inputs, outputs) = gpt2();
        inputs[0] = port("input_ids", Float32, &[-1, -1]);
        let err = read(&inputs, &outputs, &config).unwrap_err();
        assert!(err.to_string().contains("int32 or int64"), "{err}");
    }
}
