//! `runanywhere bench`: load time, prefill and decode speed per engine, and the host's
//! own throughput through the ABI (tokens per second delivered to the sink).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use runanywhere::metrics::RunMetrics;
use runanywhere::registry::Registry;
use runanywhere::{Prompt, SamplingParams, SinkControl};
use serde::Serialize;

use super::args::{BenchArgs, ModelArgs};

#[derive(Debug, Serialize)]
struct EngineBench {
    engine: String,
    runs: u32,
    load_ms: f64,
    prompt_tokens: usize,
    generated_tokens: u32,
    /// Medians over the measured runs.
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: f64,
    /// Tokens delivered to the host's sink per second of wall time, whole generate call.
    sink_tok_s: f64,
}

pub(crate) fn run(registry: &Registry, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let path = super::resolve_model(registry, &args.model)?.path;
    let engines: Vec<String> = if args.engines.is_empty() {
        vec![registry.select(&path, None)?.id().to_string()]
    } else {
        args.engines.clone()
    };
    let mut results = Vec::new();
    for id in &engines {
        let model_args = ModelArgs {
            model: args.model.clone(),
            engine: Some(id.clone()),
            force: args.force,
            tokenizer: args.tokenizer.clone(),
            ctx_size: args.ctx_size,
            threads: args.threads,
            batch_size: 0,
            gpu_layers: 0,
        };
        let (model, load_ms) = super::load_model(registry, &model_args, false, 0)?;
        let mut samples = Vec::new();
        for i in 0..=args.runs.max(1) {
            let mut request =
                runanywhere::GenerateRequest::new(Prompt::Text(args.prompt.as_str().into()));
            request.max_tokens = args.max_tokens;
            request.sampling = SamplingParams::greedy();
            let mut delivered = 0u64;
            let t = Instant::now();
            let stats = model.generate(request, |_, _| {
                delivered += 1;
                SinkControl::Continue
            })?;
            let wall = t.elapsed().as_secs_f64();
            if i == 0 {
                continue; // warm-up
            }
            samples.push((RunMetrics::new(load_ms, &stats), delivered as f64 / wall));
        }
        let median = |f: &dyn Fn(&(RunMetrics, f64)) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let last = &samples[samples.len() - 1].0;
        results.push(EngineBench {
            engine: id.clone(),
            runs: samples.len() as u32,
            load_ms,
            prompt_tokens: last.prompt_tokens,
            generated_tokens: last.generated_tokens,
            prefill_tok_s: median(&|s| s.0.prefill_tok_s),
            decode_tok_s: median(&|s| s.0.decode_tok_s),
            ttft_ms: median(&|s| s.0.ttft_ms),
            sink_tok_s: median(&|s| s.1),
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<12} {:>9} {:>7} {:>7} {:>12} {:>12} {:>9} {:>12}",
        "ENGINE", "LOAD ms", "PROMPT", "GEN", "PREFILL t/s", "DECODE t/s", "TTFT ms", "SINK t/s"
    )?;
    for r in &results {
        writeln!(
            out,
            "{:<12} {:>9.1} {:>7} {:>7} {:>12.1} {:>12.1} {:>9.2} {:>12.1}",
            r.engine,
            r.load_ms,
            r.prompt_tokens,
            r.generated_tokens,
            r.prefill_tok_s,
            r.decode_tok_s,
            r.ttft_ms,
            r.sink_tok_s
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
