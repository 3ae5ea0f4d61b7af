//! Token log-probabilities (`run --json --logprobs K`): the same reference run on every
//! engine that reads stories260K gives the same scores, and greedy tokens are the most
//! likely alternative.

use runanywhere_tests::{
    data_dir, json_ids, json_output, plugin_dir, run_cli, tinystories_references,
};
use serde_json::Value;

fn scored_run(model: &str, engine: &str, prompt: &str) -> Value {
    let plugins = plugin_dir(&["llama-cpp", "candle", "onnx"]);
    json_output(&run_cli(
        Some(plugins.path()),
        &[
            "run",
            "--model",
            model,
            "--engine",
            engine,
            "--temperature",
            "0",
            "--max-tokens",
            "40",
            "--json",
            "--logprobs",
            "3",
            prompt,
        ],
        None,
    ))
}

/// (chosen logprob, [(id, logprob)]) per generated token.
fn scores(v: &Value) -> Vec<(f64, Vec<(u64, f64)>)> {
    v["logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let top = t["top"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| (a["id"].as_u64().unwrap(), a["logprob"].as_f64().unwrap()))
                .collect();
            (t["logprob"].as_f64().unwrap(), top)
        })
        .collect()
}

#[test]
fn every_engine_scores_the_reference_run_alike() {
    let reference = &tinystories_references()[0];
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let onnx = data_dir().join("onnx/stories260K-genai/fp32");
    let runs = [
        (
            "llama-cpp",
            scored_run(gguf.to_str().unwrap(), "llama-cpp", &reference.prompt),
        ),
        (
            "candle",
            scored_run(gguf.to_str().unwrap(), "candle", &reference.prompt),
        ),
        (
            "onnx",
            scored_run(onnx.to_str().unwrap(), "onnx", &reference.prompt),
        ),
    ];
    let expected = &reference.all_ids[reference.prompt_ids.len()..][..40];
    for (engine, run) in &runs {
        assert_eq!(json_ids(&run["generated_ids"]), expected, "{engine}");
        let ids = json_ids(&run["generated_ids"]);
        for (n, ((logprob, top), id)) in scores(run).iter().zip(&ids).enumerate() {
            // Greedy: the chosen token is the most likely one, with its own score.
            assert_eq!(top.len(), 3, "{engine} token {n}");
            assert_eq!(
                (top[0].0, top[0].1),
                (u64::from(*id), *logprob),
                "{engine} token {n}"
            );
            assert!(top[0].1 >= top[1].1 && top[1].1 >= top[2].1 && *logprob <= 0.0);
            let piece = run["logprobs"][n]["top"][0]["piece"].as_str().unwrap();
            assert_eq!(piece, run["logprobs"][n]["piece"].as_str().unwrap());
        }
    }
    let (candle, onnx, llama) = (scores(&runs[1].1), scores(&runs[2].1), scores(&runs[0].1));
    for n in 0..40 {
        // The two f32 engines agree to float rounding.
        assert!(
            (candle[n].0 - onnx[n].0).abs() < 1e-4,
            "token {n}: {candle:?} vs {onnx:?}"
        );
        for ((a, x), (b, y)) in candle[n].1.iter().zip(&onnx[n].1) {
            assert_eq!(a, b, "token {n}");
            assert!((x - y).abs() < 1e-4, "token {n}");
        }
        // llama.cpp keeps its KV cache in f16: its probabilities agree within 1e-3
        // (log-probabilities of unlikely alternatives drift further in log space).
        assert!(
            (candle[n].0.exp() - llama[n].0.exp()).abs() < 1e-3,
            "token {n}"
        );
        assert!((candle[n].0 - llama[n].0).abs() < 5e-3, "token {n}");
        for ((a, x), (b, y)) in candle[n].1.iter().zip(&llama[n].1) {
            assert_eq!(a, b, "token {n}");
            assert!((x.exp() - y.exp()).abs() < 1e-3, "token {n}: {x} vs {y}");
        }
    }
}

#[test]
fn logprobs_need_json_and_at_most_twenty_alternatives() {
    let plugins = plugin_dir(&["mock"]);
    for args in [
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--logprobs",
            "2",
            "x",
        ][..],
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--json",
            "--logprobs",
            "21",
            "x",
        ][..],
    ] {
        let out = run_cli(Some(plugins.path()), args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run_cli(
        Some(plugins.path()),
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--json",
            "--logprobs",
            "0",
            "-n",
            "4",
            "x",
        ],
        None,
    );
    let v = json_output(&out);
    let tokens = v["logprobs"].as_array().unwrap();
    assert_eq!(tokens.len(), 4);
    assert!(tokens
        .iter()
        .all(|t| t["top"].as_array().unwrap().is_empty() && t["logprob"].as_f64().unwrap() <= 0.0));
}
