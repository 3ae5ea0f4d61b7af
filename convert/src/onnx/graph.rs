//! The Llama decoder as an ONNX graph of standard operators only (`ai.onnx`, opset 17):
//! no `com.microsoft` contrib ops, so any ONNX runtime can run it, and ONNX Runtime's
//! optimiser is still free to fuse the patterns it recognises (RMSNorm, `MatMul` +
//! `Transpose`) at load time.
//!
//! # Interface (Hugging Face Optimum's decoder "with past")
//!
//! | name | type | shape |
//! |---|---|---|
//! | `input_ids` | int64 | `[batch_size, sequence_length]` |
//! | `attention_mask` | int64 | `[batch_size, past_sequence_length + sequence_length]` |
//! | `position_ids` | int64 | `[batch_size, sequence_length]` |
//! | `past_key_values.{i}.key` / `.value` | float | `[batch_size, kv_heads, past_sequence_length, head_dim]` |
//! | → `logits` | float | `[batch_size, sequence_length, vocab_size]` |
//! | → `present.{i}.key` / `.value` | float | `[batch_size, kv_heads, past_sequence_length + sequence_length, head_dim]` |
//!
//! # Computation
//!
//! The weights are in Hugging Face's layout ([`crate::llama`] has already undone the
//! adjacent-pair rotary permutation of GGUF and llama2.c), so rotary embeddings use the
//! rotate-half form, `x·cos + rotate_half(x)·sin`; that is the same function the source
//! computes with its own pairing. Every `MatMul` weight is stored transposed
//! (`[in, out]`), under its Hugging Face name.
//!
//! * **Rotary angles** are computed from `position_ids` (`Cast`, `Mul` by the inverse
//!   frequencies, `Cos`, `Sin`) rather than gathered from a table, so no position is out
//!   of range and the file carries no `max_positions × head_dim` tables. The inverse
//!   frequencies are `1 / theta^(2i/d)` in `f32`, as llama2.c and candle compute them.
//! * **Causal mask**: query `i` (absolute position `past + i`) sees key `j` when
//!   `j <= past + i` and `attention_mask[b, j]` is non-zero; `past` and the total length
//!   come from the shapes of `input_ids` and `attention_mask` (`Shape`, `Range`,
//!   `LessOrEqual`, `And`). Masked scores get `f32::MIN`, not `-inf`, so a row with
//!   nothing to see (a padded position) gives a uniform softmax instead of NaN.
//! * **Grouped-query attention** without copying the cache: the query heads are viewed
//!   as `[batch, kv_heads, n_rep, seq, head_dim]` (query head `h` uses key/value head
//!   `h / n_rep`, as in llama.cpp, llama2.c and Hugging Face's `repeat_kv`) and
//!   `MatMul` broadcasts the `[batch, kv_heads, 1, …]` keys and values over `n_rep`.
//! * **RMSNorm** is `x / sqrt(mean(x²) + eps) · w` (`Pow`, `ReduceMean`, `Add`, `Sqrt`,
//!   `Div`, `Mul`), the pattern ONNX Runtime fuses; the MLP is SwiGLU with
//!   `SiLU(x) = x · Sigmoid(x)`.
//! * **Tied classifier**: the logits are `MatMul` by `Transpose(embed_tokens)`, a node on
//!   an initializer that ONNX Runtime folds at load time, so the file holds the
//!   embedding once.
//!
//! Everything is `f32`: quantised GGUF tensors arrive dequantised.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;

use super::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto, BOOL, FLOAT, INT64,
};
use super::weights::WeightSink;
use crate::error::ConvertError;
use crate::llama::{HfLlama, LlamaParams};

/// The `ai.onnx` operator set the graph is written against.
pub const OPSET: i64 = 17;
/// The IR version that goes with [`OPSET`].
pub const IR_VERSION: i64 = 8;

/// Symbolic dimension names, as Optimum writes them.
const BATCH: &str = "batch_size";
const SEQ: &str = "sequence_length";
const PAST: &str = "past_sequence_length";
const TOTAL: &str = "past_sequence_length + sequence_length";

/// Appends nodes and initializers, naming every intermediate value uniquely.
struct Builder<'a> {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Constants already added, by content, so each is stored once.
    constants: HashMap<String, String>,
    /// Prefix of node and value names (`/model/layers.3/attn`).
    scope: String,
    count: usize,
    weights: &'a mut dyn WeightSink,
    source: &'a Path,
}

impl Builder<'_> {
    /// A node with the given outputs.
    fn node_to(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        self.count += 1;
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs,
            name: Some(format!("{}/{op}_{}", self.scope, self.count)),
            op_type: Some(op.to_string()),
            attribute,
            domain: None,
        });
    }

    /// A node with `n` fresh outputs, returned.
    fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        n: usize,
        attribute: Vec<AttributeProto>,
    ) -> Vec<String> {
        let outputs: Vec<String> = (0..n)
            .map(|i| format!("{}/{op}_{}_output_{i}", self.scope, self.count + 1))
            .collect();
        self.node_to(op, inputs, outputs.clone(), attribute);
        outputs
    }

    /// A node with one fresh output, returned.
    fn op(&mut self, op: &str, inputs: &[&str], attribute: Vec<AttributeProto>) -> String {
        let name = format!("{}/{op}_{}_output_0", self.scope, self.count + 1);
        self.node_to(op, inputs, vec![name.clone()], attribute);
        name
    }

    /// A constant int64 tensor (`dims` empty: a scalar).
    fn ints(&mut self, dims: &[i64], values: &[i64]) -> String {
        let key = format!("i64{dims:?}{values:?}");
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = format!("/const/i64_{}", self.constants.len());
        self.initializers
            .push(TensorProto::i64(&name, dims, values));
        self.constants.insert(key, name.clone());
        name
    }

    /// A constant float tensor (`dims` empty: a scalar).
    fn floats(&mut self, dims: &[i64], values: &[f32]) -> String {
        let bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        let key = format!("f32{dims:?}{bits:?}");
        if let Some(name) = self.constants.get(&key) {
            return name.clone();
        }
        let name = format!("/const/f32_{}", self.constants.len());
        self.initializers
            .push(TensorProto::f32(&name, dims, values));
        self.constants.insert(key, name.clone());
        name
    }

    /// The weight `name` of `model` as an initializer, transposed when `transpose`
    /// (a `[out, in]` projection becomes the `[in, out]` right operand of `MatMul`).
    fn weight(
        &mut self,
        model: &HfLlama,
        name: &str,
        transpose: bool,
    ) -> Result<String, ConvertError> {
        let t = model.tensors.get(name).ok_or_else(|| {
            ConvertError::invalid(self.source, format!("the model has no tensor {name}"))
        })?;
        let candle = |e: candle_core::Error| ConvertError::candle(self.source, e);
        let t = if transpose {
            t.t().and_then(|t| t.contiguous()).map_err(candle)?
        } else {
            t.clone()
        };
        let tensor = to_proto(name, &t).map_err(candle)?;
        let tensor = self.weights.store(tensor)?;
        self.initializers.push(tensor);
        Ok(name.to_string())
    }

    /// `x / sqrt(mean(x²) + eps) · w` over the last axis.
    fn rms_norm(&mut self, x: &str, weight: &str, eps: f32) -> String {
        let two = self.floats(&[], &[2.0]);
        let eps = self.floats(&[], &[eps]);
        let squared = self.op("Pow", &[x, &two], vec![]);
        let mean = self.op(
            "ReduceMean",
            &[&squared],
            vec![
                AttributeProto::ints("axes", &[-1]),
                AttributeProto::int("keepdims", 1),
            ],
        );
        let shifted = self.op("Add", &[&mean, &eps], vec![]);
        let root = self.op("Sqrt", &[&shifted], vec![]);
        let normed = self.op("Div", &[x, &root], vec![]);
        self.op("Mul", &[&normed, weight], vec![])
    }

    /// `x · cos + rotate_half(x) · sin`, with `rotate_half(x) = [-x₂, x₁]`.
    fn rope(&mut self, x: &str, cos: &str, sin: &str, head_dim: i64) -> String {
        let halves = self.ints(&[2], &[head_dim / 2, head_dim / 2]);
        let parts = self.node_n(
            "Split",
            &[x, &halves],
            2,
            vec![AttributeProto::int("axis", -1)],
        );
        let negated = self.op("Neg", &[&parts[1]], vec![]);
        let rotated = self.op(
            "Concat",
            &[&negated, &parts[0]],
            vec![AttributeProto::int("axis", -1)],
        );
        let a = self.op("Mul", &[x, cos], vec![]);
        let b = self.op("Mul", &[&rotated, sin], vec![]);
        self.op("Add", &[&a, &b], vec![])
    }

    /// `[batch, seq, heads·head_dim]` → `[batch, heads, seq, head_dim]`.
    fn split_heads(&mut self, x: &str, heads: i64, head_dim: i64) -> String {
        let shape = self.ints(&[4], &[0, 0, heads, head_dim]);
        let r = self.op("Reshape", &[x, &shape], vec![]);
        self.op(
            "Transpose",
            &[&r],
            vec![AttributeProto::ints("perm", &[0, 2, 1, 3])],
        )
    }
}

/// The tensor `t` (f32) as an initializer with inline little-endian data.
fn to_proto(name: &str, t: &Tensor) -> candle_core::Result<TensorProto> {
    let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
    let values: Vec<f32> = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(TensorProto::f32(name, &dims, &values))
}

/// `1 / theta^(2i/d)` for `i < d/2`, twice (the rotate-half layout pairs `i` with
/// `i + d/2`), computed in `f32` as llama2.c and candle do.
fn inverse_frequencies(params: &LlamaParams) -> Vec<f32> {
    let d = params.head_dim();
    let theta = params.rope_theta as f32;
    let half: Vec<f32> = (0..d)
        .step_by(2)
        .map(|i| 1f32 / theta.powf(i as f32 / d as f32))
        .collect();
    half.iter().chain(half.iter()).copied().collect()
}

/// Builds the decoder for `model`; weights go through `weights` (inline or external).
/// `source` names the model in errors.
pub(crate) fn build(
    model: &HfLlama,
    weights: &mut dyn WeightSink,
    source: &Path,
    doc: &str,
) -> Result<ModelProto, ConvertError> {
    let p = &model.params;
    let dim = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
    let (heads, kv_heads, head_dim) = (
        dim(p.num_attention_heads),
        dim(p.num_key_value_heads),
        dim(p.head_dim()),
    );
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 != 0 {
        return Err(ConvertError::invalid(
            source,
            format!(
                "inconsistent shape: {heads} heads of width {head_dim}, {kv_heads} key/value heads"
            ),
        ));
    }
    let n_rep = heads / kv_heads;
    let eps = p.rms_norm_eps as f32;
    let mut b = Builder {
        nodes: Vec::new(),
        initializers: Vec::new(),
        constants: HashMap::new(),
        scope: "/model".to_string(),
        count: 0,
        weights,
        source,
    };

    // Inputs.
    let sym = Dimension::symbol;
    let fixed = |v: i64| Dimension::fixed(v);
    let mut inputs = vec![
        ValueInfoProto::tensor("input_ids", INT64, vec![sym(BATCH), sym(SEQ)]),
        ValueInfoProto::tensor("attention_mask", INT64, vec![sym(BATCH), sym(TOTAL)]),
        ValueInfoProto::tensor("position_ids", INT64, vec![sym(BATCH), sym(SEQ)]),
    ];
    let mut outputs = vec![ValueInfoProto::tensor(
        "logits",
        FLOAT,
        vec![sym(BATCH), sym(SEQ), fixed(dim(p.vocab_size))],
    )];
    for l in 0..p.num_hidden_layers {
        for kind in ["key", "value"] {
            inputs.push(ValueInfoProto::tensor(
                &format!("past_key_values.{l}.{kind}"),
                FLOAT,
                vec![sym(BATCH), fixed(kv_heads), sym(PAST), fixed(head_dim)],
            ));
            outputs.push(ValueInfoProto::tensor(
                &format!("present.{l}.{kind}"),
                FLOAT,
                vec![sym(BATCH), fixed(kv_heads), sym(TOTAL), fixed(head_dim)],
            ));
        }
    }

    // The additive attention mask, [batch, 1, 1, seq, total].
    b.scope = "/model/mask".to_string();
    let one_index = b.ints(&[], &[1]);
    let ids_shape = b.op("Shape", &["input_ids"], vec![]);
    let seq = b.op(
        "Gather",
        &[&ids_shape, &one_index],
        vec![AttributeProto::int("axis", 0)],
    );
    let mask_shape = b.op("Shape", &["attention_mask"], vec![]);
    let total = b.op(
        "Gather",
        &[&mask_shape, &one_index],
        vec![AttributeProto::int("axis", 0)],
    );
    let past = b.op("Sub", &[&total, &seq], vec![]);
    let zero = b.ints(&[], &[0]);
    let step = b.ints(&[], &[1]);
    let query_pos = b.op("Range", &[&past, &total, &step], vec![]);
    let key_pos = b.op("Range", &[&zero, &total, &step], vec![]);
    let axis1 = b.ints(&[1], &[1]);
    let query_col = b.op("Unsqueeze", &[&query_pos, &axis1], vec![]);
    let causal = b.op("LessOrEqual", &[&key_pos, &query_col], vec![]);
    let keep = b.op(
        "Cast",
        &["attention_mask"],
        vec![AttributeProto::int("to", i64::from(BOOL))],
    );
    let axes123 = b.ints(&[3], &[1, 2, 3]);
    let keep = b.op("Unsqueeze", &[&keep, &axes123], vec![]);
    let allowed = b.op("And", &[&causal, &keep], vec![]);
    let open = b.floats(&[], &[0.0]);
    let closed = b.floats(&[], &[f32::MIN]);
    let mask = b.op("Where", &[&allowed, &open, &closed], vec![]);

    // Rotary cos/sin, [batch, 1, seq, head_dim].
    b.scope = "/model/rotary".to_string();
    let positions = b.op(
        "Cast",
        &["position_ids"],
        vec![AttributeProto::int("to", i64::from(FLOAT))],
    );
    let axis2 = b.ints(&[1], &[2]);
    let positions = b.op("Unsqueeze", &[&positions, &axis2], vec![]);
    let inv_freq = b.floats(&[head_dim], &inverse_frequencies(p));
    let angles = b.op("Mul", &[&positions, &inv_freq], vec![]);
    let cos = b.op("Cos", &[&angles], vec![]);
    let cos = b.op("Unsqueeze", &[&cos, &axis1], vec![]);
    let sin = b.op("Sin", &[&angles], vec![]);
    let sin = b.op("Unsqueeze", &[&sin, &axis1], vec![]);

    b.scope = "/model/embed_tokens".to_string();
    let embed = b.weight(model, "model.embed_tokens.weight", false)?;
    let mut x = b.op(
        "Gather",
        &[&embed, "input_ids"],
        vec![AttributeProto::int("axis", 0)],
    );

    let scale = b.floats(&[], &[(head_dim as f32).sqrt()]);
    for l in 0..p.num_hidden_layers {
        let w = |n: &str| format!("model.layers.{l}.{n}.weight");
        b.scope = format!("/model/layers.{l}/self_attn");
        let norm_w = b.weight(model, &w("input_layernorm"), false)?;
        let h = b.rms_norm(&x, &norm_w, eps);
        let wq = b.weight(model, &w("self_attn.q_proj"), true)?;
        let wk = b.weight(model, &w("self_attn.k_proj"), true)?;
        let wv = b.weight(model, &w("self_attn.v_proj"), true)?;
        let wo = b.weight(model, &w("self_attn.o_proj"), true)?;
        let q = b.op("MatMul", &[&h, &wq], vec![]);
        let k = b.op("MatMul", &[&h, &wk], vec![]);
        let v = b.op("MatMul", &[&h, &wv], vec![]);
        let q = b.split_heads(&q, heads, head_dim);
        let k = b.split_heads(&k, kv_heads, head_dim);
        let v = b.split_heads(&v, kv_heads, head_dim);
        let q = b.rope(&q, &cos, &sin, head_dim);
        let k = b.rope(&k, &cos, &sin, head_dim);
        let present_k = format!("present.{l}.key");
        let present_v = format!("present.{l}.value");
        b.node_to(
            "Concat",
            &[&format!("past_key_values.{l}.key"), &k],
            vec![present_k.clone()],
            vec![AttributeProto::int("axis", 2)],
        );
        b.node_to(
            "Concat",
            &[&format!("past_key_values.{l}.value"), &v],
            vec![present_v.clone()],
            vec![AttributeProto::int("axis", 2)],
        );
        // [batch, kv_heads, n_rep, seq, head_dim] against [batch, kv_heads, 1, total, head_dim].
        let grouped = b.ints(&[5], &[0, kv_heads, n_rep, -1, head_dim]);
        let q = b.op("Reshape", &[&q, &grouped], vec![]);
        let k = b.op("Unsqueeze", &[&present_k, &axis2], vec![]);
        let k = b.op(
            "Transpose",
            &[&k],
            vec![AttributeProto::ints("perm", &[0, 1, 2, 4, 3])],
        );
        let v = b.op("Unsqueeze", &[&present_v, &axis2], vec![]);
        let scores = b.op("MatMul", &[&q, &k], vec![]);
        let scores = b.op("Div", &[&scores, &scale], vec![]);
        let scores = b.op("Add", &[&scores, &mask], vec![]);
        let probs = b.op("Softmax", &[&scores], vec![AttributeProto::int("axis", -1)]);
        let context = b.op("MatMul", &[&probs, &v], vec![]);
        let by_head = b.ints(&[4], &[0, heads, -1, head_dim]);
        let context = b.op("Reshape", &[&context, &by_head], vec![]);
        let context = b.op(
            "Transpose",
            &[&context],
            vec![AttributeProto::ints("perm", &[0, 2, 1, 3])],
        );
        let flat = b.ints(&[3], &[0, 0, heads * head_dim]);
        let context = b.op("Reshape", &[&context, &flat], vec![]);
        let attn = b.op("MatMul", &[&context, &wo], vec![]);
        x = b.op("Add", &[&x, &attn], vec![]);

        b.scope = format!("/model/layers.{l}/mlp");
        let norm_w = b.weight(model, &w("post_attention_layernorm"), false)?;
        let h = b.rms_norm(&x, &norm_w, eps);
        let wg = b.weight(model, &w("mlp.gate_proj"), true)?;
        let wu = b.weight(model, &w("mlp.up_proj"), true)?;
        let wd = b.weight(model, &w("mlp.down_proj"), true)?;
        let gate = b.op("MatMul", &[&h, &wg], vec![]);
        let up = b.op("MatMul", &[&h, &wu], vec![]);
        let sigmoid = b.op("Sigmoid", &[&gate], vec![]);
        let silu = b.op("Mul", &[&gate, &sigmoid], vec![]);
        let act = b.op("Mul", &[&silu, &up], vec![]);
        let down = b.op("MatMul", &[&act, &wd], vec![]);
        x = b.op("Add", &[&x, &down], vec![]);
    }

    b.scope = "/model/norm".to_string();
    let norm_w = b.weight(model, "model.norm.weight", false)?;
    let h = b.rms_norm(&x, &norm_w, eps);
    b.scope = "/lm_head".to_string();
    let classifier = if p.tie_word_embeddings {
        b.op(
            "Transpose",
            &[&embed],
            vec![AttributeProto::ints("perm", &[1, 0])],
        )
    } else {
        b.weight(model, "lm_head.weight", true)?
    };
    b.node_to(
        "MatMul",
        &[&h, &classifier],
        vec!["logits".to_string()],
        vec![],
    );

    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        producer_name: Some("runanywhere-convert".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        doc_string: Some(doc.to_string()),
        graph: Some(GraphProto {
            node: b.nodes,
            name: Some("llama_decoder".to_string()),
            initializer: b.initializers,
            doc_string: None,
            input: inputs,
            output: outputs,
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        metadata_props: Vec::new(),
    })
}
