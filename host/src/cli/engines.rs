//! `runanywhere engines`.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::registry::Registry;
use serde_json::json;

use super::args::EnginesArgs;

pub(crate) fn run(registry: &Registry, args: &EnginesArgs) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for e in registry.engines() {
        let info = e.info();
        rows.push(json!({
            "id": e.id(),
            "name": info.name.as_str(),
            "version": info.version.as_str(),
            "formats": info.formats.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
            "capabilities": info.capabilities.names(),
            "priority": e.manifest().priority,
            "status": "ok",
            "reason": null,
            "library": e.library(),
            "manifest": e.manifest().path,
        }));
    }
    for u in registry.unavailable() {
        rows.push(json!({
            "id": u.id,
            "name": null,
            "version": null,
            "formats": [],
            "capabilities": [],
            "priority": null,
            "status": "unavailable",
            "kind": u.kind,
            "reason": u.reason,
            "library": u.library,
            "manifest": u.manifest,
        }));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        writeln!(out, "No engine plugins found. {}", registry.describe())?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<14} {:<16} {:<10} {:<22} {:<12} LIBRARY",
        "ID", "NAME", "VERSION", "FORMATS", "STATUS"
    )?;
    for e in registry.engines() {
        let info = e.info();
        let formats: Vec<&str> = info.formats.iter().map(|f| f.as_str()).collect();
        writeln!(
            out,
            "{:<14} {:<16} {:<10} {:<22} {:<12} {}",
            e.id(),
            info.name.as_str(),
            info.version.as_str(),
            formats.join(","),
            "ok",
            e.library().display()
        )?;
    }
    for u in registry.unavailable() {
        writeln!(
            out,
            "{:<14} {:<16} {:<10} {:<22} {:<12} {}",
            u.id,
            "-",
            "-",
            "-",
            "unavailable",
            u.library
                .as_ref()
                .map(|l| l.display().to_string())
                .unwrap_or_else(|| "-".into())
        )?;
        writeln!(out, "    reason: {}", u.reason)?;
    }
    Ok(ExitCode::SUCCESS)
}
