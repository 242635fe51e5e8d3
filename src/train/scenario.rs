//! The pruning scenarios of docs/retuning.md (S0–S5, after Masson et al. 2021, *Exploiting
//! prunability for person re-identification*), run with the training engine and the pruner, and
//! the recipe that makes a fresh re-id ResNet (distillation, then re-id training).
//!
//! Three kinds of training data stand in for the paper's three kinds (docs/retuning.md says what
//! this means for results):
//!
//! | kind | here | loss |
//! |---|---|---|
//! | pre-training data | the source crops with a teacher's embeddings (ImageNet MobileNetV2): no identities | distillation (cosine) |
//! | source re-id data | the source crops with their identity labels | cross-entropy + triplet (BoT) |
//! | target data | the target tracklets, no identities: pseudo-labels by clustering, refreshed every epoch | cross-entropy + triplet |
//!
//! | scenario | what runs |
//! |---|---|
//! | S0 | nothing: the input model (direct transfer) |
//! | S1 | prune, re-tuning by distillation between steps (half the budget); fine-tune on source (half) |
//! | S2 | train on source with soft pruning at every epoch end (the pruner's selection for a target ramping to the goal), then delete the zeroed channels |
//! | S3 | fine-tune on source (half); prune, re-tuning on source between steps (half) |
//! | S4 | prune, re-tuning on target pseudo-identities between steps (on-site) |
//! | S5 | a fresh, uniformly narrower ResNet of the same cost as the pruned one: distillation (half), target re-tuning (half) |
//!
//! A target of 1.0 (the default) prunes nothing: S4 is then plain on-site re-tuning.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::augment::AugmentConfig;
use super::batch::assemble;
use super::distill::{DistillConfig, Teacher, teacher_batch};
use super::export::{ExportOptions, export};
use super::layout::{BnSource, NetLayout};
use super::model::ReidModel;
use super::prune_hooks::{TaylorAccumulator, soft_prune};
use super::pseudo::PseudoConfig;
use super::sampler::{PkConfig, epoch_seed, pk_epoch};
use super::site::SiteData;
use super::trainer::{
    Cancel, DecayKind, RunControl, TrainConfig, TrainData, Trainer, epoch_batches,
};
use super::{TrainError, device};
use crate::frame::Normalize;
use crate::onnx::{Model, cost, shape};
use crate::prune::criteria::{self, ActivationScorer, ChannelScorer, Criterion, GradientSource};
use crate::prune::groups::{self, AnalyzeOptions};
use crate::prune::strategy::{CostModel, Planner, Selection, ratio_for_macs};
use crate::prune::{
    self, PruneError, PruneOptions, RetuneHook, Scope, StepInfo, StrategyKind, Target,
    TaylorScorer, WidthPolicy,
};

/// Metadata key of models written by `crosscam retune` / `crosscam train`.
pub const META_RETUNE: &str = "crosscam.retune";

/// The scenarios of docs/retuning.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
pub enum Scenario {
    /// No pruning, no training: direct transfer of the input model.
    #[value(name = "S0", alias = "s0")]
    S0,
    /// Prune on pre-training data (distillation from the teacher), then fine-tune on source re-id data.
    #[value(name = "S1", alias = "s1")]
    S1,
    /// Prune while fine-tuning on source re-id data (soft, progressive).
    #[value(name = "S2", alias = "s2")]
    S2,
    /// Fine-tune on source re-id data, then prune and re-tune on it.
    #[value(name = "S3", alias = "s3")]
    S3,
    /// Prune and re-tune on the target's own unlabelled footage (on-site).
    #[value(name = "S4", alias = "s4")]
    S4,
    /// A smaller unpruned ResNet of similar cost, trained the same way (comparator).
    #[value(name = "S5", alias = "s5")]
    S5,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::S0,
        Scenario::S1,
        Scenario::S2,
        Scenario::S3,
        Scenario::S4,
        Scenario::S5,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::S0 => "S0",
            Scenario::S1 => "S1",
            Scenario::S2 => "S2",
            Scenario::S3 => "S3",
            Scenario::S4 => "S4",
            Scenario::S5 => "S5",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Scenario::S0 => "no pruning, direct transfer",
            Scenario::S1 => {
                "prune on pre-training data (distillation from the teacher), then fine-tune on source re-id data"
            }
            Scenario::S2 => "prune while fine-tuning on source re-id data (soft, progressive)",
            Scenario::S3 => "fine-tune on source re-id data, then prune + re-tune on it",
            Scenario::S4 => "prune + re-tune on the target's unlabelled footage (on-site)",
            Scenario::S5 => {
                "a fresh narrower ResNet of the same cost: distillation, then target re-tuning"
            }
        }
    }

    /// Needs a teacher (distillation phases).
    pub fn needs_teacher(self) -> bool {
        matches!(self, Scenario::S1 | Scenario::S5)
    }

    /// Needs identity-labelled source crops.
    pub fn needs_labels(self) -> bool {
        matches!(self, Scenario::S1 | Scenario::S2 | Scenario::S3)
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown scenario {s:?} (known: S0, S1, S2, S3, S4, S5)"))
    }
}

/// How much training a run may do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// Passes over each phase's data (an epoch = one P×K pass; fractions allowed).
    Epochs(f64),
    /// Wall-clock seconds of training, split between phases.
    Seconds(f64),
}

impl Budget {
    /// This share of the budget.
    pub fn part(self, f: f64) -> Budget {
        match self {
            Budget::Epochs(e) => Budget::Epochs(e * f),
            Budget::Seconds(s) => Budget::Seconds(s * f),
        }
    }
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Budget::Epochs(e) => write!(f, "{e}ep"),
            Budget::Seconds(s) => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Budget, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Budget {
    type Err = String;
    /// `3ep`, `2.5 epochs`, `90s`, `10m`, `1.5h`, `1h30m`.
    fn from_str(s: &str) -> Result<Budget, String> {
        let t = s.trim().to_ascii_lowercase().replace(' ', "");
        let bad = || {
            format!(
                "budget {s:?}: expected epochs (3ep, 2.5epochs) or a time (90s, 10m, 1.5h, 1h30m)"
            )
        };
        for suffix in ["epochs", "epoch", "ep"] {
            if let Some(n) = t.strip_suffix(suffix) {
                let e: f64 = n.parse().map_err(|_| bad())?;
                return if e > 0.0 && e.is_finite() {
                    Ok(Budget::Epochs(e))
                } else {
                    Err(bad())
                };
            }
        }
        // a sum of number+unit parts: 1h30m, 90s, 10m
        let mut total = 0.0;
        let mut num = String::new();
        let mut any = false;
        let mut chars = t.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
                continue;
            }
            let mut unit = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphabetic() {
                    unit.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            let v: f64 = num.parse().map_err(|_| bad())?;
            num.clear();
            total += v * match unit.as_str() {
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            any = true;
        }
        if !num.is_empty() || !any || total <= 0.0 || !total.is_finite() {
            return Err(bad());
        }
        Ok(Budget::Seconds(total))
    }
}

/// Settings of a re-tuning run.
#[derive(Clone, Debug)]
pub struct RetuneOptions {
    pub scenario: Scenario,
    pub budget: Budget,
    /// Keep this fraction of the input model's MACs (1.0 = no pruning).
    pub target_macs: f64,
    pub criterion: Criterion,
    pub strategy: StrategyKind,
    /// Steps of the iterative strategy (re-tuning after each).
    pub steps: usize,
    pub scope: Scope,
    pub widths: WidthPolicy,
    pub seed: u64,
    /// Identities × crops per batch (P is lowered to the identities a phase has).
    pub pk: PkConfig,
    /// Peak learning rate (Adam; linear warm-up over 10 % of a phase, cosine decay).
    pub lr: f64,
    /// Batches of forward/backward passes that the `taylor` criterion accumulates per step.
    pub taylor_batches: usize,
    /// Calibration crops for `apoz` / `mean-activation`.
    pub calibration_images: usize,
    /// No progress lines.
    pub quiet: bool,
}

impl Default for RetuneOptions {
    fn default() -> RetuneOptions {
        RetuneOptions {
            scenario: Scenario::S4,
            budget: Budget::Epochs(2.0),
            target_macs: 1.0,
            criterion: Criterion::L1,
            strategy: StrategyKind::OneShot,
            steps: prune::DEFAULT_STEPS,
            scope: Scope::Layer,
            widths: WidthPolicy::default(),
            seed: 0,
            pk: PkConfig { p: 8, k: 4 },
            lr: 3.5e-4,
            taylor_batches: 4,
            calibration_images: 64,
            quiet: false,
        }
    }
}

/// The crops a run may train on.
#[derive(Clone, Debug, Default)]
pub struct RetuneData {
    /// Source crops, with identity labels where the scenario uses them (S1–S3); also the
    /// pre-training crops of the distillation phases (S1, S5), labels unused.
    pub source: SiteData,
    /// Target tracklets; labels are never used (S4, S5).
    pub target: SiteData,
}

/// What a run may use besides its data.
pub struct RetuneControl<'a> {
    pub cancel: Cancel,
    /// The distillation teacher (S1, S5, and fresh networks).
    pub teacher: Option<&'a mut dyn Teacher>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetuneError {
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Prune(#[from] PruneError),
    #[error("{0}")]
    Invalid(String),
}

/// One training phase of a run.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub name: String,
    /// `pretrain` (distillation), `source` (identities) or `target` (pseudo-identities).
    pub data: String,
    pub crops: usize,
    /// Identities (source), tracklets (pre-training, target) at the start.
    pub labels: usize,
    pub steps: u64,
    pub epochs: u64,
    pub seconds: f64,
    pub images_per_second: f64,
    pub first_loss: Option<f32>,
    pub last_loss: Option<f32>,
    /// Pseudo-identities of the last clustering (target phases).
    pub pseudo_identities: Option<usize>,
    /// Stopped by the time budget before its planned last step.
    pub deadline_hit: bool,
}

/// What pruning did.
#[derive(Clone, Debug, Serialize)]
pub struct PruneSummary {
    pub criterion: String,
    pub strategy: String,
    pub steps: usize,
    pub scope: String,
    /// MACs after each pruning step, as a fraction of the original.
    pub step_macs_fraction: Vec<f64>,
    pub channels_before: usize,
    pub channels_after: usize,
}

/// What a run did (evaluation is the caller's: it owns the held-out data).
#[derive(Clone, Debug, Serialize)]
pub struct RetuneReport {
    pub scenario: String,
    pub description: String,
    pub criterion: Option<String>,
    pub target_macs: f64,
    pub budget: String,
    pub seed: u64,
    /// Height and width of the network input.
    pub input: [usize; 2],
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub feature_dim_before: usize,
    pub feature_dim_after: usize,
    pub prune: Option<PruneSummary>,
    pub phases: Vec<PhaseReport>,
    pub seconds: f64,
}

/// The result: the serving model (BatchNorm folded) and the report.
pub struct Retuned {
    pub model: Model,
    pub report: RetuneReport,
}

/// MACs and parameters of a model for one input.
pub fn model_cost(model: &Model) -> Result<(u64, u64), RetuneError> {
    let mut m = model.clone();
    m.graph
        .fold_constant_nodes()
        .map_err(|e| RetuneError::Invalid(e.to_string()))?;
    let shapes = shape::infer(
        &m,
        &shape::input_shapes(&m, 1, None).map_err(|e| RetuneError::Invalid(e.to_string()))?,
    );
    let c = cost::cost(&m, &shapes).map_err(|e| RetuneError::Invalid(e.to_string()))?;
    Ok((c.macs, c.params))
}

fn feature_dim(model: &Model) -> usize {
    crate::reid::EmbedderSpec::from_model(model)
        .map(|s| s.dim)
        .unwrap_or(0)
}

/// Which data a phase trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pretrain,
    Source,
    Target,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Pretrain => "pretrain",
            Kind::Source => "source",
            Kind::Target => "target",
        }
    }
}

/// Pseudo-label settings for `n` target tracklets: SpCL's (k1 20, k2 6, eps 0.6) for large
/// sites; on small ones the k-reciprocal neighbourhoods shrink with the site (k1 = n/4, at least
/// 4), or every tracklet would be every other's neighbour and DBSCAN would merge everyone.
pub fn pseudo_config(n: usize) -> PseudoConfig {
    let d = PseudoConfig::default();
    let k1 = (n / 4).clamp(4, d.jaccard.k1);
    let k2 = (k1 / 3).clamp(2, d.jaccard.k2);
    PseudoConfig {
        jaccard: super::cluster::JaccardConfig { k1, k2 },
        ..d
    }
}

/// State shared by the phases of one run.
struct Ctx<'a> {
    data: &'a RetuneData,
    opts: &'a RetuneOptions,
    cancel: Cancel,
    teacher: Option<&'a mut dyn Teacher>,
    device: Device,
    norm: Normalize,
    phases: Vec<PhaseReport>,
}

impl<'a> Ctx<'a> {
    fn check_cancel(&self) -> Result<(), RetuneError> {
        if self.cancel.is_cancelled() {
            Err(RetuneError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// The phase's samples. `pseudo`: target tracklets re-clustered during training.
    fn train_data(
        &self,
        kind: Kind,
        hw: (usize, usize),
        pseudo: bool,
    ) -> Result<TrainData, RetuneError> {
        let d = match kind {
            Kind::Pretrain => {
                let (imgs, labels) = self.data.source.by_tracklet();
                TrainData::labelled(&imgs, &labels, hw, self.norm)?
            }
            Kind::Source => {
                let (imgs, labels) = self.data.source.by_identity();
                if imgs.is_empty() {
                    return Err(RetuneError::Invalid(
                        "this scenario needs identity-labelled source crops, and the data has none"
                            .into(),
                    ));
                }
                TrainData::labelled(&imgs, &labels, hw, self.norm)?
            }
            Kind::Target if pseudo => {
                let mut d =
                    TrainData::from_tracklets(self.data.target.tracklets.clone(), hw, self.norm)?;
                // operators' labels (the gate's share is already held out by the job)
                d.constraints = self.data.target.constraints();
                d
            }
            Kind::Target => {
                let (imgs, labels) = self.data.target.by_tracklet();
                TrainData::labelled(&imgs, &labels, hw, self.norm)?
            }
        };
        if d.set.classes() < 2 {
            return Err(RetuneError::Invalid(format!(
                "the {} data has {} identities/tracklets; training needs at least 2",
                kind.as_str(),
                d.set.classes()
            )));
        }
        Ok(d)
    }

    fn config(&self, kind: Kind, hw: (usize, usize), classes: usize, seed: u64) -> TrainConfig {
        let o = self.opts;
        let pad = ((10.0 * hw.0 as f64 / 256.0).round() as u32).max(1);
        let base = TrainConfig {
            seed,
            epochs: 1,
            steps_per_epoch: 0,
            pk: PkConfig {
                p: o.pk.p.min(classes).max(2),
                k: o.pk.k,
            },
            lr: o.lr,
            warmup: 0.1,
            decay: DecayKind::Cosine { min_factor: 0.01 },
            augment: AugmentConfig {
                pad,
                ..AugmentConfig::default()
            },
            ..TrainConfig::default()
        };
        match kind {
            Kind::Pretrain => TrainConfig {
                ce_weight: 0.0,
                triplet_weight: 0.0,
                distill: Some(DistillConfig::default()),
                ..base
            },
            Kind::Source => base,
            Kind::Target => TrainConfig {
                pseudo: Some(pseudo_config(self.data.target.len())),
                ..base
            },
        }
    }

    fn teacher_dim(&self, kind: Kind) -> Result<Option<usize>, RetuneError> {
        match kind {
            Kind::Pretrain => match &self.teacher {
                Some(t) => Ok(Some(t.dim())),
                None => Err(RetuneError::Invalid(
                    "distillation needs a teacher model (--teacher)".into(),
                )),
            },
            _ => Ok(None),
        }
    }

    /// Trains `model` on `kind` data within `budget`; the training heads are dropped after.
    fn train(
        &mut self,
        model: ReidModel,
        kind: Kind,
        budget: Budget,
        name: &str,
        min_epochs: u64,
        epoch_hook: Option<&mut super::trainer::EpochHook<'_>>,
    ) -> Result<ReidModel, RetuneError> {
        self.check_cancel()?;
        let hw = model.layout.input_hw;
        let mut data = self.train_data(kind, hw, kind == Kind::Target)?;
        let seed = self.opts.seed.wrapping_add(self.phases.len() as u64 * 7919);
        let mut cfg = self.config(kind, hw, data.set.classes(), seed);
        let pass = pk_epoch(&data.set.labels, cfg.pk, epoch_seed(cfg.seed, 0))
            .len()
            .max(1) as f64;
        let teacher_dim = self.teacher_dim(kind)?;
        let (steps, deadline) = match budget {
            Budget::Epochs(e) => ((e * pass).round().max(1.0) as u64, None),
            Budget::Seconds(s) => {
                let per = self.probe_step(&model, &data, &cfg, teacher_dim, kind)?;
                let steps = (s / per.max(1e-3)).floor().max(1.0) as u64;
                let slack = Duration::from_secs_f64(s * 0.15 + 5.0);
                (
                    steps,
                    Some(Instant::now() + Duration::from_secs_f64(s) + slack),
                )
            }
        };
        let epochs = ((steps as f64 / pass).round() as u64)
            .max(min_epochs)
            .clamp(1, steps.max(1));
        cfg.epochs = epochs;
        cfg.steps_per_epoch = steps.div_ceil(epochs);
        let crops = data.set.len();
        let labels = data.set.classes();
        let trainer = Trainer::new(model, &data, cfg, teacher_dim)?;
        let teacher = match kind {
            Kind::Pretrain => self.teacher.as_deref_mut().map(|t| t as &mut dyn Teacher),
            _ => None,
        };
        let ctl = RunControl {
            cancel: self.cancel.clone(),
            quiet: self.opts.quiet,
            teacher,
            on_epoch_end: epoch_hook.map(|h| h as &mut super::trainer::EpochHook<'_>),
            deadline,
            label: Some(name.to_string()),
            ..RunControl::default()
        };
        let out = trainer.run(&mut data, ctl)?;
        if out.cancelled {
            return Err(RetuneError::Cancelled);
        }
        self.phases.push(PhaseReport {
            name: name.to_string(),
            data: kind.as_str().into(),
            crops,
            labels,
            steps: out.steps,
            epochs,
            seconds: out.seconds,
            images_per_second: out.images_per_second,
            first_loss: out.losses.first().copied(),
            last_loss: out.losses.last().copied(),
            pseudo_identities: out.pseudo.as_ref().map(|p| p.identities()),
            deadline_hit: out.deadline_hit,
        });
        let mut m = out.model;
        m.net.classifier = None;
        m.net.projection = None;
        Ok(m)
    }

    /// Seconds of one training step of this phase (one real step on a copy of the model).
    fn probe_step(
        &mut self,
        model: &ReidModel,
        data: &TrainData,
        cfg: &TrainConfig,
        teacher_dim: Option<usize>,
        kind: Kind,
    ) -> Result<f64, RetuneError> {
        let mut t = Trainer::new(model.clone(), data, cfg.clone(), teacher_dim)?;
        let batches = epoch_batches(&data.set.labels, cfg.pk, cfg.seed, 0, 1);
        let Some(b) = batches.first() else {
            return Ok(1.0);
        };
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let want = kind == Kind::Pretrain;
        let batch = assemble(&data.set, b, &cfg.augment, &data.norm, &mut rng, want);
        let teacher = match (want, self.teacher.as_deref_mut()) {
            (true, Some(tch)) => Some(teacher_batch(tch, &batch.views, &t.model.device())?),
            _ => None,
        };
        t.train_step(&batch, teacher, None);
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Taylor scores of every conv of `model` (by the node name in `model`), from the
    /// batch-hard triplet loss on the phase's labels (tracklets for pre-training and target
    /// data, identities for source data), accumulated over `taylor_batches` batches.
    fn taylor(
        &mut self,
        model: &Model,
        kind: Kind,
    ) -> Result<HashMap<String, Vec<f32>>, RetuneError> {
        self.check_cancel()?;
        let rm = ReidModel::from_onnx(model, &self.device)?;
        let hw = rm.layout.input_hw;
        let data = match kind {
            Kind::Source => self.train_data(Kind::Source, hw, false)?,
            _ => {
                let site = if kind == Kind::Target {
                    &self.data.target
                } else {
                    &self.data.source
                };
                let (imgs, labels) = site.by_tracklet();
                TrainData::labelled(&imgs, &labels, hw, self.norm)?
            }
        };
        let cfg = TrainConfig {
            ce_weight: 0.0,
            triplet_weight: 1.0,
            distill: None,
            pseudo: None,
            ..self.config(Kind::Source, hw, data.set.classes(), self.opts.seed)
        };
        let names: Vec<(String, String)> = rm
            .layout
            .convs()
            .iter()
            .map(|c| (c.name.clone(), c.source.clone()))
            .collect();
        let trainer = Trainer::new(rm, &data, cfg.clone(), None)?;
        let mut acc = TaylorAccumulator::new(&trainer.model);
        let n = self.opts.taylor_batches.max(1) as u64;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x7a7);
        for b in epoch_batches(&data.set.labels, cfg.pk, cfg.seed, 0, n) {
            self.check_cancel()?;
            let batch = assemble(&data.set, &b, &cfg.augment, &data.norm, &mut rng, false);
            trainer.taylor_step(&batch, None, &mut acc);
        }
        Ok(acc
            .scores()
            .into_iter()
            .map(|s| {
                let src = names
                    .iter()
                    .find(|(n, _)| *n == s.conv)
                    .map(|(n, src)| {
                        if src.is_empty() {
                            n.clone()
                        } else {
                            src.clone()
                        }
                    })
                    .unwrap_or(s.conv);
                (src, s.scores)
            })
            .collect())
    }
}

/// The training engine as the pruner's gradient source (`taylor` criterion).
struct TaylorSource<'c, 'a> {
    ctx: &'c RefCell<Ctx<'a>>,
    kind: Kind,
}

impl GradientSource for TaylorSource<'_, '_> {
    fn taylor(
        &mut self,
        model: &Model,
        activations: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, Box<dyn std::error::Error + Send + Sync>> {
        let per_conv = self.ctx.borrow_mut().taylor(model, self.kind)?;
        let analysis = groups::analyze(model, &AnalyzeOptions::default())?;
        let mut out = HashMap::new();
        for g in analysis.prunable() {
            let mut members = Vec::new();
            for m in &g.producers {
                let s = per_conv.get(&m.name).ok_or_else(|| {
                    format!(
                        "no gradients for layer '{}' (only the convs of a ResNet are trained)",
                        m.name
                    )
                })?;
                members.push(s.clone());
            }
            let s = criteria::combine(&members);
            for v in &g.activations {
                if activations.contains(v) {
                    out.insert(v.clone(), s.clone());
                }
            }
        }
        Ok(out)
    }
}

/// Re-tunes between pruning steps with the trainer.
struct TrainHook<'c, 'a> {
    ctx: &'c RefCell<Ctx<'a>>,
    kind: Kind,
    per_step: Budget,
    name: String,
}

impl RetuneHook for TrainHook<'_, '_> {
    fn retune(
        &mut self,
        step: &StepInfo,
        model: &mut Model,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut ctx = self.ctx.borrow_mut();
        let rm = ReidModel::from_onnx(model, &ctx.device)?;
        let name = if step.steps > 1 {
            format!(
                "{} (after pruning step {}/{})",
                self.name, step.step, step.steps
            )
        } else {
            self.name.clone()
        };
        let rm = ctx.train(rm, self.kind, self.per_step, &name, 1, None)?;
        *model = export(
            &rm,
            &ExportOptions {
                fold_bn: false,
                norm: ctx.norm,
                ..ExportOptions::default()
            },
        );
        Ok(())
    }
}

/// Loads `model` for training; BatchNorms re-inserted into a BN-folded graph get the statistics
/// of the given crops (docs/training.md).
fn load_trainable(
    model: &Model,
    crops: &SiteData,
    norm: Normalize,
    device: &Device,
) -> Result<ReidModel, RetuneError> {
    let rm = ReidModel::from_onnx(model, device)?;
    if !rm.layout.has_reinserted_bn() {
        return Ok(rm);
    }
    let (h, w) = rm.layout.input_hw;
    let imgs = crops.sample_crops(128);
    if imgs.is_empty() {
        return Ok(rm);
    }
    let labels = vec![0i64; imgs.len()];
    let set = super::batch::TrainSet::new(&imgs, &labels, h as u32, w as u32)?;
    let mut rng = StdRng::seed_from_u64(0);
    let idx: Vec<usize> = (0..set.len()).collect();
    let plain = device.clone().inner();
    let xs: Vec<_> = idx
        .chunks(32)
        .map(|c| assemble(&set, c, &AugmentConfig::none(), &norm, &mut rng, false).tensor(&plain))
        .collect();
    Ok(rm.calibrate_reinserted_bn(xs))
}

fn scorer<'c, 'a>(
    criterion: Criterion,
    ctx: &'c RefCell<Ctx<'a>>,
    kind: Kind,
) -> Result<Box<dyn ChannelScorer + 'c>, RetuneError> {
    let c = ctx.borrow();
    Ok(match criterion {
        Criterion::Taylor => {
            drop(c);
            Box::new(TaylorScorer {
                source: TaylorSource { ctx, kind },
            })
        }
        Criterion::Apoz | Criterion::MeanActivation => {
            let site = if kind == Kind::Target {
                &c.data.target
            } else {
                &c.data.source
            };
            let imgs = site.sample_crops(c.opts.calibration_images);
            Box::new(ActivationScorer::from_images(criterion, imgs).quiet(c.opts.quiet))
        }
        other => criteria::builtin(other, None, 0, c.opts.seed, c.opts.quiet)?,
    })
}

/// Prunes `model` to the run's target with re-tuning on `kind` data between steps (the whole
/// `budget` spread over the steps).
fn prune_retune(
    ctx: &RefCell<Ctx<'_>>,
    model: &Model,
    kind: Kind,
    budget: Budget,
    name: &str,
) -> Result<(Model, Option<PruneSummary>), RetuneError> {
    let opts = ctx.borrow().opts.clone();
    let pruning = opts.target_macs < 1.0;
    let (strategy, steps) = if pruning {
        (opts.strategy, opts.steps.max(1))
    } else {
        (StrategyKind::OneShot, 1)
    };
    let nsteps = match strategy {
        StrategyKind::OneShot => 1,
        StrategyKind::Iterative => steps,
    };
    let popts = PruneOptions {
        strategy,
        steps,
        scope: opts.scope,
        target: Target::Macs(opts.target_macs.min(1.0)),
        widths: opts.widths,
        analyze: AnalyzeOptions::default(),
        quiet: opts.quiet,
    };
    let mut sc = if pruning {
        scorer(opts.criterion, ctx, kind)?
    } else {
        criteria::builtin(Criterion::L1, None, 0, 0, true)?
    };
    let mut hook = TrainHook {
        ctx,
        kind,
        per_step: budget.part(1.0 / nsteps as f64),
        name: name.to_string(),
    };
    let result = prune::prune(model, &popts, sc.as_mut(), &mut hook);
    drop(sc);
    if ctx.borrow().cancel.is_cancelled() {
        return Err(RetuneError::Cancelled);
    }
    let p = result?;
    let summary = pruning.then(|| PruneSummary {
        criterion: p.report.criterion.clone(),
        strategy: p.report.strategy.clone(),
        steps: p.report.steps,
        scope: p.report.scope.clone(),
        step_macs_fraction: p
            .report
            .step_reports
            .iter()
            .map(|s| s.macs_fraction)
            .collect(),
        channels_before: p.report.channels_before,
        channels_after: p.report.channels_after,
    });
    Ok((p.model, summary))
}

/// Runs `opts.scenario` on `input` (any ResNet re-id ONNX model the trainer recognises).
pub fn retune(
    input: &Model,
    data: &RetuneData,
    opts: &RetuneOptions,
    ctl: RetuneControl<'_>,
) -> Result<Retuned, RetuneError> {
    let t0 = Instant::now();
    let sc = opts.scenario;
    if !(opts.target_macs > 0.0 && opts.target_macs <= 1.0) {
        return Err(RetuneError::Invalid(format!(
            "--target-macs must be in (0, 1], not {}",
            opts.target_macs
        )));
    }
    if sc.needs_teacher() && ctl.teacher.is_none() {
        return Err(RetuneError::Invalid(format!(
            "{sc} distils from a teacher: give --teacher"
        )));
    }
    if sc == Scenario::S2 && matches!(opts.criterion, Criterion::Taylor) {
        return Err(RetuneError::Invalid(
            "S2 scores channels at every epoch end of one training run; use a weight criterion \
             (l1, l2, fpgm, bn-scale), apoz, mean-activation or random"
                .into(),
        ));
    }
    let spec = crate::reid::EmbedderSpec::from_model(input)
        .map_err(|e| RetuneError::Invalid(format!("the input is not an embedder: {e}")))?;
    let norm = spec.norm;
    let (macs_before, params_before) = model_cost(input)?;
    let device = device::select(false).0;
    let ctx = RefCell::new(Ctx {
        data,
        opts,
        cancel: ctl.cancel.clone(),
        teacher: ctl.teacher.map(|t| t as &mut dyn Teacher),
        device: device.clone(),
        norm,
        phases: Vec::new(),
    });
    let calib = if data.source.is_empty() {
        &data.target
    } else {
        &data.source
    };
    let rm0 = load_trainable(input, calib, norm, &device)?;
    let input_hw = rm0.layout.input_hw;
    let kept = ExportOptions {
        fold_bn: false,
        norm,
        ..ExportOptions::default()
    };
    let canonical = export(&rm0, &kept);
    let half = opts.budget.part(0.5);
    let (trained, prune_summary): (Option<ReidModel>, Option<PruneSummary>) = match sc {
        Scenario::S0 => (None, None),
        Scenario::S1 => {
            let (m, s) = prune_retune(
                &ctx,
                &canonical,
                Kind::Pretrain,
                half,
                "S1 pruning on pre-training data",
            )?;
            let rm = ReidModel::from_onnx(&m, &device)?;
            let rm = ctx.borrow_mut().train(
                rm,
                Kind::Source,
                half,
                "S1 fine-tuning on source",
                1,
                None,
            )?;
            (Some(rm), s)
        }
        Scenario::S2 => {
            let (rm, s) = soft_prune_run(&ctx, rm0, opts)?;
            (Some(rm), s)
        }
        Scenario::S3 => {
            let rm = ctx.borrow_mut().train(
                rm0,
                Kind::Source,
                half,
                "S3 fine-tuning on source",
                1,
                None,
            )?;
            let (m, s) = prune_retune(
                &ctx,
                &export(&rm, &kept),
                Kind::Source,
                half,
                "S3 re-tuning on source",
            )?;
            (Some(ReidModel::from_onnx(&m, &device)?), s)
        }
        Scenario::S4 => {
            let (m, s) = prune_retune(
                &ctx,
                &canonical,
                Kind::Target,
                opts.budget,
                "S4 re-tuning on target",
            )?;
            (Some(ReidModel::from_onnx(&m, &device)?), s)
        }
        Scenario::S5 => {
            let layout = scaled_to(
                &rm0.layout,
                macs_fraction_goal(&rm0.layout, opts.target_macs),
                opts.widths.multiple.max(1),
            );
            let fresh = ReidModel::fresh(layout, opts.seed, &device);
            let rm = ctx.borrow_mut().train(
                fresh,
                Kind::Pretrain,
                half,
                "S5 distillation (fresh narrower network)",
                1,
                None,
            )?;
            let rm = ctx.borrow_mut().train(
                rm,
                Kind::Target,
                half,
                "S5 re-tuning on target",
                1,
                None,
            )?;
            (Some(rm), None)
        }
    };
    let ctx = ctx.into_inner();
    let model = match trained {
        None => input.clone(),
        Some(rm) => {
            let mut m = export(
                &rm,
                &ExportOptions {
                    fold_bn: true,
                    norm,
                    ..ExportOptions::default()
                },
            );
            m.set_metadata(
                META_RETUNE,
                &format!(
                    "scenario={} criterion={} target_macs={} budget={} seed={}",
                    sc, opts.criterion, opts.target_macs, opts.budget, opts.seed
                ),
            );
            m
        }
    };
    let (macs_after, params_after) = model_cost(&model)?;
    Ok(Retuned {
        report: RetuneReport {
            scenario: sc.as_str().into(),
            description: sc.description().into(),
            criterion: (opts.target_macs < 1.0 && !matches!(sc, Scenario::S0 | Scenario::S5))
                .then(|| opts.criterion.to_string()),
            target_macs: opts.target_macs,
            budget: opts.budget.to_string(),
            seed: opts.seed,
            input: [input_hw.0, input_hw.1],
            macs_before,
            macs_after,
            params_before,
            params_after,
            feature_dim_before: feature_dim(input),
            feature_dim_after: feature_dim(&model),
            prune: prune_summary,
            phases: ctx.phases,
            seconds: t0.elapsed().as_secs_f64(),
        },
        model,
    })
}

/// Channels zeroed per conv (canonical names).
type SoftPlan = Vec<(String, Vec<usize>)>;

/// S2: one training run on source data; at every epoch end the pruner picks, for a MACs goal
/// ramping linearly from 1 to the target over the epochs, the channels to keep, and the others
/// are zeroed but stay trainable (soft pruning; they may come back at the next selection). At the
/// last epoch end BatchNorm is zeroed too, so the zeroed channels are exactly absent, and they are
/// deleted.
fn soft_prune_run(
    ctx: &RefCell<Ctx<'_>>,
    rm0: ReidModel,
    opts: &RetuneOptions,
) -> Result<(ReidModel, Option<PruneSummary>), RetuneError> {
    let norm = ctx.borrow().norm;
    let kept = ExportOptions {
        fold_bn: false,
        norm,
        ..ExportOptions::default()
    };
    if opts.target_macs >= 1.0 {
        let rm = ctx.borrow_mut().train(
            rm0,
            Kind::Source,
            opts.budget,
            "S2 fine-tuning on source",
            1,
            None,
        )?;
        return Ok((rm, None));
    }
    let mut sc = match opts.criterion {
        Criterion::Apoz | Criterion::MeanActivation => {
            let c = ctx.borrow();
            let imgs = c.data.source.sample_crops(opts.calibration_images);
            Box::new(ActivationScorer::from_images(opts.criterion, imgs).quiet(true))
                as Box<dyn ChannelScorer>
        }
        c => criteria::builtin(c, None, 0, opts.seed, true)?,
    };
    let last: RefCell<Option<(Selection, SoftPlan)>> = RefCell::new(None);
    let steps_macs: RefCell<Vec<f64>> = RefCell::new(Vec::new());
    let target = opts.target_macs;
    let mut hook = |epoch: u64, epochs: u64, model: ReidModel| -> Result<ReidModel, TrainError> {
        let total = epochs.max(1);
        let done = ((epoch + 1) as f64 / total as f64).min(1.0);
        let goal = 1.0 - (1.0 - target) * done;
        let onnx = export(&model, &kept);
        let bad = |e: PruneError| TrainError::Invalid(format!("soft pruning: {e}"));
        let a = groups::analyze(&onnx, &AnalyzeOptions::default()).map_err(bad)?;
        let scores = sc.score(&onnx, &a).map_err(bad)?;
        let planner = Planner::new(&a, scores, opts.scope, opts.widths).map_err(bad)?;
        let cm = CostModel::new(&onnx, &a);
        let (_, counts) = ratio_for_macs(&planner, &cm, goal).map_err(bad)?;
        steps_macs
            .borrow_mut()
            .push(cm.macs(&counts) / cm.total.max(1.0));
        let sel = planner.select(&counts);
        let mut plan = Vec::new();
        for g in a.prunable() {
            if let Some(keep) = &sel.keep[g.id] {
                let dropped: Vec<usize> = (0..g.channels).filter(|c| !keep.contains(c)).collect();
                for m in &g.producers {
                    plan.push((m.name.clone(), dropped.clone()));
                }
            }
        }
        let last_epoch = epoch + 1 >= total;
        let m = soft_prune(model, &plan, last_epoch);
        *last.borrow_mut() = Some((sel, plan));
        Ok(m)
    };
    let rm = ctx.borrow_mut().train(
        rm0,
        Kind::Source,
        opts.budget,
        "S2 fine-tuning on source with soft pruning",
        3,
        Some(&mut hook as &mut super::trainer::EpochHook<'_>),
    )?;
    let Some((sel, plan)) = last.into_inner() else {
        return Err(RetuneError::Invalid(
            "S2: no epoch ended; raise the budget".into(),
        ));
    };
    // exactly absent channels (also when the run stopped before its last epoch)
    let rm = soft_prune(rm, &plan, true);
    let onnx = export(&rm, &kept);
    let a = groups::analyze(&onnx, &AnalyzeOptions::default())?;
    let channels_before: usize = a.prunable().map(|g| g.channels).sum();
    let channels_after: usize = a
        .prunable()
        .map(|g| {
            sel.keep[g.id]
                .as_ref()
                .map(|k| k.len())
                .unwrap_or(g.channels)
        })
        .sum();
    let pruned = prune::apply::apply(&onnx, &a, &sel, &AnalyzeOptions::default())?;
    let rm = ReidModel::from_onnx(&pruned, &ctx.borrow().device)?;
    let step_macs_fraction = steps_macs.into_inner();
    Ok((
        rm,
        Some(PruneSummary {
            criterion: opts.criterion.to_string(),
            strategy: "soft (progressive, every epoch)".into(),
            steps: step_macs_fraction.len(),
            scope: opts.scope.as_str().into(),
            step_macs_fraction,
            channels_before,
            channels_after,
        }),
    ))
}

/// The uniform width factor whose network has `target` of `layout`'s MACs.
fn macs_fraction_goal(layout: &NetLayout, target: f64) -> f64 {
    let full = layout.conv_macs() as f64;
    let mut best = (1.0, f64::MAX);
    let mut f = 0.05;
    while f <= 1.0 + 1e-9 {
        let m = scaled_to(layout, f, 8).conv_macs() as f64 / full.max(1.0);
        if (m - target).abs() < best.1 {
            best = (f, (m - target).abs());
        }
        f += 0.005;
    }
    best.0
}

/// `layout` with every width multiplied by `f` (rounded to a multiple of `multiple`, at least
/// `multiple`): the same depth and block structure, narrower. Fresh BatchNorms everywhere.
pub fn scaled_to(layout: &NetLayout, f: f64, multiple: usize) -> NetLayout {
    let m = multiple.max(1);
    let r = |c: usize| (((c as f64 * f) / m as f64).round() as usize).max(1) * m;
    let mut out = layout.clone();
    out.stem.cout = r(layout.stem.cout);
    out.stem.bn = BnSource::Kept;
    out.stem.source = String::new();
    let mut x = out.stem.cout;
    for b in &mut out.blocks {
        let block_in = x;
        let n = b.main.len();
        let width = if b.downsample.is_some() {
            r(b.cout())
        } else {
            block_in
        };
        let mut cin = block_in;
        for (j, c) in b.main.iter_mut().enumerate() {
            c.cin = cin;
            c.cout = if j + 1 == n { width } else { r(c.cout) };
            c.bn = BnSource::Kept;
            c.source = String::new();
            cin = c.cout;
        }
        if let Some(d) = &mut b.downsample {
            d.cin = block_in;
            d.cout = width;
            d.bn = BnSource::Kept;
            d.source = String::new();
        }
        x = width;
    }
    out
}

/// Settings of [`train_fresh`]: a new network, distilled from a teacher and then trained for
/// re-id.
#[derive(Clone, Debug)]
pub struct FreshOptions {
    pub layout: NetLayout,
    /// Distillation budget (`Epochs(0)` or less skips it).
    pub distill: Budget,
    /// Re-id training budget.
    pub reid: Budget,
    /// Re-id labels: the source identities (`false`) or target pseudo-identities (`true`).
    pub pseudo: bool,
    pub norm: Normalize,
    pub run: RetuneOptions,
}

/// Makes a new re-id network: fresh weights (seeded), distillation from the teacher on the
/// source crops, then re-id training on identities or pseudo-identities.
pub fn train_fresh(
    data: &RetuneData,
    opts: &FreshOptions,
    ctl: RetuneControl<'_>,
) -> Result<Retuned, RetuneError> {
    let t0 = Instant::now();
    let device = device::select(false).0;
    let distilling = matches!(opts.distill, Budget::Epochs(e) if e > 0.0)
        || matches!(opts.distill, Budget::Seconds(s) if s > 0.0);
    if distilling && ctl.teacher.is_none() {
        return Err(RetuneError::Invalid(
            "distillation needs a teacher (--teacher)".into(),
        ));
    }
    let mut ctx = Ctx {
        data,
        opts: &opts.run,
        cancel: ctl.cancel.clone(),
        teacher: ctl.teacher.map(|t| t as &mut dyn Teacher),
        device: device.clone(),
        norm: opts.norm,
        phases: Vec::new(),
    };
    let mut rm = ReidModel::fresh(opts.layout.clone(), opts.run.seed, &device);
    let fresh_model = export(
        &rm,
        &ExportOptions {
            norm: opts.norm,
            ..ExportOptions::default()
        },
    );
    if distilling {
        rm = ctx.train(
            rm,
            Kind::Pretrain,
            opts.distill,
            "distillation from the teacher",
            1,
            None,
        )?;
    }
    let (kind, name) = if opts.pseudo {
        (
            Kind::Target,
            "re-id training on pseudo-identities (tracklets + clustering)",
        )
    } else {
        (Kind::Source, "re-id training on identities")
    };
    rm = ctx.train(rm, kind, opts.reid, name, 1, None)?;
    let mut model = export(
        &rm,
        &ExportOptions {
            norm: opts.norm,
            ..ExportOptions::default()
        },
    );
    model.set_metadata(
        META_RETUNE,
        &format!(
            "fresh network: distill={} reid={} labels={} seed={}",
            opts.distill,
            opts.reid,
            if opts.pseudo { "pseudo" } else { "identities" },
            opts.run.seed
        ),
    );
    let (macs, params) = model_cost(&model)?;
    let (macs0, params0) = model_cost(&fresh_model)?;
    let hw = opts.layout.input_hw;
    Ok(Retuned {
        report: RetuneReport {
            scenario: "fresh".into(),
            description: "a new network: distillation from the teacher, then re-id training".into(),
            criterion: None,
            target_macs: 1.0,
            budget: format!("distill {} + re-id {}", opts.distill, opts.reid),
            seed: opts.run.seed,
            input: [hw.0, hw.1],
            macs_before: macs0,
            macs_after: macs,
            params_before: params0,
            params_after: params,
            feature_dim_before: opts.layout.feature_dim(),
            feature_dim_after: feature_dim(&model),
            prune: None,
            phases: ctx.phases,
            seconds: t0.elapsed().as_secs_f64(),
        },
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::ResNetSpec;

    #[test]
    fn budgets_parse() {
        assert_eq!("3ep".parse::<Budget>().unwrap(), Budget::Epochs(3.0));
        assert_eq!("2.5 epochs".parse::<Budget>().unwrap(), Budget::Epochs(2.5));
        assert_eq!("90s".parse::<Budget>().unwrap(), Budget::Seconds(90.0));
        assert_eq!("10m".parse::<Budget>().unwrap(), Budget::Seconds(600.0));
        assert_eq!("1h30m".parse::<Budget>().unwrap(), Budget::Seconds(5400.0));
        assert_eq!("1.5h".parse::<Budget>().unwrap(), Budget::Seconds(5400.0));
        for bad in ["", "3", "ep", "-1ep", "10x", "0s", "1h30"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
        assert_eq!("S4".parse::<Scenario>().unwrap(), Scenario::S4);
        assert_eq!("s1".parse::<Scenario>().unwrap(), Scenario::S1);
        assert!("S9".parse::<Scenario>().is_err());
    }

    #[test]
    fn the_s5_comparator_is_narrower_at_the_asked_cost() {
        let l = NetLayout::from_spec(&ResNetSpec::resnet18().for_reid().with_input(128, 64), true);
        let f = macs_fraction_goal(&l, 0.5);
        let s = scaled_to(&l, f, 8);
        let frac = s.conv_macs() as f64 / l.conv_macs() as f64;
        assert!((frac - 0.5).abs() < 0.05, "{f} → {frac}");
        assert!(s.feature_dim() < l.feature_dim());
        // shapes chain: every conv reads what the previous one wrote
        let mut x = s.stem.cout;
        for b in &s.blocks {
            assert_eq!(b.main[0].cin, x);
            for w in b.main.windows(2) {
                assert_eq!(w[0].cout, w[1].cin);
            }
            if let Some(d) = &b.downsample {
                assert_eq!((d.cin, d.cout), (x, b.cout()));
            } else {
                assert_eq!(b.cout(), x);
            }
            x = b.cout();
        }
        assert_eq!(scaled_to(&l, 1.0, 8), l);
    }

    use crate::onnx::resnet::{Head, Init, Style, build};
    use crate::train::pseudo::TrackletCrops;
    use image::RgbImage;
    use rand::Rng;
    use std::sync::Arc;

    /// `people` persons, each one tracklet of `per` crops in camera c1 and one in c2 (darker),
    /// coloured top/bottom patterns with noise.
    fn site(people: usize, per: usize, seed: u64) -> SiteData {
        let mut r = StdRng::seed_from_u64(seed);
        let mut s = SiteData::default();
        for id in 0..people {
            let top = [
                (40 * id % 220) as u8 + 20,
                (90 * id % 220) as u8 + 20,
                (150 * id % 220) as u8 + 20,
            ];
            let bottom = [top[2], top[0], top[1]];
            for (cam, gain) in [("c1", 1.0f32), ("c2", 0.7)] {
                let crops = (0..per)
                    .map(|_| {
                        let (w, h) = (r.random_range(20..32), r.random_range(48..72));
                        Arc::new(RgbImage::from_fn(w, h, |_, y| {
                            let c = if y < h / 2 { top } else { bottom };
                            image::Rgb(c.map(|v| {
                                ((v as f32 * gain) as u8).saturating_add(r.random_range(0..30))
                            }))
                        }))
                    })
                    .collect();
                let t0 = Duration::from_secs(id as u64 * 10 + if cam == "c2" { 5 } else { 0 });
                s.tracklets.push(TrackletCrops {
                    camera: cam.into(),
                    track: s.tracklets.len() as u64,
                    start: t0,
                    end: t0 + Duration::from_secs(2),
                    crops,
                });
                s.identities.push(Some(id as i64));
            }
        }
        s
    }

    fn tiny_model() -> Model {
        let spec = ResNetSpec::resnet18()
            .for_reid()
            .scaled(0.125)
            .with_input(64, 32);
        build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 3)
    }

    fn small_opts() -> RetuneOptions {
        RetuneOptions {
            budget: Budget::Epochs(1.0),
            pk: PkConfig { p: 4, k: 2 },
            lr: 3e-3,
            quiet: true,
            widths: WidthPolicy {
                min_channels: 2,
                multiple: 2,
            },
            ..RetuneOptions::default()
        }
    }

    fn ctx<'a>(data: &'a RetuneData, opts: &'a RetuneOptions) -> RefCell<Ctx<'a>> {
        RefCell::new(Ctx {
            data,
            opts,
            cancel: Cancel::new(),
            teacher: None,
            device: device::cpu().autodiff(),
            norm: Normalize::IMAGENET,
            phases: Vec::new(),
        })
    }

    fn weight(m: &Model, name: &str) -> Vec<f32> {
        m.graph.initializers[name].f32_data().unwrap().to_vec()
    }

    /// Records what the scorer sees at each step.
    struct SeenScorer(Vec<Vec<f32>>);
    impl ChannelScorer for SeenScorer {
        fn name(&self) -> String {
            "l1".into()
        }
        fn score(
            &mut self,
            model: &Model,
            a: &groups::Analysis,
        ) -> Result<Vec<Vec<f32>>, PruneError> {
            self.0.push(weight(model, "layer1.0.conv1.weight"));
            criteria::WeightScorer {
                criterion: Criterion::L1,
            }
            .score(model, a)
        }
    }

    /// Records the weights before and after each re-tune.
    struct Recorder<'c, 'a> {
        inner: TrainHook<'c, 'a>,
        log: Vec<(Vec<f32>, Vec<f32>)>,
    }
    impl RetuneHook for Recorder<'_, '_> {
        fn retune(
            &mut self,
            step: &StepInfo,
            model: &mut Model,
        ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let before = weight(model, "layer1.0.conv1.weight");
            self.inner.retune(step, model)?;
            self.log
                .push((before, weight(model, "layer1.0.conv1.weight")));
            Ok(())
        }
    }

    #[test]
    fn iterative_pruning_retunes_between_steps_and_scores_the_retuned_weights() {
        let s = site(6, 4, 1);
        let data = RetuneData {
            source: s.clone(),
            target: s.without_labels(),
        };
        let opts = small_opts();
        let c = ctx(&data, &opts);
        let input = tiny_model();
        let rm = load_trainable(
            &input,
            &data.source,
            Normalize::IMAGENET,
            &device::cpu().autodiff(),
        )
        .unwrap();
        let canonical = export(
            &rm,
            &ExportOptions {
                fold_bn: false,
                ..ExportOptions::default()
            },
        );
        let popts = PruneOptions {
            strategy: StrategyKind::Iterative,
            steps: 2,
            ..PruneOptions::new(Target::Macs(0.5))
        };
        let mut scorer = SeenScorer(Vec::new());
        let mut hook = Recorder {
            inner: TrainHook {
                ctx: &c,
                kind: Kind::Target,
                per_step: Budget::Epochs(0.5),
                name: "test".into(),
            },
            log: Vec::new(),
        };
        let p = prune::prune(&canonical, &popts, &mut scorer, &mut hook).unwrap();
        assert_eq!(hook.log.len(), 2);
        for (before, after) in &hook.log {
            assert_eq!(before.len(), after.len(), "re-tuning keeps the widths");
            assert_ne!(before, after, "re-tuning changed no weight");
        }
        // step 2 scored the re-tuned weights of step 1
        assert_eq!(scorer.0.len(), 2);
        assert_eq!(scorer.0[1], hook.log[0].1);
        assert!(
            (p.report.macs_fraction - 0.5).abs() < 0.08,
            "{}",
            p.report.macs_fraction
        );
        let phases = c.into_inner().phases;
        assert_eq!(phases.len(), 2);
        assert!(
            phases
                .iter()
                .all(|p| p.steps >= 1 && p.last_loss.is_some_and(f32::is_finite))
        );
    }

    #[test]
    fn taylor_scores_come_from_gradients_and_rank_dead_filters_last() {
        let s = site(5, 3, 2);
        let data = RetuneData {
            source: s.clone(),
            target: s.without_labels(),
        };
        let opts = small_opts();
        let c = ctx(&data, &opts);
        let mut m = export(
            &ReidModel::from_onnx(&tiny_model(), &device::cpu()).unwrap(),
            &ExportOptions {
                fold_bn: false,
                ..ExportOptions::default()
            },
        );
        // three dead filters in a free conv: w = 0, so Σ g·w = 0 whatever the gradient
        let w = m
            .graph
            .initializers
            .get_mut("layer1.0.conv1.weight")
            .unwrap();
        let per = w.dims[1..].iter().product::<usize>();
        let mut v = w.f32_data().unwrap().to_vec();
        v[..3 * per].iter_mut().for_each(|x| *x = 0.0);
        *w = crate::onnx::Tensor::f32(w.dims.clone(), v);
        let a = groups::analyze(&m, &AnalyzeOptions::default()).unwrap();
        let mut sc = scorer(Criterion::Taylor, &c, Kind::Target).unwrap();
        assert_eq!(sc.name(), "taylor");
        let scores = sc.score(&m, &a).unwrap();
        let g = a
            .groups
            .iter()
            .find(|g| g.name == "layer1.0.conv1")
            .unwrap();
        let gs = &scores[g.id];
        assert_eq!(&gs[..3], &[0.0, 0.0, 0.0]);
        assert!(
            gs[3..].iter().filter(|&&x| x > 0.0).count() >= gs.len() - 4,
            "{gs:?}"
        );
        for g in a.prunable() {
            let v = &scores[g.id];
            assert_eq!(v.len(), g.channels);
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
            assert!(v.iter().any(|&x| x != v[0]), "{}: flat scores", g.name);
        }
        // the planner drops the dead filters first
        let none = WidthPolicy {
            min_channels: 1,
            multiple: 1,
        };
        let planner = Planner::new(&a, scores, Scope::Layer, none).unwrap();
        let counts: Vec<usize> = a
            .groups
            .iter()
            .map(|x| {
                if x.id == g.id {
                    x.channels - 3
                } else {
                    x.channels
                }
            })
            .collect();
        let keep = planner.select(&counts).keep[g.id].clone().unwrap();
        assert!(keep.iter().all(|&k| k >= 3), "{keep:?}");
    }
}
