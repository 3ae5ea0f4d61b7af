//! Chat templates: rendering a conversation into a prompt, shared by every engine.
//!
//! Models carry their prompt format as a Jinja template (GGUF
//! `tokenizer.chat_template`, `tokenizer_config.json`'s `chat_template`). Rendering it on
//! the host, with minijinja and Python-compatible string methods, gives every engine the
//! same behaviour for the same model instead of one renderer per framework.

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

/// A template that fails to compile or render.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct ChatError(String);

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
            .map_err(|e| ChatError(describe(&e)))?;
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
            .map_err(|e| ChatError(describe(&e)))?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| ChatError(describe(&e)))
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
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
