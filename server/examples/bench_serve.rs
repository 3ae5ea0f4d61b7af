//! The server's cost, measured: the same greedy generations made N at a time in-process
//! through the runtime, then through `runanywhere serve`'s OpenAI API on loopback
//! (streaming), in one run. Reports p50/p99 time to first token and aggregate tokens/s
//! for both, and their ratio; checks that both produce the same text.
//!
//! ```sh
//! cargo run --release -p runanywhere-server --example bench_serve -- \
//!     --model ../shared/data/tinystories/stories260K.gguf --streams 64 --max-tokens 64
//! ```
//! (`scripts/bench-serve.sh` runs this.)

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use runanywhere::{
    GenerateOptions, LoadOptions, Prompt, Runtime, RuntimeConfig, SinkControl, Turn,
};
use runanywhere_server::{Server, ServerConfig};

const PROMPTS: [&str; 4] = ["Once upon a time", "The cat", "Lily was", "One day, a"];

struct Args {
    model: String,
    plugins: PathBuf,
    streams: usize,
    max_tokens: u32,
    rounds: usize,
    threads: u32,
}

fn args() -> Args {
    let mut a = Args {
        model: "../shared/data/tinystories/stories260K.gguf".into(),
        plugins: PathBuf::from("target/release/plugins"),
        streams: 64,
        max_tokens: 64,
        rounds: 3,
        threads: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value,
            "--plugins-dir" => a.plugins = value.into(),
            "--streams" => a.streams = value.parse().unwrap(),
            "--max-tokens" => a.max_tokens = value.parse().unwrap(),
            "--rounds" => a.rounds = value.parse().unwrap(),
            "--threads" => a.threads = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One round's results: per-stream TTFT and texts, and the wall time.
struct Round {
    ttft: Vec<Duration>,
    tokens: usize,
    wall: Duration,
    texts: Vec<String>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// N threads released together, each running `one(i)` → (ttft, tokens, text).
fn round(
    n: usize,
    one: impl Fn(usize) -> (Duration, usize, String) + Send + Sync + 'static,
) -> Round {
    let one = Arc::new(one);
    let barrier = Arc::new(Barrier::new(n + 1));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (one, barrier) = (Arc::clone(&one), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                one(i)
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let wall = start.elapsed();
    let mut ttft: Vec<Duration> = results.iter().map(|r| r.0).collect();
    ttft.sort();
    Round {
        ttft,
        tokens: results.iter().map(|r| r.1).sum(),
        wall,
        texts: results.into_iter().map(|r| r.2).collect(),
    }
}

fn main() {
    let a = args();
    let runtime = Arc::new(Runtime::new(RuntimeConfig {
        plugin_dirs: vec![a.plugins.clone()],
        ..RuntimeConfig::default()
    }));
    let load = LoadOptions {
        threads: a.threads,
        ..LoadOptions::default()
    };
    let loaded = runtime
        .load(&a.model, &load, &mut runanywhere::store::NoProgress)
        .unwrap();
    let engine = loaded.model().engine_id().to_string();
    let options = GenerateOptions {
        max_tokens: a.max_tokens,
        ..GenerateOptions::greedy()
    };

    // The server, sharing the runtime (and so the loaded model), on a free port.
    let tokio = tokio::runtime::Runtime::new().unwrap();
    let server = tokio
        .block_on(Server::bind(
            Arc::clone(&runtime),
            ServerConfig {
                models: vec![a.model.clone()],
                load: load.clone(),
                max_queue: a.streams + 1,
                ..ServerConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let name = std::path::Path::new(&a.model)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio.spawn(server.run(async {
        let _ = stop_rx.await;
    }));

    let in_process = |_: usize| {
        let (loaded, options) = (loaded.clone(), options.clone());
        move |i: usize| {
            let request = options.request(Prompt::Text(PROMPTS[i % PROMPTS.len()].into()), 0);
            let start = Instant::now();
            let mut first = None;
            let mut text = String::new();
            let stats = loaded
                .generate(request, &Turn::default(), |_, piece| {
                    first.get_or_insert_with(|| start.elapsed());
                    text.push_str(piece);
                    SinkControl::Continue
                })
                .unwrap();
            (
                first.unwrap_or_default(),
                stats.generated_tokens as usize,
                text,
            )
        }
    };
    let over_http = |_: usize| {
        let (url, name, max_tokens) = (url.clone(), name.clone(), a.max_tokens);
        move |i: usize| {
            let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
            let body = serde_json::json!({
                "model": name, "prompt": PROMPTS[i % PROMPTS.len()], "max_tokens": max_tokens,
                "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
            });
            let start = Instant::now();
            let response = agent
                .post(format!("{url}/v1/completions"))
                .header("Content-Type", "application/json")
                .send(body.to_string())
                .unwrap();
            let (mut first, mut text, mut tokens) = (None, String::new(), 0);
            for line in BufReader::new(response.into_body().into_reader()).lines() {
                let line = line.unwrap();
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                if data == "[DONE]" {
                    break;
                }
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                    tokens = n as usize;
                }
                if let Some(piece) = v["choices"][0]["text"].as_str() {
                    if !piece.is_empty() {
                        first.get_or_insert_with(|| start.elapsed());
                        text.push_str(piece);
                    }
                }
            }
            (first.unwrap_or_default(), tokens, text)
        }
    };

    // Warm up both paths once.
    let _ = round(4, in_process(0));
    let _ = round(4, over_http(0));
    let mut rows = Vec::new();
    for r in 0..a.rounds {
        let local = round(a.streams, in_process(r));
        let http = round(a.streams, over_http(r));
        assert_eq!(
            local.texts, http.texts,
            "the server's text differs from in-process"
        );
        assert_eq!(local.tokens, http.tokens);
        rows.push((local, http));
    }
    println!(
        "{} streams × {} tokens, {} on {engine} ({} threads), {} rounds (same text both ways)",
        a.streams, a.max_tokens, a.model, a.threads, a.rounds
    );
    println!("| round | path | p50 TTFT ms | p99 TTFT ms | aggregate tok/s |");
    println!("|---|---|---|---|---|");
    let mut sums = [0.0f64; 4];
    for (r, (local, http)) in rows.iter().enumerate() {
        for (path, x) in [("in-process", local), ("server", http)] {
            println!(
                "| {r} | {path} | {:.2} | {:.2} | {:.0} |",
                percentile(&x.ttft, 0.5).as_secs_f64() * 1e3,
                percentile(&x.ttft, 0.99).as_secs_f64() * 1e3,
                x.tokens as f64 / x.wall.as_secs_f64()
            );
        }
        sums[0] += local.tokens as f64 / local.wall.as_secs_f64();
        sums[1] += http.tokens as f64 / http.wall.as_secs_f64();
        sums[2] += percentile(&local.ttft, 0.5).as_secs_f64() * 1e3;
        sums[3] += percentile(&http.ttft, 0.5).as_secs_f64() * 1e3;
    }
    let n = a.rounds as f64;
    println!(
        "mean: server/in-process aggregate throughput {:.3}× ; p50 TTFT {:.2} ms vs {:.2} ms (+{:.2} ms)",
        sums[1] / sums[0],
        sums[3] / n,
        sums[2] / n,
        (sums[3] - sums[2]) / n
    );
    let _ = stop_tx.send(());
    let _ = tokio.block_on(serving);
}
