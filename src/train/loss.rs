//! The losses of re-id training (BoT recipe) and of distillation. All take burn tensors and return
//! a scalar `Tensor<1>` of shape `[1]`; labels are host slices (the sampler's).
//!
//! - [`cross_entropy_smooth`]: identity classification with label smoothing (targets
//!   `(1−ε)·onehot + ε/K`, ε = 0.1 in BoT).
//! - [`batch_hard_triplet`]: for every anchor, its farthest positive and nearest negative in the
//!   batch (Euclidean), hinge with a margin (0.3); computed on the features *before* the BNNeck.
//! - [`distill_loss`]: student vs teacher embeddings, cosine (`1 − cos`) or mean squared error.

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Tensor, TensorData};

/// Identity cross-entropy with label smoothing `eps` over `K = logits.dims()[1]` classes.
pub fn cross_entropy_smooth(logits: Tensor<2>, labels: &[usize], eps: f32) -> Tensor<1> {
    let [n, k] = logits.dims();
    assert_eq!(n, labels.len(), "one label per row");
    let off = eps / k as f32;
    let mut q = vec![off; n * k];
    for (i, &l) in labels.iter().enumerate() {
        assert!(l < k, "label {l} out of range for {k} classes");
        q[i * k + l] += 1.0 - eps;
    }
    let q = Tensor::<2>::from_data(TensorData::new(q, [n, k]), &logits.device());
    (q * log_softmax(logits, 1)).sum_dim(1).mean().neg()
}

/// Pairwise Euclidean distances `[N, N]` of the rows of `x`, as `√max(|a|²+|b|²−2a·b, 1e-12)`.
pub fn pairwise_distances(x: Tensor<2>) -> Tensor<2> {
    let sq = x.clone().powi_scalar(2).sum_dim(1);
    let gram = x.clone().matmul(x.transpose());
    (sq.clone() + sq.transpose() - gram.mul_scalar(2.0))
        .clamp_min(1e-12)
        .sqrt()
}

/// Batch-hard triplet loss (Hermans et al. 2017) with a hard margin. Anchors without a positive
/// or without a negative in the batch are left out; the mean is over the others (0 if none).
pub fn batch_hard_triplet(features: Tensor<2>, labels: &[usize], margin: f32) -> Tensor<1> {
    let [n, _] = features.dims();
    assert_eq!(n, labels.len(), "one label per row");
    let device = features.device();
    let mut pos = vec![0.0f32; n * n];
    let mut neg_penalty = vec![0.0f32; n * n];
    let mut valid = vec![0.0f32; n];
    for i in 0..n {
        let (mut has_pos, mut has_neg) = (false, false);
        for j in 0..n {
            if labels[i] == labels[j] {
                // the anchor itself and its positives are no negatives
                neg_penalty[i * n + j] = 1e6;
                if i != j {
                    pos[i * n + j] = 1.0;
                    has_pos = true;
                }
            } else {
                has_neg = true;
            }
        }
        valid[i] = (has_pos && has_neg) as u8 as f32;
    }
    let count: f32 = valid.iter().sum();
    let dist = pairwise_distances(features);
    let t = |v: Vec<f32>, d: [usize; 2]| Tensor::<2>::from_data(TensorData::new(v, d), &device);
    let hardest_pos = (dist.clone() * t(pos, [n, n])).max_dim(1);
    let hardest_neg = (dist + t(neg_penalty, [n, n])).min_dim(1);
    let hinge = relu(hardest_pos - hardest_neg + margin);
    (hinge * t(valid, [n, 1])).sum().div_scalar(count.max(1.0))
}

/// How a student's embedding is compared with the teacher's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistillKind {
    /// `1 − cos(s, t)`, averaged over the batch (scale-free; the default).
    Cosine,
    /// Mean squared difference of the vectors, averaged over elements.
    Mse,
}

/// Distillation loss between `student` and `teacher` rows (same shape `[N, D]`).
pub fn distill_loss(student: Tensor<2>, teacher: Tensor<2>, kind: DistillKind) -> Tensor<1> {
    assert_eq!(student.dims(), teacher.dims(), "student and teacher shapes");
    match kind {
        DistillKind::Cosine => {
            let dot = (student.clone() * teacher.clone()).sum_dim(1);
            let ns = student.powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
            let nt = teacher.powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
            (dot / (ns * nt)).mean().neg().add_scalar(1.0)
        }
        DistillKind::Mse => (student - teacher).powi_scalar(2).mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::tensor_vec;
    use burn::tensor::Device;

    fn dev() -> Device {
        crate::train::device::cpu().autodiff()
    }

    fn scalar(t: Tensor<1>) -> f32 {
        tensor_vec(t)[0]
    }

    /// Compares burn's gradient of `f` at `x` with central finite differences.
    fn grad_check(f: &dyn Fn(Tensor<2>) -> Tensor<1>, x: &[f32], dims: [usize; 2]) {
        let device = dev();
        let xt = Tensor::<2>::from_data(TensorData::new(x.to_vec(), dims), &device).require_grad();
        let grads = f(xt.clone()).backward();
        let g = tensor_vec(xt.grad(&grads).expect("x has a gradient"));
        let h = 1e-2f32;
        for i in 0..x.len() {
            let at = |d: f32| {
                let mut v = x.to_vec();
                v[i] += d;
                scalar(f(Tensor::<2>::from_data(TensorData::new(v, dims), &device)))
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (g[i] - fd).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "element {i}: autodiff {} vs finite differences {fd}",
                g[i]
            );
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
    }

    #[test]
    fn smoothed_cross_entropy_matches_its_formula_and_gradient() {
        let x = values(3 * 5, 1);
        let labels = [0usize, 3, 4];
        // the value, by hand: −Σ q·log softmax
        let mut want = 0.0f64;
        for (i, &l) in labels.iter().enumerate() {
            let row = &x[i * 5..(i + 1) * 5];
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            for (j, &v) in row.iter().enumerate() {
                let q = 0.1 / 5.0 + if j == l { 0.9 } else { 0.0 };
                want -= q * (v as f64 - lse);
            }
        }
        want /= 3.0;
        let t = Tensor::<2>::from_data(TensorData::new(x.clone(), [3, 5]), &dev());
        assert!((scalar(cross_entropy_smooth(t, &labels, 0.1)) as f64 - want).abs() < 1e-5);
        grad_check(&|t| cross_entropy_smooth(t, &labels, 0.1), &x, [3, 5]);
    }

    #[test]
    fn batch_hard_triplet_picks_the_hardest_pairs_and_has_the_right_gradient() {
        // two identities, two samples each, in 2-D: the value by hand
        let x = vec![0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 3.0, 0.0];
        let labels = [0usize, 0, 1, 1];
        let t = Tensor::<2>::from_data(TensorData::new(x.clone(), [4, 2]), &dev());
        // anchor 0: ap = 1, an = 0.5 → 0.8; anchor 1: ap 1, an √1.25 → 0.18197;
        // anchor 2: ap √9.25 = 3.0414, an 0.5 → 2.8414; anchor 3: ap 3.0414, an 2 → 1.3414
        let want = (0.8
            + (1.3 - 1.25f32.sqrt())
            + (9.25f32.sqrt() - 0.5 + 0.3)
            + (9.25f32.sqrt() - 2.0 + 0.3))
            / 4.0;
        let got = scalar(batch_hard_triplet(t, &labels, 0.3));
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // gradient on a random batch with distinct distances (away from the max/min kinks)
        let x = values(6 * 4, 2);
        let labels = [0usize, 0, 1, 1, 2, 2];
        grad_check(&|t| batch_hard_triplet(t, &labels, 0.3), &x, [6, 4]);
        // no valid anchor: zero
        let t = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0], [2, 1]), &dev());
        assert_eq!(scalar(batch_hard_triplet(t, &[0, 1], 0.3)), 0.0);
    }

    #[test]
    fn distillation_losses_have_the_right_values_and_gradients() {
        let s = values(3 * 4, 3);
        let t = values(3 * 4, 4);
        let device = dev();
        let teacher = Tensor::<2>::from_data(TensorData::new(t.clone(), [3, 4]), &device);
        let mut cos = 0.0f32;
        let mut mse = 0.0f32;
        for i in 0..3 {
            let (a, b) = (&s[i * 4..i * 4 + 4], &t[i * 4..i * 4 + 4]);
            let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
            let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            cos += dot / (na * nb);
            mse += a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
        }
        let st = |v: &Vec<f32>| Tensor::<2>::from_data(TensorData::new(v.clone(), [3, 4]), &device);
        let got = scalar(distill_loss(st(&s), teacher.clone(), DistillKind::Cosine));
        assert!((got - (1.0 - cos / 3.0)).abs() < 1e-5);
        let got = scalar(distill_loss(st(&s), teacher.clone(), DistillKind::Mse));
        assert!((got - mse / 12.0).abs() < 1e-5);
        for kind in [DistillKind::Cosine, DistillKind::Mse] {
            grad_check(&|x| distill_loss(x, teacher.clone(), kind), &s, [3, 4]);
        }
    }
}
