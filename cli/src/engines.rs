//! `runanywhere engines`.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::Runtime;

use super::args::EnginesArgs;

pub(crate) fn run(runtime: &Runtime, args: &EnginesArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime.engines();
    // As JSON values: the table below reads the same fields the JSON prints.
    let rows: Vec<serde_json::Value> = registry
        .listing()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(
            out,
            "No engine plugins found. {}",
            super::table::escape_controls(&registry.describe())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".into(),
                serde_json::Value::Array(a) if a.is_empty() => "-".into(),
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            [
                text(&r["id"]),
                text(&r["name"]),
                text(&r["version"]),
                text(&r["formats"]),
                text(&r["status"]),
                text(&r["isolation"]),
                text(&r["library"]),
            ]
        })
        .collect();
    let header = [
        "ID", "NAME", "VERSION", "FORMATS", "STATUS", "RUNS IN", "LIBRARY",
    ];
    let lines = super::table::render(header, &table);
    writeln!(out, "{}", lines[0])?;
    for (line, json) in lines[1..].iter().zip(&rows) {
        writeln!(out, "{line}")?;
        if let Some(reason) = json["reason"].as_str() {
            writeln!(out, "    reason: {}", super::table::escape_cell(reason))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
