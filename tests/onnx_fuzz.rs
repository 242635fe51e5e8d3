//! A hostile or broken ONNX file must be refused with an error, never crash the process: the
//! reader runs on files users upload (`model info`, `prune`, `eval`, `retune`, the model registry
//! behind `GET /api/v1/models`).
//!
//! A seeded, bounded property test: real models (ResNets written by crosscam's own builder in
//! several exporter styles, a small graph using the shape-computing ops exporters emit, and the
//! bundled MobileNetV2) are mutated — mostly structurally, on the decoded protobuf (dimensions
//! set to 0, negative or huge, attributes removed or resized, zero strides, short `Slice`
//! operands, rank-1 `Gemm` inputs, ops swapped, inputs dropped, names colliding), sometimes as
//! bytes (truncated, flipped) — and every entry point that reads an untrusted model runs inside
//! `catch_unwind`. The test fails on the first panic, naming the seed and the mutations.
//!
//! Bounds: `ONNX_FUZZ_CASES` mutated models (default 3000) or `ONNX_FUZZ_SECONDS` (default 40),
//! whichever comes first; `ONNX_FUZZ_SEED` picks another sequence.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crosscam::onnx::proto::{self, attr_type, data_type};
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, Tail, build};
use crosscam::onnx::{Attr, Dim, Graph, Model, Node, Tensor, ValueInfo, info};
use crosscam::prune::criteria::WeightScorer;
use crosscam::prune::{self, Criterion, NoRetune, PruneOptions, Target, WidthPolicy};
use prost::Message;

/// xorshift64*: small, seeded, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    /// Integers that break shape arithmetic: zero, negatives, the limits, and a few plain ones.
    fn nasty(&mut self) -> i64 {
        *self.pick(&[
            0,
            -1,
            -2,
            1,
            2,
            3,
            7,
            -7,
            1 << 20,
            1 << 31,
            1 << 33,
            1 << 40,
            1 << 62,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
            -(1 << 40),
        ])
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A graph of the shape-computing and layout ops that exporters write around conv nets
/// (`Shape → Slice → Concat → Reshape`, `Split`, `Pad`, `Tile`, `ConvTranspose`, `DepthToSpace`,
/// `MatMul`, `Gemm`), so that their inference is mutated too. Input [N, 4, 8, 8], output [N, 10].
fn zoo() -> Model {
    let mut g = Graph::default();
    let f = |dims: &[usize]| {
        let n: usize = dims.iter().product();
        Tensor::f32(
            dims.to_vec(),
            (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.05).collect(),
        )
    };
    let ints = |v: &[i64]| Tensor::i64(vec![v.len()], v.to_vec());
    let inits: Vec<(&str, Tensor)> = vec![
        ("w", f(&[8, 4, 3, 3])),
        ("b", f(&[8])),
        ("wt", f(&[8, 4, 2, 2])),
        ("s.starts", ints(&[0])),
        ("s.ends", ints(&[2])),
        ("s.axes", ints(&[0])),
        ("s.steps", ints(&[1])),
        ("minus1", ints(&[-1])),
        ("split", ints(&[32, 32])),
        ("pads", ints(&[0, 0, 1, 0, 0, 1])),
        ("reps", ints(&[1, 1, 2])),
        ("wm", f(&[4, 6])),
        ("wg", f(&[408, 10])),
        ("bg", f(&[10])),
        ("axes23", ints(&[2, 3])),
    ];
    for (k, t) in inits {
        g.initializers.insert(k.into(), t);
    }
    let ints_attr = |v: &[i64]| Attr::Ints(v.to_vec());
    g.nodes = vec![
        Node::new("Conv", "conv", &["x", "w", "b"], &["c"])
            .with_attr("kernel_shape", ints_attr(&[3, 3]))
            .with_attr("strides", ints_attr(&[1, 1]))
            .with_attr("dilations", ints_attr(&[1, 1]))
            .with_attr("pads", ints_attr(&[1, 1, 1, 1])),
        Node::new("Relu", "relu", &["c"], &["cr"]),
        Node::new("ConvTranspose", "deconv", &["cr", "wt"], &["ct"])
            .with_attr("kernel_shape", ints_attr(&[2, 2]))
            .with_attr("strides", ints_attr(&[2, 2])),
        Node::new("MaxPool", "pool", &["ct"], &["mp"])
            .with_attr("kernel_shape", ints_attr(&[2, 2]))
            .with_attr("strides", ints_attr(&[2, 2])),
        Node::new("SpaceToDepth", "s2d", &["mp"], &["sd"]).with_attr("blocksize", Attr::Int(2)),
        Node::new("DepthToSpace", "d2s", &["sd"], &["ds"]).with_attr("blocksize", Attr::Int(2)),
        Node::new("Shape", "shape", &["ds"], &["sh"]),
        Node::new(
            "Slice",
            "slice",
            &["sh", "s.starts", "s.ends", "s.axes", "s.steps"],
            &["nc"],
        ),
        Node::new("Concat", "concat", &["nc", "minus1"], &["target"])
            .with_attr("axis", Attr::Int(0)),
        Node::new("Reshape", "reshape", &["ds", "target"], &["r"]),
        Node::new("Split", "split", &["r", "split"], &["r0", "r1"]).with_attr("axis", Attr::Int(2)),
        Node::new("Add", "add", &["r0", "r1"], &["a"]),
        Node::new("Pad", "pad", &["a", "pads"], &["p"]),
        Node::new("Tile", "tile", &["p", "reps"], &["t"]),
        Node::new("Transpose", "transpose", &["t"], &["tr"])
            .with_attr("perm", ints_attr(&[0, 2, 1])),
        Node::new("MatMul", "matmul", &["tr", "wm"], &["mm"]),
        Node::new("Flatten", "flatten", &["mm"], &["fl"]).with_attr("axis", Attr::Int(1)),
        Node::new("Gemm", "fc", &["fl", "wg", "bg"], &["y"]),
        // a side branch of reductions, so reduce / squeeze inference is mutated too
        Node::new("ReduceMean", "mean", &["c", "axes23"], &["m"])
            .with_attr("keepdims", Attr::Int(1)),
        Node::new("Squeeze", "squeeze", &["m", "axes23"], &["msq"]),
    ];
    g.inputs.push(ValueInfo {
        name: "x".into(),
        elem_type: data_type::FLOAT,
        shape: Some(vec![
            Dim::Named("N".into()),
            Dim::Fixed(4),
            Dim::Fixed(8),
            Dim::Fixed(8),
        ]),
    });
    for (name, d) in [("y", 10), ("msq", 8)] {
        g.outputs.push(ValueInfo {
            name: name.into(),
            elem_type: data_type::FLOAT,
            shape: Some(vec![Dim::Named("N".into()), Dim::Fixed(d)]),
        });
    }
    Model {
        ir_version: 8,
        opset: 18,
        other_opsets: vec![],
        producer_name: "onnx_fuzz".into(),
        producer_version: String::new(),
        metadata: vec![],
        graph: g,
    }
}

/// The models mutated: name and encoded bytes.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.25)
        .with_input(64, 32);
    let mut out = vec![("zoo".to_string(), zoo().to_bytes())];
    let styles = [
        (
            "resnet-fused-classifier",
            Head::Classifier { classes: 10 },
            Style {
                fuse_bn: true,
                ..Style::default()
            },
        ),
        (
            "resnet-shape-chain",
            Head::BnNeck,
            Style {
                tail: Tail::ReduceMeanShapeChain,
                opset: 13,
                identity_weights: true,
                fuse_bn: false,
            },
        ),
        (
            "resnet-opset18",
            Head::Features,
            Style {
                tail: Tail::ReduceMean,
                opset: 18,
                identity_weights: false,
                fuse_bn: true,
            },
        ),
    ];
    for (name, head, style) in styles {
        out.push((
            name.to_string(),
            build(&spec, head, style, Init::RandomStats, 7).to_bytes(),
        ));
    }
    let bundled = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/mobilenetv2-imagenet.onnx"
    );
    if let Ok(b) = std::fs::read(bundled) {
        out.push(("mobilenetv2-imagenet".to_string(), b));
    }
    out
}

const OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Slice",
    "Split",
    "Concat",
    "Reshape",
    "Flatten",
    "Pad",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "MaxPool",
    "GlobalAveragePool",
    "ReduceMean",
    "Squeeze",
    "Unsqueeze",
    "Gather",
    "Expand",
    "ConstantOfShape",
    "Range",
    "TopK",
    "Resize",
    "Transpose",
    "Shape",
    "Size",
    "Constant",
    "Add",
    "BatchNormalization",
    "Identity",
];

const WINDOW_ATTRS: &[&str] = &[
    "strides",
    "pads",
    "dilations",
    "kernel_shape",
    "output_padding",
    "output_shape",
    "perm",
    "axes",
    "split",
    "starts",
    "ends",
];

fn ints_attr(name: &str, v: Vec<i64>) -> proto::AttributeProto {
    proto::AttributeProto {
        name: Some(name.into()),
        r#type: Some(attr_type::INTS),
        ints: v,
        ..Default::default()
    }
}

fn int_tensor(name: &str, v: Vec<i64>) -> proto::TensorProto {
    proto::TensorProto {
        dims: vec![v.len() as i64],
        data_type: Some(data_type::INT64),
        int64_data: v,
        name: Some(name.into()),
        ..Default::default()
    }
}

/// One structural mutation of the decoded model; returns what it did.
fn mutate(p: &mut proto::ModelProto, rng: &mut Rng, uid: &mut usize) -> String {
    let Some(g) = p.graph.as_mut() else {
        return "no graph".into();
    };
    *uid += 1;
    let fresh = format!("fuzz.{uid}");
    let nn = g.node.len();
    match rng.below(14) {
        // a dimension of an initializer
        0 if !g.initializer.is_empty() => {
            let i = rng.below(g.initializer.len());
            let t = &mut g.initializer[i];
            let v = rng.nasty();
            match rng.below(3) {
                0 if !t.dims.is_empty() => {
                    let k = rng.below(t.dims.len());
                    t.dims[k] = v;
                }
                1 => t.dims.push(v),
                _ => {
                    t.dims.pop();
                }
            }
            format!("initializer {:?} dims → {:?}", t.name, t.dims)
        }
        // a declared input dimension
        1 if !g.input.is_empty() => {
            let i = rng.below(g.input.len());
            let v = rng.nasty();
            let shape = g.input[i]
                .r#type
                .as_mut()
                .and_then(|t| t.tensor_type.as_mut())
                .and_then(|t| t.shape.as_mut());
            match shape {
                Some(s) if !s.dim.is_empty() && rng.below(4) > 0 => {
                    let k = rng.below(s.dim.len());
                    s.dim[k] = proto::Dimension {
                        dim_value: Some(v),
                        ..Default::default()
                    };
                    format!("input {i} dim {k} → {v}")
                }
                Some(s) => {
                    s.dim.truncate(rng.below(s.dim.len() + 1));
                    format!("input {i} rank → {}", s.dim.len())
                }
                None => "input without shape".into(),
            }
        }
        // an attribute removed
        2 if nn > 0 => {
            let n = &mut g.node[rng.below(nn)];
            if n.attribute.is_empty() {
                return "no attribute to remove".into();
            }
            let a = n.attribute.remove(rng.below(n.attribute.len()));
            format!("{:?}: attribute {:?} removed", n.name, a.name)
        }
        // a window attribute resized or set to zero / nasty values
        3 | 4 if nn > 0 => {
            let n = &mut g.node[rng.below(nn)];
            let name = *rng.pick(WINDOW_ATTRS);
            let len = *rng.pick(&[0usize, 1, 2, 3, 4, 5, 6]);
            let zero = rng.below(3) == 0;
            let v: Vec<i64> = (0..len)
                .map(|_| if zero { 0 } else { rng.nasty() })
                .collect();
            n.attribute.retain(|a| a.name.as_deref() != Some(name));
            n.attribute.push(ints_attr(name, v.clone()));
            format!("{:?}: {name} = {v:?}", n.name)
        }
        // an integer attribute (group, axis, blocksize, …) set to a nasty value
        5 if nn > 0 => {
            let n = &mut g.node[rng.below(nn)];
            let name = *rng.pick(&[
                "group",
                "axis",
                "blocksize",
                "num_outputs",
                "transA",
                "transB",
                "keepdims",
                "start",
                "end",
                "k",
                "allowzero",
                "to",
            ]);
            let v = rng.nasty();
            n.attribute.retain(|a| a.name.as_deref() != Some(name));
            n.attribute.push(proto::AttributeProto {
                name: Some(name.into()),
                r#type: Some(attr_type::INT),
                i: Some(v),
                ..Default::default()
            });
            format!("{:?}: {name} = {v}", n.name)
        }
        // a node turned into another op (keeping its inputs and outputs)
        6 if nn > 0 => {
            let n = &mut g.node[rng.below(nn)];
            let op = *rng.pick(OPS);
            let before = n.op_type.replace(op.to_string());
            format!("{:?}: {before:?} → {op}", n.name)
        }
        // a Slice with short or empty starts / ends / axes / steps
        7 if nn > 0 => {
            let i = rng.below(nn);
            let x = g.node[i].input.first().cloned().unwrap_or_default();
            let mut inputs = vec![x];
            for part in ["starts", "ends", "axes", "steps"] {
                if rng.below(5) == 0 {
                    break;
                }
                let len = rng.below(4);
                let v: Vec<i64> = (0..len).map(|_| rng.nasty()).collect();
                let name = format!("{fresh}.{part}");
                g.initializer.push(int_tensor(&name, v));
                inputs.push(name);
            }
            let n = &mut g.node[i];
            n.op_type = Some("Slice".into());
            n.input = inputs.clone();
            n.attribute.clear();
            format!("{:?} → Slice{inputs:?}", n.name)
        }
        // a Gemm (or MatMul) reading a rank-1 or rank-0 weight
        8 if nn > 0 => {
            let i = rng.below(nn);
            let x = g.node[i].input.first().cloned().unwrap_or_default();
            let rank = rng.below(2);
            let dims: Vec<i64> = (0..rank).map(|_| 4).collect();
            let count = if rank == 0 { 1 } else { 4 };
            g.initializer.push(proto::TensorProto {
                dims,
                data_type: Some(data_type::FLOAT),
                float_data: vec![0.5; count],
                name: Some(fresh.clone()),
                ..Default::default()
            });
            let n = &mut g.node[i];
            n.op_type = Some(
                rng.pick(&["Gemm", "MatMul", "Conv", "ConvTranspose"])
                    .to_string(),
            );
            n.input = vec![x.clone(), fresh.clone()];
            if rng.below(2) == 0 {
                // a rank-1 data input as well
                n.input[0] = fresh.clone();
            }
            format!("{:?} → {:?} with a rank-{rank} operand", n.name, n.op_type)
        }
        // inputs or outputs of a node dropped
        9 if nn > 0 => {
            let n = &mut g.node[rng.below(nn)];
            if rng.below(2) == 0 {
                let k = rng.below(n.input.len() + 1);
                n.input.truncate(k);
                format!("{:?}: inputs truncated to {k}", n.name)
            } else {
                let k = rng.below(n.output.len() + 1);
                n.output.truncate(k);
                format!("{:?}: outputs truncated to {k}", n.name)
            }
        }
        // a node output renamed onto an existing value
        10 if nn > 1 => {
            let a = rng.below(nn);
            let b = rng.below(nn);
            let target = g.node[a].output.first().cloned().unwrap_or_default();
            if let Some(o) = g.node[b].output.first_mut() {
                *o = target.clone();
            }
            format!("node {b} now writes {target:?}")
        }
        // an initializer's type or data changed
        11 if !g.initializer.is_empty() => {
            let i = rng.below(g.initializer.len());
            let t = &mut g.initializer[i];
            match rng.below(3) {
                0 => {
                    let dt = *rng.pick(&[0, 1, 2, 6, 7, 8, 9, 10, 16, 21, 99, -1]);
                    t.data_type = Some(dt);
                    format!("initializer {:?} type → {dt}", t.name)
                }
                1 => {
                    if let Some(r) = t.raw_data.as_mut() {
                        r.truncate(rng.below(r.len() + 1));
                    }
                    t.float_data.clear();
                    format!("initializer {:?} data truncated", t.name)
                }
                _ => {
                    t.dims = vec![0, rng.nasty()];
                    t.raw_data = Some(vec![]);
                    t.float_data.clear();
                    format!("initializer {:?} emptied, dims {:?}", t.name, t.dims)
                }
            }
        }
        // two nodes swapped (order broken)
        12 if nn > 1 => {
            let (a, b) = (rng.below(nn), rng.below(nn));
            g.node.swap(a, b);
            format!("nodes {a} and {b} swapped")
        }
        // a Constant node with a nasty value feeding a node's second input
        _ if nn > 0 => {
            let i = rng.below(nn);
            let len = rng.below(5);
            let v: Vec<i64> = (0..len).map(|_| rng.nasty()).collect();
            let c = proto::NodeProto {
                input: vec![],
                output: vec![fresh.clone()],
                name: Some(fresh.clone()),
                op_type: Some("Constant".into()),
                attribute: vec![proto::AttributeProto {
                    name: Some("value".into()),
                    r#type: Some(attr_type::TENSOR),
                    t: Some(int_tensor("", v.clone())),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let n = &mut g.node[i];
            if n.input.len() < 2 {
                n.input.resize(2, String::new());
            }
            n.input[1] = fresh.clone();
            let name = n.name.clone();
            g.node.insert(i, c);
            format!("{name:?}: input 1 = Constant {v:?}")
        }
        _ => "nothing to mutate".into(),
    }
}

/// What a product path made of the model: parsed, and then how far it got.
#[derive(Default)]
struct Tally {
    parsed: usize,
    refused_at_parse: usize,
    info_ok: usize,
    pruned: usize,
}

/// Every entry point that reads an untrusted model. Errors are fine; panics are not (the caller
/// catches them).
fn exercise(bytes: &[u8], tally: &mut Tally) {
    let model = match Model::from_bytes(bytes) {
        Ok(m) => m,
        Err(e) => {
            // an error, and a readable one
            assert!(!e.to_string().is_empty());
            tally.refused_at_parse += 1;
            return;
        }
    };
    tally.parsed += 1;
    // `model info` (also what the registry lists for `GET /api/v1/models`)
    if let Ok(i) = info::describe(model.clone(), "fuzz.onnx", None) {
        let _ = info::render(&i);
        tally.info_ok += 1;
    }
    let _ = info::describe(model.clone(), "fuzz.onnx", Some(&[3, 64, 32]));
    // `eval` / `serve`: what an embedder reads from the model
    let _ = crosscam::reid::EmbedderSpec::from_model(&model);
    // `retune`: the model cost and the network the trainer recognises
    let _ = crosscam::train::scenario::model_cost(&model);
    let _ = crosscam::train::recognise::recognise(&model);
    // `prune`: import, analysis, scoring, planning, slicing, re-inference, report
    let mut opts = PruneOptions::new(Target::Ratio(0.5));
    opts.widths = WidthPolicy {
        min_channels: 1,
        multiple: 1,
    };
    let mut scorer = WeightScorer {
        criterion: Criterion::L1,
    };
    if let Ok(p) = prune::prune(&model, &opts, &mut scorer, &mut NoRetune) {
        tally.pruned += 1;
        // what `prune` writes must read back
        Model::from_bytes(&p.model.to_bytes()).expect("a pruned model reads back");
    }
}

#[test]
fn mutated_models_are_refused_without_panicking() {
    let cases = env_num("ONNX_FUZZ_CASES", 3000);
    let budget = Duration::from_secs(env_num("ONNX_FUZZ_SECONDS", 40));
    let seed = env_num("ONNX_FUZZ_SEED", 0x5EED_0F0A);
    let corpus = corpus();
    let protos: Vec<proto::ModelProto> = corpus
        .iter()
        .map(|(name, b)| {
            proto::ModelProto::decode(b.as_slice()).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .collect();
    // the unmutated models go through every path cleanly
    let mut tally = Tally::default();
    for (name, b) in &corpus {
        exercise(b, &mut tally);
        assert!(
            Model::from_bytes(b).is_ok(),
            "{name} does not parse before mutation"
        );
    }
    assert_eq!(tally.parsed, corpus.len());
    assert!(tally.pruned >= 3, "only {} models pruned", tally.pruned);

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut panics: Vec<String> = Vec::new();
    let mut uid = 0;
    let mut done = 0u64;
    let mut rng = Rng(seed | 1);
    // panics are collected below with their case; the default hook would print each one again
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    while done < cases && started.elapsed() < budget {
        let case_seed = rng.next();
        let mut r = Rng(case_seed | 1);
        // the large bundled model only in one case of eight: it costs the most per case
        let k = if corpus.len() > 4 && r.below(8) != 0 {
            r.below(4)
        } else {
            r.below(corpus.len())
        };
        let (name, bytes) = &corpus[k];
        let mut what = vec![name.clone()];
        let mutated: Vec<u8> = match r.below(10) {
            // byte-level: truncation or flips
            0 => {
                let cut = r.below(bytes.len());
                what.push(format!("truncated at {cut}"));
                bytes[..cut].to_vec()
            }
            1 => {
                let mut b = bytes.clone();
                for _ in 0..1 + r.below(8) {
                    let at = r.below(b.len());
                    b[at] ^= 1 << r.below(8);
                    what.push(format!("bit flipped at {at}"));
                }
                b
            }
            _ => {
                let mut p = protos[k].clone();
                for _ in 0..1 + r.below(3) {
                    what.push(mutate(&mut p, &mut r, &mut uid));
                }
                p.encode_to_vec()
            }
        };
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&mutated, &mut tally)));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!(
                "case seed {case_seed:#x} ({}): {msg}",
                what.join("; ")
            ));
        }
        done += 1;
    }
    std::panic::set_hook(hook);
    eprintln!(
        "onnx_fuzz: {done} mutated models in {:.1}s: {} parsed ({} refused at parse), {} described, {} pruned",
        started.elapsed().as_secs_f64(),
        tally.parsed,
        tally.refused_at_parse,
        tally.info_ok,
        tally.pruned
    );
    assert!(
        panics.is_empty(),
        "{} of {done} mutated models made crosscam panic:\n{}",
        panics.len(),
        panics.join("\n")
    );
    assert!(
        done >= 50,
        "only {done} mutated models ran in the time budget"
    );
}

/// The stricter reader (single assignment, bounded dimensions, checked raw data) still reads
/// every bundled model, and `model info` still describes each one completely.
#[test]
fn every_bundled_model_passes_the_reader_checks() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("onnx") {
            continue;
        }
        let i = info::model_info(&path, None).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            i.macs_complete && i.macs > 0,
            "{}: {:?}",
            i.file,
            i.shape_gap
        );
        seen += 1;
    }
    assert!(seen >= 3, "only {seen} bundled models");
}
