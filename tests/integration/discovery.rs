//! Manifest discovery and the unavailable ledger.

use runanywhere::registry::{Registry, UnavailableKind};
use runanywhere_tests::{json_output, plugin_dir, run_cli};

const ALL_FAULTS: &[&str] = &[
    "mock",
    "faulty-init-panic",
    "faulty-init-error",
    "faulty-load-panic",
    "faulty-load-error",
    "faulty-generate-panic",
    "faulty-generate-error",
    "faulty-tokenize-panic",
    "future-api",
    "abi-mismatch",
    "manifest-api-mismatch",
    "missing-library",
    "wrong-platform",
    "format-mismatch",
    "broken-manifest",
];

#[test]
fn every_fault_lands_in_the_ledger_with_its_kind_and_the_rest_load() {
    let dir = plugin_dir(ALL_FAULTS);
    let registry = Registry::discover(&[dir.path().to_path_buf()]);

    let mut ok: Vec<&str> = registry.engines().iter().map(|e| e.id()).collect();
    ok.sort();
    assert_eq!(
        ok,
        [
            "faulty-generate-error",
            "faulty-generate-panic",
            "faulty-load-error",
            "faulty-load-panic",
            "faulty-tokenize-panic",
            "mock",
        ]
    );

    let kind_of = |id: &str| {
        registry
            .unavailable()
            .iter()
            .find(|u| u.id == id)
            .unwrap_or_else(|| panic!("{id} not in the ledger: {:?}", registry.unavailable()))
            .kind
    };
    assert_eq!(kind_of("faulty-init-panic"), UnavailableKind::InitFailed);
    assert_eq!(kind_of("faulty-init-error"), UnavailableKind::InitFailed);
    assert_eq!(kind_of("future-api"), UnavailableKind::ApiVersionMismatch);
    assert_eq!(kind_of("abi-mismatch"), UnavailableKind::AbiMismatch);
    assert_eq!(
        kind_of("manifest-api-mismatch"),
        UnavailableKind::ApiVersionMismatch
    );
    assert_eq!(kind_of("missing-library"), UnavailableKind::LibraryMissing);
    assert_eq!(
        kind_of("wrong-platform"),
        UnavailableKind::UnsupportedPlatform
    );
    assert_eq!(kind_of("format-mismatch"), UnavailableKind::FormatMismatch);
    assert_eq!(kind_of("broken-manifest"), UnavailableKind::InvalidManifest);
    assert_eq!(registry.unavailable().len(), 9);

    let reason = |id: &str| {
        registry
            .unavailable()
            .iter()
            .find(|u| u.id == id)
            .map(|u| u.reason.clone())
            .unwrap_or_default()
    };
    assert!(reason("faulty-init-panic").contains("deliberate panic in init"));
    assert!(reason("faulty-init-error").contains("deliberate init failure"));
    assert!(
        reason("future-api").contains("v9999"),
        "{}",
        reason("future-api")
    );
    assert!(reason("manifest-api-mismatch").contains("v2"));
    assert!(reason("missing-library").contains("not found"));
}

#[test]
fn engines_json_lists_ok_and_unavailable_entries() {
    let dir = plugin_dir(ALL_FAULTS);
    let out = run_cli(Some(dir.path()), &["engines", "--json"], None);
    let rows = json_output(&out);
    let rows = rows.as_array().expect("array");
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no row {id}"))
    };
    let mock = row("mock");
    assert_eq!(mock["status"], "ok");
    assert_eq!(mock["formats"], serde_json::json!(["mock"]));
    assert_eq!(mock["name"], "Mock engine");
    assert!(mock["library"].as_str().unwrap().ends_with(".so") || !cfg!(target_os = "linux"));
    assert_eq!(
        mock["capabilities"],
        serde_json::json!(["streaming", "tokenize", "logprobs"])
    );
    for id in [
        "faulty-init-panic",
        "faulty-init-error",
        "future-api",
        "abi-mismatch",
        "missing-library",
        "broken-manifest",
    ] {
        assert_eq!(row(id)["status"], "unavailable", "{id}");
        assert!(!row(id)["reason"].as_str().unwrap().is_empty(), "{id}");
    }
    assert_eq!(row("abi-mismatch")["kind"], "abi_mismatch");
}

#[test]
fn first_directory_wins_for_a_duplicate_id_and_env_path_is_searched() {
    let first = plugin_dir(&["mock"]);
    let second = plugin_dir(&["mock", "faulty-load-error"]);
    let registry = Registry::discover(&[first.path().to_path_buf(), second.path().to_path_buf()]);
    let mock = registry.engine("mock").unwrap();
    assert!(mock.manifest().path.starts_with(first.path()));
    assert!(registry.engine("faulty-load-error").is_some());
    // The second mock is listed, not dropped: unavailable, naming the one that won.
    let [duplicate] = registry.unavailable() else {
        panic!("one ledger entry expected: {:?}", registry.unavailable());
    };
    assert_eq!(duplicate.id, "mock");
    assert_eq!(duplicate.kind, UnavailableKind::DuplicateId);
    assert!(duplicate.manifest.starts_with(second.path()));
    assert!(
        duplicate.reason.starts_with(&format!(
            "duplicate id of {}",
            first.path().join("mock.toml").display()
        )),
        "{}",
        duplicate.reason
    );
    let out = run_cli(Some(first.path()), &["engines", "--json"], None);
    let rows = json_output(&out);
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "mock" && r["status"] == "unavailable" && r["kind"] == "duplicate_id"));

    // RUNANYWHERE_PLUGIN_PATH is searched too (after --plugins-dir).
    let out = runanywhere_tests::cli_command(None, &["engines", "--json"], &[])
        .env("RUNANYWHERE_PLUGIN_PATH", second.path())
        .output()
        .unwrap();
    let rows = json_output(&out);
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "faulty-load-error" && r["status"] == "ok"));
}

#[test]
fn the_built_layout_finds_the_workspace_plugins_without_flags() {
    let out = run_cli(None, &["engines", "--json"], None);
    let rows = json_output(&out);
    let mock = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "mock")
        .expect("mock found next to the binary");
    assert_eq!(mock["status"], "ok");
}

#[test]
fn plugin_install_checks_copies_lists_and_removes() {
    let data = tempfile::tempdir().unwrap();
    let env = [("XDG_DATA_HOME", data.path().to_str().unwrap())];
    let cli = |args: &[&str]| {
        runanywhere_tests::cli_command(None, args, &env)
            .output()
            .unwrap()
    };
    let installed_dir = data.path().join("runanywhere").join("plugins");

    // A plugin built elsewhere: the mock library under another id.
    let source = tempfile::tempdir().unwrap();
    let lib = runanywhere_tests::plugin_library("runanywhere_mock");
    std::fs::write(
        source.path().join("mock-copy.toml"),
        format!(
            "id = \"mock-copy\"\nlibrary = {:?}\napi_version = 1\nformats = [\"mock\"]\n",
            lib.to_string_lossy()
        ),
    )
    .unwrap();
    let out = cli(&["plugin", "install", source.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", runanywhere_tests::stderr(&out));
    assert!(installed_dir.join("mock-copy.toml").is_file());
    assert!(installed_dir.join(lib.file_name().unwrap()).is_file());

    let rows = json_output(&cli(&["plugin", "list", "--json"]));
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "mock-copy")
        .expect("installed plugin listed")
        .clone();
    assert_eq!(row["status"], "ok");
    assert!(row["manifest"]
        .as_str()
        .unwrap()
        .starts_with(installed_dir.to_str().unwrap()));
    let out = cli(&[
        "run",
        "--engine",
        "mock-copy",
        "--model",
        "mock",
        "-n",
        "3",
        "hi",
    ]);
    assert!(out.status.success(), "{}", runanywhere_tests::stderr(&out));

    // Twice: refused.
    let out = cli(&["plugin", "install", source.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(runanywhere_tests::stderr(&out).contains("already installed"));

    // A plugin that would not load is refused with the reason, and nothing is copied.
    let broken = plugin_dir(&["future-api"]);
    let out = cli(&["plugin", "install", broken.path().to_str().unwrap()]);
    let err = runanywhere_tests::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("would not load") && err.contains("v9999"),
        "{err}"
    );
    assert!(!installed_dir.join("future-api.toml").exists());

    // Removed: gone from the directory and from the list.
    let out = cli(&["plugin", "remove", "mock-copy"]);
    assert!(out.status.success(), "{}", runanywhere_tests::stderr(&out));
    assert!(!installed_dir.join("mock-copy.toml").exists());
    assert!(!installed_dir.join(lib.file_name().unwrap()).exists());
    let rows = json_output(&cli(&["plugin", "list", "--json"]));
    assert!(!rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == "mock-copy"));
    let out = cli(&["plugin", "remove", "mock-copy"]);
    assert!(runanywhere_tests::stderr(&out).contains("no plugin `mock-copy` is installed"));
}
