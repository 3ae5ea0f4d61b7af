//! The engine contract: one table of what every engine must do the same way, on a real
//! model each (stories260K for llama.cpp, Candle, ONNX Runtime, ExecuTorch and LiteRT, the
//! pseudo-model for the mock). A row that fails names the engine and the clause.
//!
//! | clause | request | every engine answers |
//! |---|---|---|
//! | cancel | the sink says stop at the 3rd token | 3 tokens, `Cancelled` |
//! | context overflow | a prompt as long as the context | `ContextOverflow`, naming both sizes |
//! | out-of-vocabulary ids | an id equal to the vocabulary size | `InvalidRequest`, naming the id |
//! | stop string | a string from the middle of the greedy output | the text before it, `StopString` |
//! | max_tokens | 5 | exactly 5 tokens, `MaxTokens` |
//! | vocab-only | generate on a vocabulary-only load | `InvalidRequest`; tokenize still works |

use std::path::{Path, PathBuf};

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind, Error, GenerateRequest, LoadRequest, Model, Prompt, SamplingParams,
    SinkControl, StopReason,
};
use runanywhere_tests::{data_dir, registry_with};

/// The engines and the model each runs (`scratch` holds the `.pte` with its tokenizer).
fn engines(scratch: &Path) -> Vec<(&'static str, PathBuf)> {
    let stories = data_dir().join("tinystories/stories260K.gguf");
    vec![
        ("llama-cpp", stories.clone()),
        ("candle", stories),
        ("onnx", data_dir().join("onnx/stories260K-genai/fp32")),
        (
            "executorch",
            runanywhere_tests::with_tokenizer(&scratch.join("pte"), "executorch/stories260K.pte"),
        ),
        (
            "litert",
            runanywhere_tests::with_tokenizer(&scratch.join("tflite"), "litert/stories260K.tflite"),
        ),
        ("mock", PathBuf::from("mock")),
    ]
}

fn load(
    registry: &Registry,
    engine: &str,
    path: &Path,
    ctx: u32,
    vocab_only: bool,
) -> Result<Model, Error> {
    registry.engine(engine).unwrap().load_model(LoadRequest {
        model_path: path.to_string_lossy().into_owned().into(),
        context_length: ctx,
        threads: 1,
        vocab_only,
        ..Default::default()
    })
}

fn request(prompt: Prompt, max_tokens: u32, stop: &[&str]) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.max_tokens = max_tokens;
    r.sampling = SamplingParams::greedy();
    r.stop = stop.iter().map(|s| (*s).into()).collect();
    r
}

fn text(prompt: &str) -> Prompt {
    Prompt::Text(prompt.into())
}

/// Generates, returning (ids, text, stop reason).
fn run(model: &Model, request: GenerateRequest) -> (Vec<u32>, String, StopReason) {
    let (mut ids, mut out) = (Vec::new(), String::new());
    let stats = model
        .generate(request, |id, piece| {
            ids.push(id);
            out.push_str(piece);
            SinkControl::Continue
        })
        .unwrap_or_else(|e| panic!("{}: {e}", model.engine_id()));
    assert_eq!(stats.generated_tokens as usize, ids.len());
    (ids, out, stats.stop_reason())
}

fn engine_error(err: &Error) -> (EngineErrorKind, String) {
    let e = err
        .engine_error()
        .unwrap_or_else(|| panic!("not an engine error: {err}"));
    (e.kind(), e.message().to_string())
}

#[test]
fn every_engine_keeps_the_same_contract() {
    let scratch = tempfile::tempdir().unwrap();
    let engines = engines(scratch.path());
    let names: Vec<&str> = engines.iter().map(|(e, _)| *e).collect();
    let (_dir, registry) = registry_with(&names);
    for (engine, path) in engines.clone() {
        let model =
            load(&registry, engine, &path, 256, false).unwrap_or_else(|e| panic!("{engine}: {e}"));
        let clause = |c: &str| format!("{engine}, {c}");

        // Cancel at the 3rd token.
        let mut seen = 0;
        let stats = model
            .generate(request(text("Once upon a time"), 50, &[]), |_, _| {
                seen += 1;
                if seen == 3 {
                    SinkControl::Stop
                } else {
                    SinkControl::Continue
                }
            })
            .unwrap();
        assert_eq!(
            (seen, stats.generated_tokens),
            (3, 3),
            "{}",
            clause("cancel")
        );
        assert_eq!(
            stats.stop_reason(),
            StopReason::Cancelled,
            "{}",
            clause("cancel")
        );

        // max_tokens.
        let (ids, _, reason) = run(&model, request(text("Once upon a time"), 5, &[]));
        assert_eq!(
            (ids.len(), reason),
            (5, StopReason::MaxTokens),
            "{}",
            clause("max_tokens")
        );

        // A stop string from the middle of the greedy output.
        let (_, full, _) = run(&model, request(text("Once upon a time"), 30, &[]));
        let chars: Vec<(usize, char)> = full.char_indices().collect();
        assert!(chars.len() > 16, "{}: {full:?}", clause("stop string"));
        let (from, to) = (chars[8].0, chars[12].0);
        let stop = &full[from..to];
        let (_, cut, reason) = run(&model, request(text("Once upon a time"), 30, &[stop]));
        let expected = &full[..full.find(stop).unwrap()];
        assert_eq!(cut, expected, "{}: stop {stop:?}", clause("stop string"));
        assert_eq!(reason, StopReason::StopString, "{}", clause("stop string"));

        // An id past the vocabulary.
        let vocab = model.info().vocab_size;
        let err = model
            .generate(
                request(Prompt::Ids(vec![1, vocab].into()), 1, &[]),
                |_, _| SinkControl::Continue,
            )
            .unwrap_err();
        let (kind, message) = engine_error(&err);
        assert_eq!(
            kind,
            EngineErrorKind::InvalidRequest,
            "{}",
            clause("out of vocabulary")
        );
        assert!(
            message.contains(&format!("token id {vocab} is out of range")),
            "{}: {message}",
            clause("out of vocabulary")
        );

        // A prompt as long as the context.
        let small = load(&registry, engine, &path, 8, false).unwrap();
        let err = small
            .generate(request(Prompt::Ids(vec![1; 8].into()), 1, &[]), |_, _| {
                SinkControl::Continue
            })
            .unwrap_err();
        let (kind, message) = engine_error(&err);
        assert_eq!(
            kind,
            EngineErrorKind::ContextOverflow,
            "{}",
            clause("context overflow")
        );
        assert!(
            message.contains("9 tokens") && message.contains("holds 8"),
            "{}: {message}",
            clause("context overflow")
        );

        // Vocabulary only: tokenizes, refuses to generate.
        let vocab_only = load(&registry, engine, &path, 0, true).unwrap();
        assert_eq!(
            vocab_only
                .tokenize("Once upon a time", true, false)
                .unwrap(),
            model.tokenize("Once upon a time", true, false).unwrap(),
            "{}",
            clause("vocab-only tokenize")
        );
        let err = vocab_only
            .generate(request(text("Once"), 1, &[]), |_, _| SinkControl::Continue)
            .unwrap_err();
        let (kind, message) = engine_error(&err);
        assert_eq!(
            kind,
            EngineErrorKind::InvalidRequest,
            "{}",
            clause("vocab-only")
        );
        assert!(
            message.contains("vocab-only"),
            "{}: {message}",
            clause("vocab-only")
        );
    }
}

#[test]
fn models_report_what_they_can_do() {
    let (_dir, registry) = registry_with(&["llama-cpp", "mock"]);
    let caps = |engine: &str, path: PathBuf, vocab_only: bool| {
        load(&registry, engine, &path, 0, vocab_only)
            .unwrap()
            .capabilities()
    };
    let stories = caps(
        "llama-cpp",
        data_dir().join("tinystories/stories260K.gguf"),
        false,
    );
    assert!(stories.contains(runanywhere::Capabilities::STREAMING));
    assert!(!stories.contains(runanywhere::Capabilities::CHAT_TEMPLATE));
    let phi3 = caps(
        "llama-cpp",
        data_dir().join("vocab/ggml-vocab-phi-3.gguf"),
        true,
    );
    assert!(
        phi3.contains(runanywhere::Capabilities::CHAT_TEMPLATE),
        "{:?}",
        phi3.names()
    );
    assert!(stories.contains(runanywhere::Capabilities::LOGPROBS));
    let mock = caps("mock", PathBuf::from("mock"), false);
    assert_eq!(mock.names(), ["streaming", "tokenize", "logprobs"]);
}
