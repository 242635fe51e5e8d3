//! Structured pruning of re-id CNNs: ONNX in, channel groups, criteria, strategies, ONNX out.
//!
//! ```text
//! ir::import ─► groups::analyze ─► criteria (ChannelScorer) ─► strategy (Planner, MACs search)
//!      ▲                                                                │
//!      └──────── RetuneHook (iterative: between steps) ◄── apply::apply ◄┘ ─► report
//! ```
//!
//! The pruner works on any ONNX conv net made of the ops in [`ir::SUPPORTED_OPS`] — torchreid,
//! fast-reid and torchvision exports, legacy or torch.export-based — and refuses anything else by
//! node and op. Channel groups come from the graph (see [`groups`]), never from layer names. The
//! training engine plugs in twice: as a [`criteria::GradientSource`] for the `taylor` criterion and
//! as a [`strategy::RetuneHook`] between iterative steps.

pub mod apply;
pub mod criteria;
pub mod groups;
pub mod ir;
pub mod report;
pub mod strategy;
pub mod sweep;

use std::collections::HashMap;
use std::path::Path;

use crate::onnx::{Model, OnnxError, cost};
use crate::progress::Progress;
use crate::runtime::RuntimeError;

pub use criteria::{ChannelScorer, Criterion, GradientSource, TaylorScorer};
pub use groups::{Analysis, AnalyzeOptions, PruneGroup};
pub use report::PruneReport;
pub use strategy::{NoRetune, RetuneHook, Scope, StepInfo, StrategyKind, Target, WidthPolicy};

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{node}: the pruner cannot handle this {op}: {why}")]
    Unsupported {
        node: String,
        op: String,
        why: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Criterion(String),
    #[error("calibration images: {0}")]
    Calibration(String),
    #[error("{0}")]
    Target(String),
    #[error("re-tuning after pruning step {step} failed: {source}")]
    Retune {
        step: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Default number of iterative steps.
pub const DEFAULT_STEPS: usize = 4;

/// How to prune (the criterion is the [`ChannelScorer`] passed alongside).
#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub strategy: StrategyKind,
    /// Steps of the iterative strategy (ignored for one-shot).
    pub steps: usize,
    pub scope: Scope,
    pub target: Target,
    pub widths: WidthPolicy,
    pub analyze: AnalyzeOptions,
    /// No progress lines on stderr.
    pub quiet: bool,
}

impl PruneOptions {
    pub fn new(target: Target) -> PruneOptions {
        PruneOptions {
            strategy: StrategyKind::OneShot,
            steps: DEFAULT_STEPS,
            scope: Scope::Layer,
            target,
            widths: WidthPolicy::default(),
            analyze: AnalyzeOptions::default(),
            quiet: true,
        }
    }
}

/// A pruned model and what was done to it.
pub struct Pruned {
    pub model: Model,
    pub report: PruneReport,
}

/// Metadata key crosscam writes into pruned models (criterion, strategy, scope, MACs kept).
pub const META_PRUNING: &str = "crosscam.pruning";

/// Prunes `model` (not modified). `hook` runs after every step of an iterative run.
pub fn prune(
    model: &Model,
    opts: &PruneOptions,
    scorer: &mut dyn ChannelScorer,
    hook: &mut dyn RetuneHook,
) -> Result<Pruned, PruneError> {
    let target = opts.target.validate()?;
    let orig = ir::import(model)?;
    let a0 = groups::analyze(&orig, &opts.analyze)?;
    let cost0 = cost::cost(&orig, &a0.shapes)?;
    let total0 = strategy::CostModel::new(&orig, &a0).total;
    let steps = match opts.strategy {
        StrategyKind::OneShot => 1,
        StrategyKind::Iterative => opts.steps.max(1),
    };
    let mut progress = Progress::new("pruning steps", steps as u64).quiet(opts.quiet || steps == 1);
    let mut cur = orig.clone();
    let mut step_reports = Vec::new();
    for i in 1..=steps {
        let a = groups::analyze(&cur, &opts.analyze)?;
        let scores = scorer.score(&cur, &a)?;
        let planner = strategy::Planner::new(&a, scores, opts.scope, opts.widths)?;
        let cm = strategy::CostModel::new(&cur, &a);
        let done = i as f64 / steps as f64;
        let (ratio, counts) = match target {
            Target::Macs(f) => {
                let want = (1.0 - (1.0 - f) * done) * total0 / cm.total.max(1.0);
                strategy::ratio_for_macs(&planner, &cm, want.min(1.0))?
            }
            Target::Ratio(r) => {
                let (now, before) = (r * done, r * (i - 1) as f64 / steps as f64);
                let step_r = 1.0 - (1.0 - now) / (1.0 - before);
                (step_r, planner.counts(step_r))
            }
        };
        let sel = planner.select(&counts);
        cur = apply::apply(&cur, &a, &sel, &opts.analyze)?;
        let info = StepInfo {
            step: i,
            steps,
            macs_fraction: cm.macs(&counts) / total0.max(1.0),
        };
        hook.retune(&info, &mut cur)
            .map_err(|source| PruneError::Retune { step: i, source })?;
        step_reports.push(report::StepReport {
            step: i,
            ratio,
            macs_fraction: info.macs_fraction,
        });
        progress.note(format!("MACs {:.1}%", 100.0 * info.macs_fraction));
        progress.inc(1);
    }
    progress.finish();

    let a_end = groups::analyze(&cur, &opts.analyze)?;
    let cost_end = cost::cost(&cur, &a_end.shapes)?;
    let report = build_report(
        &orig,
        &a0,
        &cost0,
        &cur,
        &a_end,
        &cost_end,
        opts,
        scorer.name(),
        steps,
        step_reports,
    );
    cur.ir_version = cur.ir_version.max(min_ir_version(cur.opset));
    cur.set_metadata(
        META_PRUNING,
        &format!(
            "criterion={} strategy={} steps={} scope={} macs_fraction={:.4}",
            report.criterion, report.strategy, steps, report.scope, report.macs_fraction
        ),
    );
    Ok(Pruned { model: cur, report })
}

/// Prunes the ONNX file `input` into `out` (written atomically) and returns the report.
pub fn prune_file(
    input: &Path,
    out: &Path,
    opts: &PruneOptions,
    scorer: &mut dyn ChannelScorer,
    hook: &mut dyn RetuneHook,
) -> Result<PruneReport, PruneError> {
    let model = Model::load(input)?;
    let mut p = prune(&model, opts, scorer, hook)?;
    p.model.save(out)?;
    p.report.model = Some(input.display().to_string());
    p.report.out = Some(out.display().to_string());
    Ok(p.report)
}

/// The oldest IR version that may carry `opset` (ONNX's versioning table): ONNX Runtime refuses a
/// newer opset in an older IR.
pub fn min_ir_version(opset: i64) -> i64 {
    match opset {
        ..=12 => 7,
        13..=14 => 7,
        15..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    orig: &Model,
    a0: &Analysis,
    cost0: &cost::Cost,
    end: &Model,
    a_end: &Analysis,
    cost_end: &cost::Cost,
    opts: &PruneOptions,
    criterion: String,
    steps: usize,
    step_reports: Vec<report::StepReport>,
) -> PruneReport {
    let end_groups: HashMap<&str, usize> = a_end
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.channels))
        .collect();
    let groups: Vec<report::GroupReport> = a0
        .groups
        .iter()
        .filter(|g| !g.producers.is_empty())
        .map(|g| report::GroupReport {
            name: g.name.clone(),
            kept: end_groups
                .get(g.name.as_str())
                .copied()
                .unwrap_or(g.channels),
            total: g.channels,
            coupled: g.coupled(),
            members: g.producers.iter().map(|m| m.name.clone()).collect(),
            fixed: g.fixed.clone(),
        })
        .collect();
    let (channels_before, channels_after) = groups
        .iter()
        .filter(|g| g.fixed.is_none())
        .fold((0, 0), |(b, a), g| (b + g.total, a + g.kept));
    let layer_widths = |m: &Model, a: &Analysis| -> HashMap<String, (String, usize, usize)> {
        let mut out = HashMap::new();
        for (idx, role) in &a.roles {
            let n = &m.graph.nodes[*idx];
            let w = n.input(1).and_then(|w| m.graph.initializers.get(w));
            let inp = n
                .input(0)
                .and_then(|x| a.shapes.get(x))
                .and_then(|s| s.get(1))
                .map(|&c| c as usize);
            let (Some(w), Some(inp)) = (w, inp) else {
                continue;
            };
            let outc = match role {
                groups::Role::Conv { .. } | groups::Role::Depthwise { .. } => w.dims[0],
                groups::Role::Linear { kind, .. } => match kind {
                    groups::LinearKind::GemmTransB => w.dims[0],
                    _ => w.dims[1],
                },
                _ => continue,
            };
            out.insert(groups::node_label(n), (n.op.clone(), outc, inp));
        }
        out
    };
    let before = layer_widths(orig, a0);
    let after = layer_widths(end, a_end);
    let mut layers: Vec<report::LayerReport> = a0
        .roles
        .iter()
        .filter_map(|(idx, _)| {
            let name = groups::node_label(&orig.graph.nodes[*idx]);
            let (op, total, in_total) = before.get(&name)?.clone();
            let (_, kept, in_kept) =
                after
                    .get(&name)
                    .cloned()
                    .unwrap_or((op.clone(), total, in_total));
            Some(report::LayerReport {
                node: name,
                op,
                kept,
                total,
                in_kept,
                in_total,
            })
        })
        .collect();
    layers.dedup_by(|a, b| a.node == b.node);
    let outputs = |m: &Model| -> Vec<Vec<String>> {
        m.graph
            .outputs
            .iter()
            .map(|o| {
                o.shape
                    .as_ref()
                    .map(|s| s.iter().map(|d| d.to_string()).collect())
                    .unwrap_or_default()
            })
            .collect()
    };
    let input = orig
        .graph
        .inputs
        .first()
        .and_then(|i| a0.shapes.get(&i.name))
        .map(<[i64]>::to_vec)
        .unwrap_or_default();
    let frac = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    PruneReport {
        model: None,
        out: None,
        criterion,
        strategy: opts.strategy.as_str().into(),
        steps,
        scope: opts.scope.as_str().into(),
        target: opts.target,
        min_channels: opts.widths.min_channels,
        round_to: opts.widths.multiple,
        input,
        macs_before: cost0.macs,
        macs_after: cost_end.macs,
        macs_fraction: frac(cost_end.macs, cost0.macs),
        params_before: cost0.params,
        params_after: cost_end.params,
        params_fraction: frac(cost_end.params, cost0.params),
        channels_before,
        channels_after,
        kept_fraction: if channels_before == 0 {
            1.0
        } else {
            channels_after as f64 / channels_before as f64
        },
        outputs_before: outputs(orig),
        outputs_after: outputs(end),
        step_reports,
        groups,
        layers,
    }
}
