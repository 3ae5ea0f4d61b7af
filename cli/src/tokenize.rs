//! `runanywhere tokenize`.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use runanywhere::Runtime;
use serde_json::json;

use super::args::TokenizeArgs;

pub(crate) fn run(runtime: &Runtime, args: &TokenizeArgs) -> anyhow::Result<ExitCode> {
    let text = match &args.text {
        Some(t) => t.clone(),
        None => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                anyhow::bail!("give TEXT as an argument, or pipe it on stdin");
            }
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes).context("reading stdin")?;
            String::from_utf8(bytes).context("stdin is not valid UTF-8")?
        }
    };
    let loaded = super::load_model(runtime, &args.model, true)?;
    let model = loaded.model();
    let special = !args.no_special;
    let ids = model.tokenize(&text, special, special)?;
    let pieces = ids
        .iter()
        .map(|&id| {
            model
                .token_piece(id)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", json!({ "ids": ids, "pieces": pieces }))?;
    } else {
        for (id, piece) in ids.iter().zip(&pieces) {
            writeln!(out, "{id:>8} -> {piece:?}")?;
        }
        writeln!(out, "{} tokens", ids.len())?;
    }
    Ok(ExitCode::SUCCESS)
}
