//! Reconnect back-off, shared by every client that keeps a link up (devices, the agent,
//! a broker's parent links).
//!
//! Two regimes. Right after the far side was last seen (a link that was up and dropped)
//! the likeliest cause is a restart, so for [`FAST_WINDOW`] attempts come every
//! [`FAST`] or so: a parent that comes back after a 20 s outage is found within about a
//! second. After that window, or when the far side was never reached, the wait doubles
//! from 1 s up to the configured maximum. Every wait is jittered (±50 % in the fast
//! regime, ±25 % after), so a hundred site brokers that lost the same parent at the
//! same instant do not all knock at the same instant: their attempts spread over the
//! interval, and so does the login storm when the parent returns.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// The first step of the slow regime.
const FIRST: Duration = Duration::from_secs(1);
/// The mean wait in the fast regime.
pub const FAST: Duration = Duration::from_millis(500);
/// How long after the far side was last seen the fast regime lasts.
pub const FAST_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    /// When the far side was last known up (a link that held), if ever.
    seen: Option<Instant>,
}

impl Backoff {
    /// `max` is at least the first step (1 s).
    pub fn new(max: Duration) -> Self {
        Backoff {
            next: FIRST,
            max: max.max(FIRST),
            seen: None,
        }
    }

    /// The wait before the next attempt, jittered.
    pub fn next_delay(&mut self) -> Duration {
        let (base, spread) = self.next_base();
        jitter(base, spread)
    }

    /// The un-jittered wait and its jitter fraction; advances the slow regime.
    fn next_base(&mut self) -> (Duration, f64) {
        if self.seen.is_some_and(|t| t.elapsed() < FAST_WINDOW) {
            return (FAST.min(self.max), 0.5);
        }
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        (d, 0.25)
    }

    /// A connection was up for `held` and has just dropped: the far side was alive a
    /// moment ago, so the fast regime starts, unless the link held less than a second
    /// (a far side that drops every link at once gets no fast retries). If it held
    /// longer than the longest wait, the slow regime also starts over at 1 s.
    pub fn connected_for(&mut self, held: Duration) {
        if held >= FIRST {
            self.seen = Some(Instant::now());
        }
        if held >= self.max {
            self.next = FIRST;
        }
    }

    /// Start the slow regime over at 1 s (and leave the fast one).
    pub fn reset(&mut self) {
        self.seen = None;
        self.next = FIRST;
    }
}

/// `base` ± `spread` of it, uniformly.
fn jitter(base: Duration, spread: f64) -> Duration {
    let f = rand::thread_rng().gen_range((1.0 - spread)..=(1.0 + spread));
    base.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| b.next_base().0.as_millis() as u64).collect()
    }

    #[test]
    fn never_seen_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(5));
        assert_eq!(bases(&mut b, 5), [1000, 2000, 4000, 5000, 5000]);
        assert_eq!(Backoff::new(Duration::ZERO).next_base().0, FIRST);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_right_after_the_far_side_was_seen_then_slow() {
        let mut b = Backoff::new(Duration::from_secs(30));
        b.connected_for(Duration::from_secs(1));
        // A 20 s outage: every attempt in it comes about FAST apart.
        let mut waited = Duration::ZERO;
        while waited < Duration::from_secs(20) {
            let d = b.next_delay();
            assert!(d >= FAST / 2 && d <= FAST * 3 / 2, "{d:?}");
            tokio::time::advance(d).await;
            waited += d;
        }
        // Past the window the slow regime takes over, where it left off (the link
        // held only 1 s, so no reset of the doubling).
        tokio::time::advance(FAST_WINDOW).await;
        assert_eq!(bases(&mut b, 3), [1000, 2000, 4000]);
        // A link that held longer than the maximum starts the doubling over.
        b.connected_for(Duration::from_secs(31));
        tokio::time::advance(FAST_WINDOW).await;
        assert_eq!(bases(&mut b, 2), [1000, 2000]);
        // A link that dropped at once gives no fast retries.
        b.connected_for(Duration::from_millis(10));
        assert_eq!(b.next_base().0, Duration::from_secs(4));
        b.reset();
        assert_eq!(b.next_base().0, FIRST);
    }

    #[test]
    fn jitter_stays_in_its_band_and_varies() {
        let all: Vec<Duration> = (0..200).map(|_| jitter(FIRST, 0.25)).collect();
        assert!(all
            .iter()
            .all(|d| *d >= FIRST * 3 / 4 && *d <= FIRST * 5 / 4));
        assert!(all.iter().any(|d| *d != all[0]), "no jitter at all");
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_maximum_still_gets_the_fast_regime() {
        // max is raised to FIRST (1 s), which is above FAST.
        let mut b = Backoff::new(Duration::from_millis(100));
        b.connected_for(Duration::from_secs(2));
        assert_eq!(b.next_base().0, FAST);
    }
}
