//! Writes a trained network back to ONNX: input `input` `[N,3,H,W]`, output `features` `[N,D]`
//! (the BNNeck output, or the pooled features without a neck), torchvision names
//! (`layer2.0.conv1`, …), normalisation in the metadata so `reid::Embedder` opens it as is.
//!
//! BatchNorm is folded into the convs by default (`W·γ/√(σ²+ε)`, `β − μ·γ/√(σ²+ε)`): the serving
//! form, fewer nodes, what PyTorch's eval-mode exporter writes. `fold_bn: false` keeps
//! `BatchNormalization` nodes: the form to hand to the pruner when it scores channels by BN
//! scale (`bn-scale`), and the one that loads back into training without re-inserting BN. The
//! BNNeck stays a BatchNormalization on `[N,D]` in both forms (nothing linear precedes it to fold
//! into). The classifier is never exported.

use crate::frame::Normalize;
use crate::onnx::proto::data_type;
use crate::onnx::{Attr, Dim, Graph, Model, Node, Tensor, ValueInfo};
use crate::reid::embedder::{META_COLOR, META_MEAN, META_STD};

use super::layout::{ConvLayer, NetLayout};
use super::model::ReidModel;
use super::recognise::{BnWeights, ConvWeights, NetWeights};

/// The output name of exported embedders.
pub const OUTPUT: &str = "features";
/// The input name of exported embedders.
pub const INPUT: &str = "input";

#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Fold BatchNorm into conv weights and biases (serving form). Default true.
    pub fold_bn: bool,
    pub opset: i64,
    /// Input normalisation written to the metadata (`crosscam.mean/std/color`).
    pub norm: Normalize,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            fold_bn: true,
            opset: 17,
            norm: Normalize::IMAGENET,
        }
    }
}

/// Exports the model's current (inference-form) weights.
pub fn export(model: &ReidModel, opts: &ExportOptions) -> Model {
    export_weights(&model.layout, &model.weights(), opts)
}

/// Exports `weights` laid out as `layout`.
pub fn export_weights(layout: &NetLayout, weights: &NetWeights, opts: &ExportOptions) -> Model {
    let mut w = Writer {
        g: Graph::default(),
        fold: opts.fold_bn,
    };
    let (h, wd) = layout.input_hw;
    w.g.inputs.push(ValueInfo {
        name: INPUT.into(),
        elem_type: data_type::FLOAT,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(3),
            Dim::Fixed(h as i64),
            Dim::Fixed(wd as i64),
        ]),
    });
    let mut ws = weights.convs.iter();
    let mut next = || ws.next().expect("one weight set per conv");
    let x = w.conv_bn(INPUT, &layout.stem, next());
    let x = w.node(Node::new("Relu", "relu", &[&x], &["relu.out"]));
    let p = &layout.pool;
    let pads: Vec<i64> = p.pads.iter().map(|&v| v as i64).collect();
    let mut x = w.node(
        Node::new("MaxPool", "maxpool", &[&x], &["maxpool.out"])
            .with_attr("kernel_shape", ints(&p.kernel))
            .with_attr("strides", ints(&p.stride))
            .with_attr("pads", Attr::Ints(pads)),
    );
    for b in &layout.blocks {
        let prefix = block_prefix(&b.main[0].name);
        let mut y = x.clone();
        for (i, c) in b.main.iter().enumerate() {
            y = w.conv_bn(&y, c, next());
            if i + 1 < b.main.len() {
                y = w.node(Node::new(
                    "Relu",
                    format!("{}.relu", c.name),
                    &[&y],
                    &[&format!("{}.relu.out", c.name)],
                ));
            }
        }
        let shortcut = match &b.downsample {
            Some(d) => w.conv_bn(&x, d, next()),
            None => x.clone(),
        };
        let sum = w.node(Node::new(
            "Add",
            format!("{prefix}.add"),
            &[&y, &shortcut],
            &[&format!("{prefix}.add.out")],
        ));
        x = w.node(Node::new(
            "Relu",
            format!("{prefix}.relu"),
            &[&sum],
            &[&format!("{prefix}.out")],
        ));
    }
    let gap = w.node(Node::new(
        "GlobalAveragePool",
        "avgpool",
        &[&x],
        &["avgpool.out"],
    ));
    let flat_out = if layout.neck { "flatten.out" } else { OUTPUT };
    let pooled = w.node(
        Node::new("Flatten", "flatten", &[&gap], &[flat_out]).with_attr("axis", Attr::Int(1)),
    );
    if let Some(neck) = &weights.neck {
        let names = w.bn_params("bottleneck", neck);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        w.node(
            Node::new(
                "BatchNormalization",
                "bottleneck",
                &[&pooled, refs[0], refs[1], refs[2], refs[3]],
                &[OUTPUT],
            )
            .with_attr("epsilon", Attr::Float(layout.neck_eps as f32)),
        );
    }
    w.g.outputs.push(ValueInfo {
        name: OUTPUT.into(),
        elem_type: data_type::FLOAT,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(layout.feature_dim() as i64),
        ]),
    });
    w.g.name = "crosscam-reid-resnet".into();
    let f = |v: [f32; 3]| format!("{},{},{}", v[0], v[1], v[2]);
    Model {
        ir_version: 8,
        opset: opts.opset,
        other_opsets: vec![],
        producer_name: "crosscam".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        metadata: vec![
            (META_MEAN.into(), f(opts.norm.mean)),
            (META_STD.into(), f(opts.norm.std)),
            (
                META_COLOR.into(),
                if opts.norm.bgr { "BGR" } else { "RGB" }.into(),
            ),
        ],
        graph: w.g,
    }
}

/// `layer2.0.conv1` → `layer2.0`.
fn block_prefix(conv: &str) -> &str {
    conv.rsplit_once('.').map(|(p, _)| p).unwrap_or(conv)
}

fn ints(v: &[usize; 2]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

struct Writer {
    g: Graph,
    fold: bool,
}

impl Writer {
    fn node(&mut self, n: Node) -> String {
        let out = n.outputs[0].clone();
        self.g.nodes.push(n);
        out
    }

    fn bn_params(&mut self, prefix: &str, bn: &BnWeights) -> Vec<String> {
        let mut names = Vec::new();
        for (n, v) in [
            ("weight", &bn.gamma),
            ("bias", &bn.beta),
            ("running_mean", &bn.mean),
            ("running_var", &bn.var),
        ] {
            let name = format!("{prefix}.{n}");
            self.g
                .initializers
                .insert(name.clone(), Tensor::f32(vec![v.len()], v.clone()));
            names.push(name);
        }
        names
    }

    fn conv_bn(&mut self, x: &str, l: &ConvLayer, w: &ConvWeights) -> String {
        let dims = vec![l.cout, l.cin, l.kernel[0], l.kernel[1]];
        let attrs = |n: Node| {
            n.with_attr("dilations", Attr::Ints(vec![1, 1]))
                .with_attr("group", Attr::Int(1))
                .with_attr("kernel_shape", ints(&l.kernel))
                .with_attr(
                    "pads",
                    Attr::Ints(l.pads.iter().map(|&v| v as i64).collect()),
                )
                .with_attr("strides", ints(&l.stride))
        };
        let wname = format!("{}.weight", l.name);
        if self.fold {
            let per = l.cin * l.kernel[0] * l.kernel[1];
            let mut wf = w.weight.clone();
            let mut bias = vec![0.0f32; l.cout];
            for o in 0..l.cout {
                let a = w.bn.gamma[o] as f64 / (w.bn.var[o] as f64 + l.bn_eps).sqrt();
                wf[o * per..(o + 1) * per]
                    .iter_mut()
                    .for_each(|v| *v = (*v as f64 * a) as f32);
                bias[o] = (w.bn.beta[o] as f64 - w.bn.mean[o] as f64 * a) as f32;
            }
            let bname = format!("{}.bias", l.name);
            self.g
                .initializers
                .insert(wname.clone(), Tensor::f32(dims, wf));
            self.g
                .initializers
                .insert(bname.clone(), Tensor::f32(vec![l.cout], bias));
            let out = format!("{}.out", l.name);
            self.node(attrs(Node::new(
                "Conv",
                &l.name,
                &[x, &wname, &bname],
                &[&out],
            )))
        } else {
            self.g
                .initializers
                .insert(wname.clone(), Tensor::f32(dims, w.weight.clone()));
            let out = format!("{}.out", l.name);
            let c = self.node(attrs(Node::new("Conv", &l.name, &[x, &wname], &[&out])));
            let bn = l.bn_name();
            let names = self.bn_params(&bn, &w.bn);
            self.node(
                Node::new(
                    "BatchNormalization",
                    &bn,
                    &[&c, &names[0], &names[1], &names[2], &names[3]],
                    &[&format!("{bn}.out")],
                )
                .with_attr("epsilon", Attr::Float(l.bn_eps as f32)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::ResNetSpec;
    use crate::train::recognise::recognise;

    #[test]
    fn export_reads_back_to_the_same_layout_in_both_forms() {
        let mut spec = ResNetSpec::resnet50().for_reid().scaled(0.125);
        spec.input_hw = (64, 32);
        spec.inner_widths[1][2] = vec![3, 5];
        let layout = NetLayout::from_spec(&spec, true);
        let device = crate::train::device::cpu();
        let m = ReidModel::fresh(layout.clone(), 7, &device);
        for fold in [true, false] {
            let onnx = export(
                &m,
                &ExportOptions {
                    fold_bn: fold,
                    ..ExportOptions::default()
                },
            );
            onnx.graph.check_topological().unwrap();
            let back = Model::from_bytes(&onnx.to_bytes()).unwrap();
            let r = recognise(&back).unwrap();
            assert_eq!(r.layout.blocks.len(), layout.blocks.len());
            assert_eq!(r.layout.feature_dim(), layout.feature_dim());
            for (a, b) in r.layout.convs().iter().zip(layout.convs()) {
                assert_eq!(
                    (&a.name, a.cin, a.cout, a.stride),
                    (&b.name, b.cin, b.cout, b.stride)
                );
                assert_eq!(a.bn == super::super::layout::BnSource::Kept, !fold);
            }
        }
    }
}
