//! [`ChatSession`]: a conversation with one model, turned into generation requests.
//!
//! It owns what every chat front end needs to get right once: the template choice (the
//! caller's, the model's, or a plain `User:/Assistant:` fallback with the stop string
//! that goes with it), BOS de-duplication (templates usually write BOS themselves), the
//! oldest turns dropped when the conversation outgrows the context, and the token
//! history of the last exchange.
//!
//! A turn continues the conversation *as tokens*: when the new rendered prompt starts with
//! the text of the last exchange (its prompt and the reply as generated), the request is
//! the last exchange's ids followed by the new text's — not a re-tokenization of the
//! whole conversation, which may split the reply differently than it was generated. So
//! the prompt is a token-for-token extension of what the engine last ran, and an engine
//! with a prompt cache (llama.cpp) prefills only the new turn.

use runanywhere_plugin_api::{GenerateRequest, GenerationStats, Prompt, StopReason};

use crate::chat::{drop_oldest_turns, ChatMessage, ChatTemplate, FALLBACK_STOP};
use crate::engine::Model;
use crate::error::Error;
use crate::options::GenerateOptions;

/// A conversation and how to render it for its model.
#[derive(Debug)]
pub struct ChatSession {
    template: ChatTemplate,
    /// Stop strings the template needs (the fallback's `\nUser:`).
    template_stop: Vec<String>,
    fallback: bool,
    /// The system messages every reset keeps.
    start: Vec<ChatMessage>,
    messages: Vec<ChatMessage>,
    /// The text of the model's BOS token, when it has one.
    bos_text: Option<Vec<u8>>,
    context_length: usize,
    /// Prompt and generated ids of the last exchange.
    history: Vec<u32>,
    /// The text of `history`: the last prompt and the reply as generated.
    history_text: String,
}

/// A turn ready to generate.
#[derive(Debug)]
pub struct PreparedTurn {
    /// The request for the model.
    pub request: GenerateRequest,
    /// How many of the oldest messages were dropped to make it fit the context.
    pub dropped: usize,
}

impl ChatSession {
    /// A session with `model`, rendered with `template` (Jinja source) when given, else
    /// the model's own template, else the fallback; `system` starts the conversation.
    pub fn new(model: &Model, template: Option<&str>, system: Option<&str>) -> Result<Self, Error> {
        let piece = |id: Option<u32>| {
            id.and_then(|id| model.token_piece(id).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let info = model.info();
        let (bos, eos) = (piece(info.bos.into_option()), piece(info.eos.into_option()));
        let source = template.map(str::to_string).or_else(|| {
            info.chat_template
                .clone()
                .into_option()
                .map(|s| s.into_string())
        });
        let (template, template_stop, fallback) = match source {
            Some(source) => (ChatTemplate::new(&source, &bos, &eos)?, Vec::new(), false),
            None => (
                ChatTemplate::fallback(),
                vec![FALLBACK_STOP.to_string()],
                true,
            ),
        };
        let start: Vec<ChatMessage> = system
            .map(|s| ChatMessage::new("system", s))
            .into_iter()
            .collect();
        Ok(ChatSession {
            template,
            template_stop,
            fallback,
            messages: start.clone(),
            start,
            bos_text: Some(bos.into_bytes()).filter(|b| !b.is_empty()),
            context_length: info.context_length as usize,
            history: Vec::new(),
            history_text: String::new(),
        })
    }

    /// Whether the model has no template and the plain fallback is used.
    pub fn uses_fallback(&self) -> bool {
        self.fallback
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// Prompt and generated ids of the last completed exchange.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Forgets the conversation (the system message stays).
    pub fn reset(&mut self) {
        self.messages = self.start.clone();
        self.history.clear();
        self.history_text.clear();
    }

    /// Adds the user's message and builds the request for the reply, dropping the
    /// oldest messages if the conversation would not leave room for a reply (a quarter
    /// of the context, or `max_tokens` if smaller). On error the message is not kept.
    pub fn prepare(
        &mut self,
        model: &Model,
        user: &str,
        options: &GenerateOptions,
        seed: u64,
    ) -> Result<PreparedTurn, Error> {
        self.messages.push(ChatMessage::new("user", user));
        let (dropped, prompt) = match self.fit(model, options.max_tokens) {
            Ok(fitted) => fitted,
            Err(e) => {
                self.messages.pop();
                return Err(e);
            }
        };
        let mut turn = self.turn(&prompt, options, seed, dropped);
        // Continue the last exchange's tokens when the new prompt extends its text.
        if let Some(rest) = prompt
            .strip_prefix(self.history_text.as_str())
            .filter(|_| !self.history_text.is_empty())
        {
            match model.tokenize(rest, false, true) {
                Ok(new) => {
                    let mut ids = self.history.clone();
                    ids.extend(new);
                    turn.request.prompt = Prompt::Ids(ids.into());
                }
                Err(e) => {
                    self.messages.pop();
                    return Err(e);
                }
            }
        }
        Ok(turn)
    }

    /// Builds the request for the reply to a whole conversation given at once (what a
    /// stateless API such as OpenAI's chat completions sends on every call): the
    /// session's messages become `messages` (after its system messages, unless
    /// `messages` has its own), fitted to the context as in [`ChatSession::prepare`].
    pub fn prepare_conversation(
        &mut self,
        model: &Model,
        messages: &[ChatMessage],
        options: &GenerateOptions,
        seed: u64,
    ) -> Result<PreparedTurn, Error> {
        if messages.is_empty() {
            return Err(Error::InvalidRequest(
                "the conversation has no messages".into(),
            ));
        }
        let has_system = messages.iter().any(|m| m.role == "system");
        self.messages = if has_system {
            Vec::new()
        } else {
            self.start.clone()
        };
        self.messages.extend_from_slice(messages);
        self.history.clear();
        self.history_text.clear();
        let (dropped, prompt) = self.fit(model, options.max_tokens)?;
        Ok(self.turn(&prompt, options, seed, dropped))
    }

    /// The request for a rendered, fitted `prompt`.
    fn turn(
        &self,
        prompt: &str,
        options: &GenerateOptions,
        seed: u64,
        dropped: usize,
    ) -> PreparedTurn {
        let mut request = options.request(Prompt::Text(prompt.into()), seed);
        request.add_special = adds_bos(self.bos_text.as_deref(), prompt);
        request.parse_special = true;
        request
            .stop
            .extend(self.template_stop.iter().map(|s| s.as_str().into()));
        PreparedTurn { request, dropped }
    }

    /// Records the reply to the last prepared turn.
    /// `reply` is the text as generated (the pieces streamed), `generated` its ids.
    pub fn commit(&mut self, reply: &str, stats: &GenerationStats, generated: &[u32]) {
        self.messages
            .push(ChatMessage::new("assistant", reply.trim()));
        self.history = stats.prompt_ids.to_vec();
        self.history.extend_from_slice(generated);
        // A reply cut at a stop string (or cancelled) has ids past its text: the next
        // turn is tokenized from text.
        if !matches!(
            stats.stop_reason(),
            StopReason::EndOfGeneration | StopReason::MaxTokens
        ) {
            self.history_text.clear();
            return;
        }
        // The text of those ids: the prompt as rendered for them, then the reply.
        self.history_text = match self
            .template
            .render(&self.messages[..self.messages.len() - 1], true)
        {
            Ok(prompt) => prompt + reply,
            Err(_) => {
                self.history.clear();
                String::new()
            }
        };
    }

    /// Forgets the last prepared turn (its generation failed).
    pub fn abandon(&mut self) {
        if self.messages.last().is_some_and(|m| m.role == "user") {
            self.messages.pop();
        }
    }

    /// Drops the oldest messages until the rendered conversation leaves room for the
    /// reply; returns how many were dropped and the prompt that fits (rendered once).
    fn fit(&mut self, model: &Model, max_tokens: u32) -> Result<(usize, String), Error> {
        let context = self.context_length;
        if context == 0 {
            return Ok((0, self.template.render(&self.messages, true)?));
        }
        let mut room = (context / 4).max(1);
        if max_tokens > 0 {
            room = room.min(max_tokens as usize);
        }
        let mut tokens = 0;
        let mut fitting = String::new();
        let (template, bos_text) = (&self.template, self.bos_text.as_deref());
        let fitted = drop_oldest_turns(&mut self.messages, |m| -> Result<bool, Error> {
            let prompt = template.render(m, true)?;
            tokens = model
                .tokenize(&prompt, adds_bos(bos_text, &prompt), true)?
                .len();
            let fits = tokens + room <= context;
            if fits {
                fitting = prompt;
            }
            Ok(fits)
        })?;
        let dropped = fitted.ok_or(Error::ConversationTooLong {
            tokens,
            context,
            room,
        })?;
        Ok((dropped, fitting))
    }
}

/// Whether the engine should add BOS to `prompt`: only when the template did not write
/// the model's BOS text (`bos_text`) itself.
fn adds_bos(bos_text: Option<&[u8]>, prompt: &str) -> bool {
    !bos_text.is_some_and(|b| prompt.as_bytes().starts_with(b))
}
