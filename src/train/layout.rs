//! What a trainable re-id ResNet looks like, as plain data: every conv with its own widths, stride
//! and padding, the blocks they form, and the head. [`recognise`](super::recognise) reads it from
//! an ONNX graph (any exporter style, any pruned widths); [`ReidNet`](super::model::ReidNet) is
//! built from it; checkpoints store it so a run resumes into the same shapes.
//!
//! Names are canonical torchvision names (`conv1`/`bn1`, `layer{s}.{b}.conv{j}`,
//! `layer{s}.{b}.downsample.0`, `bottleneck`), whatever the source graph called its nodes; the
//! exported ONNX uses them too, so the pruner's and the trainer's names for a conv agree.

use serde::{Deserialize, Serialize};

/// Where a conv's BatchNorm came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum BnSource {
    /// The source graph had a `BatchNormalization` after the conv.
    Kept,
    /// The source graph had BN folded into the conv's bias; the trainer re-inserted one
    /// (identity at load, calibrated on data before training: see docs/training.md).
    Reinserted,
}

/// One convolution followed by its BatchNorm (square or rectangular kernels, groups 1,
/// dilation 1, symmetric or asymmetric zero padding).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvLayer {
    /// Canonical name of the conv (`layer2.0.conv1`); its BN is named by [`ConvLayer::bn_name`].
    pub name: String,
    /// Node name in the graph it was read from (for messages), empty for fresh layers.
    pub source: String,
    pub cin: usize,
    pub cout: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// ONNX order: top, left, bottom, right.
    pub pads: [usize; 4],
    pub bn: BnSource,
    pub bn_eps: f64,
}

impl ConvLayer {
    /// The torchvision name of the BatchNorm that follows this conv.
    pub fn bn_name(&self) -> String {
        bn_name_for(&self.name)
    }
    pub fn macs_per_pixel(&self) -> usize {
        self.cin * self.cout * self.kernel[0] * self.kernel[1]
    }
}

/// `conv1` → `bn1`, `layer1.0.conv2` → `layer1.0.bn2`, `layer2.0.downsample.0` → `…downsample.1`.
pub fn bn_name_for(conv: &str) -> String {
    if let Some(p) = conv.strip_suffix("downsample.0") {
        return format!("{p}downsample.1");
    }
    match conv.rfind("conv") {
        Some(i) => format!("{}bn{}", &conv[..i], &conv[i + 4..]),
        None => format!("{conv}.bn"),
    }
}

/// A residual block: the main branch (ReLU after every conv but the last), the shortcut (a
/// projection conv or the identity), their sum, and a ReLU. Basic blocks have two main convs,
/// bottlenecks three; any count is accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockLayout {
    pub main: Vec<ConvLayer>,
    pub downsample: Option<ConvLayer>,
}

impl BlockLayout {
    pub fn cout(&self) -> usize {
        self.main.last().map(|c| c.cout).unwrap_or(0)
    }
}

/// The stem's max pooling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PoolLayout {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// top, left, bottom, right.
    pub pads: [usize; 4],
}

/// The whole network, input to embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetLayout {
    /// Input height and width the model declares (256×128 when the graph leaves them dynamic).
    pub input_hw: (usize, usize),
    pub stem: ConvLayer,
    pub pool: PoolLayout,
    pub blocks: Vec<BlockLayout>,
    /// BatchNorm1d after global pooling (BNNeck): the embedding is its output.
    pub neck: bool,
    pub neck_eps: f64,
}

impl NetLayout {
    /// Width of the pooled features (= embedding dimension).
    pub fn feature_dim(&self) -> usize {
        self.blocks
            .last()
            .map(BlockLayout::cout)
            .unwrap_or(self.stem.cout)
    }

    /// Every conv in forward order: stem, then per block the main convs and the downsample.
    pub fn convs(&self) -> Vec<&ConvLayer> {
        let mut v = vec![&self.stem];
        for b in &self.blocks {
            v.extend(b.main.iter());
            v.extend(b.downsample.iter());
        }
        v
    }

    /// Whether any BN was re-inserted (then the trainer calibrates before training).
    pub fn has_reinserted_bn(&self) -> bool {
        self.convs().iter().any(|c| c.bn == BnSource::Reinserted)
    }

    /// A layout from a [`ResNetSpec`](crate::onnx::resnet::ResNetSpec) (fresh networks, benches).
    pub fn from_spec(spec: &crate::onnx::resnet::ResNetSpec, neck: bool) -> NetLayout {
        use crate::onnx::resnet::BlockKind;
        let conv = |name: String, cin, cout, k: usize, s: usize, p: usize| ConvLayer {
            name,
            source: String::new(),
            cin,
            cout,
            kernel: [k, k],
            stride: [s, s],
            pads: [p; 4],
            bn: BnSource::Kept,
            bn_eps: 1e-5,
        };
        let stem = conv("conv1".into(), 3, spec.stem_width, 7, 2, 3);
        let mut blocks = Vec::new();
        let mut cin = spec.stem_width;
        for (s, stage) in spec.inner_widths.iter().enumerate() {
            let cout = spec.stage_widths[s];
            for (bi, inner) in stage.iter().enumerate() {
                let stride = match (s, bi) {
                    (0, _) | (_, 1..) => 1,
                    (3, 0) => spec.last_stride,
                    _ => 2,
                };
                let p = format!("layer{}.{bi}", s + 1);
                let main = match spec.block {
                    BlockKind::Basic => vec![
                        conv(format!("{p}.conv1"), cin, inner[0], 3, stride, 1),
                        conv(format!("{p}.conv2"), inner[0], cout, 3, 1, 1),
                    ],
                    BlockKind::Bottleneck => vec![
                        conv(format!("{p}.conv1"), cin, inner[0], 1, 1, 0),
                        conv(format!("{p}.conv2"), inner[0], inner[1], 3, stride, 1),
                        conv(format!("{p}.conv3"), inner[1], cout, 1, 1, 0),
                    ],
                };
                let downsample = (stride != 1 || cin != cout)
                    .then(|| conv(format!("{p}.downsample.0"), cin, cout, 1, stride, 0));
                blocks.push(BlockLayout { main, downsample });
                cin = cout;
            }
        }
        NetLayout {
            input_hw: spec.input_hw,
            stem,
            pool: PoolLayout {
                kernel: [3, 3],
                stride: [2, 2],
                pads: [1; 4],
            },
            blocks,
            neck,
            neck_eps: 1e-5,
        }
    }

    /// Gives every conv its canonical torchvision name: a new stage starts at each block with a
    /// downsample (except the very first block, which opens stage 1 either way).
    pub fn assign_canonical_names(&mut self) {
        self.stem.name = "conv1".into();
        let (mut stage, mut idx) = (1usize, 0usize);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            if i > 0 && b.downsample.is_some() {
                stage += 1;
                idx = 0;
            }
            for (j, c) in b.main.iter_mut().enumerate() {
                c.name = format!("layer{stage}.{idx}.conv{}", j + 1);
            }
            if let Some(d) = &mut b.downsample {
                d.name = format!("layer{stage}.{idx}.downsample.0");
            }
            idx += 1;
        }
    }

    /// Multiply-accumulates of the convs for one input (the pruner's count is authoritative;
    /// this one is for logs and benches).
    pub fn conv_macs(&self) -> u64 {
        let (mut h, mut w) = self.input_hw;
        let out = |h: usize, w: usize, c: &ConvLayer| {
            (
                (h + c.pads[0] + c.pads[2] - c.kernel[0]) / c.stride[0] + 1,
                (w + c.pads[1] + c.pads[3] - c.kernel[1]) / c.stride[1] + 1,
            )
        };
        let mut macs = 0u64;
        let (sh, sw) = out(h, w, &self.stem);
        macs += (sh * sw * self.stem.macs_per_pixel()) as u64;
        h = (sh + self.pool.pads[0] + self.pool.pads[2] - self.pool.kernel[0])
            / self.pool.stride[0]
            + 1;
        w = (sw + self.pool.pads[1] + self.pool.pads[3] - self.pool.kernel[1])
            / self.pool.stride[1]
            + 1;
        for b in &self.blocks {
            let (bh, bw) = (h, w);
            for c in &b.main {
                (h, w) = out(h, w, c);
                macs += (h * w * c.macs_per_pixel()) as u64;
            }
            if let Some(d) = &b.downsample {
                let (dh, dw) = out(bh, bw, d);
                macs += (dh * dw * d.macs_per_pixel()) as u64;
            }
        }
        macs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::ResNetSpec;

    #[test]
    fn bn_names_follow_torchvision() {
        assert_eq!(bn_name_for("conv1"), "bn1");
        assert_eq!(bn_name_for("layer3.1.conv2"), "layer3.1.bn2");
        assert_eq!(
            bn_name_for("layer2.0.downsample.0"),
            "layer2.0.downsample.1"
        );
    }

    #[test]
    fn spec_layouts_count_the_reference_macs() {
        // torchvision's ResNet18 1.990 GMACs, ResNet50 4.053 GMACs at 256×128, last stride 1
        // (conv MACs only; the classifier-free heads add nothing; docs/models.md).
        let r18 = NetLayout::from_spec(&ResNetSpec::resnet18().for_reid(), true);
        assert_eq!(r18.feature_dim(), 512);
        assert!((r18.conv_macs() as f64 / 1e9 - 1.990).abs() < 0.002);
        let r50 = NetLayout::from_spec(&ResNetSpec::resnet50().for_reid(), true);
        assert_eq!(r50.feature_dim(), 2048);
        assert!((r50.conv_macs() as f64 / 1e9 - 4.053).abs() < 0.002);
        let mut renamed = r50.clone();
        renamed.assign_canonical_names();
        assert_eq!(renamed, r50);
    }
}
