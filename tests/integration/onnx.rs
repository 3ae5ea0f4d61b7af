//! The ONNX Runtime plugin on real data: onnxruntime-genai's tiny GPT-2 reproduces its
//! greedy references exactly, tokenization, request semantics, bad models (truncated,
//! no tokenizer, not a decoder) and a missing ONNX Runtime, each a clear error with the
//! host alive afterwards.
//!
//! Needs ONNX Runtime in the repository's `.ort/` (`scripts/fetch-onnxruntime.sh`, which
//! `scripts/setup.sh` runs).

use std::path::{Path, PathBuf};
use std::process::Command;

use runanywhere::registry::Registry;
use runanywhere::{
    Error, ErrorKind, GenerateRequest, LoadRequest, Model, Prompt, SamplingParams, SinkControl,
    StopReason,
};
use runanywhere_tests::{
    binary, data_dir, json_output, plugin_dir, plugin_library, run_cli, stderr, vocab_cases,
};

fn registry() -> (tempfile::TempDir, Registry) {
    let dir = plugin_dir(&["onnx"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    assert!(
        registry.engine("onnx").is_some(),
        "onnx plugin unavailable (run scripts/fetch-onnxruntime.sh): {:?}",
        registry.unavailable()
    );
    (dir, registry)
}

fn gpt2() -> PathBuf {
    data_dir().join("onnx/tiny-random-gpt2-fp32")
}

/// Loads with one thread: tests run in parallel on small machines.
fn load_ctx(registry: &Registry, path: &Path, ctx: u32) -> Result<Model, Error> {
    registry.engine("onnx").unwrap().load_model(LoadRequest {
        model_path: path.to_string_lossy().into_owned().into(),
        context_length: ctx,
        threads: 1,
        ..Default::default()
    })
}

fn load(registry: &Registry, path: &Path) -> Result<Model, Error> {
    load_ctx(registry, path, 0)
}

/// The kind and message of an engine error.
fn engine_error(e: &Error) -> (ErrorKind, String) {
    let inner = e
        .engine_error()
        .unwrap_or_else(|| panic!("not an engine error: {e}"));
    (inner.kind(), inner.message().to_string())
}

/// One sequence of `expected-greedy.txt`.
#[derive(Debug)]
struct Expected {
    max_length: usize,
    prompt: Vec<u32>,
    sequence: Vec<u32>,
}

/// Parses `expected-greedy.txt`: `### max_length: N`, then `prompt:` and `sequence:`
/// lines of ids (prompt + generated, max_length in all); `#` lines are comments.
fn expected_greedy() -> Vec<Expected> {
    let text = std::fs::read_to_string(gpt2().join("expected-greedy.txt")).unwrap();
    let ids = |s: &str| -> Vec<u32> {
        s.split_whitespace()
            .map(|t| t.parse().expect("token id"))
            .collect()
    };
    let mut out: Vec<Expected> = Vec::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("### max_length: ") {
            out.push(Expected {
                max_length: n.trim().parse().unwrap(),
                prompt: Vec::new(),
                sequence: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("prompt: ") {
            out.last_mut().unwrap().prompt = ids(rest);
        } else if let Some(rest) = line.strip_prefix("sequence: ") {
            out.last_mut().unwrap().sequence = ids(rest);
        }
    }
    assert_eq!(out.len(), 4, "{out:?}");
    for e in &out {
        assert_eq!(e.sequence.len(), e.max_length, "{e:?}");
        assert!(e.sequence.starts_with(&e.prompt), "{e:?}");
    }
    out
}

/// Generates and returns (prompt ids, generated ids, streamed text, stop reason).
fn generate(model: &Model, request: GenerateRequest) -> (Vec<u32>, Vec<u32>, String, StopReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    let stats = model
        .generate(request, |id, piece| {
            ids.push(id);
            text.push_str(piece);
            SinkControl::Continue
        })
        .unwrap();
    assert_eq!(stats.generated_tokens as usize, ids.len());
    (stats.prompt_ids.to_vec(), ids, text, stats.stop_reason())
}

fn greedy(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.max_tokens = max_tokens;
    r.sampling = SamplingParams::greedy();
    r
}

fn ids(v: &[u32]) -> Prompt {
    Prompt::Ids(v.to_vec().into())
}

#[test]
fn tiny_gpt2_reproduces_every_expected_greedy_sequence() {
    let (_dir, registry) = registry();
    let model = load(&registry, &gpt2()).unwrap();
    let info = model.info();
    assert_eq!(info.architecture.as_str(), "gpt2");
    assert_eq!(info.vocab_size, 1000);
    assert_eq!(info.context_length, 512);
    assert_eq!(info.eog.as_slice(), &[98]);
    for e in expected_greedy() {
        let max = (e.max_length - e.prompt.len()) as u32;
        let (prompt_ids, generated, text, reason) = generate(&model, greedy(ids(&e.prompt), max));
        assert_eq!(prompt_ids, e.prompt);
        assert_eq!(
            generated,
            e.sequence[e.prompt.len()..],
            "prompt {:?}",
            e.prompt
        );
        assert_eq!(reason, StopReason::MaxTokens);
        // The streamed pieces are the detokenized output.
        assert_eq!(text, model.detokenize(&generated).unwrap());
    }
    // The same model, twice more on one session: every generation starts afresh.
    let e = &expected_greedy()[1];
    for _ in 0..2 {
        let (_, generated, _, _) = generate(&model, greedy(ids(&e.prompt), 6));
        assert_eq!(generated, e.sequence[e.prompt.len()..]);
    }
}

#[test]
fn run_json_with_prompt_ids_reproduces_an_expected_sequence() {
    let e = &expected_greedy()[2];
    let dir = plugin_dir(&["onnx"]);
    let model = gpt2();
    let prompt = e
        .prompt
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let max = (e.max_length - e.prompt.len()).to_string();
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            &prompt,
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--threads",
            "1",
            "--json",
        ],
        None,
    );
    let v = json_output(&out);
    assert_eq!(
        v["engine"], "onnx",
        "routed by the genai_config.json folder"
    );
    let list = |key: &str| -> Vec<u32> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    assert_eq!(list("prompt_ids"), e.prompt);
    assert_eq!(list("generated_ids"), e.sequence[e.prompt.len()..]);
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(
        v["metrics"]["generated_tokens"],
        e.max_length - e.prompt.len()
    );
}

#[test]
fn tokenizer_json_tokenizes_and_pieces_concatenate_losslessly() {
    let (_dir, registry) = registry();
    let model = load(&registry, &gpt2()).unwrap();
    assert_eq!(
        model.tokenize("Hello world", true, false).unwrap(),
        vec![15496, 995]
    );
    // Special-token text is parsed only when asked for.
    assert_eq!(
        model.tokenize("Hi<|endoftext|>", false, true).unwrap(),
        vec![17250, 50256]
    );
    assert_eq!(
        model.tokenize("Hi<|endoftext|>", false, false).unwrap(),
        vec![17250, 27, 91, 437, 1659, 5239, 91, 29]
    );
    // A crab is four bytes spread over several byte-level tokens: each piece is raw
    // bytes, and only their concatenation is whole UTF-8.
    let text = "A 🦀 café";
    let tokens = model.tokenize(text, false, false).unwrap();
    assert_eq!(tokens, vec![32, 12520, 99, 222, 40304]);
    let pieces: Vec<Vec<u8>> = tokens
        .iter()
        .map(|&id| model.token_piece(id).unwrap())
        .collect();
    assert!(pieces.iter().any(|p| std::str::from_utf8(p).is_err()));
    assert_eq!(pieces.concat(), text.as_bytes());
    assert_eq!(model.detokenize(&tokens).unwrap(), text);
    assert_eq!(model.token_piece(50256).unwrap(), b"<|endoftext|>");
    let err = model.token_piece(60_000).unwrap_err();
    assert_eq!(engine_error(&err).0, ErrorKind::InvalidRequest);
}

#[test]
fn gpt2_tokenizer_agrees_with_llama_cpp_test_vectors() {
    // llama.cpp's GPT-2 vectors (no BOS, special text not parsed). This tokenizer.json
    // adds tokens 50257.. for runs of 2-31 spaces and tabs, so exactly the cases with
    // such runs differ, using those tokens; everything else is identical.
    let (_dir, registry) = registry();
    let model = load(&registry, &gpt2()).unwrap();
    let cases = vocab_cases(&data_dir().join("vocab/ggml-vocab-gpt-2.gguf"));
    assert_eq!(cases.len(), 46);
    let mut differing = Vec::new();
    for (i, (input, expected)) in cases.iter().enumerate() {
        let ids = model.tokenize(input, false, false).unwrap();
        if &ids != expected {
            assert!(
                ids.iter().any(|&id| id >= 50257),
                "case {i}: {input:?}: {ids:?}"
            );
            differing.push(i);
        }
        let pieces: Vec<u8> = ids
            .iter()
            .flat_map(|&id| model.token_piece(id).unwrap())
            .collect();
        assert_eq!(pieces, input.as_bytes(), "case {i}: {input:?}");
    }
    assert_eq!(differing, vec![4, 5, 25, 26, 27, 28, 45]);
}

#[test]
fn sampling_stop_strings_cancellation_and_limits() {
    let (_dir, registry) = registry();
    let model = load(&registry, &gpt2()).unwrap();
    // "a b c" tokenizes to ids inside the model's 1000-token vocabulary.
    let text = || Prompt::Text("a b c".into());
    let (prompt_ids, generated, full, _) = generate(&model, greedy(text(), 8));
    assert_eq!(prompt_ids, vec![64, 275, 269]);
    assert_eq!(generated, vec![706, 706, 706, 706, 706, 706, 706, 374]);
    assert_eq!(full, " after after after after after after after r");

    let sampled = |seed: u64| {
        let mut r = greedy(text(), 24);
        r.sampling = SamplingParams {
            temperature: 1.5,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            ..SamplingParams::default()
        };
        generate(&model, r).1
    };
    assert_eq!(sampled(7), sampled(7));
    assert_ne!(sampled(7), sampled(8));

    // A stop string across tokens is cut, and generation ends there.
    let mut r = greedy(text(), 8);
    r.stop = vec!["ter aft".into()].into();
    let (_, ids_seen, cut, reason) = generate(&model, r);
    assert_eq!(reason, StopReason::StopString);
    assert_eq!(cut, " af");
    assert_eq!(ids_seen, vec![706, 706]);

    // Cancellation: the sink says stop at the 3rd token.
    let mut seen = 0;
    let stats = model
        .generate(greedy(text(), 8), |_, _| {
            seen += 1;
            if seen == 3 {
                SinkControl::Stop
            } else {
                SinkControl::Continue
            }
        })
        .unwrap();
    assert_eq!((seen, stats.generated_tokens), (3, 3));
    assert_eq!(stats.stop_reason(), StopReason::Cancelled);

    // A context beyond the trained 512 positions is capped to it.
    let big = load_ctx(&registry, &gpt2(), 600).unwrap();
    assert_eq!(big.info().context_length, 512);

    let small = load_ctx(&registry, &gpt2(), 6).unwrap();
    let (_, generated, _, reason) = generate(&small, greedy(ids(&[0, 0, 0, 52]), 0));
    assert_eq!(reason, StopReason::ContextFull);
    assert_eq!(generated, vec![204, 204, 204]);
    let err = small
        .generate(greedy(ids(&[1, 2, 3, 4, 5, 6, 7]), 1), |_, _| {
            SinkControl::Continue
        })
        .unwrap_err();
    let (kind, message) = engine_error(&err);
    assert_eq!(kind, ErrorKind::ContextOverflow);
    assert!(message.contains(" 6"), "{message}");

    // Ids outside the model's vocabulary are refused before the graph sees them.
    for prompt in [ids(&[1, 1000]), Prompt::Text("Hello world".into())] {
        let err = model
            .generate(greedy(prompt, 2), |_, _| SinkControl::Continue)
            .unwrap_err();
        let (kind, message) = engine_error(&err);
        assert_eq!(kind, ErrorKind::InvalidRequest);
        assert!(message.contains("1000 tokens"), "{message}");
    }
}

/// Protobuf writer for the few ONNX messages the test graph needs.
mod proto {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A varint field.
    pub(super) fn int(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }

    /// A length-delimited field (string, bytes or message).
    pub(super) fn bytes(out: &mut Vec<u8>, field: u64, v: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }

    /// ValueInfoProto: a float tensor of shape [n].
    pub(super) fn float_vector(name: &str, n: u64) -> Vec<u8> {
        let mut dim = Vec::new();
        int(&mut dim, 1, n); // Dimension.dim_value
        let mut shape = Vec::new();
        bytes(&mut shape, 1, &dim); // TensorShapeProto.dim
        let mut tensor = Vec::new();
        int(&mut tensor, 1, 1); // elem_type FLOAT
        bytes(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor); // TypeProto.tensor_type
        let mut info = Vec::new();
        bytes(&mut info, 1, name.as_bytes());
        bytes(&mut info, 2, &ty);
        info
    }
}

/// A valid ONNX model that is not a decoder: `y = Identity(x)`, float[4].
fn identity_model() -> Vec<u8> {
    let mut node = Vec::new();
    proto::bytes(&mut node, 1, b"x"); // input
    proto::bytes(&mut node, 2, b"y"); // output
    proto::bytes(&mut node, 4, b"Identity"); // op_type
    let mut graph = Vec::new();
    proto::bytes(&mut graph, 1, &node);
    proto::bytes(&mut graph, 2, b"identity");
    proto::bytes(&mut graph, 11, &proto::float_vector("x", 4));
    proto::bytes(&mut graph, 12, &proto::float_vector("y", 4));
    let mut opset = Vec::new();
    proto::bytes(&mut opset, 1, b"");
    proto::int(&mut opset, 2, 13);
    let mut model = Vec::new();
    proto::int(&mut model, 1, 8); // ir_version
    proto::bytes(&mut model, 2, b"runanywhere-tests"); // producer_name
    proto::bytes(&mut model, 7, &graph);
    proto::bytes(&mut model, 8, &opset);
    model
}

/// A copy of the GPT-2 folder in `tmp/name` with `edit` applied.
fn copy_gpt2(tmp: &Path, name: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(gpt2()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    edit(&dir);
    dir
}

#[test]
fn bad_models_are_clear_errors_and_the_host_lives_on() {
    let (_dir, registry) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(gpt2().join("past.onnx")).unwrap();

    let mut cases: Vec<(String, PathBuf, ErrorKind, &str)> = Vec::new();
    for cut in [0usize, 1, 100, 10_000, good.len() / 2, good.len() - 1] {
        let name = format!("truncated-{cut}");
        let bytes = &good[..cut];
        let dir = copy_gpt2(tmp.path(), &name, |d| {
            std::fs::write(d.join("past.onnx"), bytes).unwrap();
        });
        cases.push((name, dir, ErrorKind::InvalidModel, "past.onnx"));
    }
    let no_tokenizer = copy_gpt2(tmp.path(), "no-tokenizer", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    });
    cases.push((
        "no tokenizer".into(),
        no_tokenizer,
        ErrorKind::InvalidModel,
        "tokenizer.json",
    ));
    let bad_tokenizer = copy_gpt2(tmp.path(), "bad-tokenizer", |d| {
        std::fs::write(d.join("tokenizer.json"), b"{\"not\": \"a tokenizer\"}").unwrap();
    });
    cases.push((
        "bad tokenizer".into(),
        bad_tokenizer,
        ErrorKind::InvalidModel,
        "tokenizer.json",
    ));
    // A valid graph that is not a decoder, as a folder and as a file.
    let identity = copy_gpt2(tmp.path(), "identity", |d| {
        std::fs::write(d.join("past.onnx"), identity_model()).unwrap();
    });
    cases.push((
        "identity folder".into(),
        identity.clone(),
        ErrorKind::UnsupportedFormat,
        "no `input_ids` input",
    ));
    cases.push((
        "identity file".into(),
        identity.join("past.onnx"),
        ErrorKind::UnsupportedFormat,
        "no `input_ids` input",
    ));
    cases.push((
        "missing".into(),
        tmp.path().join("nope"),
        ErrorKind::InvalidModel,
        "nope",
    ));

    for (name, path, kind, needle) in &cases {
        let err = load(&registry, path).unwrap_err();
        let (got, message) = engine_error(&err);
        assert_eq!(got, *kind, "{name}: {message}");
        assert!(message.contains(needle), "{name}: {message}");
    }

    // Still alive, and still generating.
    let model = load(&registry, &gpt2()).unwrap();
    let e = &expected_greedy()[0];
    let (_, generated, _, _) = generate(&model, greedy(ids(&e.prompt), 6));
    assert_eq!(generated, e.sequence[e.prompt.len()..]);

    // Through the CLI: routed to the onnx engine by format, exit code 1, clear message.
    let dir = plugin_dir(&["onnx"]);
    for (path, needle) in [
        (identity.join("past.onnx"), "unsupported_format"),
        (tmp.path().join("truncated-10000"), "invalid_model"),
    ] {
        let out = run_cli(
            Some(dir.path()),
            &[
                "run",
                "--model",
                path.to_str().unwrap(),
                "--prompt-ids",
                "1 2",
            ],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("onnx") && err.contains(needle), "{err}");
    }
}

/// `engines --json` with the onnx plugin copied to `dir` (away from the repository's
/// `.ort/`) and `ORT_DYLIB_PATH` as given.
fn engines_row(dir: &Path, ort_dylib_path: Option<&Path>) -> serde_json::Value {
    let mut cmd = Command::new(binary());
    cmd.arg("--plugins-dir")
        .arg(dir)
        .args(["engines", "--json"])
        .env_remove("RUNANYWHERE_PLUGIN_PATH")
        .env("RUNANYWHERE_LOG", "error");
    match ort_dylib_path {
        Some(p) => cmd.env("ORT_DYLIB_PATH", p),
        None => cmd.env_remove("ORT_DYLIB_PATH"),
    };
    let rows = json_output(&cmd.output().unwrap());
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "onnx")
        .cloned()
        .expect("an onnx row")
}

#[test]
fn a_missing_or_wrong_onnx_runtime_makes_the_engine_unavailable_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = plugin_library("runanywhere_onnx");
    let copy = tmp.path().join(lib.file_name().unwrap());
    std::fs::copy(&lib, &copy).unwrap();
    let manifest =
        std::fs::read_to_string(runanywhere_tests::workspace_dir().join("manifests/onnx.toml"))
            .unwrap()
            .replace(
                "library = \"runanywhere_onnx\"",
                &format!("library = {:?}", copy.to_string_lossy()),
            );
    std::fs::write(tmp.path().join("onnx.toml"), manifest).unwrap();

    let row = engines_row(tmp.path(), None);
    assert_eq!(row["status"], "unavailable", "{row}");
    assert_eq!(row["kind"], "init_failed", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("was not found"), "{reason}");
    assert!(
        reason.contains("scripts/fetch-onnxruntime.sh") && reason.contains("ORT_DYLIB_PATH"),
        "{reason}"
    );

    // A file that is not ONNX Runtime, and a path that does not exist.
    let row = engines_row(tmp.path(), Some(&lib));
    let reason = row["reason"].as_str().unwrap();
    assert_eq!(row["status"], "unavailable");
    assert!(reason.contains("not an ONNX Runtime library"), "{reason}");
    let row = engines_row(tmp.path(), Some(&tmp.path().join("nope.so")));
    let reason = row["reason"].as_str().unwrap();
    assert!(reason.contains("does not name a file"), "{reason}");

    // Pointed at the real library, the copied plugin works.
    let ort = std::fs::read_dir(runanywhere_tests::workspace_dir().join(".ort"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libonnxruntime.so.")
        })
        .expect("ONNX Runtime in .ort/ (scripts/fetch-onnxruntime.sh)");
    let row = engines_row(tmp.path(), Some(&ort));
    assert_eq!(row["status"], "ok", "{row}");
}
