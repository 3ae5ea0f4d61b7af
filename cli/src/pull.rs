//! `runanywhere pull`, with a progress bar on stderr (hidden when stderr is not a
//! terminal).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use runanywhere::store::{human_bytes, Catalog, PullOptions, PullOutcome, PullProgress, PullSpec};
use runanywhere::Runtime;

use super::args::PullArgs;

pub(crate) fn run(runtime: &Runtime, args: &PullArgs) -> anyhow::Result<ExitCode> {
    let store = runtime.store()?;
    let spec = PullSpec::parse(&args.model, &Catalog::builtin()?)?;
    let hub = runtime
        .hub()
        .with_retries(args.retries, Duration::from_millis(500));
    let options = PullOptions {
        id: args.id.clone(),
    };
    let mut progress = Bar::default();
    let outcome = store.pull(&spec, &hub, &options, runtime.engines(), &mut progress);
    progress.clear();
    let outcome = outcome?;
    let entry = outcome.entry();
    let mut out = std::io::stdout().lock();
    let verb = match outcome {
        PullOutcome::Pulled(_) => "Pulled",
        PullOutcome::AlreadyPresent(_) => "Already in the store:",
    };
    writeln!(
        out,
        "{verb} {} ({}, {}) at {}",
        entry.id,
        entry.format,
        human_bytes(entry.size),
        store.model_path(entry).display()
    )?;
    if let Some(sha) = &entry.sha256 {
        writeln!(out, "  sha256  {sha}")?;
    }
    let engines = if entry.engines.is_empty() {
        "none available (see `runanywhere engines`)".to_string()
    } else {
        entry.engines.join(", ")
    };
    writeln!(out, "  engines {engines}")?;
    writeln!(
        out,
        "Run it: runanywhere run --model {} \"Once upon a time\"",
        entry.id
    )?;
    Ok(ExitCode::SUCCESS)
}

/// An indicatif bar per file, drawn on stderr only when it is a terminal.
#[derive(Default)]
pub(crate) struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    /// Removes the bar from the terminal.
    pub(crate) fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

impl PullProgress for Bar {
    fn start(&mut self, file: &str, total: Option<u64>, done: u64) {
        self.clear();
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{msg} {spinner} {bytes} {binary_bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(file.to_string());
        bar.set_position(done);
        bar.reset_eta();
        self.bar = Some(bar);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }

    fn note(&mut self, message: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{message}")),
            None => eprintln!("{message}"),
        }
    }
}
