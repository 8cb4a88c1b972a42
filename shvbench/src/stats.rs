//! Latency samples, percentiles and medians.

use std::sync::OnceLock;
use std::time::Instant;

/// Process-wide monotonic epoch: signal timestamps are nanoseconds since it, so that the
/// emitter and the subscribers (all in this process) share one clock.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`].
pub fn now_nanos() -> i64 {
    epoch().elapsed().as_nanos() as i64
}

/// Latencies in microseconds (u32 keeps a million samples in 4 MB).
#[derive(Debug, Default, Clone)]
pub struct Samples {
    us: Vec<u32>,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples {
            us: Vec::with_capacity(n),
        }
    }
    pub fn push_nanos(&mut self, nanos: i64) {
        let us = (nanos.max(0) / 1000).min(u32::MAX as i64) as u32;
        self.us.push(us);
    }
    pub fn extend(&mut self, other: Samples) {
        self.us.extend(other.us);
    }
    pub fn len(&self) -> usize {
        self.us.len()
    }
    /// The `p`-th percentile (0..=100) in microseconds, nearest-rank; NaN when empty.
    pub fn percentile(&mut self, p: f64) -> f64 {
        if self.us.is_empty() {
            return f64::NAN;
        }
        self.us.sort_unstable();
        let rank = ((p / 100.0) * self.us.len() as f64).ceil() as usize;
        self.us[rank.clamp(1, self.us.len()) - 1] as f64
    }
}

/// Median of the finite values; NaN when there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_median() {
        let mut s = Samples::default();
        for i in 1..=100 {
            s.push_nanos(i * 1000);
        }
        assert_eq!(s.percentile(50.0), 50.0);
        assert_eq!(s.percentile(99.0), 99.0);
        assert_eq!(s.percentile(100.0), 100.0);
        assert!(Samples::default().percentile(50.0).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, f64::NAN, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
