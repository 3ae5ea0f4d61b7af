//! `write_hf_folder` on stories260K: what the folder holds, that the GGUF and the
//! llama2.c checkpoint give the same weights, and that writing is all-or-nothing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use runanywhere_convert::{write_hf_folder, ConvertError};
use runanywhere_tests::data_dir;

fn stories(ext: &str) -> PathBuf {
    data_dir().join(format!("tinystories/stories260K.{ext}"))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn tensors(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn folders_from_the_gguf_and_the_checkpoint_hold_the_same_model() {
    let tmp = tempfile::tempdir().unwrap();
    let from_gguf = tmp.path().join("gguf");
    let from_bin = tmp.path().join("bin");
    let written = write_hf_folder(&stories("gguf"), &from_gguf).unwrap();
    write_hf_folder(&stories("bin"), &from_bin).unwrap();
    let mut files = written.files.clone();
    files.sort();
    assert_eq!(
        files,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );

    // Every file is as readable as one the user creates there, the weights too (the
    // writers' private 0600 temporaries and the 0700 staging folder are not kept).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let plain = tmp.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        for f in &files {
            assert_eq!(mode(&from_gguf.join(f)), mode(&plain), "{f}");
        }
        let dir_mode = mode(&from_gguf);
        assert_eq!(dir_mode & 0o444, mode(&plain) & 0o444);
        assert_eq!(dir_mode & 0o111, (mode(&plain) & 0o444) >> 2);
    }

    let c = json(&from_gguf.join("config.json"));
    assert_eq!(c["model_type"], "llama");
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    for (key, value) in [
        ("hidden_size", 64),
        ("intermediate_size", 172),
        ("num_hidden_layers", 5),
        ("num_attention_heads", 8),
        ("num_key_value_heads", 4),
        ("vocab_size", 512),
        ("max_position_embeddings", 128),
        ("bos_token_id", 1),
        ("eos_token_id", 2),
    ] {
        assert_eq!(c[key], value, "{key}");
    }
    assert!((c["rms_norm_eps"].as_f64().unwrap() - 1e-5).abs() < 1e-9);
    assert_eq!(c["rope_theta"], 10000.0);
    // The GGUF stores a separate classifier; the checkpoint shares it.
    assert_eq!(c["tie_word_embeddings"], false);
    let cb = json(&from_bin.join("config.json"));
    assert_eq!(cb["tie_word_embeddings"], true);
    assert_eq!(cb["max_position_embeddings"], 512);

    // llama.cpp converted the checkpoint into the GGUF without changing a weight.
    let (g, b) = (tensors(&from_gguf), tensors(&from_bin));
    assert_eq!(b.len(), 2 + 5 * 9);
    for (name, t) in &b {
        assert_eq!(values(t), values(&g[name]), "{name}");
    }
    assert_eq!(
        values(&g["lm_head.weight"]),
        values(&b["model.embed_tokens.weight"])
    );

    // The tokenizer is usable on its own, with BOS added as the config says.
    let tok = tokenizers::Tokenizer::from_file(from_bin.join("tokenizer.json")).unwrap();
    let ids = tok
        .encode("Once upon a time", true)
        .unwrap()
        .get_ids()
        .to_vec();
    assert_eq!(ids, vec![1, 403, 407, 261, 378]);
    let tc = json(&from_bin.join("tokenizer_config.json"));
    assert_eq!(tc["bos_token"], "<s>");
    assert_eq!(tc["eos_token"], "</s>");
    assert_eq!(tc["add_bos_token"], true);
    assert_eq!(
        json(&from_bin.join("generation_config.json"))["eos_token_id"],
        2
    );
}

#[test]
fn rotary_rows_are_reordered_for_hugging_face() {
    // Row 1 of head 0 in the checkpoint (second member of pair 0) is row head_dim/2 = 4
    // in the Hugging Face layout.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hf");
    write_hf_folder(&stories("bin"), &out).unwrap();
    let hf = tensors(&out);
    let raw = runanywhere_convert::llama2c::Checkpoint::read(&stories("bin")).unwrap();
    let name = "model.layers.0.self_attn.k_proj.weight";
    let row = |t: &Tensor, i: usize| values(&t.get(i).unwrap());
    assert_eq!(row(&hf[name], 4), row(&raw.tensors[name], 1));
    assert_eq!(row(&hf[name], 1), row(&raw.tensors[name], 2));
    let v = "model.layers.0.self_attn.v_proj.weight";
    assert_eq!(
        values(&hf[v]),
        values(&raw.tensors[v]),
        "values are not permuted"
    );
}

#[test]
fn writing_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // An existing, non-empty destination is refused and left alone.
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "x").unwrap();
    let err = write_hf_folder(&stories("gguf"), &busy).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    assert!(busy.join("keep.txt").is_file());
    // An empty one is replaced.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    write_hf_folder(&stories("gguf"), &empty).unwrap();
    assert!(empty.join("model.safetensors").is_file());

    // A source that fails leaves nothing behind, not even a temporary directory.
    let broken = tmp.path().join("broken.gguf");
    let bytes = std::fs::read(stories("gguf")).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    let out = tmp.path().join("never");
    let err = write_hf_folder(&broken, &out).unwrap_err();
    assert!(matches!(err, ConvertError::Invalid { .. }), "{err}");
    let after = listing();
    assert_eq!(before, after);
    // Vocabulary-only GGUFs and other architectures are not models to convert.
    let err = write_hf_folder(&data_dir().join("vocab/ggml-vocab-gpt-2.gguf"), &out).unwrap_err();
    assert!(err.is_unsupported(), "{err}");
    assert!(!out.exists());
}
