//! `runanywhere bench`: load time, prefill and decode speed per engine, and the host's
//! own throughput through the ABI (tokens per second delivered to the sink).

use std::io::Write;
use std::process::ExitCode;

use runanywhere::bench::{
    chat_turns, compare_isolation, parallel, run_all, BenchResult, TurnTiming,
};
use runanywhere::{LoadOptions, Runtime, Turn};

use super::args::BenchArgs;

pub(crate) fn run(runtime: &Runtime, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let mut jobs = Vec::new();
    for name in &args.model {
        let resolved = super::resolve_model(runtime, name)?;
        let engines: Vec<String> = if args.engines.is_empty() {
            vec![runtime
                .engines()
                .select(&resolved.path, None)?
                .id()
                .to_string()]
        } else {
            args.engines.clone()
        };
        jobs.extend(engines.into_iter().map(|e| (resolved.clone(), e)));
    }
    let options = LoadOptions {
        tokenizer: args.tokenizer.clone(),
        context_length: args.ctx_size,
        threads: args.threads,
        force: args.force,
        parallel: args.parallel.unwrap_or(0),
        ..LoadOptions::default()
    };
    let mut results = Vec::new();
    let mut chats = Vec::new();
    if args.compare_isolation {
        for (resolved, engine) in &jobs {
            results.extend(compare_isolation(
                runtime,
                resolved,
                std::slice::from_ref(engine),
                &options,
                &args.prompt,
                args.max_tokens,
                args.runs,
                &Turn::default(),
            )?);
        }
    } else if args.parallel.is_none() && args.chat_turns.is_none() {
        results = run_all(
            runtime,
            &jobs,
            &options,
            &args.prompt,
            args.max_tokens,
            args.runs,
            &Turn::default(),
        )?;
    } else {
        for (resolved, id) in &jobs {
            let options = LoadOptions {
                engine: Some(id.clone()),
                ..options.clone()
            };
            let model = runtime.load_resolved(resolved, &options)?;
            if let Some(n) = args.parallel {
                let prompts: Vec<String> = (0..n).map(|i| format!("{} {i}", args.prompt)).collect();
                let r = parallel(&model, &prompts, n.max(1) as usize, args.max_tokens)?;
                let mut out = std::io::stdout().lock();
                if args.json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
                } else {
                    writeln!(
                        out,
                        "{:<12} {} streams: aggregate {:.1} tok/s, per stream {:.1} tok/s, {:.0} ms",
                        r.engine, r.streams, r.aggregate_tok_s, r.per_stream_tok_s, r.wall_ms
                    )?;
                }
            } else if let Some(turns) = args.chat_turns {
                chats.push((
                    id.clone(),
                    chat_turns(&model, &args.prompt, turns, args.max_tokens)?,
                ));
            }
        }
    }
    if args.chat_turns.is_some() {
        return print_turns(&chats, args.json);
    }
    if args.parallel.is_some() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<12} {:<22} {:<8} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12} {:>9} {:>12} {:>9}",
        "ENGINE",
        "MODEL",
        "RUNS IN",
        "LOAD ms",
        "PROMPT",
        "GEN",
        "PREFILL t/s",
        "DECODE t/s",
        "SEEN t/s",
        "TTFT ms",
        "SINK t/s",
        "PEAK MiB"
    )?;
    for r in &results {
        let peak = r.peak_rss_bytes.map_or_else(
            || "-".to_string(),
            |b| format!("{:.1}", b as f64 / 1048576.0),
        );
        writeln!(
            out,
            "{:<12} {:<22} {:<8} {:>9.1} {:>7} {:>7} {:>12.1} {:>12.1} {:>12.1} {:>9.2} {:>12.1} {:>9}",
            r.engine,
            shorten(&r.model, 22),
            r.isolation.name(),
            r.load_ms,
            r.prompt_tokens,
            r.generated_tokens,
            r.prefill_tok_s,
            r.decode_tok_s,
            r.seen_decode_tok_s,
            r.ttft_ms,
            r.sink_tok_s,
            peak
        )?;
    }
    if !args.compare_isolation && results.len() > 1 {
        print_relative(&mut out, &results)?;
    }
    if args.compare_isolation {
        print_ratios(&mut out, &results)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `name` cut to `width` characters (keeping its end, where file names differ).
fn shorten(name: &str, width: usize) -> String {
    let n = name.chars().count();
    if n <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// Every row's speeds as ratios of the first row's (measured in the same run).
fn print_relative(out: &mut impl Write, results: &[BenchResult]) -> anyhow::Result<()> {
    let Some((first, rest)) = results.split_first() else {
        return Ok(());
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    writeln!(out)?;
    for r in rest {
        writeln!(
            out,
            "{} ({}) vs {} ({}): prefill {:.3}x  decode {:.3}x  load {:.3}x",
            r.engine,
            r.model,
            first.engine,
            first.model,
            ratio(r.prefill_tok_s, first.prefill_tok_s),
            ratio(r.decode_tok_s, first.decode_tok_s),
            ratio(r.load_ms, first.load_ms)
        )?;
    }
    Ok(())
}

/// For `--compare-isolation`: each engine's worker figures over its in-process ones.
fn print_ratios(out: &mut impl Write, results: &[BenchResult]) -> anyhow::Result<()> {
    writeln!(out)?;
    for pair in results.chunks(2) {
        let [inproc, worker] = pair else { continue };
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        writeln!(
            out,
            "{}: process/inproc  seen decode {:.3}x  sink {:.3}x  TTFT {:.3}x  load {:.3}x  \
             (engine start {:.1} ms vs {:.1} ms)",
            inproc.engine,
            ratio(worker.seen_decode_tok_s, inproc.seen_decode_tok_s),
            ratio(worker.sink_tok_s, inproc.sink_tok_s),
            ratio(worker.ttft_ms, inproc.ttft_ms),
            ratio(worker.load_ms, inproc.load_ms),
            worker.engine_start_ms.unwrap_or(f64::NAN),
            inproc.engine_start_ms.unwrap_or(f64::NAN),
        )?;
    }
    Ok(())
}

fn print_turns(chats: &[(String, Vec<TurnTiming>)], json: bool) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    if json {
        let v: Vec<_> = chats
            .iter()
            .map(|(engine, turns)| serde_json::json!({"engine": engine, "turns": turns}))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<12} {:>5} {:>7} {:>13} {:>13} {:>10}",
        "ENGINE", "TURN", "PROMPT", "COLD TTFT ms", "WARM TTFT ms", "WARM/COLD"
    )?;
    for (engine, turns) in chats {
        for t in turns {
            writeln!(
                out,
                "{:<12} {:>5} {:>7} {:>13.2} {:>13.2} {:>9.0}%",
                engine,
                t.turn,
                t.prompt_tokens,
                t.cold_ttft_ms,
                t.warm_ttft_ms,
                100.0 * t.warm_ttft_ms / t.cold_ttft_ms.max(1e-9)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
