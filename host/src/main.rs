//! `runanywhere`: run LLMs locally through pluggable inference engines.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // ggml answers a failed assert or an uncaught C++ exception by forking gdb for a
    // backtrace (seconds, and noise on the user's terminal) unless this is set. It is set
    // here, before any thread or plugin exists, because changing the environment later
    // races with other threads reading it.
    if std::env::var_os("GGML_NO_BACKTRACE").is_none() {
        std::env::set_var("GGML_NO_BACKTRACE", "1");
    }
    let args = cli::Cli::parse();
    cli::init_logging(args.verbose);
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cli::escape_controls(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
