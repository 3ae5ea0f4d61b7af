//! `runanywhere embed`: one vector per text.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use runanywhere::{Pooling, Prompt, Runtime};
use serde_json::json;

use super::args::EmbedArgs;

pub(crate) fn run(runtime: &Runtime, args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let texts = if args.texts.is_empty() {
        if std::io::stdin().is_terminal() {
            anyhow::bail!("give texts to embed as arguments, or one per line on stdin");
        }
        std::io::stdin()
            .lock()
            .lines()
            .collect::<Result<Vec<_>, _>>()
            .context("reading texts from stdin")?
    } else {
        args.texts.clone()
    };
    let pooling = args
        .pooling
        .as_deref()
        .and_then(Pooling::from_name)
        .unwrap_or(Pooling::Default);
    let model = super::load_model(runtime, &args.model, false)?;
    let inputs: Vec<Prompt> = texts
        .iter()
        .map(|t| Prompt::Text(t.as_str().into()))
        .collect();
    let vectors = model.model().embed(&inputs, pooling, !args.no_normalize)?;
    let dims = vectors.first().map_or(0, Vec::len);
    let mut out = std::io::stdout().lock();
    if args.json {
        let object = json!({
            "engine": model.model().engine_id(),
            "model": args.model.model,
            "pooling": pooling.name(),
            "normalized": !args.no_normalize,
            "dims": dims,
            "embeddings": vectors,
        });
        writeln!(out, "{object}")?;
        return Ok(ExitCode::SUCCESS);
    }
    for (text, v) in texts.iter().zip(&vectors) {
        let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.5}")).collect();
        let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        writeln!(
            out,
            "{dims} dims, norm {norm:.4}: [{}, …]  {}",
            head.join(", "),
            super::table::escape_controls(text)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
