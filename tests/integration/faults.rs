//! Faulty plugins: panics and errors become clear errors; the host lives on.

use runanywhere::registry::Registry;
use runanywhere::{
    EngineErrorKind as ErrorKind, Error, GenerateRequest, LoadRequest, Prompt, SinkControl,
};
use runanywhere_tests::{plugin_dir, run_cli, stderr};

fn load(registry: &Registry, id: &str) -> Result<runanywhere::Model, Error> {
    registry.engine(id).expect(id).load_model(LoadRequest {
        model_path: "any".into(),
        ..Default::default()
    })
}

fn engine_error(e: &Error) -> (ErrorKind, String) {
    let inner = e
        .engine_error()
        .unwrap_or_else(|| panic!("not an engine error: {e}"));
    (inner.kind(), inner.message().to_string())
}

#[test]
fn panics_and_errors_in_each_call_become_errors_and_the_host_goes_on() {
    let dir = plugin_dir(&[
        "mock",
        "faulty-load-panic",
        "faulty-load-error",
        "faulty-generate-panic",
        "faulty-generate-error",
        "faulty-tokenize-panic",
        "faulty-info-panic",
    ]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);

    // A panicking model `info` fails the load with the panic, not a silent default.
    let err = load(&registry, "faulty-info-panic").unwrap_err();
    let (kind, message) = engine_error(&err);
    assert_eq!(kind, ErrorKind::Internal);
    assert!(
        message.starts_with("plugin panicked in model info: faulty plugin: deliberate panic"),
        "{message}"
    );

    let err = load(&registry, "faulty-load-panic").unwrap_err();
    let (kind, message) = engine_error(&err);
    assert_eq!(kind, ErrorKind::Internal);
    assert!(
        message.starts_with(
            "plugin panicked in load_model: faulty plugin: deliberate panic in load_model (at "
        ),
        "{message}"
    );
    assert!(message.contains("faulty/src/lib.rs:"), "{message}");

    let err = load(&registry, "faulty-load-error").unwrap_err();
    assert_eq!(engine_error(&err).0, ErrorKind::InvalidModel);

    let model = load(&registry, "faulty-tokenize-panic").unwrap();
    let err = model.tokenize("abc", true, false).unwrap_err();
    assert_eq!(engine_error(&err).0, ErrorKind::Internal);

    for (id, kind) in [
        ("faulty-generate-panic", ErrorKind::Internal),
        ("faulty-generate-error", ErrorKind::OutOfMemory),
    ] {
        let model = load(&registry, id).unwrap();
        let mut seen = 0;
        let err = model
            .generate(GenerateRequest::new(Prompt::Text("x".into())), |_, _| {
                seen += 1;
                SinkControl::Continue
            })
            .unwrap_err();
        assert_eq!(engine_error(&err).0, kind, "{id}");
        assert_eq!(seen, 2, "{id}: tokens before the fault still streamed");
    }

    // After all of that, the same process still generates with another plugin.
    let mock = load_mock(&registry);
    let mut request = GenerateRequest::new(Prompt::Text("hello".into()));
    request.max_tokens = 5;
    let stats = mock
        .generate(request, |_, _| SinkControl::Continue)
        .unwrap();
    assert_eq!(stats.generated_tokens, 5);
}

fn load_mock(registry: &Registry) -> runanywhere::Model {
    registry
        .engine("mock")
        .unwrap()
        .load_model(LoadRequest {
            model_path: "mock".into(),
            ..Default::default()
        })
        .unwrap()
}

#[test]
fn a_panicking_sink_stops_generation_and_the_panic_surfaces_in_the_host() {
    let dir = plugin_dir(&["mock"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    let mock = load_mock(&registry);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mock.generate(
            GenerateRequest::new(Prompt::Text("hello".into())),
            |_, _| panic!("host sink bug"),
        )
    }));
    let payload = result.expect_err("the sink's panic is re-raised");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"host sink bug"));
    // The model is still usable.
    let mut request = GenerateRequest::new(Prompt::Text("hello".into()));
    request.max_tokens = 3;
    assert_eq!(
        mock.generate(request, |_, _| SinkControl::Continue)
            .unwrap()
            .generated_tokens,
        3
    );
}

#[test]
fn the_cli_reports_a_plugin_panic_as_an_error_and_exits_nonzero() {
    let dir = plugin_dir(&["faulty-generate-panic", "faulty-load-panic"]);
    let out = run_cli(
        Some(dir.path()),
        &[
            "run",
            "--engine",
            "faulty-generate-panic",
            "--model",
            "x",
            "hi",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "error: engine `faulty-generate-panic`: internal: plugin panicked in generate"
        ),
        "{err}"
    );
    // Tokens generated before the panic were streamed.
    assert_eq!(String::from_utf8_lossy(&out.stdout), "xx");

    let out = run_cli(
        Some(dir.path()),
        &["run", "--engine", "faulty-load-panic", "--model", "x", "hi"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("plugin panicked in load_model"));
}

#[test]
fn cancel_from_the_sink_stops_within_one_token() {
    let dir = plugin_dir(&["mock"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    let mock = load_mock(&registry);
    let mut seen = 0;
    let stats = mock
        .generate(
            GenerateRequest::new(Prompt::Text("hello".into())),
            |_, _| {
                seen += 1;
                if seen == 3 {
                    SinkControl::Stop
                } else {
                    SinkControl::Continue
                }
            },
        )
        .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(stats.generated_tokens, 3);
    assert_eq!(stats.stop_reason(), runanywhere::StopReason::Cancelled);
}
