//! The trainable network: a burn module built from a [`NetLayout`] (any per-layer widths) with
//! weights from a [`NetWeights`] (read from ONNX, or freshly initialised), plus the training-only
//! heads (identity classifier; a projection for distillation lives in `distill`).
//!
//! Forward returns the three things re-id training needs (BoT): the pooled features (triplet
//! loss), the BNNeck output (the embedding; cross-entropy goes through it), and the logits when a
//! classifier is attached. Training mode is burn's: a module on an autodiff device uses batch
//! statistics in BatchNorm and updates the running ones; [`ReidModel::eval_net`] gives the
//! inference snapshot that export and embedding use.

use burn::module::{Module, Param, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::TrainError;
use super::layout::{BnSource, ConvLayer, NetLayout};
use super::recognise::{BnWeights, ConvWeights, NetWeights, recognise};
use crate::onnx::Model;

/// A convolution (no bias) and its BatchNorm.
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// A residual block: main convs (ReLU between them), optional projection shortcut.
#[derive(Module, Debug)]
pub struct Block {
    pub main: Vec<ConvBn>,
    pub downsample: Option<ConvBn>,
}

/// The burn network. Field order = [`NetLayout::convs`] order (stem, then per block main convs
/// and downsample), which the pruning hooks rely on.
#[derive(Module, Debug)]
pub struct ReidNet {
    pub stem: ConvBn,
    pub pool: MaxPool2d,
    pub blocks: Vec<Block>,
    /// BNNeck (BatchNorm1d after global pooling).
    pub neck: Option<BatchNorm>,
    /// Identity classifier (training only; never exported). Bias-free, as in BoT.
    pub classifier: Option<Linear>,
    /// Student→teacher projection for distillation (training only; never exported).
    pub projection: Option<Linear>,
}

/// What one forward pass gives.
pub struct NetOutput {
    /// Globally pooled features `[N, C]` (the triplet loss uses these, before the BNNeck).
    pub pooled: Tensor<2>,
    /// The embedding `[N, C]`: the BNNeck output, or the pooled features without a neck.
    pub embedding: Tensor<2>,
    /// Identity logits `[N, classes]` when a classifier is attached.
    pub logits: Option<Tensor<2>>,
}

impl ReidNet {
    /// Pooled features in the teacher's space (through the projection when there is one).
    pub fn project(&self, pooled: Tensor<2>) -> Tensor<2> {
        match &self.projection {
            Some(p) => p.forward(pooled),
            None => pooled,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> NetOutput {
        self.forward_tapped(x, &mut |_, _| {})
    }

    /// Forward pass calling `tap(i, z)` with the raw output `z` of conv `i` (before its BN), in
    /// [`NetLayout::convs`] order.
    pub fn forward_tapped(
        &self,
        x: Tensor<4>,
        tap: &mut dyn FnMut(usize, &Tensor<4>),
    ) -> NetOutput {
        let mut k = 0usize;
        let mut conv_bn = |l: &ConvBn, x: Tensor<4>, tap: &mut dyn FnMut(usize, &Tensor<4>)| {
            let z = l.conv.forward(x);
            tap(k, &z);
            k += 1;
            l.bn.forward(z)
        };
        let mut x = self.pool.forward(relu(conv_bn(&self.stem, x, tap)));
        for b in &self.blocks {
            let mut y = x.clone();
            let n = b.main.len();
            for (i, l) in b.main.iter().enumerate() {
                y = conv_bn(l, y, tap);
                if i + 1 < n {
                    y = relu(y);
                }
            }
            let shortcut = match &b.downsample {
                Some(d) => conv_bn(d, x, tap),
                None => x,
            };
            x = relu(y + shortcut);
        }
        let [n, c, _, _] = x.dims();
        let pooled: Tensor<2> = x.flatten::<3>(2, 3).mean_dim(2).reshape([n, c]);
        let embedding = match &self.neck {
            Some(bn) => bn.forward(pooled.clone()),
            None => pooled.clone(),
        };
        let logits = self
            .classifier
            .as_ref()
            .map(|fc| fc.forward(embedding.clone()));
        NetOutput {
            pooled,
            embedding,
            logits,
        }
    }
}

/// A network and its layout (what the burn module does not carry: names, BN origins).
#[derive(Debug, Clone)]
pub struct ReidModel {
    pub net: ReidNet,
    pub layout: NetLayout,
}

impl ReidModel {
    /// Reads the ResNet of an ONNX model (see [`recognise`]) onto `device`.
    pub fn from_onnx(model: &Model, device: &Device) -> Result<ReidModel, TrainError> {
        let r = recognise(model)?;
        if let Some(c) = r.ignored_classifier {
            tracing::debug!(classes = c, "the model's classifier is not loaded");
        }
        ReidModel::from_weights(r.layout, &r.weights, device)
    }

    /// Builds the network of `layout` with `weights`.
    pub fn from_weights(
        layout: NetLayout,
        weights: &NetWeights,
        device: &Device,
    ) -> Result<ReidModel, TrainError> {
        let convs = layout.convs();
        if weights.convs.len() != convs.len() || weights.neck.is_some() != layout.neck {
            return Err(TrainError::Invalid(format!(
                "weights for {} convs (neck: {}) do not fit a layout of {} convs (neck: {})",
                weights.convs.len(),
                weights.neck.is_some(),
                convs.len(),
                layout.neck
            )));
        }
        let mut it = convs.into_iter().zip(&weights.convs);
        let mut next = || -> Result<ConvBn, TrainError> {
            let (l, w) = it.next().expect("counted above");
            conv_bn(l, w, device)
        };
        let stem = next()?;
        let mut blocks = Vec::new();
        for b in &layout.blocks {
            let main = b.main.iter().map(|_| next()).collect::<Result<_, _>>()?;
            let downsample = b.downsample.as_ref().map(|_| next()).transpose()?;
            blocks.push(Block { main, downsample });
        }
        let neck = match &weights.neck {
            Some(w) => Some(batch_norm(
                w,
                layout.neck_eps,
                layout.feature_dim(),
                device,
            )?),
            None => None,
        };
        let p = &layout.pool;
        let pool = MaxPool2dConfig::new(p.kernel)
            .with_strides(p.stride)
            .with_padding(PaddingConfig2d::Explicit(
                p.pads[0], p.pads[1], p.pads[2], p.pads[3],
            ))
            .init();
        Ok(ReidModel {
            net: ReidNet {
                stem,
                pool,
                blocks,
                neck,
                classifier: None,
                projection: None,
            },
            layout,
        })
    }

    /// A freshly initialised network (Kaiming-normal convs, fan-out mode as torchvision; BN at
    /// γ=1, β=0), deterministic in `seed`.
    pub fn fresh(layout: NetLayout, seed: u64, device: &Device) -> ReidModel {
        let mut rng = StdRng::seed_from_u64(seed);
        let convs = layout
            .convs()
            .iter()
            .map(|c| {
                let n = c.cout * c.cin * c.kernel[0] * c.kernel[1];
                let std = (2.0 / (c.cout * c.kernel[0] * c.kernel[1]) as f32).sqrt();
                ConvWeights {
                    weight: (0..n).map(|_| normal(&mut rng) * std).collect(),
                    bn: BnWeights::fresh(c.cout),
                }
            })
            .collect();
        let weights = NetWeights {
            convs,
            neck: layout.neck.then(|| BnWeights::fresh(layout.feature_dim())),
        };
        ReidModel::from_weights(layout, &weights, device).expect("weights made for this layout")
    }

    /// Attaches a fresh bias-free identity classifier (normal, std 0.001, as BoT).
    pub fn with_classifier(mut self, classes: usize, seed: u64) -> ReidModel {
        let d = self.layout.feature_dim();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x636c_6173);
        let w: Vec<f32> = (0..d * classes).map(|_| normal(&mut rng) * 0.001).collect();
        let device = self.device();
        self.net.classifier = Some(Linear {
            weight: Param::from_data(TensorData::new(w, [d, classes]), &device),
            bias: None,
        });
        self
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.net.stem.conv.weight.val().device()
    }

    pub fn classes(&self) -> Option<usize> {
        self.net
            .classifier
            .as_ref()
            .map(|c| c.weight.val().dims()[1])
    }

    /// The inference snapshot (no autodiff, BatchNorm on running statistics).
    pub fn eval_net(&self) -> ReidNet {
        self.net.valid()
    }

    /// Embeddings of a prepared batch `[N,3,H,W]` in inference mode (not normalised).
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        self.eval_net().forward(x).embedding
    }

    /// Current weights, in the inference form the export writes.
    pub fn weights(&self) -> NetWeights {
        let net = &self.net;
        let mut convs = vec![read_conv_bn(&net.stem)];
        for b in &net.blocks {
            convs.extend(b.main.iter().map(read_conv_bn));
            convs.extend(b.downsample.iter().map(read_conv_bn));
        }
        NetWeights {
            convs,
            neck: net.neck.as_ref().map(read_bn),
        }
    }

    /// Gives re-inserted BatchNorms the statistics of real data, keeping the inference function
    /// unchanged: each such BN computes `a·z + c` now; with the batch mean μ and variance σ² of
    /// its input `z` it becomes mean μ, var σ², γ = a·√(σ²+ε), β = c + a·μ. Training-mode BN
    /// (batch statistics) then starts close to the network that was loaded, instead of
    /// renormalising every channel of a fused model at the first step. No-op without re-inserted
    /// BNs or batches.
    pub fn calibrate_reinserted_bn(
        mut self,
        batches: impl IntoIterator<Item = Tensor<4>>,
    ) -> ReidModel {
        let convs: Vec<ConvLayer> = self.layout.convs().into_iter().cloned().collect();
        let which: Vec<bool> = convs.iter().map(|c| c.bn == BnSource::Reinserted).collect();
        if !which.iter().any(|&b| b) {
            return self;
        }
        let mut sums: Vec<(Vec<f64>, Vec<f64>, f64)> = convs
            .iter()
            .map(|c| (vec![0.0; c.cout], vec![0.0; c.cout], 0.0))
            .collect();
        let eval = self.eval_net();
        let mut any = false;
        for x in batches {
            any = true;
            eval.forward_tapped(x, &mut |i, z| {
                if !which[i] {
                    return;
                }
                let [n, c, h, w] = z.dims();
                let v = tensor_vec(z.clone());
                let (s1, s2, cnt) = &mut sums[i];
                for b in 0..n {
                    for ch in 0..c {
                        let plane = &v[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                        for &p in plane {
                            s1[ch] += p as f64;
                            s2[ch] += (p as f64) * (p as f64);
                        }
                    }
                }
                *cnt += (n * h * w) as f64;
            });
        }
        if !any {
            return self;
        }
        let device = self.device();
        let mut k = 0usize;
        let mut fix = |l: &mut ConvBn| {
            let i = k;
            k += 1;
            if !which[i] {
                return;
            }
            let (s1, s2, cnt) = &sums[i];
            let old = read_bn(&l.bn);
            let eps = l.bn.epsilon;
            let mut new = old.clone();
            for ch in 0..old.gamma.len() {
                let a = old.gamma[ch] as f64 / (old.var[ch] as f64 + eps).sqrt();
                let c = old.beta[ch] as f64 - a * old.mean[ch] as f64;
                let mu = s1[ch] / cnt;
                let var = (s2[ch] / cnt - mu * mu).max(0.0);
                new.mean[ch] = mu as f32;
                new.var[ch] = var as f32;
                new.gamma[ch] = (a * (var + eps).sqrt()) as f32;
                new.beta[ch] = (c + a * mu) as f32;
            }
            set_bn(&mut l.bn, &new, &device);
        };
        fix(&mut self.net.stem);
        for b in &mut self.net.blocks {
            b.main.iter_mut().for_each(&mut fix);
            b.downsample.iter_mut().for_each(&mut fix);
        }
        self
    }
}

/// Standard normal sample (Box–Muller; rand's distributions live in another crate).
pub(crate) fn normal(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A tensor's values as f32 (row-major).
pub fn tensor_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>()
        .expect("a float tensor reads back as f32")
}

fn conv_bn(l: &ConvLayer, w: &ConvWeights, device: &Device) -> Result<ConvBn, TrainError> {
    let [kh, kw] = l.kernel;
    if w.weight.len() != l.cout * l.cin * kh * kw {
        return Err(TrainError::Invalid(format!(
            "{}: {} weights for a {}×{}×{kh}×{kw} kernel",
            l.name,
            w.weight.len(),
            l.cout,
            l.cin
        )));
    }
    let conv = Conv2d {
        weight: Param::from_data(
            TensorData::new(w.weight.clone(), [l.cout, l.cin, kh, kw]),
            device,
        ),
        bias: None,
        stride: l.stride,
        kernel_size: l.kernel,
        dilation: [1, 1],
        groups: 1,
        padding: PaddingConfig2d::Explicit(l.pads[0], l.pads[1], l.pads[2], l.pads[3]),
    };
    Ok(ConvBn {
        conv,
        bn: batch_norm(&w.bn, l.bn_eps, l.cout, device)?,
    })
}

fn batch_norm(w: &BnWeights, eps: f64, c: usize, device: &Device) -> Result<BatchNorm, TrainError> {
    if [&w.gamma, &w.beta, &w.mean, &w.var]
        .iter()
        .any(|v| v.len() != c)
    {
        return Err(TrainError::Invalid(format!(
            "BatchNorm parameters do not have {c} channels"
        )));
    }
    let mut bn = BatchNormConfig::new(c)
        .with_epsilon(eps)
        .with_momentum(0.1)
        .init(device);
    set_bn(&mut bn, w, device);
    Ok(bn)
}

/// Replaces a BN's parameters and running statistics (keeping parameter ids, so optimiser state
/// stays attached).
pub(crate) fn set_bn(bn: &mut BatchNorm, w: &BnWeights, device: &Device) {
    let t = |v: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device);
    let param = |id, v: &Vec<f32>| {
        let mut p = Param::from_tensor(t(v));
        p.id = id;
        p
    };
    bn.gamma = param(bn.gamma.id, &w.gamma);
    bn.beta = param(bn.beta.id, &w.beta);
    bn.running_mean = RunningState::new(t(&w.mean));
    bn.running_var = RunningState::new(t(&w.var));
}

pub(crate) fn read_bn(bn: &BatchNorm) -> BnWeights {
    BnWeights {
        gamma: tensor_vec(bn.gamma.val()),
        beta: tensor_vec(bn.beta.val()),
        mean: tensor_vec(bn.running_mean.value_sync()),
        var: tensor_vec(bn.running_var.value_sync()),
    }
}

fn read_conv_bn(l: &ConvBn) -> ConvWeights {
    ConvWeights {
        weight: tensor_vec(l.conv.weight.val()),
        bn: read_bn(&l.bn),
    }
}
