//! The llama.cpp plugin on real data: exact greedy references, tokenizer vectors, bad
//! files, sampling, stop strings, cancellation, and chat.

use std::path::{Path, PathBuf};

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind as ErrorKind, Error, GenerateRequest, Model, Prompt, SamplingParams, StopReason,
};
use runanywhere_tests::{
    assert_reference_json, data_dir, generate, json_ids, json_output, plugin_dir, run_cli, stderr,
    tinystories_references, vocab_cases,
};

/// stories260K's GGUF says its context is 128 tokens; the references run 201 positions
/// (llama2.c's seq_len is 512), as llama.cpp's own run did with a larger context.
const CONTEXT: u32 = 256;

fn registry() -> (tempfile::TempDir, Registry) {
    runanywhere_tests::registry_with(&["llama-cpp"])
}

fn load(registry: &Registry, path: &Path, vocab_only: bool) -> Result<Model, Error> {
    load_ctx(registry, path, vocab_only, CONTEXT)
}

fn load_ctx(registry: &Registry, path: &Path, vocab_only: bool, ctx: u32) -> Result<Model, Error> {
    runanywhere_tests::load_model(registry, "llama-cpp", path, ctx, vocab_only)
}

fn stories() -> PathBuf {
    data_dir().join("tinystories/stories260K.gguf")
}

fn greedy(prompt: &str, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(Prompt::Text(prompt.into()));
    r.max_tokens = max_tokens;
    r.sampling = SamplingParams::greedy();
    r
}

#[test]
fn stories260k_reproduces_the_greedy_reference_exactly() {
    let (_dir, registry) = registry();
    let model = load(&registry, &stories(), false).unwrap();
    for r in tinystories_references() {
        let max = (201 - r.prompt_ids.len()) as u32;
        let (prompt_ids, generated, text, reason) = generate(&model, greedy(&r.prompt, max));
        assert_eq!(prompt_ids, r.prompt_ids, "prompt {:?}", r.prompt);
        assert_eq!(
            generated,
            r.all_ids[r.prompt_ids.len()..],
            "prompt {:?}",
            r.prompt
        );
        assert_eq!(reason, StopReason::MaxTokens);
        // run.c echoes the prompt and ends with a newline; with an empty prompt the
        // first piece carries SentencePiece's dummy-prefix space, which run.c strips.
        let mut streamed = format!("{}{}\n", r.prompt, text);
        if r.prompt.is_empty() {
            streamed = streamed.strip_prefix(' ').unwrap_or(&streamed).to_string();
        }
        assert_eq!(streamed, r.text, "prompt {:?}", r.prompt);
    }
}

#[test]
fn run_json_on_stories260k_matches_the_reference() {
    let r = &tinystories_references()[1];
    assert_eq!(r.prompt, "Once upon a time");
    let dir = plugin_dir(&["llama-cpp"]);
    let model = stories();
    let max = (201 - r.prompt_ids.len()).to_string();
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--ctx-size",
            "256",
            "--threads",
            "1",
            "--json",
            &r.prompt,
        ],
        None,
    );
    let v = json_output(&out);
    assert_eq!(v["engine"], "llama-cpp", "routed by the GGUF magic");
    assert_reference_json(&v, r, "run --json");
    assert_eq!(v["metrics"]["generated_tokens"], 201 - r.prompt_ids.len());
}

#[test]
fn tokenizer_vectors_match_for_every_vocabulary() {
    let (_dir, registry) = registry();
    let mut vocabs: Vec<PathBuf> = std::fs::read_dir(data_dir().join("vocab"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .filter(|p| PathBuf::from(format!("{}.inp", p.display())).is_file())
        .collect();
    vocabs.sort();
    assert_eq!(vocabs.len(), 5, "{vocabs:?}");
    for gguf in vocabs {
        let model = load(&registry, &gguf, true).unwrap();
        let cases = vocab_cases(&gguf);
        assert_eq!(cases.len(), 46, "{}", gguf.display());
        for (i, (input, expected)) in cases.iter().enumerate() {
            let ids = model.tokenize(input, false, false).unwrap();
            assert_eq!(&ids, expected, "{} case {i}: {input:?}", gguf.display());
        }
    }
}

#[test]
fn tokenize_cli_takes_stdin_exactly() {
    // Through the binary, stdin untouched: every llama-spm case, whitespace-only ones too.
    let dir = plugin_dir(&["llama-cpp"]);
    let gguf = data_dir().join("vocab/ggml-vocab-llama-spm.gguf");
    for (i, (input, expected)) in vocab_cases(&gguf).iter().enumerate() {
        let out = run_cli(
            Some(dir.path()),
            &[
                "tokenize",
                "--model",
                gguf.to_str().unwrap(),
                "--no-special",
                "--json",
            ],
            Some(input.as_bytes()),
        );
        let v = json_output(&out);
        let ids = json_ids(&v["ids"]);
        assert_eq!(&ids, expected, "case {i}: {input:?}");
        assert_eq!(v["pieces"].as_array().unwrap().len(), ids.len());
    }
}

#[test]
fn llama2_tiny_random_loads_and_generates() {
    let (_dir, registry) = registry();
    let path = data_dir().join("gguf/llama-2-tiny-random.gguf");
    let model = load(&registry, &path, false).unwrap();
    assert_eq!(model.info().architecture.as_str(), "llama");
    assert_eq!(model.info().vocab_size, 32000);
    let (prompt_ids, generated, _, reason) = generate(&model, greedy("Hello world", 16));
    // Tokenization is exact; the logits are near-tied, so only the count is checked.
    assert_eq!(prompt_ids, vec![1, 15043, 3186]);
    assert_eq!(generated.len(), 16);
    assert_eq!(reason, StopReason::MaxTokens);
}

#[test]
fn bad_files_are_invalid_model_errors_and_the_host_lives_on() {
    let (_dir, registry) = registry();
    let good = std::fs::read(stories()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut cases: Vec<(String, PathBuf)> = Vec::new();
    let mut write = |name: &str, bytes: &[u8]| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        cases.push((name.to_string(), p));
    };
    write("empty.gguf", b"");
    for cut in [
        3usize,
        4,
        8,
        16,
        24,
        100,
        1000,
        10_000,
        good.len() / 2,
        good.len() - 1,
    ] {
        write(&format!("truncated-{cut}.gguf"), &good[..cut]);
    }
    let mut wrong_magic = good.clone();
    wrong_magic[..4].copy_from_slice(b"GGUX");
    write("wrong-magic.gguf", &wrong_magic);
    let random = runanywhere_tests::random_bytes(0x1234_5678_9abc_def0, 100_000);
    write("random.gguf", &random);
    let mut random_after_magic = b"GGUF\x03\x00\x00\x00".to_vec();
    random_after_magic.extend_from_slice(&random);
    write("random-after-magic.gguf", &random_after_magic);
    cases.push(("a directory".into(), tmp.path().to_path_buf()));
    cases.push(("missing".into(), tmp.path().join("nope.gguf")));

    for (name, path) in &cases {
        let err = load(&registry, path, false).unwrap_err();
        let inner = err
            .engine_error()
            .unwrap_or_else(|| panic!("{name}: {err}"));
        // A readable file that is not GGUF at all is another format, as every engine
        // says; a damaged GGUF (or no readable file) is an invalid model.
        let expected = if matches!(name.as_str(), "wrong-magic.gguf" | "random.gguf") {
            ErrorKind::UnsupportedFormat
        } else {
            ErrorKind::InvalidModel
        };
        assert_eq!(inner.kind(), expected, "{name}: {err}");
        assert!(
            inner.message().contains(&*path.to_string_lossy()),
            "{name}: the message names the file: {}",
            inner.message()
        );
    }
    // Still alive, and still generating.
    let model = load(&registry, &stories(), false).unwrap();
    assert_eq!(generate(&model, greedy("Once upon a time", 5)).1.len(), 5);

    // Through the CLI: exit code 1 and a message naming the file.
    let dir = plugin_dir(&["llama-cpp"]);
    let trunc = tmp.path().join("truncated-1000.gguf");
    let out = run_cli(
        Some(dir.path()),
        &["run", "--model", trunc.to_str().unwrap(), "hi"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("invalid_model") && err.contains("truncated-1000.gguf"),
        "{err}"
    );
}

#[test]
fn seeds_control_sampling() {
    // Cancellation, stop strings, max_tokens, context overflow, out-of-vocabulary ids
    // and vocab-only loads are the engine contract (contract.rs), the same for all.
    let (_dir, registry) = registry();
    let model = load(&registry, &stories(), false).unwrap();
    let sampled = |seed: u64| {
        let mut r = greedy("Once upon a time", 40);
        r.sampling = SamplingParams {
            temperature: 1.0,
            seed,
            ..SamplingParams::default()
        };
        generate(&model, r).1
    };
    assert_eq!(sampled(11), sampled(11));
    assert_ne!(sampled(11), sampled(12));
}

#[test]
fn scripted_two_turn_chat_keeps_the_history() {
    // stories260K has no chat template: pass a tiny one that joins the turns with a space.
    let template =
        "{% for m in messages %}{% if not loop.first %} {% endif %}{{ m.content }}{% endfor %}";
    let dir = plugin_dir(&["llama-cpp"]);
    let model = stories();
    let model = model.to_str().unwrap();
    let chat = run_cli(
        Some(dir.path()),
        &[
            "chat",
            "--model",
            model,
            "--temperature",
            "0",
            "-n",
            "12",
            "--threads",
            "1",
            "--chat-template",
            template,
        ],
        Some(b"Once upon a time\nThe little dog\n/history\n/exit\n"),
    );
    assert!(chat.status.success(), "{}", stderr(&chat));
    let stdout = String::from_utf8_lossy(&chat.stdout).into_owned();

    // Each reply equals a plain run on the conversation rendered so far.
    let run = |prompt: &str| -> String {
        let v = json_output(&run_cli(
            Some(dir.path()),
            &[
                "run",
                "--model",
                model,
                "--temperature",
                "0",
                "-n",
                "12",
                "--threads",
                "1",
                "--json",
                prompt,
            ],
            None,
        ));
        v["text"].as_str().unwrap().to_string()
    };
    let reply1 = run("Once upon a time");
    let reply2 = run(&format!(
        "Once upon a time {} The little dog",
        reply1.trim()
    ));
    assert_ne!(reply1, reply2);
    let expected = format!(
        "{reply1}\n{reply2}\n[user] Once upon a time\n[assistant] {}\n[user] The little dog\n[assistant] {}\n",
        reply1.trim(),
        reply2.trim()
    );
    assert_eq!(stdout, expected);
}

/// The prompt cache: a generation whose prompt shares a prefix with what the model last
/// ran reuses those positions, and gives exactly the ids of a cold run.
#[test]
fn prompt_cache_reuse_is_exact_and_a_chat_turn_reuses_the_conversation() {
    use runanywhere::{GenerateRequest, Prompt, SamplingParams};
    let (_dir, registry) = runanywhere_tests::registry_with(&["llama-cpp"]);
    let path = runanywhere_tests::data_dir().join("tinystories/stories260K.gguf");
    let warm = runanywhere_tests::load_model(&registry, "llama-cpp", &path, 0, false).unwrap();
    let request = |ids: &[u32], max: u32| {
        let mut r = GenerateRequest::new(Prompt::Ids(ids.to_vec().into()));
        r.max_tokens = max;
        r.sampling = SamplingParams::greedy();
        r
    };
    let reference = &runanywhere_tests::tinystories_references()[1];
    let p1 = reference.prompt_ids.clone();
    let (_, g1, _, _) = runanywhere_tests::generate(&warm, request(&p1, 60));
    // Turn 2: the conversation so far, minus its last tokens, then new ones: reuse with
    // truncation. Then a prompt that is a prefix of the cache, and one sharing nothing.
    let mut p2 = p1.clone();
    p2.extend_from_slice(&g1[..40]);
    p2.extend_from_slice(&[403, 407, 261]);
    let p3 = p2[..p1.len() + 10].to_vec();
    let p4 = vec![1, 306, 263];
    let turns = [p2, p3, p4, p1.clone()];
    let warm_runs: Vec<Vec<u32>> = turns
        .iter()
        .map(|p| runanywhere_tests::generate(&warm, request(p, 50)).1)
        .collect();
    drop(warm);
    for (p, warm_ids) in turns.iter().zip(&warm_runs) {
        let cold = runanywhere_tests::load_model(&registry, "llama-cpp", &path, 0, false).unwrap();
        let (_, cold_ids, _, _) = runanywhere_tests::generate(&cold, request(p, 50));
        assert_eq!(warm_ids, &cold_ids, "prompt of {} tokens", p.len());
    }
    // The reference run is still the reference.
    assert_eq!(
        warm_runs[3][..],
        reference.all_ids[p1.len()..p1.len() + 50],
        "the reference continuation after reuse"
    );

    // `chat` reuses the whole conversation on turn 2 (the plugin's debug log says how
    // much); its reply is what a cold run on the rendered conversation gives.
    let plugins = runanywhere_tests::plugin_dir(&["llama-cpp"]);
    let out = runanywhere_tests::run_cli_env(
        Some(plugins.path()),
        &[
            "chat",
            "--model",
            path.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            "30",
        ],
        Some(b"Once upon a time\nThe cat sat\n"),
        &[("RUNANYWHERE_LOG", "warn,plugin=debug")],
    );
    assert!(out.status.success(), "{}", runanywhere_tests::stderr(&out));
    let log = runanywhere_tests::stderr(&out);
    let reused: usize = log
        .lines()
        .find_map(|l| l.split("reused=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no reuse logged: {log}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // The same two turns through the runtime's ChatSession, turn 2 on a fresh model.
    let options = runanywhere::GenerateOptions {
        max_tokens: 30,
        ..runanywhere::GenerateOptions::greedy()
    };
    let first = runanywhere_tests::load_model(&registry, "llama-cpp", &path, 0, false).unwrap();
    let mut session = runanywhere::ChatSession::new(&first, None, None).unwrap();
    let turn1 = session
        .prepare(&first, "Once upon a time", &options, 0)
        .unwrap();
    let (prompt1, ids1, text1, _) = runanywhere_tests::generate(&first, turn1.request.clone());
    assert!(
        stdout.starts_with(&text1),
        "turn 1 = the runtime's: {stdout:?} vs {text1:?}"
    );
    let stats1 = first
        .generate(turn1.request, |_, _| runanywhere::SinkControl::Continue)
        .unwrap();
    assert_eq!(stats1.prompt_ids.as_slice(), prompt1);
    session.commit(&text1, &stats1, &ids1);
    let turn2 = session.prepare(&first, "The cat sat", &options, 0).unwrap();
    drop(first);
    let fresh = runanywhere_tests::load_model(&registry, "llama-cpp", &path, 0, false).unwrap();
    let (prompt2, _, text2, _) = runanywhere_tests::generate(&fresh, turn2.request);
    assert!(
        stdout[text1.len()..]
            .trim_start_matches('\n')
            .starts_with(&text2),
        "turn 2 = a cold run of the same conversation: {stdout:?} vs {text2:?}"
    );
    let prompt_tokens = prompt2.len();
    assert!(
        reused >= prompt_tokens / 2 && reused < prompt_tokens,
        "turn 2 reused {reused} of its {prompt_tokens} prompt tokens"
    );
}

/// Parallel sequences: four greedy generations at once on one model (loaded with
/// `parallel = 4`), decoded together by its scheduler, each give exactly their single
/// run's ids; one cancelled midway stops alone.
#[test]
fn parallel_sequences_give_each_generation_its_single_run() {
    use runanywhere::{
        CancelToken, GenerateRequest, Prompt, SamplingParams, SinkControl, StopReason,
    };
    use runanywhere_plugin_api::KeyValue;
    let (_dir, registry) = runanywhere_tests::registry_with(&["llama-cpp"]);
    let path = runanywhere_tests::data_dir().join("tinystories/stories260K.gguf");
    let model = registry
        .engine("llama-cpp")
        .unwrap()
        .load_model(runanywhere::LoadRequest {
            model_path: path.to_string_lossy().into_owned().into(),
            threads: 1,
            extensions: vec![KeyValue::new("parallel", "4")].into(),
            ..Default::default()
        })
        .unwrap();
    assert!(model
        .capabilities()
        .contains(runanywhere::Capabilities::PARALLEL_SEQUENCES));
    let references = runanywhere_tests::tinystories_references();
    let request = |ids: &[u32]| {
        let mut r = GenerateRequest::new(Prompt::Ids(ids.to_vec().into()));
        r.max_tokens = 60;
        r.sampling = SamplingParams::greedy();
        r
    };
    let barrier = std::sync::Barrier::new(4);
    let cancel = CancelToken::new();
    let outputs: Vec<(Vec<u32>, StopReason)> = std::thread::scope(|s| {
        let handles: Vec<_> = references
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (model, barrier, cancel, request) = (&model, &barrier, &cancel, &request);
                s.spawn(move || {
                    barrier.wait();
                    let mut ids = Vec::new();
                    let on_token = |id: u32, _: &str| {
                        ids.push(id);
                        // The third stream stops itself after 10 tokens.
                        if i == 2 && ids.len() == 10 {
                            cancel.cancel();
                        }
                        SinkControl::Continue
                    };
                    let stats = if i == 2 {
                        model.generate_cancellable(request(&r.prompt_ids), cancel, on_token)
                    } else {
                        model.generate(request(&r.prompt_ids), on_token)
                    }
                    .unwrap();
                    (ids, stats.stop_reason())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, ((ids, reason), r)) in outputs.iter().zip(&references).enumerate() {
        let expected = &r.all_ids[r.prompt_ids.len()..];
        if i == 2 {
            assert_eq!(*reason, StopReason::Cancelled);
            assert_eq!(
                ids[..],
                expected[..ids.len()],
                "the cancelled stream, as far as it went"
            );
            assert!(ids.len() < 20, "{}", ids.len());
        } else {
            assert_eq!(*reason, StopReason::MaxTokens, "stream {i}");
            assert_eq!(ids[..], expected[..60], "stream {i}: its single run's ids");
        }
    }
    // And one after the other, through the same slots.
    let (_, again, _, _) = runanywhere_tests::generate(&model, request(&references[1].prompt_ids));
    assert_eq!(
        again[..],
        references[1].all_ids[references[1].prompt_ids.len()..][..60]
    );
}
