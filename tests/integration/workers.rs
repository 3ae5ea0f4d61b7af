//! Engines in worker processes: a segfault, an abort, an exit, a hang or a runaway
//! allocation in an engine is a typed error with the reason, the host lives on, and the
//! next request gets a fresh worker. In-process, the same faults kill the program (run
//! as a child here, so the test runner survives to check the signal).

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use runanywhere::registry::Registry;
use runanywhere::worker::{Crash, Exit};
use runanywhere::{
    CancelToken, Error, GenerateRequest, Isolation, LoadRequest, Model, Prompt, SinkControl,
    StopReason,
};
use runanywhere_tests::{json_output, plugin_dir, run_cli, stderr, worker_config};
use serde_json::{json, Value};

use crate::serve::{get, post, Served};

fn registry(engines: &[&str], config: runanywhere::WorkerConfig) -> (tempfile::TempDir, Registry) {
    let dir = plugin_dir(engines);
    let registry = Registry::discover_with(&[dir.path().to_path_buf()], config);
    for id in engines {
        assert!(
            registry.engine(id).is_some(),
            "{id}: {:?}",
            registry.unavailable()
        );
    }
    (dir, registry)
}

fn load(registry: &Registry, id: &str) -> Result<Model, Error> {
    registry.engine(id).unwrap().load_model(LoadRequest {
        model_path: "any".into(),
        ..Default::default()
    })
}

/// Generates up to 5 tokens, returning the result and the tokens seen.
fn generate(model: &Model) -> (Result<runanywhere::GenerationStats, Error>, u32) {
    let mut request = GenerateRequest::new(Prompt::Text("x".into()));
    request.max_tokens = 5;
    let mut seen = 0;
    let result = model.generate(request, |_, _| {
        seen += 1;
        SinkControl::Continue
    });
    (result, seen)
}

fn crash(e: &Error) -> &Crash {
    match e {
        Error::EngineCrashed { crash, .. } => crash,
        other => panic!("not a crash: {other}"),
    }
}

#[test]
fn each_fault_in_a_worker_is_a_typed_error_and_the_next_request_succeeds() {
    // The faulty manifests ask for `process`; the mock stays in-process. A short hang
    // timeout for the hang; for the runaway allocation (seconds of page faults on a slow
    // machine) a long one, and a 1 GiB address space.
    let config = |hang: u64, memory: Option<u64>| runanywhere::WorkerConfig {
        force: None,
        hang_timeout: Duration::from_secs(hang),
        memory_limit: memory,
        ..worker_config(Duration::ZERO)
    };
    let faults = [
        ("faulty-generate-segfault", config(60, None)),
        ("faulty-generate-exit", config(60, None)),
        ("faulty-generate-hang", config(3, None)),
        ("faulty-generate-alloc", config(120, Some(1 << 30))),
    ];
    for (id, config) in faults {
        let (_dir, registry) = registry(&[id], config);
        let engine = registry.engine(id).unwrap();
        assert_eq!(engine.isolation(), Isolation::Process, "{id}");
        let model = load(&registry, id).unwrap();
        let pid = model.worker_pid().unwrap();
        let started = Instant::now();
        let (result, seen) = generate(&model);
        let err = result.unwrap_err();
        assert_eq!(
            err.kind(),
            runanywhere::ErrorKind::EngineCrashed,
            "{id}: {err}"
        );
        // Tokens made before a crash may die in the worker's outbox with it; a hung
        // worker has sent them.
        if id == "faulty-generate-hang" {
            assert_eq!(seen, 2, "{id}: the tokens before the hang streamed");
        } else {
            assert!(seen <= 2, "{id}: {seen} tokens");
        }
        let crash = crash(&err);
        match id {
            "faulty-generate-segfault" => assert_eq!(crash.exit, Exit::Signal(libc::SIGSEGV)),
            "faulty-generate-exit" => assert_eq!(crash.exit, Exit::Code(3)),
            "faulty-generate-hang" => {
                assert!(
                    matches!(crash.exit, Exit::Hung(d) if d >= Duration::from_secs(3)),
                    "{crash}"
                );
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{:?}",
                    started.elapsed()
                );
            }
            "faulty-generate-alloc" => {
                // Rust's allocator aborts when the address-space limit refuses memory,
                // and says so on stderr.
                assert_eq!(crash.exit, Exit::Signal(libc::SIGABRT), "{crash}");
                assert!(
                    crash
                        .stderr
                        .iter()
                        .any(|l| l.contains("memory allocation of")),
                    "{crash}"
                );
            }
            _ => unreachable!(),
        }
        assert!(
            err.to_string()
                .starts_with(&format!("engine `{id}` crashed: ")),
            "{err}"
        );
        assert!(!model.is_alive(), "{id}");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "{id}: worker {pid} still runs"
        );
        // The engine is listed as unhealthy with the reason.
        let listing = registry.listing();
        let entry = listing.iter().find(|e| e.id == id).unwrap();
        assert_eq!(entry.status, "unhealthy", "{id}");
        assert!(
            entry.reason.as_deref().unwrap().contains("crashed"),
            "{entry:?}"
        );
        // The next request to the same engine starts a new worker and succeeds.
        let again = load(&registry, id).unwrap();
        assert_ne!(again.worker_pid(), Some(pid), "{id}: a fresh worker");
        assert_eq!(
            again.tokenize("abc", true, false).unwrap(),
            vec![1, 1, 1],
            "{id}"
        );
    }

    let (_dir, registry) = registry(&["mock", "faulty-load-abort"], config(60, None));
    assert_eq!(
        registry.engine("mock").unwrap().isolation(),
        Isolation::InProcess
    );
    // An abort while loading fails that load; the worker restarts for the next one.
    let err = load(&registry, "faulty-load-abort").unwrap_err();
    assert_eq!(crash(&err).exit, Exit::Signal(libc::SIGABRT), "{err}");
    // A second crash in a row: the restart waits (1 s), and says so meanwhile.
    let err = load(&registry, "faulty-load-abort").unwrap_err();
    assert_eq!(crash(&err).exit, Exit::Signal(libc::SIGABRT), "{err}");
    let err = load(&registry, "faulty-load-abort").unwrap_err();
    assert_eq!(
        err.kind(),
        runanywhere::ErrorKind::EngineUnavailable,
        "{err}"
    );
    assert!(
        err.to_string().contains("crashed 2 times in a row"),
        "{err}"
    );
    assert!(
        err.to_string().contains("the next worker starts in"),
        "{err}"
    );

    // Through all of that, this process still generates with another engine.
    let mock = registry.engine("mock").unwrap().load_model(LoadRequest {
        model_path: "mock".into(),
        ..Default::default()
    });
    let (result, seen) = generate(&mock.unwrap());
    assert_eq!(result.unwrap().generated_tokens, 5);
    assert_eq!(seen, 5);
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn a_cancel_stops_a_generation_in_the_worker_within_a_token() {
    let (_dir, registry) = registry(&["mock-slow"], worker_config(Duration::from_secs(60)));
    let model = registry
        .engine("mock-slow")
        .unwrap()
        .load_model(LoadRequest {
            model_path: "mock".into(),
            ..Default::default()
        })
        .unwrap();
    let cancel = CancelToken::new();
    let mut request = GenerateRequest::new(Prompt::Text("Once upon a time".into()));
    request.max_tokens = 1000;
    let mut seen = 0;
    let started = Instant::now();
    let stats = model
        .generate_cancellable(request, &cancel, |_, _| {
            seen += 1;
            if seen == 3 {
                cancel.cancel();
            }
            SinkControl::Continue
        })
        .unwrap();
    assert_eq!(stats.stop_reason(), StopReason::Cancelled);
    assert_eq!(
        stats.generated_tokens, 3,
        "as in-process: the tokens the caller saw"
    );
    assert_eq!(seen, 3);
    assert!(started.elapsed() < Duration::from_secs(10));
    // The worker is fine and generates again.
    let mut request = GenerateRequest::new(Prompt::Text("Once".into()));
    request.max_tokens = 2;
    let stats = model
        .generate(request, |_, _| SinkControl::Continue)
        .unwrap();
    assert_eq!(stats.stop_reason(), StopReason::MaxTokens);
}

#[test]
fn the_mock_engine_gives_the_same_tokens_in_a_worker_and_in_process() {
    let dir = plugin_dir(&["mock"]);
    let text = |isolation: &str| {
        let out = run_cli(
            Some(dir.path()),
            &[
                "run",
                "--engine",
                "mock",
                "-m",
                "mock",
                "--isolation",
                isolation,
                "--max-tokens",
                "40",
                "--temperature",
                "0",
                "--json",
                "Once upon a time",
            ],
            None,
        );
        assert!(out.status.success(), "{isolation}: {}", stderr(&out));
        let v = json_output(&out);
        (v["generated_ids"].clone(), v["text"].clone())
    };
    let inproc = text("inproc");
    assert_eq!(inproc.0.as_array().unwrap().len(), 40);
    assert_eq!(text("process"), inproc);
}

/// The CLI with the faulty engine `id`: its exit status and stderr.
fn run_faulty(id: &str, isolation: &str, extra: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = plugin_dir(&[id]);
    let mut args = vec![
        "run",
        "-m",
        "any",
        "--engine",
        id,
        "--isolation",
        isolation,
        "--max-tokens",
        "5",
    ];
    args.extend_from_slice(extra);
    args.push("x");
    let out = run_cli(Some(dir.path()), &args, None);
    (out.status, stderr(&out))
}

#[test]
fn the_cli_reports_a_crash_in_a_worker_and_dies_of_it_in_process() {
    let (status, err) = run_faulty("faulty-generate-segfault", "process", &[]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "error: engine `faulty-generate-segfault` crashed: its worker was killed by signal \
             11, SIGSEGV (segmentation fault)"
        ),
        "{err}"
    );
    // In-process the segfault is the CLI's own: documented, and what happens.
    let (status, err) = run_faulty("faulty-generate-segfault", "inproc", &[]);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{err}");

    // An abort in load: its log record crossed the boundary before the abort.
    let (status, err) = run_faulty("faulty-load-abort", "process", &[]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("faulty plugin: aborting in load_model"),
        "{err}"
    );
    assert!(err.contains("signal 6, SIGABRT (aborted)"), "{err}");
    let (status, err) = run_faulty("faulty-load-abort", "inproc", &[]);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{err}");

    let (status, err) = run_faulty("faulty-generate-exit", "process", &[]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("its worker exited with status 3"), "{err}");
    let (status, _) = run_faulty("faulty-generate-exit", "inproc", &[]);
    assert_eq!(status.code(), Some(3));

    let (status, err) = run_faulty("faulty-generate-hang", "process", &["--hang-timeout", "2s"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("was killed as hung"), "{err}");
}

/// The process ids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the fields after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn serve_survives_a_crashing_engine_and_leaves_no_orphans_when_killed() {
    let plugins = plugin_dir(&["mock", "faulty-generate-segfault"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.faulty");
    std::fs::write(&file, b"faulty").unwrap();
    let mut served = Served::start(
        plugins.path(),
        &[
            "--alias",
            &format!("broken={}@faulty-generate-segfault", file.display()),
            "--alias",
            "good=mock@mock",
        ],
        &[],
    );
    let url = served.url.clone();
    let completion = |model: &str| {
        post(
            &format!("{url}/v1/completions"),
            &json!({"model": model, "prompt": "Once upon a time", "max_tokens": 4}).to_string(),
        )
    };
    let (status, body, _) = completion("broken");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "engine_crashed", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SIGSEGV"),
        "{body}"
    );
    let (status, body) = get(&format!("{url}/v1/engines"), None);
    assert_eq!(status, 200);
    let engines: Value = serde_json::from_str(&body).unwrap();
    let faulty = engines["data"]
        .as_array()
        .or_else(|| engines.as_array())
        .unwrap()
        .iter()
        .find(|e| e["id"] == "faulty-generate-segfault")
        .unwrap_or_else(|| panic!("{engines}"))
        .clone();
    assert_eq!(faulty["status"], "unhealthy", "{faulty}");
    assert_eq!(faulty["isolation"], "process", "{faulty}");
    assert!(
        faulty["reason"].as_str().unwrap().contains("SIGSEGV"),
        "{faulty}"
    );
    // Serve runs engines in workers by default: the mock, too, and it still serves.
    let (status, body, _) = completion("good");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4, "{body}");
    // The same broken model again: a new worker loads it, and it crashes the same way.
    let (status, body, _) = completion("broken");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["code"], "engine_crashed", "{body}");

    // Workers of a killed server exit by themselves (stdin closes; no orphans).
    let server = served.pid();
    let workers = children_of(server);
    assert!(
        workers.len() >= 2,
        "workers of the mock and the faulty engine: {workers:?}"
    );
    served.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = workers
            .iter()
            .copied()
            .filter(|&pid| Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid))
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "orphaned workers: {alive:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn engines_that_cannot_start_in_a_worker_are_ledger_entries_with_the_reason() {
    let dir = plugin_dir(&[
        "faulty-init-error",
        "faulty-init-panic",
        "abort-on-load",
        "mock",
    ]);
    let started = Instant::now();
    let registry = Registry::discover_with(
        &[dir.path().to_path_buf()],
        worker_config(Duration::from_secs(60)),
    );
    // Each worker that could not start its engine has exited: discovery did not wait on
    // any of them, and the mock's still works.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let kind = |id: &str| {
        let u = registry
            .unavailable()
            .iter()
            .find(|u| u.id == id)
            .unwrap_or_else(|| panic!("{id} is not in the ledger"));
        (u.kind, u.reason.clone())
    };
    use runanywhere::registry::UnavailableKind;
    let (k, reason) = kind("faulty-init-error");
    assert_eq!(k, UnavailableKind::InitFailed, "{reason}");
    assert!(reason.contains("deliberate init failure"), "{reason}");
    let (k, reason) = kind("faulty-init-panic");
    assert_eq!(k, UnavailableKind::InitFailed, "{reason}");
    // A library that aborts as it is opened kills only its worker.
    let (k, reason) = kind("abort-on-load");
    assert_eq!(k, UnavailableKind::WorkerFailed, "{reason}");
    assert!(reason.contains("SIGABRT"), "{reason}");
    let mock = registry.engine("mock").unwrap().load_model(LoadRequest {
        model_path: "mock".into(),
        ..Default::default()
    });
    assert_eq!(generate(&mock.unwrap()).1, 5);
}
