//! The training loop: P×K batches, augmentation, BoT losses (smoothed cross-entropy through the
//! BNNeck + batch-hard triplet on the pooled features) and/or distillation from a teacher, Adam
//! with warm-up and decay, pseudo-label refresh between epochs, optional SFP soft pruning at epoch
//! ends, Taylor-score collection, checkpoints, progress with ETA, and a cancel flag checked
//! between steps.
//!
//! Determinism: everything random is drawn from the run seed — the fresh heads, each epoch's
//! batches ([`sampler::epoch_seed`]), each step's augmentation — and burn's CPU kernels are
//! deterministic, so the same seed gives the same loss curve, and a run resumed from a checkpoint
//! continues exactly as if it had not stopped (tests check both).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleRecord;
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::augment::{self, AugmentConfig};
use super::batch::{HostBatch, TrainSet, assemble};
use super::checkpoint::{self, CheckpointState, NormSpec};
use super::distill::{DistillConfig, Teacher, attach_projection, teacher_batch};
use super::loss::{batch_hard_triplet, cross_entropy_smooth, distill_loss};
use super::model::{ReidModel, tensor_vec};
use super::prune_hooks::{TaylorAccumulator, free_convs, sfp_step};
use super::pseudo::{
    Constraint, PseudoConfig, PseudoLabels, TrackletCrops, cluster_tracklets_with,
    tracklet_features,
};
use super::sampler::{PkConfig, epoch_seed, pk_epoch, splitmix};
use super::schedule::{Decay, LrSchedule};
use super::{TrainError, device};
use crate::frame::Normalize;
use crate::progress::Progress;

/// How the learning rate decays after warm-up (step milestones as shares of the run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DecayKind {
    None,
    Step { at: Vec<f64>, gamma: f64 },
    Cosine { min_factor: f64 },
}

/// SFP-style soft pruning during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SfpConfig {
    /// Convs to soft-prune (canonical names); empty = the block-internal convs.
    pub convs: Vec<String>,
    /// Share of each conv's filters zeroed at every epoch end.
    pub ratio: f32,
}

/// Everything that decides a run (stored in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub seed: u64,
    pub epochs: u64,
    /// Optimiser steps per epoch; 0 = one P×K pass over the starting labels.
    pub steps_per_epoch: u64,
    pub pk: PkConfig,
    /// Peak learning rate (Adam).
    pub lr: f64,
    /// Share of the run spent warming up (linearly from 1 % of `lr`).
    pub warmup: f64,
    pub decay: DecayKind,
    /// L2 penalty added to the gradients (BoT: 5e-4).
    pub weight_decay: f32,
    pub label_smoothing: f32,
    pub triplet_margin: f32,
    /// Weights of the loss terms (0 disables a term; no classifier without cross-entropy).
    pub ce_weight: f32,
    pub triplet_weight: f32,
    pub distill: Option<DistillConfig>,
    pub augment: AugmentConfig,
    /// Checkpoint every this many steps (0 = at each epoch end), and at the end.
    pub checkpoint_every: u64,
    pub keep_checkpoints: usize,
    /// Batches used to give re-inserted BatchNorms data statistics before the first step.
    pub calibrate_batches: usize,
    /// Re-cluster tracklets into pseudo-identities (data from tracklets only).
    pub pseudo: Option<PseudoConfig>,
    pub sfp: Option<SfpConfig>,
    /// Batch size for inference passes (calibration, pseudo-label features).
    pub infer_batch: usize,
}

impl Default for TrainConfig {
    /// BoT's recipe (Adam 3.5e-4, warm-up 10 %, ×0.1 at 40 % and 70 %, label smoothing 0.1,
    /// triplet margin 0.3, P×K = 16×4, weight decay 5e-4) for 60 epochs.
    fn default() -> TrainConfig {
        TrainConfig {
            seed: 0,
            epochs: 60,
            steps_per_epoch: 0,
            pk: PkConfig { p: 16, k: 4 },
            lr: 3.5e-4,
            warmup: 0.1,
            decay: DecayKind::Step {
                at: vec![0.4, 0.7],
                gamma: 0.1,
            },
            weight_decay: 5e-4,
            label_smoothing: 0.1,
            triplet_margin: 0.3,
            ce_weight: 1.0,
            triplet_weight: 1.0,
            distill: None,
            augment: AugmentConfig::default(),
            checkpoint_every: 0,
            keep_checkpoints: 2,
            calibrate_batches: 4,
            pseudo: None,
            sfp: None,
            infer_batch: 32,
        }
    }
}

impl TrainConfig {
    pub fn schedule(&self, total_steps: u64) -> LrSchedule {
        let warmup_steps = (self.warmup * total_steps as f64).round() as u64;
        let decay = match &self.decay {
            DecayKind::None => Decay::None,
            DecayKind::Step { at, gamma } => Decay::Step {
                milestones: at
                    .iter()
                    .map(|f| (f * total_steps as f64).round() as u64)
                    .collect(),
                gamma: *gamma,
            },
            DecayKind::Cosine { min_factor } => Decay::Cosine {
                min_factor: *min_factor,
            },
        };
        LrSchedule {
            base: self.lr,
            warmup_steps,
            warmup_start: 0.01,
            decay,
            total_steps,
        }
    }

    fn adam(&self) -> AdamConfig {
        AdamConfig::new().with_epsilon(1e-8).with_weight_decay(
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay)),
        )
    }

    fn optimizer(&self) -> ModuleOptimizer {
        self.adam().init()
    }
}

/// A cancel flag shared with whoever may stop the run (the job runner, Ctrl-C); checked between
/// steps, never in the middle of one or of a checkpoint write.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn new() -> Cancel {
        Cancel::default()
    }
    /// Wraps an existing flag.
    pub fn from_flag(flag: Arc<AtomicBool>) -> Cancel {
        Cancel(flag)
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// The samples a run trains on.
pub struct TrainData {
    pub set: TrainSet,
    pub norm: Normalize,
    /// When training on tracklets: the tracklets, with the set's samples being their crops in
    /// [`super::pseudo::crop_index`] order (needed for pseudo-labels).
    pub tracklets: Option<Vec<TrackletCrops>>,
    /// Operators' labels between those tracklets: must-links and cannot-links the
    /// pseudo-labelling respects.
    pub constraints: Vec<Constraint>,
}

impl TrainData {
    /// Labelled crops.
    pub fn labelled(
        images: &[image::RgbImage],
        labels: &[i64],
        input_hw: (usize, usize),
        norm: Normalize,
    ) -> Result<TrainData, TrainError> {
        Ok(TrainData {
            set: TrainSet::new(images, labels, input_hw.0 as u32, input_hw.1 as u32)?,
            norm,
            tracklets: None,
            constraints: Vec::new(),
        })
    }

    /// Crops of tracklets, labelled by tracklet until pseudo-labels replace that.
    pub fn from_tracklets(
        tracklets: Vec<TrackletCrops>,
        input_hw: (usize, usize),
        norm: Normalize,
    ) -> Result<TrainData, TrainError> {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (t, tr) in tracklets.iter().enumerate() {
            for c in &tr.crops {
                images.push((**c).clone());
                labels.push(t as i64);
            }
        }
        Ok(TrainData {
            set: TrainSet::new(&images, &labels, input_hw.0 as u32, input_hw.1 as u32)?,
            norm,
            tracklets: Some(tracklets),
            constraints: Vec::new(),
        })
    }
}

/// What one step did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StepReport {
    /// 1-based number of the completed step.
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    pub loss: f32,
    pub ce: Option<f32>,
    pub triplet: Option<f32>,
    pub distill: Option<f32>,
    pub images: usize,
    pub seconds: f64,
}

/// Hooks and controls of a run.
#[derive(Default)]
pub struct RunControl<'a> {
    pub cancel: Cancel,
    /// Where checkpoints go (none: no checkpoints).
    pub checkpoint_dir: Option<PathBuf>,
    /// No progress lines.
    pub quiet: bool,
    pub teacher: Option<&'a mut dyn Teacher>,
    /// Collects Taylor scores from every step's gradients.
    pub taylor: Option<&'a mut TaylorAccumulator>,
    pub on_step: Option<&'a mut dyn FnMut(&StepReport)>,
    /// Called at every epoch end with the 0-based epoch, the run's epoch count and the model;
    /// returns the model to go
    /// on with (soft pruning with the pruner's channel selection, scenario S2). Parameter ids
    /// must be kept so the optimiser state stays attached ([`super::prune_hooks::soft_prune`]).
    pub on_epoch_end: Option<&'a mut EpochHook<'a>>,
    /// Stop cleanly (like a cancel, but `deadline_hit` instead of `cancelled`) once this moment
    /// has passed: how a time budget is enforced when the steps it was planned for run slower.
    pub deadline: Option<Instant>,
    /// Progress label (default "training").
    pub label: Option<String>,
}

/// See [`RunControl::on_epoch_end`].
pub type EpochHook<'a> = dyn FnMut(u64, u64, ReidModel) -> Result<ReidModel, TrainError> + 'a;

/// The loss terms of one batch (those enabled).
#[derive(Clone, Copy, Debug, Default)]
struct LossTerms {
    ce: Option<f32>,
    triplet: Option<f32>,
    distill: Option<f32>,
}

/// How a run ended.
pub struct TrainOutcome {
    pub model: ReidModel,
    /// Completed steps (counting those before a resume).
    pub steps: u64,
    pub cancelled: bool,
    /// The run stopped at [`RunControl::deadline`] before its last step.
    pub deadline_hit: bool,
    pub last_checkpoint: Option<PathBuf>,
    /// Loss of every completed step.
    pub losses: Vec<f32>,
    pub seconds: f64,
    /// Training images per second over this run's steps.
    pub images_per_second: f64,
    /// The last pseudo-labelling, when the run made one.
    pub pseudo: Option<PseudoLabels>,
}

/// A training run in progress: network, optimiser, position.
pub struct Trainer {
    pub model: ReidModel,
    optim: ModuleOptimizer,
    pub config: TrainConfig,
    /// Completed steps.
    pub step: u64,
    pub steps_per_epoch: u64,
    schedule: LrSchedule,
    pub losses: Vec<f32>,
    norm: Normalize,
}

impl Trainer {
    /// Starts a run of `model` on `data`. The model is moved to an autodiff device if needed;
    /// a classifier (cross-entropy) and a projection (distillation, `teacher_dim`) are attached
    /// as the configuration asks.
    pub fn new(
        mut model: ReidModel,
        data: &TrainData,
        config: TrainConfig,
        teacher_dim: Option<usize>,
    ) -> Result<Trainer, TrainError> {
        validate(&config, data, teacher_dim)?;
        if !model.device().is_autodiff() {
            // a network loaded for inference: put it on the autodiff device, trainable
            model.net = model.net.train();
        }
        if config.ce_weight > 0.0 {
            model = model.with_classifier(data.set.classes(), config.seed);
        }
        if let (Some(_), Some(t)) = (&config.distill, teacher_dim) {
            model = attach_projection(model, t, config.seed);
        }
        let steps_per_epoch = match config.steps_per_epoch {
            0 => pk_epoch(&data.set.labels, config.pk, epoch_seed(config.seed, 0))
                .len()
                .max(1) as u64,
            n => n,
        };
        let schedule = config.schedule(steps_per_epoch * config.epochs);
        Ok(Trainer {
            model,
            optim: config.optimizer(),
            config,
            step: 0,
            steps_per_epoch,
            schedule,
            losses: Vec::new(),
            norm: data.norm,
        })
    }

    /// Continues the run whose newest checkpoint is under `root`, on `device` (autodiff added).
    /// The labels the run was using are put back into `data`.
    pub fn resume(
        root: &Path,
        data: &mut TrainData,
        device: &Device,
    ) -> Result<Trainer, TrainError> {
        let dir = checkpoint::latest(root)?.ok_or_else(|| TrainError::Checkpoint {
            path: root.display().to_string(),
            msg: "no checkpoint found".into(),
        })?;
        let st = checkpoint::load_state(&dir)?;
        if st.labels.len() != data.set.len() {
            return Err(TrainError::Checkpoint {
                path: dir.display().to_string(),
                msg: format!(
                    "it was made on {} samples, the data has {}",
                    st.labels.len(),
                    data.set.len()
                ),
            });
        }
        data.set.relabel(&st.labels);
        let device = device.clone().autodiff();
        let mut model = ReidModel::fresh(st.layout.clone(), 0, &device);
        if let Some(c) = st.classes {
            model = model.with_classifier(c, 0);
        }
        if let Some(t) = st.projection {
            model = attach_projection(model, t, 0);
        }
        let bad = |e: burn::store::RecordError| TrainError::Checkpoint {
            path: dir.display().to_string(),
            msg: e.to_string(),
        };
        let record = ModuleRecord::load(dir.join(checkpoint::MODEL)).map_err(bad)?;
        model.net = model.net.try_load_record(record).map_err(bad)?;
        let optim = st
            .config
            .optimizer()
            .load(dir.join(checkpoint::OPTIM))
            .map_err(bad)?;
        let schedule = st.config.schedule(st.steps_per_epoch * st.config.epochs);
        Ok(Trainer {
            model,
            optim,
            config: st.config,
            step: st.step,
            steps_per_epoch: st.steps_per_epoch,
            schedule,
            losses: st.losses,
            norm: st.norm.into(),
        })
    }

    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.config.epochs
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.schedule.lr_at(self.step)
    }

    /// The weighted loss of one forward pass and its terms (cross-entropy, triplet, distillation).
    fn loss(
        &self,
        out: &super::model::NetOutput,
        labels: &[usize],
        teacher: Option<Tensor<2>>,
    ) -> (Tensor<1>, LossTerms) {
        let cfg = &self.config;
        let scalar = |t: &Tensor<1>| tensor_vec(t.clone())[0];
        let mut loss: Option<Tensor<1>> = None;
        let mut add = |t: Tensor<1>, w: f32| {
            let t = t.mul_scalar(w);
            loss = Some(match loss.take() {
                Some(l) => l + t,
                None => t,
            });
        };
        let triplet = (cfg.triplet_weight > 0.0).then(|| {
            let t = batch_hard_triplet(out.pooled.clone(), labels, cfg.triplet_margin);
            let v = scalar(&t);
            add(t, cfg.triplet_weight);
            v
        });
        let ce = out.logits.clone().map(|l| {
            let t = cross_entropy_smooth(l, labels, cfg.label_smoothing);
            let v = scalar(&t);
            add(t, cfg.ce_weight);
            v
        });
        let distill = match (&cfg.distill, teacher) {
            (Some(d), Some(t)) => {
                let s = self.model.net.project(out.pooled.clone());
                let l = distill_loss(s, t, d.kind);
                let v = scalar(&l);
                add(l, d.weight);
                Some(v)
            }
            _ => None,
        };
        let loss = loss.unwrap_or_else(|| out.pooled.clone().sum().mul_scalar(0.0));
        (
            loss,
            LossTerms {
                ce,
                triplet,
                distill,
            },
        )
    }

    /// One optimiser step on an assembled batch (teacher embeddings when distilling).
    pub fn train_step(
        &mut self,
        batch: &HostBatch,
        teacher: Option<Tensor<2>>,
        taylor: Option<&mut TaylorAccumulator>,
    ) -> StepReport {
        let t0 = Instant::now();
        let device = self.model.device();
        let out = self.model.net.forward(batch.tensor(&device));
        let (loss, terms) = self.loss(&out, &batch.labels, teacher);
        let value = tensor_vec(loss.clone())[0];
        let grads = loss.backward();
        if let Some(acc) = taylor {
            acc.add(&self.model.net, &grads);
        }
        let grads = GradientsParams::from_grads(grads, &self.model.net);
        let lr = self.schedule.lr_at(self.step);
        self.model.net = self.optim.step(lr, self.model.net.clone(), grads);
        self.step += 1;
        self.losses.push(value);
        StepReport {
            step: self.step,
            epoch: (self.step - 1) / self.steps_per_epoch,
            lr,
            loss: value,
            ce: terms.ce,
            triplet: terms.triplet,
            distill: terms.distill,
            images: batch.n,
            seconds: t0.elapsed().as_secs_f64(),
        }
    }

    /// Forward and backward passes over a batch without updating anything: adds the batch's
    /// Taylor scores to `acc` and returns the loss (the `taylor` pruning criterion).
    pub fn taylor_step(
        &self,
        batch: &HostBatch,
        teacher: Option<Tensor<2>>,
        acc: &mut TaylorAccumulator,
    ) -> f32 {
        let out = self.model.net.forward(batch.tensor(&self.model.device()));
        let (loss, _) = self.loss(&out, &batch.labels, teacher);
        let value = tensor_vec(loss.clone())[0];
        acc.add(&self.model.net, &loss.backward());
        value
    }

    /// Writes a checkpoint of the current position under `root`.
    pub fn save_checkpoint(&self, root: &Path, labels: &[i64]) -> Result<PathBuf, TrainError> {
        let state = CheckpointState {
            format: checkpoint::FORMAT,
            step: self.step,
            steps_per_epoch: self.steps_per_epoch,
            config: self.config.clone(),
            layout: self.model.layout.clone(),
            norm: NormSpec::from(self.norm),
            classes: self.model.classes(),
            projection: self
                .model
                .net
                .projection
                .as_ref()
                .map(|p| p.weight.val().dims()[1]),
            labels: labels.to_vec(),
            losses: self.losses.clone(),
        };
        checkpoint::save(root, &state, self.config.keep_checkpoints, |dir| {
            let bad = |e: burn::store::RecordError| TrainError::Checkpoint {
                path: dir.display().to_string(),
                msg: e.to_string(),
            };
            self.model
                .net
                .clone()
                .into_record()
                .save(dir.join(checkpoint::MODEL))
                .map_err(bad)?;
            self.optim.save(dir.join(checkpoint::OPTIM)).map_err(bad)
        })
    }

    /// Runs until the configured number of epochs, a cancel, or an error.
    pub fn run(
        mut self,
        data: &mut TrainData,
        mut ctl: RunControl<'_>,
    ) -> Result<TrainOutcome, TrainError> {
        let total = self.total_steps();
        let spe = self.steps_per_epoch;
        let base = ctl.label.clone().unwrap_or_else(|| "training".into());
        let label = match self.step {
            0 => base,
            s => format!("{base} (resumed at step {s})"),
        };
        let mut progress = Progress::new(&label, total - self.step.min(total)).quiet(ctl.quiet);
        let started = Instant::now();
        let mut images = 0usize;
        let mut last_checkpoint = ctl
            .checkpoint_dir
            .as_deref()
            .map(checkpoint::latest)
            .transpose()?
            .flatten();
        let mut pseudo = None;
        if self.step == 0 && self.model.layout.has_reinserted_bn() {
            self.calibrate(&data.set, &data.norm);
        }
        let mut batches: Vec<Vec<usize>> = Vec::new();
        let mut batches_epoch = None;
        let mut cancelled = false;
        let mut deadline_hit = false;
        while self.step < total {
            if ctl.cancel.is_cancelled() {
                cancelled = true;
                break;
            }
            if ctl.deadline.is_some_and(|d| Instant::now() >= d) {
                deadline_hit = true;
                break;
            }
            let epoch = self.step / spe;
            let idx = (self.step % spe) as usize;
            if idx == 0
                && let (Some(pc), Some(tracklets)) = (self.config.pseudo, &data.tracklets)
                && epoch.is_multiple_of(pc.refresh_every.max(1))
            {
                let mut labels = self.refresh_pseudo_labels(tracklets, &data.constraints, &pc);
                if labels.identities() < self.config.pk.p {
                    // a collapsed clustering (e.g. an untrained network): one identity per
                    // tracklet, the supervision that always holds
                    tracing::warn!(
                        epoch,
                        identities = labels.identities(),
                        "clustering gave fewer identities than P; training on tracklets instead"
                    );
                    labels = PseudoLabels::per_tracklet(tracklets.len());
                }
                data.set.relabel(&labels.per_crop(tracklets));
                if let Some(old) = &self.model.net.classifier {
                    // forget the replaced classifier's Adam state (a group over its id resets it)
                    let stale = ParamGroup::from_ids(vec![old.weight.id]);
                    self.optim =
                        self.optim
                            .clone()
                            .with_group(stale, self.config.adam().build(), None);
                }
                if self.config.ce_weight > 0.0 {
                    let seed = splitmix(self.config.seed ^ epoch);
                    self.model = self.model.clone().with_classifier(data.set.classes(), seed);
                }
                tracing::info!(
                    epoch,
                    identities = labels.identities(),
                    clusters = labels.clusters,
                    singletons = labels.singletons,
                    "pseudo-labels refreshed"
                );
                pseudo = Some(labels);
                batches_epoch = None;
            }
            if batches_epoch != Some(epoch) {
                batches = epoch_batches(
                    &data.set.labels,
                    self.config.pk,
                    self.config.seed,
                    epoch,
                    spe,
                );
                if batches.is_empty() {
                    return Err(TrainError::Invalid(format!(
                        "P×K sampling needs at least P = {} identities; the data has {}",
                        self.config.pk.p,
                        data.set.classes()
                    )));
                }
                batches_epoch = Some(epoch);
            }
            let mut rng =
                StdRng::seed_from_u64(splitmix(self.config.seed ^ splitmix(self.step ^ 0xa06)));
            let want_views = self.config.distill.is_some() && ctl.teacher.is_some();
            let batch = assemble(
                &data.set,
                &batches[idx],
                &self.config.augment,
                &data.norm,
                &mut rng,
                want_views,
            );
            let teacher = match ctl.teacher.as_deref_mut() {
                Some(t) if want_views => {
                    Some(teacher_batch(t, &batch.views, &self.model.device())?)
                }
                _ => None,
            };
            let report = self.train_step(&batch, teacher, ctl.taylor.as_deref_mut());
            images += report.images;
            progress.note(format!("loss {:.4}  lr {:.2e}", report.loss, report.lr));
            progress.inc(1);
            if let Some(f) = ctl.on_step.as_deref_mut() {
                f(&report);
            }
            let epoch_end = self.step.is_multiple_of(spe);
            if epoch_end && let Some(sfp) = &self.config.sfp {
                let convs = if sfp.convs.is_empty() {
                    free_convs(&self.model)
                } else {
                    sfp.convs.clone()
                };
                let (m, _) = sfp_step(self.model.clone(), &convs, sfp.ratio);
                self.model = m;
            }
            if epoch_end && let Some(hook) = ctl.on_epoch_end.as_deref_mut() {
                self.model = hook(self.step / spe - 1, self.config.epochs, self.model.clone())?;
            }
            let due = match self.config.checkpoint_every {
                0 => epoch_end,
                n => self.step.is_multiple_of(n),
            };
            if let Some(dir) = &ctl.checkpoint_dir
                && (due || self.step == total)
            {
                last_checkpoint = Some(self.save_checkpoint(dir, &original_labels(&data.set))?);
            }
        }
        progress.finish();
        let seconds = started.elapsed().as_secs_f64();
        Ok(TrainOutcome {
            steps: self.step,
            cancelled,
            deadline_hit,
            last_checkpoint,
            losses: self.losses.clone(),
            seconds,
            images_per_second: images as f64 / seconds.max(1e-9),
            pseudo,
            model: self.model,
        })
    }

    /// Gives re-inserted BatchNorms data statistics (un-augmented samples, in order).
    fn calibrate(&mut self, set: &TrainSet, norm: &Normalize) {
        let bs = self.config.infer_batch.max(1);
        let n = (self.config.calibrate_batches * bs).min(set.len());
        if n == 0 {
            return;
        }
        let device = self.model.device().inner();
        let idx: Vec<usize> = (0..n).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let xs: Vec<Tensor<4>> = idx
            .chunks(bs)
            .map(|c| {
                assemble(set, c, &AugmentConfig::none(), norm, &mut rng, false).tensor(&device)
            })
            .collect();
        self.model = self.model.clone().calibrate_reinserted_bn(xs);
    }

    fn refresh_pseudo_labels(
        &self,
        tracklets: &[TrackletCrops],
        constraints: &[Constraint],
        cfg: &PseudoConfig,
    ) -> PseudoLabels {
        let feats = tracklet_features(&self.model, tracklets, &self.norm, self.config.infer_batch);
        let d = self.model.layout.feature_dim();
        let mut labels = cluster_tracklets_with(&feats, d, tracklets, cfg, constraints);
        // a clustering that merges nearly everyone (a small site, or a network that has not
        // learnt these cameras yet): tighten the radius before giving up on clusters
        for f in [0.75, 0.5, 0.35, 0.25] {
            if labels.identities() >= self.config.pk.p {
                break;
            }
            let tight = PseudoConfig {
                eps: cfg.eps * f,
                ..*cfg
            };
            labels = cluster_tracklets_with(&feats, d, tracklets, &tight, constraints);
            tracing::info!(
                eps = tight.eps,
                identities = labels.identities(),
                "clustering merged too much; re-clustered with a tighter radius"
            );
        }
        labels
    }
}

/// The labels of a set as the caller gave them (dense labels mapped back).
fn original_labels(set: &TrainSet) -> Vec<i64> {
    set.labels.iter().map(|&l| set.original[l]).collect()
}

/// `spe` batches for `epoch`: P×K passes with sub-seeds, concatenated and cut to length.
pub fn epoch_batches(
    labels: &[usize],
    pk: PkConfig,
    seed: u64,
    epoch: u64,
    spe: u64,
) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut round = 0u64;
    while (out.len() as u64) < spe {
        let b = pk_epoch(labels, pk, splitmix(epoch_seed(seed, epoch) ^ round));
        if b.is_empty() {
            return Vec::new();
        }
        out.extend(b);
        round += 1;
    }
    out.truncate(spe as usize);
    out
}

fn validate(
    cfg: &TrainConfig,
    data: &TrainData,
    teacher_dim: Option<usize>,
) -> Result<(), TrainError> {
    let bad = |m: String| Err(TrainError::Invalid(m));
    if cfg.epochs == 0 {
        return bad("epochs must be at least 1".into());
    }
    if cfg.pk.p == 0 || cfg.pk.k == 0 {
        return bad("P and K must be at least 1".into());
    }
    if data.tracklets.is_none() && data.set.classes() < cfg.pk.p {
        return bad(format!(
            "P×K sampling needs at least P = {} identities; the data has {}",
            cfg.pk.p,
            data.set.classes()
        ));
    }
    if cfg.distill.is_some() && teacher_dim.is_none() {
        return bad("distillation needs a teacher".into());
    }
    if cfg.pseudo.is_some() && data.tracklets.is_none() {
        return bad("pseudo-labels need training data made from tracklets".into());
    }
    if cfg.ce_weight <= 0.0 && cfg.triplet_weight <= 0.0 && cfg.distill.is_none() {
        return bad("every loss term is disabled".into());
    }
    Ok(())
}

/// Inference embeddings of images (resized, normalised), for evaluation and tests.
pub fn embed_images(
    model: &ReidModel,
    images: &[image::RgbImage],
    norm: &Normalize,
    batch: usize,
) -> Vec<f32> {
    let (h, w) = model.layout.input_hw;
    let eval = model.eval_net();
    let device = model.device().inner();
    let per = 3 * h * w;
    let mut out = Vec::new();
    for chunk in images.chunks(batch.max(1)) {
        let mut x = vec![0.0f32; chunk.len() * per];
        for (k, img) in chunk.iter().enumerate() {
            let r = augment::resize(img, h as u32, w as u32);
            augment::to_planes(&r, norm, &mut x[k * per..(k + 1) * per]);
        }
        let t = Tensor::<4>::from_data(TensorData::new(x, [chunk.len(), 3, h, w]), &device);
        out.extend(tensor_vec(eval.forward(t).embedding));
    }
    out
}

/// Picks the training device (see [`device::select`]).
pub fn training_device(want_gpu: bool) -> Device {
    device::select(want_gpu).0
}
