//! The token sink of the generating commands: collects ids and text, streams pieces to
//! a writer as they arrive, and asks the engine to stop when the output is closed
//! (Ctrl-C reaches the engine through the request's cancel token).

use std::io::Write;

use runanywhere::SinkControl;

/// Collects a generation and (optionally) streams it to `out`.
pub(crate) struct Stream<W: Write> {
    out: W,
    echo: bool,
    /// Generated ids, in order.
    pub(crate) ids: Vec<u32>,
    /// Generated text.
    pub(crate) text: String,
    /// The write that failed (a closed pipe, as in `| head`), which ended the generation.
    pub(crate) write_error: Option<std::io::Error>,
}

impl<W: Write> Stream<W> {
    /// A sink writing to `out` when `echo` is set.
    pub(crate) fn new(out: W, echo: bool) -> Self {
        Stream {
            out,
            echo,
            ids: Vec::new(),
            text: String::new(),
            write_error: None,
        }
    }

    /// The sink callback.
    pub(crate) fn on_token(&mut self, id: u32, piece: &str) -> SinkControl {
        self.ids.push(id);
        self.text.push_str(piece);
        if self.echo && self.write_error.is_none() {
            if let Err(e) = self
                .out
                .write_all(piece.as_bytes())
                .and_then(|_| self.out.flush())
            {
                self.write_error = Some(e);
                return SinkControl::Stop;
            }
        }
        SinkControl::Continue
    }

    /// The writer back.
    pub(crate) fn into_out(self) -> W {
        self.out
    }
}
