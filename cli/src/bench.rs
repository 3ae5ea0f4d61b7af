//! `runanywhere bench`: load time, prefill and decode speed per engine, and the host's
//! own throughput through the ABI (tokens per second delivered to the sink).

use std::io::Write;
use std::process::ExitCode;

use runanywhere::bench::bench;
use runanywhere::{LoadOptions, Runtime};

use super::args::BenchArgs;

pub(crate) fn run(runtime: &Runtime, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let resolved = super::resolve_model(runtime, &args.model)?;
    let engines: Vec<String> = if args.engines.is_empty() {
        vec![runtime
            .engines()
            .select(&resolved.path, None)?
            .id()
            .to_string()]
    } else {
        args.engines.clone()
    };
    let mut results = Vec::new();
    for id in &engines {
        let options = LoadOptions {
            engine: Some(id.clone()),
            tokenizer: args.tokenizer.clone(),
            context_length: args.ctx_size,
            threads: args.threads,
            force: args.force,
            ..LoadOptions::default()
        };
        let model = runtime.load_resolved(&resolved, &options)?;
        results.push(bench(&model, &args.prompt, args.max_tokens, args.runs)?);
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
