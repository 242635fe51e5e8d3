//! Reads a ResNet out of an ONNX graph by walking it from the input — never by node names — so
//! that every exporter style and every pruned width is understood: stem conv (+BN) + ReLU +
//! max-pool; residual blocks (main branch of convs with ReLUs between them, a projection conv or
//! the identity as shortcut, `Add`, ReLU); a pooling tail (`GlobalAveragePool + Flatten`,
//! `ReduceMean` with or without `keepdims`, `Reshape` fed by a shape chain); an optional BNNeck
//! BatchNorm after pooling; an optional classifier (ignored: re-id trains its own head).
//!
//! Weights come from the initializers, through `Identity` nodes when an exporter routes them so.
//! A conv with its BN folded into the bias gets a BN re-inserted at the identity (γ=1, β=bias,
//! mean 0, var 1−ε, so `(z−0)/√(1−ε+ε)·1+β = z+bias` exactly); [`calibrate_reinserted_bn`]
//! then gives it data statistics before training (docs/training.md explains why).
//!
//! [`calibrate_reinserted_bn`]: super::model::ReidModel::calibrate_reinserted_bn

use std::collections::{HashMap, HashSet};

use crate::onnx::{Attr, Dim, Graph, Model, Node, Tensor};

use super::TrainError;
use super::layout::{BlockLayout, BnSource, ConvLayer, NetLayout, PoolLayout};

/// Per-channel BatchNorm parameters (inference form).
#[derive(Clone, Debug, PartialEq)]
pub struct BnWeights {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

impl BnWeights {
    /// The BN that leaves `z + bias` unchanged in inference (re-inserted after a fused conv).
    pub fn identity_with_bias(bias: Vec<f32>, eps: f64) -> BnWeights {
        let c = bias.len();
        BnWeights {
            gamma: vec![1.0; c],
            beta: bias,
            mean: vec![0.0; c],
            var: vec![(1.0 - eps) as f32; c],
        }
    }
    /// A fresh BN (γ=1, β=0, mean 0, var 1), as a training initialisation.
    pub fn fresh(c: usize) -> BnWeights {
        BnWeights {
            gamma: vec![1.0; c],
            beta: vec![0.0; c],
            mean: vec![0.0; c],
            var: vec![1.0; c],
        }
    }
}

/// A conv's kernel `[cout, cin, kh, kw]` and its BatchNorm.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvWeights {
    pub weight: Vec<f32>,
    pub bn: BnWeights,
}

/// The weights of a [`NetLayout`]: convs in [`NetLayout::convs`] order, and the neck's BN.
#[derive(Clone, Debug, PartialEq)]
pub struct NetWeights {
    pub convs: Vec<ConvWeights>,
    pub neck: Option<BnWeights>,
}

/// A recognised network: its layout and its weights.
#[derive(Clone, Debug)]
pub struct Recognised {
    pub layout: NetLayout,
    pub weights: NetWeights,
    /// Classes of a classifier found after the pooling (not loaded; re-id trains its own head).
    pub ignored_classifier: Option<usize>,
}

/// Recognises the ResNet in `model`.
pub fn recognise(model: &Model) -> Result<Recognised, TrainError> {
    let mut g = model.graph.clone();
    g.fold_constant_nodes()?;
    let w = Walker::new(&g);
    w.walk()
}

fn unsupported(msg: impl Into<String>) -> TrainError {
    TrainError::Unsupported(msg.into())
}

struct Walker<'a> {
    g: &'a Graph,
    /// Output of a pass-through node (Identity, inference Dropout) → its input.
    alias: HashMap<&'a str, &'a str>,
    consumers: HashMap<&'a str, Vec<usize>>,
}

struct Branch {
    convs: Vec<(ConvLayer, ConvWeights)>,
    add: usize,
}

impl<'a> Walker<'a> {
    fn new(g: &'a Graph) -> Walker<'a> {
        let mut alias = HashMap::new();
        for n in &g.nodes {
            if is_passthrough(n)
                && let (Some(i), Some(o)) = (n.input(0), n.outputs.first())
            {
                alias.insert(o.as_str(), i);
            }
        }
        Walker {
            g,
            alias,
            consumers: g.consumers(),
        }
    }

    fn resolve<'b>(&'b self, mut v: &'b str) -> &'b str {
        while let Some(a) = self.alias.get(v) {
            v = a;
        }
        v
    }

    fn node(&self, i: usize) -> &'a Node {
        &self.g.nodes[i]
    }

    /// The first output of node `i` (a node without one cannot be part of the network).
    fn out0(&self, i: usize) -> Result<String, TrainError> {
        let n = self.node(i);
        n.outputs
            .first()
            .filter(|o| !o.is_empty())
            .cloned()
            .ok_or_else(|| unsupported(format!("{} has no output", n.describe())))
    }

    /// Consumers of value `v`, looking through pass-through nodes.
    fn consumers_of(&self, v: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![v.to_string()];
        while let Some(v) = stack.pop() {
            for &i in self
                .consumers
                .get(v.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let n = self.node(i);
                if is_passthrough(n) {
                    stack.extend(n.outputs.first().cloned());
                } else if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// The single consumer of `v` with op `op`, or an error naming what was found.
    fn only_consumer(&self, v: &str, op: &str, what: &str) -> Result<usize, TrainError> {
        let c = self.consumers_of(v);
        match c.as_slice() {
            [i] if self.node(*i).op == op => Ok(*i),
            _ => Err(unsupported(format!(
                "expected {what} ({op}) after '{v}', found [{}]",
                self.describe_all(&c)
            ))),
        }
    }

    fn describe_all(&self, idx: &[usize]) -> String {
        idx.iter()
            .map(|&i| self.node(i).describe())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn init(&self, name: &str) -> Option<&'a Tensor> {
        self.g.initializers.get(self.resolve(name))
    }

    fn f32_init(&self, n: &Node, i: usize, what: &str) -> Result<Vec<f32>, TrainError> {
        let name = n
            .input(i)
            .ok_or_else(|| unsupported(format!("{} has no {what}", n.describe())))?;
        let t = self.init(name).ok_or_else(|| {
            unsupported(format!(
                "{}: its {what} '{name}' is not a constant initializer",
                n.describe()
            ))
        })?;
        t.as_f32().map(|c| c.into_owned()).ok_or_else(|| {
            unsupported(format!(
                "{}: its {what} is not a float tensor",
                n.describe()
            ))
        })
    }

    fn walk(&self) -> Result<Recognised, TrainError> {
        let inp = self
            .g
            .inputs
            .first()
            .ok_or_else(|| unsupported("the graph has no input"))?;
        let shape = inp.shape.clone().unwrap_or_default();
        if shape.len() != 4 || shape[1].fixed().is_some_and(|c| c != 3) {
            return Err(unsupported(format!(
                "the input '{}' is not [N,3,H,W]",
                inp.name
            )));
        }
        let input_hw = match (&shape[2], &shape[3]) {
            (Dim::Fixed(h), Dim::Fixed(w)) => {
                if !(1..=MAX_SIZE).contains(h) || !(1..=MAX_SIZE).contains(w) {
                    return Err(unsupported(format!(
                        "the input '{}' declares {h}×{w} pixels; height and width must be 1..={MAX_SIZE}",
                        inp.name
                    )));
                }
                (*h as usize, *w as usize)
            }
            _ => (256, 128),
        };
        let mut convs: Vec<(ConvLayer, ConvWeights)> = Vec::new();

        // stem: conv (+BN) + ReLU + MaxPool
        let stem_conv = self.only_consumer(&inp.name, "Conv", "the stem convolution")?;
        let (stem, stem_w, out) = self.conv_bn(stem_conv)?;
        convs.push((stem.clone(), stem_w));
        let relu = self.only_consumer(&out, "Relu", "the stem ReLU")?;
        let mp = self.only_consumer(&self.out0(relu)?, "MaxPool", "the stem max-pool")?;
        let pool = pool_layout(self.node(mp))?;
        let mut x = self.out0(mp)?;

        // residual blocks until the pooling tail
        let mut blocks = Vec::new();
        let mut block_ws = Vec::new();
        let tail = loop {
            let cons = self.consumers_of(&x);
            if let [i] = cons.as_slice()
                && matches!(
                    self.node(*i).op.as_str(),
                    "GlobalAveragePool" | "ReduceMean"
                )
            {
                break *i;
            }
            let mut branches = Vec::new();
            for &c in &cons {
                match self.node(c).op.as_str() {
                    "Conv" => branches.push(self.branch(c)?),
                    "Add" => branches.push(Branch {
                        convs: Vec::new(),
                        add: c,
                    }),
                    _ => {
                        return Err(unsupported(format!(
                            "after '{x}' expected a residual block or the pooling, found {}",
                            self.node(c).describe()
                        )));
                    }
                }
            }
            if branches.len() != 2 || branches[0].add != branches[1].add {
                return Err(unsupported(format!(
                    "'{x}' does not start a residual block (two branches into one Add); \
                     its consumers are [{}]",
                    self.describe_all(&cons)
                )));
            }
            branches.sort_by_key(|b| std::cmp::Reverse(b.convs.len()));
            let (Some(short), Some(main)) = (branches.pop(), branches.pop()) else {
                return Err(unsupported(format!(
                    "'{x}' does not start a residual block"
                )));
            };
            if main.convs.is_empty() || short.convs.len() > 1 {
                return Err(unsupported(format!(
                    "the block at '{x}' has {} and {} convs in its branches; expected a main \
                     branch and an identity or one-conv shortcut",
                    main.convs.len(),
                    short.convs.len()
                )));
            }
            let add = main.add;
            let relu =
                self.only_consumer(&self.out0(add)?, "Relu", "the ReLU after a residual Add")?;
            x = self.out0(relu)?;
            let (main_l, main_w): (Vec<_>, Vec<_>) = main.convs.into_iter().unzip();
            let (ds_l, ds_w) = match short.convs.into_iter().next() {
                Some((l, w)) => (Some(l), Some(w)),
                None => (None, None),
            };
            let block = BlockLayout {
                main: main_l,
                downsample: ds_l,
            };
            if let Some(d) = &block.downsample
                && d.cout != block.cout()
            {
                return Err(unsupported(format!(
                    "the shortcut conv {} has {} channels, the main branch {}",
                    d.source,
                    d.cout,
                    block.cout()
                )));
            }
            blocks.push(block);
            block_ws.push((main_w, ds_w));
        };
        if blocks.is_empty() {
            return Err(unsupported("no residual block found after the stem"));
        }

        // pooling tail
        let pooled = self.pooled(tail)?;
        let c = blocks.last().map(BlockLayout::cout).unwrap_or(stem.cout);
        let mut neck = None;
        let mut neck_eps = 1e-5;
        let mut ignored_classifier = None;
        for i in self.consumers_of(&pooled) {
            let n = self.node(i);
            match n.op.as_str() {
                "BatchNormalization" if neck.is_none() => {
                    let (bn, eps) = self.bn_weights(n, c)?;
                    neck = Some(bn);
                    neck_eps = eps;
                    for j in self.consumers_of(&self.out0(i)?) {
                        ignored_classifier = ignored_classifier.or(self.classifier_width(j));
                    }
                }
                _ => ignored_classifier = ignored_classifier.or(self.classifier_width(i)),
            }
        }

        let mut all: Vec<(ConvLayer, ConvWeights)> = convs;
        for (b, (mw, dw)) in blocks.iter().zip(block_ws) {
            all.extend(b.main.iter().cloned().zip(mw));
            if let (Some(l), Some(w)) = (&b.downsample, dw) {
                all.push((l.clone(), w));
            }
        }
        // every Conv of the graph must be part of what was recognised
        let seen: HashSet<&str> = all.iter().map(|(l, _)| l.source.as_str()).collect();
        if let Some(n) = self
            .g
            .nodes
            .iter()
            .find(|n| n.op == "Conv" && !seen.contains(node_key(n).as_str()))
        {
            return Err(unsupported(format!(
                "{} is outside the recognised ResNet structure",
                n.describe()
            )));
        }
        let mut layout = NetLayout {
            input_hw,
            stem,
            pool,
            blocks,
            neck: neck.is_some(),
            neck_eps,
        };
        layout.assign_canonical_names();
        Ok(Recognised {
            layout,
            weights: NetWeights {
                convs: all.into_iter().map(|(_, w)| w).collect(),
                neck,
            },
            ignored_classifier,
        })
    }

    /// Follows a chain conv-BN(-ReLU-conv-BN)* from conv node `first` to the `Add` it feeds.
    fn branch(&self, first: usize) -> Result<Branch, TrainError> {
        let mut convs = Vec::new();
        let mut c = first;
        loop {
            let (l, w, out) = self.conv_bn(c)?;
            convs.push((l, w));
            let cons = self.consumers_of(&out);
            match cons.as_slice() {
                [i] if self.node(*i).op == "Add" => return Ok(Branch { convs, add: *i }),
                [i] if self.node(*i).op == "Relu" => {
                    c = self.only_consumer(
                        &self.out0(*i)?,
                        "Conv",
                        "the next convolution of a block",
                    )?;
                }
                _ => {
                    return Err(unsupported(format!(
                        "inside a residual branch, '{out}' feeds [{}]",
                        self.describe_all(&cons)
                    )));
                }
            }
        }
    }

    /// A Conv node and the BatchNorm after it (or a re-inserted one): layout, weights, output.
    fn conv_bn(&self, idx: usize) -> Result<(ConvLayer, ConvWeights, String), TrainError> {
        let n = self.node(idx);
        let wname = n
            .input(1)
            .ok_or_else(|| unsupported(format!("{} has no weight", n.describe())))?;
        let wt = self.init(wname).ok_or_else(|| {
            unsupported(format!(
                "{}: weight '{wname}' is not an initializer",
                n.describe()
            ))
        })?;
        if wt.dims.len() != 4 {
            return Err(unsupported(format!(
                "{} is not a 2-D convolution",
                n.describe()
            )));
        }
        let (cout, cin, kh, kw) = (wt.dims[0], wt.dims[1], wt.dims[2], wt.dims[3]);
        if [cout, cin, kh, kw].contains(&0) || kh > MAX_SIZE as usize || kw > MAX_SIZE as usize {
            return Err(unsupported(format!(
                "{}: weight of shape {:?}",
                n.describe(),
                wt.dims
            )));
        }
        if n.attr_i("group").unwrap_or(1) != 1 {
            return Err(unsupported(format!(
                "{} is a grouped convolution",
                n.describe()
            )));
        }
        if n.attr_ints("dilations")
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err(unsupported(format!("{} is dilated", n.describe())));
        }
        if n.attr_s("auto_pad")
            .is_some_and(|p| p != "NOTSET" && !p.is_empty())
        {
            return Err(unsupported(format!(
                "{} uses auto_pad; only explicit pads are supported",
                n.describe()
            )));
        }
        let stride = two(n.attr_ints("strides"), [1, 1], n)?;
        let pads = match n.attr_ints("pads") {
            None => [0; 4],
            Some(p) if p.len() == 4 && p.iter().all(|&v| (0..=MAX_SIZE).contains(&v)) => {
                [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
            }
            Some(p) => {
                return Err(unsupported(format!(
                    "{}: pads {p:?} are not 4 non-negative numbers",
                    n.describe()
                )));
            }
        };
        let weight = self.f32_init(n, 1, "weight")?;
        let bias = match n.input(2) {
            Some(_) => Some(self.f32_init(n, 2, "bias")?),
            None => None,
        };
        if let Some(b) = &bias
            && b.len() != cout
        {
            return Err(unsupported(format!(
                "{}: its bias has {} values for {cout} output channels",
                n.describe(),
                b.len()
            )));
        }
        let out = self.out0(idx)?;
        let cons = self.consumers_of(&out);
        let mut layer = ConvLayer {
            name: String::new(),
            source: node_key(n),
            cin,
            cout,
            kernel: [kh, kw],
            stride: [stride[0] as usize, stride[1] as usize],
            pads,
            bn: BnSource::Kept,
            bn_eps: 1e-5,
        };
        match cons.as_slice() {
            [i] if self.node(*i).op == "BatchNormalization" => {
                let bn_node = self.node(*i);
                let (mut bn, eps) = self.bn_weights(bn_node, cout)?;
                if let Some(b) = bias {
                    // BN(z + b) with mean μ is BN(z) with mean μ − b
                    for (m, b) in bn.mean.iter_mut().zip(b) {
                        *m -= b;
                    }
                }
                layer.bn_eps = eps;
                Ok((layer, ConvWeights { weight, bn }, self.out0(*i)?))
            }
            _ => {
                layer.bn = BnSource::Reinserted;
                let bias = bias.unwrap_or_else(|| vec![0.0; cout]);
                let bn = BnWeights::identity_with_bias(bias, layer.bn_eps);
                Ok((layer, ConvWeights { weight, bn }, out))
            }
        }
    }

    fn bn_weights(&self, n: &Node, c: usize) -> Result<(BnWeights, f64), TrainError> {
        if n.attr_i("training_mode").unwrap_or(0) != 0 {
            return Err(unsupported(format!("{} is in training mode", n.describe())));
        }
        let get = |i, what| -> Result<Vec<f32>, TrainError> {
            let v = self.f32_init(n, i, what)?;
            if v.len() != c {
                return Err(unsupported(format!(
                    "{}: {what} has {} values for {c} channels",
                    n.describe(),
                    v.len()
                )));
            }
            Ok(v)
        };
        let bn = BnWeights {
            gamma: get(1, "scale")?,
            beta: get(2, "bias")?,
            mean: get(3, "mean")?,
            var: get(4, "variance")?,
        };
        Ok((bn, n.attr_f("epsilon").map(f32_to_f64).unwrap_or(1e-5)))
    }

    /// The pooled `[N, C]` value produced by the tail starting at node `first`.
    fn pooled(&self, first: usize) -> Result<String, TrainError> {
        let n = self.node(first);
        let keepdims = match n.op.as_str() {
            "GlobalAveragePool" => true,
            _ => {
                let axes = match n.attr_ints("axes") {
                    Some(a) => a.to_vec(),
                    None => n
                        .input(1)
                        .and_then(|a| self.init(a))
                        .and_then(Tensor::as_i64)
                        .ok_or_else(|| {
                            unsupported(format!("{} reduces over unknown axes", n.describe()))
                        })?,
                };
                let mut axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| if a < 0 { a + 4 } else { a })
                    .collect();
                axes.sort_unstable();
                if axes != [2, 3] {
                    return Err(unsupported(format!(
                        "{} reduces over axes {axes:?}, not the spatial ones",
                        n.describe()
                    )));
                }
                n.attr_i("keepdims").unwrap_or(1) != 0
            }
        };
        let out = self.out0(first)?;
        if !keepdims {
            return Ok(out);
        }
        // `Shape` consumers only compute the target shape of the Reshape
        let cons: Vec<usize> = self
            .consumers_of(&out)
            .into_iter()
            .filter(|&i| self.node(i).op != "Shape")
            .collect();
        match cons.as_slice() {
            [i] if matches!(self.node(*i).op.as_str(), "Flatten" | "Reshape" | "Squeeze") => {
                self.out0(*i)
            }
            _ => Err(unsupported(format!(
                "after the global pooling expected Flatten/Reshape/Squeeze, found [{}]",
                self.describe_all(&cons)
            ))),
        }
    }

    fn classifier_width(&self, i: usize) -> Option<usize> {
        let n = self.node(i);
        match n.op.as_str() {
            "Gemm" => {
                let w = self.init(n.input(1)?)?;
                let trans_b = n.attr_i("transB").unwrap_or(0) != 0;
                Some(if trans_b {
                    *w.dims.first()?
                } else {
                    *w.dims.last()?
                })
            }
            "MatMul" => Some(*self.init(n.input(1)?)?.dims.last()?),
            _ => None,
        }
    }
}

/// The f64 an f32 attribute was written from (`1e-5f32` → `1e-5`, not `9.99999974e-6`).
fn f32_to_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

fn is_passthrough(n: &Node) -> bool {
    n.op == "Identity" || (n.op == "Dropout" && n.outputs.len() == 1)
}

/// A stable key for a node: its name, or its first output when unnamed.
fn node_key(n: &Node) -> String {
    if n.name.is_empty() {
        n.outputs.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// The largest input side, kernel, stride or padding a recognised network may declare.
const MAX_SIZE: i64 = 4096;

fn two(v: Option<&[i64]>, default: [i64; 2], n: &Node) -> Result<[i64; 2], TrainError> {
    match v {
        None if default.iter().all(|&d| d > 0) => Ok(default),
        None => Err(unsupported(format!(
            "{}: a required kernel_shape is missing",
            n.describe()
        ))),
        Some([a, b]) if (1..=MAX_SIZE).contains(a) && (1..=MAX_SIZE).contains(b) => Ok([*a, *b]),
        Some(v) => Err(unsupported(format!(
            "{}: expected two positive values, found {v:?}",
            n.describe()
        ))),
    }
}

fn pool_layout(n: &Node) -> Result<PoolLayout, TrainError> {
    let k = two(n.attr_ints("kernel_shape"), [0, 0], n)?;
    let s = two(n.attr_ints("strides"), [1, 1], n)?;
    if n.attr_i("ceil_mode").unwrap_or(0) != 0
        || n.attr_ints("dilations")
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        || n.attr_s("auto_pad")
            .is_some_and(|p| p != "NOTSET" && !p.is_empty())
    {
        return Err(unsupported(format!(
            "{}: only floor-mode, undilated, explicitly padded max-pooling is supported",
            n.describe()
        )));
    }
    let pads = match n.attr("pads") {
        None => [0; 4],
        Some(Attr::Ints(p)) if p.len() == 4 && p.iter().all(|&v| (0..=MAX_SIZE).contains(&v)) => {
            [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize]
        }
        Some(_) => return Err(unsupported(format!("{}: bad pads", n.describe()))),
    };
    Ok(PoolLayout {
        kernel: [k[0] as usize, k[1] as usize],
        stride: [s[0] as usize, s[1] as usize],
        pads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, Tail, build};

    fn tiny(spec: ResNetSpec) -> ResNetSpec {
        let mut s = spec.for_reid().scaled(0.125);
        s.input_hw = (64, 32);
        s
    }

    #[test]
    fn every_exporter_style_gives_the_spec_layout() {
        for spec in [tiny(ResNetSpec::resnet18()), tiny(ResNetSpec::resnet50())] {
            let want = NetLayout::from_spec(&spec, true);
            for (fuse_bn, tail, opset, identity_weights) in [
                (false, Tail::GapFlatten, 17, false),
                (true, Tail::GapFlatten, 11, true),
                (false, Tail::ReduceMean, 18, false),
                (true, Tail::ReduceMeanShapeChain, 13, true),
            ] {
                let style = Style {
                    fuse_bn,
                    tail,
                    opset,
                    identity_weights,
                };
                let m = build(&spec, Head::BnNeck, style, Init::RandomStats, 1);
                let r = recognise(&m).unwrap();
                let mut got = r.layout.clone();
                for c in std::iter::once(&mut got.stem).chain(
                    got.blocks
                        .iter_mut()
                        .flat_map(|b| b.main.iter_mut().chain(b.downsample.iter_mut())),
                ) {
                    assert_eq!(
                        c.bn,
                        if fuse_bn {
                            BnSource::Reinserted
                        } else {
                            BnSource::Kept
                        }
                    );
                    c.source.clear();
                    c.bn = BnSource::Kept;
                }
                assert_eq!(got, want, "{style:?}");
                assert_eq!(r.weights.convs.len(), want.convs().len());
                assert!(r.weights.neck.is_some());
            }
        }
    }

    #[test]
    fn pruned_widths_features_head_and_classifier_are_read() {
        let mut spec = tiny(ResNetSpec::resnet18());
        spec.inner_widths[0][1] = vec![3];
        spec.inner_widths[2][0] = vec![5];
        spec.stage_widths[1] = 12;
        let m = build(
            &spec,
            Head::Features,
            Style::default(),
            Init::RandomStats,
            2,
        );
        let r = recognise(&m).unwrap();
        assert!(!r.layout.neck);
        assert_eq!(r.layout.blocks[1].main[0].cout, 3);
        assert_eq!(r.layout.blocks[2].cout(), 12);
        assert_eq!(r.layout.blocks[4].main[0].cout, 5);
        let m = build(
            &spec,
            Head::Classifier { classes: 7 },
            Style::default(),
            Init::RandomStats,
            2,
        );
        assert_eq!(recognise(&m).unwrap().ignored_classifier, Some(7));
    }

    #[test]
    fn fused_bn_is_reinserted_at_the_identity() {
        let spec = tiny(ResNetSpec::resnet18());
        let style = Style {
            fuse_bn: true,
            ..Style::default()
        };
        let m = build(&spec, Head::BnNeck, style, Init::RandomStats, 3);
        let r = recognise(&m).unwrap();
        let bias_name = m.graph.nodes[0].inputs[2].clone();
        let bias = m.graph.initializers[&bias_name].f32_data().unwrap();
        let bn = &r.weights.convs[0].bn;
        assert_eq!(bn.beta, bias);
        assert!(bn.gamma.iter().all(|&g| g == 1.0) && bn.mean.iter().all(|&m| m == 0.0));
        assert!(
            bn.var
                .iter()
                .all(|&v| ((v as f64) + 1e-5 - 1.0).abs() < 1e-7)
        );
    }

    #[test]
    fn non_resnets_are_refused_with_a_reason() {
        let spec = tiny(ResNetSpec::resnet18());
        let mut m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 4);
        // turn the first residual Add into a Mul: no longer a ResNet block
        let add = m.graph.nodes.iter_mut().find(|n| n.op == "Add").unwrap();
        add.op = "Mul".into();
        let e = recognise(&m).unwrap_err().to_string();
        assert!(e.contains("Mul") || e.contains("residual"), "{e}");
    }
}
