//! The web app (`runanywhere serve` at `/`) in a real browser: Debian's Chromium driven
//! by Selenium (tests/serve/webapp.py, from .venv-clients/), against the real binary
//! with real models and the loopback Hub. The greedy reply it must stream is what
//! `runanywhere run` gives for the same chat. Screenshots of every tab, at desktop and
//! phone width, land in `target/webapp-screenshots/`.

use std::path::Path;

use runanywhere_tests::hub::HubServer;
use runanywhere_tests::{json_ids, plugin_dir, workspace_dir};
use serde_json::json;

use super::serve::{finish_reason, get, gguf, run_json, Served};

/// The reply of the `mock-html` fixture engine (tests/fixtures/manifests/mock-html.toml).
const HTML_REPLY: &str = "<img src=x onerror=\"document.body.dataset.pwned='img'\"><script>document.body.dataset.pwned='script'</script> **bold** and `<b>code</b>`";

#[test]
fn the_web_app_chats_stops_pulls_benchmarks_and_shows_markup_as_text() {
    let python = workspace_dir().join(".venv-clients/bin/python");
    for needed in [
        python.as_path(),
        Path::new("/usr/bin/chromium"),
        Path::new("/usr/bin/chromedriver"),
    ] {
        assert!(
            needed.is_file(),
            "{} is missing: run scripts/setup.sh (scripts/test.sh does)",
            needed.display()
        );
    }
    let manifest =
        std::fs::read_to_string(workspace_dir().join("tests/fixtures/manifests/mock-html.toml"))
            .unwrap();
    assert!(
        manifest.contains(&HTML_REPLY.replace('"', "\\\"")),
        "HTML_REPLY is the fixture's reply"
    );
    let plugins = plugin_dir(&["llama-cpp", "candle", "mock", "mock-slow", "mock-html"]);
    let hub = HubServer::start();
    hub.add_lfs_file(
        "ggml-org/tiny-llamas",
        "stories260K.gguf",
        std::fs::read(gguf()).unwrap(),
    );
    // Slow enough for the bar to show intermediate values.
    hub.slow_down(std::time::Duration::from_millis(100));
    let home = tempfile::tempdir().unwrap();
    let endpoint = hub.endpoint();
    let model = gguf();
    let served = Served::start(
        plugins.path(),
        &[
            "--model",
            model.to_str().unwrap(),
            "--alias",
            "slow=mock@mock-slow",
            "--alias",
            "html=mock@mock-html",
        ],
        &[
            ("HF_ENDPOINT", &endpoint),
            ("RUNANYWHERE_HOME", home.path().to_str().unwrap()),
        ],
    );
    let (status, page) = get(&format!("{}/", served.url), None);
    assert_eq!(status, 200);
    assert!(page.contains("<script type=\"module\" src=\"/ui/app.js\">"));

    // The chat as the fallback template renders it (stories260K has no template).
    let chat = run_json(
        &["User: Once upon a time\nAssistant:"],
        40,
        &["--stop", "\nUser:"],
    );
    let screenshots = workspace_dir().join("target/webapp-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let spec = json!({
        "url": served.url,
        "model": "stories260K.gguf",
        "slow_model": "slow",
        "html_model": "html",
        "html_reply": HTML_REPLY,
        "chat": {
            "max_tokens": 40,
            "text": chat["text"],
            "completion_tokens": json_ids(&chat["generated_ids"]).len(),
            "finish_reason": finish_reason(&chat["stop_reason"]),
        },
        "pull": {"reference": "hf.co/ggml-org/tiny-llamas/stories260K.gguf", "id": "stories260K"},
        "engines": ["llama-cpp", "candle", "mock", "mock-slow", "mock-html"],
        "bench_engines": ["llama-cpp", "candle"],
        "screenshots": screenshots,
    });
    let spec_file = home.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();
    let out = std::process::Command::new(&python)
        .arg(workspace_dir().join("tests/serve/webapp.py"))
        .arg(&spec_file)
        .output()
        .expect("run the browser test");
    assert!(
        out.status.success(),
        "the browser checks failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        served.log()
    );
    // What was checked, for the test log.
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    // The cancelled pull's partial file was kept: the second pull resumed it.
    let resumed = hub.requests().into_iter().any(|r| {
        r.method == "GET"
            && r.path.starts_with("/cdn/")
            && r.range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.trim_end_matches('-').parse::<u64>().ok())
                .is_some_and(|from| from > 0)
    });
    assert!(resumed, "the second pull resumed: {:?}", hub.requests());
}

/// A JSON request with the API key; the status and the body (parsed when it is JSON).
fn call(method: &str, url: &str, key: &str, body: Option<serde_json::Value>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(60)))
        .build()
        .into();
    let auth = format!("Bearer {key}");
    let response = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("POST", Some(b)) => agent
            .post(url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        (m, b) => panic!("no helper for {m} {b:?}"),
    };
    let mut response = response.expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[test]
fn the_page_needs_no_key_the_api_does_and_the_management_routes_answer_clearly() {
    let plugins = plugin_dir(&["mock", "mock-slow"]);
    let key = "k1";
    let served = Served::start(
        plugins.path(),
        &[
            "--api-key",
            key,
            "--alias",
            "m=mock@mock",
            "--alias",
            "slow=mock@mock-slow",
        ],
        &[],
    );
    let url = &served.url;

    // The page and its modules come without a key, under a strict CSP; the API does not.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    for (path, kind) in [("/", "text/html"), ("/ui/app.js", "text/javascript")] {
        let response = agent.get(&format!("{url}{path}")).call().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "{csp}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    assert_eq!(get(&format!("{url}/ui/nope.js"), None).0, 404);

    // A page elsewhere cannot drive the API through the user's browser: a foreign
    // `Origin` (a form POST needs no preflight) or a rebinding `Host` is a 403.
    let unload = format!("{url}/v1/unload");
    let port = url.rsplit(':').next().unwrap();
    for (origin, host, status) in [
        (Some("http://evil.example"), None, 403),
        (None, Some("evil.example".to_string()), 403),
        (Some(url.as_str()), None, 404),
        (None, Some(format!("localhost:{port}")), 404),
    ] {
        let mut request = agent
            .post(&unload)
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "text/plain");
        if let Some(o) = origin {
            request = request.header("Origin", o);
        }
        if let Some(h) = &host {
            request = request.header("Host", h);
        }
        let mut response = request.send(r#"{"model": "m"}"#).unwrap();
        let text = response.body_mut().read_to_string().unwrap();
        assert_eq!(response.status(), status, "{origin:?} {host:?}: {text}");
    }
    assert_eq!(get(&format!("{url}/v1/config"), None).0, 401);

    let (status, body) = call("GET", &format!("{url}/v1/config"), key, None);
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!((config["defaults"]["temperature"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(
        config["keep_alive"], 300.0,
        "Ollama's default, five minutes"
    );

    // Errors name the field.
    for (path, body, status, param) in [
        ("/v1/store/verify", json!({"model": "nope"}), 404, "model"),
        ("/v1/unload", json!({"model": "m"}), 404, "model"),
        ("/v1/bench", json!({"model": "m", "runs": 0}), 400, "runs"),
        (
            "/v1/bench",
            json!({"model": "m", "max_tokens": 100_000}),
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "num_ctx": 0}),
            400,
            "num_ctx",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "soon"}),
            400,
            "keep_alive",
        ),
    ] {
        let (got, text) = call("POST", &format!("{url}{path}"), key, Some(body));
        assert_eq!(got, status, "{path}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["param"], param, "{path}: {text}");
    }

    // The benchmark streams an event per engine, then done.
    let (status, text) = call(
        "POST",
        &format!("{url}/v1/bench"),
        key,
        Some(json!({"model": "m", "engines": ["mock"], "runs": 1, "max_tokens": 8})),
    );
    assert_eq!(status, 200, "{text}");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["loading", "result", "done"], "{text}");
    assert_eq!(events[1]["result"]["engine"], "mock");
    assert_eq!(events[1]["result"]["generated_tokens"], 8);
    // The benchmark's copy is loaded under the name it was asked for; unload it.
    let (status, text) = call(
        "POST",
        &format!("{url}/v1/unload"),
        key,
        Some(json!({"model": "m"})),
    );
    assert_eq!(
        (status, text.as_str()),
        (200, r#"{"model":"m","unloaded":1}"#)
    );

    // A benchmark whose client leaves stops within a token: the model is idle again
    // (unload answers 409 while it generates) long before its 21 runs of 200 tokens.
    {
        let response = agent
            .post(&format!("{url}/v1/bench"))
            .header("Authorization", &format!("Bearer {key}"))
            .header("Content-Type", "application/json")
            .send(json!({"model": "slow", "runs": 20, "max_tokens": 200}).to_string())
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(response.into_body().into_reader()));
        let first: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(first["status"], "loading", "{first}");
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (status, text) = call(
            "POST",
            &format!("{url}/v1/unload"),
            key,
            Some(json!({"model": "slow"})),
        );
        assert_eq!(status, 409, "busy while the benchmark runs: {text}");
    }
    let left = std::time::Instant::now();
    loop {
        let (status, text) = call(
            "POST",
            &format!("{url}/v1/unload"),
            key,
            Some(json!({"model": "slow"})),
        );
        if status == 200 {
            break;
        }
        assert!(
            left.elapsed() < std::time::Duration::from_secs(5),
            "the benchmark went on after its client left: {status} {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // keep_alive 0 over the OpenAI route unloads after the reply; timings come with it.
    let (status, text) = call(
        "POST",
        &format!("{url}/v1/chat/completions"),
        key,
        Some(
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 5, "keep_alive": 0, "num_ctx": 256}),
        ),
    );
    assert_eq!(status, 200, "{text}");
    let reply: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reply["timings"]["predicted_n"], 5, "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"], 5);
    let (_, ps) = call("GET", &format!("{url}/api/ps"), key, None);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps["models"], json!([]), "unloaded after the reply: {ps}");

    // Unload takes every loaded copy of the model, whatever its options.
    for ctx in [128, 256] {
        let (status, text) = call(
            "POST",
            &format!("{url}/v1/chat/completions"),
            key,
            Some(
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2, "num_ctx": ctx}),
            ),
        );
        assert_eq!(status, 200, "{text}");
    }
    let (_, ps) = call("GET", &format!("{url}/api/ps"), key, None);
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_eq!(ps["models"].as_array().unwrap().len(), 2, "{ps}");
    let (status, text) = call(
        "POST",
        &format!("{url}/v1/unload"),
        key,
        Some(json!({"model": "m"})),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["unloaded"],
        2
    );
    let (_, ps) = call("GET", &format!("{url}/api/ps"), key, None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ps).unwrap()["models"],
        json!([])
    );
}
