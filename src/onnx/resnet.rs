//! Builds torchvision-style ResNet graphs (basic and bottleneck blocks, any per-layer widths,
//! last-stride option, BNNeck and classifier heads) in the forms that real exporters produce:
//! BatchNorm kept or folded into conv biases (PyTorch's legacy exporter in eval mode), a
//! `GlobalAveragePool + Flatten` tail or a `ReduceMean + Reshape` tail (newer exporter, with its
//! shape computed by a `Shape → Gather → Concat` chain), weights routed through `Identity` nodes.
//!
//! Used for crosscam's own re-id networks (fresh initialisation before training) and by tests,
//! which need real-sized ResNets without PyTorch.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::graph::{Attr, Dim, Graph, Model, Node, Tensor, ValueInfo};
use super::proto::data_type;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

/// What follows the last stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Head {
    /// Global average pooling; the pooled features are the output (torchreid `feature` export).
    Features,
    /// Pooling followed by a BatchNorm1d (BNNeck, as in BoT / fast-reid); its output is the embedding.
    BnNeck,
    /// A fully-connected classifier on the pooled features (torchvision ImageNet models).
    Classifier { classes: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tail {
    /// `GlobalAveragePool` then `Flatten` (legacy exporter).
    GapFlatten,
    /// `ReduceMean` over H, W (keepdims 0), as `x.mean((2, 3))` exports.
    ReduceMean,
    /// `ReduceMean` (keepdims 1) then `Reshape` to `[N, -1]` with N taken from a
    /// `Shape → Gather → Unsqueeze → Concat` chain, as `x.view(x.size(0), -1)` exports.
    ReduceMeanShapeChain,
    /// `ReduceMean` over axes `[-2, -1]` (keepdims 1, axes as an input from opset 18) then
    /// `Reshape` to a constant `[-1, C]`, as PyTorch's torch.export-based exporter writes
    /// `x.mean((2, 3), keepdim=True).view(n, -1)`.
    ReduceMeanReshapeConst,
}

/// How the graph looks, as if written by a given exporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Style {
    pub fuse_bn: bool,
    pub tail: Tail,
    pub opset: i64,
    /// Route the head's weights through `Identity` nodes (legacy exporter with shared weights).
    pub identity_weights: bool,
}

impl Default for Style {
    fn default() -> Style {
        Style {
            fuse_bn: false,
            tail: Tail::GapFlatten,
            opset: 17,
            identity_weights: false,
        }
    }
}

/// Widths and layout of a ResNet. Any per-layer widths are allowed (pruned networks).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetSpec {
    pub block: BlockKind,
    pub stem_width: usize,
    /// Output width of each stage (all blocks of a stage add into this many channels).
    pub stage_widths: Vec<usize>,
    /// Per stage, per block: inner widths (basic: `[mid]`, bottleneck: `[w1, w2]`).
    pub inner_widths: Vec<Vec<Vec<usize>>>,
    /// Stride of the first block of the last stage (1 keeps more spatial detail for re-id).
    pub last_stride: usize,
    /// Input height and width.
    pub input_hw: (usize, usize),
}

impl ResNetSpec {
    fn standard(block: BlockKind, blocks: [usize; 4]) -> ResNetSpec {
        let planes = [64, 128, 256, 512];
        let exp = if block == BlockKind::Bottleneck { 4 } else { 1 };
        let inner = |p: usize| {
            if block == BlockKind::Bottleneck {
                vec![p, p]
            } else {
                vec![p]
            }
        };
        ResNetSpec {
            block,
            stem_width: 64,
            stage_widths: planes.iter().map(|p| p * exp).collect(),
            inner_widths: (0..4).map(|s| vec![inner(planes[s]); blocks[s]]).collect(),
            last_stride: 2,
            input_hw: (224, 224),
        }
    }
    pub fn resnet18() -> ResNetSpec {
        ResNetSpec::standard(BlockKind::Basic, [2, 2, 2, 2])
    }
    pub fn resnet34() -> ResNetSpec {
        ResNetSpec::standard(BlockKind::Basic, [3, 4, 6, 3])
    }
    pub fn resnet50() -> ResNetSpec {
        ResNetSpec::standard(BlockKind::Bottleneck, [3, 4, 6, 3])
    }
    pub fn by_name(name: &str) -> Option<ResNetSpec> {
        match name {
            "resnet18" => Some(Self::resnet18()),
            "resnet34" => Some(Self::resnet34()),
            "resnet50" => Some(Self::resnet50()),
            _ => None,
        }
    }
    /// The re-id variant: 256×128 input, last stride 1.
    pub fn for_reid(mut self) -> ResNetSpec {
        self.input_hw = (256, 128);
        self.last_stride = 1;
        self
    }
    pub fn with_input(mut self, h: usize, w: usize) -> ResNetSpec {
        self.input_hw = (h, w);
        self
    }
    /// Every width multiplied by `f` and rounded to a multiple of 8 (a smaller network of the
    /// same depth: the comparator of pruning scenario S5).
    pub fn scaled(mut self, f: f64) -> ResNetSpec {
        let r = |c: usize| (((c as f64 * f) / 8.0).round() as usize).max(1) * 8;
        self.stem_width = r(self.stem_width);
        self.stage_widths = self.stage_widths.iter().map(|&c| r(c)).collect();
        for s in &mut self.inner_widths {
            for b in s.iter_mut() {
                for c in b.iter_mut() {
                    *c = r(*c);
                }
            }
        }
        self
    }
    pub fn output_dim(&self) -> usize {
        *self.stage_widths.last().expect("a ResNet has stages")
    }
}

/// Weight initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Kaiming-normal convs, BatchNorm at identity (γ=1, β=0, mean 0, var 1): start of training.
    Training,
    /// Kaiming-normal convs and random BatchNorm statistics, so that folding, pruning and export
    /// bugs change the numbers (tests).
    RandomStats,
}

/// Builds the graph. Input `input` [N,3,H,W] (N symbolic); output `features` [N,D] (or `logits`
/// [N,classes] for a classifier head).
pub fn build(spec: &ResNetSpec, head: Head, style: Style, init: Init, seed: u64) -> Model {
    let mut b = Builder {
        g: Graph::default(),
        rng: StdRng::seed_from_u64(seed),
        style,
        init,
        uid: 0,
    };
    let (h, w) = spec.input_hw;
    b.g.inputs.push(ValueInfo {
        name: "input".into(),
        elem_type: data_type::FLOAT,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(3),
            Dim::Fixed(h as i64),
            Dim::Fixed(w as i64),
        ]),
    });
    let mut x = b.conv_bn("input", "conv1", "bn1", 3, spec.stem_width, 7, 2, 3, true);
    x = b.node(
        Node::new("MaxPool", "maxpool", &[&x], &["maxpool.out"])
            .with_attr("kernel_shape", Attr::Ints(vec![3, 3]))
            .with_attr("strides", Attr::Ints(vec![2, 2]))
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1])),
    );
    let mut cin = spec.stem_width;
    for (s, blocks) in spec.inner_widths.iter().enumerate() {
        let cout = spec.stage_widths[s];
        for (bi, inner) in blocks.iter().enumerate() {
            let stride = match (s, bi) {
                (0, _) | (_, 1..) => 1,
                (3, 0) => spec.last_stride,
                _ => 2,
            };
            let p = format!("layer{}.{bi}", s + 1);
            let main = match spec.block {
                BlockKind::Basic => {
                    let y = b.conv_bn(
                        &x,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        cin,
                        inner[0],
                        3,
                        stride,
                        1,
                        true,
                    );
                    b.conv_bn(
                        &y,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        inner[0],
                        cout,
                        3,
                        1,
                        1,
                        false,
                    )
                }
                BlockKind::Bottleneck => {
                    let y = b.conv_bn(
                        &x,
                        &format!("{p}.conv1"),
                        &format!("{p}.bn1"),
                        cin,
                        inner[0],
                        1,
                        1,
                        0,
                        true,
                    );
                    let y = b.conv_bn(
                        &y,
                        &format!("{p}.conv2"),
                        &format!("{p}.bn2"),
                        inner[0],
                        inner[1],
                        3,
                        stride,
                        1,
                        true,
                    );
                    b.conv_bn(
                        &y,
                        &format!("{p}.conv3"),
                        &format!("{p}.bn3"),
                        inner[1],
                        cout,
                        1,
                        1,
                        0,
                        false,
                    )
                }
            };
            let shortcut = if stride != 1 || cin != cout {
                b.conv_bn(
                    &x,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                    cin,
                    cout,
                    1,
                    stride,
                    0,
                    false,
                )
            } else {
                x.clone()
            };
            let sum = b.node(Node::new(
                "Add",
                format!("{p}.add"),
                &[&main, &shortcut],
                &[&format!("{p}.add.out")],
            ));
            x = b.node(Node::new(
                "Relu",
                format!("{p}.relu"),
                &[&sum],
                &[&format!("{p}.out")],
            ));
            cin = cout;
        }
    }
    let pooled = b.pool_tail(&x, cin);
    let out = match head {
        Head::Features => b.node(Node::new("Identity", "features", &[&pooled], &["features"])),
        Head::BnNeck => {
            let (scale, bias, mean, var) = b.bn_params(cin);
            let names = b.params(
                "bottleneck",
                &[
                    ("weight", scale),
                    ("bias", bias),
                    ("running_mean", mean),
                    ("running_var", var),
                ],
            );
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            b.node(
                Node::new(
                    "BatchNormalization",
                    "bottleneck",
                    &[&pooled, refs[0], refs[1], refs[2], refs[3]],
                    &["features"],
                )
                .with_attr("epsilon", Attr::Float(1e-5)),
            )
        }
        Head::Classifier { classes } => {
            let wt = b.kaiming(vec![classes, cin], cin);
            let bias = (0..classes)
                .map(|_| b.rng.random_range(-0.01..0.01))
                .collect();
            let names = b.params(
                "fc",
                &[("weight", wt), ("bias", Tensor::f32(vec![classes], bias))],
            );
            b.node(
                Node::new("Gemm", "fc", &[&pooled, &names[0], &names[1]], &["logits"])
                    .with_attr("alpha", Attr::Float(1.0))
                    .with_attr("beta", Attr::Float(1.0))
                    .with_attr("transB", Attr::Int(1)),
            )
        }
    };
    let out_dim = match head {
        Head::Classifier { classes } => classes,
        _ => cin,
    };
    b.g.outputs.push(ValueInfo {
        name: out,
        elem_type: data_type::FLOAT,
        shape: Some(vec![Dim::Named("N".into()), Dim::Fixed(out_dim as i64)]),
    });
    b.g.name = "resnet".into();
    Model {
        ir_version: 8,
        opset: style.opset,
        other_opsets: vec![],
        producer_name: "crosscam".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        metadata: vec![],
        graph: b.g,
    }
}

struct Builder {
    g: Graph,
    rng: StdRng,
    style: Style,
    init: Init,
    uid: usize,
}

impl Builder {
    fn node(&mut self, n: Node) -> String {
        let out = n.outputs[0].clone();
        self.g.nodes.push(n);
        out
    }

    fn normal(&mut self) -> f32 {
        // Box–Muller: rand's own normal distribution lives in another crate
        let u1: f32 = self.rng.random_range(f32::EPSILON..1.0);
        let u2: f32 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    fn kaiming(&mut self, dims: Vec<usize>, fan: usize) -> Tensor {
        let std = (2.0 / fan as f32).sqrt();
        let n: usize = dims.iter().product();
        let data = (0..n).map(|_| self.normal() * std).collect();
        Tensor::f32(dims, data)
    }

    fn bn_params(&mut self, c: usize) -> (Tensor, Tensor, Tensor, Tensor) {
        let v = |data: Vec<f32>| Tensor::f32(vec![c], data);
        match self.init {
            Init::Training => (
                v(vec![1.0; c]),
                v(vec![0.0; c]),
                v(vec![0.0; c]),
                v(vec![1.0; c]),
            ),
            Init::RandomStats => {
                let g = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
                let b = (0..c).map(|_| self.normal() * 0.1).collect();
                let m = (0..c).map(|_| self.normal() * 0.1).collect();
                let var = (0..c).map(|_| self.rng.random_range(0.5..1.5)).collect();
                (v(g), v(b), v(m), v(var))
            }
        }
    }

    /// Adds initializers `prefix.name`; with `identity_weights`, consumers read them through an
    /// `Identity` node as the legacy exporter writes shared weights.
    fn params(&mut self, prefix: &str, ts: &[(&str, Tensor)]) -> Vec<String> {
        let mut names = Vec::new();
        for (n, t) in ts {
            let name = format!("{prefix}.{n}");
            self.g.initializers.insert(name.clone(), t.clone());
            if self.style.identity_weights {
                self.uid += 1;
                let routed = format!("onnx::Identity_{}", self.uid);
                self.g.nodes.push(Node::new(
                    "Identity",
                    format!("Identity_{}", self.uid),
                    &[&name],
                    &[&routed],
                ));
                names.push(routed);
            } else {
                names.push(name);
            }
        }
        names
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_bn(
        &mut self,
        x: &str,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        relu: bool,
    ) -> String {
        let mut w = self.kaiming(vec![cout, cin, k, k], cout * k * k);
        let (scale, bias, mean, var) = self.bn_params(cout);
        let conv_attrs = |n: Node| {
            n.with_attr("dilations", Attr::Ints(vec![1, 1]))
                .with_attr("group", Attr::Int(1))
                .with_attr("kernel_shape", Attr::Ints(vec![k as i64, k as i64]))
                .with_attr("pads", Attr::Ints(vec![pad as i64; 4]))
                .with_attr("strides", Attr::Ints(vec![stride as i64, stride as i64]))
        };
        let mut y = if self.style.fuse_bn {
            let eps = 1e-5;
            let per = cin * k * k;
            let (wd, sd, bd, md, vd) = (
                w.data_mut(),
                scale.f32_data().expect("f32"),
                bias.f32_data().expect("f32"),
                mean.f32_data().expect("f32"),
                var.f32_data().expect("f32"),
            );
            let mut fused_b = vec![0.0; cout];
            for o in 0..cout {
                let f = sd[o] / (vd[o] + eps).sqrt();
                wd[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= f);
                fused_b[o] = bd[o] - md[o] * f;
            }
            self.uid += 1;
            let (wn, bn_) = (
                format!("onnx::Conv_{}", self.uid),
                format!("onnx::Conv_{}_bias", self.uid),
            );
            self.g.initializers.insert(wn.clone(), w);
            self.g
                .initializers
                .insert(bn_.clone(), Tensor::f32(vec![cout], fused_b));
            let out = format!("/{conv}/Conv_output_0");
            self.node(conv_attrs(Node::new(
                "Conv",
                format!("/{conv}/Conv"),
                &[x, &wn, &bn_],
                &[&out],
            )))
        } else {
            let wn = format!("{conv}.weight");
            self.g.initializers.insert(wn.clone(), w);
            let out = format!("{conv}.out");
            let c = self.node(conv_attrs(Node::new("Conv", conv, &[x, &wn], &[&out])));
            let names = self.params(
                bn,
                &[
                    ("weight", scale),
                    ("bias", bias),
                    ("running_mean", mean),
                    ("running_var", var),
                ],
            );
            self.node(
                Node::new(
                    "BatchNormalization",
                    bn,
                    &[&c, &names[0], &names[1], &names[2], &names[3]],
                    &[&format!("{bn}.out")],
                )
                .with_attr("epsilon", Attr::Float(1e-5))
                .with_attr("momentum", Attr::Float(0.9)),
            )
        };
        if relu {
            y = self.node(Node::new(
                "Relu",
                format!("{conv}.relu"),
                &[&y],
                &[&format!("{conv}.relu.out")],
            ));
        }
        y
    }

    fn pool_tail(&mut self, x: &str, channels: usize) -> String {
        let axes_hw = if self.style.tail == Tail::ReduceMeanReshapeConst {
            vec![-2i64, -1]
        } else {
            vec![2i64, 3]
        };
        let reduce = |b: &mut Builder, keep: i64, out: &str| -> String {
            if b.style.opset >= 18 {
                b.g.initializers
                    .insert("pool.axes".into(), Tensor::i64(vec![2], axes_hw.clone()));
                b.node(
                    Node::new("ReduceMean", "pool", &[x, "pool.axes"], &[out])
                        .with_attr("keepdims", Attr::Int(keep)),
                )
            } else {
                b.node(
                    Node::new("ReduceMean", "pool", &[x], &[out])
                        .with_attr("axes", Attr::Ints(axes_hw.clone()))
                        .with_attr("keepdims", Attr::Int(keep)),
                )
            }
        };
        match self.style.tail {
            Tail::GapFlatten => {
                let p = self.node(Node::new(
                    "GlobalAveragePool",
                    "avgpool",
                    &[x],
                    &["avgpool.out"],
                ));
                self.node(
                    Node::new("Flatten", "flatten", &[&p], &["flatten.out"])
                        .with_attr("axis", Attr::Int(1)),
                )
            }
            Tail::ReduceMean => reduce(self, 0, "pool.out"),
            Tail::ReduceMeanReshapeConst => {
                let p = reduce(self, 1, "pool.out");
                self.g.initializers.insert(
                    "view.target".into(),
                    Tensor::i64(vec![2], vec![-1, channels as i64]),
                );
                self.node(Node::new(
                    "Reshape",
                    "view",
                    &[&p, "view.target"],
                    &["view.out"],
                ))
            }
            Tail::ReduceMeanShapeChain => {
                let p = reduce(self, 1, "pool.out");
                self.g
                    .initializers
                    .insert("shape.idx0".into(), Tensor::i64(vec![], vec![0]));
                self.g
                    .initializers
                    .insert("shape.minus1".into(), Tensor::i64(vec![1], vec![-1]));
                self.g
                    .initializers
                    .insert("shape.axes0".into(), Tensor::i64(vec![1], vec![0]));
                self.node(Node::new("Shape", "shape", &[&p], &["shape.out"]));
                self.node(
                    Node::new(
                        "Gather",
                        "shape.gather",
                        &["shape.out", "shape.idx0"],
                        &["shape.n"],
                    )
                    .with_attr("axis", Attr::Int(0)),
                );
                let unsq = if self.style.opset >= 13 {
                    Node::new(
                        "Unsqueeze",
                        "shape.unsqueeze",
                        &["shape.n", "shape.axes0"],
                        &["shape.n1"],
                    )
                } else {
                    Node::new("Unsqueeze", "shape.unsqueeze", &["shape.n"], &["shape.n1"])
                        .with_attr("axes", Attr::Ints(vec![0]))
                };
                self.node(unsq);
                self.node(
                    Node::new(
                        "Concat",
                        "shape.concat",
                        &["shape.n1", "shape.minus1"],
                        &["shape.target"],
                    )
                    .with_attr("axis", Attr::Int(0)),
                );
                self.node(Node::new(
                    "Reshape",
                    "view",
                    &[&p, "shape.target"],
                    &["view.out"],
                ))
            }
        }
    }
}

impl Tensor {
    /// Mutable f32 values (panics on other types: only used on tensors this module made).
    fn data_mut(&mut self) -> &mut Vec<f32> {
        match &mut self.data {
            super::graph::TensorData::F32(v) => v,
            _ => panic!("not an f32 tensor"),
        }
    }
}
