//! Turning generated tokens into text pieces: UTF-8 buffering and stop strings.
//!
//! Tokens carry bytes, and a character may be split across tokens; a stop string may
//! be split too, and must never reach the caller. [`TextStreamer`] holds back a token
//! until the text up to its end is known to be whole UTF-8 and not the start of a stop
//! string, then hands it to the sink with the text that became safe. So:
//!
//! * every generated token reaches the sink exactly once, in order;
//! * pieces are valid UTF-8, and their concatenation is the output text;
//! * a stop string (and whatever follows it) is cut off: the tokens that formed it are
//!   still reported, with the part of their text before the stop string (often empty).

use std::collections::VecDeque;

use crate::abi::{SinkControl, StopReason};
use crate::ext::TokenLogprob;

/// A token's log-probability and the most likely tokens at its position, carried with
/// the token until it is emitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// `ln p` of the token.
    pub logprob: f32,
    /// The most likely tokens, best first.
    pub top: Vec<TokenLogprob>,
}

/// Why [`TextStreamer::push`] asks the caller to stop.
pub type EmitStop = StopReason;

/// Buffers tokens until their text is safe to emit; see the module docs.
pub struct TextStreamer<'s> {
    stops: Vec<Vec<u8>>,
    /// Bytes not yet handed to the sink.
    buf: Vec<u8>,
    /// Held tokens with the end offset of their bytes in `buf`, and their scores.
    pending: VecDeque<(u32, usize, Option<Score>)>,
    sink: &'s mut dyn crate::sdk::Sink,
    emitted_tokens: u32,
}

impl<'s> TextStreamer<'s> {
    /// An emitter feeding `sink`, cutting output at any of `stops` (empty ones ignored).
    pub fn new<S: AsRef<str>>(stops: &[S], sink: &'s mut dyn crate::sdk::Sink) -> Self {
        TextStreamer {
            stops: stops
                .iter()
                .map(|s| s.as_ref().as_bytes().to_vec())
                .filter(|s| !s.is_empty())
                .collect(),
            buf: Vec::new(),
            pending: VecDeque::new(),
            sink,
            emitted_tokens: 0,
        }
    }

    /// How many tokens have been handed to the sink.
    pub fn emitted_tokens(&self) -> u32 {
        self.emitted_tokens
    }

    /// Whether the sink's host asked to stop (see [`crate::sdk::Sink::cancelled`]).
    pub fn sink_cancelled(&self) -> bool {
        self.sink.cancelled()
    }

    /// Adds a generated token and its bytes. Returns `Some(reason)` when generation
    /// must stop: a stop string was completed, or the sink asked to stop.
    pub fn push(&mut self, id: u32, bytes: &[u8]) -> Option<EmitStop> {
        self.push_scored(id, bytes, None)
    }

    /// [`TextStreamer::push`] for a token with its [`Score`], which reaches the sink
    /// with it ([`crate::sdk::Sink::scored_token`]).
    pub fn push_scored(&mut self, id: u32, bytes: &[u8], score: Option<Score>) -> Option<EmitStop> {
        self.buf.extend_from_slice(bytes);
        self.pending.push_back((id, self.buf.len(), score));

        if let Some(at) = self.find_stop() {
            self.release_all(at);
            return Some(StopReason::StopString);
        }
        let safe = self.safe_len();
        if self.release(safe) == SinkControl::Stop {
            return Some(StopReason::Cancelled);
        }
        None
    }

    /// Hands every held token to the sink (the generation is over for another reason:
    /// max tokens, end of generation, full context). Incomplete UTF-8 at the very end
    /// becomes U+FFFD.
    pub fn finish(&mut self) {
        let len = self.buf.len();
        self.release_all(len);
    }

    /// Earliest start of a complete stop string in the buffer.
    fn find_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| find(&self.buf, s)).min()
    }

    /// Length of the buffer prefix that is whole UTF-8 and cannot begin a stop string.
    fn safe_len(&self) -> usize {
        let whole = whole_utf8_len(&self.buf);
        let held = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.buf[..whole], s))
            .max()
            .unwrap_or(0);
        whole - held
    }

    /// Releases held tokens whose bytes all lie within `buf[..safe]`.
    fn release(&mut self, safe: usize) -> SinkControl {
        let mut cut = 0;
        while let Some(&(_, end, _)) = self.pending.front() {
            if end > safe {
                break;
            }
            let Some((id, _, score)) = self.pending.pop_front() else {
                break;
            };
            let piece_end = char_floor(&self.buf[..safe], end);
            if self.emit(id, cut, piece_end, score) == SinkControl::Stop {
                self.drain(piece_end);
                return SinkControl::Stop;
            }
            cut = piece_end;
        }
        self.drain(cut);
        SinkControl::Continue
    }

    /// Releases every held token, with text cut at `limit`.
    fn release_all(&mut self, limit: usize) {
        let mut cut = 0;
        while let Some((id, end, score)) = self.pending.pop_front() {
            let piece_end = if self.pending.is_empty() {
                limit
            } else {
                char_floor(&self.buf[..limit], end.min(limit))
            }
            .max(cut);
            if self.emit(id, cut, piece_end, score) == SinkControl::Stop {
                break;
            }
            cut = piece_end;
        }
        self.pending.clear();
        self.buf.clear();
    }

    fn emit(&mut self, id: u32, from: usize, to: usize, score: Option<Score>) -> SinkControl {
        self.emitted_tokens += 1;
        let piece = String::from_utf8_lossy(&self.buf[from..to]);
        match score {
            Some(s) => self.sink.scored_token(id, &piece, s.logprob, &s.top),
            None => self.sink.token(id, &piece),
        }
    }

    fn drain(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.buf.drain(..n);
        for (_, end, _) in self.pending.iter_mut() {
            *end -= n;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn longest_suffix_prefix(text: &[u8], stop: &[u8]) -> usize {
    let max = (stop.len() - 1).min(text.len());
    (1..=max)
        .rev()
        .find(|&k| text.ends_with(&stop[..k]))
        .unwrap_or(0)
}

/// Length of the prefix of `bytes` that does not end inside an incomplete character.
/// Invalid bytes in the middle count as whole (they are emitted as U+FFFD).
fn whole_utf8_len(bytes: &[u8]) -> usize {
    let mut pos = 0;
    loop {
        match std::str::from_utf8(&bytes[pos..]) {
            Ok(_) => return bytes.len(),
            Err(e) => {
                pos += e.valid_up_to();
                match e.error_len() {
                    Some(n) => pos += n,
                    None => return pos,
                }
            }
        }
    }
}

/// The largest character boundary ≤ `at` in `bytes` (`at` itself if it is one).
fn char_floor(bytes: &[u8], at: usize) -> usize {
    let mut p = at.min(bytes.len());
    let mut steps = 0;
    while p > 0 && p < bytes.len() && (bytes[p] & 0xC0) == 0x80 && steps < 3 {
        p -= 1;
        steps += 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `tokens` and returns the (id, piece) pairs the sink saw and the stop.
    fn run(
        stops: &[&str],
        tokens: &[(u32, &[u8])],
        stop_after: Option<usize>,
    ) -> (Vec<(u32, String)>, Option<StopReason>) {
        let mut seen = Vec::new();
        let mut sink = |id: u32, piece: &str| {
            seen.push((id, piece.to_string()));
            if stop_after == Some(seen.len()) {
                SinkControl::Stop
            } else {
                SinkControl::Continue
            }
        };
        let mut e = TextStreamer::new(stops, &mut sink);
        let mut stop = None;
        for (id, bytes) in tokens {
            stop = e.push(*id, bytes);
            if stop.is_some() {
                break;
            }
        }
        if stop.is_none() {
            e.finish();
        }
        (seen, stop)
    }

    #[test]
    fn plain_tokens_pass_straight_through() {
        let (seen, stop) = run(&[], &[(1, b"He"), (2, b"llo")], None);
        assert_eq!(seen, vec![(1, "He".into()), (2, "llo".into())]);
        assert_eq!(stop, None);
    }

    #[test]
    fn a_character_split_across_tokens_arrives_whole() {
        // "é" = C3 A9, "€" = E2 82 AC split 1+2.
        let (seen, _) = run(
            &[],
            &[
                (1, b"caf\xC3"),
                (2, b"\xA9 "),
                (3, b"\xE2"),
                (4, b"\x82\xAC!"),
            ],
            None,
        );
        let text: String = seen.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(text, "café €!");
        assert_eq!(seen[0], (1, "caf".into()));
        assert_eq!(seen[1], (2, "é ".into()));
        assert_eq!(seen[2], (3, "".into()));
        assert_eq!(seen[3], (4, "€!".into()));
    }

    #[test]
    fn stop_string_across_tokens_is_not_emitted() {
        let (seen, stop) = run(
            &["\nUser:"],
            &[
                (1, b"Hi there"),
                (2, b"\nUs"),
                (3, b"er: more"),
                (4, b"never"),
            ],
            None,
        );
        assert_eq!(stop, Some(StopReason::StopString));
        let ids: Vec<u32> = seen.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let text: String = seen.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(text, "Hi there");
    }

    #[test]
    fn held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() {
        let (seen, stop) = run(&["STOP"], &[(1, b"ab ST"), (2, b"OP")], None);
        assert_eq!(stop, Some(StopReason::StopString));
        assert_eq!(seen, vec![(1, "ab ".into()), (2, "".into())]);

        let (seen, stop) = run(&["STOP"], &[(1, b"ab ST"), (2, b"AY")], None);
        assert_eq!(stop, None);
        assert_eq!(seen, vec![(1, "ab ST".into()), (2, "AY".into())]);
    }

    #[test]
    fn held_text_is_flushed_at_finish() {
        let (seen, stop) = run(&["STOP"], &[(1, b"the end ST")], None);
        assert_eq!(stop, None);
        assert_eq!(seen, vec![(1, "the end ST".into())]);
        // Incomplete UTF-8 at the very end becomes U+FFFD.
        let (seen, _) = run(&[], &[(1, b"x\xE2\x82")], None);
        assert_eq!(seen, vec![(1, "x\u{FFFD}".into())]);
    }

    #[test]
    fn sink_stop_cancels_immediately() {
        let (seen, stop) = run(&[], &[(1, b"a"), (2, b"b"), (3, b"c")], Some(2));
        assert_eq!(stop, Some(StopReason::Cancelled));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn invalid_bytes_in_the_middle_do_not_stall_the_stream() {
        let (seen, _) = run(&[], &[(1, b"a\xFFb"), (2, b"c")], None);
        assert_eq!(seen, vec![(1, "a\u{FFFD}b".into()), (2, "c".into())]);
    }
}
