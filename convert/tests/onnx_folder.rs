//! `write_onnx_folder` on stories260K: the folder's files and config, the graph's
//! interface (Optimum's names and shapes, standard operators only), the weights as
//! written, external data, and the refusals (other architectures, vocabulary-only files,
//! an existing folder) that leave nothing behind.
//!
//! That ONNX Runtime runs the result and reproduces the greedy references is
//! `tests/integration` (conformance and onnx), which load the real plugin.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use runanywhere_convert::onnx::proto::{DimensionValue, ModelProto, TensorProto};
use runanywhere_convert::{write_onnx_folder, ConvertError, ConvertOptions};
use runanywhere_tests::data_dir;

fn stories(ext: &str) -> PathBuf {
    data_dir().join(format!("tinystories/stories260K.{ext}"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn model(dir: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(dir.join("model.onnx")).unwrap().as_slice()).unwrap()
}

/// A value's dims as text: numbers, or the symbol.
fn dims(v: &runanywhere_convert::onnx::proto::ValueInfoProto) -> Vec<String> {
    let shape = v
        .r#type
        .as_ref()
        .unwrap()
        .tensor_type
        .as_ref()
        .unwrap()
        .shape
        .as_ref()
        .unwrap();
    shape
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            DimensionValue::DimValue(n) => n.to_string(),
            DimensionValue::DimParam(s) => s.clone(),
        })
        .collect()
}

fn floats(t: &TensorProto) -> Vec<f32> {
    t.raw_data
        .as_ref()
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Operators of the default `ai.onnx` domain the graph may use.
const STANDARD_OPS: &[&str] = &[
    "Add",
    "And",
    "Cast",
    "Concat",
    "Cos",
    "Div",
    "Gather",
    "LessOrEqual",
    "MatMul",
    "Mul",
    "Neg",
    "Pow",
    "Range",
    "ReduceMean",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Sin",
    "Softmax",
    "Split",
    "Sqrt",
    "Sub",
    "Transpose",
    "Unsqueeze",
    "Where",
];

#[test]
fn folders_hold_an_optimum_decoder_with_its_config_and_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    for (ext, tied) in [("gguf", false), ("bin", true)] {
        let out = tmp.path().join(ext);
        let written = write_onnx_folder(&stories(ext), &out, &ConvertOptions::default()).unwrap();
        let mut files = written.files.clone();
        files.sort();
        assert_eq!(
            files,
            [
                "config.json",
                "generation_config.json",
                "model.onnx",
                "tokenizer.json",
                "tokenizer_config.json"
            ]
        );

        let c = json(&out.join("config.json"));
        for (key, value) in [
            ("hidden_size", 64),
            ("intermediate_size", 172),
            ("num_hidden_layers", 5),
            ("num_attention_heads", 8),
            ("num_key_value_heads", 4),
            ("vocab_size", 512),
            // The GGUF says 128, the checkpoint 512: both get at least MIN_CONTEXT.
            ("max_position_embeddings", 512),
            ("bos_token_id", 1),
            ("eos_token_id", 2),
        ] {
            assert_eq!(c[key], value, "{ext} {key}");
        }
        assert_eq!(c["model_type"], "llama");
        assert_eq!(c["tie_word_embeddings"], tied, "{ext}");
        assert!((c["rms_norm_eps"].as_f64().unwrap() - 1e-5).abs() < 1e-9);
        assert_eq!(c["rope_theta"], 10000.0);
        assert_eq!(written.params.max_position_embeddings, 512);
        let tc = json(&out.join("tokenizer_config.json"));
        assert_eq!(tc["bos_token"], "<s>");
        assert_eq!(tc["model_max_length"], 512);
        let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
        let ids = tok.encode("Once upon a time", true).unwrap();
        assert_eq!(ids.get_ids(), [1, 403, 407, 261, 378]);

        let m = model(&out);
        assert_eq!(m.ir_version, Some(8));
        assert_eq!(m.opset_import.len(), 1);
        assert_eq!(m.opset_import[0].domain.as_deref(), Some(""));
        assert_eq!(m.opset_import[0].version, Some(17));
        let g = m.graph.unwrap();
        for node in &g.node {
            let op = node.op_type.as_deref().unwrap();
            assert!(node.domain.is_none(), "{op} in another domain");
            assert!(STANDARD_OPS.contains(&op), "unexpected operator {op}");
        }
        let mut names = vec!["input_ids", "attention_mask", "position_ids"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        let mut outputs = vec!["logits".to_string()];
        for l in 0..5 {
            for kind in ["key", "value"] {
                names.push(format!("past_key_values.{l}.{kind}"));
                outputs.push(format!("present.{l}.{kind}"));
            }
        }
        let input_names: Vec<String> = g.input.iter().map(|v| v.name.clone().unwrap()).collect();
        let output_names: Vec<String> = g.output.iter().map(|v| v.name.clone().unwrap()).collect();
        assert_eq!(input_names, names);
        assert_eq!(output_names, outputs);
        let elem = |v: &runanywhere_convert::onnx::proto::ValueInfoProto| {
            v.r#type
                .as_ref()
                .unwrap()
                .tensor_type
                .as_ref()
                .unwrap()
                .elem_type
        };
        assert_eq!(elem(&g.input[0]), Some(7), "int64 input_ids");
        assert_eq!(elem(&g.input[3]), Some(1), "float cache");
        assert_eq!(dims(&g.input[0]), ["batch_size", "sequence_length"]);
        assert_eq!(
            dims(&g.input[1]),
            ["batch_size", "past_sequence_length + sequence_length"]
        );
        assert_eq!(
            dims(&g.input[3]),
            ["batch_size", "4", "past_sequence_length", "8"]
        );
        assert_eq!(dims(&g.output[0]), ["batch_size", "sequence_length", "512"]);
        assert_eq!(
            dims(&g.output[1]),
            [
                "batch_size",
                "4",
                "past_sequence_length + sequence_length",
                "8"
            ]
        );

        // Weights: MatMul operands transposed to [in, out], in Hugging Face's layout.
        let init: BTreeMap<String, &TensorProto> = g
            .initializer
            .iter()
            .map(|t| (t.name.clone().unwrap(), t))
            .collect();
        let hf = if ext == "gguf" {
            let gguf = runanywhere_convert::gguf::GgufFile::open(&stories(ext)).unwrap();
            runanywhere_convert::llama::from_gguf(&gguf).unwrap()
        } else {
            let c = runanywhere_convert::llama2c::Checkpoint::read(&stories(ext)).unwrap();
            runanywhere_convert::llama::from_llama2c(&stories(ext), c).unwrap()
        };
        for (name, transposed) in [
            ("model.embed_tokens.weight", false),
            ("model.layers.3.self_attn.k_proj.weight", true),
            ("model.layers.0.mlp.down_proj.weight", true),
            ("model.norm.weight", false),
        ] {
            let t = &hf.tensors[name];
            let t = if transposed {
                t.t().unwrap()
            } else {
                t.clone()
            };
            let expected: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
            assert_eq!(init[name].dims, dims, "{ext} {name}");
            assert_eq!(floats(init[name]), expected, "{ext} {name}");
        }
        // A separate classifier is a weight; a tied one is the embedding, transposed by
        // a node (so the file holds it once).
        assert_eq!(init.contains_key("lm_head.weight"), !tied, "{ext}");
        let transposes_embedding = g.node.iter().any(|n| {
            n.op_type.as_deref() == Some("Transpose")
                && n.input == ["model.embed_tokens.weight".to_string()]
        });
        assert_eq!(transposes_embedding, tied, "{ext}");
        assert!(runanywhere_formats_ok(&out));
    }
}

fn runanywhere_formats_ok(dir: &Path) -> bool {
    let v = runanywhere_formats::verify_path(dir);
    assert!(v.is_ok(), "{:?}", v.problem);
    v.format == Some(runanywhere_formats::ModelFormat::Onnx)
}

#[test]
fn context_length_and_external_data_are_options() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ext");
    let options = ConvertOptions {
        context_length: Some(300),
        external_data: true,
        ..ConvertOptions::default()
    };
    let written = write_onnx_folder(&stories("bin"), &out, &options).unwrap();
    assert!(written.files.contains(&"model.onnx_data".to_string()));
    assert_eq!(
        json(&out.join("config.json"))["max_position_embeddings"],
        300
    );
    assert_eq!(
        json(&out.join("tokenizer_config.json"))["model_max_length"],
        300
    );
    // The graph file is small; every large weight points into model.onnx_data at a
    // 4 KiB-aligned offset, and the whole folder verifies.
    assert!(std::fs::metadata(out.join("model.onnx")).unwrap().len() < 64 * 1024);
    let data_len = std::fs::metadata(out.join("model.onnx_data"))
        .unwrap()
        .len();
    let g = model(&out).graph.unwrap();
    let mut external = 0;
    for t in &g.initializer {
        if t.data_location == Some(1) {
            external += 1;
            let entry = |k: &str| -> u64 {
                t.external_data
                    .iter()
                    .find(|e| e.key.as_deref() == Some(k))
                    .and_then(|e| e.value.as_ref())
                    .unwrap()
                    .parse()
                    .unwrap()
            };
            assert!(t.raw_data.is_none());
            assert_eq!(entry("offset") % 4096, 0);
            assert!(entry("offset") + entry("length") <= data_len);
            assert_eq!(entry("length"), t.dims.iter().product::<i64>() as u64 * 4);
        }
    }
    // The embedding and 7 matrices per layer; the norms (256 B each) stay inline.
    assert_eq!(external, 1 + 5 * 7);
    assert!(runanywhere_formats_ok(&out));
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A GGUF file of another architecture (qwen2), well-formed, generated here.
fn qwen2_gguf() -> Vec<u8> {
    use runanywhere_formats::gguf::testing::{gguf, TensorSpec, Value};
    gguf(
        3,
        &[
            ("general.architecture", Value::Str("qwen2")),
            ("qwen2.block_count", Value::U32(1)),
        ],
        &[TensorSpec {
            name: "token_embd.weight",
            dims: &[8, 4],
            ty: 0,
            offset: 0,
        }],
        8 * 4 * 4,
    )
}

#[test]
fn refusals_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let qwen = tmp.path().join("qwen2.gguf");
    std::fs::write(&qwen, qwen2_gguf()).unwrap();
    let truncated = tmp.path().join("truncated.gguf");
    let bytes = std::fs::read(stories("gguf")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let before = listing(tmp.path());

    type IsKind = fn(&ConvertError) -> bool;
    let cases: [(PathBuf, IsKind, &str); 4] = [
        (qwen, ConvertError::is_unsupported, "\"qwen2\""),
        (
            data_dir().join("vocab/ggml-vocab-gpt-2.gguf"),
            ConvertError::is_unsupported,
            "\"gpt2\"",
        ),
        // Architecture llama, but a vocabulary only.
        (
            data_dir().join("vocab/ggml-vocab-llama-spm.gguf"),
            |e| matches!(e, ConvertError::Invalid { .. }),
            "vocabulary-only",
        ),
        (
            truncated,
            |e| matches!(e, ConvertError::Invalid { .. }),
            "truncated.gguf",
        ),
    ];
    for (source, kind, needle) in cases {
        let err = write_onnx_folder(&source, &out, &ConvertOptions::default()).unwrap_err();
        assert!(kind(&err), "{}: {err}", source.display());
        assert!(err.to_string().contains(needle), "{err}");
        assert!(!out.exists());
        assert_eq!(listing(tmp.path()), before, "nothing left behind");
    }
}

#[test]
fn an_existing_folder_is_replaced_only_with_force_and_never_with_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let err = write_onnx_folder(&stories("gguf"), &out, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    assert_eq!(listing(&out), ["keep.txt"]);

    let force = ConvertOptions {
        force: true,
        ..ConvertOptions::default()
    };
    // Even with force, a folder that is not a conversion's output is never replaced.
    let err = write_onnx_folder(&stories("gguf"), &out, &force).unwrap_err();
    assert!(
        err.to_string()
            .contains("not the output of an earlier conversion"),
        "{err}"
    );
    assert_eq!(listing(&out), ["keep.txt"]);

    std::fs::remove_file(out.join("keep.txt")).unwrap();
    write_onnx_folder(&stories("gguf"), &out, &ConvertOptions::default()).unwrap();
    let err = write_onnx_folder(&stories("gguf"), &out, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    // A previous conversion is replaced with force.
    write_onnx_folder(&stories("gguf"), &out, &force).unwrap();
    assert!(out.join("model.onnx").is_file());
    assert_eq!(listing(tmp.path()), ["out"], "no temporary folders left");

    // A folder that holds the source is not replaced, even with force.
    let source = out.join("stories260K.gguf");
    std::fs::copy(stories("gguf"), &source).unwrap();
    let err = write_onnx_folder(&source, &out, &force).unwrap_err();
    assert!(err.to_string().contains("would delete"), "{err}");
    assert!(source.is_file());
    // A file, and `.`, are not folders to write.
    let err = write_onnx_folder(&stories("gguf"), &source, &force).unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
    let err = write_onnx_folder(&stories("gguf"), Path::new("."), &force).unwrap_err();
    assert!(err.to_string().contains("folder name"), "{err}");
}
