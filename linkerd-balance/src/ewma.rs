//! The peak-EWMA latency estimate of one endpoint.

use std::time::Duration;
use tokio::time::Instant;

/// An exponentially weighted moving average of response latency that jumps to any higher
/// sample at once (the peak), and decays toward lower samples, and toward zero while idle, with
/// time constant `decay`: a slow endpoint is avoided immediately, and retried later.
#[derive(Clone, Debug)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: Instant,
    decay_ns: f64,
    /// Real samples seen, up to [`WARMUP`].
    samples: u32,
}

/// The first samples of an endpoint are averaged (replacing the default) rather than peaked:
/// one outlier while a connection is set up must not mark it slow for the decay period.
const WARMUP: u32 = 8;

impl PeakEwma {
    /// Starts at `default_rtt`.
    pub fn new(default_rtt: Duration, decay: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: default_rtt.as_nanos() as f64,
            stamp: now,
            decay_ns: decay.as_nanos().max(1) as f64,
            samples: 0,
        }
    }

    /// Adds a sample. The first one replaces the default (a guess for an endpoint nothing is
    /// known about), the first few are averaged, and from then on a higher sample is taken at
    /// once and a lower one blended in over the decay time.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if self.samples < WARMUP {
            self.samples += 1;
            self.estimate_ns += (rtt - self.estimate_ns) / f64::from(self.samples);
        } else if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let w = self.weight(now);
            self.estimate_ns = self.estimate_ns * w + rtt * (1.0 - w);
        }
        self.stamp = now;
    }

    /// Whether any real sample has been seen.
    pub fn is_observed(&self) -> bool {
        self.samples > 0
    }

    /// The estimate now, decayed toward zero for the time since the last sample.
    pub fn estimate(&self, now: Instant) -> f64 {
        self.estimate_ns * self.weight(now)
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        (-elapsed / self.decay_ns).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn peaks_at_once_and_decays_slowly() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(30 * MS, Duration::from_secs(10), t0);
        assert_eq!(e.estimate(t0), 30e6);
        // The first sample replaces the default, even when lower; the first few are averaged.
        let mut fresh = e.clone();
        fresh.observe(2 * MS, t0);
        assert_eq!(fresh.estimate(t0), 2e6);
        fresh.observe(4 * MS, t0);
        assert_eq!(fresh.estimate(t0), 3e6);
        for _ in 0..WARMUP {
            e.observe(10 * MS, t0);
        }
        assert_eq!(e.estimate(t0), 10e6);
        // After warm-up, a slower sample is taken as is.
        e.observe(300 * MS, t0);
        assert_eq!(e.estimate(t0), 300e6);
        // A fast sample right after barely moves it.
        e.observe(MS, t0 + MS);
        let est = e.estimate(t0 + MS);
        assert!(est > 299e6, "{est}");
        // After one time constant of fast samples, it has come down by about 1 - 1/e.
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        e.observe(MS, now);
        let est = e.estimate(now);
        let expected = 300e6 * (-1.0f64).exp() + 1e6 * (1.0 - (-1.0f64).exp());
        assert!((est - expected).abs() < 1e6, "{est} vs {expected}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_estimates_decay_toward_zero() {
        let t0 = Instant::now();
        let e = PeakEwma::new(100 * MS, Duration::from_secs(10), t0);
        let later = t0 + Duration::from_secs(20);
        let est = e.estimate(later);
        assert!((est - 100e6 * (-2.0f64).exp()).abs() < 1.0, "{est}");
    }
}
