//! Helpers for the integration tests: where the built binary, plugins and test data are.
//!
//! The tests need a built workspace (`cargo build --release --workspace` before
//! `cargo test --release --workspace`, which `scripts/test.sh` does): they drive the
//! real `runanywhere` binary and load the real plugin libraries. Test data comes from
//! `$RUNANYWHERE_TEST_DATA` or `../shared/data`; a missing data directory is a failure,
//! never a skip.

pub mod hub;
pub mod synthetic;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use runanywhere::libname::library_file_name;

/// `target/<profile>/`, found from the running test executable (`target/<profile>/deps/`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps")
        .to_path_buf()
}

/// The workspace root.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// The built `runanywhere` binary.
pub fn binary() -> PathBuf {
    let bin = target_dir().join(format!("runanywhere{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace, \
         or scripts/test.sh)",
        bin.display()
    );
    bin
}

/// A built plugin library by crate lib name, e.g. `runanywhere_mock`.
pub fn plugin_library(base: &str) -> PathBuf {
    let lib = target_dir().join(library_file_name(base, std::env::consts::OS));
    assert!(
        lib.is_file(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        lib.display()
    );
    lib
}

/// The shared test data (`$RUNANYWHERE_TEST_DATA`, default `../shared/data`). Panics
/// when it is missing: tests that need data fail rather than skip.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os("RUNANYWHERE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("../shared/data"));
    assert!(
        dir.join("README.md").is_file(),
        "test data not found at {} (set RUNANYWHERE_TEST_DATA)",
        dir.display()
    );
    dir
}

/// A temporary plugin directory holding copies of the given fixture manifests
/// (`tests/fixtures/manifests/<name>.toml`, or `manifests/<name>.toml` for the real
/// plugins) with `library` pointing at the built libraries.
pub fn plugin_dir(fixtures: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in fixtures {
        let fixture = workspace_dir()
            .join("tests/fixtures/manifests")
            .join(format!("{name}.toml"));
        let real = workspace_dir()
            .join("manifests")
            .join(format!("{name}.toml"));
        let src = if fixture.is_file() { fixture } else { real };
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        // Point `library = "base"` at the built file (an absolute path).
        let text = text
            .lines()
            .map(|line| match line.strip_prefix("library = \"") {
                Some(rest) => {
                    let base = rest.trim_end_matches('"');
                    let path = target_dir().join(library_file_name(base, std::env::consts::OS));
                    format!("library = {:?}", path.to_string_lossy())
                }
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join(format!("{name}.toml")), text).expect("write manifest");
    }
    dir
}

/// The shared data's model file `model` (e.g. `executorch/stories260K.pte`) copied into
/// `dir` with `tok512.bin` beside it (`.pte` and `.tflite` files hold no tokenizer; the
/// engines find one next to the model), once.
pub fn with_tokenizer(dir: &Path, model: &str) -> PathBuf {
    let src = data_dir().join(model);
    let out = dir.join(src.file_name().expect("a file name"));
    if !out.exists() {
        std::fs::create_dir_all(dir).expect("create the model folder");
        std::fs::copy(
            data_dir().join("tinystories/tok512.bin"),
            dir.join("tok512.bin"),
        )
        .expect("copy tok512.bin");
        std::fs::copy(&src, &out).expect("copy the model");
    }
    out
}

/// Runs the binary with `args` (and stdin), plugins only from `plugins` when given.
pub fn run_cli(plugins: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    run_cli_env(plugins, args, stdin, &[])
}

/// A directory of this test process for the CLI's store and data directory, so that the
/// user's own store (`~/.local/share/runanywhere`) and plugins never leak into a test.
fn private_dir(name: &str) -> PathBuf {
    static BASE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("runanywhere-tests-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    });
    let dir = base.join(name);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// The command [`run_cli_env`] runs, not yet started: the binary with `args`, plugins
/// only from `plugins` when given, and `env` set. The model store and Hub variables of
/// the test process are not passed on: the store (`RUNANYWHERE_HOME`) and the data
/// directory holding the default plugin directory (`XDG_DATA_HOME`) are this process's
/// private, empty ones unless `env` sets them.
pub fn cli_command(plugins: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    if let Some(dir) = plugins {
        cmd.arg("--plugins-dir").arg(dir);
    }
    cmd.args(args)
        .env_remove("RUNANYWHERE_PLUGIN_PATH")
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN")
        .env_remove("RUNANYWHERE_TEST_FREE_BYTES")
        .env_remove("RUNANYWHERE_TEST_MEM_AVAILABLE")
        .env("RUNANYWHERE_LOG", "error")
        .env("RUNANYWHERE_HOME", private_dir("home"))
        .env("XDG_DATA_HOME", private_dir("data"))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary like [`run_cli`], with `env` set.
pub fn run_cli_env(
    plugins: Option<&Path>,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = cli_command(plugins, args, env);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn runanywhere");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait for runanywhere")
}

/// stdout as JSON; panics with stderr on failure.
pub fn json_output(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "command failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One prompt of `tinystories/reference-greedy-ids.txt` with its reference text.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The prompt text.
    pub prompt: String,
    /// BOS + prompt tokens.
    pub prompt_ids: Vec<u32>,
    /// Prompt plus generated ids (201 in all).
    pub all_ids: Vec<u32>,
    /// run.c's stdout for this prompt (prompt echo, continuation, final newline).
    pub text: String,
}

/// Parses the stories260K greedy references (ids and text files).
pub fn tinystories_references() -> Vec<Reference> {
    let dir = data_dir().join("tinystories");
    let ids = std::fs::read_to_string(dir.join("reference-greedy-ids.txt")).expect("ids file");
    let texts = std::fs::read_to_string(dir.join("reference-greedy.txt")).expect("text file");
    let parse = |line: &str| -> Vec<u32> {
        line.split_whitespace()
            .map(|t| t.parse().expect("token id"))
            .collect()
    };
    let mut refs = Vec::new();
    for block in ids.split("### prompt: ").skip(1) {
        let mut lines = block.lines();
        let prompt = lines.next().unwrap_or("").to_string();
        let mut r = Reference {
            prompt,
            prompt_ids: Vec::new(),
            all_ids: Vec::new(),
            text: String::new(),
        };
        for line in lines {
            if let Some(rest) = line.strip_prefix("prompt_ids: ") {
                r.prompt_ids = parse(rest);
            } else if let Some(rest) = line.strip_prefix("all_ids: ") {
                r.all_ids = parse(rest);
            }
        }
        refs.push(r);
    }
    // reference-greedy.txt: "### prompt: <p>\n" then stdout verbatim, up to the next header.
    let mut text_blocks = texts.split("### prompt: ").skip(1);
    for r in &mut refs {
        let block = text_blocks.next().expect("a text block per prompt");
        let (header, body) = block.split_once('\n').expect("header line");
        assert_eq!(
            header, r.prompt,
            "the two reference files list the same prompts"
        );
        r.text = body.to_string();
    }
    assert_eq!(refs.len(), 4, "four reference prompts");
    for r in &refs {
        assert_eq!(r.all_ids.len(), 201, "{r:?}");
        assert!(r.all_ids.starts_with(&r.prompt_ids), "{r:?}");
    }
    refs
}

/// The tokenizer test vectors of `vocab/NAME.gguf`: (input, expected ids) per case.
pub fn vocab_cases(gguf: &Path) -> Vec<(String, Vec<u32>)> {
    let read = |ext: &str| {
        let p = PathBuf::from(format!("{}.{ext}", gguf.display()));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let inputs: Vec<String> = read("inp")
        .split("\n__ggml_vocab_test__\n")
        .map(str::to_string)
        .collect();
    // The file ends with the separator: drop the empty piece after it.
    let inputs = &inputs[..inputs.len() - 1];
    let outputs: Vec<Vec<u32>> = read("out")
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "{}", gguf.display());
    inputs.iter().cloned().zip(outputs).collect()
}

/// A registry of the given workspace plugins (by manifest name), asserting each loaded.
/// The directory must outlive the registry's use.
pub fn registry_with(engines: &[&str]) -> (tempfile::TempDir, runanywhere::registry::Registry) {
    let dir = plugin_dir(engines);
    let registry = runanywhere::registry::Registry::discover(&[dir.path().to_path_buf()]);
    for id in engines {
        assert!(
            registry.engine(id).is_some(),
            "engine {id} unavailable: {:?}",
            registry.unavailable()
        );
    }
    (dir, registry)
}

/// Process isolation for every engine, workers run by the built binary, with
/// `hang_timeout`.
pub fn worker_config(hang_timeout: std::time::Duration) -> runanywhere::WorkerConfig {
    runanywhere::WorkerConfig {
        force: Some(runanywhere::Isolation::Process),
        program: Some(binary()),
        hang_timeout,
        ..Default::default()
    }
}

/// [`registry_with`], every engine in a worker process.
pub fn worker_registry_with(
    engines: &[&str],
) -> (tempfile::TempDir, runanywhere::registry::Registry) {
    let dir = plugin_dir(engines);
    let registry = runanywhere::registry::Registry::discover_with(
        &[dir.path().to_path_buf()],
        worker_config(std::time::Duration::from_secs(300)),
    );
    for id in engines {
        let engine = registry
            .engine(id)
            .unwrap_or_else(|| panic!("engine {id} unavailable: {:?}", registry.unavailable()));
        assert_eq!(engine.isolation(), runanywhere::Isolation::Process, "{id}");
    }
    (dir, registry)
}

/// Loads `path` on `engine` with one thread (tests run in parallel on small machines, and
/// spinning worker threads slow to a crawl when oversubscribed) and context `ctx`
/// (0 = the model's own).
pub fn load_model(
    registry: &runanywhere::registry::Registry,
    engine: &str,
    path: &Path,
    ctx: u32,
    vocab_only: bool,
) -> Result<runanywhere::Model, runanywhere::Error> {
    registry
        .engine(engine)
        .unwrap_or_else(|| panic!("no engine {engine}"))
        .load_model(runanywhere::LoadRequest {
            model_path: path.to_string_lossy().into_owned().into(),
            context_length: ctx,
            threads: 1,
            vocab_only,
            ..Default::default()
        })
}

/// Generates and returns (prompt ids, generated ids, streamed text, stop reason),
/// checking that the engine's count matches what reached the sink.
pub fn generate(
    model: &runanywhere::Model,
    request: runanywhere::GenerateRequest,
) -> (Vec<u32>, Vec<u32>, String, runanywhere::StopReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    let stats = model
        .generate(request, |id, piece| {
            ids.push(id);
            text.push_str(piece);
            runanywhere::SinkControl::Continue
        })
        .unwrap_or_else(|e| panic!("generate failed: {e}"));
    assert_eq!(stats.generated_tokens as usize, ids.len());
    (stats.prompt_ids.to_vec(), ids, text, stats.stop_reason())
}

/// The token ids of a JSON array such as `run --json`'s `prompt_ids` / `generated_ids`
/// or `tokenize --json`'s `ids`. Panics on anything else.
pub fn json_ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array of token ids: {v}"))
        .iter()
        .map(|x| {
            x.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .unwrap_or_else(|| panic!("not a token id: {x}"))
        })
        .collect()
}

/// Asserts that a `run --json` result reproduces the reference `r` exactly: prompt ids,
/// generated ids, and the text (run.c echoes the prompt and ends with a newline).
pub fn assert_reference_json(v: &serde_json::Value, r: &Reference, what: &str) {
    assert_eq!(json_ids(&v["prompt_ids"]), r.prompt_ids, "{what}");
    assert_eq!(
        json_ids(&v["generated_ids"]),
        r.all_ids[r.prompt_ids.len()..],
        "{what}"
    );
    let text = v["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no text"));
    assert_eq!(format!("{}{text}\n", r.prompt), r.text, "{what}");
}

/// `len` pseudo-random bytes from an xorshift64 seeded with `seed` (which must not be
/// zero): junk "model files" that are the same on every run.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    assert_ne!(seed, 0, "xorshift needs a non-zero seed");
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Builds the Cargo project at `manifest` (relative to the workspace; not a workspace
/// member: its own lockfile, `--locked`) into `target/<target>` and returns the library
/// `lib_base` it produced, panicking with cargo's output if the build fails. For
/// fixtures built the way a third party builds a plugin.
pub fn build_out_of_tree(manifest: &str, target: &str, lib_base: &str) -> PathBuf {
    let workspace = workspace_dir();
    let target = workspace.join("target").join(target);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(workspace.join(manifest))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "building {manifest} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target
        .join("release")
        .join(library_file_name(lib_base, std::env::consts::OS));
    assert!(lib.is_file(), "{} missing", lib.display());
    lib
}
