//! A running [`Job`] as a stream of steps, which each API renders in its own framing
//! (OpenAI: server-sent events; Ollama: one JSON object per line). The stream owns the
//! job: when the client disconnects, the response body (and with it the job) is dropped
//! and the generation is cancelled.

use futures_util::Stream;
use runanywhere::{GenerationStats, StopReason};

use crate::error::ApiError;
use crate::jobs::{ended_without_result, Event, Job, Score};

/// One step of a generation as a client sees it.
#[derive(Debug)]
pub enum Step {
    /// A generated token.
    Token {
        /// Its id.
        id: u32,
        /// Its text (whole UTF-8, never part of a stop string).
        piece: String,
        /// Its log-probability, when asked for.
        score: Option<Score>,
    },
    /// The generation ended normally.
    Finished(GenerationStats),
    /// It failed (the stream ends after this step).
    Failed(ApiError),
}

/// The steps of `job`, ending with [`Step::Finished`] or [`Step::Failed`].
pub fn steps(job: Job) -> impl Stream<Item = Step> + Send {
    futures_util::stream::unfold(Some(job), |job| async move {
        let mut job = job?;
        let step = match job.events.recv().await {
            Some(Event::Token(id, piece, score)) => {
                return Some((Step::Token { id, piece, score }, Some(job)))
            }
            Some(Event::Done(Ok(stats)))
                if job.timed_out() && stats.stop_reason() == StopReason::Cancelled =>
            {
                Step::Failed(job.timeout_error())
            }
            Some(Event::Done(Err(_))) if job.timed_out() => Step::Failed(job.timeout_error()),
            Some(Event::Done(Ok(stats))) => Step::Finished(stats),
            Some(Event::Done(Err(e))) => Step::Failed(e.into()),
            None => Step::Failed(ended_without_result()),
        };
        Some((step, None))
    })
}

/// A server-sent-events response: the `first` payloads, then `events`, then OpenAI's
/// `data: [DONE]`, with keep-alive comments while a generation waits.
pub fn sse(
    first: Vec<String>,
    events: impl Stream<Item = String> + Send + 'static,
) -> axum::response::Response {
    use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
    use axum::response::IntoResponse;
    use futures_util::StreamExt;
    let body = futures_util::stream::iter(first)
        .chain(events)
        .chain(futures_util::stream::iter(["[DONE]".to_string()]))
        .map(|data| Ok::<_, std::convert::Infallible>(SseEvent::default().data(data)));
    Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// OpenAI's `finish_reason` for a stop reason.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

/// A JSON object sent once per token with one string slot (the piece): serialized once,
/// so each frame is a copy of the head, the piece as a JSON string, and the tail —
/// building and serializing a `Value` per token would cost the engine a few percent of
/// its speed on small models.
#[derive(Debug, Clone)]
pub struct Frame {
    head: String,
    tail: String,
}

impl Frame {
    /// The placeholder to put where the piece goes.
    pub const SLOT: &'static str = "\u{1}runanywhere-piece\u{1}";

    /// The frame of `template`, which holds [`Frame::SLOT`] once as a string value.
    pub fn new(template: &serde_json::Value) -> Frame {
        let text = template.to_string();
        let slot = serde_json::Value::from(Frame::SLOT).to_string();
        match text.split_once(&slot) {
            Some((head, tail)) => Frame {
                head: head.to_string(),
                tail: tail.to_string(),
            },
            None => Frame {
                head: text,
                tail: String::new(),
            },
        }
    }

    /// The frame for `piece`.
    pub fn render(&self, piece: &str) -> String {
        let piece = serde_json::Value::from(piece).to_string();
        let mut out = String::with_capacity(self.head.len() + piece.len() + self.tail.len());
        out.push_str(&self.head);
        out.push_str(&piece);
        out.push_str(&self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_template_with_the_piece_in_its_slot() {
        let template = serde_json::json!({"a": 1, "choices": [{"text": Frame::SLOT, "x": null}]});
        let frame = Frame::new(&template);
        let piece = "quote \" and\nnewline é";
        let rendered: serde_json::Value = serde_json::from_str(&frame.render(piece)).unwrap();
        assert_eq!(rendered["choices"][0]["text"], piece);
        assert_eq!(rendered["a"], 1);
    }
}
