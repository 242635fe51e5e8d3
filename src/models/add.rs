//! `crosscam model add`: a re-id network trained elsewhere (torchreid, fast-reid, BoxMOT exports
//! of OSNet or ResNet-50) becomes a manifest entry crosscam can serve, evaluate, prune and
//! re-tune — without editing TOML by hand.
//!
//! The ONNX file is read to find its input and output tensors; the input size comes from the
//! model (or the torchreid default 256×128 when its height and width are dynamic), the
//! normalisation from crosscam's metadata keys when present, else the flags, else ImageNet's
//! mean and std in RGB (what torchreid and fast-reid train with). The file is run once in ONNX
//! Runtime on two crops to prove it loads and to read its embedding dimension. Its sha256 and
//! MACs are computed, and, with `--calibrate DATASET`, the linking values are measured as
//! `crosscam eval` does. The entry is appended to the site's own manifest (created on first
//! use with `extends` pointing at the shipped one), never to the shipped manifest.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{InputSpec, LinkCalibration, Manifest, ModelEntry, Role, TensorSpec};
use crate::reid::{Embedder, EmbedderSpec};
use crate::runtime::{Runtime, SessionOptions};

#[derive(Debug, Clone)]
pub struct AddOptions {
    pub file: PathBuf,
    pub role: Role,
    pub name: Option<String>,
    /// The site manifest to write (created when missing).
    pub manifest: PathBuf,
    pub color: Option<String>,
    pub mean: Option<[f32; 3]>,
    pub std: Option<[f32; 3]>,
    pub licence: Option<String>,
    pub source: Option<String>,
    pub calibrate: Option<PathBuf>,
    /// Replace an entry of the same name.
    pub replace: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Added {
    pub name: String,
    pub manifest: PathBuf,
    /// Where the model file was copied (next to the manifest).
    pub file: PathBuf,
    pub created_manifest: bool,
    pub input: Vec<i64>,
    pub output_dim: usize,
    pub sha256: String,
    pub macs: u64,
    pub params: u64,
    pub linking: Option<LinkCalibration>,
    /// Where each preprocessing value came from (`model metadata`, `flag`, `default`).
    pub normalisation_from: String,
}

/// Parses `a,b,c` into three finite numbers.
pub fn parse_triple(s: &str) -> Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>().map_err(|e| format!("{x:?}: {e}")))
        .collect::<Result<_, _>>()?;
    if v.len() != 3 || v.iter().any(|x| !x.is_finite()) {
        return Err(format!(
            "expected three numbers such as 0.485,0.456,0.406, found {s:?}"
        ));
    }
    Ok([v[0], v[1], v[2]])
}

/// The header of a new site manifest.
pub(crate) fn new_manifest_text(shipped: &Path) -> String {
    format!(
        "# crosscam site manifest: models this site added (crosscam model add), on top of the shipped ones.\n\
         # Point [models] manifest at this file to use them; entries here win over shipped ones of the same name.\n\
         extends = {:?}\n",
        shipped.display().to_string()
    )
}

pub fn add(opts: &AddOptions, rt: &Runtime) -> Result<Added> {
    let src = &opts.file;
    anyhow::ensure!(src.is_file(), "{} is not a file", src.display());
    let manifest_path = &opts.manifest;
    let shipped = crate::paths::project_root().join("models/manifest.toml");
    anyhow::ensure!(
        std::fs::canonicalize(manifest_path).ok() != std::fs::canonicalize(&shipped).ok(),
        "{} is the shipped manifest; give the site's own with --manifest (it is created if missing)",
        manifest_path.display()
    );

    let name = match &opts.name {
        Some(n) => n.clone(),
        None => src
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect(),
    };
    crate::config::secrets::check_id(&name).map_err(|m| anyhow::anyhow!("--name: {m}"))?;
    let model = crate::onnx::Model::load(src)
        .with_context(|| format!("{} is not a readable ONNX model", src.display()))?;

    // what the model declares, then the flags
    let mut spec = match opts.role {
        Role::Embedder => EmbedderSpec::from_model(&model)
            .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?,
        Role::Detector => anyhow::bail!(
            "only embedders can be added today: crosscam decodes NanoDet's outputs only (family nanodet); \
             a detector of another family needs its decoding in src/detect first"
        ),
    };
    let has_meta = model
        .metadata
        .iter()
        .any(|(k, _)| k == crate::reid::embedder::META_MEAN);
    let mut from = if has_meta {
        "model metadata"
    } else {
        "default (ImageNet mean/std, RGB)"
    }
    .to_string();
    if let Some(c) = &opts.color {
        spec.norm.bgr = match c.to_ascii_uppercase().as_str() {
            "RGB" => false,
            "BGR" => true,
            _ => anyhow::bail!("--color: expected RGB or BGR, found {c:?}"),
        };
        from = "flags".into();
    }
    if let Some(m) = opts.mean {
        spec.norm.mean = m;
        from = "flags".into();
    }
    if let Some(s) = opts.std {
        anyhow::ensure!(
            s.iter().all(|x| *x > 0.0),
            "--std: every value must be above 0"
        );
        spec.norm.std = s;
        from = "flags".into();
    }
    let declared_hw = model.graph.inputs[0]
        .shape
        .as_ref()
        .is_some_and(|s| s.len() == 4 && s[2].fixed().is_some() && s[3].fixed().is_some());
    if !declared_hw {
        from.push_str(&format!(
            "; input size {}×{} (the model's height and width are dynamic)",
            spec.height, spec.width
        ));
    }

    // cost at the input size it will be run at
    let info = crate::onnx::info::describe(
        model.clone(),
        &src.display().to_string(),
        Some(&[3, spec.height as i64, spec.width as i64]),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    let (macs, params) = (info.macs, info.params);

    // run it: two crops, finite unit vectors of one dimension
    let mut emb = Embedder::from_file(src, rt, SessionOptions::default())
        .with_context(|| format!("ONNX Runtime cannot run {}", src.display()))?;
    emb.spec.norm = spec.norm;
    let crops = [
        image::RgbImage::from_pixel(
            spec.width as u32,
            spec.height as u32,
            image::Rgb([90, 60, 40]),
        ),
        image::RgbImage::from_fn(spec.width as u32, spec.height as u32, |x, y| {
            image::Rgb([(x * 3 % 255) as u8, (y * 2 % 255) as u8, 128])
        }),
    ];
    let out = emb
        .embed_images(&crops)
        .with_context(|| format!("{}: a test run on two crops failed", src.display()))?;
    anyhow::ensure!(
        out.nrows() == 2 && out.ncols() > 0 && out.iter().all(|v| v.is_finite()),
        "{}: the test run gave a {}×{} output with non-finite values; is the output an embedding?",
        src.display(),
        out.nrows(),
        out.ncols()
    );
    let dim = out.ncols();
    anyhow::ensure!(
        spec.dim == 0 || spec.dim == dim,
        "{}: the model declares {} dimensions but gives {dim}",
        src.display(),
        spec.dim
    );

    let linking = match &opts.calibrate {
        None => None,
        Some(ds_path) => {
            let ds = crate::eval::dataset::Dataset::load(ds_path, None)
                .with_context(|| format!("--calibrate {}", ds_path.display()))?;
            let report = crate::eval::model::evaluate_model(
                &mut emb,
                &name,
                Some(macs),
                &ds,
                &crate::eval::model::ModelEvalOptions::default(),
            )?;
            let l = report.linking.ok_or_else(|| {
                anyhow::anyhow!(
                    "--calibrate {}: no person is seen by two cameras in this dataset; calibrate on a dataset with several cameras",
                    ds_path.display()
                )
            })?;
            let base = l.same_pairs as f64 / (l.same_pairs + l.different_pairs).max(1) as f64;
            anyhow::ensure!(
                l.precision > base + 1e-9,
                "--calibrate {}: no threshold separates the people (the best pair F1, {:.2}, comes from linking everyone: \
                 precision {:.2} = the share of same-person pairs); the model does not tell these people apart — \
                 check --color, --mean and --std against how it was trained, or calibrate on a larger dataset",
                ds_path.display(),
                l.f1,
                l.precision
            );
            Some(LinkCalibration {
                threshold: l.threshold,
                margin: 0.02,
                merge_similarity: (l.threshold + 0.05).min(0.99),
                measured: format!(
                    "crosscam model add --calibrate {} ({} tracklets, {} same-person pairs): best cross-camera pair F1 {:.2} at {:.2}; merge_similarity = threshold + 0.05",
                    ds_path.display(),
                    l.tracklets,
                    l.same_pairs,
                    l.f1,
                    l.threshold
                ),
            })
        }
    };

    // the site manifest: created with `extends` the shipped one
    let created = !manifest_path.exists();
    let dir = manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = if created {
        new_manifest_text(&std::fs::canonicalize(&shipped).unwrap_or(shipped.clone()))
    } else {
        std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?
    };
    if !created {
        let existing = Manifest::load(manifest_path)?;
        if existing.local_names().iter().any(|n| n == &name) {
            anyhow::ensure!(
                opts.replace,
                "{} already has a model named {name:?}; give another --name, or --replace",
                manifest_path.display()
            );
            text = remove_entry(&text, &name);
        }
    }

    let file_name = format!("{name}.onnx");
    let dest = dir.join(&file_name);
    if std::fs::canonicalize(src).ok() != std::fs::canonicalize(&dest).ok() {
        // weights a torch.export-based exporter wrote beside the graph (`model.onnx.data`) are
        // moved inside the site's copy, so the manifest names one file with one checksum
        crate::onnx::Model::copy_self_contained(src, &dest)
            .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    }
    let sha256 =
        super::sha256_file(&dest).with_context(|| format!("cannot read {}", dest.display()))?;
    let entry = ModelEntry {
        name: name.clone(),
        role: Role::Embedder,
        family: "embedding".into(),
        file: PathBuf::from(&file_name),
        sha256: sha256.clone(),
        licence: opts.licence.clone().unwrap_or_else(|| {
            "unknown: added by crosscam model add; write the weights' licence here".into()
        }),
        source: opts
            .source
            .clone()
            .unwrap_or_else(|| format!("{} (added by crosscam model add)", src.display())),
        recipe: format!(
            "crosscam model add {} --role embedder --name {name} (from the original export)",
            src.display()
        ),
        notes: Some(format!(
            "{} MMACs, {} parameters at {}×{}; normalisation: {from}",
            macs / 1_000_000,
            params,
            spec.height,
            spec.width
        )),
        input: InputSpec {
            name: spec.input.clone(),
            shape: vec![-1, 3, spec.height as i64, spec.width as i64],
            layout: "NCHW".into(),
            color: if spec.norm.bgr { "BGR" } else { "RGB" }.into(),
            mean: spec.norm.mean,
            std: spec.norm.std,
        },
        outputs: vec![TensorSpec {
            name: spec.output.clone(),
            shape: vec![-1, dim as i64],
            meaning: Some(format!("{dim}-d appearance embedding")),
        }],
        linking: linking.clone(),
        quantized: None,
        source_sha256: None,
    };
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
    // written whole and renamed: a manifest is never left half-written
    crate::jobs::registry::write_atomic(manifest_path, text.as_bytes())?;
    // the result must load, with the model verified and its tensors checked
    let m = Manifest::load(manifest_path)?;
    m.verify_file(m.get(&name)?)?;
    Ok(Added {
        name,
        manifest: manifest_path.clone(),
        file: dest,
        created_manifest: created,
        input: entry.input.shape.clone(),
        output_dim: dim,
        sha256,
        macs,
        params,
        linking,
        normalisation_from: from,
    })
}

/// `text` without the `[[model]]` block (and its sub-tables) whose name is `name`.
pub(crate) fn remove_entry(text: &str, name: &str) -> String {
    let mut out = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    let mut in_block = false;
    let flush = |block: &mut Vec<&str>, out: &mut Vec<String>| {
        // the block's first `name` is the model's (its tensors' names come in sub-tables)
        let is_it = block
            .iter()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "name")
            .is_some_and(|(_, v)| v.trim().trim_matches('"') == name);
        if !is_it {
            out.extend(block.iter().map(|l| l.to_string()));
        }
        block.clear();
    };
    for line in text.lines() {
        if line.trim() == "[[model]]" {
            if in_block {
                flush(&mut block, &mut out);
            }
            in_block = true;
        }
        if in_block {
            block.push(line);
        } else {
            out.push(line.to_string());
        }
    }
    if in_block {
        flush(&mut block, &mut out);
    }
    out.join("\n") + "\n"
}
