//! `crosscam job …`: the on-site re-tuning job against the model registry of a data directory,
//! the registry listing, and rollback. `crosscam study`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::retune::{PruneKnobs, TrainKnobs, camera_names, cancel_on_ctrl_c};
use crate::jobs::{
    FolderGallery, JobOutcome, JobSpec, NoGallery, PromotePolicy, ReembedHook, Registry,
};
use crate::train::distill::Teacher;
use crate::train::scenario::{Budget, Scenario};

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Run an on-site job: collect crops, hold out a share, prune and/or re-tune the serving
    /// model, compare old and new on the held-out crops, promote the new one if it is better
    /// (or as good and cheaper).
    Run(Box<JobRunArgs>),
    /// List the model registry (versions, current, previous).
    Models(JobDirArgs),
    /// Make the previous model version current again. A daemon serving the data directory
    /// switches to it live (re-embedding its gallery first); otherwise the next `crosscam serve`
    /// does.
    Rollback(JobRollbackArgs),
    /// Make a registered model version current. A daemon serving the data directory switches to
    /// it live (re-embedding its gallery first); otherwise the next `crosscam serve` does.
    Promote(JobPromoteArgs),
    /// Add an existing ONNX embedder (trained elsewhere, or by `crosscam retune`) to the registry
    /// as a new version, without making it current.
    Register(JobRegisterArgs),
}

#[derive(Args, Debug)]
pub struct JobPromoteArgs {
    /// The version to make current (`v0003`; `crosscam job models` lists them).
    pub version: String,
    #[command(flatten)]
    pub dir: JobDirArgs,
    /// Wait until the running daemon serves it (or says why it cannot).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_s: u64,
}

#[derive(Args, Debug)]
pub struct JobRegisterArgs {
    /// The ONNX embedder: one image input [N,3,H,W], an output [N,D].
    pub file: PathBuf,
    #[command(flatten)]
    pub dir: JobDirArgs,
    /// Its linking threshold (cosine similarity to link a tracklet to an identity), if it was
    /// calibrated (`crosscam eval`); with --margin and --merge-similarity. Without them a
    /// bundled model keeps its manifest calibration and any other model gets the config's
    /// `[linking]` values or the defaults.
    #[arg(long, requires_all = ["margin", "merge_similarity"])]
    pub threshold: Option<f32>,
    #[arg(long, requires_all = ["threshold", "merge_similarity"])]
    pub margin: Option<f32>,
    #[arg(long, requires_all = ["threshold", "margin"])]
    pub merge_similarity: Option<f32>,
    /// Where it came from, in words (default: the file's path).
    #[arg(long)]
    pub origin: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobDirArgs {
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Data directory (default: the config's `server.data_dir`). The registry is DATA/models.
    #[arg(long, alias = "data")]
    pub data_dir: Option<PathBuf>,
    /// The model registered as v0001 when the registry is empty (manifest name or ONNX file;
    /// default: the config's `models.embedder`).
    #[arg(long)]
    pub initial_model: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl JobDirArgs {
    fn open(&self) -> Result<(PathBuf, Registry)> {
        let cfg = self.config.load()?;
        let dir = self.data_dir.clone().unwrap_or(cfg.server.data_dir.clone());
        let initial = match &self.initial_model {
            Some(m) => crate::models::model_file(m)?,
            None => {
                let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
                manifest.file_of(manifest.get(&cfg.models.embedder)?)
            }
        };
        let reg = Registry::open_or_init(&dir, &initial)?;
        Ok((dir, reg))
    }
}

#[derive(Args, Debug)]
pub struct JobRollbackArgs {
    #[command(flatten)]
    pub dir: JobDirArgs,
    /// Folder of gallery crops to re-embed with the model that becomes current (default: none:
    /// the daemon's own gallery follows the registry by itself).
    #[arg(long)]
    pub gallery_crops: Option<PathBuf>,
    /// Wait until the running daemon serves it (or says why it cannot).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub wait_s: u64,
}

#[derive(Args, Debug)]
pub struct JobRunArgs {
    #[command(flatten)]
    pub dir: JobDirArgs,
    /// Where the site's crops come from: a dataset folder (its train split). Without it, the
    /// daemon's store in the data directory (every ended tracklet with stored crops).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Store: tracklets with fewer stored crops are left out.
    #[arg(long, default_value_t = 4)]
    pub min_crops: usize,
    /// Only these cameras' crops (dataset: `c1` or `1,2`; store: camera ids; default all).
    #[arg(long, value_delimiter = ',')]
    pub cameras: Vec<String>,
    /// Use the dataset's identity labels (for S1–S3 and for identity-based evaluation); without
    /// it the crops are unlabelled footage, as a site's own are.
    #[arg(long)]
    pub labels: bool,
    /// Scenario (docs/retuning.md).
    #[arg(long, value_enum, default_value_t = Scenario::S4)]
    pub scenario: Scenario,
    /// Training allowed: epochs (`3ep`) or time (`10m`).
    #[arg(long, default_value = "2ep")]
    pub budget: String,
    #[command(flatten)]
    pub prune: PruneKnobs,
    #[command(flatten)]
    pub train: TrainKnobs,
    /// Share of identities (or tracklets, without labels) held out for evaluation.
    #[arg(long, default_value_t = 0.25)]
    pub holdout: f64,
    /// Promote when the held-out mAP rises by more than this.
    #[arg(long, default_value_t = 0.0)]
    pub min_gain: f64,
    /// ... or when it falls by at most this and the new model is cheaper.
    #[arg(long, default_value_t = 0.0)]
    pub tolerance: f64,
    /// Fewer held-out labelled pairs than this: weak evidence, no automatic promotion
    /// (default: the config's `[retune] min_label_pairs`).
    #[arg(long)]
    pub min_label_pairs: Option<usize>,
    /// Share of the operators' labels held out for the gate, 0–1 (default: the config's
    /// `[retune] label_holdout`).
    #[arg(long)]
    pub label_holdout: Option<f64>,
    /// Folder of gallery crops to re-embed with a promoted model (default: none).
    #[arg(long)]
    pub gallery_crops: Option<PathBuf>,
    /// The job's id (default: from the time; the daemon passes the id it announced).
    #[arg(long, hide = true)]
    pub id: Option<String>,
}

fn hook_for(dir: &std::path::Path, crops: Option<&PathBuf>) -> Result<Box<dyn ReembedHook>> {
    Ok(match crops {
        Some(c) => Box::new(FolderGallery::open(c, &dir.join("gallery"))?),
        None => Box::new(NoGallery),
    })
}

pub fn run(cmd: JobCommand) -> Result<ExitCode> {
    match cmd {
        JobCommand::Models(a) => {
            let (_, reg) = a.open()?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "current": reg.current().map(|v| &v.id),
                        "previous": reg.previous().map(|v| &v.id),
                        "versions": reg.versions(),
                    }))?
                );
            } else {
                println!("registry {}", reg.root().display());
                for v in reg.versions() {
                    let tag = if Some(&v.id) == reg.current().map(|c| &c.id) {
                        "current "
                    } else if Some(&v.id) == reg.previous().map(|c| &c.id) {
                        "previous"
                    } else {
                        "        "
                    };
                    println!(
                        "{tag} {}  {:.3} GMACs  {:>5.2} M params  {:>4}-d  {}{}",
                        v.id,
                        v.macs as f64 / 1e9,
                        v.params as f64 / 1e6,
                        v.feature_dim,
                        v.origin,
                        v.eval
                            .as_ref()
                            .map(|e| format!("  (held-out mAP {:.1}%)", 100.0 * e.map))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Rollback(a) if a.gallery_crops.is_none() => {
            let (dir, mut reg) = a.dir.open()?;
            let prev = reg
                .previous()
                .cloned()
                .context("there is no previous model version to roll back to")?;
            reg.set_current(&prev.id)?;
            announce(&dir, &prev.id, a.wait, a.wait_s)
        }
        JobCommand::Promote(a) => {
            let (dir, mut reg) = a.dir.open()?;
            let v = reg.get(&a.version).cloned().with_context(|| {
                format!(
                    "no model version {:?} in {} (`crosscam job models` lists them)",
                    a.version,
                    reg.root().display()
                )
            })?;
            reg.set_current(&v.id)?;
            announce(&dir, &v.id, a.wait, a.wait_s)
        }
        JobCommand::Register(a) => register(a),
        JobCommand::Rollback(a) => {
            let (dir, mut reg) = a.dir.open()?;
            let serving = crate::jobs::ServingModel::from_registry(&reg)?;
            let mut hook = hook_for(&dir, a.gallery_crops.as_ref())?;
            let v = crate::jobs::rollback(&mut reg, &serving, hook.as_mut(), &cancel_on_ctrl_c())?;
            println!(
                "rolled back: {} is current, {} previous",
                v.id,
                reg.previous().map(|p| p.id.as_str()).unwrap_or("–")
            );
            Ok(ExitCode::SUCCESS)
        }
        JobCommand::Run(a) => run_job(*a),
    }
}

/// Says what happens after the registry changed: a running daemon switches live (with `wait`,
/// waits for it to serve `version` or to say why not), else the next start does.
fn announce(dir: &std::path::Path, version: &str, wait: bool, wait_s: u64) -> Result<ExitCode> {
    use crate::server::switch;
    let Some(pid) = crate::server::running_daemon(dir) else {
        println!(
            "{version} is current in the registry; no daemon serves {} now: the next `crosscam serve` \
             starts with the model it served before and switches to {version} live \
             (re-embedding the gallery from the stored crops)",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "{version} is current in the registry; the daemon (pid {pid}) serving {} switches to it live: \
         it re-embeds the gallery from the stored crops, then serves it \
         (follow `model.switch` in GET /api/v1/status)",
        dir.display()
    );
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let t0 = std::time::Instant::now();
    loop {
        if switch::read_serving(dir)?.is_some_and(|r| r.version == version) {
            println!("switched: {version} serves");
            return Ok(ExitCode::SUCCESS);
        }
        // a failed switch puts the registry's pointers back: the reason is in last-switch.json
        let reg = Registry::open(dir)?;
        if reg.current().map(|c| c.id.as_str()) != Some(version) {
            let last: Option<switch::SwitchOutcome> =
                std::fs::read_to_string(Registry::dir_of(dir).join(switch::LAST_SWITCH_FILE))
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
            let reason = last
                .filter(|l| l.to == version && l.outcome == "failed")
                .map(|l| l.reason)
                .unwrap_or_else(|| "the registry was changed again meanwhile".into());
            anyhow::bail!("the daemon did not switch to {version}: {reason}");
        }
        anyhow::ensure!(
            t0.elapsed().as_secs() < wait_s,
            "{version} does not serve yet after {wait_s} s; the daemon is still switching \
             (GET /api/v1/status: model.switch)"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `crosscam job register FILE`: checks that the file serves (ONNX reader, ONNX Runtime, one
/// test crop), then adds it as a version that is not current.
fn register(a: JobRegisterArgs) -> Result<ExitCode> {
    let cfg = a.dir.config.load()?;
    let (_, mut reg) = a.dir.open()?;
    anyhow::ensure!(
        a.file.is_file(),
        "{} is not a file (give the path of an ONNX embedder)",
        a.file.display()
    );
    let model = crate::onnx::Model::load(&a.file).with_context(|| {
        format!(
            "{} is not an ONNX model crosscam can read",
            a.file.display()
        )
    })?;
    crate::reid::EmbedderSpec::from_model(&model)
        .with_context(|| format!("{} is not an embedder", a.file.display()))?;
    let sha = crate::jobs::registry::sha256_file(&a.file)?;
    if let Some(v) = reg.versions().iter().find(|v| v.sha256 == sha) {
        anyhow::bail!(
            "{} is already registered as {} (same sha256)",
            a.file.display(),
            v.id
        );
    }
    let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
    let rt = crate::runtime::init(&cfg.runtime)?;
    let (_, dim, manifest_cal) =
        crate::server::switch::validate_embedder(&a.file, &sha, &manifest, rt)
            .with_context(|| format!("{} does not load as an embedder", a.file.display()))?;
    let cal = match (a.threshold, a.margin, a.merge_similarity) {
        (Some(threshold), Some(margin), Some(merge_similarity)) => {
            for (k, v) in [
                ("--threshold", threshold),
                ("--margin", margin),
                ("--merge-similarity", merge_similarity),
            ] {
                anyhow::ensure!(
                    v.is_finite() && (-1.0..=1.0).contains(&v),
                    "{k}: expected a cosine similarity between -1 and 1, found {v}"
                );
            }
            Some(crate::models::LinkCalibration {
                threshold,
                margin,
                merge_similarity,
                measured: "given to `crosscam job register`".into(),
            })
        }
        _ => manifest_cal,
    };
    let origin = a
        .origin
        .clone()
        .unwrap_or_else(|| format!("registered: {}", a.file.display()));
    crate::config::secrets::check_text(&origin, 500)
        .map_err(|m| anyhow::anyhow!("--origin: {m}"))?;
    let v = reg.register(&a.file, &origin, cal)?;
    if a.dir.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "registered {}: {} ({}-d, {:.3} GMACs, sha256 {}); not current — promote it with \
             `crosscam job promote {}` or the web UI",
            v.id,
            a.file.display(),
            dim,
            v.macs as f64 / 1e9,
            v.sha256,
            v.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run_job(a: JobRunArgs) -> Result<ExitCode> {
    let budget: Budget = a.budget.parse().map_err(anyhow::Error::msg)?;
    let (dir, mut reg) = a.dir.open()?;
    let serving = crate::jobs::ServingModel::from_registry(&reg)?;
    let mut hook = hook_for(&dir, a.gallery_crops.as_ref())?;
    let mut teacher = if a.scenario.needs_teacher() {
        Some(a.train.open_teacher()?)
    } else {
        None
    };
    let mut settings = a.dir.config.load()?.retune;
    if let Some(n) = a.min_label_pairs {
        settings.min_label_pairs = n;
    }
    if let Some(h) = a.label_holdout {
        settings.label_holdout = h;
    }
    let gate = settings
        .gate()
        .map_err(|e| anyhow::anyhow!("{e} (or --label-holdout)"))?;
    let spec = JobSpec {
        retune: a.prune.options(a.scenario, budget, &a.train, a.dir.json)?,
        holdout: a.holdout,
        policy: PromotePolicy {
            min_gain: a.min_gain,
            tolerance: a.tolerance,
        },
        gate,
        label_holdout: settings.label_holdout,
    };
    let mut source: Box<dyn crate::jobs::CropSource> = match &a.dataset {
        Some(d) => Box::new(crate::jobs::DatasetSource {
            dir: d.clone(),
            cameras: camera_names(&a.cameras),
            labels: a.labels,
        }),
        None => {
            anyhow::ensure!(
                !a.labels,
                "--labels needs --dataset: the store's tracklets have no identity labels"
            );
            Box::new(crate::jobs::StoreSource {
                data_dir: dir.clone(),
                cameras: a.cameras.clone(),
                min_crops: a.min_crops,
            })
        }
    };
    let id = match &a.id {
        Some(id) => {
            anyhow::ensure!(
                !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
                "--id: letters, digits and '-' only"
            );
            id.clone()
        }
        None => crate::jobs::runner::new_job_id(&dir),
    };
    let report = crate::jobs::run_job(
        &id,
        &spec,
        source.as_mut(),
        crate::jobs::JobContext {
            data_dir: &dir,
            registry: &mut reg,
            serving: &serving,
            hook: hook.as_mut(),
            teacher: teacher.as_mut().map(|t| t as &mut dyn Teacher),
            cancel: cancel_on_ctrl_c(),
            phase: None,
        },
    );
    if a.dir.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("job {}  {}", report.id, report.scenario);
        if let (Some(o), Some(n)) = (&report.old, &report.new) {
            println!(
                "held-out ({}): serving {} rank-1 {:.1}% mAP {:.1}% ({:.3} GMACs) → new rank-1 {:.1}% mAP {:.1}% ({:.3} GMACs)",
                report
                    .held_out
                    .as_ref()
                    .map(|h| h.kind.as_str())
                    .unwrap_or("?"),
                report.serving_before.as_deref().unwrap_or("?"),
                100.0 * o.rank1,
                100.0 * o.map,
                o.macs as f64 / 1e9,
                100.0 * n.rank1,
                100.0 * n.map,
                n.macs as f64 / 1e9
            );
        }
        if let Some(d) = &report.decision {
            println!("{d}");
        }
        match &report.outcome {
            JobOutcome::Promoted { version } => {
                println!("promoted: {version} is the serving model")
            }
            JobOutcome::Rejected => println!("not promoted: the serving model is unchanged"),
            JobOutcome::Cancelled => println!("cancelled: nothing changed"),
            JobOutcome::Failed { error } => println!("failed: {error}\nnothing changed"),
        }
        println!(
            "report: {}",
            crate::jobs::runner::jobs_dir(&dir)
                .join(format!("{}.json", report.id))
                .display()
        );
    }
    Ok(match report.outcome {
        JobOutcome::Failed { .. } => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}

#[derive(Args, Debug)]
pub struct StudyArgs {
    /// The study (TOML; see config/study.example.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Keep the rows of an earlier run of this study (OUT_DIR/study.json) and do only the rest.
    #[arg(long)]
    pub resume: bool,
    /// Print the rows as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

pub fn run_study(a: StudyArgs) -> Result<ExitCode> {
    use crate::study::{StudyConfig, StudyResults};
    let cfg = StudyConfig::load(&a.config)?;
    let runs = cfg.runs()?;
    let previous = if a.resume {
        let p = cfg.out_dir.join("study.json");
        if p.is_file() {
            Some(
                serde_json::from_str::<StudyResults>(&std::fs::read_to_string(&p)?)
                    .with_context(|| format!("{} is not a study result", p.display()))?,
            )
        } else {
            None
        }
    } else {
        None
    };
    let needs_teacher = runs.iter().any(|r| r.scenario.needs_teacher());
    let mut teacher = if needs_teacher {
        Some(
            TrainKnobs {
                seed: cfg.seed,
                lr: 0.0,
                batch: "8x4".into(),
                teacher: cfg.teacher.clone(),
            }
            .open_teacher()?,
        )
    } else {
        None
    };
    if !a.json {
        eprintln!("study: {} runs, budget {} each", runs.len(), cfg.budget);
    }
    let mut t: Option<&mut dyn Teacher> = teacher.as_mut().map(|t| t as &mut dyn Teacher);
    let res = crate::study::run_study(&cfg, previous, &mut t, &cancel_on_ctrl_c(), a.json)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&res.rows)?);
    } else {
        print!("{}", crate::study::to_markdown(&res.rows));
        for f in ["study.csv", "study.md", "study.svg", "study.json"] {
            println!("written: {}", cfg.out_dir.join(f).display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
