//! `runanywhere run`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use runanywhere::metrics::RunMetrics;
use runanywhere::{Prompt, Runtime, StopReason, Turn};
use serde_json::json;

use super::args::RunArgs;
use super::stream::Stream;

pub(crate) fn run(runtime: &Runtime, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let options = args.sampling.options();
    let seed = options.seed_or_random();
    let prompt = match &args.prompt_ids {
        Some(ids) => Prompt::Ids(parse_ids(ids)?.into()),
        None => Prompt::Text(read_prompt(args.prompt.as_deref())?.into()),
    };
    let model = super::load_model(runtime, &args.model, false)?;
    let mut request = options.request(prompt, seed);
    request.add_special = !args.no_bos;

    let cancel = super::ctrl_c().clone();
    let turn = Turn {
        cancel: Some(cancel.clone()),
        ..Turn::default()
    };
    let mut stream = Stream::new(std::io::stdout().lock(), !args.json);
    let mut scores: Vec<(f32, Vec<runanywhere::TokenLogprob>)> = Vec::new();
    let stats = match args.logprobs {
        None => model.generate(request, &turn, |id, piece| stream.on_token(id, piece))?,
        Some(k) => model.generate_with_logprobs(request, k, &turn, |t| {
            scores.push((t.logprob, t.top.to_vec()));
            stream.on_token(t.id, t.piece)
        })?,
    };
    if let Some(e) = stream.write_error.take() {
        // A closed pipe (`| head`) is a normal way to stop; anything else is an error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing the generated text to stdout");
        }
    }
    let metrics = RunMetrics::new(model.load_ms(), &stats);
    let reason = stats.stop_reason();
    let ends_with_newline = stream.text.ends_with('\n');
    let (ids, text) = (
        std::mem::take(&mut stream.ids),
        std::mem::take(&mut stream.text),
    );
    let mut stdout = stream.into_out();
    let engine = model.model().engine_id();
    if args.json {
        let mut object = json!({
            "engine": engine,
            "model": args.model.model,
            "prompt_ids": stats.prompt_ids.as_slice(),
            "generated_ids": ids,
            "text": text,
            "stop_reason": reason.name(),
            "seed": seed,
            "metrics": metrics,
        });
        if args.logprobs.is_some() {
            object["logprobs"] = logprobs_json(model.model(), &ids, &scores);
        }
        writeln!(stdout, "{object}")?;
    } else if std::io::stdout().is_terminal() && !ends_with_newline {
        writeln!(stdout)?;
    }
    drop(stdout);
    eprintln!(
        "[{engine} | stop: {} | seed {seed}] {}",
        reason.name(),
        metrics.summary()
    );
    if reason == StopReason::Cancelled && cancel.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// `[{id, piece, logprob, top: [{id, piece, logprob}]}]` per generated token.
fn logprobs_json(
    model: &runanywhere::Model,
    ids: &[u32],
    scores: &[(f32, Vec<runanywhere::TokenLogprob>)],
) -> serde_json::Value {
    let piece = |id: u32| {
        model
            .token_piece(id)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let number = |x: f32| {
        if x.is_finite() {
            json!(x)
        } else {
            serde_json::Value::Null
        }
    };
    ids.iter()
        .zip(scores)
        .map(|(&id, (logprob, top))| {
            let top: Vec<_> = top
                .iter()
                .map(|t| json!({"id": t.id, "piece": piece(t.id), "logprob": number(t.logprob)}))
                .collect();
            json!({"id": id, "piece": piece(id), "logprob": number(*logprob), "top": top})
        })
        .collect()
}

/// Parses "1 2 3" or "1,2,3".
pub(crate) fn parse_ids(text: &str) -> anyhow::Result<Vec<u32>> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .with_context(|| format!("--prompt-ids: `{t}` is not a token id"))
        })
        .collect()
}

fn read_prompt(arg: Option<&str>) -> anyhow::Result<String> {
    if let Some(p) = arg {
        return Ok(p.to_string());
    }
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(String::new());
    }
    let mut bytes = Vec::new();
    stdin
        .read_to_end(&mut bytes)
        .context("reading the prompt from stdin")?;
    String::from_utf8(bytes).context("the prompt on stdin is not valid UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_parse_with_spaces_or_commas_and_reject_junk() {
        assert_eq!(parse_ids(" 1 403,407\n").unwrap(), vec![1, 403, 407]);
        let err = parse_ids("1 x").unwrap_err().to_string();
        assert!(err.contains("`x`"), "{err}");
    }
}
