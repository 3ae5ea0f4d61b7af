//! The ONNX Runtime plugin on real data: onnxruntime-genai's tiny GPT-2 reproduces its
//! greedy references exactly, tokenization, request semantics, bad models (truncated,
//! no tokenizer, not a decoder) and a missing ONNX Runtime, each a clear error with the
//! host alive afterwards. Then the decoders `runanywhere convert --to onnx` writes, beyond
//! the conformance table's stories260K: external data, an F16 GGUF without grouped-query
//! attention, a Q8_0 GGUF, the protobuf encoding, and the CLI's refusals.
//!
//! Needs ONNX Runtime in the repository's `.ort/` (`scripts/fetch-onnxruntime.sh`, which
//! `scripts/setup.sh` runs).

use std::path::{Path, PathBuf};

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind as ErrorKind, Error, GenerateRequest, LoadRequest, Model, Prompt,
    SamplingParams, SinkControl, StopReason,
};
use runanywhere_tests::{
    cli_command, data_dir, generate, json_ids, json_output, plugin_dir, plugin_library, run_cli,
    stderr, vocab_cases,
};

fn registry() -> (tempfile::TempDir, Registry) {
    runanywhere_tests::registry_with(&["onnx"])
}

fn gpt2() -> PathBuf {
    data_dir().join("onnx/tiny-random-gpt2-fp32")
}

/// Loads with one thread: tests run in parallel on small machines.
fn load_ctx(registry: &Registry, path: &Path, ctx: u32) -> Result<Model, Error> {
    runanywhere_tests::load_model(registry, "onnx", path, ctx, false)
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
    assert_eq!(json_ids(&v["prompt_ids"]), e.prompt);
    assert_eq!(json_ids(&v["generated_ids"]), e.sequence[e.prompt.len()..]);
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
fn sampling_stop_strings_and_context_limits_on_tiny_gpt2() {
    // Cancellation, max_tokens, context overflow, out-of-vocabulary ids and vocab-only
    // loads are the engine contract (contract.rs); this covers what is particular to
    // this model: exact ids, a stop string across tokens, the trained-context limit,
    // and a tokenizer that knows more ids than the model.
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

    // A context beyond the trained 512 positions (absolute position embeddings) is
    // refused with the limit, not silently shortened.
    let err = load_ctx(&registry, &gpt2(), 600).unwrap_err();
    let (kind, message) = engine_error(&err);
    assert_eq!(kind, ErrorKind::InvalidRequest);
    assert!(
        message.contains("a context length of 600") && message.contains("at most 512"),
        "{message}"
    );
    assert_eq!(
        load_ctx(&registry, &gpt2(), 512)
            .unwrap()
            .info()
            .context_length,
        512
    );

    let small = load_ctx(&registry, &gpt2(), 6).unwrap();
    let (_, generated, _, reason) = generate(&small, greedy(ids(&[0, 0, 0, 52]), 0));
    assert_eq!(reason, StopReason::ContextFull);
    assert_eq!(generated, vec![204, 204, 204]);

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
    let mut cmd = cli_command(Some(dir), &["engines", "--json"], &[]);
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

#[test]
fn convert_writes_the_same_protobuf_as_the_hand_written_encoder() {
    // An independent check of the field numbers of `runanywhere-convert`'s messages for
    // ValueInfoProto / TypeProto / TensorShapeProto, which its own tests cannot give.
    use runanywhere_convert::onnx::proto::{
        Dimension, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto,
        FLOAT,
    };
    let model = ModelProto {
        ir_version: Some(8),
        producer_name: Some("runanywhere-tests".into()),
        graph: Some(GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                op_type: Some("Identity".into()),
                ..Default::default()
            }],
            name: Some("identity".into()),
            input: vec![ValueInfoProto::tensor(
                "x",
                FLOAT,
                vec![Dimension::fixed(4)],
            )],
            output: vec![ValueInfoProto::tensor(
                "y",
                FLOAT,
                vec![Dimension::fixed(4)],
            )],
            ..Default::default()
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        ..Default::default()
    };
    assert_eq!(model.encode_to_vec(), identity_model());
}

/// Greedy generation of every stories260K reference on `model`.
fn assert_tinystories_references(model: &Model, what: &str) {
    for r in runanywhere_tests::tinystories_references() {
        let max = (201 - r.prompt_ids.len()) as u32;
        let (prompt_ids, generated, _, reason) =
            generate(model, greedy(Prompt::Text(r.prompt.as_str().into()), max));
        assert_eq!(prompt_ids, r.prompt_ids, "{what}: {:?}", r.prompt);
        assert_eq!(
            generated,
            r.all_ids[r.prompt_ids.len()..],
            "{what}: {:?}",
            r.prompt
        );
        assert_eq!(reason, StopReason::MaxTokens, "{what}");
    }
}

#[test]
fn stories260k_converted_with_external_data_gives_the_greedy_reference() {
    let (_dir, registry) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stories-external");
    let options = runanywhere_convert::ConvertOptions {
        external_data: true,
        ..Default::default()
    };
    let source = data_dir().join("tinystories/stories260K.gguf");
    let written = runanywhere_convert::write_onnx_folder(&source, &out, &options).unwrap();
    assert!(written.files.contains(&"model.onnx_data".to_string()));
    let model = load_ctx(&registry, &out, 256).unwrap();
    let info = model.info();
    assert_eq!(info.architecture.as_str(), "llama");
    assert_eq!(info.vocab_size, 512);
    assert_eq!(info.context_length, 256);
    assert_eq!(info.train_context_length, 512);
    assert_eq!(info.eog.as_slice(), &[2]);
    assert_tinystories_references(&model, "external data");
}

#[test]
fn an_f16_gguf_without_gqa_converts_to_onnx_and_generates() {
    // llama-2-tiny-random: F16 weights, 2 heads of width 4 (no grouped-query attention),
    // a separate classifier, Llama 2's 32000-token vocabulary. Its top-2 logit margins
    // are ~0.0006, so (as the data's README says) it is a smoke test: the tokenizer must
    // be exact, the generated ids only of the right number — another CPU's kernels may
    // flip a near-tied token.
    let (_dir, registry) = registry();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny");
    let gguf = data_dir().join("gguf/llama-2-tiny-random.gguf");
    let options = runanywhere_convert::ConvertOptions::default();
    let written = runanywhere_convert::write_onnx_folder(&gguf, &out, &options).unwrap();
    assert_eq!(written.params.num_key_value_heads, 2);
    assert!(!written.params.tie_word_embeddings);
    let model = load(&registry, &out).unwrap();
    let text =
        std::fs::read_to_string(data_dir().join("gguf/llama-2-tiny-random.greedy.txt")).unwrap();
    let ids = |s: &str| -> Vec<u32> { s.split_whitespace().map(|t| t.parse().unwrap()).collect() };
    let mut checked = 0;
    for block in text.split("### prompt: ").skip(1) {
        let mut lines = block.lines();
        let prompt = lines.next().unwrap();
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(ids)
                .unwrap()
        };
        let (prompt_ids, all_ids) = (field("prompt_ids: "), field("all_ids: "));
        let max = (all_ids.len() - prompt_ids.len()) as u32;
        let (got_prompt, generated, _, _) =
            generate(&model, greedy(Prompt::Text(prompt.into()), max));
        assert_eq!(got_prompt, prompt_ids, "{prompt:?}");
        assert_eq!(
            generated.len(),
            all_ids.len() - prompt_ids.len(),
            "{prompt:?}"
        );
        assert!(generated.iter().all(|&id| id < 32000), "{prompt:?}");
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn convert_refusals_through_the_cli_are_clear_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let busy = tmp.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "x").unwrap();
    let out = tmp.path().join("out");
    let out_str = out.to_str().unwrap();
    let stories = data_dir().join("tinystories/stories260K.gguf");
    let cases = [
        (
            data_dir().join("vocab/ggml-vocab-gpt-2.gguf"),
            out_str,
            "the architecture \"gpt2\" (only \"llama\" is read) is not supported",
        ),
        (
            data_dir().join("vocab/ggml-vocab-llama-spm.gguf"),
            out_str,
            "vocabulary-only",
        ),
        (tmp.path().join("missing.gguf"), out_str, "missing.gguf"),
        (
            stories.clone(),
            busy.to_str().unwrap(),
            "--force replaces the output of an earlier conversion",
        ),
    ];
    for (source, dest, needle) in cases {
        let before = listing();
        let result = run_cli(
            None,
            &["convert", "--to", "onnx", source.to_str().unwrap(), dest],
            None,
        );
        assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
        let err = stderr(&result);
        assert!(
            err.contains("cannot convert to ONNX") && err.contains(needle),
            "{err}"
        );
        assert_eq!(listing(), before, "{}", source.display());
    }
    assert!(busy.join("keep.txt").is_file());

    // --force does not replace a folder that is not a conversion's output...
    let force = |dest: &str| {
        run_cli(
            None,
            &[
                "convert",
                "--to",
                "onnx",
                "--force",
                stories.to_str().unwrap(),
                dest,
            ],
            None,
        )
    };
    let result = force(busy.to_str().unwrap());
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("not the output of an earlier conversion"));
    assert!(busy.join("keep.txt").is_file());
    // ...but replaces an earlier conversion.
    let previous = tmp.path().join("previous");
    let first = force(previous.to_str().unwrap());
    assert!(first.status.success(), "{}", stderr(&first));
    let again = force(previous.to_str().unwrap());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(previous.join("model.onnx").is_file());
    assert_eq!(listing(), ["busy", "previous"]);
    // --external-data is an ONNX option.
    let result = run_cli(
        None,
        &[
            "convert",
            "--to",
            "safetensors",
            "--external-data",
            stories.to_str().unwrap(),
            out_str,
        ],
        None,
    );
    assert_eq!(result.status.code(), Some(1));
    assert!(stderr(&result).contains("--to onnx only"));
    assert!(!out.exists());
}

/// stories260K.gguf with every matrix whose rows split into 32-element blocks stored as
/// Q8_0 (the feed-forward down projection, 172 wide, stays F32), written by candle.
fn stories_q8_0(path: &Path) {
    use candle_core::quantized::gguf_file::{self, Content};
    use candle_core::quantized::{GgmlDType, QTensor};
    let source = data_dir().join("tinystories/stories260K.gguf");
    let mut file = std::fs::File::open(&source).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(&str, QTensor)> = names
        .iter()
        .map(|name| {
            let q = content
                .tensor(&mut file, name, &candle_core::Device::Cpu)
                .unwrap();
            let t = q.dequantize(&candle_core::Device::Cpu).unwrap();
            let q = match t.dims() {
                [_, cols] if cols % 32 == 0 => QTensor::quantize(&t, GgmlDType::Q8_0).unwrap(),
                _ => q,
            };
            (name.as_str(), q)
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, q)| (*n, q)).collect();
    let mut out = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut out, &metadata, &tensor_refs).unwrap();
}

#[test]
fn a_quantised_gguf_converts_to_onnx_that_agrees_with_candle_on_the_same_weights() {
    // ONNX Runtime on the ONNX folder and Candle on the safetensors folder, both written
    // from one Q8_0 GGUF: the same dequantised f32 weights, so the same greedy ids.
    let dir = plugin_dir(&["onnx", "candle"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("stories260K-q8_0.gguf");
    stories_q8_0(&gguf);
    let options = runanywhere_convert::ConvertOptions::default();
    let onnx_dir = tmp.path().join("onnx");
    let hf_dir = tmp.path().join("hf");
    runanywhere_convert::write_onnx_folder(&gguf, &onnx_dir, &options).unwrap();
    runanywhere_convert::write_hf_folder(&gguf, &hf_dir).unwrap();

    let generated = |engine: &str, path: &Path| -> Vec<u32> {
        let model = registry
            .engine(engine)
            .unwrap_or_else(|| panic!("{engine}: {:?}", registry.unavailable()))
            .load_model(LoadRequest {
                model_path: path.to_string_lossy().into_owned().into(),
                context_length: 256,
                threads: 1,
                ..Default::default()
            })
            .unwrap();
        let (prompt, ids, _, _) =
            generate(&model, greedy(Prompt::Text("Once upon a time".into()), 196));
        assert_eq!(prompt, vec![1, 403, 407, 261, 378]);
        ids
    };
    let onnx = generated("onnx", &onnx_dir);
    assert_eq!(onnx.len(), 196);
    assert_eq!(onnx, generated("candle", &hf_dir));
    // The quantisation is real: the weights differ from the F32 model's.
    let q = runanywhere_convert::gguf::GgufFile::open(&gguf).unwrap();
    assert_eq!(
        format!(
            "{:?}",
            q.tensor_info("blk.0.attn_q.weight").unwrap().ggml_dtype
        ),
        "Q8_0"
    );
    let f32_reference = &runanywhere_tests::tinystories_references()[1];
    assert_ne!(
        onnx,
        f32_reference.all_ids[5..],
        "Q8_0 weights change the greedy ids"
    );
}
