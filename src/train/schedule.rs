//! Learning rate over training steps: linear warm-up from `base·warmup_start` to `base`, then a
//! step decay (BoT: ×0.1 at given steps) or a cosine decay to `base·min_factor` at the last step.
//! A pure function of the step, so a resumed run continues on the same curve.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Decay {
    /// Constant after warm-up.
    None,
    /// Multiply by `gamma` at each milestone step.
    Step { milestones: Vec<u64>, gamma: f64 },
    /// Cosine from `base` at the end of warm-up to `base·min_factor` at `total_steps`.
    Cosine { min_factor: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub base: f64,
    pub warmup_steps: u64,
    /// Warm-up starts at this share of `base` (BoT: 0.01).
    pub warmup_start: f64,
    pub decay: Decay,
    pub total_steps: u64,
}

impl LrSchedule {
    /// BoT-like: Adam at 3.5e-4, warm-up over the first 10 % of steps from 1 %, ×0.1 at 40 % and
    /// 70 % of the run.
    pub fn bot(base: f64, total_steps: u64) -> LrSchedule {
        LrSchedule {
            base,
            warmup_steps: total_steps / 10,
            warmup_start: 0.01,
            decay: Decay::Step {
                milestones: vec![total_steps * 4 / 10, total_steps * 7 / 10],
                gamma: 0.1,
            },
            total_steps,
        }
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            let t = step as f64 / self.warmup_steps as f64;
            return self.base * (self.warmup_start + (1.0 - self.warmup_start) * t);
        }
        match &self.decay {
            Decay::None => self.base,
            Decay::Step { milestones, gamma } => {
                let passed = milestones.iter().filter(|&&m| step >= m).count();
                self.base * gamma.powi(passed as i32)
            }
            Decay::Cosine { min_factor } => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                self.base * (min_factor + (1.0 - min_factor) * c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_step_or_cosine_decay() {
        let s = LrSchedule::bot(1.0, 100);
        assert!((s.lr_at(0) - 0.01).abs() < 1e-12);
        assert!((s.lr_at(5) - (0.01 + 0.99 * 0.5)).abs() < 1e-12);
        assert_eq!(s.lr_at(10), 1.0);
        assert_eq!(s.lr_at(39), 1.0);
        assert!((s.lr_at(40) - 0.1).abs() < 1e-12);
        assert!((s.lr_at(99) - 0.01).abs() < 1e-12);
        let c = LrSchedule {
            decay: Decay::Cosine { min_factor: 0.0 },
            ..s
        };
        assert_eq!(c.lr_at(10), 1.0);
        assert!((c.lr_at(55) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(100).abs() < 1e-12);
    }
}
