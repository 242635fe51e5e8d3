//! A lock-free histogram with fixed buckets, for the Prometheus `/metrics` endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cumulative-bucket histogram (Prometheus semantics: `le` upper bounds, plus sum and count).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of observed values × 1e6 (fixed point: values are seconds or counts).
    sum_micro: AtomicU64,
    count: AtomicU64,
}

/// Seconds, 1 ms to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Batch sizes.
pub const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_BOUNDS)
    }

    pub fn batch() -> Histogram {
        Histogram::new(BATCH_BOUNDS)
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((v.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Writes the histogram in the Prometheus text format (`name` with `labels`, e.g.
    /// `stage="detect"`; empty for none). The `# TYPE` line is the caller's.
    pub fn write(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {n}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{braces} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 3.0] {
            h.observe(v);
        }
        let mut s = String::new();
        h.write(&mut s, "x", "stage=\"a\"");
        assert!(s.contains("x_bucket{stage=\"a\",le=\"1\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{stage=\"a\",le=\"2\"} 3\n"), "{s}");
        assert!(s.contains("x_bucket{stage=\"a\",le=\"+Inf\"} 4\n"), "{s}");
        assert!(s.contains("x_sum{stage=\"a\"} 6.7\n"), "{s}");
        assert!(s.contains("x_count{stage=\"a\"} 4\n"), "{s}");
    }
}
