//! `runanywhere chat`: an interactive conversation rendered with the model's chat
//! template. Reads stdin line by line, so it can be scripted when stdin is not a terminal.
//!
//! Each turn re-renders the whole conversation and generates from a fresh KV cache:
//! simple and engine-independent; reusing the cache across turns is a later optimisation.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use runanywhere::chat::{drop_oldest_turns, ChatMessage, ChatTemplate, FALLBACK_STOP};
use runanywhere::metrics::RunMetrics;
use runanywhere::registry::Registry;
use runanywhere::{Model, Prompt};

use super::args::ChatArgs;
use super::run::request_from;
use super::stream::Stream;
use super::{install_ctrl_c, INTERRUPTED};

const HELP: &str = "commands: /reset (forget the conversation), /history (show it), \
/stats (metrics of the last reply), /exit";

pub(crate) fn run(registry: &Registry, args: &ChatArgs) -> anyhow::Result<ExitCode> {
    let seed = args.sampling.seed.unwrap_or_else(super::random_seed);
    let (model, load_ms) = super::load_model(registry, &args.model, false, seed)?;
    let (template, extra_stop) = choose_template(&model, args)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "Chatting with {} on {}. {HELP}",
            args.model.model,
            model.engine_id()
        );
    }
    install_ctrl_c();

    let start: Vec<ChatMessage> = args
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s.as_str()))
        .collect();
    let mut messages = start.clone();
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
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" | "/bye" => break,
            "/help" => writeln!(stdout, "{HELP}")?,
            "/reset" => {
                messages = start.clone();
                writeln!(stdout, "(conversation reset)")?;
            }
            "/history" => {
                for m in &messages {
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
                INTERRUPTED.store(false, Ordering::SeqCst);
                messages.push(ChatMessage::new("user", line.as_str()));
                let fitted = fit_context(&model, &template, &mut messages, args);
                match fitted {
                    Ok(0) => {}
                    Ok(n) => eprintln!(
                        "note: dropped the {n} oldest message(s) to fit the {}-token context \
                         (/reset starts over; --ctx-size sets a larger context)",
                        model.info().context_length
                    ),
                    Err(e) => {
                        messages.pop();
                        failed_turns += 1;
                        eprintln!("error: {}", super::escape_controls(&format!("{e:#}")));
                        continue;
                    }
                }
                match reply(
                    &model,
                    &template,
                    &messages,
                    args,
                    seed,
                    &extra_stop,
                    &mut stdout,
                ) {
                    Ok((text, stats)) => {
                        messages.push(ChatMessage::new("assistant", text.trim()));
                        last_metrics = Some(RunMetrics::new(load_ms, &stats));
                    }
                    Err(e) => {
                        // The turn failed; the conversation goes on without it.
                        messages.pop();
                        failed_turns += 1;
                        let overflow = e
                            .downcast_ref::<runanywhere::Error>()
                            .and_then(runanywhere::Error::engine_error)
                            .is_some_and(|e| e.kind() == runanywhere::ErrorKind::ContextOverflow);
                        let hint = if overflow {
                            " (/reset starts the conversation over)"
                        } else {
                            ""
                        };
                        eprintln!("error: {}{hint}", super::escape_controls(&format!("{e:#}")));
                    }
                }
                INTERRUPTED.store(false, Ordering::SeqCst);
            }
        }
    }
    // A script (stdin not a terminal) learns from the exit code that a turn failed.
    if failed_turns > 0 && !interactive {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Drops the oldest turns until the rendered conversation leaves room for a reply (a
/// quarter of the context, or `--max-tokens` if smaller). Returns how many messages were
/// dropped; fails when the new message alone is too long.
fn fit_context(
    model: &Model,
    template: &ChatTemplate,
    messages: &mut Vec<ChatMessage>,
    args: &ChatArgs,
) -> anyhow::Result<usize> {
    let context = model.info().context_length as usize;
    if context == 0 {
        return Ok(0);
    }
    let mut room = (context / 4).max(1);
    if args.sampling.max_tokens > 0 {
        room = room.min(args.sampling.max_tokens as usize);
    }
    let mut prompt_tokens = 0;
    let fitted = drop_oldest_turns(messages, |m| -> anyhow::Result<bool> {
        let prompt = template.render(m, true)?;
        prompt_tokens = model
            .tokenize(&prompt, add_bos(model, &prompt), true)?
            .len();
        Ok(prompt_tokens + room <= context)
    })?;
    fitted.ok_or_else(|| {
        anyhow::anyhow!(
            "the message is too long: the conversation needs {prompt_tokens} tokens with it, \
             and the {context}-token context must also leave {room} for the reply; send a \
             shorter message, /reset, or use a larger --ctx-size"
        )
    })
}

/// Whether the engine should add BOS: templates usually write it themselves; add it
/// only when this one does not.
fn add_bos(model: &Model, prompt: &str) -> bool {
    let bos_text = model
        .info()
        .bos
        .into_option()
        .and_then(|id| model.token_piece(id).ok())
        .filter(|b| !b.is_empty());
    !bos_text.is_some_and(|b| prompt.as_bytes().starts_with(&b))
}

/// The template to use, and stop strings that go with it.
fn choose_template(model: &Model, args: &ChatArgs) -> anyhow::Result<(ChatTemplate, Vec<String>)> {
    let piece = |id: Option<u32>| {
        id.and_then(|id| model.token_piece(id).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let info = model.info();
    let bos = piece(info.bos.into_option());
    let eos = piece(info.eos.into_option());
    let source = match (&args.chat_template, &args.chat_template_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(
            runanywhere_formats::fs::read_regular_to_string(file)
                .with_context(|| format!("reading the chat template {}", file.display()))?,
        ),
        (None, None) => info
            .chat_template
            .clone()
            .into_option()
            .map(|s| s.into_string()),
    };
    match source {
        Some(source) => Ok((ChatTemplate::new(&source, &bos, &eos)?, Vec::new())),
        None => {
            eprintln!(
                "note: the model has no chat template; using a plain \"User:/Assistant:\" \
                 format (pass --chat-template or --chat-template-file to choose one)"
            );
            Ok((ChatTemplate::fallback(), vec![FALLBACK_STOP.to_string()]))
        }
    }
}

/// Generates the assistant's reply to `messages`, streaming it to `out`.
fn reply(
    model: &Model,
    template: &ChatTemplate,
    messages: &[ChatMessage],
    args: &ChatArgs,
    seed: u64,
    extra_stop: &[String],
    out: &mut impl Write,
) -> anyhow::Result<(String, runanywhere::GenerationStats)> {
    let prompt = template.render(messages, true)?;
    let mut request = request_from(&args.sampling, seed, Prompt::Text(prompt.as_str().into()));
    request.add_special = add_bos(model, &prompt);
    request.parse_special = true;
    request
        .stop
        .extend(extra_stop.iter().map(|s| s.as_str().into()));
    let mut stream = Stream::new(&mut *out, true);
    let stats = model.generate(request, |id, piece| stream.on_token(id, piece))?;
    if let Some(e) = stream.write_error.take() {
        return Err(e).context("writing the reply");
    }
    let text = std::mem::take(&mut stream.text);
    writeln!(out)?;
    Ok((text, stats))
}
