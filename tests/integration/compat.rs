//! Plugins built in the past keep working: the mock engine built against a frozen copy
//! of plugin ABI 1.0 (`tests/compat/`, built here with its own target directory) loads
//! in today's host and runs.

use std::path::PathBuf;
use std::sync::OnceLock;

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind, GenerateRequest, LoadRequest, Prompt, SamplingParams, SinkControl, StopReason,
};
use runanywhere_tests::plugin_dir;

/// Builds `tests/compat` once per test process and returns the 1.0 mock's library.
fn abi_1_0_mock() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        runanywhere_tests::build_out_of_tree(
            "tests/compat/Cargo.toml",
            "compat",
            "runanywhere_mock_abi_1_0",
        )
    })
}

/// A plugin directory with the 1.0 mock (its manifest pointing at the library built
/// under target/compat) and today's mock.
fn registry() -> (tempfile::TempDir, Registry) {
    let lib = abi_1_0_mock();
    let dir = plugin_dir(&["mock"]);
    std::fs::write(
        dir.path().join("mock-abi-1-0.toml"),
        format!(
            "id = \"mock-abi-1-0\"\nlibrary = {:?}\napi_version = 1\nformats = [\"mock\"]\n",
            lib.to_string_lossy()
        ),
    )
    .unwrap();
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    (dir, registry)
}

fn request(prompt: Prompt, max_tokens: u32) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt);
    r.max_tokens = max_tokens;
    r.sampling = SamplingParams::greedy();
    r
}

#[test]
fn the_abi_crate_keeps_a_version_compatible_with_the_released_one() {
    use abi_stable::library::RootModule;
    // abi_stable refuses plugins whose plugin-api version is not loosely compatible
    // (for 0.x, the same minor) with the host's: it must stay 0.1.x whatever the
    // workspace's version becomes (see plugin-api/src/version.rs).
    let host = runanywhere_plugin_api::PluginModRef::VERSION_STRINGS
        .parsed()
        .unwrap();
    let released = abi_stable::sabi_types::VersionStrings::new("0.1.0")
        .parsed()
        .unwrap();
    assert!(
        host.is_loosely_compatible(released),
        "plugin-api {host} would refuse plugins built against 0.1.0"
    );
}

#[test]
fn a_plugin_built_against_abi_1_0_loads_and_runs_in_todays_host() {
    let (_dir, registry) = registry();
    let old = registry
        .engine("mock-abi-1-0")
        .unwrap_or_else(|| panic!("refused: {:?}", registry.unavailable()));
    let new = registry.engine("mock").unwrap();
    let load = |engine: &runanywhere::Engine| {
        engine
            .load_model(LoadRequest {
                model_path: "mock".into(),
                ..Default::default()
            })
            .unwrap()
    };
    let (old, new) = (load(old), load(new));
    // Same vocabulary, through the same ABI calls.
    let text = "hello world café →!";
    assert_eq!(
        old.tokenize(text, true, false).unwrap(),
        new.tokenize(text, true, false).unwrap()
    );
    assert_eq!(old.info().vocab_size, new.info().vocab_size);
    // It reports no per-model capabilities (they came later): the host derives them.
    assert!(old.capabilities().names().is_empty());
    assert_eq!(
        new.capabilities().names(),
        ["streaming", "tokenize", "logprobs"]
    );

    // The extension calls came later too: asking the old plugin is a clear Unsupported,
    // while today's gives each token its score (greedy: the most likely alternative).
    let err = old
        .generate_with_logprobs(request(Prompt::Text("hello".into()), 5), 2, None, |_| {
            SinkControl::Continue
        })
        .unwrap_err();
    assert_eq!(err.kind(), runanywhere::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("built before them"), "{err}");
    let mut scored = Vec::new();
    new.generate_with_logprobs(request(Prompt::Text("hello".into()), 5), 2, None, |t| {
        scored.push((t.id, t.logprob, t.top.to_vec()));
        SinkControl::Continue
    })
    .unwrap();
    assert_eq!(scored.len(), 5);
    for (id, logprob, top) in &scored {
        assert_eq!((top.len(), top[0].id, top[0].logprob), (2, *id, *logprob));
        assert!(*logprob <= 0.0 && top[1].logprob <= top[0].logprob);
    }

    // It generates, and the host's sink and stop reasons work with it.
    let mut ids = Vec::new();
    let stats = old
        .generate(request(Prompt::Text("hello".into()), 20), |id, _| {
            ids.push(id);
            SinkControl::Continue
        })
        .unwrap();
    assert_eq!(
        (ids.len(), stats.stop_reason()),
        (20, StopReason::MaxTokens)
    );
    let mut seen = 0;
    let stats = old
        .generate(request(Prompt::Text("hello".into()), 20), |_, _| {
            seen += 1;
            if seen == 3 {
                SinkControl::Stop
            } else {
                SinkControl::Continue
            }
        })
        .unwrap();
    assert_eq!((seen, stats.stop_reason()), (3, StopReason::Cancelled));
    // Its errors keep their kinds.
    let err = old
        .generate(
            request(Prompt::Ids(vec![1, 1_000_000].into()), 1),
            |_, _| SinkControl::Continue,
        )
        .unwrap_err();
    assert_eq!(
        err.engine_error().map(|e| e.kind()),
        Some(EngineErrorKind::InvalidRequest)
    );
}
