//! `runanywhere run` and `tokenize` end to end with the mock engine.

use runanywhere::registry::Registry;
use runanywhere::{GenerateRequest, LoadRequest, Prompt, SamplingParams, SinkControl};
use runanywhere_tests::{json_ids, json_output, plugin_dir, run_cli, stderr};
use serde_json::Value;

fn run_json(args: &[&str]) -> Value {
    let dir = plugin_dir(&["mock"]);
    let mut all = vec!["run", "--engine", "mock", "--model", "mock", "--json"];
    all.extend_from_slice(args);
    json_output(&run_cli(Some(dir.path()), &all, None))
}

#[test]
fn run_json_has_the_contract_fields_and_metrics() {
    let v = run_json(&["--max-tokens", "12", "--temperature", "0", "hello"]);
    assert_eq!(v["engine"], "mock");
    // "hello" is one word token after BOS.
    assert_eq!(json_ids(&v["prompt_ids"]), vec![1, 259 + 31]);
    assert_eq!(json_ids(&v["generated_ids"]).len(), 12);
    assert_eq!(v["stop_reason"], "max_tokens");
    assert!(v["text"].as_str().is_some());
    let m = &v["metrics"];
    for key in [
        "load_ms",
        "prompt_tokens",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "generated_tokens",
        "peak_rss_bytes",
    ] {
        assert!(m.get(key).is_some(), "metrics.{key} missing: {m}");
    }
    assert_eq!(m["prompt_tokens"], 2);
    assert_eq!(m["generated_tokens"], 12);
}

#[test]
fn streamed_text_equals_the_json_text_and_metrics_go_to_stderr() {
    let dir = plugin_dir(&["mock"]);
    let args = [
        "run",
        "--engine",
        "mock",
        "--model",
        "mock",
        "-n",
        "40",
        "--temperature",
        "0",
        "hello",
    ];
    let streamed = run_cli(Some(dir.path()), &args, None);
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = json_output(&run_cli(Some(dir.path()), &json_args, None));
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout),
        v["text"].as_str().unwrap()
    );
    let err = stderr(&streamed);
    assert!(
        err.contains("decode") && err.contains("tok/s") && err.contains("peak RSS"),
        "{err}"
    );
}

#[test]
fn greedy_is_deterministic_and_the_seed_controls_sampling() {
    let a = run_json(&["-n", "30", "--temperature", "0", "--seed", "1", "hello"]);
    let b = run_json(&["-n", "30", "--temperature", "0", "--seed", "2", "hello"]);
    assert_eq!(a["generated_ids"], b["generated_ids"]);

    let s1 = run_json(&["-n", "30", "--temperature", "1.2", "--seed", "7", "hello"]);
    let s1b = run_json(&["-n", "30", "--temperature", "1.2", "--seed", "7", "hello"]);
    let s2 = run_json(&["-n", "30", "--temperature", "1.2", "--seed", "8", "hello"]);
    assert_eq!(s1["generated_ids"], s1b["generated_ids"]);
    assert_ne!(s1["generated_ids"], s2["generated_ids"]);
    assert_eq!(s1["seed"], 7);
}

#[test]
fn stop_strings_stop_and_are_not_printed() {
    let full = run_json(&["-n", "60", "--temperature", "0", "hello"]);
    let text = full["text"].as_str().unwrap().to_string();
    // Pick a word from the middle of the greedy output as the stop string.
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    assert!(words.len() > 6, "{text}");
    let stop = words[5].trim();
    assert!(!stop.is_empty());
    let cut = run_json(&["-n", "60", "--temperature", "0", "--stop", stop, "hello"]);
    assert_eq!(cut["stop_reason"], "stop_string");
    let cut_text = cut["text"].as_str().unwrap();
    assert!(!cut_text.contains(stop), "{cut_text:?} contains {stop:?}");
    assert_eq!(cut_text, &text[..text.find(stop).unwrap()]);
}

#[test]
fn prompt_ids_and_stdin_prompts_work() {
    let from_ids = run_json(&["-n", "5", "--temperature", "0", "--prompt-ids", "1 290"]);
    let from_text = run_json(&["-n", "5", "--temperature", "0", "hello"]);
    assert_eq!(json_ids(&from_ids["prompt_ids"]), vec![1, 290]);
    assert_eq!(from_ids["generated_ids"], from_text["generated_ids"]);

    let dir = plugin_dir(&["mock"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--json",
            "-n",
            "5",
            "--temperature",
            "0",
        ],
        Some(b"hello"),
    );
    assert_eq!(
        json_output(&out)["generated_ids"],
        from_text["generated_ids"]
    );
}

#[test]
fn utf8_split_across_tokens_reaches_the_caller_whole() {
    // The mock spells " café" and " →" with byte tokens, so sampled outputs contain
    // characters split across tokens. The streamed pieces must add up to exactly the
    // detokenized ids, with no character lost or mangled on the way.
    let dir = plugin_dir(&["mock"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    let model = registry
        .engine("mock")
        .unwrap()
        .load_model(LoadRequest {
            model_path: "mock".into(),
            ..Default::default()
        })
        .unwrap();
    let mut saw_multibyte = false;
    for seed in 0..8 {
        let mut request = GenerateRequest::new(Prompt::Text("hello".into()));
        request.max_tokens = 120;
        request.sampling = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplingParams::default()
        };
        let (mut ids, mut text) = (Vec::new(), String::new());
        model
            .generate(request, |id, piece| {
                ids.push(id);
                text.push_str(piece);
                SinkControl::Continue
            })
            .unwrap();
        assert_eq!(text, model.detokenize(&ids).unwrap(), "seed {seed}");
        // Only a character cut by max_tokens at the very end may be incomplete.
        let body = text.trim_end_matches('\u{FFFD}');
        assert!(!body.contains('\u{FFFD}'), "seed {seed}: {text}");
        saw_multibyte |= body.contains('é') || body.contains('→');
    }
    assert!(
        saw_multibyte,
        "no multi-byte character in 8 sampled outputs"
    );
}

#[test]
fn tokenize_json_and_exact_stdin() {
    let dir = plugin_dir(&["mock"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "tokenize",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--json",
            "hello world",
        ],
        None,
    );
    let v = json_output(&out);
    assert_eq!(json_ids(&v["ids"]), vec![1, 259 + 31, 259 + 12]);
    assert_eq!(v["pieces"], serde_json::json!(["<s>", "hello", " world"]));

    // stdin is taken exactly: the trailing newline is a token, nothing is trimmed.
    let out = run_cli(
        Some(dir.path()),
        &[
            "tokenize",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--json",
            "--no-special",
        ],
        Some(b" hello\n"),
    );
    let v = json_output(&out);
    assert_eq!(v["pieces"], serde_json::json!([" hello", "\n"]));
    assert_eq!(json_ids(&v["ids"]), vec![259 + 11, 259 + 27]);
}

#[test]
fn context_overflow_is_a_clear_error() {
    let dir = plugin_dir(&["mock"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--ctx-size",
            "4",
            "hello hello hello hello",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("context_overflow") && err.contains("4"),
        "{err}"
    );
}

#[test]
fn ctrl_c_stops_generation_cleanly_and_still_prints_the_metrics() {
    // A generation that would run for millions of tokens, interrupted with SIGINT once
    // it has streamed some text.
    use std::io::Read;
    use std::process::Stdio;
    let dir = plugin_dir(&["mock"]);
    let mut child = runanywhere_tests::cli_command(
        Some(dir.path()),
        &[
            "run",
            "--engine",
            "mock",
            "--model",
            "mock",
            "--ctx-size",
            "100000000",
            "-n",
            "0",
            "--temperature",
            "0",
            "hello",
        ],
        &[],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("stop: cancelled") && err.contains("decode"),
        "{err}"
    );
}
