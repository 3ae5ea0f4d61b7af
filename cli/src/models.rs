//! `runanywhere models` and `runanywhere rm`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use runanywhere::store::{human_bytes, StoreError};
use runanywhere::Runtime;
use serde_json::json;

use super::args::{ModelsArgs, RmArgs};

pub(crate) fn list(runtime: &Runtime, args: &ModelsArgs) -> anyhow::Result<ExitCode> {
    let store = runtime.store()?;
    let models = store.list()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let entries: Vec<serde_json::Value> = models
            .iter()
            .map(|e| {
                let mut v = json!(e);
                v["model_path"] = json!(store.model_path(e));
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if models.is_empty() {
        writeln!(
            out,
            "No models in {}. Get one with `runanywhere pull ID` (see `runanywhere catalog`) \
             or `runanywhere import PATH`.",
            store.home().display()
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 6]> = models
        .iter()
        .map(|e| {
            [
                e.id.clone(),
                e.format.clone(),
                human_bytes(e.size),
                if e.engines.is_empty() {
                    "-".into()
                } else {
                    e.engines.join(",")
                },
                e.added.get(..10).unwrap_or(&e.added).to_string(),
                e.source.clone(),
            ]
        })
        .collect();
    for line in super::table::render(
        ["ID", "FORMAT", "SIZE", "ENGINES", "ADDED", "SOURCE"],
        &rows,
    ) {
        writeln!(out, "{line}")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn remove(runtime: &Runtime, args: &RmArgs) -> anyhow::Result<ExitCode> {
    let store = runtime.store()?;
    let entry = store
        .get(&args.id)?
        .ok_or_else(|| StoreError::UnknownModel {
            id: args.id.clone(),
            home: store.home().to_path_buf(),
        })?;
    if !args.yes {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            anyhow::bail!(
                "refusing to remove `{}` without --yes: stdin is not a terminal to confirm on",
                args.id
            );
        }
        eprint!(
            "Remove {} ({}, {}, {})? [y/N] ",
            entry.id,
            entry.format,
            human_bytes(entry.size),
            store.model_path(&entry).display()
        );
        let mut answer = String::new();
        stdin.lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("Kept {}.", entry.id);
            return Ok(ExitCode::SUCCESS);
        }
    }
    let entry = store.remove(&entry.id)?;
    let mut out = std::io::stdout().lock();
    let what = if entry.linked {
        "its links"
    } else {
        "its files"
    };
    writeln!(
        out,
        "Removed {} and {what} ({}).",
        entry.id,
        human_bytes(entry.size)
    )?;
    Ok(ExitCode::SUCCESS)
}
