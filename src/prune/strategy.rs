//! How many channels each group keeps, and which ones.
//!
//! - **scope** `layer`: every prunable group loses the same fraction of its channels; `global`:
//!   one ranking across all groups after L2-normalising each group's scores, so
//!   redundant layers lose more than busy ones.
//! - **widths**: every group keeps at least `min_channels`, and kept widths are rounded to a
//!   multiple of `multiple` (8 by default: vectorised conv kernels run fastest on such widths).
//! - **target**: a channel ratio, or a fraction of the original MACs, reached by searching the
//!   ratio against an exact analytic MAC count (conv MACs scale with kept-in × kept-out).
//! - **strategy** `one-shot` or `iterative` (N steps, re-scored after each, with a [`RetuneHook`]
//!   between steps that the re-tuning engine fills).

use serde::{Deserialize, Serialize};

use crate::onnx::Model;

use super::PruneError;
use super::groups::{Analysis, Role};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// The same ratio in every prunable group.
    #[default]
    Layer,
    /// One ranking across groups (scores L2-normalised per group first).
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Layer => "layer",
            Scope::Global => "global",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Prune to the target at once.
    #[default]
    OneShot,
    /// Prune in several steps towards the target, re-scoring (and re-tuning, when a hook is
    /// given) after each.
    Iterative,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::OneShot => "one-shot",
            StrategyKind::Iterative => "iterative",
        }
    }
}

/// What to reach.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Keep this fraction of the original MACs (0 < F ≤ 1).
    Macs(f64),
    /// Remove this fraction of the prunable channels (0 ≤ R < 1).
    Ratio(f64),
}

impl Target {
    pub fn validate(self) -> Result<Target, PruneError> {
        match self {
            Target::Macs(f) if !(f > 0.0 && f <= 1.0) => Err(PruneError::Target(format!(
                "--target-macs must be in (0, 1] (the fraction of MACs to keep), not {f}"
            ))),
            Target::Ratio(r) if !(0.0..1.0).contains(&r) => Err(PruneError::Target(format!(
                "--ratio must be in [0, 1) (the fraction of channels to remove), not {r}"
            ))),
            t => Ok(t),
        }
    }
}

/// Limits on kept widths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct WidthPolicy {
    /// Every group keeps at least this many channels (or all it has, when it has fewer).
    pub min_channels: usize,
    /// Kept widths are rounded to a multiple of this (1 = no rounding).
    pub multiple: usize,
}

pub const DEFAULT_MIN_CHANNELS: usize = 8;
pub const DEFAULT_MULTIPLE: usize = 8;

impl Default for WidthPolicy {
    fn default() -> WidthPolicy {
        WidthPolicy {
            min_channels: DEFAULT_MIN_CHANNELS,
            multiple: DEFAULT_MULTIPLE,
        }
    }
}

impl WidthPolicy {
    /// The smallest width a group of `c` channels may keep.
    pub fn floor(&self, c: usize) -> usize {
        self.min_channels.max(1).min(c)
    }
    /// `k` of `c` channels rounded to the multiple (nearest), within [floor, c].
    pub fn round(&self, c: usize, k: usize) -> usize {
        if k >= c {
            return c;
        }
        let m = self.multiple.max(1);
        let r = ((k as f64 / m as f64).round() as usize) * m;
        r.clamp(self.floor(c), c)
    }
}

/// Kept channel indices (ascending) per group; `None` = the group keeps everything.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub keep: Vec<Option<Vec<usize>>>,
}

/// Turns scores into kept widths for any ratio, quickly (the MACs search calls it many times).
pub struct Planner {
    scope: Scope,
    policy: WidthPolicy,
    /// Channels per group; 0 for groups that are not prunable.
    prunable: Vec<usize>,
    channels: Vec<usize>,
    /// Global scope: (normalised score, group, channel), ascending.
    ranked: Vec<(f32, usize, usize)>,
    scores: Vec<Vec<f32>>,
}

impl Planner {
    pub fn new(
        analysis: &Analysis,
        scores: Vec<Vec<f32>>,
        scope: Scope,
        policy: WidthPolicy,
    ) -> Result<Planner, PruneError> {
        let n = analysis.groups.len();
        let mut prunable = vec![0; n];
        let channels: Vec<usize> = analysis.groups.iter().map(|g| g.channels).collect();
        let mut ranked = Vec::new();
        for g in analysis.prunable() {
            let s = scores.get(g.id).ok_or_else(|| {
                PruneError::Criterion(format!("no scores for group '{}'", g.name))
            })?;
            if s.len() != g.channels {
                return Err(PruneError::Criterion(format!(
                    "{} scores for group '{}', which has {} channels",
                    s.len(),
                    g.name,
                    g.channels
                )));
            }
            if let Some(bad) = s.iter().position(|v| !v.is_finite()) {
                return Err(PruneError::Criterion(format!(
                    "score of channel {bad} of group '{}' is not a number",
                    g.name
                )));
            }
            prunable[g.id] = g.channels;
            if scope == Scope::Global {
                let norm = s.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                for (c, &v) in s.iter().enumerate() {
                    let nv = if norm > 0.0 {
                        (v as f64 / norm) as f32
                    } else {
                        0.0
                    };
                    ranked.push((nv, g.id, c));
                }
            }
        }
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        Ok(Planner {
            scope,
            policy,
            prunable,
            channels,
            ranked,
            scores,
        })
    }

    /// Kept width of every group when a fraction `ratio` of the prunable channels is removed.
    pub fn counts(&self, ratio: f64) -> Vec<usize> {
        let ratio = ratio.clamp(0.0, 1.0);
        match self.scope {
            Scope::Layer => self
                .channels
                .iter()
                .zip(&self.prunable)
                .map(|(&c, &p)| {
                    if p == 0 {
                        c
                    } else {
                        let k = (c as f64 * (1.0 - ratio)).round() as usize;
                        self.policy.round(c, k)
                    }
                })
                .collect(),
            Scope::Global => {
                let total: usize = self.prunable.iter().sum();
                let remove = (ratio * total as f64).round() as usize;
                let mut left = self.channels.clone();
                let mut done = 0;
                for &(_, g, _) in &self.ranked {
                    if done >= remove {
                        break;
                    }
                    if left[g] > self.policy.floor(self.channels[g]) {
                        left[g] -= 1;
                        done += 1;
                    }
                }
                left.iter()
                    .zip(&self.channels)
                    .zip(&self.prunable)
                    .map(|((&k, &c), &p)| if p == 0 { c } else { self.policy.round(c, k) })
                    .collect()
            }
        }
    }

    /// The highest-scoring `counts[g]` channels of each group.
    pub fn select(&self, counts: &[usize]) -> Selection {
        let keep = counts
            .iter()
            .enumerate()
            .map(|(g, &k)| {
                if self.prunable[g] == 0 || k >= self.channels[g] {
                    return None;
                }
                let s = &self.scores[g];
                let mut idx: Vec<usize> = (0..s.len()).collect();
                // descending score; ties keep the lower index
                idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
                idx.truncate(k);
                idx.sort_unstable();
                Some(idx)
            })
            .collect();
        Selection { keep }
    }

    /// Prunable channels in total, and how many `counts` keep of them.
    pub fn kept(&self, counts: &[usize]) -> (usize, usize) {
        let total = self.prunable.iter().sum();
        let kept = counts
            .iter()
            .zip(&self.prunable)
            .filter(|(_, p)| **p > 0)
            .map(|(k, _)| *k)
            .sum();
        (total, kept)
    }
}

/// MACs as a function of kept widths, exact for conv and linear layers (the cost convention of
/// `crate::onnx::cost`): a conv's MACs scale with kept output × kept input channels.
pub struct CostModel {
    /// (MACs at full width, output group, input group, depthwise)
    terms: Vec<(f64, usize, usize, bool)>,
    pub total: f64,
    channels: Vec<usize>,
}

impl CostModel {
    pub fn new(model: &Model, analysis: &Analysis) -> CostModel {
        let g = &model.graph;
        let mut terms = Vec::new();
        for (idx, role) in &analysis.roles {
            let n = &g.nodes[*idx];
            let out = n
                .outputs
                .first()
                .and_then(|o| analysis.shapes.get(o))
                .map(|s| s.iter().map(|&d| d as f64).product::<f64>());
            let w = n.input(1).and_then(|w| g.initializers.get(w));
            let (Some(out), Some(w)) = (out, w) else {
                continue;
            };
            let (macs, o, i, dw) = match role {
                Role::Conv { input, output } => (
                    out * w.dims[1..].iter().product::<usize>() as f64,
                    analysis.space_group[*output],
                    analysis.space_group[input.space],
                    false,
                ),
                Role::Depthwise { layout } => {
                    let gi = analysis.space_group[layout.space];
                    (
                        out * w.dims[1..].iter().product::<usize>() as f64,
                        gi,
                        gi,
                        true,
                    )
                }
                Role::Linear {
                    input,
                    output,
                    kind,
                } => {
                    let k = match kind {
                        super::groups::LinearKind::GemmTransB => w.dims[1],
                        _ => w.dims[0],
                    };
                    (
                        out * k as f64,
                        analysis.space_group[*output],
                        analysis.space_group[input.space],
                        false,
                    )
                }
                _ => continue,
            };
            terms.push((macs, o, i, dw));
        }
        let total = terms.iter().map(|t| t.0).sum();
        CostModel {
            terms,
            total,
            channels: analysis.groups.iter().map(|g| g.channels).collect(),
        }
    }

    /// MACs with `counts[g]` channels kept in each group.
    pub fn macs(&self, counts: &[usize]) -> f64 {
        let f = |g: usize| counts[g] as f64 / self.channels[g].max(1) as f64;
        self.terms
            .iter()
            .map(|&(m, o, i, dw)| if dw { m * f(o) } else { m * f(o) * f(i) })
            .sum()
    }
}

/// The ratio whose kept widths bring MACs closest to `fraction` × `cost.total`, and those widths.
pub fn ratio_for_macs(
    planner: &Planner,
    cost: &CostModel,
    fraction: f64,
) -> Result<(f64, Vec<usize>), PruneError> {
    let frac = |r: f64| {
        let c = planner.counts(r);
        (cost.macs(&c) / cost.total.max(1.0), c)
    };
    let (f_max, c_max) = frac(1.0);
    if f_max > fraction + 1e-9 {
        return Err(PruneError::Target(format!(
            "cannot reach {:.1}% of the MACs: pruning every prunable group down to its minimum width \
             still leaves {:.1}% (the output group and the input are kept; lower --min-channels, or \
             allow --prune-output)",
            100.0 * fraction,
            100.0 * f_max
        )));
    }
    let (f0, c0) = frac(0.0);
    if f0 <= fraction {
        return Ok((0.0, c0));
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut best = (1.0, (f_max - fraction).abs(), c_max);
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        let (f, c) = frac(mid);
        if (f - fraction).abs() < best.1 {
            best = (mid, (f - fraction).abs(), c.clone());
        }
        if f > fraction {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((best.0, best.2))
}

/// Where the pruner is in an iterative run, for the re-tune hook.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct StepInfo {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    /// MACs of the model now, as a fraction of the original model's.
    pub macs_fraction: f64,
}

/// Re-tunes the model between pruning steps (iterative strategy). The training engine implements
/// it: train a little on its data with `model`'s current architecture, then write the new weights
/// back into `model` (same graph, same widths). Called after every step, including the last.
pub trait RetuneHook {
    fn retune(
        &mut self,
        step: &StepInfo,
        model: &mut Model,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// No re-tuning (what `crosscam prune` does: it has no training data).
pub struct NoRetune;

impl RetuneHook for NoRetune {
    fn retune(
        &mut self,
        _step: &StepInfo,
        _model: &mut Model,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_round_to_the_multiple_within_limits() {
        let p = WidthPolicy::default();
        assert_eq!(p.round(64, 64), 64);
        assert_eq!(p.round(64, 35), 32);
        assert_eq!(p.round(64, 37), 40);
        assert_eq!(p.round(64, 2), 8);
        assert_eq!(p.round(6, 1), 6); // fewer channels than the minimum: keeps them all
        assert_eq!(p.round(20, 19), 16);
        let none = WidthPolicy {
            min_channels: 1,
            multiple: 1,
        };
        assert_eq!(none.round(64, 35), 35);
    }

    fn small_analysis() -> (Model, Analysis) {
        use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
        let spec = ResNetSpec::resnet18()
            .for_reid()
            .scaled(0.25)
            .with_input(64, 32);
        let m = super::super::ir::import(&build(
            &spec,
            Head::BnNeck,
            Style::default(),
            Init::RandomStats,
            1,
        ))
        .unwrap();
        let a = super::super::groups::analyze(&m, &Default::default()).unwrap();
        (m, a)
    }

    #[test]
    fn global_scope_removes_the_lowest_normalised_scores_first() {
        let (_, a) = small_analysis();
        // every group: scores 1..=C, except one inner group whose channels are all equal (after
        // normalisation each is 1/sqrt(C): higher than the low end of the ramps)
        let flat = a
            .groups
            .iter()
            .find(|g| g.name == "layer2.0.conv1")
            .unwrap()
            .id;
        let scores: Vec<Vec<f32>> = a
            .groups
            .iter()
            .map(|g| {
                if g.id == flat {
                    vec![1.0; g.channels]
                } else {
                    (1..=g.channels).map(|v| v as f32).collect()
                }
            })
            .collect();
        let none = WidthPolicy {
            min_channels: 1,
            multiple: 1,
        };
        let p = Planner::new(&a, scores, Scope::Global, none).unwrap();
        let c = p.counts(0.2);
        let (total, kept) = p.kept(&c);
        assert_eq!(total - kept, (0.2 * total as f64).round() as usize);
        assert_eq!(
            c[flat], a.groups[flat].channels,
            "the flat group keeps everything"
        );
        // ramps lose their lowest channels: the kept ones are the top of each ramp
        let sel = p.select(&c);
        for g in a.prunable().filter(|g| g.id != flat) {
            if let Some(k) = &sel.keep[g.id] {
                assert_eq!(k.first().copied(), Some(g.channels - k.len()), "{}", g.name);
            }
        }
        // the per-group minimum holds however much is asked
        let floor = WidthPolicy {
            min_channels: 4,
            multiple: 1,
        };
        let p = Planner::new(&a, p.scores.clone(), Scope::Global, floor).unwrap();
        for (g, k) in a.groups.iter().zip(p.counts(0.99)) {
            if g.prunable() {
                assert_eq!(k, 4.min(g.channels), "{}", g.name);
            }
        }
    }

    #[test]
    fn the_macs_search_lands_on_the_target() {
        let (m, a) = small_analysis();
        let scores: Vec<Vec<f32>> = a.groups.iter().map(|g| vec![1.0; g.channels]).collect();
        let cost = CostModel::new(&m, &a);
        let full = crate::onnx::cost::cost(&m, &a.shapes).unwrap().macs as f64;
        assert!(
            (cost.total - full).abs() < 1.0,
            "analytic {} vs counted {full}",
            cost.total
        );
        for scope in [Scope::Layer, Scope::Global] {
            let p = Planner::new(
                &a,
                scores.clone(),
                scope,
                WidthPolicy {
                    min_channels: 1,
                    multiple: 1,
                },
            )
            .unwrap();
            for f in [0.3, 0.5, 0.8] {
                let (_, counts) = ratio_for_macs(&p, &cost, f).unwrap();
                let got = cost.macs(&counts) / cost.total;
                assert!((got - f).abs() < 0.02, "{scope:?} {f}: {got}");
            }
        }
    }

    #[test]
    fn targets_are_validated() {
        assert!(Target::Macs(0.0).validate().is_err());
        assert!(Target::Macs(1.5).validate().is_err());
        assert!(Target::Ratio(1.0).validate().is_err());
        assert!(Target::Ratio(0.0).validate().is_ok());
        assert!(Target::Macs(0.5).validate().is_ok());
    }
}
