//! `crosscam eval` and `crosscam dataset …`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// The embedding model: an ONNX file ([N,3,H,W] → [N,D]) or a manifest name
    /// (e.g. mobilenetv2-imagenet).
    #[arg(long)]
    pub model: String,
    /// The manifest that names the model (a site manifest written by `crosscam model add`;
    /// default: the shipped one).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// The dataset folder (Market-1501, DukeMTMC-reID, MSMT17 or CUHK03-NP layout).
    #[arg(long)]
    pub dataset: PathBuf,
    /// Dataset layout: auto, market1501, dukemtmc-reid, msmt17, cuhk03-np,
    /// cuhk03-np-detected, cuhk03-np-labeled.
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print one JSON object (rank1, rank5, rank10, mAP as fractions, num_query, num_gallery,
    /// num_skipped_query, model_macs, warnings [{code, message, value, threshold}], …) instead
    /// of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write query.npy, gallery.npy (float32 [n, D], L2-normalised) and query.csv,
    /// gallery.csv (path,pid,camid) into this folder.
    #[arg(long)]
    pub save_features: Option<PathBuf>,
    /// Apply k-reciprocal re-ranking (Zhong et al. 2017) before scoring.
    #[arg(long)]
    pub rerank: bool,
    /// Re-ranking k1 (size of the k-reciprocal neighbourhood).
    #[arg(long, default_value_t = 20)]
    pub rerank_k1: usize,
    /// Re-ranking k2 (neighbours averaged by local query expansion).
    #[arg(long, default_value_t = 6)]
    pub rerank_k2: usize,
    /// Re-ranking lambda (weight of the original distance).
    #[arg(long, default_value_t = 0.3)]
    pub rerank_lambda: f32,
    /// Images per inference batch.
    #[arg(long, default_value_t = crate::eval::model::DEFAULT_BATCH)]
    pub batch: usize,
}

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Make a re-id dataset (Market-1501 layout, pseudo-identities from tracklets) from video.
    Build(Box<DatasetBuildArgs>),
    /// Detect a dataset's layout and count its images, identities and cameras per split.
    Info(DatasetInfoArgs),
}

#[derive(Args, Debug)]
pub struct DatasetBuildArgs {
    /// Config file for the detector and tracker settings (default: built-in defaults).
    #[command(flatten)]
    pub config: super::ConfigArg,
    /// Input video; repeat for several. Without --cameras each video is one camera.
    #[arg(long = "video", required_unless_present = "from_store")]
    pub videos: Vec<PathBuf>,
    /// Export a daemon's data directory instead of reading video: its stored crops (named by
    /// gallery identity) and its operators' labels as same-person pairs and cannot-links
    /// (`labels.json`, docs/retuning.md). No detection runs.
    #[arg(long, value_name = "DATA", conflicts_with_all = ["videos", "cameras"])]
    pub from_store: Option<PathBuf>,
    /// Output folder: bounding_box_train/, query/, bounding_box_test/ and dataset.json go here.
    #[arg(long)]
    pub out: PathBuf,
    /// Virtual cameras: "NAME=START-END[,KEY=VALUE...];..." (keys: video, every, until,
    /// brightness, contrast, cast=R:G:B, blur, scale), e.g.
    /// "c1=0-40s;c2=40-80s,brightness=0.7,blur=1.5", or a TOML file. See docs/evaluation.md.
    #[arg(long)]
    pub cameras: Option<String>,
    /// Clean boxes (inside the frame, not overlapped, tall enough) a tracklet needs.
    #[arg(long, default_value_t = crate::dataset::filter::DEFAULT_MIN_TRACK_LEN)]
    pub min_track_len: usize,
    /// Boxes lower than this many pixels are not used.
    #[arg(long, default_value_t = 32.0)]
    pub min_box_height: f64,
    /// IoU above which two tracklets' boxes in one frame overlap.
    #[arg(long, default_value_t = 0.3)]
    pub overlap_iou: f64,
    /// Tracklets with a larger share of overlapped boxes are dropped.
    #[arg(long, default_value_t = 0.3)]
    pub max_overlapped: f64,
    /// Share of identities in the test set (query + gallery); train and test never share one.
    #[arg(long, default_value_t = 0.5)]
    pub test_fraction: f64,
    /// Crops kept per identity and camera, spread evenly over time.
    #[arg(long, default_value_t = 10)]
    pub crops_per_camera: usize,
    /// Query crops per test identity and camera.
    #[arg(long, default_value_t = 1)]
    pub queries_per_camera: usize,
    /// Gallery crops of another camera closer than this (seconds) to a query are left out.
    #[arg(long, default_value_t = 2.0)]
    pub query_gap: f64,
    /// Smallest box IoU for linking tracklets of two virtual cameras as one person.
    #[arg(long, default_value_t = 0.5)]
    pub link_iou: f64,
    /// Longest pause (seconds) between tracklets of two cameras that are linked.
    #[arg(long, default_value_t = 0.5)]
    pub link_gap: f64,
    /// Crops the tracker keeps per tracklet (the builder samples from them).
    #[arg(long, default_value_t = 32)]
    pub track_crops: usize,
    /// Person detector (manifest name or ONNX file).
    #[arg(long, default_value = "nanodet-416")]
    pub detector: String,
    /// Frames analysed per second of video (default: every frame).
    #[arg(long)]
    pub fps: Option<f64>,
    /// Seed of the train/test split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// JPEG quality of the crops.
    #[arg(long, default_value_t = 95)]
    pub jpeg_quality: u8,
    /// Replace the splits and dataset.json of a dataset already in --out.
    #[arg(long)]
    pub force: bool,
    /// Print the build report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl DatasetBuildArgs {
    /// The builder's options from the flags.
    pub fn options(&self) -> crate::dataset::BuildOptions {
        use crate::dataset::build::{LinkOptions, SplitOptions};
        let d = crate::dataset::BuildOptions::default();
        crate::dataset::BuildOptions {
            filter: crate::dataset::FilterOptions {
                min_len: self.min_track_len,
                min_height: self.min_box_height,
                overlap_iou: self.overlap_iou,
                max_overlapped: self.max_overlapped,
                ..d.filter
            },
            link: LinkOptions {
                iou: self.link_iou,
                max_gap_s: self.link_gap,
                ..d.link
            },
            split: SplitOptions {
                test_fraction: self.test_fraction,
                max_crops_per_camera: self.crops_per_camera,
                queries_per_camera: self.queries_per_camera,
                query_gap_s: self.query_gap,
                seed: self.seed,
            },
            jpeg_quality: self.jpeg_quality,
            replace: self.force,
        }
    }

    /// The whole request: checked cameras and options.
    pub fn request(&self) -> Result<crate::dataset::BuildRequest> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.test_fraction),
            "--test-fraction must lie in [0, 1], got {}",
            self.test_fraction
        );
        anyhow::ensure!(
            self.crops_per_camera > 0,
            "--crops-per-camera must be at least 1"
        );
        for v in &self.videos {
            anyhow::ensure!(v.is_file(), "--video {}: no such file", v.display());
        }
        let cameras =
            crate::dataset::cameras::from_arg(self.cameras.as_deref(), self.videos.len())?;
        Ok(crate::dataset::BuildRequest {
            videos: self.videos.clone(),
            cameras,
            out: self.out.clone(),
            options: self.options(),
            crops_per_track: self.track_crops.max(self.crops_per_camera),
            quiet: self.json,
        })
    }
}

#[derive(Args, Debug)]
pub struct DatasetInfoArgs {
    /// The dataset folder.
    #[arg(long)]
    pub dataset: PathBuf,
    /// Dataset layout (see `crosscam eval --help`).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `crosscam eval`.
pub fn run_eval(a: EvalArgs) -> Result<ExitCode> {
    use crate::eval::{Dataset, Format, MetricOptions, RerankParams, model};
    let format = Format::parse(&a.format)?;
    let ds = Dataset::load(&a.dataset, format)?;
    let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
    let manifest = match &a.manifest {
        Some(m) => crate::models::Manifest::load(m)?,
        None => crate::models::Manifest::bundled()?,
    };
    let mut embedder = crate::reid::Embedder::open(
        &a.model,
        &manifest,
        rt,
        crate::runtime::SessionOptions::default(),
    )
    .with_context(|| format!("cannot open the model {}", a.model))?;
    let model_path = match manifest.get(&a.model) {
        Ok(entry) => manifest.file_of(entry),
        Err(_) => PathBuf::from(&a.model),
    };
    let input = [3, embedder.spec.height as i64, embedder.spec.width as i64];
    let model_macs = match crate::onnx::info::model_info(&model_path, Some(&input)) {
        Ok(i) if i.macs_complete => Some(i.macs),
        Ok(i) => {
            tracing::warn!(
                "the MACs of {} are incomplete ({}): model_macs is left empty",
                model_path.display(),
                i.shape_gap.unwrap_or_default()
            );
            None
        }
        Err(e) => {
            tracing::warn!("cannot count the MACs of {}: {e}", model_path.display());
            None
        }
    };
    let opts = model::ModelEvalOptions {
        batch: a.batch,
        metrics: MetricOptions {
            rerank: a.rerank.then_some(RerankParams {
                k1: a.rerank_k1,
                k2: a.rerank_k2,
                lambda: a.rerank_lambda,
            }),
            ..MetricOptions::default()
        },
        save_features: a.save_features.clone(),
        quiet: a.json,
    };
    let report = model::evaluate_model(&mut embedder, &a.model, model_macs, &ds, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        // the JSON has them under "warnings"; say them to whoever watches the terminal too
        for w in &report.warnings {
            eprintln!("warning: {}", w.message);
        }
    } else {
        print!("{}", model::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// `crosscam dataset …`.
pub fn dataset(cmd: DatasetCommand) -> Result<ExitCode> {
    match cmd {
        DatasetCommand::Build(a) => {
            if let Some(data) = &a.from_store {
                let rep = crate::dataset::from_store::export(data, &a.out, a.force)?;
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&rep)?);
                } else {
                    println!(
                        "exported {} tracklets ({} crops, {} gallery identities) and {} labels ({} same-person pairs, {} cannot-links) to {}",
                        rep.tracklets,
                        rep.crops,
                        rep.identities,
                        rep.same_pairs + rep.cannot_links,
                        rep.same_pairs,
                        rep.cannot_links,
                        a.out.display()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            // check the flags and cameras before loading any model
            a.request()?;
            let cfg = a.config.load()?;
            let rt = crate::runtime::init(&cfg.runtime)?;
            let manifest = crate::models::Manifest::load(&cfg.models.manifest)?;
            let detector = crate::detect::open(
                &manifest,
                &a.detector,
                rt,
                &cfg.detect,
                crate::runtime::SessionOptions::default(),
            )
            .with_context(|| format!("--detector {}", a.detector))?;
            let mut source = crate::dataset::source::DetectorSource {
                detector,
                track: cfg.track.clone(),
                fps: a.fps.map(|f| f.round().max(1.0) as u32),
            };
            run_dataset_build(&a, &mut source)
        }
        DatasetCommand::Info(a) => run_dataset_info(a),
    }
}

/// Runs `crosscam dataset build` with `source` doing detection + tracking.
pub fn run_dataset_build(
    a: &DatasetBuildArgs,
    source: &mut dyn crate::dataset::TrackletSource,
) -> Result<ExitCode> {
    let req = a.request()?;
    let report = crate::dataset::build_dataset(&req, source)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", crate::dataset::build::render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_dataset_info(a: DatasetInfoArgs) -> Result<ExitCode> {
    use crate::eval::dataset::{Dataset, Format, Split, SplitCounts};
    let ds = Dataset::load(&a.dataset, Format::parse(&a.format)?)?;
    let counts: Vec<(Split, SplitCounts)> = Split::ALL
        .iter()
        .map(|&s| (s, SplitCounts::of(ds.items(s))))
        .collect();
    if a.json {
        let mut v = serde_json::json!({
            "dataset": ds.root.display().to_string(),
            "format": ds.format.name(),
            "pseudo_labels": ds.pseudo_labels(),
        });
        for (s, c) in &counts {
            v[serde_json::to_value(s)?.as_str().unwrap_or("split")] = serde_json::to_value(c)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} ({}{})",
            ds.root.display(),
            ds.format,
            if ds.pseudo_labels() {
                ", pseudo-labels"
            } else {
                ""
            }
        );
        println!("split     images  identities  cameras  from");
        for (s, c) in &counts {
            println!(
                "{:<8} {:>7} {:>11} {:>8}  {}",
                format!("{s:?}").to_lowercase(),
                c.images,
                c.ids,
                c.cameras,
                ds.source(*s).display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
