//! The graph side of static int8 quantisation: which nodes and tensors are quantised (and why the
//! others stay float), and the rewrite into QDQ form once the activation ranges are known.
//!
//! QDQ form is what ONNX Runtime's graph optimiser turns into integer kernels: a
//! `DequantizeLinear → op → QuantizeLinear` group whose inputs are all dequantised and whose only
//! output goes into one `QuantizeLinear` becomes `QLinearConv`, `QLinearMatMul` / `QGemm`,
//! `QLinearAdd`, `QLinearConcat`, `QLinearLeakyRelu`, … ; data-movement ops (`MaxPool`, `Reshape`,
//! `Transpose`, …) whose input and output share one scale run on the uint8 values directly.
//! So the rules here are:
//! - Conv / Gemm / MatMul with a constant weight: per-channel symmetric int8 weights (zero point
//!   0, `DequantizeLinear` with `axis`), bias as int32 with scale `s_x · s_w[c]`, activation input
//!   and output quantised;
//! - ops with an integer kernel (Add, Mul, Concat, LeakyRelu, Sigmoid, GlobalAveragePool,
//!   AveragePool): every input and the output quantised;
//! - data-movement ops after a quantised tensor: output quantised with the input's scale;
//! - a `Relu` (or `Clip(0, max)`) right after a quantised op is removed: the output
//!   `QuantizeLinear`, whose range starts at 0, clamps the negatives away by itself;
//! - a `Pad` (constant zeros on H and W) feeding only Convs is folded into their `pads` first;
//! - everything else stays float between a `DequantizeLinear` and a `QuantizeLinear`, and is
//!   listed with the reason.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::onnx::{Attr, Model, Node, Tensor, TensorData};

/// Activation element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ActType {
    /// uint8, asymmetric (zero point anywhere in 0..=255): what ONNX Runtime's x86 kernels prefer.
    Uint8,
    /// int8, asymmetric (zero point in -128..=127).
    Int8,
}

#[derive(Debug, Clone)]
pub struct QdqOptions {
    pub activations: ActType,
    /// Weights in 7 bits (−63..=63) instead of 8: avoids the 16-bit saturation of the
    /// `vpmaddubsw` path of CPUs without VNNI (AVX2, plain AVX-512).
    pub reduce_range: bool,
    /// Op types the user wants kept float.
    pub float_ops: HashSet<String>,
}

impl Default for QdqOptions {
    fn default() -> Self {
        QdqOptions {
            activations: ActType::Uint8,
            reduce_range: false,
            float_ops: HashSet::new(),
        }
    }
}

/// A node left in float, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FloatNode {
    pub node: String,
    pub op: String,
    pub reason: String,
}

/// What kind of handling an op type gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Conv, Gemm, MatMul: weights and activations.
    Weighted,
    /// Integer kernel on activations only: all inputs and the output quantised.
    Compute,
    /// Runs on the quantised values unchanged: output shares the input's scale.
    Movement,
    /// Relu / Clip: removed after a quantised op.
    Activation,
    Other,
}

fn kind(op: &str) -> Kind {
    match op {
        "Conv" | "Gemm" | "MatMul" => Kind::Weighted,
        "Add" | "Mul" | "Concat" | "LeakyRelu" | "Sigmoid" | "GlobalAveragePool"
        | "AveragePool" => Kind::Compute,
        "MaxPool" | "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" | "Resize" => {
            Kind::Movement
        }
        "Relu" | "Clip" => Kind::Activation,
        _ => Kind::Other,
    }
}

/// The decisions for one model, before calibration.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Quantised nodes by name (index into the prepared graph).
    pub quantized: Vec<usize>,
    /// Activation tensors that get a QuantizeLinear (each needs a calibrated range, unless it
    /// shares one through `shared`).
    pub tensors: Vec<String>,
    /// Output of a data-movement op → the tensor whose scale it reuses.
    pub shared: HashMap<String, String>,
    /// Removed Relu/Clip nodes: (index, its input, its output, upper clamp).
    pub removed: Vec<(usize, String, String, Option<f32>)>,
    pub float_nodes: Vec<FloatNode>,
    /// `Pad` nodes folded into the convs after them.
    pub folded_pads: usize,
    /// Tensors whose range the op fixes (Sigmoid: [0, 1]): used instead of a calibrated one, so
    /// that no method clips a score.
    pub fixed_ranges: HashMap<String, (f32, f32)>,
}

impl Plan {
    /// Tensors whose range must be measured (every quantised one that does not borrow a scale).
    pub fn calibrated(&self) -> Vec<String> {
        self.tensors
            .iter()
            .filter(|t| !self.shared.contains_key(*t))
            .cloned()
            .collect()
    }
    pub fn quantized_ops(&self, m: &Model) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for &i in &self.quantized {
            *c.entry(m.graph.nodes[i].op.clone()).or_insert(0) += 1;
        }
        c
    }
}

/// Why a model cannot be quantised at all.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(
        "the model imports opset {0}: per-channel DequantizeLinear needs opset 13 or later — re-export it with opset_version=13 or newer (torch.onnx.export(..., opset_version=17))"
    )]
    Opset(i64),
    #[error(
        "nothing to quantise: the model has no Conv, Gemm or MatMul with constant weights ({0}); int8 quantisation speeds up those layers only, so this model stays float"
    )]
    NothingToQuantize(String),
    #[error("the model is already quantised (it has {0} nodes); quantise the float model instead")]
    AlreadyQuantized(String),
    #[error("{0}")]
    Invalid(String),
}

fn is_const(m: &Model, name: &str) -> bool {
    m.graph.initializers.contains_key(name)
}

fn float_initializer<'a>(m: &'a Model, name: &str) -> Option<&'a Tensor> {
    m.graph
        .initializers
        .get(name)
        .filter(|t| matches!(t.data, TensorData::F32(_)))
}

/// Folds `Pad` (constant mode, zero value, spatial dims only) into every Conv that reads it, when
/// only Convs read it: ONNX Runtime would do the same, but only while no QDQ pair sits in between.
pub fn fold_pads(m: &mut Model) -> usize {
    let mut folded = 0;
    let consumers: HashMap<String, Vec<usize>> = m
        .graph
        .consumers()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut remove = Vec::new();
    for (pi, pad) in m.graph.nodes.iter().enumerate() {
        if pad.op != "Pad" || pad.outputs.len() != 1 || m.graph.is_graph_output(&pad.outputs[0]) {
            continue;
        }
        let mode = pad.attr_s("mode").unwrap_or_else(|| "constant".into());
        if mode != "constant" {
            continue;
        }
        // pads: attribute (opset < 11) or constant input 1; value: input 2 (or attribute)
        let pads: Option<Vec<i64>> = match pad.input(1) {
            Some(p) => m.graph.initializers.get(p).and_then(Tensor::as_i64),
            None => pad.attr_ints("pads").map(<[i64]>::to_vec),
        };
        let Some(pads) = pads else { continue };
        let value = match pad.input(2) {
            Some(v) => match m.graph.initializers.get(v).and_then(|t| t.as_f32()) {
                Some(x) if x.len() == 1 => x[0],
                _ => continue,
            },
            None => pad.attr_f("value").unwrap_or(0.0),
        };
        if value != 0.0 || pad.input(3).is_some() || pads.len() != 8 {
            continue;
        }
        // NCHW: no padding of N and C, none negative
        if pads[0] != 0
            || pads[1] != 0
            || pads[4] != 0
            || pads[5] != 0
            || pads.iter().any(|&p| p < 0)
        {
            continue;
        }
        let Some(users) = consumers.get(&pad.outputs[0]) else {
            continue;
        };
        let all_conv = users.iter().all(|&u| {
            let n = &m.graph.nodes[u];
            n.op == "Conv"
                && n.inputs.first() == Some(&pad.outputs[0])
                && n.attr_s("auto_pad").is_none_or(|a| a == "NOTSET")
        });
        if !all_conv {
            continue;
        }
        remove.push((pi, pads, users.clone()));
    }
    for (pi, pads, users) in &remove {
        let src = m.graph.nodes[*pi].inputs[0].clone();
        for &u in users {
            let n = &mut m.graph.nodes[u];
            let old = n
                .attr_ints("pads")
                .map(<[i64]>::to_vec)
                .unwrap_or(vec![0; 4]);
            if old.len() != 4 {
                continue;
            }
            // ONNX pads: [x1_begin, x2_begin, x1_end, x2_end]; Pad's: [n,c,h,w begins, n,c,h,w ends]
            let new = vec![
                old[0] + pads[2],
                old[1] + pads[3],
                old[2] + pads[6],
                old[3] + pads[7],
            ];
            n.set_attr("pads", Attr::Ints(new));
            n.inputs[0] = src.clone();
        }
        folded += 1;
    }
    if folded > 0 {
        m.graph.remove_dead();
    }
    folded
}

/// Decides what is quantised in `m` (already prepared: constants folded, pads folded).
pub fn plan(m: &Model, opts: &QdqOptions) -> Result<Plan, QuantizeError> {
    if m.opset < 13 {
        return Err(QuantizeError::Opset(m.opset));
    }
    let already: Vec<&str> = m
        .graph
        .nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op.as_str(),
                "QuantizeLinear" | "DequantizeLinear" | "QLinearConv" | "QLinearMatMul"
            )
        })
        .map(|n| n.op.as_str())
        .collect();
    if let Some(op) = already.first() {
        return Err(QuantizeError::AlreadyQuantized(op.to_string()));
    }
    let g = &m.graph;
    let consumers = g.consumers();
    let producers = g.producers();
    let mut p = Plan::default();
    let mut in_t: HashSet<String> = HashSet::new();
    let mut tensors: Vec<String> = Vec::new();
    let add = |t: &str, in_t: &mut HashSet<String>, tensors: &mut Vec<String>| {
        if in_t.insert(t.to_string()) {
            tensors.push(t.to_string());
        }
    };
    let mut quantized: HashSet<usize> = HashSet::new();
    let mut reasons: HashMap<usize, String> = HashMap::new();
    let mut weighted = 0usize;
    let ints = integer_values(m);

    // pass 1: nodes with integer kernels
    for (i, n) in g.nodes.iter().enumerate() {
        let k = kind(&n.op);
        if !n.domain.is_empty() && n.domain != "ai.onnx" {
            reasons.insert(i, format!("op of domain '{}'", n.domain));
            continue;
        }
        if !matches!(k, Kind::Weighted | Kind::Compute) {
            continue;
        }
        if opts.float_ops.contains(&n.op) {
            reasons.insert(i, "kept float by --float-ops".into());
            continue;
        }
        let out = &n.outputs[0];
        if n.outputs.len() != 1 || g.is_graph_output(out) {
            reasons.insert(
                i,
                "its output is a model output (kept float so the model's outputs stay exact)"
                    .into(),
            );
            continue;
        }
        let acts: Vec<&str> = match k {
            Kind::Weighted => {
                let why = weighted_check(m, n);
                if let Err(why) = why {
                    reasons.insert(i, why);
                    continue;
                }
                vec![n.inputs[0].as_str()]
            }
            _ => {
                let data: Vec<&str> = match n.op.as_str() {
                    // only the data input; the others are parameters
                    "LeakyRelu" | "Sigmoid" | "GlobalAveragePool" | "AveragePool" => {
                        vec![n.inputs[0].as_str()]
                    }
                    _ => n.inputs.iter().map(String::as_str).collect(),
                };
                if data.iter().any(|d| ints.contains(*d)) {
                    reasons.insert(i, "works on integer values (shape arithmetic)".into());
                    continue;
                }
                if data.iter().any(|d| d.is_empty() || is_const(m, d)) {
                    reasons.insert(
                        i,
                        "an input is a constant (quantised only between two activations)".into(),
                    );
                    continue;
                }
                data
            }
        };
        for a in acts {
            add(a, &mut in_t, &mut tensors);
        }
        add(out, &mut in_t, &mut tensors);
        if n.op == "Sigmoid" {
            p.fixed_ranges.insert(out.clone(), (0.0, 1.0));
        }
        quantized.insert(i);
        if k == Kind::Weighted {
            weighted += 1;
        }
    }
    if weighted == 0 {
        let why = if reasons.is_empty() {
            let ops: BTreeMap<&str, usize> = g.nodes.iter().fold(BTreeMap::new(), |mut a, n| {
                *a.entry(n.op.as_str()).or_insert(0) += 1;
                a
            });
            format!(
                "its ops: {}",
                ops.iter()
                    .map(|(o, c)| format!("{o}×{c}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        } else {
            let mut w: Vec<String> = g
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| kind(&n.op) == Kind::Weighted)
                .filter_map(|(i, n)| reasons.get(&i).map(|r| format!("{}: {r}", n.describe())))
                .collect();
            if w.is_empty() {
                w.push("no Conv, Gemm or MatMul at all".into());
            }
            w.truncate(3);
            w.join("; ")
        };
        return Err(QuantizeError::NothingToQuantize(why));
    }

    // pass 2, in graph order: Relu/Clip after a quantised op are removed; data movement after a
    // quantised tensor runs on it
    let mut renamed: HashMap<String, String> = HashMap::new(); // producer output → relu output
    for (i, n) in g.nodes.iter().enumerate() {
        match kind(&n.op) {
            Kind::Activation => {
                let Some(x) = n.inputs.first() else { continue };
                let only_user = consumers.get(x.as_str()).is_some_and(|c| c.len() == 1);
                let prod = producers.get(x.as_str()).copied();
                let clamp = match n.op.as_str() {
                    "Relu" => Some(None),
                    _ => clip_bounds(m, n).and_then(|(lo, hi)| (lo == 0.0).then_some(Some(hi))),
                };
                let ok = only_user
                    && prod.is_some_and(|pi| quantized.contains(&pi))
                    && !g.is_graph_output(x)
                    && !g.is_graph_output(&n.outputs[0])
                    && !opts.float_ops.contains(&n.op)
                    && !renamed.contains_key(x.as_str());
                match (ok, clamp) {
                    (true, Some(hi)) => {
                        // the producer's quantised output becomes the activation's output
                        in_t.remove(x.as_str());
                        if let Some(pos) = tensors.iter().position(|t| t == x) {
                            if in_t.contains(&n.outputs[0]) {
                                // a quantised op already reads it: listed once
                                tensors.remove(pos);
                            } else {
                                tensors[pos] = n.outputs[0].clone();
                            }
                        }
                        in_t.insert(n.outputs[0].clone());
                        renamed.insert(x.clone(), n.outputs[0].clone());
                        p.removed.push((i, x.clone(), n.outputs[0].clone(), hi));
                    }
                    _ => {
                        reasons.insert(
                            i,
                            if clamp.is_none() {
                                "Clip with a lower bound other than 0 (no integer kernel)".into()
                            } else {
                                "not right after a quantised op (no integer kernel of its own)"
                                    .into()
                            },
                        );
                    }
                }
            }
            Kind::Movement => {
                let Some(x) = n.inputs.first() else { continue };
                if opts.float_ops.contains(&n.op) {
                    reasons.insert(i, "kept float by --float-ops".into());
                    continue;
                }
                let out = &n.outputs[0];
                if in_t.contains(x.as_str())
                    && !ints.contains(x.as_str())
                    && n.outputs.len() == 1
                    && !g.is_graph_output(out)
                {
                    // the output keeps the input's scale (also when a quantised op reads it):
                    // only then does ONNX Runtime run the op on the 8-bit values
                    add(out, &mut in_t, &mut tensors);
                    p.shared.insert(out.clone(), x.clone());
                    quantized.insert(i);
                } else {
                    reasons.insert(
                        i,
                        "its input is not quantised (runs in float on float values)".into(),
                    );
                }
            }
            _ => {}
        }
    }
    // data movement shares only a scale measured elsewhere: follow chains to the root
    let shared = p.shared.clone();
    for (o, mut src) in shared {
        let mut hops = 0;
        while let Some(s) = p.shared.get(&src) {
            src = s.clone();
            hops += 1;
            if hops > 1000 {
                break;
            }
        }
        p.shared.insert(o, src);
    }
    for (i, n) in g.nodes.iter().enumerate() {
        if quantized.contains(&i) || p.removed.iter().any(|r| r.0 == i) {
            continue;
        }
        let reason = reasons.remove(&i).unwrap_or_else(|| {
            format!(
                "op type {} has no int8 kernel in ONNX Runtime's QDQ fusion (runs in float)",
                n.op
            )
        });
        p.float_nodes.push(FloatNode {
            node: if n.name.is_empty() {
                n.outputs.first().cloned().unwrap_or_default()
            } else {
                n.name.clone()
            },
            op: n.op.clone(),
            reason,
        });
    }
    let mut q: Vec<usize> = quantized.into_iter().collect();
    q.sort_unstable();
    p.quantized = q;
    p.tensors = tensors;
    Ok(p)
}

/// Values that hold integers (or booleans), not activations: integer initializers, the outputs
/// of ops that make integers (`Shape`, `Size`, `NonZero`, `ArgMax`, …, a `Cast` to a non-float
/// type), and what ops computing on those produce. Concat, Add, Mul, Reshape, … of shape values
/// must not be quantised.
pub fn integer_values(m: &Model) -> HashSet<String> {
    use crate::onnx::proto::data_type as dt;
    let mut ints: HashSet<String> = m
        .graph
        .initializers
        .iter()
        .filter(|(_, t)| !t.is_float())
        .map(|(k, _)| k.clone())
        .collect();
    for inp in &m.graph.inputs {
        if !matches!(inp.elem_type, dt::FLOAT | dt::DOUBLE | dt::FLOAT16) {
            ints.insert(inp.name.clone());
        }
    }
    for n in &m.graph.nodes {
        let makes_ints = match n.op.as_str() {
            "Shape" | "Size" | "NonZero" | "ArgMax" | "ArgMin" | "Equal" | "Less" | "Greater"
            | "LessOrEqual" | "GreaterOrEqual" | "Not" | "And" | "Or" | "IsNaN" | "IsInf" => true,
            "Cast" => !matches!(
                n.attr_i("to").map(|t| t as i32),
                Some(dt::FLOAT | dt::DOUBLE | dt::FLOAT16)
            ),
            "ConstantOfShape" => false,
            // data-carrying inputs: an op whose first (data) input is integer makes integers
            "Gather" | "Unsqueeze" | "Squeeze" | "Slice" | "Reshape" | "Flatten" | "Transpose"
            | "Expand" | "Tile" | "Identity" | "ReduceProd" | "ReduceSum" | "Neg" | "Abs" => {
                n.inputs.first().is_some_and(|x| ints.contains(x))
            }
            "Concat" | "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Min" | "Max" | "Where"
            | "Range" => n
                .inputs
                .iter()
                .filter(|x| !x.is_empty())
                .any(|x| ints.contains(x)),
            _ => false,
        };
        if makes_ints {
            ints.extend(n.outputs.iter().cloned());
        }
    }
    ints
}

/// Whether a Conv / Gemm / MatMul can take int8 weights; the reason when not.
fn weighted_check(m: &Model, n: &Node) -> Result<(), String> {
    let w = n.input(1).ok_or("it has no weight input")?;
    let wt = float_initializer(m, w).ok_or(
        "its weight is computed at run time or not float32 (only constant weights are quantised)",
    )?;
    if n.inputs
        .first()
        .is_none_or(|x| x.is_empty() || is_const(m, x))
    {
        return Err("its data input is a constant".into());
    }
    match n.op.as_str() {
        "Conv" => {
            if wt.dims.len() < 3 {
                return Err(format!("weight of rank {}", wt.dims.len()));
            }
            if let Some(b) = n.input(2)
                && float_initializer(m, b).is_none_or(|t| t.dims != [wt.dims[0]])
            {
                return Err("its bias is not a constant vector".into());
            }
        }
        "Gemm" => {
            if wt.dims.len() != 2 {
                return Err("weight is not a matrix".into());
            }
            if n.attr_i("transA").unwrap_or(0) != 0
                || n.attr_f("alpha").unwrap_or(1.0) != 1.0
                || n.attr_f("beta").unwrap_or(1.0) != 1.0
            {
                return Err("transA, alpha or beta other than the defaults".into());
            }
            let cols = if n.attr_i("transB").unwrap_or(0) != 0 {
                wt.dims[0]
            } else {
                wt.dims[1]
            };
            if let Some(b) = n.input(2)
                && float_initializer(m, b).is_none_or(|t| t.dims != [cols])
            {
                return Err("its bias C is not a constant vector of the output width".into());
            }
        }
        _ => {
            if wt.dims.len() != 2 {
                return Err("MatMul weight is not a matrix".into());
            }
        }
    }
    Ok(())
}

/// Clip's bounds when both are constants (attributes before opset 11, inputs after).
fn clip_bounds(m: &Model, n: &Node) -> Option<(f32, f32)> {
    let get = |i: usize, attr: &str, default: f32| -> Option<f32> {
        match n.input(i) {
            Some(name) => m
                .graph
                .initializers
                .get(name)
                .and_then(|t| t.as_f32())
                .filter(|v| v.len() == 1)
                .map(|v| v[0]),
            None => Some(n.attr_f(attr).unwrap_or(default)),
        }
    };
    Some((get(1, "min", f32::MIN)?, get(2, "max", f32::MAX)?))
}

/// Scale and zero point of an activation range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

pub fn act_params(lo: f32, hi: f32, t: ActType) -> QParams {
    let lo = lo.min(0.0);
    let hi = hi.max(0.0);
    let span = hi - lo;
    if !(span.is_finite()) || span < 1e-12 {
        return QParams {
            scale: 1.0,
            zero_point: if t == ActType::Uint8 { 0 } else { -128 },
        };
    }
    let scale = span / 255.0;
    let (qmin, qmax) = match t {
        ActType::Uint8 => (0.0, 255.0),
        ActType::Int8 => (-128.0, 127.0),
    };
    let zp = (qmin - lo / scale).round().clamp(qmin, qmax) as i32;
    QParams {
        scale,
        zero_point: zp,
    }
}

/// Per-channel symmetric int8 weights along `axis`: (values, scales).
pub fn quantize_weights(
    w: &[f32],
    dims: &[usize],
    axis: usize,
    reduce_range: bool,
) -> (Vec<i8>, Vec<f32>) {
    let qmax = if reduce_range { 63.0 } else { 127.0 };
    let channels = dims[axis];
    let inner: usize = dims[axis + 1..].iter().product();
    let mut amax = vec![0f32; channels];
    for (i, v) in w.iter().enumerate() {
        let c = (i / inner) % channels;
        amax[c] = amax[c].max(v.abs());
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| {
            if a > 0.0 && a.is_finite() {
                a / qmax
            } else {
                1.0
            }
        })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / inner) % channels;
            (v / scales[c]).round().clamp(-qmax, qmax) as i8
        })
        .collect();
    (q, scales)
}

/// Rewrites the prepared float model `m` into QDQ form with the measured `ranges`
/// (tensor → (lo, hi)).
pub fn apply(
    m: &Model,
    plan: &Plan,
    ranges: &HashMap<String, (f32, f32)>,
    opts: &QdqOptions,
) -> Result<Model, QuantizeError> {
    let mut out = m.clone();
    let g = &mut out.graph;
    let mut taken: HashSet<String> = g.initializers.keys().cloned().collect();
    for n in &g.nodes {
        taken.extend(n.outputs.iter().cloned());
        taken.insert(n.name.clone());
    }
    taken.extend(g.inputs.iter().map(|v| v.name.clone()));
    let fresh = |base: String, taken: &mut HashSet<String>| -> String {
        let mut c = base.clone();
        let mut i = 1;
        while taken.contains(&c) {
            c = format!("{base}_{i}");
            i += 1;
        }
        taken.insert(c.clone());
        c
    };

    // the scale of every quantised tensor
    let mut params: HashMap<String, QParams> = HashMap::new();
    for t in &plan.tensors {
        let root = plan.shared.get(t).unwrap_or(t);
        let (lo, mut hi) = *ranges.get(root).ok_or_else(|| {
            QuantizeError::Invalid(format!("no calibrated range for tensor '{root}'"))
        })?;
        if let Some((_, _, _, Some(clip_hi))) = plan.removed.iter().find(|r| &r.2 == root) {
            hi = hi.min(*clip_hi);
        }
        params.insert(t.clone(), act_params(lo, hi, opts.activations));
    }

    // removed activations: the producer writes their output
    let removed: HashSet<usize> = plan.removed.iter().map(|r| r.0).collect();
    for (_, x, y, _) in &plan.removed {
        for n in g.nodes.iter_mut() {
            for o in n.outputs.iter_mut() {
                if o == x {
                    *o = y.clone();
                }
            }
        }
    }

    // weights and biases
    let mut new_nodes_before: HashMap<usize, Vec<Node>> = HashMap::new();
    for &i in &plan.quantized {
        let n = g.nodes[i].clone();
        if kind(&n.op) != Kind::Weighted {
            continue;
        }
        let w_name = n.inputs[1].clone();
        let Some(w) = g.initializers.get(&w_name).cloned() else {
            continue;
        };
        let Some(wv) = w.f32_data() else { continue };
        let trans_b = n.attr_i("transB").unwrap_or(0) != 0;
        let axis = match n.op.as_str() {
            "Conv" => 0,
            "Gemm" if trans_b => 0,
            _ => 1,
        };
        let (q, scales) = quantize_weights(wv, &w.dims, axis, opts.reduce_range);
        let channels = scales.len();
        let qn = fresh(format!("{w_name}_quantized"), &mut taken);
        let sn = fresh(format!("{w_name}_scale"), &mut taken);
        let zn = fresh(format!("{w_name}_zero_point"), &mut taken);
        let dq = fresh(format!("{w_name}_DequantizeLinear_Output"), &mut taken);
        g.initializers.insert(
            qn.clone(),
            Tensor {
                dims: w.dims.clone(),
                data: TensorData::I8(q),
            },
        );
        g.initializers
            .insert(sn.clone(), Tensor::f32(vec![channels], scales.clone()));
        g.initializers.insert(
            zn.clone(),
            Tensor {
                dims: vec![channels],
                data: TensorData::I8(vec![0; channels]),
            },
        );
        let dq_name = fresh(format!("{w_name}_DequantizeLinear"), &mut taken);
        let mut list = vec![
            Node::new("DequantizeLinear", dq_name, &[&qn, &sn, &zn], &[&dq])
                .with_attr("axis", Attr::Int(axis as i64)),
        ];
        g.nodes[i].inputs[1] = dq;
        // bias: int32 at scale s_x · s_w[c]
        if let Some(b_name) = n.input(2).map(str::to_string)
            && let Some(b) = g.initializers.get(&b_name).and_then(|t| t.f32_data())
            && let Some(px) = params.get(&n.inputs[0])
            && b.len() == channels
        {
            let bscales: Vec<f32> = scales.iter().map(|s| s * px.scale).collect();
            let bq: Vec<i32> = b
                .iter()
                .zip(&bscales)
                .map(|(v, s)| (v / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
                .collect();
            let qn = fresh(format!("{b_name}_quantized"), &mut taken);
            let sn = fresh(format!("{b_name}_scale"), &mut taken);
            let zn = fresh(format!("{b_name}_zero_point"), &mut taken);
            let dq = fresh(format!("{b_name}_DequantizeLinear_Output"), &mut taken);
            g.initializers.insert(
                qn.clone(),
                Tensor {
                    dims: vec![channels],
                    data: TensorData::I32(bq),
                },
            );
            g.initializers
                .insert(sn.clone(), Tensor::f32(vec![channels], bscales));
            g.initializers.insert(
                zn.clone(),
                Tensor {
                    dims: vec![channels],
                    data: TensorData::I32(vec![0; channels]),
                },
            );
            let dq_name = fresh(format!("{b_name}_DequantizeLinear"), &mut taken);
            list.push(
                Node::new("DequantizeLinear", dq_name, &[&qn, &sn, &zn], &[&dq])
                    .with_attr("axis", Attr::Int(0)),
            );
            g.nodes[i].inputs[2] = dq;
        }
        new_nodes_before.insert(i, list);
    }

    // activations: one QuantizeLinear after the producer, one DequantizeLinear per consumer
    let quantized_set: HashSet<&String> = plan.tensors.iter().collect();
    let mut consumers_of: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        for (k, inp) in n.inputs.iter().enumerate() {
            if quantized_set.contains(inp) {
                consumers_of.entry(inp.clone()).or_default().push((i, k));
            }
        }
    }
    let zp_tensor = |zp: i32| match opts.activations {
        ActType::Uint8 => Tensor {
            dims: vec![],
            data: TensorData::U8(vec![zp.clamp(0, 255) as u8]),
        },
        ActType::Int8 => Tensor {
            dims: vec![],
            data: TensorData::I8(vec![zp.clamp(-128, 127) as i8]),
        },
    };
    // (tensor) → nodes to emit right after its producer (or first, for graph inputs)
    let mut after: HashMap<String, Vec<Node>> = HashMap::new();
    let mut rewire: Vec<(usize, usize, String)> = Vec::new();
    for t in &plan.tensors {
        // a tensor nobody reads (a removed activation's input) needs nothing
        let Some(users) = consumers_of.get(t) else {
            continue;
        };
        let qp = params[t];
        let sn = fresh(format!("{t}_scale"), &mut taken);
        let zn = fresh(format!("{t}_zero_point"), &mut taken);
        g.initializers
            .insert(sn.clone(), Tensor::f32(vec![], vec![qp.scale]));
        g.initializers.insert(zn.clone(), zp_tensor(qp.zero_point));
        let qo = fresh(format!("{t}_QuantizeLinear_Output"), &mut taken);
        let qname = fresh(format!("{t}_QuantizeLinear"), &mut taken);
        let mut list = vec![Node::new("QuantizeLinear", qname, &[t, &sn, &zn], &[&qo])];
        for (k, &(ci, slot)) in users.iter().enumerate() {
            let dqo = fresh(format!("{t}_DequantizeLinear_Output_{k}"), &mut taken);
            let dqn = fresh(format!("{t}_DequantizeLinear_{k}"), &mut taken);
            list.push(Node::new(
                "DequantizeLinear",
                dqn,
                &[&qo, &sn, &zn],
                &[&dqo],
            ));
            rewire.push((ci, slot, dqo));
        }
        after.insert(t.clone(), list);
    }
    for (ci, slot, name) in rewire {
        g.nodes[ci].inputs[slot] = name;
    }
    let mut nodes = Vec::with_capacity(g.nodes.len() * 3);
    for inp in g.inputs.iter() {
        if let Some(list) = after.remove(&inp.name) {
            nodes.extend(list);
        }
    }
    for (i, n) in std::mem::take(&mut g.nodes).into_iter().enumerate() {
        if removed.contains(&i) {
            continue;
        }
        if let Some(list) = new_nodes_before.remove(&i) {
            nodes.extend(list);
        }
        let outs = n.outputs.clone();
        nodes.push(n);
        for o in outs {
            if let Some(list) = after.remove(&o) {
                nodes.extend(list);
            }
        }
    }
    g.nodes = nodes;
    g.remove_dead();
    g.check_topological()
        .map_err(|e| QuantizeError::Invalid(format!("the rewritten graph is invalid: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uint8_params_cover_the_range_and_zero_exactly() {
        let p = act_params(-1.0, 3.0, ActType::Uint8);
        assert!((p.scale - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(p.zero_point, 64);
        // zero is exact: q(0) = zp dequantises to 0
        assert_eq!((p.zero_point as f32 - p.zero_point as f32) * p.scale, 0.0);
        // a non-negative range has zero point 0: quantising clamps negatives (ReLU for free)
        assert_eq!(act_params(0.5, 6.0, ActType::Uint8).zero_point, 0);
        assert_eq!(act_params(0.0, 6.0, ActType::Int8).zero_point, -128);
        // an empty range does not divide by zero
        let z = act_params(0.0, 0.0, ActType::Uint8);
        assert!(z.scale > 0.0);
    }

    /// input → Pad → Conv(+bias) → Relu → MaxPool → Conv → Sigmoid-free output Conv → Add(out).
    fn small_net() -> Model {
        use crate::onnx::{Dim, Graph, ValueInfo};
        let mut g = Graph::default();
        let vi = |n: &str, c: i64| ValueInfo {
            name: n.into(),
            elem_type: 1,
            shape: Some(vec![
                Dim::Fixed(1),
                Dim::Fixed(c),
                Dim::Fixed(8),
                Dim::Fixed(8),
            ]),
        };
        g.inputs.push(vi("x", 3));
        g.initializers.insert(
            "pads".into(),
            Tensor::i64(vec![8], vec![0, 0, 1, 1, 0, 0, 1, 1]),
        );
        g.initializers
            .insert("w1".into(), Tensor::f32(vec![4, 3, 3, 3], vec![0.1; 108]));
        g.initializers
            .insert("b1".into(), Tensor::f32(vec![4], vec![0.5, -0.5, 0.0, 1.0]));
        g.initializers
            .insert("w2".into(), Tensor::f32(vec![4, 4, 1, 1], vec![0.2; 16]));
        g.nodes
            .push(Node::new("Pad", "pad", &["x", "pads"], &["xp"]));
        g.nodes
            .push(Node::new("Conv", "conv1", &["xp", "w1", "b1"], &["c1"]));
        g.nodes.push(Node::new("Relu", "relu", &["c1"], &["r1"]));
        g.nodes.push(
            Node::new("MaxPool", "pool", &["r1"], &["p1"])
                .with_attr("kernel_shape", Attr::Ints(vec![1, 1])),
        );
        g.nodes
            .push(Node::new("Conv", "conv2", &["p1", "w2"], &["c2"]));
        g.nodes.push(Node::new("Add", "add", &["c2", "p1"], &["y"]));
        g.outputs.push(vi("y", 4));
        Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: g,
        }
    }

    #[test]
    fn plan_and_rewrite_a_small_net() {
        let mut m = small_net();
        assert_eq!(fold_pads(&mut m), 1);
        assert_eq!(m.graph.nodes[0].op, "Conv");
        assert_eq!(m.graph.nodes[0].attr_ints("pads"), Some(&[1, 1, 1, 1][..]));
        let p = plan(&m, &QdqOptions::default()).unwrap();
        // the Relu after conv1 goes, the MaxPool shares its scale, the Add is the output: float
        assert_eq!(p.removed.len(), 1);
        assert_eq!(p.shared.get("p1").map(String::as_str), Some("r1"));
        assert!(p.calibrated().iter().all(|t| t != "p1" && t != "c1"));
        assert_eq!(p.float_nodes.len(), 1);
        assert_eq!(p.float_nodes[0].op, "Add");
        assert!(p.float_nodes[0].reason.contains("model output"));
        let ranges: HashMap<String, (f32, f32)> = p
            .calibrated()
            .into_iter()
            .map(|t| (t, (-1.0, 2.0)))
            .collect();
        let q = apply(&m, &p, &ranges, &QdqOptions::default()).unwrap();
        let ops: Vec<&str> = q.graph.nodes.iter().map(|n| n.op.as_str()).collect();
        assert!(!ops.contains(&"Relu") && !ops.contains(&"Pad"), "{ops:?}");
        // conv1: int8 weights (4 channels) and an int32 bias at s_x · s_w
        let w = &q.graph.initializers["w1_quantized"];
        assert!(matches!(w.data, TensorData::I8(_)));
        let b = &q.graph.initializers["b1_quantized"];
        let sx = act_params(-1.0, 2.0, ActType::Uint8).scale;
        let sw = 0.1 / 127.0;
        match &b.data {
            TensorData::I32(v) => assert_eq!(v[0], (0.5 / (sx * sw)).round() as i32),
            other => panic!("{other:?}"),
        }
        // every consumer of a quantised tensor reads its own DequantizeLinear
        let conv2 = q.graph.nodes.iter().find(|n| n.name == "conv2").unwrap();
        let add = q.graph.nodes.iter().find(|n| n.name == "add").unwrap();
        assert!(conv2.inputs[0].contains("DequantizeLinear_Output"));
        assert!(add.inputs[1].contains("DequantizeLinear_Output"));
        assert_ne!(conv2.inputs[0], add.inputs[1]);
        // the MaxPool's output is quantised with the MaxPool input's scale and zero point
        let scale_of = |t: &str| {
            let qn = q
                .graph
                .nodes
                .iter()
                .find(|n| n.op == "QuantizeLinear" && n.inputs[0] == t)
                .unwrap();
            q.graph.initializers[&qn.inputs[1]].f32_data().unwrap()[0]
        };
        assert_eq!(scale_of("p1"), scale_of("r1"));
        q.graph.check_topological().unwrap();
    }

    #[test]
    fn shape_arithmetic_is_not_quantised() {
        // p1 → Shape → Gather → Concat with a constant → Reshape(p1, shape): the Concat works on
        // integers and stays float; the Reshape of the activation still runs quantised
        let mut m = small_net();
        fold_pads(&mut m);
        m.graph
            .initializers
            .insert("idx".into(), Tensor::i64(vec![1], vec![0]));
        m.graph
            .initializers
            .insert("rest".into(), Tensor::i64(vec![1], vec![-1]));
        let at = m
            .graph
            .nodes
            .iter()
            .position(|n| n.name == "conv2")
            .unwrap();
        m.graph
            .nodes
            .insert(at, Node::new("Shape", "shape", &["p1"], &["s"]));
        m.graph
            .nodes
            .insert(at + 1, Node::new("Gather", "gather", &["s", "idx"], &["n"]));
        m.graph.nodes.insert(
            at + 2,
            Node::new("Concat", "cat", &["n", "n2"], &["shape2"]).with_attr("axis", Attr::Int(0)),
        );
        m.graph
            .nodes
            .insert(at + 2, Node::new("Identity", "id", &["rest"], &["n2"]));
        m.graph.nodes.push(Node::new(
            "Reshape",
            "flat",
            &["p1", "shape2"],
            &["flat_out"],
        ));
        m.graph
            .nodes
            .push(Node::new("Relu", "tail", &["flat_out"], &["z"]));
        m.graph.outputs.push(crate::onnx::ValueInfo {
            name: "z".into(),
            elem_type: 1,
            shape: None,
        });
        m.graph.check_topological().unwrap();
        let ints = integer_values(&m);
        assert!(ints.contains("s") && ints.contains("n") && ints.contains("shape2"));
        assert!(!ints.contains("p1") && !ints.contains("flat_out"));
        let p = plan(&m, &QdqOptions::default()).unwrap();
        let cat = p.float_nodes.iter().find(|f| f.node == "cat").unwrap();
        assert!(cat.reason.contains("integer"), "{cat:?}");
        assert!(!p.tensors.iter().any(|t| t == "shape2" || t == "n"));
        assert_eq!(p.shared.get("flat_out").map(String::as_str), Some("r1"));
    }

    #[test]
    fn sigmoid_outputs_keep_their_exact_range() {
        let mut m = small_net();
        fold_pads(&mut m);
        // conv2 → Sigmoid → Add: the score tensor is quantised on [0, 1], not calibrated
        let at = m.graph.nodes.iter().position(|n| n.name == "add").unwrap();
        m.graph
            .nodes
            .insert(at, Node::new("Sigmoid", "sig", &["c2"], &["s2"]));
        m.graph.nodes[at + 1].inputs[0] = "s2".into();
        let p = plan(&m, &QdqOptions::default()).unwrap();
        assert_eq!(p.fixed_ranges.get("s2"), Some(&(0.0, 1.0)));
        assert!(p.tensors.iter().any(|t| t == "s2"));
    }

    #[test]
    fn old_opsets_and_conv_free_models_are_refused() {
        let mut m = small_net();
        m.opset = 11;
        assert!(matches!(
            plan(&m, &QdqOptions::default()),
            Err(QuantizeError::Opset(11))
        ));
        let mut m = small_net();
        m.graph.nodes.retain(|n| n.op != "Conv");
        m.graph.nodes[0].inputs[0] = "x".into();
        let e = plan(&m, &QdqOptions::default()).unwrap_err().to_string();
        assert!(e.contains("nothing to quantise"), "{e}");
        let mut o = QdqOptions::default();
        o.float_ops.insert("Conv".into());
        let e = plan(&small_net(), &o).unwrap_err().to_string();
        assert!(e.contains("--float-ops"), "{e}");
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        // two output channels of 2 values each; channel 1 ten times larger
        let w = [0.5, -1.0, 5.0, -10.0];
        let (q, s) = quantize_weights(&w, &[2, 2], 0, false);
        assert_eq!(s.len(), 2);
        assert!((s[0] - 1.0 / 127.0).abs() < 1e-7 && (s[1] - 10.0 / 127.0).abs() < 1e-7);
        assert_eq!(q, vec![64, -127, 64, -127]);
        let (q7, _) = quantize_weights(&w, &[2, 2], 0, true);
        assert_eq!(q7[1], -63);
        // axis 1 (MatMul [K, N]): per column
        let (_, s) = quantize_weights(&[1.0, 2.0, -3.0, 0.5], &[2, 2], 1, false);
        assert!((s[0] - 3.0 / 127.0).abs() < 1e-7 && (s[1] - 2.0 / 127.0).abs() < 1e-7);
        // an all-zero channel gets scale 1, not a division by zero
        let (q, s) = quantize_weights(&[0.0, 0.0, 1.0, 1.0], &[2, 2], 0, false);
        assert_eq!(s[0], 1.0);
        assert_eq!(q[0], 0);
    }
}
