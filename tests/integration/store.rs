//! The model store end to end: pulls from a loopback Hub (resume after a cut connection,
//! checksum mismatch, 404, disk-space refusal, offline, concurrent pulls, folders,
//! catalog pins), import / verify / info / rm on every file of the shared data and on
//! damaged copies of it, the memory check, and the library API.

use std::path::{Path, PathBuf};
use std::process::Output;

use runanywhere::registry::Registry;
use runanywhere::store::{
    Catalog, HubClient, ImportOptions, NoProgress, PullOptions, PullOutcome, PullSpec, Store,
    StoreError,
};
use runanywhere_formats::verify_path;
use runanywhere_tests::hub::{sha256_hex, HubServer, COMMIT};
use runanywhere_tests::{
    cli_command, data_dir, json_ids, json_output, plugin_dir, run_cli_env, stderr,
};
use serde_json::Value;

const REPO: &str = "ggml-org/tiny-llamas";
const FILE: &str = "stories260K.gguf";
const REF: &str = "hf.co/ggml-org/tiny-llamas/stories260K.gguf";
const STORIES_SHA256: &str = "047bf46455a544931cff6fef14d7910154c56afbc23ab1c5e56a72e69912c04b";
const STORIES_SIZE: u64 = 1_185_376;

fn stories_gguf() -> Vec<u8> {
    std::fs::read(data_dir().join("tinystories").join(FILE)).unwrap()
}

/// A Hub serving stories260K.gguf where the real one has it.
fn stories_hub() -> HubServer {
    let hub = HubServer::start();
    hub.add_lfs_file(REPO, FILE, stories_gguf());
    hub
}

/// Runs the CLI with its own store in `home`, the Hub at `hub`, and `env`.
fn cli(home: &Path, hub: Option<&HubServer>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let endpoint = hub.map(HubServer::endpoint);
    let mut all: Vec<(&str, &str)> = vec![("RUNANYWHERE_HOME", home.to_str().unwrap())];
    if let Some(e) = &endpoint {
        all.push(("HF_ENDPOINT", e));
    }
    all.extend_from_slice(env);
    run_cli_env(None, args, None, &all)
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn failed(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1: {}\nstdout: {}",
        stderr(out),
        String::from_utf8_lossy(&out.stdout)
    );
    stderr(out)
}

/// The store's entries, through `runanywhere models --json`.
fn models(home: &Path) -> Vec<Value> {
    let v = json_output(&cli(home, None, &["models", "--json"], &[]));
    v.as_array().unwrap().clone()
}

/// Every file under `dir` whose name ends with `suffix`, and every staging folder.
fn leftovers(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".staging-") || name.ends_with(suffix) {
                found.push(p.clone());
            }
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

/// `run --json` greedy output ids for `model`.
fn greedy_ids(home: &Path, plugins: &Path, model: &str) -> (Vec<u32>, String) {
    let out = run_cli_env(
        Some(plugins),
        &[
            "run",
            "--model",
            model,
            "--json",
            "--temperature",
            "0",
            "-n",
            "40",
            "-t",
            "1",
            "Once upon a time",
        ],
        None,
        &[("RUNANYWHERE_HOME", home.to_str().unwrap())],
    );
    let v = json_output(&out);
    let ids = json_ids(&v["generated_ids"]);
    (ids, v["text"].as_str().unwrap().to_string())
}

#[test]
fn pull_resumes_after_a_cut_connection_and_run_generates_from_the_model() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.cut_after(REPO, FILE, 400_000, 1);
    let plugins = plugin_dir(&["llama-cpp"]);
    let out = run_cli_env(
        Some(plugins.path()),
        &["pull", REF],
        None,
        &[
            ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
            ("HF_ENDPOINT", &hub.endpoint()),
        ],
    );
    let stdout = ok(&out);
    assert!(
        stdout.starts_with("Pulled stories260K (gguf, 1.13 MiB)"),
        "{stdout}"
    );
    assert!(stdout.contains(STORIES_SHA256), "{stdout}");
    assert!(stdout.contains("engines llama-cpp"), "{stdout}");
    assert!(
        stderr(&out).contains("the connection broke at byte 400000"),
        "{}",
        stderr(&out)
    );

    // The second CDN request continued where the cut left off.
    let cdn = hub.cdn_requests();
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[0].range, None);
    assert_eq!(cdn[1].range.as_deref(), Some("bytes=400000-"));

    let entries = models(home.path());
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["id"], "stories260K");
    assert_eq!(e["format"], "gguf");
    assert_eq!(e["size"], STORIES_SIZE);
    assert_eq!(e["sha256"], STORIES_SHA256);
    assert_eq!(e["source"], format!("{REF}@main"));
    assert_eq!(e["revision"], COMMIT);
    assert!(
        e["engines"]
            .as_array()
            .unwrap()
            .contains(&Value::from("llama-cpp")),
        "{e}"
    );
    let installed = PathBuf::from(e["model_path"].as_str().unwrap());
    assert_eq!(
        sha256_hex(&std::fs::read(&installed).unwrap()),
        STORIES_SHA256
    );
    assert!(leftovers(home.path(), ".partial").is_empty());

    // `run --model <id>` generates from the store's copy exactly as from the original.
    let (from_store, text) = greedy_ids(home.path(), plugins.path(), "stories260K");
    let original = data_dir().join("tinystories").join(FILE);
    let (from_file, _) = greedy_ids(home.path(), plugins.path(), original.to_str().unwrap());
    assert_eq!(from_store.len(), 40);
    assert_eq!(from_store, from_file);
    assert!(text.contains("Lily"), "{text}");
}

#[test]
fn a_rerun_resumes_a_partial_download_with_range() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.cut_after(REPO, FILE, 300_000, 1);
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", REF, "--retries", "0"],
        &[],
    ));
    assert!(
        err.contains("after 1 attempt(s)") && err.contains("connection broke at byte 300000"),
        "{err}"
    );
    let partial = home
        .path()
        .join("downloads/stories260K/stories260K.gguf.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 300_000);
    assert!(models(home.path()).is_empty());

    let out = cli(home.path(), Some(&hub), &["pull", REF], &[]);
    ok(&out);
    assert!(
        stderr(&out).contains("resuming at byte 300000"),
        "{}",
        stderr(&out)
    );
    let cdn = hub.cdn_requests();
    assert_eq!(cdn.len(), 2, "{cdn:?}");
    assert_eq!(cdn[1].range.as_deref(), Some("bytes=300000-"));
    let entries = models(home.path());
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["sha256"], STORIES_SHA256);
    assert!(leftovers(home.path(), ".partial").is_empty());
}

#[test]
fn a_wrong_checksum_registers_nothing_and_leaves_no_partial() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.claim_wrong_sha256(REPO, FILE, b"something else");
    let err = failed(&cli(home.path(), Some(&hub), &["pull", REF], &[]));
    let claimed = sha256_hex(b"something else");
    assert!(
        err.contains(&format!(
            "sha256 mismatch: expected {claimed}, got {STORIES_SHA256}"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was registered"), "{err}");
    assert!(models(home.path()).is_empty());
    assert_eq!(leftovers(home.path(), ".partial"), Vec::<PathBuf>::new());
    // A rerun downloads from scratch (no partial to resume) and fails the same way.
    failed(&cli(home.path(), Some(&hub), &["pull", REF], &[]));
    assert!(hub.cdn_requests().iter().all(|r| r.range.is_none()));
}

#[test]
fn missing_files_and_repositories_are_clear_errors() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", "hf.co/ggml-org/tiny-llamas/nope.gguf"],
        &[],
    ));
    assert!(
        err.contains(
            "not found on the Hub: file 'nope.gguf' in ggml-org/tiny-llamas at revision main"
        ),
        "{err}"
    );
    assert!(err.contains("404, EntryNotFound"), "{err}");
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", "hf.co/nobody/nothing/x.gguf@v2"],
        &[],
    ));
    assert!(
        err.contains("'x.gguf' in nobody/nothing at revision v2"),
        "{err}"
    );
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", "no-such-catalog-id"],
        &[],
    ));
    assert!(err.contains("runanywhere catalog"), "{err}");
    assert!(models(home.path()).is_empty());
}

#[test]
fn renamed_repositories_are_followed() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.rename("someone/old-llamas", REPO);
    ok(&cli(
        home.path(),
        Some(&hub),
        &["pull", "hf.co/someone/old-llamas/stories260K.gguf"],
        &[],
    ));
    let entries = models(home.path());
    assert_eq!(entries[0]["sha256"], STORIES_SHA256);
    let resolves: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.method == "HEAD")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        resolves,
        [
            "/someone/old-llamas/resolve/main/stories260K.gguf",
            "/ggml-org/tiny-llamas/resolve/main/stories260K.gguf"
        ]
    );
}

#[test]
fn a_disk_space_shortage_is_refused_before_downloading() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", REF],
        &[("RUNANYWHERE_TEST_FREE_BYTES", "1000")],
    ));
    assert!(
        err.contains("not enough disk space")
            && err.contains("needs 1185376 bytes (1.13 MiB) but only 1000 bytes"),
        "{err}"
    );
    assert!(hub.cdn_requests().is_empty());
    assert!(models(home.path()).is_empty());
    // The refused pull leaves no empty download folder behind.
    assert!(!home.path().join("downloads").join("stories260K").exists());
}

/// What is left under the store's `downloads/`.
fn download_leftovers(home: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![home.join("downloads")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            found.push(entry.path());
            if entry.path().is_dir() {
                stack.push(entry.path());
            }
        }
    }
    found
}

#[test]
fn an_endless_body_is_cut_at_the_advertised_size_and_leaves_nothing() {
    use runanywhere_tests::hub::Endless;
    for mode in [Endless::NoLength, Endless::Length(4_660_000_000)] {
        let home = tempfile::tempdir().unwrap();
        let hub = stories_hub();
        hub.serve_endless(REPO, FILE, mode, true);
        let started = std::time::Instant::now();
        let err = failed(&cli(home.path(), Some(&hub), &["pull", REF], &[]));
        assert!(
            err.contains(&format!("sent more than {STORIES_SIZE} bytes"))
                && err.contains("its advertised size"),
            "{mode:?}: {err}"
        );
        // Refused at once, not after the retries a broken connection gets.
        assert_eq!(hub.cdn_requests().len(), 1, "{mode:?}");
        assert!(started.elapsed().as_secs() < 30, "{mode:?}");
        assert_eq!(download_leftovers(home.path()), Vec::<PathBuf>::new());
        assert!(models(home.path()).is_empty());
        // Nothing blocks the next pull of a well-behaved server.
        let good = stories_hub();
        ok(&cli(home.path(), Some(&good), &["pull", REF], &[]));
        assert_eq!(models(home.path())[0]["sha256"], STORIES_SHA256);
    }
}

#[test]
fn an_endless_body_of_unknown_size_is_cut_at_the_free_space() {
    use runanywhere_tests::hub::Endless;
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.serve_endless(REPO, FILE, Endless::NoLength, false);
    let err = failed(&cli(
        home.path(),
        Some(&hub),
        &["pull", REF],
        &[("RUNANYWHERE_TEST_FREE_BYTES", "5000000")],
    ));
    assert!(
        err.contains("sent more than 5000000 bytes") && err.contains("unknown size"),
        "{err}"
    );
    assert_eq!(download_leftovers(home.path()), Vec::<PathBuf>::new());
    assert!(models(home.path()).is_empty());
}

#[test]
fn being_offline_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run_cli_env(
        None,
        &["pull", REF, "--retries", "1"],
        None,
        &[
            ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
            ("HF_ENDPOINT", &endpoint),
        ],
    );
    let err = failed(&out);
    assert!(err.contains(&format!("cannot reach {endpoint}/ggml-org/tiny-llamas/resolve/main/stories260K.gguf after 2 attempt(s)")), "{err}");
    assert!(err.contains("check the network connection"), "{err}");
}

#[test]
fn concurrent_pulls_of_one_model_end_with_one_model() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    hub.slow_down(std::time::Duration::from_millis(20));
    let env = [
        ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
        ("HF_ENDPOINT", &hub.endpoint()),
    ];
    let children: Vec<_> = (0..2)
        .map(|_| {
            cli_command(None, &["pull", REF], &env)
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let stdouts: Vec<String> = outputs.iter().map(ok).collect();
    assert_eq!(
        stdouts
            .iter()
            .filter(|s| s.starts_with("Pulled stories260K"))
            .count(),
        1,
        "{stdouts:?}"
    );
    assert_eq!(
        stdouts
            .iter()
            .filter(|s| s.starts_with("Already in the store: stories260K"))
            .count(),
        1,
        "{stdouts:?}"
    );
    assert_eq!(hub.cdn_requests().len(), 1);
    let entries = models(home.path());
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["sha256"], STORIES_SHA256);
    let installed = PathBuf::from(entries[0]["model_path"].as_str().unwrap());
    assert_eq!(
        sha256_hex(&std::fs::read(installed).unwrap()),
        STORIES_SHA256
    );
    assert!(leftovers(home.path(), ".partial").is_empty());
}

#[test]
fn catalog_pulls_are_checked_against_their_pins() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    let stdout = ok(&cli(home.path(), Some(&hub), &["pull", "stories260k"], &[]));
    assert!(stdout.starts_with("Pulled stories260k "), "{stdout}");
    let entries = models(home.path());
    assert_eq!(
        entries[0]["source"],
        "catalog:stories260k (hf.co/ggml-org/tiny-llamas)"
    );
    // Pulling it again finds it installed.
    let again = ok(&cli(home.path(), Some(&hub), &["pull", "stories260k"], &[]));
    assert!(
        again.starts_with("Already in the store: stories260k"),
        "{again}"
    );
    assert_eq!(hub.cdn_requests().len(), 1);

    // A Hub serving other bytes under that name is refused before downloading.
    let other_home = tempfile::tempdir().unwrap();
    let liar = HubServer::start();
    liar.add_lfs_file(REPO, FILE, stories_gguf()[..1000].to_vec());
    let err = failed(&cli(
        other_home.path(),
        Some(&liar),
        &["pull", "stories260k"],
        &[],
    ));
    assert!(
        err.contains("stories260K.gguf: the Hub reports size 1000 but the catalog pins 1185376"),
        "{err}"
    );
    assert!(liar.cdn_requests().is_empty());

    // The llama2.c entry brings its tokenizer along.
    let data = data_dir().join("tinystories");
    let karpathy = HubServer::start();
    for name in ["stories260K.bin", "tok512.bin"] {
        karpathy.add_lfs_file(
            "karpathy/tinyllamas",
            &format!("stories260K/{name}"),
            std::fs::read(data.join(name)).unwrap(),
        );
    }
    ok(&cli(
        home.path(),
        Some(&karpathy),
        &["pull", "stories260k-llama2c"],
        &[],
    ));
    let entry = models(home.path())
        .into_iter()
        .find(|e| e["id"] == "stories260k-llama2c")
        .unwrap();
    assert_eq!(entry["format"], "llama2c");
    assert_eq!(entry["path"], "stories260k-llama2c/stories260K.bin");
    assert_eq!(entry["tokenizer"], "stories260k-llama2c/tok512.bin");
    assert_eq!(entry["size"], 1_056_540 + 6_227);
}

#[test]
fn folder_pulls_fetch_the_model_files_and_check_git_checksums() {
    let home = tempfile::tempdir().unwrap();
    let hub = HubServer::start();
    let dir = data_dir().join("onnx/tiny-random-gpt2-fp32");
    let repo = "test-org/tiny-gpt2";
    hub.add_lfs_file(
        repo,
        "past.onnx",
        std::fs::read(dir.join("past.onnx")).unwrap(),
    );
    for name in [
        "genai_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
    ] {
        hub.add_small_file(repo, name, std::fs::read(dir.join(name)).unwrap());
    }
    hub.add_small_file(repo, "README.md", b"# not needed".to_vec());
    hub.add_small_file(repo, "extra/other.onnx", b"not pulled".to_vec());
    ok(&cli(
        home.path(),
        Some(&hub),
        &["pull", &format!("hf.co/{repo}")],
        &[],
    ));
    let entries = models(home.path());
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e["id"], "tiny-gpt2");
    assert_eq!(e["format"], "onnx");
    assert_eq!(e["path"], "tiny-gpt2");
    let mut names: Vec<&str> = e["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "genai_config.json",
            "past.onnx",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json"
        ]
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.path == format!("/api/models/{repo}/tree/main/")));
    // Only the LFS file went through the CDN.
    assert_eq!(hub.cdn_requests().len(), 1);
}

/// Every file of the shared data: (path, the format verify must find, or None for files
/// that are not models).
fn shared_files() -> Vec<(PathBuf, Option<&'static str>)> {
    let mut files = Vec::new();
    let mut stack = vec![data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let format = if name.ends_with(".gguf") {
                Some("gguf")
            } else if name.ends_with(".onnx") {
                Some("onnx")
            } else if name == "stories260K.bin" {
                Some("llama2c")
            } else if name.ends_with(".pte") {
                Some("pte")
            } else if name.ends_with(".tflite") {
                Some("tflite")
            } else if name.ends_with(".safetensors") {
                // MLX's exports (mlx/) are safetensors files.
                Some("safetensors")
            } else {
                None
            };
            files.push((p, format));
        }
    }
    files.sort();
    files
}

#[test]
fn verify_and_import_every_shared_data_file() {
    let home = tempfile::tempdir().unwrap();
    let files = shared_files();
    assert!(
        files.iter().filter(|(_, f)| f.is_some()).count() >= 8,
        "{files:?}"
    );
    let mut imported = Vec::new();
    for (path, format) in &files {
        let p = path.to_str().unwrap();
        let out = cli(home.path(), None, &["verify", p], &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        match format {
            Some(format) => {
                assert!(out.status.success(), "{p}: {stdout}");
                assert!(
                    stdout.starts_with(&format!("{p}: OK\n  format")),
                    "{stdout}"
                );
                assert!(
                    stdout.contains(&format!("format                 {format}"))
                        || stdout.contains(&format!("  {format} (")),
                    "{stdout}"
                );
                // Several folders hold a `model.safetensors`: those ids name the folder.
                let name = path.file_name().unwrap().to_str().unwrap();
                let id = match path.parent().and_then(|d| d.file_name()) {
                    Some(dir) if name.starts_with("model.") => {
                        format!("{}-{name}", dir.to_str().unwrap())
                    }
                    _ => name.to_string(),
                };
                ok(&cli(home.path(), None, &["import", p, "--id", &id], &[]));
                imported.push((id, *format));
            }
            None => {
                assert_eq!(out.status.code(), Some(1), "{p}: {stdout}");
                assert!(
                    stdout.contains("INVALID") && stdout.contains("problem"),
                    "{stdout}"
                );
                let err = failed(&cli(home.path(), None, &["import", p], &[]));
                assert!(
                    err.contains("failed verification") && err.contains("nothing was registered"),
                    "{err}"
                );
            }
        }
    }
    // The ONNX Runtime GenAI folder imports as one model.
    let folder = data_dir().join("onnx/tiny-random-gpt2-fp32");
    ok(&cli(
        home.path(),
        None,
        &["import", folder.to_str().unwrap()],
        &[],
    ));
    imported.push(("tiny-random-gpt2-fp32".into(), "onnx"));

    let entries = models(home.path());
    assert_eq!(entries.len(), imported.len());
    for (id, format) in &imported {
        let e = entries.iter().find(|e| e["id"] == id.as_str()).unwrap();
        assert_eq!(e["format"], *format, "{id}");
        // Verify by store id too.
        let stdout = ok(&cli(home.path(), None, &["verify", id], &[]));
        assert!(stdout.contains(": OK"), "{stdout}");
    }
    let gguf = entries
        .iter()
        .find(|e| e["id"] == "stories260K.gguf")
        .unwrap();
    assert_eq!(gguf["sha256"], STORIES_SHA256);
    assert!(leftovers(home.path(), ".partial").is_empty());
}

#[test]
fn verify_reports_what_it_finds() {
    let home = tempfile::tempdir().unwrap();
    let stories = data_dir().join("tinystories/stories260K.gguf");
    let v = json_output(&cli(
        home.path(),
        None,
        &["verify", "--json", stories.to_str().unwrap()],
        &[],
    ));
    assert_eq!(v["format"], "gguf");
    assert_eq!(v["problem"], Value::Null);
    let f = &v["facts"];
    assert_eq!(f["architecture"], "llama");
    assert_eq!(f["context_length"], 128);
    assert_eq!(f["quantization"], "F32");
    assert_eq!(f["tensors"], 48);
    // 260,032 weights of the llama2.c checkpoint plus the untied 512 × 64 classifier.
    assert_eq!(f["parameters"], 292_800);
    assert_eq!(f["details"]["gguf.version"], "3");
    let bin = data_dir().join("tinystories/stories260K.bin");
    let v = json_output(&cli(
        home.path(),
        None,
        &["verify", "--json", bin.to_str().unwrap()],
        &[],
    ));
    assert_eq!(v["facts"]["parameters"], 260_032);
    assert_eq!(v["facts"]["context_length"], 512);
    let onnx = data_dir().join("onnx/tiny-random-gpt2-fp32");
    let v = json_output(&cli(
        home.path(),
        None,
        &["verify", "--json", onnx.to_str().unwrap()],
        &[],
    ));
    assert_eq!(v["facts"]["architecture"], "gpt2");
    assert_eq!(v["facts"]["context_length"], 512);
    assert_eq!(v["facts"]["details"]["onnx.ir_version"], "6");
    // 5 layers × 4 KV heads × (8 + 8) × 4 bytes (F32).
    assert_eq!(v["facts"]["kv_bytes_per_token"], 1280);
}

/// Damaged copies of a model file: truncations, bit flips, random bytes.
fn damaged_copies(bytes: &[u8], seed: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let len = bytes.len();
    let truncated = [0, 7, 100, len / 2, len - 1]
        .iter()
        .map(|&n| bytes[..n].to_vec())
        .chain(std::iter::once((0..4096).map(|_| next() as u8).collect()))
        .collect();
    let flipped = (0..4)
        .map(|_| {
            let mut b = bytes.to_vec();
            for _ in 0..8 {
                // Mostly in the header, where the structure is.
                let i = (next() as usize) % len.min(65_536);
                b[i] ^= 1 << (next() % 8);
            }
            b
        })
        .collect();
    (truncated, flipped)
}

#[test]
fn damaged_copies_are_refused_and_never_crash_verify() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let models_in_data: Vec<PathBuf> = shared_files()
        .into_iter()
        .filter(|(_, f)| f.is_some())
        .map(|(p, _)| p)
        .collect();
    for (n, model) in models_in_data.iter().enumerate() {
        let bytes = std::fs::read(model).unwrap();
        let name = model.file_name().unwrap().to_str().unwrap();
        let (truncated, flipped) = damaged_copies(&bytes, n as u64 + 1);
        // Through the binary, one truncation and one flip per file; all of them through
        // the library.
        for (i, copy) in truncated.iter().enumerate() {
            let path = work.path().join(format!("t{i}-{name}"));
            std::fs::write(&path, copy).unwrap();
            let v = verify_path(&path);
            assert!(
                v.problem.is_some(),
                "{} truncated to {} bytes passed",
                name,
                copy.len()
            );
            if i == 3 {
                let out = cli(home.path(), None, &["verify", path.to_str().unwrap()], &[]);
                assert_eq!(out.status.code(), Some(1));
                assert!(String::from_utf8_lossy(&out.stdout).contains("problem"));
                let err = failed(&cli(
                    home.path(),
                    None,
                    &["import", path.to_str().unwrap()],
                    &[],
                ));
                assert!(err.contains("nothing was registered"), "{err}");
            }
        }
        for (i, copy) in flipped.iter().enumerate() {
            let path = work.path().join(format!("f{i}-{name}"));
            std::fs::write(&path, copy).unwrap();
            let _ = verify_path(&path);
            if i == 0 {
                let out = cli(home.path(), None, &["verify", path.to_str().unwrap()], &[]);
                assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
                assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
            }
        }
    }
    assert!(models(home.path()).is_empty());
    assert!(leftovers(home.path(), ".partial").is_empty());
}

#[test]
fn rm_needs_confirmation_and_linked_imports_keep_the_original() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("mine.gguf");
    std::fs::write(&original, stories_gguf()).unwrap();
    ok(&cli(
        home.path(),
        None,
        &["import", original.to_str().unwrap(), "--link"],
        &[],
    ));
    let entry = &models(home.path())[0];
    assert_eq!(entry["id"], "mine");
    assert_eq!(entry["linked"], true);
    let link = PathBuf::from(entry["model_path"].as_str().unwrap());
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    // Importing the same id again is refused.
    let err = failed(&cli(
        home.path(),
        None,
        &["import", original.to_str().unwrap()],
        &[],
    ));
    assert!(err.contains("already has a model `mine`"), "{err}");

    let err = failed(&cli(home.path(), None, &["rm", "mine"], &[]));
    assert!(err.contains("without --yes"), "{err}");
    assert_eq!(models(home.path()).len(), 1);
    let stdout = ok(&cli(home.path(), None, &["rm", "mine", "--yes"], &[]));
    assert!(stdout.starts_with("Removed mine and its links"), "{stdout}");
    assert!(models(home.path()).is_empty());
    assert!(!link.parent().unwrap().exists());
    assert!(original.is_file());
    let err = failed(&cli(home.path(), None, &["rm", "mine", "--yes"], &[]));
    assert!(err.contains("no model `mine` in the store"), "{err}");
}

#[test]
fn loads_that_do_not_fit_in_memory_are_refused_unless_forced() {
    let home = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&["llama-cpp"]);
    let model = data_dir().join("tinystories").join(FILE);
    let args = [
        "run",
        "--model",
        model.to_str().unwrap(),
        "-n",
        "4",
        "-t",
        "1",
        "--temperature",
        "0",
        "hi",
    ];
    let env = [
        ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
        ("RUNANYWHERE_TEST_MEM_AVAILABLE", "1000000"),
    ];
    let out = run_cli_env(Some(plugins.path()), &args, None, &env);
    let err = failed(&out);
    // 1,185,376 bytes of weights + 128 tokens × 640 bytes of KV cache.
    assert!(err.contains("not enough memory"), "{err}");
    assert!(
        err.contains("weights 1.13 MiB + KV cache 80.00 KiB for 128 tokens"),
        "{err}"
    );
    assert!(
        err.contains("only 976.56 KiB is available") && err.contains("--force"),
        "{err}"
    );
    let mut forced = args.to_vec();
    forced.push("--force");
    ok(&run_cli_env(Some(plugins.path()), &forced, None, &env));
}

#[test]
fn info_shows_verification_entry_engines_and_memory() {
    let home = tempfile::tempdir().unwrap();
    let plugins = plugin_dir(&["llama-cpp"]);
    let model = data_dir().join("tinystories").join(FILE);
    ok(&cli(
        home.path(),
        None,
        &["import", model.to_str().unwrap()],
        &[],
    ));
    let out = run_cli_env(
        Some(plugins.path()),
        &["info", "stories260K", "--json"],
        None,
        &[("RUNANYWHERE_HOME", home.path().to_str().unwrap())],
    );
    let v = json_output(&out);
    assert_eq!(v["entry"]["id"], "stories260K");
    assert_eq!(v["verification"]["facts"]["architecture"], "llama");
    assert!(
        v["engines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == "llama-cpp"),
        "{v}"
    );
    assert_eq!(v["memory"]["weights"], STORIES_SIZE);
    assert_eq!(v["memory"]["kv_cache"], 128 * 640);
    // A path inside the store finds its entry too.
    let installed = models(home.path())[0]["model_path"]
        .as_str()
        .unwrap()
        .to_string();
    let text = ok(&run_cli_env(
        Some(plugins.path()),
        &["info", &installed],
        None,
        &[("RUNANYWHERE_HOME", home.path().to_str().unwrap())],
    ));
    assert!(text.contains("store entry stories260K:"), "{text}");
    assert!(text.contains("llama-cpp"), "{text}");
}

#[test]
fn the_catalog_lists_every_format() {
    let home = tempfile::tempdir().unwrap();
    let v = json_output(&cli(home.path(), None, &["catalog", "--json"], &[]));
    let entries = v.as_array().unwrap();
    for format in ["gguf", "safetensors", "onnx", "llama2c"] {
        assert!(entries.iter().any(|e| e["format"] == format), "{format}");
    }
    let stories = entries.iter().find(|e| e["id"] == "stories260k").unwrap();
    assert_eq!(stories["size"], STORIES_SIZE);
    assert_eq!(stories["repo"], REPO);
    let table = ok(&cli(home.path(), None, &["catalog"], &[]));
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains("qwen2.5-0.5b-instruct-q8"), "{table}");
}

#[test]
fn the_library_api_pulls_imports_and_removes() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    let hub_server = stories_hub();
    hub_server.cut_after(REPO, FILE, 100_000, 1);
    let hub = HubClient::new(&hub_server.endpoint())
        .with_retries(2, std::time::Duration::from_millis(10));
    let engines = Registry::default();
    let spec = PullSpec::parse(REF, &Catalog::builtin().unwrap()).unwrap();
    let outcome = store
        .pull(
            &spec,
            &hub,
            &PullOptions::default(),
            &engines,
            &mut NoProgress,
        )
        .unwrap();
    let PullOutcome::Pulled(entry) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(entry.id, "stories260K");
    assert_eq!(entry.sha256.as_deref(), Some(STORIES_SHA256));
    assert!(entry.engines.is_empty());
    assert_eq!(
        hub_server.cdn_requests()[1].range.as_deref(),
        Some("bytes=100000-")
    );
    assert!(verify_path(&store.model_path(&entry)).is_ok());
    let again = store
        .pull(
            &spec,
            &hub,
            &PullOptions::default(),
            &engines,
            &mut NoProgress,
        )
        .unwrap();
    assert!(matches!(again, PullOutcome::AlreadyPresent(_)));
    // The same id for another source is refused.
    let other = PullSpec::parse(
        "hf.co/ggml-org/tiny-llamas/other/stories260K.gguf",
        &Catalog::builtin().unwrap(),
    )
    .unwrap();
    let err = store
        .pull(
            &other,
            &hub,
            &PullOptions::default(),
            &engines,
            &mut NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::IdTaken { .. }), "{err}");

    let bin = data_dir().join("tinystories/stories260K.bin");
    let options = ImportOptions {
        id: Some("bin".into()),
        link: false,
    };
    let imported = store.import(&bin, &options, &engines).unwrap();
    assert_eq!(imported.format, "llama2c");
    assert_eq!(imported.size, 1_056_540);
    assert_eq!(store.list().unwrap().len(), 2);
    store.remove("bin").unwrap();
    assert!(!store.models_dir().join("bin").exists());
    assert_eq!(store.list().unwrap().len(), 1);
    let err = store
        .import(
            &data_dir().join("README.md"),
            &ImportOptions::default(),
            &engines,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
}

#[test]
fn run_with_a_catalog_id_pulls_it_on_first_use() {
    let home = tempfile::tempdir().unwrap();
    let hub = stories_hub();
    let plugins = plugin_dir(&["llama-cpp"]);
    let env = [
        ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
        ("HF_ENDPOINT", &hub.endpoint()),
    ];
    let args = [
        "run",
        "--model",
        "stories260k",
        "--json",
        "--temperature",
        "0",
        "-n",
        "10",
        "-t",
        "1",
        "Once upon a time",
    ];
    let first = run_cli_env(Some(plugins.path()), &args, None, &env);
    let v = json_output(&first);
    assert!(
        stderr(&first).contains("stories260k is not in the store yet: pulling it"),
        "{}",
        stderr(&first)
    );
    let ids = json_ids(&v["prompt_ids"]);
    assert_eq!(ids, vec![1, 403, 407, 261, 378]);
    assert_eq!(v["generated_ids"].as_array().unwrap().len(), 10);
    assert_eq!(hub.cdn_requests().len(), 1);

    // The second run uses the store's copy: nothing more is downloaded.
    let second = run_cli_env(Some(plugins.path()), &args, None, &env);
    assert_eq!(json_output(&second)["generated_ids"], v["generated_ids"]);
    assert_eq!(hub.cdn_requests().len(), 1);
    assert_eq!(models(home.path()).len(), 1);
}

#[test]
fn rm_then_import_of_the_same_id_leaves_a_working_model() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("mine.gguf");
    std::fs::write(&original, stories_gguf()).unwrap();
    let path = original.to_str().unwrap();
    for round in 0..3 {
        ok(&cli(home.path(), None, &["import", path], &[]));
        let entry = &models(home.path())[0];
        assert_eq!(entry["id"], "mine", "round {round}");
        let model = PathBuf::from(entry["model_path"].as_str().unwrap());
        assert!(verify_path(&model).is_ok(), "round {round}");
        ok(&cli(home.path(), None, &["verify", "mine"], &[]));
        ok(&cli(home.path(), None, &["rm", "mine", "--yes"], &[]));
        assert!(models(home.path()).is_empty());
        assert!(!model.exists());
    }
    ok(&cli(home.path(), None, &["import", path], &[]));
    let entry = &models(home.path())[0];
    assert!(verify_path(Path::new(entry["model_path"].as_str().unwrap())).is_ok());
    // Nothing but the model's folder is left in models/: no trash, no staging.
    let names: Vec<String> = std::fs::read_dir(home.path().join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["mine"]);
    assert!(original.is_file());
}

#[test]
fn concurrent_rm_and_import_of_one_id_never_leave_a_broken_entry() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    let engines = Registry::default();
    let bin = data_dir().join("tinystories/stories260K.bin");
    let options = ImportOptions {
        id: Some("m".into()),
        link: false,
    };
    store.import(&bin, &options, &engines).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..10 {
                match store.remove("m") {
                    Ok(_) | Err(StoreError::UnknownModel { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
        s.spawn(|| {
            let engines = Registry::default();
            for _ in 0..10 {
                match store.import(&bin, &options, &engines) {
                    Ok(_) | Err(StoreError::IdTaken { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        });
    });
    if let Some(entry) = store.get("m").unwrap() {
        assert!(verify_path(&store.model_path(&entry)).is_ok());
    } else {
        assert!(!store.models_dir().join("m").exists());
    }
    store.import(&bin, &options, &engines).unwrap_or_else(|e| {
        assert!(matches!(e, StoreError::IdTaken { .. }), "{e}");
        store.get("m").unwrap().unwrap()
    });
    let entry = store.get("m").unwrap().unwrap();
    assert!(verify_path(&store.model_path(&entry)).is_ok());
}

#[test]
fn registry_entries_reaching_outside_the_store_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home");
    let outside = root.path().join("x");
    std::fs::create_dir_all(home.join("models")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), b"keep").unwrap();
    std::fs::write(home.join("keep.txt"), b"keep").unwrap();
    for (id, path) in [("..", "x"), ("ok", "../x"), ("ok", "../../x")] {
        let registry = serde_json::json!({
            "version": 1,
            "models": [{
                "id": id, "source": "test", "format": "gguf", "size": 4,
                "engines": [], "added": "2024-01-01T00:00:00Z", "path": path,
            }],
        });
        std::fs::write(home.join("registry.json"), registry.to_string()).unwrap();
        let err = failed(&cli(&home, None, &["rm", id, "--yes"], &[]));
        assert!(
            err.contains("registry.json") && err.contains("damaged"),
            "{id} {path}: {err}"
        );
        let err = failed(&cli(&home, None, &["models"], &[]));
        assert!(err.contains("damaged"), "{err}");
        assert!(outside.join("keep.txt").is_file());
        assert!(home.join("keep.txt").is_file());
        assert!(home.join("registry.json").is_file());
    }
    let store = Store::new(&home);
    assert!(matches!(
        store.remove(".."),
        Err(StoreError::InvalidId { .. })
    ));
    assert!(matches!(
        store.remove("ok"),
        Err(StoreError::Registry { .. })
    ));
    assert!(outside.join("keep.txt").is_file());
    assert!(home.join("keep.txt").is_file());
}

#[test]
fn importing_from_inside_the_store_is_refused_and_the_source_survives() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let original = work.path().join("mine.gguf");
    std::fs::write(&original, stories_gguf()).unwrap();
    ok(&cli(
        home.path(),
        None,
        &["import", original.to_str().unwrap()],
        &[],
    ));
    let entry = &models(home.path())[0];
    let installed = PathBuf::from(entry["model_path"].as_str().unwrap());
    let err = failed(&cli(
        home.path(),
        None,
        &["import", installed.to_str().unwrap(), "--id", "again"],
        &[],
    ));
    assert!(err.contains("is inside the model store"), "{err}");
    // A folder left without an entry, imported under its own id (the install would
    // replace `models/stale`, its own source).
    let stale = home.path().join("models").join("stale");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("stale.gguf"), stories_gguf()).unwrap();
    for link in [false, true] {
        let mut args = vec!["import", stale.to_str().unwrap(), "--id", "stale"];
        if link {
            args.push("--link");
        }
        let err = failed(&cli(home.path(), None, &args, &[]));
        assert!(err.contains("is inside the model store"), "{err}");
        assert!(stale.join("stale.gguf").is_file());
    }
    assert_eq!(models(home.path()).len(), 1);
    assert!(verify_path(&installed).is_ok());
}

#[test]
fn a_failed_registry_write_leaves_no_unregistered_linked_model() {
    let home = tempfile::tempdir().unwrap();
    let store = Store::new(home.path());
    let source = data_dir().join("tinystories").join(FILE);
    // The registry's temporary file cannot be created (a folder is in its place), as
    // when the disk is full at the last step.
    let blocker = home
        .path()
        .join(format!("registry.json.tmp-{}", std::process::id()));
    std::fs::create_dir_all(&blocker).unwrap();
    let options = ImportOptions {
        id: Some("linked".into()),
        link: true,
    };
    let err = store
        .import(&source, &options, &Registry::default())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Io { ref path, .. } if *path == blocker),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    assert!(!home.path().join("models").join("linked").exists());
    assert_eq!(leftovers(home.path(), ".partial"), Vec::<PathBuf>::new());
    assert!(source.is_file(), "the original is untouched");
    // Once the disk has room again, the same import works.
    std::fs::remove_dir(&blocker).unwrap();
    let entry = store
        .import(&source, &options, &Registry::default())
        .unwrap();
    assert!(entry.linked);
    assert!(store.model_path(&entry).is_file());
}
