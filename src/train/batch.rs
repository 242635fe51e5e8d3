//! Training data in memory and its batches: crops resized once to the network input, dense
//! identity labels, and the assembly of an augmented, normalised `[N,3,H,W]` batch.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use rand::rngs::StdRng;

use super::TrainError;
use super::augment::{self, AugmentConfig};
use crate::frame::Normalize;

/// Labelled crops at the network's input size. Labels are dense (`0..classes`); `original`
/// maps them back to the labels the caller gave.
#[derive(Clone, Debug)]
pub struct TrainSet {
    pub images: Vec<Arc<RgbImage>>,
    pub labels: Vec<usize>,
    pub original: Vec<i64>,
    pub height: u32,
    pub width: u32,
}

impl TrainSet {
    /// Resizes `images` to `h × w` and makes the labels dense.
    pub fn new(
        images: &[RgbImage],
        labels: &[i64],
        h: u32,
        w: u32,
    ) -> Result<TrainSet, TrainError> {
        if images.len() != labels.len() || images.is_empty() {
            return Err(TrainError::Invalid(format!(
                "a training set needs one label per image ({} images, {} labels)",
                images.len(),
                labels.len()
            )));
        }
        let resized = images
            .iter()
            .map(|i| Arc::new(augment::resize(i, h, w)))
            .collect();
        let mut set = TrainSet {
            images: resized,
            labels: Vec::new(),
            original: Vec::new(),
            height: h,
            width: w,
        };
        set.relabel(labels);
        Ok(set)
    }

    /// Replaces the labels (pseudo-label refresh), making them dense again.
    pub fn relabel(&mut self, labels: &[i64]) {
        assert_eq!(labels.len(), self.images.len(), "one label per image");
        let mut dense: BTreeMap<i64, usize> = BTreeMap::new();
        for &l in labels {
            let n = dense.len();
            dense.entry(l).or_insert(n);
        }
        self.original = vec![0; dense.len()];
        for (&l, &d) in &dense {
            self.original[d] = l;
        }
        self.labels = labels.iter().map(|l| dense[l]).collect();
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
    pub fn classes(&self) -> usize {
        self.original.len()
    }
}

/// One assembled batch on the host.
pub struct HostBatch {
    /// `[n, 3, h, w]` normalised values.
    pub x: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub labels: Vec<usize>,
    /// The augmented images before erasing (what a teacher sees), when asked for.
    pub views: Vec<RgbImage>,
}

impl HostBatch {
    pub fn tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(self.x.clone(), [self.n, 3, self.h, self.w]),
            device,
        )
    }
}

/// Augments and normalises the samples `indices` of `set`.
pub fn assemble(
    set: &TrainSet,
    indices: &[usize],
    aug: &AugmentConfig,
    norm: &Normalize,
    rng: &mut StdRng,
    keep_views: bool,
) -> HostBatch {
    let (h, w) = (set.height as usize, set.width as usize);
    let per = 3 * h * w;
    let mut x = vec![0.0f32; indices.len() * per];
    let mut views = Vec::new();
    for (k, &i) in indices.iter().enumerate() {
        let img = augment::geometric_and_colour(&set.images[i], aug, rng);
        let dst = &mut x[k * per..(k + 1) * per];
        augment::to_planes(&img, norm, dst);
        augment::random_erase(dst, h, w, aug, rng);
        if keep_views {
            views.push(img);
        }
    }
    HostBatch {
        x,
        n: indices.len(),
        h,
        w,
        labels: indices.iter().map(|&i| set.labels[i]).collect(),
        views,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn labels_become_dense_and_batches_have_the_input_shape() {
        let imgs: Vec<RgbImage> = (0..4)
            .map(|i| RgbImage::from_pixel(10 + i, 20, image::Rgb([9, 9, 9])))
            .collect();
        let set = TrainSet::new(&imgs, &[42, 7, 42, -1], 16, 8).unwrap();
        assert_eq!(set.labels, vec![0, 1, 0, 2]);
        assert_eq!(set.original, vec![42, 7, -1]);
        assert_eq!(set.images[1].dimensions(), (8, 16));
        let b = assemble(
            &set,
            &[3, 0],
            &AugmentConfig::none(),
            &Normalize::UNIT,
            &mut StdRng::seed_from_u64(0),
            true,
        );
        assert_eq!(
            (b.n, b.h, b.w, b.x.len(), b.views.len()),
            (2, 16, 8, 2 * 3 * 16 * 8, 2)
        );
        assert_eq!(b.labels, vec![2, 0]);
        assert!((b.x[0] - 9.0 / 255.0).abs() < 1e-6);
        assert!(TrainSet::new(&imgs, &[1], 16, 8).is_err());
    }
}
