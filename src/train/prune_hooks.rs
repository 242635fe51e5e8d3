//! What the pruning engine (`crate::prune`) needs from training, as plain functions over the burn
//! network's conv weights, keyed by the canonical conv names that the exported ONNX uses:
//!
//! - the `taylor` criterion (Molchanov et al. 2019): per output channel of a conv,
//!   `(Σ_{filter} g·w)²`, summed over batches ([`TaylorAccumulator`]);
//! - SFP-style soft pruning (He et al. 2018): per-filter L2 norms ([`filter_l2_norms`]) and
//!   [`soft_prune`], which zeroes chosen filters but keeps them trainable so they may recover;
//!   the pruner deletes the ones still weakest at the end. [`sfp_step`] is the per-layer-ratio
//!   convenience, run by the trainer at each epoch end when configured.
//!
//! Which convs may be pruned alone and which form residual groups is the pruner's business; the
//! default selection here, [`free_convs`], is the convs inside blocks (not the last of each main
//! branch), which the residual Add does not couple.

use burn::optim::GradientsParams;
use burn::tensor::Gradients;
use burn::tensor::{Tensor, TensorData};

use super::model::{ConvBn, ReidModel, ReidNet, tensor_vec};

/// The convs of a network with their canonical names, in layout order.
pub fn convs_of(net: &ReidNet) -> Vec<&ConvBn> {
    let mut v = vec![&net.stem];
    for b in &net.blocks {
        v.extend(b.main.iter());
        v.extend(b.downsample.iter());
    }
    v
}

fn convs_of_mut(net: &mut ReidNet) -> Vec<&mut ConvBn> {
    let mut v = vec![&mut net.stem];
    for b in &mut net.blocks {
        v.extend(b.main.iter_mut());
        v.extend(b.downsample.iter_mut());
    }
    v
}

/// Names of the convs whose output channels are not coupled by a residual Add.
pub fn free_convs(model: &ReidModel) -> Vec<String> {
    let mut v = Vec::new();
    for b in &model.layout.blocks {
        let n = b.main.len();
        v.extend(b.main[..n.saturating_sub(1)].iter().map(|c| c.name.clone()));
    }
    v
}

/// Scores of one conv's output channels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ChannelScores {
    pub conv: String,
    pub scores: Vec<f32>,
}

/// Accumulates Taylor scores `(Σ_filter g·w)²` per output channel over batches.
#[derive(Clone, Debug)]
pub struct TaylorAccumulator {
    names: Vec<String>,
    sums: Vec<Vec<f64>>,
    pub batches: u64,
}

impl TaylorAccumulator {
    pub fn new(model: &ReidModel) -> TaylorAccumulator {
        let convs = model.layout.convs();
        TaylorAccumulator {
            names: convs.iter().map(|c| c.name.clone()).collect(),
            sums: convs.iter().map(|c| vec![0.0; c.cout]).collect(),
            batches: 0,
        }
    }

    /// Adds one batch, given the gradients of its loss (call before the optimiser consumes them).
    pub fn add(&mut self, net: &ReidNet, grads: &Gradients) {
        for (k, c) in convs_of(net).into_iter().enumerate() {
            let w = c.conv.weight.val();
            let Some(g) = w.grad(grads) else { continue };
            let s = per_filter_sum(g * w.inner());
            for (acc, v) in self.sums[k].iter_mut().zip(s) {
                *acc += (v as f64) * (v as f64);
            }
        }
        self.batches += 1;
    }

    /// Adds one batch from gradients already extracted per parameter.
    pub fn add_params(&mut self, net: &ReidNet, grads: &GradientsParams) {
        for (k, c) in convs_of(net).into_iter().enumerate() {
            let w = c.conv.weight.val();
            let Some(g) = grads.get::<4>(c.conv.weight.id) else {
                continue;
            };
            let s = per_filter_sum(g * w.inner());
            for (acc, v) in self.sums[k].iter_mut().zip(s) {
                *acc += (v as f64) * (v as f64);
            }
        }
        self.batches += 1;
    }

    /// The accumulated scores (sums over batches), by conv.
    pub fn scores(&self) -> Vec<ChannelScores> {
        self.names
            .iter()
            .zip(&self.sums)
            .map(|(n, s)| ChannelScores {
                conv: n.clone(),
                scores: s.iter().map(|&v| v as f32).collect(),
            })
            .collect()
    }
}

/// `Σ_{cin,kh,kw}` of a `[cout, cin, kh, kw]` tensor, per output channel.
fn per_filter_sum(t: Tensor<4>) -> Vec<f32> {
    let [o, i, h, w] = t.dims();
    tensor_vec(t.reshape([o, i * h * w]).sum_dim(1))
}

/// L2 norm of every filter of every conv (the SFP criterion), by conv.
pub fn filter_l2_norms(net: &ReidNet, model_names: &ReidModel) -> Vec<ChannelScores> {
    convs_of(net)
        .into_iter()
        .zip(model_names.layout.convs())
        .map(|(c, l)| ChannelScores {
            conv: l.name.clone(),
            scores: per_filter_sum(c.conv.weight.val().inner().powi_scalar(2))
                .into_iter()
                .map(f32::sqrt)
                .collect(),
        })
        .collect()
}

/// Zeroes output channels of convs (by name): their filters, and with `zero_bn` also the
/// following BN's γ and β (then the channel is exactly absent, as after hard pruning — but it can
/// no longer recover, since a zero γ blocks the filter's gradient; SFP keeps BN, the default).
/// Parameter ids are kept, so the optimiser's state stays attached.
pub fn soft_prune(mut model: ReidModel, plan: &[(String, Vec<usize>)], zero_bn: bool) -> ReidModel {
    let names: Vec<String> = model
        .layout
        .convs()
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let device = model.device();
    for (layer, conv) in names.iter().zip(convs_of_mut(&mut model.net)) {
        let Some((_, chans)) = plan.iter().find(|(n, _)| n == layer) else {
            continue;
        };
        let cout = conv.conv.weight.dims()[0];
        let mut keep = vec![1.0f32; cout];
        for &c in chans.iter().filter(|&&c| c < cout) {
            keep[c] = 0.0;
        }
        let mask1 = Tensor::<1>::from_data(TensorData::new(keep.clone(), [cout]), &device);
        let mask4 = mask1.clone().reshape([cout, 1, 1, 1]);
        conv.conv.weight = conv
            .conv
            .weight
            .clone()
            .map(|w| (w * mask4).detach().require_grad());
        if zero_bn {
            conv.bn.gamma = conv
                .bn
                .gamma
                .clone()
                .map(|g| (g * mask1.clone()).detach().require_grad());
            conv.bn.beta = conv
                .bn
                .beta
                .clone()
                .map(|b| (b * mask1).detach().require_grad());
        }
    }
    model
}

/// The `ratio` weakest filters (by L2 norm) of each named conv, rounded down.
pub fn weakest_filters(
    norms: &[ChannelScores],
    convs: &[String],
    ratio: f32,
) -> Vec<(String, Vec<usize>)> {
    norms
        .iter()
        .filter(|s| convs.contains(&s.conv))
        .map(|s| {
            let k = ((s.scores.len() as f32) * ratio).floor() as usize;
            let mut idx: Vec<usize> = (0..s.scores.len()).collect();
            idx.sort_by(|&a, &b| s.scores[a].total_cmp(&s.scores[b]).then(a.cmp(&b)));
            idx.truncate(k);
            idx.sort_unstable();
            (s.conv.clone(), idx)
        })
        .collect()
}

/// One SFP step: zero the `ratio` weakest filters (L2) of each of `convs`. Returns the model and
/// what was zeroed.
pub fn sfp_step(
    model: ReidModel,
    convs: &[String],
    ratio: f32,
) -> (ReidModel, Vec<(String, Vec<usize>)>) {
    let norms = filter_l2_norms(&model.net, &model);
    let plan = weakest_filters(&norms, convs, ratio);
    (soft_prune(model, &plan, false), plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
    use crate::train::layout::NetLayout;
    use crate::train::loss::batch_hard_triplet;

    fn input(device: &burn::tensor::Device, seed: u64) -> Tensor<4> {
        use rand::{Rng, SeedableRng};
        let mut r = rand::rngs::StdRng::seed_from_u64(seed);
        let v: Vec<f32> = (0..4 * 3 * 32 * 16)
            .map(|_| r.random_range(-2.0..2.0))
            .collect();
        Tensor::from_data(TensorData::new(v, [4, 3, 32, 16]), device)
    }

    fn tiny() -> ReidModel {
        let mut spec = ResNetSpec::resnet18().for_reid().scaled(0.125);
        spec.input_hw = (32, 16);
        let device = crate::train::device::cpu().autodiff();
        ReidModel::fresh(NetLayout::from_spec(&spec, true), 1, &device)
    }

    #[test]
    fn taylor_scores_are_squared_filter_sums_of_g_times_w() {
        let m = tiny();
        let device = m.device();
        let out = m.net.forward(input(&device, 1));
        let grads = batch_hard_triplet(out.pooled, &[0, 0, 1, 1], 0.3).backward();
        let mut acc = TaylorAccumulator::new(&m);
        acc.add(&m.net, &grads);
        acc.add(&m.net, &grads);
        let s = acc.scores();
        assert_eq!(s.len(), m.layout.convs().len());
        assert_eq!(s[0].conv, "conv1");
        // by hand for the stem
        let w = tensor_vec(m.net.stem.conv.weight.val().inner());
        let g = tensor_vec(m.net.stem.conv.weight.val().grad(&grads).unwrap());
        let per = w.len() / s[0].scores.len();
        // f32 sums cancel: compare √(score/2) with |Σ g·w| up to the rounding of Σ|g·w|
        for (o, &got) in s[0].scores.iter().enumerate() {
            let terms: Vec<f64> = (o * per..(o + 1) * per)
                .map(|i| (w[i] * g[i]) as f64)
                .collect();
            let sum: f64 = terms.iter().sum();
            let abs: f64 = terms.iter().map(|t| t.abs()).sum();
            let root = (got as f64 / 2.0).sqrt();
            assert!(
                (root - sum.abs()).abs() <= 1e-3 * abs + 1e-12,
                "{root} vs {sum}"
            );
        }
        assert!(s.iter().any(|c| c.scores.iter().any(|&v| v > 0.0)));
    }

    #[test]
    fn sfp_zeroes_the_weakest_filters_of_free_convs_only() {
        // trained-like BN (random β): a zeroed filter's channel outputs β, and recovers through
        // the ReLU only where β > 0 (as in SFP with PyTorch)
        let mut spec = ResNetSpec::resnet18().for_reid().scaled(0.125);
        spec.input_hw = (32, 16);
        let g = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 3);
        let m = ReidModel::from_onnx(&g, &crate::train::device::cpu().autodiff()).unwrap();
        let free = free_convs(&m);
        assert!(free.iter().all(|n| n.ends_with("conv1")) && !free.contains(&"conv1".into()));
        let before = filter_l2_norms(&m.net, &m);
        let (m, plan) = sfp_step(m, &free, 0.5);
        let after = filter_l2_norms(&m.net, &m);
        for ((b, a), (name, zeroed)) in before
            .iter()
            .filter(|s| free.contains(&s.conv))
            .zip(after.iter().filter(|s| free.contains(&s.conv)))
            .zip(&plan)
        {
            assert_eq!(&b.conv, name);
            assert_eq!(zeroed.len(), b.scores.len() / 2);
            for (c, (&nb, &na)) in b.scores.iter().zip(&a.scores).enumerate() {
                if zeroed.contains(&c) {
                    assert_eq!(na, 0.0);
                    assert!(
                        b.scores
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| !zeroed.contains(i))
                            .all(|(_, &v)| v >= nb)
                    );
                } else {
                    assert_eq!(na, nb);
                }
            }
        }
        // the coupled convs are untouched
        assert_eq!(before[0], after[0]);
        // zeroed filters still receive gradients (they may recover)
        let out = m.net.forward(input(&m.device(), 2));
        let loss = batch_hard_triplet(out.pooled, &[0, 0, 1, 1], 0.3);
        assert!(tensor_vec(loss.clone())[0] > 0.0);
        let grads = loss.backward();
        let (name, zeroed) = &plan[0];
        let idx = m
            .layout
            .convs()
            .iter()
            .position(|c| &c.name == name)
            .unwrap();
        let g = convs_of(&m.net)[idx]
            .conv
            .weight
            .val()
            .grad(&grads)
            .unwrap();
        let gs = per_filter_sum(g.abs());
        assert!(zeroed.iter().any(|&c| gs[c] > 0.0), "{gs:?} {zeroed:?}");
    }
}
