//! The runtime library: commands that open no plugin, the [`ModelManager`] (sharing,
//! keep-alive, LRU eviction under a budget, the turn queue with timeouts and
//! cancellation), and two threads generating on one shared model.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use runanywhere::memory::MemoryEstimate;
use runanywhere::registry::Registry;
use runanywhere::{
    CancelToken, Error, GenerateOptions, KeepAlive, LoadOptions, LoadRequest, ManagerConfig,
    ModelKey, ModelManager, Prompt, Runtime, RuntimeConfig, SinkControl, StopReason, Turn,
};
use runanywhere_tests::{cli_command, data_dir, plugin_dir, registry_with, stderr};

// ---------------------------------------------------------------------------------------
// Commands that open no plugin
// ---------------------------------------------------------------------------------------

#[test]
fn store_and_file_commands_open_no_plugin_library() {
    // A plugin whose library aborts the process when it is opened.
    let plugins = plugin_dir(&["abort-on-load"]);
    let home = tempfile::tempdir().unwrap();
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let g = gguf.to_str().unwrap();
    let env = [("RUNANYWHERE_HOME", home.path().to_str().unwrap())];
    let run = |args: &[&str]| {
        cli_command(Some(plugins.path()), args, &env)
            .output()
            .unwrap()
    };

    // The fixture works: a command that needs the engines dies on it.
    let engines = run(&["engines"]);
    assert_eq!(
        engines.status.signal(),
        Some(libc_sigabrt()),
        "{}",
        stderr(&engines)
    );

    for args in [
        vec!["catalog"],
        vec!["catalog", "--json"],
        vec!["models"],
        vec!["models", "--json"],
        vec!["verify", g],
        vec!["info", g],
        vec!["info", "--json", g],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let out = run(&["rm", "nothing-here", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no model `nothing-here`"),
        "{}",
        stderr(&out)
    );
    // `info` still names the engines that claim the format, from their manifests.
    let out = run(&["info", "--json", g]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["engines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"abort-on-load") && ids.contains(&"llama-cpp"),
        "{ids:?}"
    );
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn the_cli_never_sees_the_users_store_or_plugins() {
    let cmd = cli_command(None, &["models"], &[]);
    let env: Vec<(String, String)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    for key in ["RUNANYWHERE_HOME", "XDG_DATA_HOME"] {
        let value = env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{key} is not set for the CLI under test"));
        assert!(
            PathBuf::from(&value).starts_with(std::env::temp_dir()),
            "{key}={value}"
        );
    }
    // And the store it sees is empty.
    let out = cli_command(None, &["models", "--json"], &[])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

// ---------------------------------------------------------------------------------------
// ModelManager
// ---------------------------------------------------------------------------------------

/// Mock models, counting loads.
struct Loader {
    _dir: tempfile::TempDir,
    registry: Registry,
    loads: AtomicUsize,
}

impl Loader {
    fn new() -> Self {
        let (dir, registry) = registry_with(&["mock"]);
        Loader {
            _dir: dir,
            registry,
            loads: AtomicUsize::new(0),
        }
    }

    /// A key for the mock with context `ctx` (distinct contexts, distinct models).
    fn key(ctx: u32) -> ModelKey {
        let options = LoadOptions {
            context_length: ctx,
            ..LoadOptions::default()
        };
        ModelKey::new(PathBuf::from("mock"), "mock", &options)
    }

    fn load(
        &self,
        manager: &ModelManager,
        ctx: u32,
        bytes: u64,
    ) -> Result<runanywhere::LoadedModel, Error> {
        let estimate = MemoryEstimate {
            weights: bytes,
            kv_cache: 0,
            context: u64::from(ctx),
        };
        manager.get_or_load(&Self::key(ctx), Some(estimate), false, || {
            self.loads.fetch_add(1, Ordering::SeqCst);
            // Slow enough that concurrent requests overlap with the load.
            std::thread::sleep(Duration::from_millis(50));
            let model = self
                .registry
                .engine("mock")
                .unwrap()
                .load_model(LoadRequest {
                    model_path: "mock".into(),
                    context_length: ctx,
                    ..Default::default()
                })?;
            Ok((model, 50.0))
        })
    }
}

fn manager(budget: Option<u64>, keep_alive: KeepAlive) -> ModelManager {
    ModelManager::new(ManagerConfig { budget, keep_alive })
}

fn greedy(max_tokens: u32) -> runanywhere::GenerateRequest {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::greedy()
    }
    .request(Prompt::Text("hello".into()), 0)
}

#[test]
fn one_key_is_loaded_once_even_when_requests_arrive_together() {
    let loader = Arc::new(Loader::new());
    let manager = manager(None, KeepAlive::Forever);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (loader, manager, barrier) =
                (Arc::clone(&loader), manager.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                loader.load(&manager, 64, 10).unwrap()
            })
        })
        .collect();
    let handles: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(loader.loads.load(Ordering::SeqCst), 1);
    for h in &handles[1..] {
        assert!(
            std::ptr::eq(h.model(), handles[0].model()),
            "one shared model"
        );
    }
    assert_eq!(manager.loaded().len(), 1);
    // A different key is another model.
    loader.load(&manager, 128, 10).unwrap();
    assert_eq!(loader.loads.load(Ordering::SeqCst), 2);
    assert_eq!(manager.loaded().len(), 2);
}

#[test]
fn idle_models_are_unloaded_at_their_keep_alive() {
    let loader = Loader::new();
    let manager = manager(None, KeepAlive::For(Duration::from_millis(300)));
    let model = loader.load(&manager, 64, 10).unwrap();
    model
        .generate(greedy(3), &Turn::default(), |_, _| SinkControl::Continue)
        .unwrap();
    // In use (a handle is held): never unloaded, even past the expiry.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(manager.sweep(), 0);
    let listed = manager.loaded();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].expires_in, Some(Duration::ZERO));
    // Its last handle going, past the expiry, unloads it.
    drop(model);
    assert!(manager.loaded().is_empty());

    // Idle before the expiry: kept until it passes, then the sweep unloads it.
    let model = loader.load(&manager, 64, 10).unwrap();
    model
        .generate(greedy(3), &Turn::default(), |_, _| SinkControl::Continue)
        .unwrap();
    drop(model);
    assert_eq!(manager.loaded().len(), 1);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(manager.sweep(), 1);
    assert!(manager.loaded().is_empty());

    // A per-use keep-alive of 0 unloads the model as soon as the use ends.
    let model = loader.load(&manager, 64, 10).unwrap();
    let turn = Turn {
        keep_alive: Some(KeepAlive::UntilIdle),
        ..Turn::default()
    };
    model
        .generate(greedy(2), &turn, |_, _| SinkControl::Continue)
        .unwrap();
    drop(model);
    assert!(manager.loaded().is_empty());
    // Forever stays.
    let model = loader.load(&manager, 64, 10).unwrap();
    let turn = Turn {
        keep_alive: Some(KeepAlive::from_secs(-1)),
        ..Turn::default()
    };
    model
        .generate(greedy(2), &turn, |_, _| SinkControl::Continue)
        .unwrap();
    drop(model);
    assert_eq!(manager.sweep(), 0);
    assert_eq!(manager.loaded()[0].expires_in, None);
}

#[test]
fn loads_past_the_budget_evict_idle_models_least_recently_used_first() {
    let loader = Loader::new();
    let manager = manager(Some(100), KeepAlive::Forever);
    for ctx in [64, 128] {
        drop(loader.load(&manager, ctx, 40).unwrap());
    }
    // Use 64 again, so 128 is the least recently used.
    let m64 = loader.load(&manager, 64, 40).unwrap();
    m64.generate(greedy(1), &Turn::default(), |_, _| SinkControl::Continue)
        .unwrap();
    drop(m64);
    drop(loader.load(&manager, 256, 40).unwrap());
    let keys: Vec<u32> = manager
        .loaded()
        .iter()
        .map(|m| m.key.options.context_length)
        .collect();
    assert_eq!(sorted(keys), [64, 256], "128 was evicted");

    // Nothing idle to evict (both held): a typed error with the numbers.
    let a = loader.load(&manager, 64, 40).unwrap();
    let b = loader.load(&manager, 256, 40).unwrap();
    let err = loader.load(&manager, 512, 40).unwrap_err();
    match &err {
        Error::InsufficientMemory(e) => {
            assert_eq!(e.estimate.total(), 40);
            assert_eq!(e.available, 20);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), runanywhere::ErrorKind::InsufficientMemory);
    // Too big for the whole budget even with everything idle gone: refused before any
    // model is evicted.
    drop((a, b));
    assert!(matches!(
        loader.load(&manager, 512, 101),
        Err(Error::InsufficientMemory(_))
    ));
    assert_eq!(manager.loaded().len(), 2, "nothing was evicted for it");
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

#[test]
fn generations_wait_their_turn_and_a_wait_can_time_out_or_be_cancelled() {
    let loader = Loader::new();
    let manager = manager(None, KeepAlive::Forever);
    let model = loader.load(&manager, 2048, 10).unwrap();

    // A generation that holds the model until told to go on.
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let busy = {
        let model = model.clone();
        std::thread::spawn(move || {
            let mut first = true;
            model
                .generate(greedy(5), &Turn::default(), move |_, _| {
                    if first {
                        first = false;
                        started_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                    }
                    SinkControl::Continue
                })
                .unwrap()
        })
    };
    started_rx.recv().unwrap();
    assert!(model.is_busy());

    // Times out with the queue depth.
    let start = Instant::now();
    let turn = Turn {
        wait: Some(Duration::from_millis(100)),
        ..Turn::default()
    };
    let err = model
        .generate(greedy(1), &turn, |_, _| SinkControl::Continue)
        .unwrap_err();
    assert!(start.elapsed() >= Duration::from_millis(100));
    match err {
        Error::QueueTimeout {
            waited_ms, queued, ..
        } => assert_eq!((waited_ms, queued), (100, 1)),
        other => panic!("{other:?}"),
    }

    // Cancelled while queued: the waiting request gives up, the queue empties.
    let cancel = CancelToken::new();
    let waiter = {
        let (model, cancel) = (model.clone(), cancel.clone());
        std::thread::spawn(move || {
            let turn = Turn {
                cancel: Some(cancel),
                ..Turn::default()
            };
            model.generate(greedy(1), &turn, |_, _| SinkControl::Continue)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while model.queue_depth() != 1 {
        assert!(Instant::now() < deadline, "the waiter never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(manager.loaded()[0].queued, 1);
    cancel.cancel();
    assert!(matches!(waiter.join().unwrap(), Err(Error::Cancelled)));
    assert_eq!(model.queue_depth(), 0);

    // The first generation finishes, and the model is free again.
    release_tx.send(()).unwrap();
    let stats = busy.join().unwrap();
    assert_eq!(stats.stop_reason(), StopReason::MaxTokens);
    assert!(!model.is_busy());
    let stats = model
        .generate(greedy(2), &turn, |_, _| SinkControl::Continue)
        .unwrap();
    assert_eq!(stats.generated_tokens, 2);
}

#[test]
fn two_threads_generating_on_one_shared_model_get_the_single_thread_outputs() {
    let (dir, _registry) = registry_with(&["llama-cpp"]);
    let runtime = Runtime::new(RuntimeConfig {
        plugin_dirs: vec![dir.path().to_path_buf()],
        store_home: Some(tempfile::tempdir().unwrap().keep()),
        ..RuntimeConfig::default()
    });
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let options = LoadOptions {
        engine: Some("llama-cpp".into()),
        context_length: 256,
        threads: 1,
        ..LoadOptions::default()
    };
    let load = || {
        runtime
            .load(
                gguf.to_str().unwrap(),
                &options,
                &mut runanywhere::store::NoProgress,
            )
            .unwrap()
    };
    let generate = |model: &runanywhere::LoadedModel, prompt: &str| {
        let request = GenerateOptions {
            max_tokens: 40,
            ..GenerateOptions::greedy()
        }
        .request(Prompt::Text(prompt.into()), 0);
        let mut ids = Vec::new();
        model
            .generate(request, &Turn::default(), |id, _| {
                ids.push(id);
                SinkControl::Continue
            })
            .unwrap();
        ids
    };
    let prompts = ["Once upon a time", "The little dog"];
    let model = load();
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| generate(&model, p)).collect();
    std::thread::scope(|s| {
        let threads: Vec<_> = prompts
            .iter()
            .map(|p| {
                let model = load();
                s.spawn(move || generate(&model, p))
            })
            .collect();
        let together: Vec<Vec<u32>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(together, alone);
    });
    assert_eq!(
        runtime.models().loaded().len(),
        1,
        "both threads shared one model"
    );
}

#[test]
fn a_failed_or_panicking_load_leaves_the_key_loadable_and_keep_alive_does_not_stick() {
    let loader = Loader::new();
    let manager = manager(None, KeepAlive::For(Duration::from_secs(60)));
    let key = Loader::key(64);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        manager.get_or_load(&key, None, false, || panic!("a load that panics"))
    }));
    assert!(panicked.is_err());
    let failed = manager.get_or_load(&key, None, false, || Err(Error::Cancelled));
    assert!(matches!(failed, Err(Error::Cancelled)));
    // Neither left the key stuck as "loading": a real load goes through.
    let model = loader.load(&manager, 64, 10).unwrap();

    // A use that pins the model (forever, or for longer than the clock holds) is that
    // use's choice only: the next default use goes back to the manager's keep-alive.
    for keep_alive in [KeepAlive::Forever, KeepAlive::For(Duration::MAX)] {
        let turn = Turn {
            keep_alive: Some(keep_alive),
            ..Turn::default()
        };
        model
            .generate(greedy(1), &turn, |_, _| SinkControl::Continue)
            .unwrap();
        assert_eq!(manager.loaded()[0].expires_in, None, "{keep_alive:?}");
    }
    model
        .generate(greedy(1), &Turn::default(), |_, _| SinkControl::Continue)
        .unwrap();
    let left = manager.loaded()[0].expires_in.unwrap();
    assert!(
        left > Duration::from_secs(50) && left <= Duration::from_secs(60),
        "{left:?}"
    );
}

#[test]
fn plugin_log_lines_reach_the_hosts_log() {
    let (plugins, _registry) = registry_with(&["llama-cpp"]);
    let gguf = data_dir().join("tinystories/stories260K.gguf");
    let tok = data_dir().join("tinystories/tok512.bin");
    let run = |level: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--model",
            gguf.to_str().unwrap(),
            "-n",
            "3",
            "-t",
            "1",
            "--temperature",
            "0",
        ];
        args.extend_from_slice(extra);
        args.push("Once");
        let out = cli_command(Some(plugins.path()), &args, &[("RUNANYWHERE_LOG", level)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    // The plugin's own warning, at the default level.
    let err = run("warn", &["--tokenizer", tok.to_str().unwrap()]);
    assert!(
        err.contains("WARN") && err.contains("the separate tokenizer is ignored"),
        "{err}"
    );
    // llama.cpp's own lines, one level lower than llama.cpp gives them: its warnings
    // from info (-v) on, not at the default level.
    let quiet = run("warn", &[]);
    assert!(
        !quiet.contains("possible training context overflow"),
        "{quiet}"
    );
    let err = run("info", &[]);
    assert!(
        err.contains("plugin") && err.contains("possible training context overflow"),
        "{err}"
    );
}

#[test]
fn a_cancel_during_a_long_prefill_stops_within_a_chunk() {
    let (_dir, registry) = registry_with(&["llama-cpp", "candle"]);
    for engine in ["llama-cpp", "candle"] {
        let model = registry
            .engine(engine)
            .unwrap()
            .load_model(LoadRequest {
                model_path: data_dir()
                    .join("tinystories/stories260K.gguf")
                    .to_string_lossy()
                    .into_owned()
                    .into(),
                context_length: 2100,
                threads: 1,
                batch_size: 16,
                ..Default::default()
            })
            .unwrap();
        // Two prompts sharing no prefix, so llama.cpp's prompt cache cannot shorten the
        // second prefill.
        let request = |id: u32| {
            let mut r = GenerateOptions {
                max_tokens: 1,
                ..GenerateOptions::greedy()
            }
            .request(Prompt::Ids(vec![id; 2000].into()), 0);
            r.add_special = false;
            r
        };
        // The whole prefill, uncancelled.
        let start = Instant::now();
        let stats = model
            .generate(request(403), |_, _| SinkControl::Continue)
            .unwrap();
        let full = start.elapsed();
        assert_eq!(stats.generated_tokens, 1, "{engine}");

        // Cancelled a fifth of the way in: it stops long before the end, with nothing
        // generated.
        let cancel = CancelToken::new();
        let canceller = {
            let cancel = cancel.clone();
            std::thread::spawn(move || {
                std::thread::sleep(full / 5);
                cancel.cancel();
            })
        };
        let start = Instant::now();
        let stats = model
            .generate_cancellable(request(404), &cancel, |_, _| SinkControl::Continue)
            .unwrap();
        let took = start.elapsed();
        canceller.join().unwrap();
        eprintln!("{engine}: 2000-token prefill {full:?}, cancelled at 1/5: {took:?}");
        assert_eq!(stats.stop_reason(), StopReason::Cancelled, "{engine}");
        assert_eq!(stats.generated_tokens, 0, "{engine}");
        assert!(
            took < full * 3 / 4,
            "{engine}: the cancelled prefill took {took:?} of the full {full:?}"
        );
    }
}

/// A chat turn continues the last exchange as tokens: its request is the last prompt's
/// ids, the reply's ids, then the new text's — unless the reply's text cannot be
/// extended exactly (a stop string, trailing space trimmed by the template).
#[test]
fn a_chat_turn_continues_the_last_exchange_token_for_token() {
    use runanywhere::{ChatSession, GenerateOptions, Prompt, SinkControl};
    let (_dir, registry) = registry_with(&["llama-cpp"]);
    let path = data_dir().join("tinystories/stories260K.gguf");
    let model = runanywhere_tests::load_model(&registry, "llama-cpp", &path, 0, false).unwrap();
    let options = GenerateOptions {
        max_tokens: 12,
        ..GenerateOptions::greedy()
    };
    let mut session = ChatSession::new(&model, None, None).unwrap();
    let first = session
        .prepare(&model, "Once upon a time", &options, 0)
        .unwrap();
    assert!(matches!(first.request.prompt, Prompt::Text(_)));
    let (mut text, mut ids) = (String::new(), Vec::new());
    let stats = model
        .generate(first.request, |id, piece| {
            text.push_str(piece);
            ids.push(id);
            SinkControl::Continue
        })
        .unwrap();
    assert_eq!(
        stats.stop_reason(),
        runanywhere::StopReason::MaxTokens,
        "{text:?}"
    );
    session.commit(&text, &stats, &ids);
    let second = session.prepare(&model, "The cat", &options, 0).unwrap();
    let rendered = format!(
        "User: Once upon a time\nAssistant: {}\nUser: The cat\nAssistant:",
        text.trim()
    );
    match &second.request.prompt {
        Prompt::Ids(next) if text == text.trim_end() => {
            let mut expected = stats.prompt_ids.to_vec();
            expected.extend(&ids);
            expected.extend(
                model
                    .tokenize("\nUser: The cat\nAssistant:", false, true)
                    .unwrap(),
            );
            assert_eq!(next.as_slice(), expected, "turn 2 extends turn 1's ids");
        }
        Prompt::Text(t) if text != text.trim_end() => assert_eq!(t.as_str(), rendered),
        other => panic!("reply {text:?}: unexpected turn-2 prompt {other:?}"),
    }
    // A reset starts again from text.
    session.reset();
    let again = session
        .prepare(&model, "Once upon a time", &options, 0)
        .unwrap();
    assert!(matches!(again.request.prompt, Prompt::Text(_)));
}
