//! `runanywhere verify` and `runanywhere info`.

use std::io::Write;
use std::process::ExitCode;

use runanywhere::memory;
use runanywhere::store::{human_bytes, StoreError};
use runanywhere::Runtime;
use runanywhere_formats::{verify_path, Verification};
use serde_json::json;

use super::args::{InfoArgs, VerifyArgs};

pub(crate) fn run(runtime: &Runtime, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let path = runtime.locate(&args.model).map_err(not_found)?.path;
    let v = verify_path(&path);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write_summary(&mut out, &v)?;
    }
    Ok(exit_code(&v))
}

pub(crate) fn info(runtime: &Runtime, args: &InfoArgs) -> anyhow::Result<ExitCode> {
    let located = runtime.locate(&args.model).map_err(not_found)?;
    let (path, entry) = (located.path, located.entry);
    let v = verify_path(&path);
    // From the plugins' manifests: what each engine claims to read, without loading it.
    let readers: Vec<serde_json::Value> = v
        .format
        .map(|f| runtime.readers(f))
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"id": m.id, "priority": m.priority, "default": i == 0}))
        .collect();
    let estimate = v.is_ok().then(|| memory::estimate(&v, 0));
    let available = memory::available();
    let mut out = std::io::stdout().lock();
    if args.json {
        let object = json!({
            "verification": v,
            "entry": entry,
            "engines": readers,
            "memory": estimate.map(|e| json!({
                "weights": e.weights,
                "kv_cache": e.kv_cache,
                "context": e.context,
                "total": e.total(),
                "available": available,
            })),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&object)?)?;
        return Ok(exit_code(&v));
    }
    write_summary(&mut out, &v)?;
    if let Some(e) = &entry {
        writeln!(out, "store entry {}:", e.id)?;
        writeln!(out, "  source        {}", e.source)?;
        if let Some(rev) = &e.revision {
            writeln!(out, "  revision      {rev}")?;
        }
        writeln!(out, "  added         {}", e.added)?;
        for f in &e.files {
            writeln!(
                out,
                "  file          {} ({} bytes, sha256 {})",
                f.name, f.size, f.sha256
            )?;
        }
        if e.linked {
            writeln!(out, "  linked        yes (the store holds symlinks)")?;
        }
    }
    let engines: Vec<String> = readers
        .iter()
        .map(|r| {
            let id = r["id"].as_str().unwrap_or_default();
            if r["default"] == true {
                format!("{id} (default)")
            } else {
                id.to_string()
            }
        })
        .collect();
    let engines = if engines.is_empty() {
        "none available".to_string()
    } else {
        engines.join(", ")
    };
    writeln!(out, "engines         {engines}")?;
    if let Some(e) = estimate {
        let avail = available.map_or("unknown".into(), human_bytes);
        writeln!(
            out,
            "memory          ~{} (weights {} + KV cache {} for {} tokens); {avail} available",
            human_bytes(e.total()),
            human_bytes(e.weights),
            human_bytes(e.kv_cache),
            e.context
        )?;
    }
    Ok(exit_code(&v))
}

/// A reference that is neither a path nor a store id, said as such.
fn not_found(e: runanywhere::Error) -> anyhow::Error {
    match e {
        runanywhere::Error::Store(e @ StoreError::UnknownModel { .. }) => {
            let id = match &e {
                StoreError::UnknownModel { id, .. } => id.clone(),
                _ => String::new(),
            };
            anyhow::anyhow!(
                "{id} is neither a file or folder nor a model in the store: {e}; \
                 `runanywhere models` lists them"
            )
        }
        other => other.into(),
    }
}

fn exit_code(v: &Verification) -> ExitCode {
    if v.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What verification found, then OK or the first problem.
fn write_summary(out: &mut impl Write, v: &Verification) -> std::io::Result<()> {
    let status = if v.is_ok() { "OK" } else { "INVALID" };
    writeln!(out, "{}: {status}", v.path.display())?;
    let f = &v.facts;
    let mut rows: Vec<(&str, String)> = Vec::new();
    if let Some(format) = v.format {
        rows.push(("format", format!("{format} ({})", format.display_name())));
    }
    rows.push((
        "size",
        format!("{} bytes ({})", v.size, human_bytes(v.size)),
    ));
    if v.files.len() > 1 {
        rows.push(("files", v.files.len().to_string()));
    }
    let optional = [
        ("architecture", f.architecture.clone()),
        ("name", f.name.clone()),
        (
            "parameters",
            f.parameters.map(|p| format!("{} ({p})", short_count(p))),
        ),
        ("quantization", f.quantization.clone()),
        ("context", f.context_length.map(|c| format!("{c} tokens"))),
        ("tensors", f.tensors.map(|t| t.to_string())),
        (
            "kv cache",
            f.kv_bytes_per_token
                .map(|kv| format!("{} per token", human_bytes(kv))),
        ),
    ];
    rows.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
    rows.extend(f.details.iter().map(|(k, v)| (k.as_str(), v.clone())));
    if let Some(problem) = &v.problem {
        rows.push(("problem", problem.to_string()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        writeln!(out, "  {key:<width$}  {value}")?;
    }
    Ok(())
}

/// 1234567 → `1.23M`.
fn short_count(n: u64) -> String {
    let (value, unit) = match n {
        0..=999 => return n.to_string(),
        1_000..=999_999 => (n as f64 / 1e3, "K"),
        1_000_000..=999_999_999 => (n as f64 / 1e6, "M"),
        _ => (n as f64 / 1e9, "B"),
    };
    format!("{value:.2}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_shortened() {
        assert_eq!(short_count(999), "999");
        assert_eq!(short_count(260_032), "260.03K");
        assert_eq!(short_count(1_235_814_400), "1.24B");
    }
}
