//! [`CancelToken`]: a per-request flag that stops a generation (or a wait for a busy
//! model) from another thread: Ctrl-C in the CLI, a closed connection in a server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A cheap, cloneable cancellation flag. Clones share the flag; a request checks it
/// between tokens (through the token sink) and while it waits for a busy model.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks every holder to stop. Returns whether it was already cancelled.
    pub fn cancel(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    /// Whether [`cancel`](CancelToken::cancel) was called (since the last reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Clears the flag, so the token can serve the next request (a chat's next turn).
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_flag() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        assert!(!a.cancel());
        assert!(b.is_cancelled());
        assert!(b.cancel(), "second cancel reports the first");
        b.reset();
        assert!(!a.is_cancelled());
    }
}
