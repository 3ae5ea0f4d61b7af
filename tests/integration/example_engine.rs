//! The third-party example engine (`examples/llama2c-engine`), built out of tree the way
//! an outsider builds a plugin (its own lockfile and target directory), reproduces
//! run.c's greedy references through the host: from a plugin directory given on the
//! command line, and installed with `runanywhere plugin install` into the user's plugin
//! directory.

use std::path::PathBuf;
use std::sync::OnceLock;

use runanywhere_tests::{
    assert_reference_json, cli_command, data_dir, json_output, stderr, tinystories_references,
    workspace_dir,
};

/// Builds the example once per test process; returns its library.
fn example_library() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        runanywhere_tests::build_out_of_tree(
            "examples/llama2c-engine/Cargo.toml",
            "examples",
            "llama2c_engine",
        )
    })
}

/// A fresh folder holding the built library and the example's manifest, as its README
/// says to lay them out.
fn packaged() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lib = example_library();
    std::fs::copy(lib, dir.path().join(lib.file_name().unwrap())).unwrap();
    std::fs::copy(
        workspace_dir().join("examples/llama2c-engine/llama2c-engine.toml"),
        dir.path().join("llama2c-engine.toml"),
    )
    .unwrap();
    dir
}

/// `run --engine llama2c-example --json` for every reference prompt.
fn check_references(plugins: Option<&std::path::Path>, env: &[(&str, &str)]) {
    let model = data_dir().join("tinystories/stories260K.bin");
    for r in tinystories_references() {
        let max = (201 - r.prompt_ids.len()).to_string();
        let args = [
            "run",
            "--engine",
            "llama2c-example",
            "--model",
            model.to_str().unwrap(),
            "--temperature",
            "0",
            "--max-tokens",
            &max,
            "--ctx-size",
            "256",
            "--json",
            &r.prompt,
        ];
        let out = cli_command(plugins, &args, env).output().unwrap();
        assert!(out.status.success(), "{}: {}", r.prompt, stderr(&out));
        let v = json_output(&out);
        assert_eq!(v["engine"], "llama2c-example");
        assert_reference_json(&v, &r, &format!("example engine, {:?}", r.prompt));
    }
}

#[test]
fn the_out_of_tree_example_engine_gives_the_reference_ids() {
    let dir = packaged();
    let rows = json_output(
        &cli_command(Some(dir.path()), &["engines", "--json"], &[])
            .output()
            .unwrap(),
    );
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "llama2c-example")
        .expect("listed")
        .clone();
    assert_eq!(row["status"], "ok", "{row}");
    check_references(Some(dir.path()), &[]);
}

#[test]
fn the_example_engine_installs_into_the_users_plugin_directory() {
    let data = tempfile::tempdir().unwrap();
    let env = [("XDG_DATA_HOME", data.path().to_str().unwrap())];
    let dir = packaged();
    let out = cli_command(
        None,
        &["plugin", "install", dir.path().to_str().unwrap()],
        &env,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Found without --plugins-dir: from the user's plugin directory.
    check_references(None, &env);
}
