//! Static shape inference for the ONNX ops that conv nets, detectors and re-id heads use, with
//! constant propagation of the small integer tensors that exporters use to compute shapes
//! (`Shape → Gather → Concat → Reshape` chains).
//!
//! Inference is lenient: an op it does not know, or one whose output size depends on the data
//! (e.g. `NonZero`), leaves its outputs unknown and records why; everything that does not depend
//! on them is still inferred. Callers that need every shape (the pruner) use [`Shapes::require`].

use std::collections::HashMap;

use super::OnnxError;
use super::graph::{Attr, Dim, Model, Node, Tensor, TensorData};

/// Inferred shapes (batch as given) and the values of small constant tensors.
#[derive(Debug, Default, Clone)]
pub struct Shapes {
    pub dims: HashMap<String, Vec<i64>>,
    consts: HashMap<String, Tensor>,
    /// The first node whose outputs could not be inferred, and why.
    pub first_gap: Option<(String, String)>,
}

/// Constant tensors up to this many elements are propagated.
const MAX_CONST: usize = 4096;

/// The largest dimension inference accepts. Declared and inferred sizes beyond it (or negative)
/// come from a broken or hostile model; refusing them keeps every later product inside `i64`.
pub const MAX_DIM: i64 = 1 << 32;

/// The largest element count of one tensor inference accepts (a tera-element tensor is no model's).
pub const MAX_NUMEL: i64 = 1 << 40;

/// Largest window, stride, dilation and padding a sliding-window op may declare.
const MAX_WINDOW_ATTR: i64 = 1 << 20;

/// Checks that `dims` is a shape crosscam can compute with: no negative or oversized dimension,
/// and an element count within [`MAX_NUMEL`].
pub fn check_dims(dims: &[i64]) -> Result<(), String> {
    if let Some(d) = dims.iter().find(|&&d| !(0..=MAX_DIM).contains(&d)) {
        return Err(format!("dimension {d} of shape {dims:?} is out of range"));
    }
    numel(dims).map(|_| ())
}

/// The element count of a shape, or an error when it exceeds [`MAX_NUMEL`] (or a dimension is
/// negative).
pub fn numel(dims: &[i64]) -> Result<i64, String> {
    let mut n: i64 = 1;
    for &d in dims {
        if d < 0 {
            return Err(format!("negative dimension {d} in shape {dims:?}"));
        }
        n = n
            .checked_mul(d)
            .filter(|&v| v <= MAX_NUMEL)
            .ok_or_else(|| format!("shape {dims:?} has too many elements"))?;
    }
    // a zero dimension makes the whole product zero, whatever came before
    Ok(n)
}

/// A constant with the given shape and values, when they agree (a hostile model can make a
/// propagated value disagree with the inferred shape; such values are dropped, not trusted).
fn const_tensor(dims: &[i64], data: TensorData) -> Option<Tensor> {
    let dims: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect::<Option<_>>()?;
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    let len = match &data {
        TensorData::F32(v) => v.len(),
        TensorData::F64(v) => v.len(),
        TensorData::I64(v) => v.len(),
        TensorData::I32(v) => v.len(),
        TensorData::U8(v) => v.len(),
        TensorData::I8(v) => v.len(),
        TensorData::Bool(v) => v.len(),
        TensorData::Raw { .. } => return None,
    };
    (len == n).then_some(Tensor { dims, data })
}

impl Shapes {
    pub fn get(&self, name: &str) -> Option<&[i64]> {
        self.dims.get(name).map(Vec::as_slice)
    }

    /// The shape of `name`, or an error naming the node at which inference stopped.
    pub fn require(&self, name: &str) -> Result<&[i64], OnnxError> {
        self.get(name).ok_or_else(|| match &self.first_gap {
            Some((node, msg)) => OnnxError::Shape {
                node: node.clone(),
                msg: msg.clone(),
            },
            None => OnnxError::Shape {
                node: format!("value '{name}'"),
                msg: "its shape is unknown".into(),
            },
        })
    }

    /// A constant value known at inference time (an initializer or a propagated constant).
    pub fn value<'a>(&'a self, model: &'a Model, name: &str) -> Option<&'a Tensor> {
        self.consts
            .get(name)
            .or_else(|| model.graph.initializers.get(name))
    }
}

/// Shapes for the graph inputs: the declared ones, with a symbolic batch (first) dimension set to
/// `batch`, and the other dimensions replaced by `override_chw` when given (e.g. `[3, 256, 128]`).
pub fn input_shapes(
    model: &Model,
    batch: i64,
    override_chw: Option<&[i64]>,
) -> Result<HashMap<String, Vec<i64>>, OnnxError> {
    let mut m = HashMap::new();
    for (k, inp) in model.graph.inputs.iter().enumerate() {
        let declared = inp
            .shape
            .as_ref()
            .ok_or_else(|| OnnxError::Invalid(format!("input '{}' declares no shape", inp.name)))?;
        let mut dims = Vec::with_capacity(declared.len());
        for (i, d) in declared.iter().enumerate() {
            let v = match (i, d, override_chw) {
                (0, Dim::Fixed(v), _) => *v,
                (0, _, _) => batch,
                (i, _, Some(o)) if k == 0 && o.len() + 1 == declared.len() => o[i - 1],
                (_, Dim::Fixed(v), _) => *v,
                (_, d, _) => {
                    return Err(OnnxError::Invalid(format!(
                        "input '{}' has a dynamic dimension '{d}' at position {i}; give the input size \
                         explicitly (e.g. --input 3x256x128)",
                        inp.name
                    )));
                }
            };
            dims.push(v);
        }
        check_dims(&dims).map_err(|e| {
            OnnxError::Invalid(format!("input '{}' has an unusable shape: {e}", inp.name))
        })?;
        if k == 0
            && let Some(o) = override_chw
            && o.len() + 1 != declared.len()
        {
            return Err(OnnxError::Invalid(format!(
                "input '{}' has rank {}, so an input size needs {} numbers, not {}",
                inp.name,
                declared.len(),
                declared.len().saturating_sub(1),
                o.len()
            )));
        }
        m.insert(inp.name.clone(), dims);
    }
    Ok(m)
}

/// Infers the shape of every value reachable from `inputs`.
pub fn infer(model: &Model, inputs: &HashMap<String, Vec<i64>>) -> Shapes {
    let mut s = Shapes::default();
    for (name, t) in &model.graph.initializers {
        s.dims
            .insert(name.clone(), t.dims.iter().map(|&d| d as i64).collect());
    }
    for (name, dims) in inputs {
        s.dims.insert(name.clone(), dims.clone());
    }
    for node in &model.graph.nodes {
        let inferred = infer_node(model, &s, node).and_then(|outs| {
            for (dims, _) in &outs {
                check_dims(dims)?;
            }
            Ok(outs)
        });
        match inferred {
            Ok(outs) => {
                for (name, (dims, value)) in node.outputs.iter().zip(outs) {
                    if name.is_empty() {
                        continue;
                    }
                    s.dims.insert(name.clone(), dims);
                    if let Some(v) = value.filter(|v| v.numel() <= MAX_CONST) {
                        s.consts.insert(name.clone(), v);
                    }
                }
            }
            Err(msg) => {
                if s.first_gap.is_none() {
                    s.first_gap = Some((node.describe(), msg));
                }
            }
        }
    }
    s
}

type Out = (Vec<i64>, Option<Tensor>);

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(format!("axis {axis} is out of range for rank {rank}"))
    }
}

pub fn broadcast(a: &[i64], b: &[i64]) -> Result<Vec<i64>, String> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

fn ints_of(t: &Tensor) -> Result<Vec<i64>, String> {
    t.as_i64()
        .ok_or_else(|| "a shape-like input has an unsupported element type".to_string())
}

fn infer_node(model: &Model, s: &Shapes, n: &Node) -> Result<Vec<Out>, String> {
    let opset = model.opset;
    let shape = |i: usize| -> Result<&[i64], String> {
        let name = n.input(i).ok_or_else(|| format!("input {i} is missing"))?;
        s.get(name)
            .ok_or_else(|| format!("the shape of input '{name}' is unknown"))
    };
    let value = |i: usize| -> Option<&Tensor> { n.input(i).and_then(|name| s.value(model, name)) };
    let const_ints = |i: usize, what: &str| -> Result<Vec<i64>, String> {
        let t = value(i).ok_or_else(|| format!("its {what} (input {i}) is not a constant"))?;
        ints_of(t)
    };
    let same = |i: usize| -> Result<Vec<Out>, String> { Ok(vec![(shape(i)?.to_vec(), None)]) };

    let op = n.op.as_str();
    match op {
        // ---- element-wise, shape-preserving (QDQ models' (de)quantisation included)
        "QuantizeLinear"
        | "DequantizeLinear"
        | "Relu"
        | "LeakyRelu"
        | "PRelu"
        | "Clip"
        | "Sigmoid"
        | "HardSigmoid"
        | "HardSwish"
        | "Tanh"
        | "Elu"
        | "Selu"
        | "Celu"
        | "Gelu"
        | "Mish"
        | "Softplus"
        | "Softsign"
        | "Exp"
        | "Log"
        | "Sqrt"
        | "Neg"
        | "Abs"
        | "Reciprocal"
        | "Floor"
        | "Ceil"
        | "Round"
        | "Erf"
        | "Sign"
        | "Not"
        | "Sin"
        | "Cos"
        | "Softmax"
        | "LogSoftmax"
        | "LRN"
        | "InstanceNormalization"
        | "LayerNormalization"
        | "GroupNormalization"
        | "LpNormalization"
        | "MeanVarianceNormalization"
        | "IsNaN"
        | "IsInf"
        | "ThresholdedRelu"
        | "Shrink" => {
            let mut outs = vec![(shape(0)?.to_vec(), None)];
            if op == "LayerNormalization" {
                // optional Mean / InvStdDev outputs: kept unknown
                outs.truncate(1);
            }
            Ok(outs)
        }
        "Identity" => Ok(vec![(shape(0)?.to_vec(), value(0).cloned())]),
        "Dropout" => {
            let x = shape(0)?.to_vec();
            Ok(vec![(x.clone(), None), (x, None)])
        }
        "BatchNormalization" => same(0),
        "Cast" => {
            let x = shape(0)?.to_vec();
            let to = n.attr_i("to").unwrap_or(1);
            let v = value(0).and_then(|t| cast(t, to as i32));
            Ok(vec![(x, v)])
        }
        // ---- broadcasting binary / n-ary
        "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean" | "Equal"
        | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual" | "And" | "Or" | "Xor" | "Mod"
        | "Where" | "BitShift" => {
            let mut out = shape(0)?.to_vec();
            for i in 1..n.inputs.len() {
                out = broadcast(&out, shape(i)?)?;
            }
            let v = match op {
                "Add" | "Sub" | "Mul" | "Div" => int_binary(op, value(0), value(1), &out),
                _ => None,
            };
            Ok(vec![(out, v)])
        }
        // ---- convolutions and pooling
        "Conv" | "ConvInteger" => {
            let x = shape(0)?;
            let w = shape(1)?;
            if x.len() < 3 || w.len() != x.len() {
                return Err(format!(
                    "input rank {} / weight rank {} do not make a convolution",
                    x.len(),
                    w.len()
                ));
            }
            let k: Vec<i64> = n
                .attr_ints("kernel_shape")
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| w[2..].to_vec());
            let group = n.attr_i("group").unwrap_or(1);
            if group < 1 {
                return Err(format!("group {group} is not positive"));
            }
            if w[1].checked_mul(group) != Some(x[1]) {
                return Err(format!(
                    "input has {} channels but the weight expects {} × group {group}",
                    x[1], w[1]
                ));
            }
            let mut out = vec![x[0], w[0]];
            out.extend(window_out(n, &x[2..], &k, false)?);
            Ok(vec![(out, None)])
        }
        "ConvTranspose" => {
            let x = shape(0)?;
            let w = shape(1)?;
            if x.len() < 3 || w.len() != x.len() {
                return Err(format!(
                    "input rank {} / weight rank {} do not make a transposed convolution",
                    x.len(),
                    w.len()
                ));
            }
            let group = n.attr_i("group").unwrap_or(1);
            if !(1..=MAX_DIM).contains(&group) {
                return Err(format!("group {group} is out of range"));
            }
            let sp = x.len() - 2;
            let k = window_attr(n, "kernel_shape", sp, 1, w[2..].to_vec())?;
            let cout = w[1]
                .checked_mul(group)
                .ok_or("its output channels overflow")?;
            let mut out = vec![x[0], cout];
            if let Some(os) = n.attr_ints("output_shape") {
                let tail = os.len().checked_sub(sp).ok_or_else(|| {
                    format!(
                        "output_shape has {} entries for {sp} spatial axes",
                        os.len()
                    )
                })?;
                out.extend_from_slice(&os[tail..]);
            } else {
                let strides = window_attr(n, "strides", sp, 1, vec![1; sp])?;
                let dil = window_attr(n, "dilations", sp, 1, vec![1; sp])?;
                let pads = window_attr(n, "pads", 2 * sp, 0, vec![0; 2 * sp])?;
                let opad = window_attr(n, "output_padding", sp, 0, vec![0; sp])?;
                for i in 0..sp {
                    // every factor is bounded (MAX_DIM, MAX_WINDOW_ATTR): no overflow
                    out.push(
                        strides[i] * (x[2 + i] - 1) + opad[i] + (k[i] - 1) * dil[i] + 1
                            - pads[i]
                            - pads[sp + i],
                    );
                }
            }
            Ok(vec![(out, None)])
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let x = shape(0)?;
            if x.len() < 3 {
                return Err(format!("input of rank {} has no spatial axes", x.len()));
            }
            let k = n
                .attr_ints("kernel_shape")
                .ok_or("kernel_shape is missing")?
                .to_vec();
            let ceil = n.attr_i("ceil_mode").unwrap_or(0) == 1;
            let mut out = vec![x[0], x[1]];
            out.extend(window_out(n, &x[2..], &k, ceil)?);
            Ok(vec![(out.clone(), None), (out, None)])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = shape(0)?;
            if x.len() < 2 {
                return Err(format!("input of rank {} has no channel axis", x.len()));
            }
            let mut out = x[..2].to_vec();
            out.extend(std::iter::repeat_n(1, x.len() - 2));
            Ok(vec![(out, None)])
        }
        // ---- reductions
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceProd" | "ReduceL1"
        | "ReduceL2" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => {
            let x = shape(0)?;
            let axes_from_input = opset >= 18 || (op == "ReduceSum" && opset >= 13);
            let axes: Option<Vec<i64>> = if axes_from_input {
                match n.input(1) {
                    Some(_) => Some(const_ints(1, "axes")?),
                    None => None,
                }
            } else {
                n.attr_ints("axes").map(<[i64]>::to_vec)
            };
            let keep = n.attr_i("keepdims").unwrap_or(1) == 1;
            let axes: Vec<usize> = match axes {
                Some(a) if !a.is_empty() => a
                    .iter()
                    .map(|&a| norm_axis(a, x.len()))
                    .collect::<Result<_, _>>()?,
                _ if n.attr_i("noop_with_empty_axes").unwrap_or(0) == 1 => return same(0),
                _ => (0..x.len()).collect(),
            };
            let mut out = Vec::new();
            for (i, &d) in x.iter().enumerate() {
                if axes.contains(&i) {
                    if keep {
                        out.push(1);
                    }
                } else {
                    out.push(d);
                }
            }
            Ok(vec![(out, None)])
        }
        "ArgMax" | "ArgMin" => {
            let x = shape(0)?;
            let a = norm_axis(n.attr_i("axis").unwrap_or(0), x.len())?;
            let mut out = x.to_vec();
            if n.attr_i("keepdims").unwrap_or(1) == 1 {
                out[a] = 1;
            } else {
                out.remove(a);
            }
            Ok(vec![(out, None)])
        }
        // ---- linear algebra
        "Gemm" => {
            let a = shape(0)?;
            let b = shape(1)?;
            if a.len() != 2 || b.len() != 2 {
                return Err(format!("Gemm needs 2-D inputs, got {a:?} and {b:?}"));
            }
            let (m, ka) = if n.attr_i("transA").unwrap_or(0) == 1 {
                (a[1], a[0])
            } else {
                (a[0], a[1])
            };
            let (kb, nn) = if n.attr_i("transB").unwrap_or(0) == 1 {
                (b[1], b[0])
            } else {
                (b[0], b[1])
            };
            if ka != kb {
                return Err(format!("Gemm inner dimensions differ: {ka} vs {kb}"));
            }
            Ok(vec![(vec![m, nn], None)])
        }
        "MatMul" | "MatMulInteger" => Ok(vec![(matmul_shape(shape(0)?, shape(1)?)?, None)]),
        // ---- layout
        "Flatten" => {
            let x = shape(0)?;
            let axis = n.attr_i("axis").unwrap_or(1);
            let a = if axis < 0 {
                axis + x.len() as i64
            } else {
                axis
            };
            let a = usize::try_from(a)
                .ok()
                .filter(|&a| a <= x.len())
                .ok_or_else(|| format!("axis {axis} is out of range for rank {}", x.len()))?;
            Ok(vec![(vec![numel(&x[..a])?, numel(&x[a..])?], None)])
        }
        "Reshape" => {
            let x = shape(0)?.to_vec();
            let target = if opset >= 5 {
                const_ints(1, "target shape")?
            } else {
                n.attr_ints("shape")
                    .ok_or("shape attribute is missing")?
                    .to_vec()
            };
            let allow_zero = n.attr_i("allowzero").unwrap_or(0) == 1;
            let out = reshape(&x, &target, allow_zero)?;
            let v = value(0).and_then(|t| const_tensor(&out, t.data.clone()));
            Ok(vec![(out, v)])
        }
        "Transpose" => {
            let x = shape(0)?;
            let perm: Vec<i64> = n
                .attr_ints("perm")
                .map(<[i64]>::to_vec)
                .unwrap_or_else(|| (0..x.len() as i64).rev().collect());
            let out = perm
                .iter()
                .map(|&p| norm_axis(p, x.len()).map(|p| x[p]))
                .collect::<Result<_, _>>()?;
            Ok(vec![(out, None)])
        }
        "Concat" => {
            let first = shape(0)?;
            let axis = norm_axis(n.attr_i("axis").ok_or("axis is missing")?, first.len())?;
            let mut out = first.to_vec();
            for i in 1..n.inputs.len() {
                let s = shape(i)?;
                if s.len() != first.len() {
                    return Err(format!(
                        "input {i} has rank {}, input 0 rank {}",
                        s.len(),
                        first.len()
                    ));
                }
                out[axis] = out[axis]
                    .checked_add(s[axis])
                    .ok_or("the concatenated axis overflows")?;
            }
            // propagate 1-D integer constants (shape vectors)
            let v = if out.len() == 1 {
                let parts: Option<Vec<Vec<i64>>> = (0..n.inputs.len())
                    .map(|i| value(i).and_then(Tensor::as_i64))
                    .collect();
                parts.and_then(|p| const_tensor(&out, TensorData::I64(p.concat())))
            } else {
                None
            };
            Ok(vec![(out, v)])
        }
        "Split" => {
            let x = shape(0)?;
            let axis = norm_axis(n.attr_i("axis").unwrap_or(0), x.len())?;
            let parts: Vec<i64> = if opset >= 13 && n.input(1).is_some() {
                const_ints(1, "split sizes")?
            } else if let Some(sp) = n.attr_ints("split") {
                sp.to_vec()
            } else {
                let k = n.attr_i("num_outputs").unwrap_or(n.outputs.len() as i64);
                if k < 1 || k > n.outputs.len() as i64 {
                    return Err(format!(
                        "it splits into {k} parts but has {} outputs",
                        n.outputs.len()
                    ));
                }
                let each = (x[axis] + k - 1) / k;
                (0..k).map(|i| each.min(x[axis] - i * each)).collect()
            };
            Ok(parts
                .iter()
                .take(n.outputs.len())
                .map(|&p| {
                    let mut o = x.to_vec();
                    o[axis] = p;
                    (o, None)
                })
                .collect())
        }
        "Slice" => {
            let x = shape(0)?.to_vec();
            let (starts, ends, axes, steps) = if opset >= 10 {
                let st = const_ints(1, "starts")?;
                let en = const_ints(2, "ends")?;
                let ax = match n.input(3) {
                    Some(_) => const_ints(3, "axes")?,
                    None => (0..st.len() as i64).collect(),
                };
                let sp = match n.input(4) {
                    Some(_) => const_ints(4, "steps")?,
                    None => vec![1; st.len()],
                };
                (st, en, ax, sp)
            } else {
                let st = n.attr_ints("starts").ok_or("starts missing")?.to_vec();
                let en = n.attr_ints("ends").ok_or("ends missing")?.to_vec();
                let ax = n
                    .attr_ints("axes")
                    .map(<[i64]>::to_vec)
                    .unwrap_or_else(|| (0..st.len() as i64).collect());
                let k = st.len();
                (st, en, ax, vec![1; k])
            };
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err(format!(
                    "{} starts, {} ends, {} axes and {} steps do not match",
                    starts.len(),
                    ends.len(),
                    axes.len(),
                    steps.len()
                ));
            }
            let mut out = x.clone();
            let mut ranges = Vec::new();
            for i in 0..starts.len() {
                let a = norm_axis(axes[i], x.len())?;
                let (b, e, st) = slice_range(x[a], starts[i], ends[i], steps[i])?;
                let span = if st > 0 { e - b } else { b - e }.max(0);
                // ceil(span / |step|) without overflowing on huge steps
                out[a] = if span == 0 {
                    0
                } else {
                    ((span as u64 - 1) / st.unsigned_abs() + 1) as i64
                };
                ranges.push((a, b, st));
            }
            // constant 1-D slices (of Shape outputs)
            let v = match (value(0).and_then(Tensor::as_i64), x.len()) {
                (Some(vals), 1) if ranges.len() == 1 => {
                    let (_, b, st) = ranges[0];
                    let picked: Option<Vec<i64>> = (0..out[0])
                        .map(|k| {
                            let i = k.checked_mul(st)?.checked_add(b)?;
                            vals.get(usize::try_from(i).ok()?).copied()
                        })
                        .collect();
                    picked.and_then(|p| const_tensor(&out, TensorData::I64(p)))
                }
                _ => None,
            };
            Ok(vec![(out, v)])
        }
        "Pad" => {
            let x = shape(0)?;
            let pads = if opset >= 11 {
                const_ints(1, "pads")?
            } else {
                n.attr_ints("pads")
                    .or_else(|| n.attr_ints("paddings"))
                    .ok_or("pads missing")?
                    .to_vec()
            };
            let axes: Vec<usize> = match n.input(3) {
                Some(_) if opset >= 18 => const_ints(3, "axes")?
                    .iter()
                    .map(|&a| norm_axis(a, x.len()))
                    .collect::<Result<_, _>>()?,
                _ => (0..x.len()).collect(),
            };
            if pads.len() != 2 * axes.len() {
                return Err(format!("{} pads for {} axes", pads.len(), axes.len()));
            }
            let mut out = x.to_vec();
            for (i, &a) in axes.iter().enumerate() {
                out[a] = pads[i]
                    .checked_add(pads[i + axes.len()])
                    .and_then(|p| p.checked_add(out[a]))
                    .ok_or("the padded size overflows")?;
            }
            Ok(vec![(out, None)])
        }
        "Resize" | "Upsample" => {
            let x = shape(0)?;
            let (scales_idx, sizes_idx) = match (op, opset) {
                ("Upsample", _) | ("Resize", 10) => (1, usize::MAX),
                _ => (2, 3),
            };
            let sizes = if sizes_idx != usize::MAX && n.input(sizes_idx).is_some() {
                Some(const_ints(sizes_idx, "sizes")?)
            } else {
                None
            };
            let out = match sizes {
                Some(sz) if !sz.is_empty() => {
                    if sz.len() != x.len() {
                        return Err(format!("{} sizes for rank {}", sz.len(), x.len()));
                    }
                    sz
                }
                _ => {
                    let sc = value(scales_idx)
                        .and_then(|t| t.as_f32().map(|c| c.to_vec()))
                        .or_else(|| match n.attr("scales") {
                            Some(Attr::Floats(f)) => Some(f.clone()),
                            _ => None,
                        })
                        .ok_or("its scales are not constant")?;
                    if sc.len() != x.len() {
                        return Err(format!("{} scales for rank {}", sc.len(), x.len()));
                    }
                    x.iter()
                        .zip(sc)
                        .map(|(&d, s)| (d as f64 * s as f64).floor() as i64)
                        .collect()
                }
            };
            Ok(vec![(out, None)])
        }
        "Squeeze" => {
            let x = shape(0)?;
            let axes: Option<Vec<i64>> = if opset >= 13 {
                match n.input(1) {
                    Some(_) => Some(const_ints(1, "axes")?),
                    None => None,
                }
            } else {
                n.attr_ints("axes").map(<[i64]>::to_vec)
            };
            let axes: Vec<usize> = match axes {
                Some(a) => a
                    .iter()
                    .map(|&a| norm_axis(a, x.len()))
                    .collect::<Result<_, _>>()?,
                None => (0..x.len()).filter(|&i| x[i] == 1).collect(),
            };
            let out: Vec<i64> = x
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect();
            let v = value(0).and_then(|t| const_tensor(&out, t.data.clone()));
            Ok(vec![(out, v)])
        }
        "Unsqueeze" => {
            let x = shape(0)?;
            let axes = if opset >= 13 {
                const_ints(1, "axes")?
            } else {
                n.attr_ints("axes").ok_or("axes missing")?.to_vec()
            };
            let rank = x.len() + axes.len();
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, rank))
                .collect::<Result<_, _>>()?;
            axes.sort_unstable();
            let mut out = Vec::with_capacity(rank);
            let mut src = x.iter();
            for i in 0..rank {
                if axes.contains(&i) {
                    out.push(1);
                } else {
                    out.push(*src.next().ok_or("too many axes")?);
                }
            }
            let v = value(0).and_then(|t| const_tensor(&out, t.data.clone()));
            Ok(vec![(out, v)])
        }
        "Shape" => {
            let x = shape(0)?;
            let r = x.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
            let start = clamp(n.attr_i("start").unwrap_or(0));
            let end = clamp(n.attr_i("end").unwrap_or(r));
            let vals: Vec<i64> = x[start as usize..end.max(start) as usize].to_vec();
            let dims = [vals.len() as i64];
            Ok(vec![(
                dims.to_vec(),
                const_tensor(&dims, TensorData::I64(vals)),
            )])
        }
        "Size" => {
            let x = shape(0)?;
            Ok(vec![(vec![], Some(Tensor::i64(vec![], vec![numel(x)?])))])
        }
        "Gather" => {
            let x = shape(0)?;
            let idx = shape(1)?;
            let axis = norm_axis(n.attr_i("axis").unwrap_or(0), x.len())?;
            let mut out = x[..axis].to_vec();
            out.extend_from_slice(idx);
            out.extend_from_slice(&x[axis + 1..]);
            let v = match (
                value(0).and_then(Tensor::as_i64),
                value(1).and_then(Tensor::as_i64),
            ) {
                (Some(data), Some(ind)) if x.len() == 1 => {
                    let vals: Option<Vec<i64>> = ind
                        .iter()
                        .map(|&i| {
                            let i = if i < 0 { i + x[0] } else { i };
                            data.get(i as usize).copied()
                        })
                        .collect();
                    vals.and_then(|v| const_tensor(&out, TensorData::I64(v)))
                }
                _ => None,
            };
            Ok(vec![(out, v)])
        }
        "Expand" => {
            let x = shape(0)?;
            let target = const_ints(1, "target shape")?;
            Ok(vec![(broadcast(x, &target)?, None)])
        }
        "Tile" => {
            let x = shape(0)?;
            let reps = const_ints(1, "repeats")?;
            if reps.len() != x.len() {
                return Err(format!("{} repeats for rank {}", reps.len(), x.len()));
            }
            let out = x
                .iter()
                .zip(reps)
                .map(|(&d, r)| d.checked_mul(r).ok_or("the tiled size overflows"))
                .collect::<Result<_, _>>()?;
            Ok(vec![(out, None)])
        }
        "ScatterND" | "ScatterElements" | "Scatter" => same(0),
        "ConstantOfShape" => {
            let dims = const_ints(0, "shape")?;
            let value = match n.attr("value") {
                Some(Attr::Tensor(t)) => t.clone(),
                _ => Tensor::f32(vec![1], vec![0.0]),
            };
            let count = numel(&dims)?;
            let v = match (&value.data, count as usize <= MAX_CONST) {
                (TensorData::I64(x), true) => x
                    .first()
                    .and_then(|&x| const_tensor(&dims, TensorData::I64(vec![x; count as usize]))),
                _ => None,
            };
            Ok(vec![(dims, v)])
        }
        "Constant" => {
            let t = super::graph::constant_value(n).map_err(|e| e.to_string())?;
            Ok(vec![(t.dims.iter().map(|&d| d as i64).collect(), Some(t))])
        }
        "Range" => {
            let (a, l, d) = (
                value(0).and_then(|t| t.as_f32()?.first().copied()),
                value(1).and_then(|t| t.as_f32()?.first().copied()),
                value(2).and_then(|t| t.as_f32()?.first().copied()),
            );
            match (a, l, d) {
                (Some(a), Some(l), Some(d)) if d != 0.0 => {
                    let count = (((l - a) / d).ceil()).max(0.0) as i64;
                    Ok(vec![(vec![count], None)])
                }
                _ => Err("its start, limit and delta are not constant".into()),
            }
        }
        "TopK" => {
            let x = shape(0)?;
            let axis = norm_axis(n.attr_i("axis").unwrap_or(-1), x.len())?;
            let k = if opset >= 10 {
                *const_ints(1, "k")?.first().ok_or("its k is empty")?
            } else {
                n.attr_i("k").ok_or("k missing")?
            };
            let mut out = x.to_vec();
            out[axis] = k;
            Ok(vec![(out.clone(), None), (out, None)])
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let x = shape(0)?;
            let b = n.attr_i("blocksize").ok_or("blocksize missing")?;
            if x.len() != 4 {
                return Err(format!("input of rank {} (expected 4)", x.len()));
            }
            if !(1..=MAX_WINDOW_ATTR).contains(&b) {
                return Err(format!("blocksize {b} is out of range"));
            }
            // dimensions ≤ MAX_DIM (2³²), b ≤ 2²⁰: b² and one dimension × b fit in i64
            let out = if op == "DepthToSpace" {
                vec![x[0], x[1] / (b * b), x[2] * b, x[3] * b]
            } else {
                let c = x[1]
                    .checked_mul(b * b)
                    .ok_or("the output channels overflow")?;
                vec![x[0], c, x[2] / b, x[3] / b]
            };
            Ok(vec![(out, None)])
        }
        _ => Err(format!(
            "crosscam's shape inference does not know the op {op}"
        )),
    }
}

/// Output spatial sizes of a sliding-window op (Conv, pools) from its attributes.
fn window_out(n: &Node, input: &[i64], k: &[i64], ceil: bool) -> Result<Vec<i64>, String> {
    let sp = input.len();
    if k.len() != sp {
        return Err(format!(
            "kernel rank {} does not match the {sp} spatial dimensions",
            k.len()
        ));
    }
    if let Some(bad) = k.iter().find(|&&v| !(1..=MAX_WINDOW_ATTR).contains(&v)) {
        return Err(format!("kernel size {bad} is out of range"));
    }
    let strides = window_attr(n, "strides", sp, 1, vec![1; sp])?;
    let dil = window_attr(n, "dilations", sp, 1, vec![1; sp])?;
    let pads = window_attr(n, "pads", 2 * sp, 0, vec![0; 2 * sp])?;
    let auto_pad = n.attr_s("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let mut out = Vec::with_capacity(sp);
    for i in 0..sp {
        let eff = dil[i] * (k[i] - 1) + 1;
        let o = match auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (input[i] + strides[i] - 1) / strides[i],
            "VALID" => (input[i] - eff) / strides[i] + 1,
            _ => {
                let span = input[i] + pads[i] + pads[sp + i] - eff;
                if span < 0 {
                    return Err(format!(
                        "the window ({eff}) is larger than the padded input ({})",
                        span + eff
                    ));
                }
                if ceil {
                    let mut o = (span + strides[i] - 1) / strides[i] + 1;
                    // the last window must start inside the input or its leading padding
                    if (o - 1) * strides[i] >= input[i] + pads[i] {
                        o -= 1;
                    }
                    o
                } else {
                    span / strides[i] + 1
                }
            }
        };
        out.push(o);
    }
    Ok(out)
}

/// A per-axis integer attribute of a sliding-window op: `len` entries, each in
/// `min..=MAX_WINDOW_ATTR` (strides and dilations from 1, pads from 0), or `default` when absent.
fn window_attr(
    n: &Node,
    name: &str,
    len: usize,
    min: i64,
    default: Vec<i64>,
) -> Result<Vec<i64>, String> {
    let v = match n.attr_ints(name) {
        Some(v) => v.to_vec(),
        None => default,
    };
    if v.len() != len {
        return Err(format!("{name} has {} entries, expected {len}", v.len()));
    }
    if let Some(bad) = v.iter().find(|&&x| !(min..=MAX_WINDOW_ATTR).contains(&x)) {
        return Err(format!("{name} holds {bad}, out of range"));
    }
    Ok(v)
}

fn matmul_shape(a: &[i64], b: &[i64]) -> Result<Vec<i64>, String> {
    if a.is_empty() || b.is_empty() {
        return Err(format!("MatMul of a scalar: {a:?} × {b:?}"));
    }
    let a2: Vec<i64> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<i64> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, k1) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (k2, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if k1 != k2 {
        return Err(format!("MatMul inner dimensions differ: {a:?} × {b:?}"));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

fn reshape(x: &[i64], target: &[i64], allow_zero: bool) -> Result<Vec<i64>, String> {
    let total = numel(x)?;
    let mut out: Vec<i64> = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, &t) in target.iter().enumerate() {
        match t {
            0 if !allow_zero => out.push(
                *x.get(i)
                    .ok_or("a 0 in the target shape has no input dimension to copy")?,
            ),
            -1 => {
                if infer_at.replace(i).is_some() {
                    return Err("the target shape has more than one -1".into());
                }
                out.push(1);
            }
            t if t < 0 => return Err(format!("invalid target dimension {t}")),
            t => out.push(t),
        }
    }
    let known = numel(&out)?;
    if let Some(i) = infer_at {
        if known == 0 || total % known != 0 {
            return Err(format!("cannot reshape {x:?} to {target:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {x:?} ({total} values) to {target:?}"
        ));
    }
    Ok(out)
}

fn slice_range(dim: i64, start: i64, end: i64, step: i64) -> Result<(i64, i64, i64), String> {
    if step == 0 {
        return Err("slice step 0".into());
    }
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let s = if start < 0 { start + dim } else { start };
    let e = if end < 0 { end + dim } else { end };
    if step > 0 {
        Ok((clamp(s, 0, dim), clamp(e, 0, dim), step))
    } else {
        Ok((clamp(s, 0, dim - 1), clamp(e, -1, dim - 1), step))
    }
}

fn cast(t: &Tensor, to: i32) -> Option<Tensor> {
    use super::proto::data_type;
    let dims = t.dims.clone();
    match to {
        data_type::INT64 | data_type::INT32 => Some(Tensor::i64(dims, t.as_i64()?)),
        data_type::FLOAT => Some(Tensor::f32(dims, t.as_f32()?.to_vec())),
        _ => None,
    }
}

fn int_binary(op: &str, a: Option<&Tensor>, b: Option<&Tensor>, out: &[i64]) -> Option<Tensor> {
    let (a, b) = (a?, b?);
    if !matches!(a.data, TensorData::I64(_) | TensorData::I32(_)) || out.len() > 1 {
        return None;
    }
    let (x, y) = (a.as_i64()?, b.as_i64()?);
    let n = x.len().max(y.len());
    let get = |v: &[i64], i: usize| -> Option<i64> {
        if v.len() == 1 {
            v.first().copied()
        } else {
            v.get(i).copied()
        }
    };
    let vals: Option<Vec<i64>> = (0..n)
        .map(|i| {
            let (p, q) = (get(&x, i)?, get(&y, i)?);
            match op {
                "Add" => p.checked_add(q),
                "Sub" => p.checked_sub(q),
                "Mul" => p.checked_mul(q),
                "Div" => p.checked_div_euclid(q),
                _ => None,
            }
        })
        .collect();
    const_tensor(out, TensorData::I64(vals?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast(&[2, 3], &[4, 3, 2]).is_err());
    }

    #[test]
    fn reshape_handles_zero_and_minus_one() {
        assert_eq!(
            reshape(&[4, 80, 13, 13], &[0, 80, -1], false).unwrap(),
            vec![4, 80, 169]
        );
        assert_eq!(
            reshape(&[2, 2048, 1, 1], &[2, -1], false).unwrap(),
            vec![2, 2048]
        );
        assert!(reshape(&[2, 3], &[4, -1], false).is_err());
    }

    #[test]
    fn matmul_shapes() {
        assert_eq!(matmul_shape(&[8, 512], &[512, 10]).unwrap(), vec![8, 10]);
        assert_eq!(matmul_shape(&[3, 8, 5], &[5, 2]).unwrap(), vec![3, 8, 2]);
        assert_eq!(matmul_shape(&[5], &[5, 2]).unwrap(), vec![2]);
    }

    /// One node reading input `x` of shape `x_dims` (and the given initializers), inferred alone.
    fn infer_one(node: Node, x_dims: &[i64], inits: &[(&str, Tensor)]) -> Shapes {
        use super::super::graph::{Graph, ValueInfo};
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            elem_type: 1,
            shape: Some(x_dims.iter().map(|&d| Dim::Fixed(d)).collect()),
        });
        for (k, t) in inits {
            g.initializers.insert(k.to_string(), t.clone());
        }
        g.nodes.push(node);
        let m = Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: g,
        };
        infer(&m, &input_shapes(&m, 1, None).unwrap())
    }

    fn gap(s: &Shapes) -> String {
        let (node, msg) = s.first_gap.clone().expect("inference stops");
        format!("{node}: {msg}")
    }

    #[test]
    fn malformed_window_attributes_stop_inference_at_the_node() {
        let w = Tensor::f32(vec![2, 1, 3, 3], vec![0.0; 18]);
        let conv = |attr: &str, v: Vec<i64>| {
            Node::new("Conv", "c", &["x", "w"], &["y"]).with_attr(attr, Attr::Ints(v))
        };
        for (attr, v, want) in [
            ("strides", vec![0, 0], "strides holds 0"),
            ("strides", vec![1], "strides has 1 entries"),
            ("pads", vec![1, 1, 1], "pads has 3 entries"),
            ("dilations", vec![], "dilations has 0 entries"),
            ("kernel_shape", vec![3, 3, 3], "kernel rank 3"),
            ("pads", vec![-1, 0, 0, 0], "pads holds -1"),
        ] {
            let s = infer_one(conv(attr, v), &[1, 1, 8, 8], &[("w", w.clone())]);
            let e = gap(&s);
            assert!(e.contains("node 'c' (Conv)") && e.contains(want), "{e}");
        }
        // a transposed convolution of a rank-2 input (was `x.len() - 2` underflow)
        let s = infer_one(
            Node::new("ConvTranspose", "t", &["x", "w"], &["y"]),
            &[1, 4],
            &[("w", Tensor::f32(vec![4, 2], vec![0.0; 8]))],
        );
        assert!(gap(&s).contains("(ConvTranspose)"), "{}", gap(&s));
    }

    #[test]
    fn short_slice_operands_and_huge_sizes_are_errors() {
        let ints = |v: &[i64]| Tensor::i64(vec![v.len()], v.to_vec());
        let s = infer_one(
            Node::new("Slice", "s", &["x", "st", "en", "ax"], &["y"]),
            &[4, 5],
            &[
                ("st", ints(&[0, 1])),
                ("en", ints(&[2])),
                ("ax", ints(&[0, 1])),
            ],
        );
        assert!(gap(&s).contains("2 starts, 1 ends"), "{}", gap(&s));
        // a step of i64::MIN no longer overflows
        let s = infer_one(
            Node::new("Slice", "s", &["x", "st", "en", "ax", "sp"], &["y"]),
            &[4, 5],
            &[
                ("st", ints(&[3])),
                ("en", ints(&[i64::MIN])),
                ("ax", ints(&[0])),
                ("sp", ints(&[i64::MIN])),
            ],
        );
        assert_eq!(s.get("y"), Some(&[1i64, 5][..]));
        let s = infer_one(
            Node::new("Tile", "t", &["x", "r"], &["y"]),
            &[4, 5],
            &[("r", ints(&[1 << 40, 1 << 40]))],
        );
        assert!(gap(&s).contains("out of range"), "{}", gap(&s));
        let s = infer_one(
            Node::new("Split", "sp", &["x"], &[]).with_attr("axis", Attr::Int(0)),
            &[4, 5],
            &[],
        );
        assert!(gap(&s).contains("0 outputs"), "{}", gap(&s));
    }

    #[test]
    fn declared_input_dimensions_are_checked() {
        use super::super::graph::{Graph, ValueInfo};
        for bad in [-3, MAX_DIM + 1] {
            let mut g = Graph::default();
            g.inputs.push(ValueInfo {
                name: "x".into(),
                elem_type: 1,
                shape: Some(vec![Dim::Fixed(1), Dim::Fixed(bad)]),
            });
            let m = Model {
                ir_version: 8,
                opset: 17,
                other_opsets: vec![],
                producer_name: String::new(),
                producer_version: String::new(),
                metadata: vec![],
                graph: g,
            };
            let e = input_shapes(&m, 1, None).unwrap_err().to_string();
            assert!(e.contains("input 'x'"), "{e}");
        }
    }

    #[test]
    fn ceil_mode_pooling_matches_pytorch() {
        // PyTorch MaxPool2d(3, stride 2, padding 1): floor mode 56 → 28; ceil mode 56 → 29, 55 → 28
        let n = Node::new("MaxPool", "p", &["x"], &["y"])
            .with_attr("kernel_shape", Attr::Ints(vec![3, 3]))
            .with_attr("strides", Attr::Ints(vec![2, 2]))
            .with_attr("pads", Attr::Ints(vec![1, 1, 1, 1]));
        assert_eq!(
            window_out(&n, &[56, 55], &[3, 3], true).unwrap(),
            vec![29, 28]
        );
        assert_eq!(
            window_out(&n, &[56, 55], &[3, 3], false).unwrap(),
            vec![28, 28]
        );
        assert_eq!(
            window_out(&n, &[112, 111], &[3, 3], false).unwrap(),
            vec![56, 56]
        );
    }
}
