//! Routing a model to an engine, and routing errors.

use runanywhere::registry::Registry;
use runanywhere::Error;
use runanywhere_tests::{plugin_dir, run_cli, stderr};

#[test]
fn engine_flag_wins_and_unknown_or_unavailable_engines_are_named() {
    let dir = plugin_dir(&["mock", "faulty-init-error"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    assert_eq!(
        registry.select("mock".as_ref(), Some("mock")).unwrap().id(),
        "mock"
    );
    match registry.select("mock".as_ref(), Some("nope")) {
        Err(Error::UnknownEngine { id, available }) => {
            assert_eq!(id, "nope");
            let mock = available.0.iter().find(|e| e.id == "mock").unwrap();
            assert_eq!(mock.formats, ["mock"]);
            assert_eq!(mock.unavailable, None);
            let faulty = available
                .0
                .iter()
                .find(|e| e.id == "faulty-init-error")
                .unwrap();
            assert!(faulty
                .unavailable
                .as_deref()
                .unwrap()
                .contains("init failed"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        registry.select("mock".as_ref(), Some("faulty-init-error")),
        Err(Error::EngineUnavailable { .. })
    ));
}

#[test]
fn format_detection_routes_and_a_format_without_engine_lists_the_engines() {
    let dir = plugin_dir(&["mock"]);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);
    let models = tempfile::tempdir().unwrap();
    let gguf = models.path().join("m.gguf");
    std::fs::write(&gguf, b"GGUF\x03\x00\x00\x00").unwrap();
    match registry.select(&gguf, None) {
        Err(Error::NoEngineForFormat {
            format, available, ..
        }) => {
            assert_eq!(format, "gguf");
            assert_eq!(available.to_string(), "mock (reads mock)");
        }
        other => panic!("{other:?}"),
    }
    let junk = models.path().join("junk.bin");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    assert!(matches!(
        registry.select(&junk, None),
        Err(Error::Detect(
            runanywhere::format::DetectError::Unknown { .. }
        ))
    ));
}

#[test]
fn cli_routing_errors_name_the_file_and_the_engines() {
    let dir = plugin_dir(&["mock"]);
    let out = run_cli(
        Some(dir.path()),
        &["run", "--engine", "nope", "--model", "x", "hi"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no engine `nope`"),
        "{}",
        stderr(&out)
    );

    let models = tempfile::tempdir().unwrap();
    let junk = models.path().join("junk.bin");
    std::fs::write(&junk, b"definitely not a model").unwrap();
    let out = run_cli(
        Some(dir.path()),
        &["run", "--model", junk.to_str().unwrap(), "hi"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("junk.bin") && err.contains("unrecognised model format"),
        "{err}"
    );

    let out = run_cli(
        Some(dir.path()),
        &["run", "--model", "/no/such/model.gguf", "hi"],
        None,
    );
    assert!(stderr(&out).contains("model not found: /no/such/model.gguf"));
}
