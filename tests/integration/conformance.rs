//! Cross-engine conformance: every engine on every model format it should read gives
//! exactly the reference (the formats include the safetensors and ONNX folders
//! `runanywhere convert` writes), and every engine that can load a vocabulary tokenizes
//! it the same way.
//!
//! Both tests are tables. Adding an engine adds rows; a row either expects the exact
//! reference or says explicitly that the engine refuses the format (asserting how), so
//! nothing is ever skipped silently.

use std::path::{Path, PathBuf};

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind as ErrorKind, GenerateRequest, Model, Prompt, SamplingParams, SinkControl,
    StopReason,
};
use runanywhere_tests::{
    assert_reference_json, data_dir, json_output, plugin_dir, run_cli, tinystories_references,
    vocab_cases,
};

/// The engines under test (plugin manifests).
const ENGINES: [&str; 5] = ["llama-cpp", "candle", "onnx", "executorch", "litert"];

/// The references run 201 positions; stories260K's GGUF says 128.
const CONTEXT: u32 = 256;

fn registry() -> (tempfile::TempDir, Registry) {
    runanywhere_tests::registry_with(&ENGINES)
}

/// Loads with one thread (tests run in parallel on small machines).
fn load(
    registry: &Registry,
    engine: &str,
    path: &Path,
    vocab_only: bool,
) -> Result<Model, runanywhere::Error> {
    runanywhere_tests::load_model(registry, engine, path, CONTEXT, vocab_only)
}

/// A model format of stories260K, as the tests build it.
#[derive(Debug, Clone, Copy)]
enum Format {
    /// `stories260K.gguf`.
    Gguf,
    /// `stories260K.bin` (llama2.c), with `tok512.bin` next to it.
    Llama2c,
    /// A Hugging Face folder written by `write_hf_folder` from the GGUF.
    SafetensorsFromGguf,
    /// A Hugging Face folder written by `write_hf_folder` from the llama2.c checkpoint.
    SafetensorsFromLlama2c,
    /// An ONNX folder written by `write_onnx_folder` from the GGUF.
    OnnxFromGguf,
    /// An ONNX folder written by `write_onnx_folder` from the llama2.c checkpoint.
    OnnxFromLlama2c,
    /// `executorch/stories260K.pte` (ExecuTorch's own exporter), copied with `tok512.bin`
    /// beside it (a `.pte` holds no tokenizer).
    Pte,
    /// `litert/stories260K.tflite` (litert-torch), likewise with `tok512.bin` beside it.
    Tflite,
}

impl Format {
    fn path(self, scratch: &Path) -> PathBuf {
        let stories = |ext: &str| data_dir().join(format!("tinystories/stories260K.{ext}"));
        let folder = |source: PathBuf, name: &str| {
            let out = scratch.join(name);
            if !out.exists() {
                runanywhere_convert::write_hf_folder(&source, &out).unwrap();
            }
            out
        };
        let onnx = |source: PathBuf, name: &str| {
            let out = scratch.join(name);
            if !out.exists() {
                let options = runanywhere_convert::ConvertOptions::default();
                runanywhere_convert::write_onnx_folder(&source, &out, &options).unwrap();
            }
            out
        };
        match self {
            Format::Gguf => stories("gguf"),
            Format::Llama2c => stories("bin"),
            Format::SafetensorsFromGguf => folder(stories("gguf"), "hf-from-gguf"),
            Format::SafetensorsFromLlama2c => folder(stories("bin"), "hf-from-llama2c"),
            Format::OnnxFromGguf => onnx(stories("gguf"), "onnx-from-gguf"),
            Format::OnnxFromLlama2c => onnx(stories("bin"), "onnx-from-llama2c"),
            Format::Pte => runanywhere_tests::with_tokenizer(
                &scratch.join("pte"),
                "executorch/stories260K.pte",
            ),
            Format::Tflite => runanywhere_tests::with_tokenizer(
                &scratch.join("tflite"),
                "litert/stories260K.tflite",
            ),
        }
    }
}

/// What a cell of the table expects.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exactly the greedy reference ids for every prompt.
    Reference,
    /// The load fails with one of these kinds: the engine does not read the format.
    Refused(&'static [ErrorKind]),
}

const NOT_MINE: &[ErrorKind] = &[ErrorKind::UnsupportedFormat, ErrorKind::InvalidModel];

/// Engines × formats.
const MATRIX: &[(&str, Format, Expect)] = &[
    ("llama-cpp", Format::Gguf, Expect::Reference),
    ("llama-cpp", Format::Llama2c, Expect::Refused(NOT_MINE)),
    (
        "llama-cpp",
        Format::SafetensorsFromGguf,
        Expect::Refused(NOT_MINE),
    ),
    ("candle", Format::Gguf, Expect::Reference),
    ("candle", Format::Llama2c, Expect::Reference),
    ("candle", Format::SafetensorsFromGguf, Expect::Reference),
    ("candle", Format::SafetensorsFromLlama2c, Expect::Reference),
    ("candle", Format::OnnxFromGguf, Expect::Refused(NOT_MINE)),
    ("llama-cpp", Format::OnnxFromGguf, Expect::Refused(NOT_MINE)),
    // ONNX Runtime on the folders `runanywhere convert --to onnx` writes.
    ("onnx", Format::Gguf, Expect::Refused(NOT_MINE)),
    ("onnx", Format::Llama2c, Expect::Refused(NOT_MINE)),
    (
        "onnx",
        Format::SafetensorsFromGguf,
        Expect::Refused(NOT_MINE),
    ),
    ("onnx", Format::OnnxFromGguf, Expect::Reference),
    ("onnx", Format::OnnxFromLlama2c, Expect::Reference),
    // ExecuTorch on the program its own exporter wrote; nobody else reads a .pte.
    ("executorch", Format::Pte, Expect::Reference),
    ("executorch", Format::Gguf, Expect::Refused(NOT_MINE)),
    ("executorch", Format::Llama2c, Expect::Refused(NOT_MINE)),
    (
        "executorch",
        Format::OnnxFromGguf,
        Expect::Refused(NOT_MINE),
    ),
    ("llama-cpp", Format::Pte, Expect::Refused(NOT_MINE)),
    ("candle", Format::Pte, Expect::Refused(NOT_MINE)),
    ("onnx", Format::Pte, Expect::Refused(NOT_MINE)),
    // LiteRT on the model litert-torch wrote.
    ("litert", Format::Tflite, Expect::Reference),
    ("litert", Format::Gguf, Expect::Refused(NOT_MINE)),
    ("litert", Format::Pte, Expect::Refused(NOT_MINE)),
    ("executorch", Format::Tflite, Expect::Refused(NOT_MINE)),
    ("llama-cpp", Format::Tflite, Expect::Refused(NOT_MINE)),
    ("candle", Format::Tflite, Expect::Refused(NOT_MINE)),
    ("onnx", Format::Tflite, Expect::Refused(NOT_MINE)),
];

#[test]
fn every_engine_and_format_gives_the_greedy_reference_exactly() {
    let (_dir, registry) = registry();
    check_matrix(&registry);
}

/// The same table with every engine in a worker process: the same ids, the same
/// refusals (error kinds cross the process boundary intact).
#[test]
fn through_workers_every_engine_gives_the_same_ids_and_refusals() {
    let (_dir, registry) = runanywhere_tests::worker_registry_with(&ENGINES);
    check_matrix(&registry);
}

fn check_matrix(registry: &Registry) {
    let scratch = tempfile::tempdir().unwrap();
    let references = tinystories_references();
    for &(engine, format, expect) in MATRIX {
        let cell = format!("{engine} × {format:?}");
        let path = format.path(scratch.path());
        match expect {
            Expect::Refused(kinds) => {
                let err = load(registry, engine, &path, false).unwrap_err();
                let kind = err.engine_error().map(|e| e.kind());
                assert!(
                    kind.is_some_and(|k| kinds.contains(&k)),
                    "{cell}: expected one of {kinds:?}, got {err}"
                );
            }
            Expect::Reference => {
                let model =
                    load(registry, engine, &path, false).unwrap_or_else(|e| panic!("{cell}: {e}"));
                for r in &references {
                    let mut request = GenerateRequest::new(Prompt::Text(r.prompt.as_str().into()));
                    request.max_tokens = (201 - r.prompt_ids.len()) as u32;
                    request.sampling = SamplingParams::greedy();
                    let mut ids = Vec::new();
                    let stats = model
                        .generate(request, |id, _| {
                            ids.push(id);
                            SinkControl::Continue
                        })
                        .unwrap_or_else(|e| panic!("{cell}: {e}"));
                    assert_eq!(
                        stats.prompt_ids.to_vec(),
                        r.prompt_ids,
                        "{cell}, prompt {:?}",
                        r.prompt
                    );
                    assert_eq!(
                        ids,
                        r.all_ids[r.prompt_ids.len()..],
                        "{cell}, prompt {:?}",
                        r.prompt
                    );
                    assert_eq!(stats.stop_reason(), StopReason::MaxTokens, "{cell}");
                }
            }
        }
    }
}

/// Which engines load which vocabulary (vocab-only); `false` rows must be refused as
/// unsupported.
const VOCABS: &[(&str, &[(&str, bool)])] = &[
    ("llama-spm", &[("llama-cpp", true), ("candle", true)]),
    ("phi-3", &[("llama-cpp", true), ("candle", true)]),
    ("gpt-2", &[("llama-cpp", true), ("candle", true)]),
    ("deepseek-coder", &[("llama-cpp", true), ("candle", true)]),
    ("bert-bge", &[("llama-cpp", true), ("candle", false)]),
];

#[test]
fn engines_tokenize_the_vocabulary_vectors_identically() {
    let (_dir, registry) = registry();
    for &(vocab, engines) in VOCABS {
        let path = data_dir().join(format!("vocab/ggml-vocab-{vocab}.gguf"));
        let cases = vocab_cases(&path);
        assert_eq!(cases.len(), 46, "{vocab}");
        let mut loaded = Vec::new();
        for &(engine, loads) in engines {
            let result = load(&registry, engine, &path, true);
            if !loads {
                let err = result.unwrap_err();
                assert_eq!(
                    err.engine_error().map(|e| e.kind()),
                    Some(ErrorKind::UnsupportedFormat),
                    "{engine} × {vocab}: {err}"
                );
                continue;
            }
            let model = result.unwrap_or_else(|e| panic!("{engine} × {vocab}: {e}"));
            for (i, (input, expected)) in cases.iter().enumerate() {
                let ids = model.tokenize(input, false, false).unwrap();
                assert_eq!(&ids, expected, "{engine} × {vocab}, case {i}: {input:?}");
            }
            loaded.push((engine, model));
        }
        // Beyond the vectors: with special tokens added and parsed, and with special-token
        // text in the input, every engine that loads the vocabulary agrees with the first.
        let extra = [
            "<s>Hello</s> world",
            "<|endoftext|>Hi",
            "<｜begin▁of▁sentence｜>x",
        ];
        let Some(((first, reference), rest)) = loaded.split_first() else {
            continue;
        };
        for (engine, model) in rest {
            for input in cases.iter().map(|(i, _)| i.as_str()).chain(extra) {
                for (add, parse) in [(true, false), (true, true), (false, true)] {
                    assert_eq!(
                        model.tokenize(input, add, parse).unwrap(),
                        reference.tokenize(input, add, parse).unwrap(),
                        "{engine} vs {first} × {vocab}, add_special={add} parse_special={parse}: {input:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_cli_runs_candle_on_every_format_and_routes_the_others_to_it() {
    let dir = plugin_dir(&ENGINES);
    let scratch = tempfile::tempdir().unwrap();
    let r = &tinystories_references()[1];
    assert_eq!(r.prompt, "Once upon a time");
    let max = (201 - r.prompt_ids.len()).to_string();
    let cases = [
        (Format::Gguf, Some("candle"), "candle"),
        (Format::Gguf, None, "llama-cpp"),
        (Format::Llama2c, None, "candle"),
        (Format::SafetensorsFromLlama2c, None, "candle"),
    ];
    for (format, engine, expected_engine) in cases {
        let path = format.path(scratch.path());
        let path = path.to_str().unwrap();
        let mut args = vec![
            "run",
            "--model",
            path,
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--ctx-size",
            "256",
            "--threads",
            "1",
            "--json",
        ];
        if let Some(e) = engine {
            args.extend(["--engine", e]);
        }
        args.push(&r.prompt);
        let v = json_output(&run_cli(Some(dir.path()), &args, None));
        assert_eq!(v["engine"], expected_engine, "{format:?}");
        assert_reference_json(&v, r, &format!("{format:?}"));
    }
}

#[test]
fn the_cli_converts_to_onnx_and_safetensors_and_the_results_give_the_reference() {
    let dir = plugin_dir(&ENGINES);
    let scratch = tempfile::tempdir().unwrap();
    let r = &tinystories_references()[1];
    assert_eq!(r.prompt, "Once upon a time");
    let max = (201 - r.prompt_ids.len()).to_string();
    let cases = [
        ("gguf", "onnx", "onnx"),
        ("bin", "onnx", "onnx"),
        ("bin", "safetensors", "candle"),
    ];
    for (ext, to, engine) in cases {
        let source = data_dir().join(format!("tinystories/stories260K.{ext}"));
        let out = scratch.path().join(format!("{to}-from-{ext}"));
        let (source, out_str) = (source.to_str().unwrap(), out.to_str().unwrap());
        let converted = run_cli(
            Some(dir.path()),
            &["convert", "--to", to, source, out_str],
            None,
        );
        let stdout = String::from_utf8_lossy(&converted.stdout);
        assert!(
            converted.status.success(),
            "{ext} → {to}: {}",
            runanywhere_tests::stderr(&converted)
        );
        assert!(
            stdout.contains("5 layers, hidden 64, 8 heads (4 key/value), vocab 512"),
            "{stdout}"
        );
        // Routed by format: the ONNX folder goes to onnx, the safetensors one to candle.
        let args = [
            "run",
            "--model",
            out_str,
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
        ];
        let v = json_output(&run_cli(Some(dir.path()), &args, None));
        assert_eq!(v["engine"], engine, "{ext} → {to}");
        assert_reference_json(&v, r, &format!("{ext} → {to}"));
    }
}
