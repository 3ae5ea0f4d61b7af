//! `runanywhere`: run LLMs locally through pluggable inference engines.
//!
//! A thin front end over the `runanywhere` library: argument parsing, terminal output
//! (tables, progress bars, streaming), Ctrl-C. The command and flag names are a contract
//! other tools rely on.

mod args;
mod bench;
mod catalog;
mod chat;
mod convert;
mod engines;
mod import;
mod models;
mod pull;
mod run;
mod stream;
mod table;
mod tokenize;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use args::{Cli, Command};
use clap::Parser;
use runanywhere::registry::{search_dirs, Registry};
use runanywhere::store::{Catalog, PullSpec, Store};
use table::escape_controls;

/// Sets up `tracing` to stderr: warnings by default, more with `-v`, or `RUNANYWHERE_LOG`.
pub(crate) fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNANYWHERE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let registry = Registry::discover(&search_dirs(&cli.plugins_dir));
    match cli.command {
        Command::Engines(args) => engines::run(&registry, &args),
        Command::Run(args) => run::run(&registry, &args),
        Command::Tokenize(args) => tokenize::run(&registry, &args),
        Command::Bench(args) => bench::run(&registry, &args),
        Command::Chat(args) => chat::run(&registry, &args),
        Command::Catalog(args) => catalog::run(&args),
        Command::Pull(args) => pull::run(&registry, &args),
        Command::Import(args) => import::run(&registry, &args),
        Command::Verify(args) => verify::run(&args),
        Command::Models(args) => models::list(&args),
        Command::Rm(args) => models::remove(&args),
        Command::Info(args) => verify::info(&registry, &args),
        Command::Convert(args) => convert::run(&registry, &args),
    }
}

/// A `--model` value made concrete: the path to load, and the store's tokenizer for it.
#[derive(Debug)]
pub(crate) struct ResolvedModel {
    pub(crate) path: PathBuf,
    pub(crate) tokenizer: Option<PathBuf>,
}

/// Resolves `--model`: an existing path is used as it is; otherwise a store id names
/// the store's copy; a catalog id not yet in the store is pulled first (the first-run
/// path of a new user); anything else is passed on unchanged (`mock`, or a path the
/// engine will report missing).
pub(crate) fn resolve_model(registry: &Registry, value: &str) -> anyhow::Result<ResolvedModel> {
    let as_given = ResolvedModel {
        path: PathBuf::from(value),
        tokenizer: None,
    };
    if std::fs::symlink_metadata(&as_given.path).is_ok() {
        return Ok(as_given);
    }
    let store = match Store::from_env() {
        Ok(store) => store,
        Err(e) => {
            tracing::warn!("cannot open the model store: {e}");
            return Ok(as_given);
        }
    };
    let entry = match store.get(value) {
        Ok(Some(entry)) => Some(entry),
        Ok(None) => match Catalog::builtin()?.get(value) {
            Some(_) => {
                eprintln!("{value} is not in the store yet: pulling it from the catalog");
                let spec = PullSpec::parse(value, &Catalog::builtin()?)?;
                let outcome = pull::pull_with_progress(&store, registry, &spec, None, 4)?;
                Some(outcome.entry().clone())
            }
            None => None,
        },
        Err(e) => {
            tracing::warn!("cannot read the model store: {e}");
            None
        }
    };
    Ok(match entry {
        Some(entry) => {
            let resolved = ResolvedModel {
                path: store.model_path(&entry),
                tokenizer: store.tokenizer_path(&entry),
            };
            tracing::debug!(id = value, path = %resolved.path.display(), "model from the store");
            resolved
        }
        None => as_given,
    })
}

/// Refuses a model that will not fit in memory (unless `force`).
pub(crate) fn check_memory(path: &Path, context: u32, force: bool) -> anyhow::Result<()> {
    match runanywhere::memory::check(path, context) {
        Ok(estimate) => {
            tracing::debug!(?estimate, "memory estimate");
            Ok(())
        }
        Err(e) if force => {
            tracing::warn!("{e} (loading anyway: --force)");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Loads the model named by `args` on the engine the registry selects.
/// Returns the model and the load time in milliseconds.
pub(crate) fn load_model(
    registry: &Registry,
    args: &args::ModelArgs,
    vocab_only: bool,
    seed: u64,
) -> anyhow::Result<(runanywhere::Model, f64)> {
    let model = resolve_model(registry, &args.model)?;
    let path = model.path.as_path();
    let engine = registry.select(path, args.engine.as_deref())?;
    if !vocab_only {
        check_memory(path, args.ctx_size, args.force)?;
    }
    tracing::info!(engine = engine.id(), model = %path.display(), "loading model");
    let request = runanywhere::LoadRequest {
        model_path: path.to_string_lossy().into_owned().into(),
        tokenizer_path: args
            .tokenizer
            .as_ref()
            .or(model.tokenizer.as_ref())
            .map(|p| p.to_string_lossy().into_owned().into())
            .into(),
        context_length: args.ctx_size,
        threads: args.threads,
        batch_size: args.batch_size,
        gpu_layers: args.gpu_layers,
        vocab_only,
        seed,
        extensions: Default::default(),
    };
    let start = std::time::Instant::now();
    let model = engine.load_model(request)?;
    Ok((model, start.elapsed().as_secs_f64() * 1000.0))
}

/// A seed from the clock, for runs without --seed.
pub(crate) fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Set by Ctrl-C; token sinks then ask the engine to stop.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ctrl-C stops the current generation (the sink sees [`INTERRUPTED`]); a second Ctrl-C
/// before it is cleared exits.
pub(crate) fn install_ctrl_c() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

fn main() -> ExitCode {
    // ggml answers a failed assert or an uncaught C++ exception by forking gdb for a
    // backtrace (seconds, and noise on the user's terminal) unless this is set. It is set
    // here, before any thread or plugin exists, because changing the environment later
    // races with other threads reading it.
    if std::env::var_os("GGML_NO_BACKTRACE").is_none() {
        std::env::set_var("GGML_NO_BACKTRACE", "1");
    }
    let args = Cli::parse();
    init_logging(args.verbose);
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", escape_controls(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
