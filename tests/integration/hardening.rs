//! What a hostile-input probe of the CLI found, one test per finding: crafted GGUF
//! hyperparameters that aborted llama.cpp, FIFOs that hung every command, unbounded
//! threads, runaway chat templates, duplicate and control-character ids, out-of-range
//! sampling values, chats that outgrow the context, and misleading messages.
//! (The endless download and the registry-write failure are in `store.rs`.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use runanywhere_tests::{cli_command, data_dir, plugin_dir, registry_with, stderr};

/// Runs `cmd` (with `stdin`), failing the test if it has not finished within `limit`:
/// these commands used to hang, and a hang must be a failure, not a stuck test run.
fn finish_within(mut cmd: Command, stdin: &[u8], limit: Duration) -> Output {
    cmd.stdin(Stdio::piped());
    let mut child: Child = cmd.spawn().unwrap();
    if let Some(mut pipe) = child.stdin.take() {
        let _ = pipe.write_all(stdin);
    }
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}: {cmd:?}\nstderr: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The CLI with the real plugins of `plugins` and an empty store in `home`.
fn cli(plugins: &Path, home: &Path, args: &[&str]) -> Command {
    cli_command(
        Some(plugins),
        args,
        &[("RUNANYWHERE_HOME", home.to_str().unwrap())],
    )
}

fn stories(ext: &str) -> PathBuf {
    data_dir().join(format!("tinystories/stories260K.{ext}"))
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

// ---------------------------------------------------------------------------------------
// Crafted GGUF hyperparameters
// ---------------------------------------------------------------------------------------

/// Overwrites the value of metadata `key` (whose GGUF type must be `ty`) in a GGUF file.
fn patch(bytes: &[u8], key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{key} not in the file"));
    let ty_at = at + needle.len();
    assert_eq!(&bytes[ty_at..ty_at + 4], &ty.to_le_bytes(), "{key}'s type");
    let mut out = bytes.to_vec();
    out[ty_at + 4..ty_at + 4 + value.len()].copy_from_slice(value);
    out
}

#[test]
fn crafted_hyperparameters_are_refused_before_llama_cpp_sees_them() {
    const U32: u32 = 4;
    const F32: u32 = 6;
    let original = std::fs::read(stories("gguf")).unwrap();
    let cases: Vec<(&str, u32, Vec<u8>, &str)> = vec![
        (
            "llama.block_count",
            U32,
            0u32.to_le_bytes().to_vec(),
            "is 0",
        ),
        (
            "llama.block_count",
            U32,
            513u32.to_le_bytes().to_vec(),
            "is 513",
        ),
        (
            "llama.block_count",
            U32,
            65536u32.to_le_bytes().to_vec(),
            "is 65536",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            F32,
            (-1.0f32).to_le_bytes().to_vec(),
            "is -1",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            F32,
            (-1e-30f32).to_le_bytes().to_vec(),
            "must be a finite number above 0",
        ),
        (
            "llama.attention.layer_norm_rms_epsilon",
            F32,
            f32::NAN.to_le_bytes().to_vec(),
            "is NaN",
        ),
        (
            "llama.context_length",
            U32,
            (1u32 << 31).to_le_bytes().to_vec(),
            "is 2147483648",
        ),
        (
            "llama.attention.head_count_kv",
            U32,
            3u32.to_le_bytes().to_vec(),
            "must divide",
        ),
        (
            "llama.attention.head_count",
            U32,
            0u32.to_le_bytes().to_vec(),
            "is 0",
        ),
    ];
    let (plugins, _registry) = registry_with(&["llama-cpp", "candle"]);
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (i, (key, ty, value, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("crafted-{i}.gguf"));
        std::fs::write(&path, patch(&original, key, *ty, value)).unwrap();
        let p = path.to_str().unwrap();

        let out = finish_within(
            cli(plugins.path(), home.path(), &["verify", p]),
            b"",
            Duration::from_secs(60),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "verify {key}: {text}");
        assert!(
            text.contains(key) && text.contains(needle),
            "verify {key}: {text}"
        );

        let args = [
            "run",
            "--model",
            p,
            "-n",
            "4",
            "-t",
            "1",
            "--temperature",
            "0",
            "Once",
        ];
        let out = finish_within(
            cli(plugins.path(), home.path(), &args),
            b"",
            Duration::from_secs(60),
        );
        let err = stderr(&out);
        // Exit 1 with InvalidModel, not 134 (abort) after a gdb backtrace.
        assert_eq!(out.status.code(), Some(1), "run {key}: {err}");
        assert!(
            err.contains("invalid_model") && err.contains(key) && err.contains(needle),
            "run {key}: {err}"
        );

        // Candle gets the same check (it used to say "missing ..." for a present but
        // invalid epsilon).
        let mut args = args.to_vec();
        args.extend(["--engine", "candle"]);
        let out = finish_within(
            cli(plugins.path(), home.path(), &args),
            b"",
            Duration::from_secs(60),
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "candle {key}: {err}");
        assert!(
            err.contains(key) && err.contains(needle) && !err.contains("missing"),
            "candle {key}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Files that are not regular files
// ---------------------------------------------------------------------------------------

#[test]
fn fifos_are_refused_at_once_as_models_manifests_and_templates() {
    let (plugins, _registry) = registry_with(&["llama-cpp", "mock"]);
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    mkfifo(&fifo);
    let f = fifo.to_str().unwrap();
    let limit = Duration::from_secs(30);
    for args in [
        vec!["verify", f],
        vec!["run", "--model", f, "-n", "1", "hi"],
        vec!["tokenize", "--model", f, "hi"],
        vec!["import", f],
    ] {
        let out = finish_within(cli(plugins.path(), home.path(), &args), b"", limit);
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("is a FIFO (named pipe), not a regular file"),
            "{args:?}: {all}"
        );
    }

    // A FIFO named like a manifest is listed as a broken manifest; the others load.
    let extra = tempfile::tempdir().unwrap();
    mkfifo(&extra.path().join("pipe.toml"));
    for env in [None, Some(extra.path())] {
        let mut cmd = cli(plugins.path(), home.path(), &["engines", "--json"]);
        match env {
            Some(path) => cmd.env("RUNANYWHERE_PLUGIN_PATH", path),
            None => cmd.args(["--plugins-dir", extra.path().to_str().unwrap()]),
        };
        let out = finish_within(cmd, b"", limit);
        assert!(out.status.success(), "{}", stderr(&out));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let rows = rows.as_array().unwrap();
        let pipe = rows
            .iter()
            .find(|r| r["id"] == "pipe")
            .expect("pipe listed");
        assert_eq!(pipe["kind"], "invalid_manifest");
        assert!(pipe["reason"].as_str().unwrap().contains("FIFO"), "{pipe}");
        assert!(rows
            .iter()
            .any(|r| r["id"] == "mock" && r["status"] == "ok"));
    }

    // A FIFO as the chat template file.
    let template = dir.path().join("template.jinja");
    mkfifo(&template);
    let args = [
        "chat",
        "--engine",
        "mock",
        "--model",
        "mock",
        "--chat-template-file",
        template.to_str().unwrap(),
    ];
    let out = finish_within(cli(plugins.path(), home.path(), &args), b"hi\n", limit);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a FIFO"), "{}", stderr(&out));
}

#[test]
fn devices_and_symlink_loops_are_named_for_what_they_are() {
    let (plugins, _registry) = registry_with(&["llama-cpp"]);
    let home = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(30);
    for device in ["/dev/zero", "/dev/urandom"] {
        for args in [vec!["verify", device], vec!["run", "--model", device, "hi"]] {
            let out = finish_within(cli(plugins.path(), home.path(), &args), b"", limit);
            let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
            assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
            assert!(all.contains("is a character device"), "{args:?}: {all}");
            assert!(!all.contains("empty"), "{args:?}: {all}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let out = finish_within(
        cli(
            plugins.path(),
            home.path(),
            &["verify", a.to_str().unwrap()],
        ),
        b"",
        limit,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Too many levels of symbolic links"), "{text}");
    assert!(!stderr(&out).contains("neither a file"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------

#[test]
fn thread_counts_are_capped_at_the_logical_cpus() {
    let (_dir, registry) = registry_with(&["candle"]);
    let cpus = runanywhere::engine::logical_cpus();
    for (asked, used) in [(1, 1), (cpus, cpus), (cpus + 1, cpus), (100_000, cpus)] {
        let model = registry
            .engine("candle")
            .unwrap()
            .load_model(runanywhere::LoadRequest {
                model_path: stories("gguf").to_string_lossy().into_owned().into(),
                threads: asked,
                ..Default::default()
            })
            .unwrap();
        let threads = model
            .info()
            .extensions
            .iter()
            .find(|kv| kv.key.as_str() == "threads")
            .map(|kv| kv.value.to_string());
        assert_eq!(threads, Some(used.to_string()), "asked for {asked}");
    }
}

#[test]
fn out_of_range_sampling_values_are_refused_with_the_range() {
    let plugins = plugin_dir(&["mock"]);
    let home = tempfile::tempdir().unwrap();
    for (flag, value, message) in [
        (
            "--top-p",
            "2",
            "sampling.top_p must be in (0, 1] (1 = off), not 2",
        ),
        (
            "--top-p",
            "0",
            "sampling.top_p must be in (0, 1] (1 = off), not 0",
        ),
        (
            "--min-p",
            "1",
            "sampling.min_p must be in [0, 1) (0 = off), not 1",
        ),
    ] {
        let args = [
            "run", "--engine", "mock", "--model", "mock", flag, value, "hi",
        ];
        let out = finish_within(
            cli(plugins.path(), home.path(), &args),
            b"",
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        assert!(stderr(&out).contains(message), "{}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------

#[test]
fn runaway_chat_templates_fail_fast_with_a_clear_error() {
    let (plugins, _registry) = registry_with(&["llama-cpp"]);
    let home = tempfile::tempdir().unwrap();
    let gguf = stories("gguf");
    let loops = "{% for a in range(10000) %}{% for b in range(10000) %}\
                 {% for c in range(10000) %}x{% endfor %}{% endfor %}{% endfor %}";
    let args = [
        "chat",
        "--model",
        gguf.to_str().unwrap(),
        "-t",
        "1",
        "--chat-template",
        loops,
    ];
    let out = finish_within(
        cli(plugins.path(), home.path(), &args),
        b"hello\n",
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("chat template ran more than 5000000 instructions")
            || err.contains("chat template wrote more than"),
        "{err}"
    );
}

#[test]
fn a_chat_past_the_context_drops_the_oldest_turns() {
    let (plugins, _registry) = registry_with(&["llama-cpp"]);
    let home = tempfile::tempdir().unwrap();
    let gguf = stories("gguf");
    let args = [
        "chat",
        "--model",
        gguf.to_str().unwrap(),
        "-t",
        "1",
        "--ctx-size",
        "96",
        "-n",
        "12",
        "--temperature",
        "0",
    ];
    let turns: String = (0..8)
        .map(|i| format!("Tell me story number {i} about a little cat.\n"))
        .collect();
    let out = finish_within(
        cli(plugins.path(), home.path(), &args),
        turns.as_bytes(),
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("error:"), "{err}");
    assert!(
        err.contains("oldest message(s) to fit the 96-token context"),
        "{err}"
    );
    // Every turn got a reply.
    let replies = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        replies >= 8,
        "{replies} lines: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A single message longer than the context cannot be fitted: a clear error, the
    // conversation goes on, and a script sees the failure in the exit code.
    let long = format!("{}\nhello\n", "word ".repeat(200));
    let out = finish_within(
        cli(plugins.path(), home.path(), &args),
        long.as_bytes(),
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the message is too long") && err.contains("/reset"),
        "{err}"
    );
    assert_eq!(
        err.matches("error:").count(),
        1,
        "only the long turn failed: {err}"
    );
}

// ---------------------------------------------------------------------------------------
// Ids and messages
// ---------------------------------------------------------------------------------------

#[test]
fn control_characters_never_reach_the_terminal_raw() {
    let plugins = plugin_dir(&["mock"]);
    let home = tempfile::tempdir().unwrap();
    // A manifest whose id and file name carry an escape sequence.
    let evil = plugins.path().join("e\x1b[2Jvil.toml");
    std::fs::write(
        &evil,
        "id = \"mo\x1b[31mck\"\nlibrary = \"x\"\napi_version = 1\nformats = [\"mock\"]\n",
    )
    .unwrap();
    let out = finish_within(
        cli(plugins.path(), home.path(), &["engines"]),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.contains("\\u{1b}"), "{text}");

    // The same through an error message: a store id given to import.
    let out = finish_within(
        cli(
            plugins.path(),
            home.path(),
            &[
                "import",
                stories("gguf").to_str().unwrap(),
                "--id",
                "a\x1b]0;pwned\x07",
            ],
        ),
        b"",
        Duration::from_secs(30),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\u{1b}]0;pwned\\u{7}"), "{err}");
}

#[test]
fn unsupported_llama2c_shapes_are_named() {
    let (plugins, _registry) = registry_with(&["candle"]);
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // stories260K's shape with 3 key/value heads for 8 heads.
    let bytes = runanywhere_formats::llama2c::testing::checkpoint([64, 172, 5, 8, 3, 512, 512]);
    let path = dir.path().join("odd.bin");
    std::fs::write(&path, bytes).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["verify", p],
        vec!["run", "--engine", "candle", "--model", p, "hi"],
    ] {
        let out = finish_within(
            cli(plugins.path(), home.path(), &args),
            b"",
            Duration::from_secs(30),
        );
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        assert_eq!(out.status.code(), Some(1), "{args:?}: {all}");
        assert!(
            all.contains("unsupported llama2.c shape: 8 heads"),
            "{args:?}: {all}"
        );
        assert!(!all.contains("unrecognised"), "{args:?}: {all}");
    }
}
