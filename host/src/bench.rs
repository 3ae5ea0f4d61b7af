//! The benchmark loop behind `runanywhere bench` (and a server's or web app's benchmark
//! page): one warm-up generation, then `runs` measured ones, greedy, reporting medians.

use std::time::Instant;

use runanywhere_plugin_api::{Prompt, SinkControl};
use serde::Serialize;

use crate::error::Error;
use crate::manager::{LoadedModel, Turn};
use crate::metrics::RunMetrics;
use crate::options::GenerateOptions;

/// One engine's figures: medians over the measured runs.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The engine id.
    pub engine: String,
    /// The model's file or folder name (several models can be compared in one run).
    pub model: String,
    /// Where the engine ran.
    pub isolation: crate::worker::Isolation,
    /// Measured runs (the warm-up excluded).
    pub runs: u32,
    /// Load time in milliseconds.
    pub load_ms: f64,
    /// How long the engine took to start (a worker: the process too), milliseconds,
    /// where the caller filled it in ([`crate::Engine::start_ms`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_start_ms: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens in the last run.
    pub generated_tokens: u32,
    /// Prefill speed, tokens per second.
    pub prefill_tok_s: f64,
    /// Decode speed, tokens per second, as the engine measured it.
    pub decode_tok_s: f64,
    /// Decode speed as the caller sees it: tokens after the first, per second from when
    /// the engine made the first to when the last arrived (what a worker's boundary can
    /// slow, its batching included).
    pub seen_decode_tok_s: f64,
    /// Time to the first token, milliseconds.
    pub ttft_ms: f64,
    /// Tokens delivered to the host's sink per second of wall time, whole generate call.
    pub sink_tok_s: f64,
    /// Peak resident memory while this model was loaded and benchmarked, bytes: the
    /// worker process's own for a model in a worker, else this process's since the load
    /// (see [`run_all`]; `None` where the platform does not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
}

/// Benchmarks `model`: a warm-up, then `runs` (at least 1) greedy generations of up to
/// `max_tokens` tokens from `prompt`. `turn` carries a cancel token (a server's client
/// that left): a cancelled benchmark stops within a token and is an error, not figures.
pub fn bench(
    model: &LoadedModel,
    prompt: &str,
    max_tokens: u32,
    runs: u32,
    turn: &Turn,
) -> Result<BenchResult, Error> {
    let options = GenerateOptions {
        max_tokens,
        ..GenerateOptions::greedy()
    };
    let mut samples = Vec::new();
    for i in 0..=runs.max(1) {
        let request = options.request(Prompt::Text(prompt.into()), 0);
        let mut delivered = 0u64;
        let t = Instant::now();
        let (mut first, mut last) = (None, t);
        let stats = model.generate(request, turn, |_, _| {
            delivered += 1;
            last = Instant::now();
            first.get_or_insert(last);
            SinkControl::Continue
        })?;
        let wall = t.elapsed().as_secs_f64();
        // From when the engine made its first token (its own clock, started with the
        // call) to when the last one reached us: a worker's batching and transport count.
        let span = last.duration_since(t).as_secs_f64() - stats.first_token_us as f64 / 1e6;
        let seen = if first.is_some() && span > 0.0 {
            delivered.saturating_sub(1) as f64 / span
        } else {
            0.0
        };
        if turn.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Cancelled);
        }
        if i == 0 {
            continue; // warm-up
        }
        samples.push((
            RunMetrics::new(model.load_ms(), &stats),
            delivered as f64 / wall,
            seen,
        ));
    }
    let median = |f: &dyn Fn(&(RunMetrics, f64, f64)) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let last = &samples[samples.len() - 1].0;
    let name = model
        .key()
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    Ok(BenchResult {
        engine: model.model().engine_id().to_string(),
        model: name.unwrap_or_default(),
        isolation: if model.model().worker_pid().is_some() {
            crate::worker::Isolation::Process
        } else {
            crate::worker::Isolation::InProcess
        },
        runs: samples.len() as u32,
        load_ms: model.load_ms(),
        engine_start_ms: None,
        prompt_tokens: last.prompt_tokens,
        generated_tokens: last.generated_tokens,
        prefill_tok_s: median(&|s| s.0.prefill_tok_s),
        decode_tok_s: median(&|s| s.0.decode_tok_s),
        seen_decode_tok_s: median(&|s| s.2),
        ttft_ms: median(&|s| s.0.ttft_ms),
        sink_tok_s: median(&|s| s.1),
        peak_rss_bytes: match model.model().worker_pid() {
            Some(pid) => crate::metrics::peak_rss_bytes_of(pid),
            None => crate::metrics::peak_rss_bytes(),
        },
    })
}

/// Benchmarks each (model, engine) pair in turn, for comparing engines on the files each
/// reads (a GGUF on llama.cpp beside the same weights as a `.pte` on ExecuTorch). Each
/// model is unloaded before the next loads, and this process's peak-RSS mark is reset
/// before each load where the platform allows, so each row's peak is its own.
pub fn run_all(
    runtime: &crate::Runtime,
    jobs: &[(crate::ResolvedModel, String)],
    options: &crate::LoadOptions,
    prompt: &str,
    max_tokens: u32,
    runs: u32,
    turn: &Turn,
) -> Result<Vec<BenchResult>, Error> {
    let mut results = Vec::new();
    for (model, engine) in jobs {
        let options = crate::LoadOptions {
            engine: Some(engine.clone()),
            ..options.clone()
        };
        crate::metrics::reset_peak_rss();
        let loaded = runtime.load_resolved(model, &options)?;
        let result = bench(&loaded, prompt, max_tokens, runs, turn);
        let key = loaded.key().clone();
        drop(loaded);
        // Unloaded on failure too: a failed row must not keep its model resident.
        runtime.models().unload(&key);
        results.push(result?);
    }
    Ok(results)
}

/// Time to first token of one turn of a growing conversation, with and without the
/// engine's prompt cache.
#[derive(Debug, Clone, Serialize)]
pub struct TurnTiming {
    /// The turn, from 1.
    pub turn: u32,
    /// Prompt tokens of the turn (the whole conversation so far).
    pub prompt_tokens: usize,
    /// TTFT with the cache emptied first (milliseconds).
    pub cold_ttft_ms: f64,
    /// TTFT continuing from the previous turn (milliseconds): what a chat sees.
    pub warm_ttft_ms: f64,
}

/// A conversation of `turns` user messages (`message` each, the replies up to
/// `max_tokens`, greedy) through a [`ChatSession`](crate::ChatSession): each turn's time
/// to first token as the chat sees it (the previous turn in the engine's cache), and on
/// the same model with its cache emptied first. Engines without a prompt cache give the
/// same figure twice.
pub fn chat_turns(
    model: &LoadedModel,
    message: &str,
    turns: u32,
    max_tokens: u32,
) -> Result<Vec<TurnTiming>, Error> {
    let options = GenerateOptions {
        max_tokens,
        ..GenerateOptions::greedy()
    };
    let m = model.model();
    let mut session = crate::ChatSession::new(m, None, None)?;
    let turn = Turn::default();
    let run = |request: crate::GenerateRequest| -> Result<(String, Vec<u32>, crate::GenerationStats), Error> {
        let (mut text, mut ids) = (String::new(), Vec::new());
        let stats = model.generate(request, &turn, |id, piece| {
            text.push_str(piece);
            ids.push(id);
            SinkControl::Continue
        })?;
        Ok((text, ids, stats))
    };
    let mut out = Vec::new();
    for t in 1..=turns {
        let prepared = session.prepare(m, message, &options, 0)?;
        let request = prepared.request;
        // As the chat sees it: the cache holds the conversation up to the last reply.
        let (reply, ids, warm) = run(request.clone())?;
        // Cold: first a one-token prompt that shares nothing with the conversation.
        let first = warm.prompt_ids.first().copied().unwrap_or(0);
        let other = if first == 0 { 1 } else { first - 1 };
        let mut flush = options.request(Prompt::Ids(vec![other].into()), 0);
        flush.max_tokens = 1;
        run(flush)?;
        let mut once = request.clone();
        once.max_tokens = 1;
        let (_, _, cold) = run(once)?;
        // Back to the chat's state for the next turn (greedy: the same reply).
        run(request)?;
        session.commit(&reply, &warm, &ids);
        out.push(TurnTiming {
            turn: t,
            prompt_tokens: warm.prompt_ids.len(),
            cold_ttft_ms: cold.first_token_us as f64 / 1000.0,
            warm_ttft_ms: warm.first_token_us as f64 / 1000.0,
        });
    }
    Ok(out)
}

/// `n` generations at once on one model.
#[derive(Debug, Clone, Serialize)]
pub struct ParallelResult {
    /// The engine id.
    pub engine: String,
    /// Generations run together.
    pub streams: usize,
    /// Tokens generated in all, per second of wall time.
    pub aggregate_tok_s: f64,
    /// The mean of each generation's own decode speed.
    pub per_stream_tok_s: f64,
    /// Wall time of the whole round, milliseconds.
    pub wall_ms: f64,
}

/// Runs `streams` greedy generations of `max_tokens` at once (prompts taken in turn
/// from `prompts`), after one warm-up round.
pub fn parallel(
    model: &LoadedModel,
    prompts: &[String],
    streams: usize,
    max_tokens: u32,
) -> Result<ParallelResult, Error> {
    let options = GenerateOptions {
        max_tokens,
        ..GenerateOptions::greedy()
    };
    let round = || -> Result<(f64, f64, f64), Error> {
        let barrier = std::sync::Barrier::new(streams);
        let start = Instant::now();
        let results: Vec<Result<crate::GenerationStats, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..streams)
                .map(|i| {
                    let (barrier, options) = (&barrier, &options);
                    let prompt = prompts[i % prompts.len().max(1)].clone();
                    s.spawn(move || {
                        barrier.wait();
                        let request = options.request(Prompt::Text(prompt.into()), 0);
                        model.generate(request, &Turn::default(), |_, _| SinkControl::Continue)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidRequest("a bench thread panicked".into()))
                    })
                })
                .collect()
        });
        let wall = start.elapsed().as_secs_f64();
        let mut tokens = 0f64;
        let mut speeds = 0f64;
        for r in results {
            let stats = r?;
            tokens += f64::from(stats.generated_tokens);
            speeds += RunMetrics::new(0.0, &stats).decode_tok_s;
        }
        Ok((tokens / wall, speeds / streams as f64, wall * 1000.0))
    };
    round()?;
    let (aggregate_tok_s, per_stream_tok_s, wall_ms) = round()?;
    Ok(ParallelResult {
        engine: model.model().engine_id().to_string(),
        streams,
        aggregate_tok_s,
        per_stream_tok_s,
        wall_ms,
    })
}

/// Benchmarks each of `engines` twice, in-process and then in a worker process (each
/// through a runtime like `runtime` with that isolation forced), returning the results
/// in that order, engine by engine. Each model is unloaded before the next runs: an
/// idle engine's threads (llama.cpp's pool polls for a while) must not share the cores.
#[allow(clippy::too_many_arguments)]
pub fn compare_isolation(
    runtime: &crate::Runtime,
    model: &crate::ResolvedModel,
    engines: &[String],
    options: &crate::LoadOptions,
    prompt: &str,
    max_tokens: u32,
    runs: u32,
    turn: &Turn,
) -> Result<Vec<BenchResult>, Error> {
    use crate::worker::Isolation;
    let runtimes = [Isolation::InProcess, Isolation::Process].map(|isolation| {
        let mut config = runtime.config().clone();
        config.workers.force = Some(isolation);
        crate::Runtime::new(config)
    });
    let mut results = Vec::new();
    for id in engines {
        for runtime in &runtimes {
            let options = crate::LoadOptions {
                engine: Some(id.clone()),
                ..options.clone()
            };
            let loaded = runtime.load_resolved(model, &options)?;
            let mut result = bench(&loaded, prompt, max_tokens, runs, turn)?;
            result.engine_start_ms = runtime.engines().engine(id).map(|e| e.start_ms());
            results.push(result);
            let key = loaded.key().clone();
            drop(loaded);
            runtime.models().unload(&key);
        }
    }
    Ok(results)
}
