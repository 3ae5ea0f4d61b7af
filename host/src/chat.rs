//! Chat templates: rendering a conversation into a prompt, shared by every engine.
//!
//! Models carry their prompt format as a Jinja template (GGUF
//! `tokenizer.chat_template`, `tokenizer_config.json`'s `chat_template`). Rendering it on
//! the host, with minijinja and Python-compatible string methods, gives every engine the
//! same behaviour for the same model instead of one renderer per framework.
//!
//! A template is code from the model file, so it runs under limits: at most
//! [`RENDER_FUEL`] template instructions and [`MAX_PROMPT_BYTES`] of output per render.
//! A template that loops without end or writes gigabytes fails with a
//! [`ChatError::TooMuchWork`] / [`ChatError::TooLong`] in well under a second, instead
//! of hanging the chat or exhausting memory.

use minijinja::{context, Environment, Error as JinjaError, ErrorKind as JinjaErrorKind};
use serde::Serialize;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.into(),
        }
    }
}

/// Template instructions one render may execute. Real templates use a few dozen per
/// message (a 1,000-message conversation takes well under 100,000), and 5 million run in
/// about half a second.
pub const RENDER_FUEL: u64 = 5_000_000;

/// Most bytes a rendered prompt may have: far beyond any context window (16 MiB is
/// about 4 million tokens), yet small enough that a runaway template cannot eat memory.
pub const MAX_PROMPT_BYTES: usize = 16 << 20;

/// A template that fails to compile or render.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The template is not valid Jinja.
    #[error("chat template does not compile: {0}")]
    Compile(String),
    /// Rendering failed (an undefined value, `raise_exception`, a type error, ...).
    #[error("chat template failed to render: {0}")]
    Render(String),
    /// Rendering took more than [`RENDER_FUEL`] instructions.
    #[error(
        "chat template ran more than {fuel} instructions without finishing (a loop that is \
         too large or never ends); fix the template or choose another one"
    )]
    TooMuchWork {
        /// The instruction budget.
        fuel: u64,
    },
    /// Rendering produced more than [`MAX_PROMPT_BYTES`].
    #[error(
        "chat template wrote more than {limit} bytes of prompt; fix the template or choose \
         another one"
    )]
    TooLong {
        /// The byte limit.
        limit: usize,
    },
}

/// The plain format used when a model has no template: `User:` / `Assistant:` lines.
pub const FALLBACK_TEMPLATE: &str = "{% for m in messages %}\
{% if m.role == 'system' %}{{ m.content }}\n\n\
{% elif m.role == 'user' %}User: {{ m.content }}\n\
{% else %}Assistant: {{ m.content }}\n{% endif %}\
{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

/// Stop string that goes with [`FALLBACK_TEMPLATE`]: the model starting the user's turn.
pub const FALLBACK_STOP: &str = "\nUser:";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token` / `eos_token` are the texts templates may insert.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, JinjaError> {
                Err(JinjaError::new(JinjaErrorKind::InvalidOperation, msg))
            },
        );
        // Templates (Llama 3.x) print today's date, as transformers renders them.
        env.add_function("strftime_now", |fmt: String| strftime(&fmt, today()));
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ChatError::Compile(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The fallback template.
    pub fn fallback() -> Self {
        // The fallback is a constant known to compile (covered by tests).
        ChatTemplate::new(FALLBACK_TEMPLATE, "", "").unwrap_or_else(|e| panic!("{e}"))
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the
    /// assistant's reply starts.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| ChatError::Render(describe(&e)))?;
        let mut out = Capped {
            bytes: Vec::new(),
            limit: MAX_PROMPT_BYTES,
        };
        let rendered = template.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.bytes)
                .map_err(|e| ChatError::Render(format!("the output is not UTF-8: {e}"))),
            Err(e) if e.kind() == JinjaErrorKind::OutOfFuel => {
                Err(ChatError::TooMuchWork { fuel: RENDER_FUEL })
            }
            Err(_) if out.bytes.len() >= out.limit => Err(ChatError::TooLong { limit: out.limit }),
            Err(e) => Err(ChatError::Render(describe(&e))),
        }
    }
}

/// A byte buffer that refuses to grow past `limit`.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.bytes
                .extend_from_slice(&buf[..self.limit - self.bytes.len()]);
            return Err(std::io::Error::other("the rendered prompt is too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Drops the oldest turns of a conversation until `fits` accepts it, as chat front ends
/// do when a conversation outgrows the context window. System messages and the last
/// message (the user's new turn) are always kept; the earliest other message goes
/// first. Returns how many messages were dropped, or `None` (and `messages` as they
/// were) when even the shortest conversation does not fit: the last message alone is
/// too long.
pub fn drop_oldest_turns<E>(
    messages: &mut Vec<ChatMessage>,
    mut fits: impl FnMut(&[ChatMessage]) -> Result<bool, E>,
) -> Result<Option<usize>, E> {
    let mut trial = messages.clone();
    let mut dropped = 0;
    loop {
        if fits(&trial)? {
            *messages = trial;
            return Ok(Some(dropped));
        }
        let last = trial.len().saturating_sub(1);
        let Some(oldest) = trial[..last].iter().position(|m| m.role != "system") else {
            return Ok(None);
        };
        trial.remove(oldest);
        dropped += 1;
    }
}

/// Today's date (UTC) as (year, month 1-12, day 1-31).
fn today() -> (i64, u32, u32) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0);
    civil_from_days(days)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The date directives chat templates use: `%d %m %Y %y %b %B %e %%`; others are kept.
fn strftime(fmt: &str, (year, month, day): (i64, u32, u32)) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let name = MONTHS[(month.clamp(1, 12) - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn describe(e: &JinjaError) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ]
    }

    #[test]
    fn chatml_renders_like_the_reference_format() {
        let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let t = ChatTemplate::new(chatml, "", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&convo(), true).unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_bos_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}[{{ m.content.strip().upper() }}]{% endfor %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        let user = [ChatMessage::new("user", "  hi  ")];
        assert_eq!(t.render(&user, false).unwrap(), "<s>[HI]");
        let err = t.render(&convo(), false).unwrap_err();
        assert!(err.to_string().contains("no system"), "{err}");
    }

    #[test]
    fn dates_render_like_python_strftime() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_930), (2024, 7, 26));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(strftime("%d %b %Y", (2024, 7, 26)), "26 Jul 2024");
        assert_eq!(
            strftime("%Y-%m-%d|%B|%y|%e|%%|%Q", (2026, 1, 5)),
            "2026-01-05|January|26| 5|%|%Q"
        );
    }

    #[test]
    fn fallback_format() {
        let t = ChatTemplate::fallback();
        assert_eq!(
            t.render(&convo(), true).unwrap(),
            "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:"
        );
        assert!(matches!(
            ChatTemplate::new("{% for %}", "", ""),
            Err(ChatError::Compile(_))
        ));
    }

    #[test]
    fn the_oldest_turns_go_first_and_system_and_last_messages_stay() {
        let mut messages = convo();
        // Fits once at most three messages are left.
        let fits = |m: &[ChatMessage]| Ok::<_, ()>(m.len() <= 2);
        assert_eq!(drop_oldest_turns(&mut messages, fits), Ok(Some(2)));
        assert_eq!(
            messages,
            [
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Bye")
            ]
        );
        let mut messages = convo();
        assert_eq!(
            drop_oldest_turns(&mut messages, |_| Ok::<_, ()>(false)),
            Ok(None)
        );
        assert_eq!(messages, convo(), "left as they were");
        let mut messages = convo();
        assert_eq!(
            drop_oldest_turns(&mut messages, |_| Ok::<_, ()>(true)),
            Ok(Some(0))
        );
        assert_eq!(messages, convo());
    }

    #[test]
    fn runaway_templates_are_stopped_quickly() {
        let start = std::time::Instant::now();
        let loops = ChatTemplate::new(
            "{% for a in range(10000) %}{% for b in range(10000) %}{% for c in range(10000) %}\
             {% endfor %}{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert!(matches!(
            loops.render(&convo(), true),
            Err(ChatError::TooMuchWork { fuel: RENDER_FUEL })
        ));
        let long = ChatTemplate::new(
            "{% for a in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let err = long.render(&convo(), true).unwrap_err();
        assert!(
            matches!(
                err,
                ChatError::TooLong {
                    limit: MAX_PROMPT_BYTES
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("wrote more than 16777216 bytes"),
            "{err}"
        );
        // Generous for a debug build on a loaded machine; about 0.5 s in release.
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }
}
