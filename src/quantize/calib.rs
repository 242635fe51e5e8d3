//! Activation ranges from calibration data: min–max, a percentile of |x|, or the threshold that
//! minimises the KL divergence between the float histogram and its quantised form (TensorRT's
//! entropy calibration).
//!
//! Each observed tensor keeps its running minimum and maximum and, for the histogram methods, a
//! histogram of |x| over [0, amax] in 2048 bins; when a later batch has a larger |x| the
//! histogram is widened and the old counts are moved to the bins their centres fall in.

use serde::Serialize;

/// Bins of the |x| histogram (TensorRT's choice).
pub const BINS: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The smallest and largest value seen (no clipping; outliers widen the scale).
    Minmax,
    /// Clip |x| at a percentile of its histogram (--percentile, default 99.999).
    Percentile,
    /// Clip |x| where the KL divergence between the float and the quantised histogram is least.
    Entropy,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Minmax => "minmax",
            Method::Percentile => "percentile",
            Method::Entropy => "entropy",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observer {
    pub min: f32,
    pub max: f32,
    /// Histogram of |x| over [0, amax], when kept.
    hist: Option<Vec<u64>>,
    amax: f32,
    pub count: u64,
}

impl Observer {
    pub fn new(histogram: bool) -> Observer {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: histogram.then(|| vec![0; BINS]),
            amax: 0.0,
            count: 0,
        }
    }

    pub fn update(&mut self, xs: &[f32]) {
        let (mut lo, mut hi) = (self.min, self.max);
        for &x in xs {
            if x.is_finite() {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
        self.min = lo;
        self.max = hi;
        self.count += xs.len() as u64;
        let Some(hist) = self.hist.as_mut() else {
            return;
        };
        let amax = lo.abs().max(hi.abs());
        if !amax.is_finite() || amax <= 0.0 {
            if amax == 0.0 {
                hist[0] += xs.len() as u64;
            }
            return;
        }
        if amax > self.amax {
            // widen: move the old counts to the bins their centres fall into
            if self.amax > 0.0 {
                let old = std::mem::replace(hist, vec![0; BINS]);
                let (ow, nw) = (self.amax / BINS as f32, amax / BINS as f32);
                for (i, c) in old.into_iter().enumerate() {
                    if c > 0 {
                        let centre = (i as f32 + 0.5) * ow;
                        let j = ((centre / nw) as usize).min(BINS - 1);
                        hist[j] += c;
                    }
                }
            }
            self.amax = amax;
        }
        let k = BINS as f32 / self.amax;
        for &x in xs {
            if x.is_finite() {
                let j = ((x.abs() * k) as usize).min(BINS - 1);
                hist[j] += 1;
            }
        }
    }

    /// The range to quantise with.
    pub fn range(&self, method: Method, percentile: f64) -> (f32, f32) {
        if !self.min.is_finite() || !self.max.is_finite() {
            return (0.0, 0.0);
        }
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        let t = match (method, &self.hist) {
            (Method::Minmax, _) | (_, None) => return (lo, hi),
            (Method::Percentile, Some(h)) => percentile_threshold(h, self.amax, percentile),
            (Method::Entropy, Some(h)) => {
                // a tensor that is never negative uses all 256 levels on [0, T]
                let levels = if self.min >= 0.0 { 256 } else { 128 };
                entropy_threshold(h, self.amax, levels)
            }
        };
        (lo.max(-t), hi.min(t))
    }
}

/// |x| below which `p` % of the values lie (upper edge of that bin).
pub fn percentile_threshold(hist: &[u64], amax: f32, p: f64) -> f32 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return amax;
    }
    let want = (total as f64 * p / 100.0).ceil() as u64;
    let mut acc = 0u64;
    let w = amax / hist.len() as f32;
    for (i, &c) in hist.iter().enumerate() {
        acc += c;
        if acc >= want {
            return (i as f32 + 1.0) * w;
        }
    }
    amax
}

/// TensorRT's entropy calibration: the clipping threshold (in bins of `hist`) whose quantised
/// distribution into `levels` levels is closest (KL divergence) to the clipped float one.
pub fn entropy_threshold(hist: &[u64], amax: f32, levels: usize) -> f32 {
    let n = hist.len();
    let w = amax / n as f32;
    if hist.iter().sum::<u64>() == 0 || n <= levels {
        return amax;
    }
    let mut best = (f64::INFINITY, n);
    let mut p = vec![0f64; n];
    let mut q = vec![0f64; n];
    // step through candidate thresholds; every 8 bins keeps the search fast and is finer than
    // the int8 step itself for every threshold above 1024 bins
    let mut i = levels;
    while i <= n {
        let outliers: u64 = hist[i..].iter().sum();
        for (j, v) in p[..i].iter_mut().enumerate() {
            *v = hist[j] as f64;
        }
        p[i - 1] += outliers as f64;
        // quantise the first i bins into `levels` groups, spread each group's count over the
        // group's non-empty bins
        let per = i as f64 / levels as f64;
        for l in 0..levels {
            let a = (l as f64 * per).floor() as usize;
            let b = (((l + 1) as f64 * per).floor() as usize).min(i).max(a + 1);
            let sum: f64 = hist[a..b].iter().map(|&c| c as f64).sum();
            let nonzero = hist[a..b].iter().filter(|&&c| c > 0).count();
            for j in a..b {
                q[j] = if hist[j] > 0 && nonzero > 0 {
                    sum / nonzero as f64
                } else {
                    0.0
                };
            }
        }
        let kl = kl_divergence(&p[..i], &q[..i]);
        if kl < best.0 {
            best = (kl, i);
        }
        i += 8;
    }
    best.1 as f32 * w
}

/// KL(P‖Q) of two unnormalised histograms; bins where P > 0 but Q = 0 get a small Q.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let ps: f64 = p.iter().sum();
    let qs: f64 = q.iter().sum();
    if ps <= 0.0 || qs <= 0.0 {
        return f64::INFINITY;
    }
    let eps = 1e-10;
    let mut kl = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            let pa = a / ps;
            let qb = (b / qs).max(eps);
            kl += pa * (pa / qb).ln();
        }
    }
    kl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minmax_is_the_seen_range_with_zero() {
        let mut o = Observer::new(false);
        o.update(&[0.5, 2.0, 1.0]);
        o.update(&[3.0]);
        assert_eq!(o.range(Method::Minmax, 99.99), (0.0, 3.0));
        let mut o = Observer::new(false);
        o.update(&[-2.0, -1.0, f32::NAN]);
        assert_eq!(o.range(Method::Minmax, 99.99), (-2.0, 0.0));
    }

    #[test]
    fn percentile_clips_a_rare_outlier() {
        let mut o = Observer::new(true);
        let mut xs: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        xs.push(50.0);
        o.update(&xs);
        let (lo, hi) = o.range(Method::Percentile, 99.9);
        assert_eq!(lo, 0.0);
        assert!(hi < 1.1 && hi > 0.95, "{hi}");
        assert_eq!(o.range(Method::Minmax, 99.9).1, 50.0);
    }

    #[test]
    fn widening_keeps_the_counts() {
        let mut o = Observer::new(true);
        o.update(&[0.1; 100]);
        o.update(&[10.0]);
        let h = o.hist.as_ref().unwrap();
        assert_eq!(h.iter().sum::<u64>(), 101);
        // the 0.1s landed near 0.1 of the new range [0, 10]
        let j = h.iter().position(|&c| c == 100).unwrap();
        let centre = (j as f32 + 0.5) * 10.0 / BINS as f32;
        assert!((centre - 0.1).abs() < 0.01, "{centre}");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_not_a_dense_range() {
        // a dense uniform range: the threshold stays near the maximum
        let mut o = Observer::new(true);
        let xs: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        o.update(&xs);
        let (_, hi) = o.range(Method::Entropy, 0.0);
        assert!(hi > 0.9, "{hi}");
        // Gaussian-like bulk with a few huge outliers: clipped well below them
        let mut o = Observer::new(true);
        let mut state = 1u64;
        let mut xs = Vec::new();
        for _ in 0..200_000 {
            let mut s = 0.0;
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                s += (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            xs.push(s);
        }
        xs.extend([40.0, -40.0]);
        o.update(&xs);
        let (lo, hi) = o.range(Method::Entropy, 0.0);
        assert!(hi < 10.0 && lo > -10.0, "({lo}, {hi})");
        assert!(hi > 0.5, "({lo}, {hi})");
    }
}
