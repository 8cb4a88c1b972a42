//! Reconnect back-off: 1 s, doubling up to a maximum, back to 1 s after a connection
//! that held. Shared by every client that keeps a link up (devices, the agent, a
//! broker's parent links).

use std::time::Duration;

const FIRST: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// `max` is at least the first step (1 s).
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: FIRST,
            max: max.max(FIRST),
        }
    }

    /// The wait before the next attempt; each call doubles the one after it.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// A connection was up for `held`: if that was longer than the longest wait, the
    /// far side is healthy again and the next failure starts over at 1 s.
    pub fn connected_for(&mut self, held: Duration) {
        if held >= self.max {
            self.next = FIRST;
        }
    }

    /// Start over at 1 s.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let steps: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(steps, [1, 2, 4, 5, 5]);
        b.connected_for(Duration::from_secs(1));
        assert_eq!(b.next_delay().as_secs(), 5);
        b.connected_for(Duration::from_secs(6));
        assert_eq!(b.next_delay().as_secs(), 1);
        b.reset();
        assert_eq!(b.next_delay().as_secs(), 1);
        assert_eq!(Backoff::new(Duration::ZERO).next_delay().as_secs(), 1);
    }
}
