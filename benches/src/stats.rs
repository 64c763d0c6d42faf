//! Summaries of measurements.

use std::time::Duration;

/// Latency percentiles of a set of samples.
pub(crate) struct Latency {
    pub median: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub mean: Duration,
}

impl Latency {
    pub(crate) fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a rank between 0 and the number of samples, clamped to it"
        )]
        let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).expect("fewer than 2^32 samples");
        Latency { median: at(0.5), p99: at(0.99), p999: at(0.999), mean }
    }
}

/// Microseconds with one decimal.
pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Milliseconds with two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A ratio, with a check mark against a target (`at_most`: whether lower is better).
pub(crate) fn verdict(ratio: f64, target: f64, at_most: bool) -> String {
    let met = if at_most { ratio <= target } else { ratio >= target };
    format!(
        "{ratio:.2}× (target {} {target}×) {}",
        if at_most { "≤" } else { "≥" },
        if met { "met" } else { "NOT met" }
    )
}
