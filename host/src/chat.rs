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
        // Templates (Llama 3.x) print today's date; fixed output keeps prompts reproducible.
        env.add_function("strftime_now", |_fmt: String| "26 Jul 2024".to_string());
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
    fn fallback_format() {
        let t = ChatTemplate::fallback();
        assert_eq!(
            t.render(&convo(), true).unwrap(),
            "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:"
        );
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
