//! The LiteRT engine on the `.tflite` Google's litert-torch made from stories260K
//! (`shared/data/litert/`): the greedy reference through the CLI, damaged and non-decoder
//! models, a missing runtime, and LiteRT beside llama.cpp and ExecuTorch in one process.
//!
//! The exact-reference check on all four prompts is the conformance table's
//! (`LiteRT × tflite`); these tests cover what is particular to this engine.

use std::path::{Path, PathBuf};

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind as ErrorKind, GenerateRequest, Model, Prompt, SamplingParams, SinkControl,
    StopReason,
};
use runanywhere_tests::{
    assert_reference_json, cli_command, data_dir, json_output, plugin_dir, plugin_library, run_cli,
    stderr, tinystories_references,
};

fn tflite() -> PathBuf {
    data_dir().join("litert/stories260K.tflite")
}

fn tok512() -> PathBuf {
    data_dir().join("tinystories/tok512.bin")
}

fn load_with(
    registry: &Registry,
    engine: &str,
    path: &Path,
    tokenizer: Option<&Path>,
    ctx: u32,
) -> Result<Model, runanywhere::Error> {
    let options = runanywhere::LoadOptions {
        tokenizer: tokenizer.map(Path::to_path_buf),
        context_length: ctx,
        threads: 1,
        ..Default::default()
    };
    registry
        .engine(engine)
        .unwrap_or_else(|| panic!("no engine {engine}"))
        .load_model(options.request(path, None))
}

fn kind(e: &runanywhere::Error) -> (Option<ErrorKind>, String) {
    (e.engine_error().map(|x| x.kind()), e.to_string())
}

fn greedy(model: &Model, prompt: Prompt, max: u32) -> (Vec<u32>, StopReason) {
    let mut request = GenerateRequest::new(prompt);
    request.max_tokens = max;
    request.sampling = SamplingParams::greedy();
    let mut ids = Vec::new();
    let stats = model
        .generate(request, |id, _| {
            ids.push(id);
            SinkControl::Continue
        })
        .unwrap_or_else(|e| panic!("{}: {e}", model.engine_id()));
    (ids, stats.stop_reason())
}

#[test]
fn run_json_gives_the_reference_and_verify_lists_the_signatures() {
    let dir = plugin_dir(&["litert"]);
    let r = &tinystories_references()[3];
    let max = (201 - r.prompt_ids.len()).to_string();
    let (model, tok) = (tflite(), tok512());
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            model.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--threads",
            "1",
            "--json",
            &r.prompt,
        ],
        None,
    );
    let v = json_output(&out);
    // Routed by content (the TFL3 identifier).
    assert_eq!(v["engine"], "litert", "{v}");
    assert_reference_json(&v, r, "litert run --json");

    let out = run_cli(None, &["verify", model.to_str().unwrap(), "--json"], None);
    let v = json_output(&out);
    let v = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(v["format"], "tflite", "{v}");
    assert!(v["problem"].is_null(), "{v}");
    let signatures = v["facts"]["details"]["tflite.signatures"].as_str().unwrap();
    let mut keys: Vec<&str> = signatures.split(',').collect();
    keys.sort_unstable();
    assert_eq!(keys, ["decode", "prefill_128", "prefill_32"], "{v}");
}

fn damaged(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(tflite()).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn damaged_and_non_decoder_models_are_clear_errors_and_the_host_lives_on() {
    let (_dir, registry) = runanywhere_tests::registry_with(&["litert"]);
    let tmp = tempfile::tempdir().unwrap();
    let len = std::fs::metadata(tflite()).unwrap().len() as usize;
    let tok = tok512();
    let mut cases: Vec<(PathBuf, ErrorKind, &str)> = Vec::new();
    for cut in [5usize, 1000, len / 2, len - 1] {
        let p = damaged(tmp.path(), &format!("cut-{cut}.tflite"), |b| {
            b.truncate(cut)
        });
        cases.push((p, ErrorKind::InvalidModel, "cut-"));
    }
    // A valid model whose signatures are not a decoder's: `decode` renamed.
    let p = damaged(tmp.path(), "no-decode.tflite", |b| {
        let at = b
            .windows(10)
            .position(|w| w == b"\x06\0\0\0decode")
            .unwrap()
            + 4;
        b[at..at + 6].copy_from_slice(b"encode");
    });
    cases.push((
        p,
        ErrorKind::UnsupportedFormat,
        "it has no decode signature",
    ));
    for (path, want, needle) in &cases {
        let err = load_with(&registry, "litert", path, Some(&tok), 0).unwrap_err();
        let (got, message) = kind(&err);
        assert_eq!(got, Some(*want), "{}: {message}", path.display());
        assert!(message.contains(needle), "{}: {message}", path.display());
    }
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let (got, message) = kind(&load_with(&registry, "litert", &gguf, Some(&tok), 0).unwrap_err());
    assert_eq!(got, Some(ErrorKind::UnsupportedFormat), "{message}");
    let (got, message) =
        kind(&load_with(&registry, "litert", &tflite(), Some(&tok), 300).unwrap_err());
    assert_eq!(got, Some(ErrorKind::InvalidRequest), "{message}");
    assert!(message.contains("256"), "{message}");

    // Still alive: a prompt of 190 reference ids (prefill_128, then the 62 left in a
    // second prefill_128 ending exactly at the cache's end... of its rows 128..256)
    // continues exactly as the reference, and a long generation stops at the full
    // context.
    let model = load_with(&registry, "litert", &tflite(), Some(&tok), 0).unwrap();
    let r = &tinystories_references()[2];
    let (ids, _) = greedy(&model, Prompt::Ids(r.all_ids[..190].to_vec().into()), 11);
    assert_eq!(ids, r.all_ids[190..201]);
    let (ids, reason) = greedy(&model, Prompt::Text(r.prompt.as_str().into()), 400);
    assert_eq!(reason, StopReason::ContextFull);
    assert_eq!(ids.len() + r.prompt_ids.len(), 257);
    assert_eq!(
        ids[..201 - r.prompt_ids.len()],
        r.all_ids[r.prompt_ids.len()..]
    );

    let dir = plugin_dir(&["litert"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            cases[2].0.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("invalid_model"), "{}", stderr(&out));
}

#[test]
fn litert_executorch_and_llama_cpp_in_one_process_all_give_the_reference() {
    let (_dir, registry) = runanywhere_tests::registry_with(&["litert", "executorch", "llama-cpp"]);
    let tok = tok512();
    let lt = load_with(&registry, "litert", &tflite(), Some(&tok), 256).unwrap();
    let pte = data_dir().join("executorch/stories260K.pte");
    let et = load_with(&registry, "executorch", &pte, Some(&tok), 256).unwrap();
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let llama = load_with(&registry, "llama-cpp", &gguf, None, 256).unwrap();
    for r in &tinystories_references() {
        let max = (201 - r.prompt_ids.len()) as u32;
        for model in [&lt, &et, &llama] {
            let (ids, _) = greedy(model, Prompt::Text(r.prompt.as_str().into()), max);
            assert_eq!(
                ids,
                r.all_ids[r.prompt_ids.len()..],
                "{}, {:?}",
                model.engine_id(),
                r.prompt
            );
        }
    }
}

#[test]
fn a_missing_tflite_runtime_makes_the_engine_unavailable_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = plugin_library("runanywhere_litert");
    let copy = tmp.path().join(lib.file_name().unwrap());
    std::fs::copy(&lib, &copy).unwrap();
    let manifest =
        std::fs::read_to_string(runanywhere_tests::workspace_dir().join("manifests/litert.toml"))
            .unwrap()
            .replace(
                "library = \"runanywhere_litert\"",
                &format!("library = {:?}", copy.to_string_lossy()),
            );
    std::fs::write(tmp.path().join("litert.toml"), manifest).unwrap();
    let row = |env: Option<&Path>| {
        let mut cmd = cli_command(Some(tmp.path()), &["engines", "--json"], &[]);
        match env {
            Some(p) => cmd.env("RUNANYWHERE_LITERT_LIB", p),
            None => cmd.env_remove("RUNANYWHERE_LITERT_LIB"),
        };
        let rows = json_output(&cmd.output().unwrap());
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "litert")
            .cloned()
            .expect("a litert row")
    };
    let r = row(None);
    assert_eq!(r["status"], "unavailable", "{r}");
    assert_eq!(r["kind"], "init_failed", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("was not found") && reason.contains("scripts/fetch-litert.sh"),
        "{reason}"
    );
    // A library that is not TFLite (the plugin itself).
    let r = row(Some(&lib));
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("TfLiteVersion"), "{reason}");
    let r = row(Some(
        &runanywhere_tests::workspace_dir().join(".litert/liblitert-lm.so"),
    ));
    assert_eq!(r["status"], "ok", "{r}");
}
