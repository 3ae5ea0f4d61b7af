//! `runanywhere import`.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::store::{human_bytes, ImportOptions};
use runanywhere::Runtime;

use super::args::ImportArgs;

pub(crate) fn run(runtime: &Runtime, args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let store = runtime.store()?;
    let options = ImportOptions {
        id: args.id.clone(),
        link: args.link,
    };
    let entry = store.import(&args.path, &options, runtime.engines())?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Imported {} ({}, {}{}) at {}",
        entry.id,
        entry.format,
        human_bytes(entry.size),
        if entry.linked { ", linked" } else { "" },
        store.model_path(&entry).display()
    )?;
    if !entry.engines.is_empty() {
        writeln!(out, "  engines {}", entry.engines.join(", "))?;
    }
    Ok(ExitCode::SUCCESS)
}
