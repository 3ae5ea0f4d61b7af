//! `runanywhere bench`: load time, prefill and decode speed per engine, and the host's
//! own throughput through the ABI (tokens per second delivered to the sink).

use std::io::Write;
use std::process::ExitCode;

use runanywhere::bench::{bench, chat_turns, compare_isolation, parallel, BenchResult, TurnTiming};
use runanywhere::{LoadOptions, Runtime, Turn};

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
    let options = LoadOptions {
        tokenizer: args.tokenizer.clone(),
        context_length: args.ctx_size,
        threads: args.threads,
        force: args.force,
        parallel: args.parallel.unwrap_or(0),
        ..LoadOptions::default()
    };
    let (mut results, one_way): (Vec<BenchResult>, &[String]) = if args.compare_isolation {
        let results = compare_isolation(
            runtime,
            &resolved,
            &engines,
            &options,
            &args.prompt,
            args.max_tokens,
            args.runs,
            &Turn::default(),
        )?;
        (results, &[])
    } else {
        (Vec::new(), &engines)
    };
    let mut chats = Vec::new();
    for id in one_way {
        let options = LoadOptions {
            engine: Some(id.clone()),
            ..options.clone()
        };
        let model = runtime.load_resolved(&resolved, &options)?;
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
            continue;
        }
        if let Some(turns) = args.chat_turns {
            chats.push((
                id.clone(),
                chat_turns(&model, &args.prompt, turns, args.max_tokens)?,
            ));
            continue;
        }
        results.push(bench(
            &model,
            &args.prompt,
            args.max_tokens,
            args.runs,
            &Turn::default(),
        )?);
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
        "{:<12} {:<8} {:>9} {:>7} {:>7} {:>12} {:>12} {:>12} {:>9} {:>12}",
        "ENGINE",
        "RUNS IN",
        "LOAD ms",
        "PROMPT",
        "GEN",
        "PREFILL t/s",
        "DECODE t/s",
        "SEEN t/s",
        "TTFT ms",
        "SINK t/s"
    )?;
    for r in &results {
        writeln!(
            out,
            "{:<12} {:<8} {:>9.1} {:>7} {:>7} {:>12.1} {:>12.1} {:>12.1} {:>9.2} {:>12.1}",
            r.engine,
            r.isolation.name(),
            r.load_ms,
            r.prompt_tokens,
            r.generated_tokens,
            r.prefill_tok_s,
            r.decode_tok_s,
            r.seen_decode_tok_s,
            r.ttft_ms,
            r.sink_tok_s
        )?;
    }
    if args.compare_isolation {
        print_ratios(&mut out, &results)?;
    }
    Ok(ExitCode::SUCCESS)
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
