//! Distillation: a student ResNet learns to reproduce a teacher's embeddings of the same crops
//! (the teacher is any ONNX embedder run by ONNX Runtime — crosscam's bundled ImageNet
//! MobileNetV2, since no pretrained ResNet can be had from the registries: docs/training.md). The
//! student's pooled
//! features go through a learned linear projection when the widths differ (trained with the
//! student, dropped at export) and are compared with a cosine or MSE loss ([`super::loss`]).

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::TrainError;
use super::loss::DistillKind;
use super::model::{ReidModel, normal};
use crate::reid::Embedder;

/// Something that embeds crops: the teacher.
pub trait Teacher {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// Row-major `images.len() × dim` embeddings.
    fn embed(&mut self, images: &[RgbImage]) -> Result<Vec<f32>, TrainError>;
}

/// A teacher run by ONNX Runtime through crosscam's embedder (L2-normalised outputs, the
/// model's own input size and normalisation).
pub struct OrtTeacher {
    pub embedder: Embedder,
    dim: usize,
}

impl OrtTeacher {
    /// Wraps an embedder; its width is read from the model or from one probe run.
    pub fn new(mut embedder: Embedder) -> Result<OrtTeacher, TrainError> {
        let dim = match embedder.spec.dim {
            0 => {
                let probe = RgbImage::new(embedder.spec.width as u32, embedder.spec.height as u32);
                embedder
                    .embed_images(&[probe])
                    .map_err(|e| TrainError::Teacher(format!("{e:#}")))?
                    .ncols()
            }
            d => d,
        };
        Ok(OrtTeacher { embedder, dim })
    }
}

impl Teacher for OrtTeacher {
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed(&mut self, images: &[RgbImage]) -> Result<Vec<f32>, TrainError> {
        let e = self
            .embedder
            .embed_images(images)
            .map_err(|e| TrainError::Teacher(format!("{e:#}")))?;
        Ok(e.iter().copied().collect())
    }
}

/// Distillation settings of a training run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DistillConfig {
    pub kind: DistillKind,
    /// Weight of the distillation term in the total loss.
    pub weight: f32,
}

impl Default for DistillConfig {
    fn default() -> DistillConfig {
        DistillConfig {
            kind: DistillKind::Cosine,
            weight: 1.0,
        }
    }
}

/// Attaches the student→teacher projection (`feature_dim × teacher_dim`, no bias, normal init
/// scaled by 1/√fan-in) when the widths differ; removes it when they match.
pub fn attach_projection(mut model: ReidModel, teacher_dim: usize, seed: u64) -> ReidModel {
    let d = model.layout.feature_dim();
    model.net.projection = (d != teacher_dim).then(|| {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x7072_6f6a);
        let std = 1.0 / (d as f32).sqrt();
        let w: Vec<f32> = (0..d * teacher_dim)
            .map(|_| normal(&mut rng) * std)
            .collect();
        Linear {
            weight: Param::from_data(TensorData::new(w, [d, teacher_dim]), &model.device()),
            bias: None,
        }
    });
    model
}

/// Teacher embeddings of a batch's views as a tensor on `device`.
pub fn teacher_batch(
    teacher: &mut dyn Teacher,
    views: &[RgbImage],
    device: &Device,
) -> Result<Tensor<2>, TrainError> {
    let v = teacher.embed(views)?;
    let d = teacher.dim();
    if v.len() != views.len() * d {
        return Err(TrainError::Teacher(format!(
            "{} values for {} images of width {d}",
            v.len(),
            views.len()
        )));
    }
    Ok(Tensor::from_data(
        TensorData::new(v, [views.len(), d]),
        device,
    ))
}
