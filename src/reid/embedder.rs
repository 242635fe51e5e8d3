//! Runs a re-id embedding model: crops in, L2-normalised embeddings out.
//!
//! Any ONNX model with one image input `[N,3,H,W]` and an output `[N,D]` works — the bundled
//! manifest models, crosscam's own (pruned) ResNets, and torchreid / fast-reid exports a user brings.
//! Input size, channel order and normalisation come from the manifest entry when there is one,
//! else from the model: its declared input size (256×128 when H and W are dynamic), and the
//! metadata keys `crosscam.mean`, `crosscam.std`, `crosscam.color` that crosscam writes into its
//! own exports (ImageNet mean/std, RGB when absent — what torchreid and fast-reid use).

use std::path::Path;

use ndarray::{Array2, Array4};
use ort::session::Session;

use crate::frame::{BBox, Frame, Normalize, resize_into_planes};
use crate::models::ModelEntry;
use crate::onnx::{Dim, Model};
use crate::runtime::{Device, Runtime, SessionOptions};

/// Metadata keys crosscam writes into its exported embedders.
pub const META_MEAN: &str = "crosscam.mean";
pub const META_STD: &str = "crosscam.std";
pub const META_COLOR: &str = "crosscam.color";

/// Largest input height or width an embedder may declare (re-id models use 256×128 or so).
const MAX_INPUT_SIDE: i64 = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct EmbedderSpec {
    pub input: String,
    pub output: String,
    pub height: usize,
    pub width: usize,
    pub norm: Normalize,
    /// Embedding dimension (0 when the model does not declare it).
    pub dim: usize,
}

impl EmbedderSpec {
    pub fn from_manifest(m: &ModelEntry) -> EmbedderSpec {
        let (h, w) = m.input.hw();
        EmbedderSpec {
            input: m.input.name.clone(),
            output: m.outputs[0].name.clone(),
            height: h,
            width: w,
            norm: Normalize {
                mean: m.input.mean,
                std: m.input.std,
                bgr: m.input.color.eq_ignore_ascii_case("BGR"),
            },
            dim: m.outputs[0].shape.last().copied().unwrap_or(0).max(0) as usize,
        }
    }

    /// Reads what the model declares about itself.
    pub fn from_model(model: &Model) -> anyhow::Result<EmbedderSpec> {
        let g = &model.graph;
        anyhow::ensure!(
            g.inputs.len() == 1,
            "an embedder needs exactly one input, this model has {}",
            g.inputs.len()
        );
        anyhow::ensure!(!g.outputs.is_empty(), "the model has no output");
        let inp = &g.inputs[0];
        let shape = inp.shape.clone().unwrap_or_default();
        anyhow::ensure!(
            shape.len() == 4 && shape[1].fixed().is_none_or(|c| c == 3),
            "an embedder's input must be [N,3,H,W]; '{}' is [{}]",
            inp.name,
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let (height, width) = match (&shape[2], &shape[3]) {
            (Dim::Fixed(h), Dim::Fixed(w)) => {
                // every crop is resized to this: a declared size of 0, a negative one or a huge
                // one would make each batch tensor empty or larger than memory
                anyhow::ensure!(
                    (1..=MAX_INPUT_SIDE).contains(h) && (1..=MAX_INPUT_SIDE).contains(w),
                    "an embedder's input height and width must be 1..={MAX_INPUT_SIDE}; '{}' declares {h}×{w}",
                    inp.name
                );
                (*h as usize, *w as usize)
            }
            _ => (256, 128),
        };
        let meta = |k: &str| {
            model
                .metadata
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let triple = |k: &str, default: [f32; 3]| -> anyhow::Result<[f32; 3]> {
            match meta(k) {
                None => Ok(default),
                Some(v) => {
                    let p: Vec<f32> = v
                        .split(',')
                        .map(|x| x.trim().parse::<f32>())
                        .collect::<Result<_, _>>()?;
                    anyhow::ensure!(
                        p.len() == 3,
                        "metadata {k} must hold 3 numbers, found {v:?}"
                    );
                    Ok([p[0], p[1], p[2]])
                }
            }
        };
        let out = &g.outputs[0];
        let dim = out
            .shape
            .as_ref()
            .and_then(|s| s.last())
            .and_then(Dim::fixed)
            .unwrap_or(0)
            .max(0) as usize;
        Ok(EmbedderSpec {
            input: inp.name.clone(),
            output: out.name.clone(),
            height,
            width,
            norm: Normalize {
                mean: triple(META_MEAN, Normalize::IMAGENET.mean)?,
                std: triple(META_STD, Normalize::IMAGENET.std)?,
                bgr: meta(META_COLOR).is_some_and(|c| c.eq_ignore_ascii_case("BGR")),
            },
            dim,
        })
    }

    /// Writes this spec's normalisation into a model's metadata (for crosscam's own exports).
    pub fn write_metadata(&self, model: &mut Model) {
        let f = |v: [f32; 3]| format!("{},{},{}", v[0], v[1], v[2]);
        model.set_metadata(META_MEAN, &f(self.norm.mean));
        model.set_metadata(META_STD, &f(self.norm.std));
        model.set_metadata(META_COLOR, if self.norm.bgr { "BGR" } else { "RGB" });
    }
}

pub struct Embedder {
    pub spec: EmbedderSpec,
    pub device: Device,
    session: Session,
}

impl Embedder {
    /// Opens a manifest model (checksum and shapes verified).
    pub fn from_manifest(
        manifest: &crate::models::Manifest,
        name: &str,
        rt: &Runtime,
        opts: SessionOptions,
    ) -> anyhow::Result<Embedder> {
        let loaded = manifest.open(name, rt, opts)?;
        Ok(Embedder {
            spec: EmbedderSpec::from_manifest(&loaded.entry),
            device: loaded.device,
            session: loaded.session,
        })
    }

    /// Opens any embedding ONNX file, reading its spec from the model itself.
    pub fn from_file(path: &Path, rt: &Runtime, opts: SessionOptions) -> anyhow::Result<Embedder> {
        let model = Model::load(path)?;
        let spec = EmbedderSpec::from_model(&model)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let (session, device) = rt.session(path, opts)?;
        Ok(Embedder {
            spec,
            device,
            session,
        })
    }

    /// Opens a model held in memory (a freshly re-tuned one, before it is written anywhere).
    pub fn from_model(
        model: &Model,
        rt: &Runtime,
        opts: SessionOptions,
    ) -> anyhow::Result<Embedder> {
        let spec = EmbedderSpec::from_model(model)?;
        let (session, device) = rt.session_from_bytes(&model.to_bytes(), opts)?;
        Ok(Embedder {
            spec,
            device,
            session,
        })
    }

    /// Opens `model`: a manifest name, or a path to an ONNX file.
    pub fn open(
        model: &str,
        manifest: &crate::models::Manifest,
        rt: &Runtime,
        opts: SessionOptions,
    ) -> anyhow::Result<Embedder> {
        if manifest.models.iter().any(|m| m.name == model) {
            Embedder::from_manifest(manifest, model, rt, opts)
        } else {
            Embedder::from_file(Path::new(model), rt, opts)
        }
    }

    /// The batch tensor for `crops` (regions of frames), resized to the model's input size.
    pub fn preprocess(&self, crops: &[(&Frame, BBox)]) -> Array4<f32> {
        preprocess_crops(&self.spec, crops)
    }

    /// Raw model outputs `[N, D]` for a prepared batch.
    pub fn run(&mut self, x: &Array4<f32>) -> anyhow::Result<Array2<f32>> {
        let input = ort::value::TensorRef::from_array_view(x)?;
        let outputs = self
            .session
            .run(ort::inputs![self.spec.input.as_str() => input])?;
        let (shape, data) = outputs[self.spec.output.as_str()].try_extract_tensor::<f32>()?;
        anyhow::ensure!(
            shape.len() == 2 && shape[0] as usize == x.shape()[0],
            "the embedder's output '{}' has shape {:?}; expected [N, D]",
            self.spec.output,
            shape.to_vec()
        );
        Ok(Array2::from_shape_vec(
            (shape[0] as usize, shape[1] as usize),
            data.to_vec(),
        )?)
    }

    /// L2-normalised embeddings of `crops`, one row each.
    pub fn embed(&mut self, crops: &[(&Frame, BBox)]) -> anyhow::Result<Array2<f32>> {
        if crops.is_empty() {
            return Ok(Array2::zeros((0, self.spec.dim)));
        }
        let x = self.preprocess(crops);
        let mut e = self.run(&x)?;
        l2_normalize_rows(&mut e);
        Ok(e)
    }

    /// Embeddings of whole images (dataset crops on disk).
    pub fn embed_images(&mut self, images: &[image::RgbImage]) -> anyhow::Result<Array2<f32>> {
        let frames: Vec<Frame> = images.iter().map(Frame::from_image).collect();
        let crops: Vec<(&Frame, BBox)> = frames
            .iter()
            .map(|f| (f, BBox::new(0.0, 0.0, f.width as f32, f.height as f32)))
            .collect();
        self.embed(&crops)
    }
}

/// The batch tensor for `crops` as an embedder of `spec` prepares it (also what quantisation
/// calibrates on).
pub fn preprocess_crops(spec: &EmbedderSpec, crops: &[(&Frame, BBox)]) -> Array4<f32> {
    let (h, w) = (spec.height, spec.width);
    let mut x = Array4::<f32>::zeros((crops.len(), 3, h, w));
    for (i, (frame, b)) in crops.iter().enumerate() {
        let mut item = x.index_axis_mut(ndarray::Axis(0), i);
        let dst = item.as_slice_mut().expect("contiguous");
        resize_into_planes(frame, b, dst, w, h, 0, 0, w, h, &spec.norm);
    }
    x
}

/// Scales every row to unit L2 norm (rows of zeros stay zero).
pub fn l2_normalize_rows(e: &mut Array2<f32>) {
    for mut row in e.rows_mut() {
        let n = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if n > 0.0 {
            row.mapv_inplace(|v| v / n);
        }
    }
}
