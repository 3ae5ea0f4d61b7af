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
    /// Measured runs (the warm-up excluded).
    pub runs: u32,
    /// Load time in milliseconds.
    pub load_ms: f64,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens in the last run.
    pub generated_tokens: u32,
    /// Prefill speed, tokens per second.
    pub prefill_tok_s: f64,
    /// Decode speed, tokens per second.
    pub decode_tok_s: f64,
    /// Time to the first token, milliseconds.
    pub ttft_ms: f64,
    /// Tokens delivered to the host's sink per second of wall time, whole generate call.
    pub sink_tok_s: f64,
}

/// Benchmarks `model`: a warm-up, then `runs` (at least 1) greedy generations of up to
/// `max_tokens` tokens from `prompt`.
pub fn bench(
    model: &LoadedModel,
    prompt: &str,
    max_tokens: u32,
    runs: u32,
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
        let stats = model.generate(request, &Turn::default(), |_, _| {
            delivered += 1;
            SinkControl::Continue
        })?;
        let wall = t.elapsed().as_secs_f64();
        if i == 0 {
            continue; // warm-up
        }
        samples.push((
            RunMetrics::new(model.load_ms(), &stats),
            delivered as f64 / wall,
        ));
    }
    let median = |f: &dyn Fn(&(RunMetrics, f64)) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let last = &samples[samples.len() - 1].0;
    Ok(BenchResult {
        engine: model.model().engine_id().to_string(),
        runs: samples.len() as u32,
        load_ms: model.load_ms(),
        prompt_tokens: last.prompt_tokens,
        generated_tokens: last.generated_tokens,
        prefill_tok_s: median(&|s| s.0.prefill_tok_s),
        decode_tok_s: median(&|s| s.0.decode_tok_s),
        ttft_ms: median(&|s| s.0.ttft_ms),
        sink_tok_s: median(&|s| s.1),
    })
}
