//! `runanywhere embed`: llama.cpp's last hidden states, pooled and normalized by the kit.

use runanywhere_tests::{data_dir, json_output, plugin_dir, run_cli, stderr};
use serde_json::Value;

fn embed(engine: &str, args: &[&str]) -> std::process::Output {
    let plugins = plugin_dir(&["llama-cpp", "candle"]);
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let mut all = vec![
        "embed",
        "--model",
        gguf.to_str().unwrap(),
        "--engine",
        engine,
        "--json",
    ];
    all.extend_from_slice(args);
    run_cli(Some(plugins.path()), &all, None)
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / (norm(a) * norm(b))
}

#[test]
fn llama_cpp_embeds_texts_alike_in_a_batch_and_one_by_one() {
    let texts = ["Once upon a time", "The cat sat on the mat"];
    let both = json_output(&embed("llama-cpp", &texts));
    assert_eq!(
        (both["dims"].as_u64(), both["pooling"].as_str()),
        (Some(64), Some("default"))
    );
    let both = vectors(&both);
    assert_eq!(both.len(), 2);
    for v in &both {
        assert!((norm(v) - 1.0).abs() < 1e-5, "unit length: {}", norm(v));
    }
    for (i, text) in texts.iter().enumerate() {
        let one = vectors(&json_output(&embed("llama-cpp", &[text])));
        assert_eq!(one[0], both[i], "a batch gives what one by one gives");
    }
    assert!(
        cosine(&both[0], &both[1]) < 0.999,
        "different texts, different vectors"
    );

    // Unnormalized: the same direction, another length.
    let raw = vectors(&json_output(&embed(
        "llama-cpp",
        &["--no-normalize", texts[0]],
    )));
    assert!((cosine(&raw[0], &both[0]) - 1.0).abs() < 1e-6);
    assert!((norm(&raw[0]) - 1.0).abs() > 1e-3, "{}", norm(&raw[0]));

    // The states are causal: the first token (BOS) sees nothing else, so `cls` pooling is
    // the same for every text; `last` is not, and differs from the mean.
    let cls = vectors(&json_output(&embed(
        "llama-cpp",
        &["--pooling", "cls", texts[0], texts[1]],
    )));
    assert_eq!(cls[0], cls[1]);
    let last = vectors(&json_output(&embed(
        "llama-cpp",
        &["--pooling", "last", texts[0], texts[1]],
    )));
    assert!(cosine(&last[0], &last[1]) < 0.999 && cosine(&last[0], &both[0]) < 0.999);
}

#[test]
fn an_engine_that_does_not_embed_says_so() {
    let out = embed("candle", &["x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("does not compute embeddings"), "{err}");
}
