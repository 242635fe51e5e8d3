//! `crosscam retune` (the pruning scenarios on a dataset) and `crosscam train` (a fresh re-id
//! ResNet: distillation, then re-id training).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use crate::jobs::Score;
use crate::train::Cancel;
use crate::train::distill::{OrtTeacher, Teacher};
use crate::train::sampler::PkConfig;
use crate::train::scenario::{Budget, RetuneOptions, RetuneReport, Retuned, Scenario};
use crate::train::site::SiteData;

/// Where the training crops come from and which of them play which part.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset folder (Market-1501 layout, e.g. from `crosscam dataset build`). Its train split is
    /// what is trained on; its query and gallery sets are the held-out evaluation.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Cameras whose crops are the source data (identity-labelled re-id data for S1–S3, and the
    /// pre-training crops of distillation): e.g. `c1` or `1,2`. Default: every camera.
    #[arg(long, value_delimiter = ',')]
    pub source_cameras: Vec<String>,
    /// Cameras whose tracklets are the target footage (S4, S5; never their labels). Default:
    /// every camera.
    #[arg(long, value_delimiter = ',')]
    pub target_cameras: Vec<String>,
}

pub use crate::train::site::camera_names_of as camera_names;

impl DataArgs {
    /// The dataset and the source / target views of its train split.
    pub fn load(&self) -> Result<(crate::eval::Dataset, crate::train::scenario::RetuneData)> {
        let (ds, site) = crate::train::site::load_dataset(&self.dataset)
            .with_context(|| format!("cannot load {}", self.dataset.display()))?;
        let data = split_data(&site, &self.source_cameras, &self.target_cameras)?;
        Ok((ds, data))
    }
}

/// Source (labelled) and target (unlabelled) views of a site's tracklets.
pub fn split_data(
    site: &SiteData,
    source: &[String],
    target: &[String],
) -> Result<crate::train::scenario::RetuneData> {
    let (source, target) = (camera_names(source), camera_names(target));
    let known = site.cameras();
    for c in source.iter().chain(&target) {
        anyhow::ensure!(
            known.contains(c),
            "camera {c:?} is not in the training data (cameras: {})",
            known.join(", ")
        );
    }
    Ok(crate::train::scenario::RetuneData {
        source: site.with_cameras(&source),
        target: site.with_cameras(&target).without_labels(),
    })
}

/// Knobs shared by every training command.
#[derive(Args, Debug, Clone)]
pub struct TrainKnobs {
    /// Seed of everything random (weights of new heads, batches, augmentation, `random`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Peak learning rate (Adam; 10 % linear warm-up, cosine decay).
    #[arg(long, default_value_t = 3.5e-4)]
    pub lr: f64,
    /// Batch as identities × crops per identity (P×K).
    #[arg(long, default_value = "8x4")]
    pub batch: String,
    /// Distillation teacher (manifest name or ONNX file), for S1, S5 and `crosscam train`.
    #[arg(long, default_value = "mobilenetv2-imagenet")]
    pub teacher: String,
}

impl TrainKnobs {
    pub fn pk(&self) -> Result<PkConfig> {
        let parts: Vec<&str> = self.batch.split(['x', 'X']).collect();
        let bad = || anyhow::anyhow!("--batch {:?}: expected PxK, e.g. 8x4", self.batch);
        anyhow::ensure!(parts.len() == 2, bad());
        let p: usize = parts[0].trim().parse().map_err(|_| bad())?;
        let k: usize = parts[1].trim().parse().map_err(|_| bad())?;
        anyhow::ensure!(
            p >= 2 && k >= 1,
            "--batch needs P ≥ 2 identities and K ≥ 1 crops"
        );
        Ok(PkConfig { p, k })
    }

    /// The teacher, run by ONNX Runtime.
    pub fn open_teacher(&self) -> Result<OrtTeacher> {
        let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
        let manifest = crate::models::Manifest::bundled()?;
        let e = crate::reid::Embedder::open(
            &self.teacher,
            &manifest,
            rt,
            crate::runtime::SessionOptions::default(),
        )
        .with_context(|| format!("cannot open the teacher {}", self.teacher))?;
        Ok(OrtTeacher::new(e)?)
    }
}

/// Pruning knobs of `retune`, `study` and `job run`.
#[derive(Args, Debug, Clone)]
pub struct PruneKnobs {
    /// Keep this fraction of the input model's MACs (1 = no pruning: re-tuning only).
    #[arg(long, default_value_t = 1.0)]
    pub target_macs: f64,
    /// Channel criterion (taylor: gradients from the training engine).
    #[arg(long, value_enum, default_value_t = crate::prune::Criterion::L1)]
    pub criterion: crate::prune::Criterion,
    /// Prune at once, or in --steps steps with re-tuning after each.
    #[arg(long, value_enum, default_value_t = crate::prune::StrategyKind::OneShot)]
    pub strategy: crate::prune::StrategyKind,
    /// Steps of the iterative strategy.
    #[arg(long, default_value_t = crate::prune::DEFAULT_STEPS)]
    pub steps: usize,
    /// `layer`: the same ratio in every group; `global`: one ranking across groups.
    #[arg(long, value_enum, default_value_t = crate::prune::Scope::Layer)]
    pub scope: crate::prune::Scope,
    /// Every group keeps at least this many channels.
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MIN_CHANNELS)]
    pub min_channels: usize,
    /// Kept widths are rounded to a multiple of this (1 = no rounding).
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MULTIPLE)]
    pub round_to: usize,
}

#[derive(Args, Debug)]
pub struct RetuneArgs {
    /// The re-id model to start from (ONNX ResNet, any exporter; or a manifest name).
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the new model (ONNX, BatchNorm folded).
    #[arg(long)]
    pub out: PathBuf,
    /// Scenario (docs/retuning.md): S0 direct transfer, S1 prune on pre-training data, S2 prune
    /// while fine-tuning on source, S3 fine-tune then prune on source, S4 on-site (target
    /// footage, no labels), S5 a narrower fresh network of the same cost.
    #[arg(long, value_enum, default_value_t = Scenario::S4)]
    pub scenario: Scenario,
    /// Training allowed: epochs (`3ep`; passes over each phase's data) or time (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "2ep")]
    pub budget: String,
    #[command(flatten)]
    pub prune: PruneKnobs,
    #[command(flatten)]
    pub train: TrainKnobs,
    /// Do not evaluate before and after (no held-out scores in the report).
    #[arg(long)]
    pub no_eval: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

/// What `crosscam retune --json` prints.
#[derive(Debug, Serialize)]
pub struct RetuneOutput {
    pub model: String,
    pub out: String,
    pub dataset: String,
    /// The input model on the dataset's query/gallery (null with --no-eval).
    pub before: Option<Score>,
    /// The new model on the same data.
    pub after: Option<Score>,
    #[serde(flatten)]
    pub report: RetuneReport,
}

pub use crate::models::model_file as model_path;

/// Ctrl-C cancels a run cleanly (between steps).
pub fn cancel_on_ctrl_c() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    let _ = ctrlc::set_handler(move || {
        eprintln!("\ncancelling after the current step…");
        c.cancel();
    });
    cancel
}

impl PruneKnobs {
    pub fn options(
        &self,
        scenario: Scenario,
        budget: Budget,
        train: &TrainKnobs,
        quiet: bool,
    ) -> Result<RetuneOptions> {
        Ok(RetuneOptions {
            scenario,
            budget,
            target_macs: self.target_macs,
            criterion: self.criterion,
            strategy: self.strategy,
            steps: self.steps,
            scope: self.scope,
            widths: crate::prune::WidthPolicy {
                min_channels: self.min_channels,
                multiple: self.round_to,
            },
            seed: train.seed,
            pk: train.pk()?,
            lr: train.lr,
            quiet,
            ..RetuneOptions::default()
        })
    }
}

pub fn run_retune(a: RetuneArgs) -> Result<ExitCode> {
    let budget: Budget = a.budget.parse().map_err(anyhow::Error::msg)?;
    let opts = a.prune.options(a.scenario, budget, &a.train, a.json)?;
    let path = model_path(&a.model)?;
    let input = crate::onnx::Model::load(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (ds, data) = a.data.load()?;
    let mut teacher = if a.scenario.needs_teacher() {
        Some(a.train.open_teacher()?)
    } else {
        None
    };
    let before = if a.no_eval {
        None
    } else {
        Some(crate::jobs::evaluate::evaluate_dataset(
            &input, &a.model, &ds, a.json,
        )?)
    };
    let cancel = cancel_on_ctrl_c();
    let Retuned { model, report } = crate::train::scenario::retune(
        &input,
        &data,
        &opts,
        crate::train::scenario::RetuneControl {
            cancel,
            teacher: teacher.as_mut().map(|t| t as &mut dyn Teacher),
        },
    )
    .with_context(|| format!("cannot re-tune {}", a.model))?;
    let after = save_and_score(&model, &a.out, &ds, a.no_eval, a.json)?;
    let out = RetuneOutput {
        model: a.model.clone(),
        out: a.out.display().to_string(),
        dataset: a.data.dataset.display().to_string(),
        before,
        after,
        report,
    };
    write_report(a.report.as_deref(), &out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_report<T: Serialize>(path: Option<&Path>, v: &T) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("cannot write the report to {}", p.display()))?;
    }
    Ok(())
}

/// The human-readable report of `retune` and `train`.
pub fn render(o: &RetuneOutput) -> String {
    let r = &o.report;
    let mut s = format!("scenario {}  {}\n", r.scenario, r.description);
    s.push_str(&format!(
        "{}target {:.0}% of the MACs, budget {}, seed {}, input {}×{}\n",
        r.criterion
            .as_ref()
            .map(|c| format!("criterion {c}, "))
            .unwrap_or_default(),
        100.0 * r.target_macs,
        r.budget,
        r.seed,
        r.input[0],
        r.input[1]
    ));
    if let Some(p) = &r.prune {
        s.push_str(&format!(
            "pruning  {} {} ({} step{}), channels {} → {}\n",
            p.strategy,
            p.scope,
            p.steps,
            if p.steps == 1 { "" } else { "s" },
            p.channels_before,
            p.channels_after
        ));
    }
    if !r.phases.is_empty() {
        s.push_str("phases\n");
    }
    for p in &r.phases {
        s.push_str(&format!(
            "  {}: {} steps ({} epoch{}), {} crops, {} {}{}, {:.1} img/s, {:.0} s, loss {} → {}{}\n",
            p.name,
            p.steps,
            p.epochs,
            if p.epochs == 1 { "" } else { "s" },
            p.crops,
            p.labels,
            if p.data == "source" { "identities" } else { "tracklets" },
            p.pseudo_identities
                .map(|n| format!(" → {n} pseudo-identities"))
                .unwrap_or_default(),
            p.images_per_second,
            p.seconds,
            p.first_loss.map(|l| format!("{l:.3}")).unwrap_or("–".into()),
            p.last_loss.map(|l| format!("{l:.3}")).unwrap_or("–".into()),
            if p.deadline_hit { " (time budget reached)" } else { "" }
        ));
    }
    s.push_str("\n          GMACs   params    rank-1   rank-5      mAP\n");
    let row = |name: &str, macs: u64, params: u64, sc: Option<&Score>| {
        format!(
            "{name:<8} {:6.3} {:6.2} M  {}\n",
            macs as f64 / 1e9,
            params as f64 / 1e6,
            match sc {
                Some(x) => format!(
                    "{:6.1}%  {:6.1}%  {:6.1}%",
                    100.0 * x.rank1,
                    100.0 * x.rank5,
                    100.0 * x.map
                ),
                None => "     –        –        –".into(),
            }
        )
    };
    s.push_str(&row(
        "before",
        r.macs_before,
        r.params_before,
        o.before.as_ref(),
    ));
    s.push_str(&row(
        "after",
        r.macs_after,
        r.params_after,
        o.after.as_ref(),
    ));
    if let Some(b) = &o.before {
        s.push_str(&format!(
            "\n{} queries, {} gallery images (held-out: the dataset's query and gallery sets)\n",
            b.queries, b.gallery
        ));
    }
    s.push_str(&format!("time {:.0} s\nwritten: {}\n", r.seconds, o.out));
    s
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: resnet18, resnet34 or resnet50 (re-id form: last stride 1, BNNeck).
    #[arg(long, default_value = "resnet18")]
    pub arch: String,
    /// Width multiplier of every layer (0.5 = half the channels; widths rounded to multiples of 8).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input height×width.
    #[arg(long, default_value = "256x128")]
    pub input: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Where to write the model (ONNX, BatchNorm folded).
    #[arg(long)]
    pub out: PathBuf,
    /// Distillation from the teacher on the source crops (`0ep` skips it).
    #[arg(long, default_value = "20ep")]
    pub distill: String,
    /// Re-id training after distillation.
    #[arg(long, default_value = "20ep")]
    pub reid: String,
    /// Re-id labels: `identities` (the source crops' identity labels) or `pseudo` (target
    /// tracklets clustered into pseudo-identities, refreshed every epoch; no labels used).
    #[arg(long, default_value = "identities")]
    pub labels: String,
    #[command(flatten)]
    pub train: TrainKnobs,
    /// Do not evaluate the result on the dataset's query/gallery sets.
    #[arg(long)]
    pub no_eval: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

pub fn run_train(a: TrainArgs) -> Result<ExitCode> {
    use crate::onnx::resnet::ResNetSpec;
    let distill: Budget = match a.distill.trim() {
        "0" | "0ep" | "0s" => Budget::Epochs(0.0),
        s => s.parse().map_err(anyhow::Error::msg)?,
    };
    let reid: Budget = a.reid.parse().map_err(anyhow::Error::msg)?;
    let pseudo = match a.labels.as_str() {
        "identities" => false,
        "pseudo" => true,
        o => anyhow::bail!("--labels {o:?}: expected identities or pseudo"),
    };
    let hw = crate::onnx::info::parse_input_size(&a.input).map_err(anyhow::Error::msg)?;
    let spec = ResNetSpec::by_name(&a.arch)
        .with_context(|| format!("unknown --arch {:?} (resnet18, resnet34, resnet50)", a.arch))?
        .for_reid()
        .scaled(a.width)
        .with_input(hw[1] as usize, hw[2] as usize);
    let layout = crate::train::NetLayout::from_spec(&spec, true);
    let (ds, data) = a.data.load()?;
    let mut teacher = match distill {
        Budget::Epochs(e) if e <= 0.0 => None,
        _ => Some(a.train.open_teacher()?),
    };
    let opts = crate::train::scenario::FreshOptions {
        layout,
        distill,
        reid,
        pseudo,
        norm: crate::frame::Normalize::IMAGENET,
        run: RetuneOptions {
            seed: a.train.seed,
            pk: a.train.pk()?,
            lr: a.train.lr,
            quiet: a.json,
            ..RetuneOptions::default()
        },
    };
    let Retuned { model, report } = crate::train::scenario::train_fresh(
        &data,
        &opts,
        crate::train::scenario::RetuneControl {
            cancel: cancel_on_ctrl_c(),
            teacher: teacher.as_mut().map(|t| t as &mut dyn Teacher),
        },
    )?;
    let after = save_and_score(&model, &a.out, &ds, a.no_eval, a.json)?;
    let out = RetuneOutput {
        model: format!("{} ×{} {}", a.arch, a.width, a.input),
        out: a.out.display().to_string(),
        dataset: a.data.dataset.display().to_string(),
        before: None,
        after,
        report,
    };
    write_report(a.report.as_deref(), &out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the trained model to `out` (creating its folder) and, unless `no_eval`, scores it on
/// the dataset's query and gallery sets.
fn save_and_score(
    model: &crate::onnx::Model,
    out: &std::path::Path,
    ds: &crate::eval::Dataset,
    no_eval: bool,
    quiet: bool,
) -> Result<Option<Score>> {
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    model
        .save(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    if no_eval {
        return Ok(None);
    }
    Ok(Some(crate::jobs::evaluate::evaluate_dataset(
        model,
        &out.display().to_string(),
        ds,
        quiet,
    )?))
}
