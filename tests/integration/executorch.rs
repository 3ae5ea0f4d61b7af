//! The ExecuTorch engine on the `.pte` ExecuTorch's own exporter made from stories260K
//! (`shared/data/executorch/`): the greedy reference through the library and the CLI,
//! damaged and non-LLM programs, a missing runtime, and ExecuTorch beside llama.cpp in
//! one process (the wheel's libraries export XNNPACK/cpuinfo symbols that must stay
//! local).
//!
//! The exact-reference check on all four prompts is the conformance table's
//! (`ExecuTorch × pte`); these tests cover what is particular to this engine.

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

fn pte() -> PathBuf {
    data_dir().join("executorch/stories260K.pte")
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

fn greedy_ids(model: &Model, prompt: &str, max: u32) -> (Vec<u32>, StopReason) {
    let mut request = GenerateRequest::new(Prompt::Text(prompt.into()));
    request.max_tokens = max;
    request.sampling = SamplingParams::greedy();
    let mut ids = Vec::new();
    let stats = model
        .generate(request, |id, _| {
            ids.push(id);
            SinkControl::Continue
        })
        .unwrap();
    (ids, stats.stop_reason())
}

#[test]
fn run_json_gives_the_reference_and_verify_knows_the_format() {
    let dir = plugin_dir(&["executorch"]);
    let r = &tinystories_references()[1];
    let max = (201 - r.prompt_ids.len()).to_string();
    let (pte, tok) = (pte(), tok512());
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            pte.to_str().unwrap(),
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
    // Routed by content (the ET12 identifier), not by --engine.
    assert_eq!(v["engine"], "executorch", "{v}");
    assert_reference_json(&v, r, "executorch run --json");

    let out = run_cli(None, &["verify", pte.to_str().unwrap(), "--json"], None);
    let v = json_output(&out);
    let v = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(v["format"], "pte", "{v}");
    assert!(v["problem"].is_null(), "{v}");
    let methods = v["facts"]["details"]["pte.methods"].as_str().unwrap();
    assert!(methods.starts_with("forward,get_max_seq_len,"), "{methods}");
}

/// A copy of the fixture in `dir` with `edit` applied to its bytes.
fn damaged(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(pte()).unwrap();
    edit(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn damaged_and_non_llm_programs_are_clear_errors_and_the_host_lives_on() {
    let (_dir, registry) = runanywhere_tests::registry_with(&["executorch"]);
    let tmp = tempfile::tempdir().unwrap();
    let len = std::fs::metadata(pte()).unwrap().len() as usize;
    let tok = tok512();
    let mut cases: Vec<(PathBuf, ErrorKind, &str)> = Vec::new();
    for cut in [7usize, 30, 1000, len / 2, len - 1] {
        let p = damaged(tmp.path(), &format!("cut-{cut}.pte"), |b| b.truncate(cut));
        cases.push((p, ErrorKind::InvalidModel, "truncated"));
    }
    // A flipped byte in the middle of the FlatBuffer's vtables: ExecuTorch's verifier
    // (or ours) refuses it; either way an invalid model, never a crash.
    let p = damaged(tmp.path(), "flipped.pte", |b| b[0x40] ^= 0xff);
    cases.push((p, ErrorKind::InvalidModel, "flipped.pte"));
    // A valid program whose methods are not an LLM's: `forward` renamed.
    let p = damaged(tmp.path(), "no-forward.pte", |b| {
        let at = b.windows(8).position(|w| w == b"\x07\0\0\0forw").unwrap() + 4;
        b[at..at + 7].copy_from_slice(b"predict");
    });
    cases.push((p, ErrorKind::UnsupportedFormat, "it has no forward method"));
    for (path, want, needle) in &cases {
        let err = load_with(&registry, "executorch", path, Some(&tok), 0).unwrap_err();
        let (got, message) = kind(&err);
        assert_eq!(got, Some(*want), "{}: {message}", path.display());
        assert!(message.contains(needle), "{}: {message}", path.display());
    }
    // Not a program at all, routed to the engine explicitly.
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let (got, message) =
        kind(&load_with(&registry, "executorch", &gguf, Some(&tok), 0).unwrap_err());
    assert_eq!(got, Some(ErrorKind::UnsupportedFormat), "{message}");
    // No tokenizer next to the program and none given.
    let alone = tmp.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(pte(), alone.join("m.pte")).unwrap();
    let (got, message) =
        kind(&load_with(&registry, "executorch", &alone.join("m.pte"), None, 0).unwrap_err());
    assert_eq!(got, Some(ErrorKind::InvalidModel), "{message}");
    assert!(
        message.contains("--tokenizer") && message.contains("tok512.bin"),
        "{message}"
    );
    // A context larger than the program's KV cache is refused with the limit.
    let (got, message) =
        kind(&load_with(&registry, "executorch", &pte(), Some(&tok), 300).unwrap_err());
    assert_eq!(got, Some(ErrorKind::InvalidRequest), "{message}");
    assert!(message.contains("256"), "{message}");

    // Still alive: with tok512.bin next to the program it is found without --tokenizer,
    // and a generation that would pass position 256 stops at the full context.
    std::fs::copy(&tok, alone.join("tok512.bin")).unwrap();
    let model = load_with(&registry, "executorch", &alone.join("m.pte"), None, 0).unwrap();
    assert_eq!(model.info().context_length, 256);
    let r = &tinystories_references()[1];
    let (ids, reason) = greedy_ids(&model, &r.prompt, 400);
    assert_eq!(reason, StopReason::ContextFull);
    // Every one of the 256 positions was run; the last token sampled from it is emitted
    // (the kit's rule for every engine), so the text holds 257 ids.
    assert_eq!(ids.len() + r.prompt_ids.len(), 257);
    assert_eq!(
        ids[..201 - r.prompt_ids.len()],
        r.all_ids[r.prompt_ids.len()..]
    );

    // Through the CLI: exit code 1 and the engine's message.
    let dir = plugin_dir(&["executorch"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--model",
            cases[2].0.to_str().unwrap(),
            "--tokenizer",
            tok.to_str().unwrap(),
            "hello",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}

#[test]
fn executorch_and_llama_cpp_in_one_process_both_give_the_reference() {
    let (_dir, registry) = runanywhere_tests::registry_with(&["executorch", "llama-cpp"]);
    let et = load_with(&registry, "executorch", &pte(), Some(&tok512()), 256).unwrap();
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let llama = load_with(&registry, "llama-cpp", &gguf, None, 256).unwrap();
    // Interleaved, so each runs after the other's libraries have done work.
    for r in &tinystories_references() {
        let max = (201 - r.prompt_ids.len()) as u32;
        for (name, model) in [("executorch", &et), ("llama-cpp", &llama)] {
            let (ids, _) = greedy_ids(model, &r.prompt, max);
            assert_eq!(
                ids,
                r.all_ids[r.prompt_ids.len()..],
                "{name}, prompt {:?}",
                r.prompt
            );
        }
    }
}

#[test]
fn a_missing_executorch_runtime_makes_the_engine_unavailable_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // The plugin copied away from the repository's .executorch/.
    let lib = plugin_library("runanywhere_executorch");
    let copy = tmp.path().join(lib.file_name().unwrap());
    std::fs::copy(&lib, &copy).unwrap();
    let manifest = std::fs::read_to_string(
        runanywhere_tests::workspace_dir().join("manifests/executorch.toml"),
    )
    .unwrap()
    .replace(
        "library = \"runanywhere_executorch\"",
        &format!("library = {:?}", copy.to_string_lossy()),
    );
    std::fs::write(tmp.path().join("executorch.toml"), manifest).unwrap();
    let row = |env: Option<&Path>| {
        let mut cmd = cli_command(Some(tmp.path()), &["engines", "--json"], &[]);
        match env {
            Some(p) => cmd.env("RUNANYWHERE_EXECUTORCH_DIR", p),
            None => cmd.env_remove("RUNANYWHERE_EXECUTORCH_DIR"),
        };
        let rows = json_output(&cmd.output().unwrap());
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == "executorch")
            .cloned()
            .expect("an executorch row")
    };
    let r = row(None);
    assert_eq!(r["status"], "unavailable", "{r}");
    assert_eq!(r["kind"], "init_failed", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("was not found") && reason.contains("scripts/fetch-executorch.sh"),
        "{reason}"
    );
    let r = row(Some(&tmp.path().join("nope")));
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("RUNANYWHERE_EXECUTORCH_DIR") && reason.contains("does not exist"),
        "{reason}"
    );
    // Pointed at the repository's runtime, the copied plugin works.
    let r = row(Some(
        &runanywhere_tests::workspace_dir().join(".executorch"),
    ));
    assert_eq!(r["status"], "ok", "{r}");
}
