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
mod embed;
mod engines;
mod import;
mod models;
mod plugin;
mod pull;
mod run;
mod serve;
mod stream;
mod table;
mod tokenize;
mod verify;

use std::process::ExitCode;
use std::sync::OnceLock;

use args::{Cli, Command};
use clap::Parser;
use runanywhere::store::StoreError;
use runanywhere::{CancelToken, ErrorKind, LoadedModel, ResolvedModel, Runtime, RuntimeConfig};
use table::escape_controls;

/// Sets up `tracing` to stderr: warnings by default, more with `-v`, or `RUNANYWHERE_LOG`.
pub(crate) fn init_logging(verbose: u8, serving: bool) {
    let default = match verbose {
        // A server says what it is doing (start, loads, shutdown) without -v.
        0 if serving => "warn,runanywhere_server=info",
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
    let runtime = Runtime::new(RuntimeConfig {
        plugin_dirs: cli.plugins_dir.clone(),
        workers: cli.isolation.config(runanywhere::Isolation::InProcess),
        ..RuntimeConfig::default()
    });
    // Commands that only read the store or a file (catalog, models, rm, verify, info)
    // never ask for `runtime.engines()`, so no plugin library is opened for them.
    match cli.command {
        Command::Engines(args) => engines::run(&runtime, &args),
        Command::Plugin(args) => plugin::run(&runtime, &args),
        Command::Run(args) => run::run(&runtime, &args),
        Command::Tokenize(args) => tokenize::run(&runtime, &args),
        Command::Bench(args) => bench::run(&runtime, &args),
        Command::Chat(args) => chat::run(&runtime, &args),
        Command::Catalog(args) => catalog::run(&args),
        Command::Pull(args) => pull::run(&runtime, &args),
        Command::Import(args) => import::run(&runtime, &args),
        Command::Verify(args) => verify::run(&runtime, &args),
        Command::Models(args) => models::list(&runtime, &args),
        Command::Rm(args) => models::remove(&runtime, &args),
        Command::Info(args) => verify::info(&runtime, &args),
        Command::Convert(args) => convert::run(&runtime, &args),
        Command::Embed(args) => embed::run(&runtime, &args),
        Command::Serve(args) => serve::run(
            cli.plugins_dir,
            cli.isolation.config(runanywhere::Isolation::Process),
            &args,
        ),
        Command::Worker(args) => Ok(run_worker(&args)),
    }
}

/// `runanywhere worker`: one engine served to the host that started this process.
fn run_worker(args: &args::WorkerArgs) -> ExitCode {
    runanywhere::worker::run(&args.manifest, args.log_level, args.memory_limit)
}

/// Resolves `--model` (a path, a store id, or a catalog id / `hf.co/...` reference
/// pulled on first use, with a progress bar).
pub(crate) fn resolve_model(runtime: &Runtime, value: &str) -> anyhow::Result<ResolvedModel> {
    let mut progress = pull::Bar::default();
    let resolved = runtime.resolve(value, &mut progress);
    progress.clear();
    Ok(resolved?)
}

/// Loads the model named by `args` on the engine the runtime selects (refusing a model
/// that will not fit in memory, unless --force).
pub(crate) fn load_model(
    runtime: &Runtime,
    args: &args::ModelArgs,
    vocab_only: bool,
) -> anyhow::Result<LoadedModel> {
    let resolved = resolve_model(runtime, &args.model)?;
    Ok(runtime.load_resolved(&resolved, &args.load_options(vocab_only))?)
}

/// Cancelled by Ctrl-C: the current generation stops; a second Ctrl-C before it is
/// reset exits.
pub(crate) fn ctrl_c() -> &'static CancelToken {
    static TOKEN: OnceLock<CancelToken> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let token = CancelToken::new();
        let handler = token.clone();
        let result = ctrlc::set_handler(move || {
            if handler.cancel() {
                std::process::exit(130);
            }
        });
        if let Err(e) = result {
            tracing::warn!("cannot install the Ctrl-C handler: {e}");
        }
        token
    })
}

/// The CLI's names for the knobs and commands a library error's fix mentions, to print
/// after it.
pub(crate) fn flag_hint(err: &anyhow::Error) -> Option<String> {
    let store = err.downcast_ref::<StoreError>().or_else(|| {
        match err.downcast_ref::<runanywhere::Error>() {
            Some(runanywhere::Error::Store(e)) => Some(e),
            _ => None,
        }
    });
    match store {
        Some(StoreError::IdTaken { id, .. }) => {
            return Some(format!(
                "--id chooses another id; `runanywhere rm {id}` removes the model"
            ))
        }
        Some(StoreError::UnknownModel { .. }) => {
            return Some("`runanywhere models` lists them".into())
        }
        Some(StoreError::BadReference { .. }) => {
            return Some("`runanywhere catalog` lists the catalog ids".into())
        }
        _ => {}
    }
    let error = err.downcast_ref::<runanywhere::Error>()?;
    if error
        .engine_error()
        .is_some_and(|e| e.message().contains("tokenizer_path"))
    {
        return Some("--tokenizer PATH gives the tokenizer file".into());
    }
    match error.kind() {
        ErrorKind::InsufficientMemory => {
            Some("--ctx-size sets the context length; --force loads the model anyway".into())
        }
        ErrorKind::ContextOverflow => Some("--ctx-size sets the context length".into()),
        _ => None,
    }
}

/// Prints an error (and the flags that fix it) on stderr, escaped for the terminal.
pub(crate) fn print_error(err: &anyhow::Error) {
    let mut text = format!("{err:#}");
    if let Some(hint) = flag_hint(err) {
        text.push_str(&format!(" ({hint})"));
    }
    eprintln!("error: {}", escape_controls(&text));
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
    // A worker logs through its host (runanywhere::worker::run sets that up).
    if let Command::Worker(worker) = &args.command {
        return run_worker(worker);
    }
    let serving = matches!(args.command, Command::Serve(_));
    init_logging(args.verbose, serving);
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            print_error(&err);
            ExitCode::FAILURE
        }
    }
}
