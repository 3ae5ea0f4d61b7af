//! `runanywhere run`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use runanywhere::metrics::RunMetrics;
use runanywhere::registry::Registry;
use runanywhere::{GenerateRequest, Prompt, SamplingParams, StopReason};
use serde_json::json;

use super::args::{RunArgs, SamplingArgs};
use super::stream::Stream;
use super::{install_ctrl_c, INTERRUPTED};

pub(crate) fn run(registry: &Registry, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let seed = args.sampling.seed.unwrap_or_else(super::random_seed);
    let prompt = match &args.prompt_ids {
        Some(ids) => Prompt::Ids(parse_ids(ids)?.into()),
        None => Prompt::Text(read_prompt(args.prompt.as_deref())?.into()),
    };
    let (model, load_ms) = super::load_model(registry, &args.model, false, seed)?;
    let mut request = request_from(&args.sampling, seed, prompt);
    request.add_special = !args.no_bos;

    install_ctrl_c();
    let mut stream = Stream::new(std::io::stdout().lock(), !args.json);
    let stats = model.generate(request, |id, piece| stream.on_token(id, piece))?;
    if let Some(e) = stream.write_error.take() {
        // A closed pipe (`| head`) is a normal way to stop; anything else is an error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing the generated text to stdout");
        }
    }
    let metrics = RunMetrics::new(load_ms, &stats);
    let reason = stats.stop_reason();
    let ends_with_newline = stream.text.ends_with('\n');
    let (ids, text) = (
        std::mem::take(&mut stream.ids),
        std::mem::take(&mut stream.text),
    );
    let mut stdout = stream.into_out();
    if args.json {
        let object = json!({
            "engine": model.engine_id(),
            "model": args.model.model,
            "prompt_ids": stats.prompt_ids.as_slice(),
            "generated_ids": ids,
            "text": text,
            "stop_reason": reason.name(),
            "seed": seed,
            "metrics": metrics,
        });
        writeln!(stdout, "{object}")?;
    } else if std::io::stdout().is_terminal() && !ends_with_newline {
        writeln!(stdout)?;
    }
    drop(stdout);
    eprintln!(
        "[{} | stop: {} | seed {seed}] {}",
        model.engine_id(),
        reason.name(),
        metrics.summary()
    );
    if reason == StopReason::Cancelled && INTERRUPTED.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// The sampling part of a request from the CLI flags.
pub(crate) fn request_from(s: &SamplingArgs, seed: u64, prompt: Prompt) -> GenerateRequest {
    let mut request = GenerateRequest::new(prompt);
    request.max_tokens = s.max_tokens;
    request.sampling = SamplingParams {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        repeat_window: s.repeat_last_n,
        seed,
    };
    request.stop = s.stop.iter().map(|x| x.as_str().into()).collect();
    request
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
