//! `runanywhere chat`: an interactive conversation rendered with the model's chat
//! template (through the library's [`ChatSession`]). Reads stdin line by line, so it can
//! be scripted when stdin is not a terminal.
//!
//! Each turn continues the conversation's tokens (see [`ChatSession`]); llama.cpp's
//! prompt cache then prefills only the new turn, other engines the whole conversation.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use runanywhere::metrics::RunMetrics;
use runanywhere::{ChatSession, ErrorKind, Runtime, Turn};

use super::args::ChatArgs;
use super::stream::Stream;

const HELP: &str = "commands: /reset (forget the conversation), /history (show it), \
/stats (metrics of the last reply), /exit";

pub(crate) fn run(runtime: &Runtime, args: &ChatArgs) -> anyhow::Result<ExitCode> {
    let options = args.sampling.options();
    let seed = options.seed_or_random();
    let loaded = super::load_model(runtime, &args.model, false)?;
    let model = loaded.model();
    let template = match (&args.chat_template, &args.chat_template_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(
            runanywhere_formats::fs::read_regular_to_string(file)
                .with_context(|| format!("reading the chat template {}", file.display()))?,
        ),
        (None, None) => None,
    };
    let mut session = ChatSession::new(model, template.as_deref(), args.system.as_deref())?;
    if session.uses_fallback() {
        eprintln!(
            "note: the model has no chat template; using a plain \"User:/Assistant:\" \
             format (pass --chat-template or --chat-template-file to choose one)"
        );
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting with {} on {}. {HELP}",
            args.model.model,
            model.engine_id()
        );
    }
    let cancel = super::ctrl_c().clone();
    let turn = Turn {
        cancel: Some(cancel.clone()),
        ..Turn::default()
    };

    let mut last_metrics: Option<RunMetrics> = None;
    let mut failed_turns = 0u32;
    let mut stdout = std::io::stdout().lock();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" | "/bye" => break,
            "/help" => writeln!(stdout, "{HELP}")?,
            "/reset" => {
                session.reset();
                writeln!(stdout, "(conversation reset)")?;
            }
            "/history" => {
                for m in session.messages() {
                    writeln!(stdout, "[{}] {}", m.role, m.content)?;
                }
            }
            "/stats" => match &last_metrics {
                Some(m) => writeln!(stdout, "{}", m.summary())?,
                None => writeln!(stdout, "(no reply yet)")?,
            },
            cmd if cmd.starts_with('/') => {
                writeln!(stdout, "unknown command {cmd}; {HELP}")?;
            }
            _ => {
                // A Ctrl-C pressed at the prompt must not cancel this reply.
                cancel.reset();
                match reply(&loaded, &mut session, &line, args, seed, &turn, &mut stdout) {
                    Ok(metrics) => last_metrics = Some(metrics),
                    Err(e) => {
                        // The turn failed; the conversation goes on without it.
                        failed_turns += 1;
                        print_turn_error(&e);
                    }
                }
                cancel.reset();
            }
        }
    }
    // A script (stdin not a terminal) learns from the exit code that a turn failed.
    if failed_turns > 0 && !interactive {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Generates the assistant's reply to `user`, streaming it to `out`.
fn reply(
    loaded: &runanywhere::LoadedModel,
    session: &mut ChatSession,
    user: &str,
    args: &ChatArgs,
    seed: u64,
    turn: &Turn,
    out: &mut impl Write,
) -> anyhow::Result<RunMetrics> {
    let model = loaded.model();
    let prepared = session.prepare(model, user, &args.sampling.options(), seed)?;
    if prepared.dropped > 0 {
        eprintln!(
            "note: dropped the {} oldest message(s) to fit the {}-token context \
             (/reset starts over; --ctx-size sets a larger context)",
            prepared.dropped,
            model.info().context_length
        );
    }
    let mut stream = Stream::new(&mut *out, true);
    let generated = loaded.generate(prepared.request, turn, |id, piece| {
        stream.on_token(id, piece)
    });
    let stats = match generated {
        Ok(stats) => stats,
        Err(e) => {
            session.abandon();
            return Err(e.into());
        }
    };
    if let Some(e) = stream.write_error.take() {
        session.abandon();
        return Err(e).context("writing the reply");
    }
    let (text, ids) = (
        std::mem::take(&mut stream.text),
        std::mem::take(&mut stream.ids),
    );
    session.commit(&text, &stats, &ids);
    writeln!(out)?;
    Ok(RunMetrics::new(loaded.load_ms(), &stats))
}

/// A failed turn's error, with what the user can do about a full context.
fn print_turn_error(e: &anyhow::Error) {
    let overflow = e
        .downcast_ref::<runanywhere::Error>()
        .is_some_and(|e| e.kind() == ErrorKind::ContextOverflow);
    if overflow {
        let text = format!(
            "{e:#} (/reset starts the conversation over; --ctx-size sets a larger context)"
        );
        eprintln!("error: {}", super::escape_controls(&text));
    } else {
        super::print_error(e);
    }
}
