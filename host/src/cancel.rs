//! [`CancelToken`]: a per-request flag that stops a generation (or a wait for a busy
//! model) from another thread: Ctrl-C in the CLI, a closed connection in a server.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A cheap, cloneable cancellation flag. Clones share the flag; a request checks it
/// between tokens (through the token sink) and while it waits for a busy model.
///
/// It also remembers when an engine last asked about it (through the cancel probe,
/// which the kit's loops call between prefill chunks): a sign the engine is making
/// progress before its first token, which a worker's hang detection relies on.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    cancelled: AtomicBool,
    /// Milliseconds since [`epoch`] at the engine's last question, plus one (0: never).
    asked: AtomicU64,
}

/// The process-wide origin of [`CancelToken`]'s timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks every holder to stop. Returns whether it was already cancelled.
    pub fn cancel(&self) -> bool {
        self.0.cancelled.swap(true, Ordering::SeqCst)
    }

    /// Whether [`cancel`](CancelToken::cancel) was called (since the last reset).
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    /// Records that the engine asked whether the generation was cancelled.
    pub(crate) fn note_asked(&self) {
        let ms = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.0.asked.store(ms + 1, Ordering::Relaxed);
    }

    /// How long ago the engine last asked about this token (`None`: it never did).
    pub fn asked_ago(&self) -> Option<Duration> {
        match self.0.asked.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                epoch()
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }

    /// Clears the flag, so the token can serve the next request (a chat's next turn).
    pub fn reset(&self) {
        self.0.cancelled.store(false, Ordering::SeqCst);
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
