//! `runanywhere catalog`.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::store::{human_bytes, Catalog};
use serde_json::json;

use super::args::CatalogArgs;

pub(crate) fn run(args: &CatalogArgs) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::builtin()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let entries: Vec<serde_json::Value> = catalog
            .models()
            .iter()
            .map(|m| {
                let mut v = json!(m);
                v["size"] = json!(m.size());
                v
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 8]> = catalog
        .models()
        .iter()
        .map(|m| {
            [
                m.id.clone(),
                m.format.clone(),
                m.quant.clone(),
                m.parameters.clone(),
                m.size().map_or("-".into(), human_bytes),
                m.context_length.to_string(),
                format!("~{} MiB", m.ram_estimate_mb),
                format!("{} ({})", m.repo, m.license),
            ]
        })
        .collect();
    let header = [
        "ID",
        "FORMAT",
        "QUANT",
        "PARAMS",
        "SIZE",
        "CONTEXT",
        "RAM",
        "REPO (LICENSE)",
    ];
    for line in super::table::render(header, &rows) {
        writeln!(out, "{line}")?;
    }
    writeln!(
        out,
        "\nPull one with `runanywhere pull ID`; sizes are shown where the catalog pins them \
         (every download is checked against the size and SHA-256 the Hub reports)."
    )?;
    Ok(ExitCode::SUCCESS)
}
