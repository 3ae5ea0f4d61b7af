//! `runanywhere serve`: the real binary serving real models, driven by the official
//! `openai` and `ollama` Python clients (tests/serve/clients.py, from .venv-clients/) and,
//! for statuses and framing, by a plain HTTP client. Expected outputs come from
//! `runanywhere run --json`: another front end over the same runtime.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runanywhere_tests::hub::HubServer;
use runanywhere_tests::{
    cli_command, data_dir, json_ids, json_output, plugin_dir, run_cli, tinystories_references,
    workspace_dir,
};
use serde_json::{json, Value};

/// A running `runanywhere serve`, killed when dropped.
pub(crate) struct Served {
    child: Child,
    pub(crate) url: String,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts the server on a free port with `args` and waits for its address.
    pub(crate) fn start(plugins: &Path, args: &[&str], env: &[(&str, &str)]) -> Served {
        let mut all = vec!["serve", "--port", "0"];
        all.extend_from_slice(args);
        let mut env = env.to_vec();
        env.push(("RUNANYWHERE_LOG", "warn,runanywhere_server=info"));
        let mut child = cli_command(Some(plugins), &all, &env)
            .spawn()
            .expect("spawn runanywhere serve");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send(url);
                    }
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the server did not start: {}", log.lock().unwrap()));
        let served = Served { child, url, log };
        served.wait_ready();
        served
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, _) = get(&format!("{}/health", self.url), None);
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "never ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL (no chance to clean up) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("kill the server");
        self.child.wait().expect("reap the server");
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (at most `limit`) for the exit.
    fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn read(mut response: ureq::http::Response<ureq::Body>) -> (u16, String, ureq::http::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body, headers)
}

pub(crate) fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let mut request = agent().get(url);
    if let Some(k) = key {
        request = request.header("Authorization", &format!("Bearer {k}"));
    }
    match request.call() {
        Ok(r) => {
            let (s, b, _) = read(r);
            (s, b)
        }
        Err(_) => (0, String::new()),
    }
}

pub(crate) fn post(url: &str, body: &str) -> (u16, Value, ureq::http::HeaderMap) {
    let response = agent()
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .expect("request");
    let (status, text, headers) = read(response);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, headers)
}

pub(crate) fn gguf() -> PathBuf {
    data_dir().join("tinystories/stories260K.gguf")
}

/// `run --json` greedy on stories260K (llama.cpp).
pub(crate) fn run_json(prompt: &[&str], max_tokens: u32, extra: &[&str]) -> Value {
    let gguf = gguf();
    let mut args = vec![
        "run",
        "--model",
        gguf.to_str().unwrap(),
        "--temperature",
        "0",
        "--json",
    ];
    let max = max_tokens.to_string();
    args.extend_from_slice(&["--max-tokens", &max]);
    args.extend_from_slice(extra);
    args.extend_from_slice(prompt);
    json_output(&run_cli(
        Some(plugin_dir(&["llama-cpp"]).path()),
        &args,
        None,
    ))
}

pub(crate) fn finish_reason(stop: &Value) -> &'static str {
    match stop.as_str() {
        Some("max_tokens") | Some("context_full") => "length",
        _ => "stop",
    }
}

#[test]
fn openai_and_ollama_clients_get_what_run_gives() {
    let python = workspace_dir().join(".venv-clients/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup-clients.sh (scripts/test.sh does)",
        python.display()
    );
    let plugins = plugin_dir(&["llama-cpp", "candle"]);
    let hub = HubServer::start();
    hub.add_lfs_file(
        "ggml-org/tiny-llamas",
        "stories260K.gguf",
        std::fs::read(gguf()).unwrap(),
    );
    let home = tempfile::tempdir().unwrap();
    let gguf = gguf();
    let candle = format!("{}@candle", gguf.display());
    let key = "test-key-123";
    let endpoint = hub.endpoint();
    let served = Served::start(
        plugins.path(),
        &[
            "--model",
            gguf.to_str().unwrap(),
            "--model",
            &candle,
            "--api-key",
            key,
        ],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
        ],
    );

    // The chat prompt as the fallback template renders it (stories260K has none).
    let chat = run_json(
        &["User: Once upon a time\nAssistant:"],
        40,
        &["--stop", "\nUser:"],
    );
    let chat_ids = json_ids(&chat["generated_ids"]);
    let reference = &tinystories_references()[0];
    let ids: Vec<String> = reference.prompt_ids.iter().map(u32::to_string).collect();
    let completion = run_json(&[], 30, &["--prompt-ids", &ids.join(" ")]);
    let raw = run_json(&["Once upon a time"], 24, &[]);
    let prompts = ["Once upon a time", "The cat", "Lily was", "One day, a"];
    let texts: Vec<Value> = prompts
        .iter()
        .map(|p| run_json(&[p], 32, &[])["text"].clone())
        .collect();
    let embed_texts = ["Once upon a time", "The cat sat"];
    let embedded = json_output(&run_cli(
        Some(plugin_dir(&["llama-cpp"]).path()),
        &[
            "embed",
            "--model",
            gguf.to_str().unwrap(),
            "--json",
            embed_texts[0],
            embed_texts[1],
        ],
        None,
    ));
    let spec = json!({
        "embeddings": {"texts": embed_texts, "vectors": embedded["embeddings"]},
        "url": served.url,
        "api_key": key,
        "model": "stories260K.gguf",
        "other_engine_model": "stories260K.gguf@candle",
        "chat": {
            "messages": [{"role": "user", "content": "Once upon a time"}],
            "max_tokens": 40,
            "text": chat["text"],
            "prompt_tokens": chat["prompt_ids"].as_array().unwrap().len(),
            "completion_tokens": chat_ids.len(),
            "finish_reason": finish_reason(&chat["stop_reason"]),
        },
        "completion_ids": {"prompt": reference.prompt_ids, "max_tokens": 30, "text": completion["text"]},
        "raw": {"prompt": "Once upon a time", "max_tokens": 24, "text": raw["text"]},
        "pull": {"reference": "hf.co/ggml-org/tiny-llamas/stories260K.gguf", "id": "stories260K"},
        "concurrency": {"clients": 32, "prompts": prompts, "texts": texts, "max_tokens": 32},
    });
    let spec_file = home.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = std::process::Command::new(&python)
        .arg(workspace_dir().join("tests/serve/clients.py"))
        .arg(&spec_file)
        .output()
        .expect("run the Python clients");
    assert!(
        out.status.success(),
        "the client checks failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        served.log()
    );
    // The server counted the traffic.
    let (status, text) = get(&format!("{}/metrics", served.url), Some(key));
    assert_eq!(status, 200);
    assert!(
        text.contains("runanywhere_requests_total{route=\"/v1/chat/completions\",status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("runanywhere_time_to_first_token_seconds_count"),
        "{text}"
    );
}

#[test]
fn errors_have_each_apis_shape_and_status_and_the_server_survives_them() {
    let plugins = plugin_dir(&["mock", "faulty-generate-panic"]);
    let served = Served::start(
        plugins.path(),
        &["--max-body", "4K", "--model", "mock@mock"],
        &[],
    );
    let url = &served.url;
    let chat = format!("{url}/v1/chat/completions");

    let (status, body, _) = post(&chat, "{not json");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let (status, body, _) = post(&format!("{url}/api/chat"), "[1, 2");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");

    let (status, body, _) = post(
        &chat,
        r#"{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}"#,
    );
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (404, Some("model")),
        "{body}"
    );
    // A file path from the network is refused, even one that exists.
    let (status, body, _) = post(
        &chat,
        &json!({"model": gguf(), "messages": [{"role": "user", "content": "hi"}]}).to_string(),
    );
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("file paths"),
        "{body}"
    );

    let big =
        json!({"model": "mock@mock", "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let (status, body, _) = post(&chat, &big.to_string());
    assert_eq!(status, 413, "{body}");

    let (status, body, _) = post(&format!("{url}/v1/nothing"), "{}");
    assert_eq!(status, 404, "{body}");

    // An engine that panics mid-generation: 500 with the engine's message; the next
    // request is served.
    let panic = json!({"model": "faulty@faulty-generate-panic", "prompt": "x", "max_tokens": 5});
    let (status, body, _) = post(&format!("{url}/v1/completions"), &panic.to_string());
    // `faulty` is not in the store or the catalog: refused before any engine runs.
    assert_eq!(status, 404, "{body}");
    let ok = json!({"model": "mock@mock", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0});
    let (status, body, _) = post(&format!("{url}/v1/completions"), &ok.to_string());
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 5, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length", "{body}");
}

#[test]
fn an_engine_failure_is_a_500_with_its_message_and_the_next_request_is_served() {
    let plugins = plugin_dir(&["mock", "faulty-generate-panic"]);
    // A faulty "model": any path the faulty engine is asked to load (it reads format
    // `faulty`, chosen with @ENGINE).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.faulty");
    std::fs::write(&file, b"faulty").unwrap();
    let faulty = format!("{}@faulty-generate-panic", file.display());
    let served = Served::start(
        plugins.path(),
        &[
            "--alias",
            &format!("broken={faulty}"),
            "--alias",
            "good=mock@mock",
        ],
        &[],
    );
    let url = &served.url;
    let broken = json!({"model": "broken", "prompt": "x", "max_tokens": 5});
    let (status, body, _) = post(&format!("{url}/v1/completions"), &broken.to_string());
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deliberate panic in generate"),
        "{body}"
    );
    let (status, body, _) = post(
        &format!("{url}/api/generate"),
        &json!({"model": "broken", "prompt": "x", "stream": false}).to_string(),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("deliberate panic"),
        "{body}"
    );
    let good = json!({"model": "good", "prompt": "Once upon a time", "max_tokens": 3});
    let (status, body, _) = post(&format!("{url}/v1/completions"), &good.to_string());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn the_api_key_guards_every_route_but_health() {
    let plugins = plugin_dir(&["mock"]);
    let served = Served::start(plugins.path(), &["--api-key", "k1"], &[]);
    let url = &served.url;
    assert_eq!(get(&format!("{url}/health"), None).0, 200);
    let (status, body) = get(&format!("{url}/v1/models"), None);
    assert_eq!(status, 401, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    let (status, body) = get(&format!("{url}/api/tags"), Some("wrong"));
    assert_eq!(status, 401, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    assert_eq!(get(&format!("{url}/v1/models"), Some("k1")).0, 200);
    assert_eq!(get(&format!("{url}/metrics"), Some("k1")).0, 200);
    let (status, engines) = get(&format!("{url}/v1/engines"), Some("k1"));
    assert_eq!(status, 200);
    let engines: Value = serde_json::from_str(&engines).unwrap();
    assert_eq!(engines[0]["id"], "mock", "{engines}");
}

/// Reads SSE `data:` payloads from a streaming response until `[DONE]` or the end.
fn sse_events(reader: impl Read, mut each: impl FnMut(&Value) -> bool) -> (Vec<Value>, bool) {
    let mut events = Vec::new();
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            return (events, true);
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let go_on = each(&v);
        events.push(v);
        if !go_on {
            break;
        }
    }
    (events, false)
}

fn stream_request(url: &str, max_tokens: u32) -> ureq::http::Response<ureq::Body> {
    agent()
        .post(format!("{url}/v1/completions"))
        .header("Content-Type", "application/json")
        .send(
            json!({"model": "slow", "prompt": "Once upon a time", "max_tokens": max_tokens, "stream": true, "temperature": 0,
                   "stream_options": {"include_usage": true}})
                .to_string(),
        )
        .expect("stream request")
}

fn metric(url: &str, name: &str) -> f64 {
    let (_, text) = get(&format!("{url}/metrics"), None);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_is_503_with_retry_after_and_a_disconnect_frees_the_slot() {
    let plugins = plugin_dir(&["mock", "mock-slow"]);
    let served = Served::start(
        plugins.path(),
        &["--max-queue", "0", "--alias", "slow=mock@mock-slow"],
        &[],
    );
    let url = served.url.clone();
    // A 200-token stream at 25 ms a token holds the model for 5 s.
    let response = stream_request(&url, 200);
    let mut first = None;
    let mut body = response.into_body().into_reader();
    let (events, _) = sse_events(&mut body, |v| {
        first = Some(v.clone());
        false
    });
    assert_eq!(events.len(), 1, "{first:?}");
    let (status, err, headers) = post(
        &format!("{url}/v1/completions"),
        &json!({"model": "slow", "prompt": "x", "max_tokens": 2}).to_string(),
    );
    assert_eq!(status, 503, "{err}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_eq!(err["error"]["code"], "overloaded", "{err}");
    // The client leaves: its generation stops within a token and the slot is free.
    let left = Instant::now();
    drop(body);
    wait_for("the slot to be freed", Duration::from_secs(3), || {
        metric(&url, "runanywhere_generations_in_flight") == 0.0
    });
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "{:?}",
        left.elapsed()
    );
    let (status, body, _) = post(
        &format!("{url}/v1/completions"),
        &json!({"model": "slow", "prompt": "x", "max_tokens": 2}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_generation_past_the_request_timeout_is_a_504() {
    let plugins = plugin_dir(&["mock", "mock-slow"]);
    let served = Served::start(
        plugins.path(),
        &[
            "--request-timeout",
            "300ms",
            "--alias",
            "slow=mock@mock-slow",
        ],
        &[],
    );
    let started = Instant::now();
    let (status, body, _) = post(
        &format!("{}/v1/completions", served.url),
        &json!({"model": "slow", "prompt": "x", "max_tokens": 400}).to_string(),
    );
    assert_eq!(status, 504, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(body["error"]["code"], "timeout", "{body}");
}

#[test]
fn keep_alive_expiry_unloads_the_model_as_ps_shows() {
    let plugins = plugin_dir(&["mock"]);
    let served = Served::start(
        plugins.path(),
        &["--keep-alive", "1s", "--alias", "m=mock@mock"],
        &[],
    );
    let url = &served.url;
    let ps = || -> Vec<Value> {
        let (_, body) = get(&format!("{url}/api/ps"), None);
        serde_json::from_str::<Value>(&body).unwrap()["models"]
            .as_array()
            .unwrap()
            .clone()
    };
    assert!(ps().is_empty());
    let (status, body, _) = post(
        &format!("{url}/api/generate"),
        &json!({"model": "m", "prompt": "Once", "stream": false, "options": {"num_predict": 3}})
            .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["done"].as_bool(), body["eval_count"].as_u64()),
        (Some(true), Some(3)),
        "{body}"
    );
    let loaded = ps();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0]["name"], "m");
    wait_for("keep-alive to expire", Duration::from_secs(5), || {
        ps().is_empty()
    });
    // A request's own keep_alive: 0 unloads as soon as the request is done.
    let (_, body, _) = post(
        &format!("{url}/api/generate"),
        &json!({"model": "m", "prompt": "Once", "stream": false, "keep_alive": "1h", "options": {"num_predict": 2}}).to_string(),
    );
    assert_eq!(body["done"], true);
    assert_eq!(ps()[0]["name"], "m");
    let (_, body, _) = post(
        &format!("{url}/api/generate"),
        &json!({"model": "m", "keep_alive": 0}).to_string(),
    );
    assert_eq!(body["done_reason"], "unload", "{body}");
    assert!(ps().is_empty());
}

#[test]
fn shutdown_lets_a_stream_in_flight_finish_then_exits_cleanly() {
    let plugins = plugin_dir(&["mock", "mock-slow"]);
    let mut served = Served::start(plugins.path(), &["--alias", "slow=mock@mock-slow"], &[]);
    let url = served.url.clone();
    // 40 tokens at 25 ms: about a second.
    let response = stream_request(&url, 40);
    let reader = std::thread::spawn(move || {
        let (events, done) = sse_events(response.into_body().into_reader(), |_| true);
        (events, done)
    });
    wait_for("the stream to start", Duration::from_secs(5), || {
        metric(&url, "runanywhere_generations_in_flight") == 1.0
    });
    let status = served.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}: {}", served.log());
    let (events, done) = reader.join().unwrap();
    assert!(done, "the stream ended with [DONE]");
    let usage = &events[events.len() - 1]["usage"];
    assert_eq!(
        usage["completion_tokens"], 40,
        "every token was generated before the exit"
    );
    assert_eq!(
        events[events.len() - 2]["choices"][0]["finish_reason"],
        "length"
    );
    // Nothing listens any more.
    assert_eq!(get(&format!("{url}/health"), None).0, 0);
}

#[test]
fn shutdown_cancels_what_outlasts_the_drain_time() {
    let plugins = plugin_dir(&["mock", "mock-slow"]);
    let mut served = Served::start(
        plugins.path(),
        &["--drain-timeout", "200ms", "--alias", "slow=mock@mock-slow"],
        &[],
    );
    let url = served.url.clone();
    // 400 tokens would take 10 s.
    let response = stream_request(&url, 400);
    let reader = std::thread::spawn(move || {
        let (events, done) = sse_events(response.into_body().into_reader(), |_| true);
        (events, done)
    });
    wait_for("the stream to start", Duration::from_secs(5), || {
        metric(&url, "runanywhere_generations_in_flight") == 1.0
    });
    let started = Instant::now();
    let status = served.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {}", served.log());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (events, _) = reader.join().unwrap();
    assert!(
        events.len() < 100,
        "cancelled early: {} events",
        events.len()
    );
}

#[test]
fn cors_is_off_unless_an_origin_is_allowed() {
    let plugins = plugin_dir(&["mock"]);
    let preflight = |url: &str, origin: &str| {
        let response = agent()
            .options(format!("{url}/v1/models"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .call()
            .expect("preflight");
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let closed = Served::start(plugins.path(), &[], &[]);
    assert_eq!(preflight(&closed.url, "http://localhost:3000"), None);
    let open = Served::start(
        plugins.path(),
        &["--cors-origin", "http://localhost:3000"],
        &[],
    );
    assert_eq!(
        preflight(&open.url, "http://localhost:3000").as_deref(),
        Some("http://localhost:3000")
    );
    assert_eq!(preflight(&open.url, "http://evil.example"), None);
}
