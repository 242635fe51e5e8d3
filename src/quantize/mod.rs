//! `crosscam quantize`: static int8 quantisation of an ONNX model in QDQ form, calibrated on the
//! site's own data, checked against the float model, written atomically and registered in a
//! site manifest.
//!
//! Steps: the float model is read (external data included) and prepared (constant nodes become
//! initializers, zero `Pad`s before convs are folded into them); [`qdq::plan`] decides which nodes
//! and tensors are quantised and which stay float (with the reason); a calibration copy of the
//! model lists every tensor to be quantised as an extra output and runs in ONNX Runtime on the
//! calibration inputs — prepared exactly as the daemon prepares them (the embedder's crop resize
//! and normalisation, the detector's letterbox) — while [`calib::Observer`]s collect ranges; the
//! ranges become scales and [`qdq::apply`] writes the QDQ graph. [`check`] then compares the int8
//! model with the float one on data the calibration did not see.

pub mod calib;
pub mod check;
pub mod qdq;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::Array4;
use serde::Serialize;

use crate::frame::{BBox, Frame, Normalize};
use crate::models::{Manifest, ModelEntry, Role};
use crate::onnx::{Model, ValueInfo};
use crate::progress::Progress;
use crate::reid::EmbedderSpec;
use crate::runtime::{Runtime, SessionOptions};

pub use calib::Method;
pub use qdq::{ActType, FloatNode, QdqOptions};

/// Metadata keys written into quantised models.
pub const META_QUANTIZED: &str = "crosscam.quantized";
pub const META_SOURCE_SHA256: &str = "crosscam.quantized_from_sha256";
pub const META_CALIBRATION: &str = "crosscam.calibration";
pub const META_CHECK: &str = "crosscam.quantize_check";
/// The format name in manifests and metadata.
pub const FORMAT: &str = "int8-qdq";

/// Where calibration inputs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum CalibSource {
    /// A folder of images: person crops for an embedder, whole frames for a detector.
    Images(PathBuf),
    /// A re-id dataset: its train split (the check uses query + gallery).
    Dataset(PathBuf),
    /// A video: frames for a detector, detected person crops for an embedder.
    Video(PathBuf),
    /// A daemon's data directory: its stored person crops (embedders).
    Store(PathBuf),
}

impl CalibSource {
    pub fn describe(&self) -> String {
        match self {
            CalibSource::Images(p) => format!("images in {}", p.display()),
            CalibSource::Dataset(p) => format!("train split of the dataset {}", p.display()),
            CalibSource::Video(p) => format!("video {}", p.display()),
            CalibSource::Store(p) => format!("stored crops of {}", p.display()),
        }
    }
}

/// The model being quantised: the float graph and how its inputs are prepared.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub model: Model,
    pub sha256: String,
    pub role: Role,
    /// The manifest entry it came from (or borrowed its preprocessing from, `--like`).
    pub entry: Option<ModelEntry>,
    /// Embedders: input, output, size, normalisation.
    pub embedder: Option<EmbedderSpec>,
}

impl Target {
    /// Resolves `model`: a name in `manifest` (its file, checksum verified), or a file — whose
    /// manifest entry is found by checksum, or borrowed from `like`, or (embedders) read from
    /// the model itself.
    pub fn resolve(model: &str, manifest: &Manifest, like: Option<&str>) -> Result<Target> {
        let (path, mut entry) = match manifest.models.iter().find(|m| m.name == model) {
            Some(e) => (manifest.verify_file(e)?, Some(e.clone())),
            None => {
                let p = PathBuf::from(model);
                anyhow::ensure!(
                    p.is_file(),
                    "--model {model}: no such file, and no model of that name in {} (known: {})",
                    manifest.path.display(),
                    manifest
                        .models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                (p, None)
            }
        };
        let sha256 = crate::models::sha256_file(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if entry.is_none() {
            entry = manifest
                .models
                .iter()
                .find(|m| m.sha256.eq_ignore_ascii_case(&sha256))
                .cloned();
        }
        if let Some(l) = like {
            let e = manifest.get(l).with_context(|| format!("--like {l}"))?;
            entry = Some(e.clone());
        }
        let model = Model::load(&path).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a readable ONNX model ({e}); check it with `crosscam model info --model {}` or export it again",
                path.display(),
                path.display()
            )
        })?;
        let role = entry.as_ref().map(|e| e.role).unwrap_or(Role::Embedder);
        let embedder = match role {
            Role::Embedder => Some(match &entry {
                Some(e) => EmbedderSpec::from_manifest(e),
                None => EmbedderSpec::from_model(&model).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: {e}; if it is a detector, name the manifest model whose pre-processing it uses with --like (e.g. --like nanodet-416)",
                        path.display()
                    )
                })?,
            }),
            Role::Detector => {
                let e = entry.as_ref().expect("detector role comes from an entry");
                anyhow::ensure!(
                    e.family == "nanodet",
                    "{}: detector family '{}' has no pre-processing in crosscam (known: nanodet)",
                    path.display(),
                    e.family
                );
                None
            }
        };
        Ok(Target {
            path,
            model,
            sha256,
            role,
            entry,
            embedder,
        })
    }

    /// The detector's input size and normalisation.
    fn detector_input(&self) -> Option<(usize, Normalize)> {
        let e = self.entry.as_ref()?;
        Some((
            e.input.hw().0,
            Normalize {
                mean: e.input.mean,
                std: e.input.std,
                bgr: e.input.color.eq_ignore_ascii_case("BGR"),
            },
        ))
    }

    fn input_name(&self) -> String {
        match (&self.embedder, &self.entry) {
            (Some(s), _) => s.input.clone(),
            (None, Some(e)) => e.input.name.clone(),
            (None, None) => self
                .model
                .graph
                .inputs
                .first()
                .map(|i| i.name.clone())
                .unwrap_or_default(),
        }
    }
}

/// Calibration inputs, already prepared as the model's input tensors.
pub struct CalibData {
    pub batches: Vec<Array4<f32>>,
    pub samples: usize,
    pub description: String,
    /// The files (crops) used, to prove the check's data is disjoint.
    pub files: Vec<PathBuf>,
    /// Sequence numbers of the video frames used.
    pub frames: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct QuantizeOptions {
    pub method: Method,
    pub percentile: f64,
    /// Calibration samples (crops or frames).
    pub samples: usize,
    /// Analysed frames per second when reading a video.
    pub fps: u32,
    /// Frame width the daemon analyses at (frames are scaled to it before the detector).
    pub width: u32,
    pub qdq: QdqOptions,
    pub quiet: bool,
}

impl Default for QuantizeOptions {
    fn default() -> Self {
        QuantizeOptions {
            method: Method::Percentile,
            percentile: 99.999,
            samples: 128,
            fps: 2,
            width: 640,
            qdq: QdqOptions::default(),
            quiet: false,
        }
    }
}

/// Every image file (jpg, jpeg, png, bmp) directly in `dir`, sorted.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the image folder {}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "bmp"
                )
            })
        })
        .collect();
    v.sort();
    Ok(v)
}

/// `n` evenly spaced items of `v` (all when it has fewer).
pub fn spread<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n {
        return v.to_vec();
    }
    (0..n).map(|i| v[i * v.len() / n].clone()).collect()
}

/// Frames of `video` at `fps`, scaled to `width`, skipping those whose sequence number is in
/// `skip`, at most `n`.
pub fn video_frames(
    video: &Path,
    fps: u32,
    width: u32,
    n: usize,
    skip: &[u64],
) -> Result<Vec<Frame>> {
    let reader = crate::ingest::reader::VideoReader::open(video, Some(fps), Some(width))
        .with_context(|| format!("cannot read the video {}", video.display()))?;
    let mut out = Vec::new();
    for f in reader {
        let f = f.with_context(|| format!("cannot decode {}", video.display()))?;
        if skip.contains(&f.seq) {
            continue;
        }
        out.push(f);
        if out.len() >= n {
            break;
        }
    }
    Ok(out)
}

/// The batch size the model's input fixes (1 for exports without a dynamic batch), if any.
fn fixed_batch(target: &Target) -> Option<usize> {
    let name = target.input_name();
    let inp = target.model.graph.inputs.iter().find(|i| i.name == name)?;
    inp.shape
        .as_ref()?
        .first()?
        .fixed()
        .filter(|&b| b > 0)
        .map(|b| b as usize)
}

/// Whether `target`'s input height and width are dynamic: the daemon can then fit frames to the
/// input (`[detect] input = "fit"`, sides multiples of 32).
fn dynamic_hw(target: &Target) -> bool {
    let name = target.input_name();
    target
        .model
        .graph
        .inputs
        .iter()
        .find(|i| i.name == name)
        .and_then(|i| i.shape.as_ref())
        .is_some_and(|s| s.len() == 4 && s[2].fixed().is_none() && s[3].fixed().is_none())
}

/// Reads the calibration inputs for `target`.
pub fn calibration_data(
    target: &Target,
    source: &CalibSource,
    opts: &QuantizeOptions,
    rt: &Runtime,
) -> Result<CalibData> {
    let n = opts.samples.max(1);
    match target.role {
        Role::Embedder => {
            let spec = target.embedder.as_ref().expect("embedder spec");
            let (images, files, description) = embedder_crops(source, n, opts, rt)?;
            anyhow::ensure!(
                !images.is_empty(),
                "no calibration crops in the {}",
                source.describe()
            );
            let frames: Vec<Frame> = images.iter().map(Frame::from_image).collect();
            let mut batches = Vec::new();
            let fixed = fixed_batch(target);
            // a model exported with a fixed batch gets only full batches of that size
            for chunk in frames
                .chunks(fixed.unwrap_or(16))
                .filter(|c| fixed.is_none_or(|b| c.len() == b))
            {
                let crops: Vec<(&Frame, BBox)> = chunk
                    .iter()
                    .map(|f| (f, BBox::new(0.0, 0.0, f.width as f32, f.height as f32)))
                    .collect();
                batches.push(crate::reid::embedder::preprocess_crops(spec, &crops));
            }
            Ok(CalibData {
                samples: batches.iter().map(|b| b.shape()[0]).sum(),
                batches,
                description,
                files,
                frames: Vec::new(),
            })
        }
        Role::Detector => {
            let (size, norm) = target
                .detector_input()
                .ok_or_else(|| anyhow::anyhow!("the detector has no manifest entry"))?;
            let (frames, files, description) = match source {
                CalibSource::Video(v) => {
                    let f = video_frames(v, opts.fps, opts.width, n, &[])?;
                    let d = format!(
                        "{} frames of {} at {} frames/s, width {}",
                        f.len(),
                        v.display(),
                        opts.fps,
                        opts.width
                    );
                    (f, Vec::new(), d)
                }
                CalibSource::Images(dir) => {
                    let files = spread(&image_files(dir)?, n);
                    let mut f = Vec::new();
                    for p in &files {
                        let img = image::open(p)
                            .with_context(|| format!("cannot read image {}", p.display()))?
                            .to_rgb8();
                        f.push(Frame::from_image(&img));
                    }
                    let d = format!("{} images of {}", f.len(), dir.display());
                    (f, files, d)
                }
                other => anyhow::bail!(
                    "{}: these are person crops, and a detector calibrates on whole frames; give --video FILE (or --images DIR of whole frames)",
                    other.describe()
                ),
            };
            anyhow::ensure!(
                !frames.is_empty(),
                "no calibration frames in the {}",
                source.describe()
            );
            let seqs = if matches!(source, CalibSource::Video(_)) {
                frames.iter().map(|f| f.seq).collect()
            } else {
                Vec::new()
            };
            let mut batches = Vec::new();
            let fixed = fixed_batch(target);
            // frames placed as the daemon places them by default (`[detect] input`): fitted only
            // where that is the default and the model allows it
            let fit =
                crate::config::DetectSettings::default().input == crate::config::DetectInput::Fit;
            let align = (fit && dynamic_hw(target)).then_some(32);
            for chunk in frames
                .chunks(fixed.unwrap_or(2))
                .filter(|c| fixed.is_none_or(|b| c.len() == b))
            {
                let refs: Vec<&Frame> = chunk.iter().collect();
                batches.push(crate::detect::nanodet::prepare_batch(&refs, size, align, &norm).0);
            }
            Ok(CalibData {
                samples: batches.iter().map(|b| b.shape()[0]).sum(),
                batches,
                description,
                files,
                frames: seqs,
            })
        }
    }
}

type Crops = (Vec<image::RgbImage>, Vec<PathBuf>, String);

fn read_images(files: &[PathBuf]) -> Result<Vec<image::RgbImage>> {
    files
        .iter()
        .map(|p| {
            image::open(p)
                .map(|i| i.to_rgb8())
                .with_context(|| format!("cannot read image {}", p.display()))
        })
        .collect()
}

fn embedder_crops(
    source: &CalibSource,
    n: usize,
    opts: &QuantizeOptions,
    rt: &Runtime,
) -> Result<Crops> {
    match source {
        CalibSource::Images(dir) => {
            let files = spread(&image_files(dir)?, n);
            let d = format!("{} crops from {}", files.len(), dir.display());
            Ok((read_images(&files)?, files, d))
        }
        CalibSource::Dataset(dir) => {
            let ds = crate::eval::Dataset::load(dir, None)
                .with_context(|| format!("--dataset {}", dir.display()))?;
            anyhow::ensure!(
                !ds.train.is_empty(),
                "the dataset {} has no train split: calibration uses the train split so that the check (query and gallery) stays held out; give --images DIR instead",
                dir.display()
            );
            let items = spread(&ds.train, n);
            let files: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
            let d = format!(
                "{} crops of the train split of {} (of {})",
                files.len(),
                dir.display(),
                ds.train.len()
            );
            Ok((read_images(&files)?, files, d))
        }
        CalibSource::Store(data) => {
            let tmp = std::env::temp_dir().join(format!(
                "crosscam-quantize-store-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            let res = (|| -> Result<Crops> {
                crate::dataset::from_store::export(data, &tmp, false)
                    .with_context(|| format!("--store {}", data.display()))?;
                let files = spread(&image_files(&tmp.join("bounding_box_train"))?, n);
                anyhow::ensure!(
                    !files.is_empty(),
                    "the store {} holds no person crops yet; run the daemon for a while first, or give --images/--dataset",
                    data.display()
                );
                let d = format!("{} stored crops of {}", files.len(), data.display());
                // the export is temporary: the files are not kept, their crops are
                Ok((read_images(&files)?, Vec::new(), d))
            })();
            let _ = std::fs::remove_dir_all(&tmp);
            res
        }
        CalibSource::Video(v) => {
            // people found by the shipped detector on frames of the video
            let manifest = Manifest::bundled()?;
            let mut det = crate::detect::open(
                &manifest,
                "nanodet-416",
                rt,
                &crate::config::DetectSettings::default(),
                SessionOptions::default(),
            )?;
            let reader =
                crate::ingest::reader::VideoReader::open(v, Some(opts.fps), Some(opts.width))
                    .with_context(|| format!("cannot read the video {}", v.display()))?;
            let mut crops = Vec::new();
            for f in reader {
                let f = f.with_context(|| format!("cannot decode {}", v.display()))?;
                for d in det.detect(&[&f])?.remove(0) {
                    if d.score >= 0.5 && d.bbox.height() >= 48.0 {
                        crops.push(f.crop(&d.bbox));
                    }
                }
                if crops.len() >= n {
                    break;
                }
            }
            crops.truncate(n);
            let d = format!(
                "{} person crops detected in {} ({} frames/s)",
                crops.len(),
                v.display(),
                opts.fps
            );
            Ok((crops, Vec::new(), d))
        }
    }
}

/// The range of one quantised tensor, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct TensorRange {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
    pub lo: f32,
    pub hi: f32,
}

/// What quantisation did (the `--json` report's core).
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeReport {
    pub model: String,
    pub source_sha256: String,
    pub role: Role,
    pub method: Method,
    pub percentile: Option<f64>,
    pub activations: ActType,
    pub reduce_range: bool,
    pub calibration: String,
    pub calibration_samples: usize,
    pub calibration_seconds: f64,
    /// Quantised nodes per op type.
    pub quantized_ops: BTreeMap<String, usize>,
    pub quantized_nodes: usize,
    /// Relu / Clip nodes absorbed into the quantisation of the op before them.
    pub removed_activations: usize,
    /// Pad nodes folded into the convs after them.
    pub folded_pads: usize,
    pub float_nodes: Vec<FloatNode>,
    /// Float nodes per op type.
    pub float_ops: BTreeMap<String, usize>,
    pub quantized_tensors: usize,
    pub ranges: Vec<TensorRange>,
}

/// The prepared float graph (constant nodes as initializers, zero pads folded into convs) and
/// the quantisation plan: fails early, before any calibration data is read, on a model that
/// cannot be quantised.
pub fn prepare(target: &Target, opts: &QdqOptions) -> Result<(Model, usize, qdq::Plan)> {
    let file = target.path.display().to_string();
    let mut prepared = target.model.clone();
    prepared
        .graph
        .fold_constant_nodes()
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    let folded = qdq::fold_pads(&mut prepared);
    let plan = qdq::plan(&prepared, opts).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    Ok((prepared, folded, plan))
}

/// Calibrates and quantises `target` on `data`; returns the QDQ model and the report.
pub fn quantize(
    target: &Target,
    data: &CalibData,
    opts: &QuantizeOptions,
    rt: &Runtime,
) -> Result<(Model, QuantizeReport)> {
    let file = target.path.display().to_string();
    let (prepared, folded, plan) = prepare(target, &opts.qdq)?;
    let input = target.input_name();
    let observed = plan.calibrated();
    tracing::info!(
        model = %file,
        tensors = observed.len(),
        quantized = plan.quantized.len(),
        float = plan.float_nodes.len(),
        "quantisation plan"
    );

    // the calibration copy: every observed tensor is an output
    let mut calib_model = prepared.clone();
    for t in &observed {
        if *t != input && !calib_model.graph.is_graph_output(t) {
            calib_model.graph.outputs.push(ValueInfo {
                name: t.clone(),
                elem_type: crate::onnx::proto::data_type::FLOAT,
                shape: None,
            });
        }
    }
    let (mut session, _) = rt
        .session_from_bytes(&calib_model.to_bytes(), SessionOptions::default())
        .with_context(|| format!("ONNX Runtime cannot run the calibration copy of {file}"))?;
    let histogram = opts.method != Method::Minmax;
    let mut obs: HashMap<String, calib::Observer> = observed
        .iter()
        .map(|t| (t.clone(), calib::Observer::new(histogram)))
        .collect();
    let t0 = std::time::Instant::now();
    let mut progress = Progress::new("calibrating", data.samples as u64).quiet(opts.quiet);
    for x in &data.batches {
        let tensor = ort::value::TensorRef::from_array_view(x)?;
        let outputs = session
            .run(ort::inputs![input.as_str() => tensor])
            .with_context(|| format!("calibration run of {file} failed"))?;
        for (name, o) in obs.iter_mut() {
            if *name == input {
                o.update(x.as_slice().unwrap_or(&[]));
                continue;
            }
            let v = outputs.get(name.as_str()).ok_or_else(|| {
                anyhow::anyhow!("the calibration run of {file} gave no tensor '{name}'")
            })?;
            let (_, vals) = v
                .try_extract_tensor::<f32>()
                .with_context(|| format!("{file}: tensor '{name}' is not float32"))?;
            o.update(vals);
        }
        progress.inc(x.shape()[0] as u64);
    }
    progress.finish();
    drop(session);
    let calibration_seconds = t0.elapsed().as_secs_f64();
    let mut ranges = HashMap::new();
    let mut report_ranges = Vec::new();
    for t in &observed {
        let o = &obs[t];
        let (lo, hi) = match plan.fixed_ranges.get(t) {
            Some(&r) => r,
            None => o.range(opts.method, opts.percentile),
        };
        ranges.insert(t.clone(), (lo, hi));
        report_ranges.push(TensorRange {
            tensor: t.clone(),
            min: o.min,
            max: o.max,
            lo,
            hi,
        });
    }
    let mut q = qdq::apply(&prepared, &plan, &ranges, &opts.qdq)
        .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    q.set_metadata(META_QUANTIZED, FORMAT);
    q.set_metadata(META_SOURCE_SHA256, &target.sha256);
    q.set_metadata(
        META_CALIBRATION,
        &format!(
            "{} on {}",
            match opts.method {
                Method::Percentile => format!("percentile {}", opts.percentile),
                m => m.as_str().to_string(),
            },
            data.description
        ),
    );
    if let Some(spec) = &target.embedder {
        // the normalisation travels with the file, so it also runs outside a manifest
        spec.write_metadata(&mut q);
    }
    let mut float_ops = BTreeMap::new();
    for f in &plan.float_nodes {
        *float_ops.entry(f.op.clone()).or_insert(0) += 1;
    }
    let report = QuantizeReport {
        model: file,
        source_sha256: target.sha256.clone(),
        role: target.role,
        method: opts.method,
        percentile: (opts.method == Method::Percentile).then_some(opts.percentile),
        activations: opts.qdq.activations,
        reduce_range: opts.qdq.reduce_range,
        calibration: data.description.clone(),
        calibration_samples: data.samples,
        calibration_seconds,
        quantized_ops: plan.quantized_ops(&prepared),
        quantized_nodes: plan.quantized.len(),
        removed_activations: plan.removed.len(),
        folded_pads: folded,
        float_nodes: plan.float_nodes.clone(),
        float_ops,
        quantized_tensors: plan.tensors.len(),
        ranges: report_ranges,
    };
    Ok((q, report))
}

/// Refuses to write over the input model (or its external data).
pub fn check_out_path(input: &Path, out: &Path) -> Result<()> {
    let canon = |p: &Path| -> Option<PathBuf> {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(std::fs::canonicalize(dir).ok()?.join(p.file_name()?))
    };
    let (i, o) = (canon(input), canon(out));
    anyhow::ensure!(
        o.is_some(),
        "--out {}: its folder does not exist",
        out.display()
    );
    let o = o.unwrap_or_default();
    let i = i.unwrap_or_default();
    let same = i == o
        || std::fs::canonicalize(out)
            .ok()
            .zip(std::fs::canonicalize(input).ok())
            .is_some_and(|(a, b)| a == b);
    anyhow::ensure!(
        !same,
        "--out {} is the input model: the quantised model must go to another file (e.g. {})",
        out.display(),
        default_out_name(input).display()
    );
    let data = i.with_file_name(format!(
        "{}.data",
        i.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    anyhow::ensure!(
        o != data,
        "--out {} is the input model's external data file",
        out.display()
    );
    Ok(())
}

/// `model.onnx` → `model-int8.onnx`.
pub fn default_out_name(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    input.with_file_name(format!("{stem}-int8.onnx"))
}

/// Adds the quantised model at `file` to the site manifest `manifest_path` as `name` (created
/// when missing, extending the shipped manifest); the source's role, family, input size,
/// normalisation and linking values are kept. Returns the entry.
pub fn register(
    manifest_path: &Path,
    name: &str,
    file: &Path,
    target: &Target,
    replace: bool,
    recipe: &str,
) -> Result<ModelEntry> {
    crate::config::secrets::check_id(name).map_err(|m| anyhow::anyhow!("--name: {m}"))?;
    let shipped = crate::paths::project_root().join("models/manifest.toml");
    anyhow::ensure!(
        std::fs::canonicalize(manifest_path).ok() != std::fs::canonicalize(&shipped).ok(),
        "{} is the shipped manifest; give the site's own with --manifest (it is created if missing)",
        manifest_path.display()
    );
    let sha256 = crate::models::sha256_file(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let abs = std::fs::canonicalize(file)
        .with_context(|| format!("cannot resolve {}", file.display()))?;
    let mut entry = match &target.entry {
        Some(e) => e.clone(),
        None => {
            let spec = target.embedder.as_ref().expect("embedder spec");
            ModelEntry {
                name: String::new(),
                role: Role::Embedder,
                family: "embedding".into(),
                file: PathBuf::new(),
                sha256: String::new(),
                licence: "as the float model's".into(),
                source: String::new(),
                recipe: String::new(),
                notes: None,
                input: crate::models::InputSpec {
                    name: spec.input.clone(),
                    shape: vec![-1, 3, spec.height as i64, spec.width as i64],
                    layout: "NCHW".into(),
                    color: if spec.norm.bgr { "BGR" } else { "RGB" }.into(),
                    mean: spec.norm.mean,
                    std: spec.norm.std,
                },
                outputs: vec![crate::models::TensorSpec {
                    name: spec.output.clone(),
                    shape: vec![-1, spec.dim as i64],
                    meaning: Some("appearance embedding".into()),
                }],
                linking: None,
                quantized: None,
                source_sha256: None,
            }
        }
    };
    let from = target
        .entry
        .as_ref()
        .map(|e| format!("'{}' ({})", e.name, target.path.display()))
        .unwrap_or_else(|| target.path.display().to_string());
    entry.name = name.to_string();
    entry.file = abs;
    entry.sha256 = sha256;
    entry.source = format!("int8 QDQ quantisation of {from} by crosscam quantize");
    entry.recipe = recipe.to_string();
    entry.notes = Some(format!(
        "{FORMAT}: per-channel int8 weights, 8-bit activations calibrated on site; float source sha256 {}",
        target.sha256
    ));
    entry.quantized = Some(FORMAT.into());
    entry.source_sha256 = Some(target.sha256.clone());

    let created = !manifest_path.exists();
    if let Some(dir) = manifest_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = if created {
        crate::models::add::new_manifest_text(
            &std::fs::canonicalize(&shipped).unwrap_or(shipped.clone()),
        )
    } else {
        std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?
    };
    if !created {
        let existing = Manifest::load(manifest_path)?;
        if existing.local_names().iter().any(|n| n == name) {
            anyhow::ensure!(
                replace,
                "{} already has a model named {name:?}; give another --name, or --replace",
                manifest_path.display()
            );
            text = crate::models::add::remove_entry(&text, name);
        }
    }
    #[derive(Serialize)]
    struct One<'a> {
        model: [&'a ModelEntry; 1],
    }
    let block = toml::to_string(&One { model: [&entry] })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&block);
    crate::jobs::registry::write_atomic(manifest_path, text.as_bytes())?;
    let m = Manifest::load(manifest_path)?;
    m.verify_file(m.get(name)?)?;
    Ok(entry)
}
