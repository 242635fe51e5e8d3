//! Import of an ONNX model into the form the pruner edits, and the list of ops it understands.
//!
//! Real exports differ in ways that do not change the network: the legacy PyTorch exporter writes
//! constants as `Constant` nodes and routes (shared) weights through `Identity` nodes; the
//! torch.export-based exporter may transpose a linear weight with a `Transpose` node on the
//! initializer. [`import`] normalises these so that every weight the pruner slices is an
//! initializer read directly by its layer. [`check_supported`] then refuses, by node name and op,
//! every op on the data path that the pruner cannot reason about — never a silently wrong model.

use std::collections::{HashMap, HashSet};

use crate::onnx::{Model, Tensor};

use super::PruneError;

/// Ops the pruner understands on the data path (tensors computed from the model input). Their
/// channel semantics are implemented in `groups.rs`; anything else is refused by name.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "Mish",
    "Softplus",
    "Identity",
    "Dropout",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceMax",
    "ReduceSum",
    "ReduceL2",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Max",
    "Min",
    "Sum",
    "Gemm",
    "MatMul",
    "Softmax",
    "LogSoftmax",
    "LpNormalization",
    "Shape",
    "Size",
];

/// Element-wise ops with one data input that keep every channel where it is.
pub(crate) const UNARY_PASS_THROUGH: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "Mish",
    "Softplus",
    "Identity",
    "Dropout",
    "Softmax",
    "LogSoftmax",
];

/// Non-linearities whose outputs are the activations that `apoz`, `mean-activation` and `taylor`
/// look at.
pub(crate) const ACTIVATIONS: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Elu",
    "Selu",
    "Gelu",
    "Mish",
    "Softplus",
];

/// A normalised copy of `model`: `Constant` nodes folded into initializers, `Identity` nodes that
/// only forward an initializer bypassed, `Transpose`s of initializers folded, dead nodes removed.
/// The computed function is unchanged.
pub fn import(model: &Model) -> Result<Model, PruneError> {
    let mut m = model.clone();
    m.graph.fold_constant_nodes()?;
    loop {
        let before = m.graph.nodes.len();
        bypass_weight_identities(&mut m);
        fold_weight_transposes(&mut m)?;
        m.graph.remove_dead();
        if m.graph.nodes.len() == before {
            break;
        }
    }
    if m.graph.inputs.is_empty() {
        return Err(PruneError::Invalid("the model has no input".into()));
    }
    Ok(m)
}

/// `Identity(initializer)` → the initializer itself (unless the Identity output is a graph output).
fn bypass_weight_identities(m: &mut Model) {
    let g = &mut m.graph;
    let mut renames: Vec<(String, String)> = Vec::new();
    for n in &g.nodes {
        if n.op == "Identity"
            && n.outputs.len() == 1
            && let Some(src) = n.input(0)
            && g.initializers.contains_key(src)
            && !g.is_graph_output(&n.outputs[0])
        {
            renames.push((n.outputs[0].clone(), src.to_string()));
        }
    }
    for (from, to) in renames {
        g.rename_uses(&from, &to);
    }
}

/// `Transpose(initializer)` → a transposed initializer (torch.export writes linear layers so).
fn fold_weight_transposes(m: &mut Model) -> Result<(), PruneError> {
    let g = &mut m.graph;
    let mut folded: Vec<(String, Tensor)> = Vec::new();
    for n in &g.nodes {
        if n.op == "Transpose"
            && n.outputs.len() == 1
            && let Some(src) = n.input(0)
            && let Some(t) = g.initializers.get(src)
            && !g.is_graph_output(&n.outputs[0])
        {
            let perm: Vec<usize> = match n.attr_ints("perm") {
                Some(p) => p.iter().map(|&v| v as usize).collect(),
                None => (0..t.dims.len()).rev().collect(),
            };
            if let Some(tt) = transpose(t, &perm) {
                folded.push((n.outputs[0].clone(), tt));
            }
        }
    }
    for (name, t) in folded {
        // the node that produced `name` becomes dead once its output is an initializer
        g.nodes.retain(|n| !n.outputs.iter().any(|o| o == &name));
        g.initializers.insert(name, t);
    }
    Ok(())
}

/// Transposes an f32 tensor (`None` for other element types or a bad permutation).
fn transpose(t: &Tensor, perm: &[usize]) -> Option<Tensor> {
    let data = t.f32_data()?;
    let rank = t.dims.len();
    if perm.len() != rank || (0..rank).any(|i| !perm.contains(&i)) {
        return None;
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| t.dims[p]).collect();
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * t.dims[i + 1];
    }
    let n = data.len();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    for _ in 0..n {
        let src: usize = (0..rank).map(|k| idx[k] * in_strides[perm[k]]).sum();
        out.push(data[src]);
        for k in (0..rank).rev() {
            idx[k] += 1;
            if idx[k] < out_dims[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Some(Tensor::f32(out_dims, out))
}

/// Values computed from the model input (the data path), as opposed to weights and the small
/// integer tensors of shape computations. `Shape` / `Size` end the data path.
pub fn data_values(m: &Model) -> HashSet<String> {
    let mut data: HashSet<String> = m.graph.inputs.iter().map(|i| i.name.clone()).collect();
    for n in &m.graph.nodes {
        if matches!(n.op.as_str(), "Shape" | "Size") {
            continue;
        }
        if n.inputs.iter().any(|i| data.contains(i)) {
            data.extend(n.outputs.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    data
}

/// Refuses the first data-path op the pruner does not know, naming the node and the op.
pub fn check_supported(m: &Model) -> Result<(), PruneError> {
    let data = data_values(m);
    let supported: HashSet<&str> = SUPPORTED_OPS.iter().copied().collect();
    for n in &m.graph.nodes {
        if !n.inputs.iter().any(|i| data.contains(i)) {
            continue;
        }
        let foreign = !(n.domain.is_empty() || n.domain == "ai.onnx");
        if foreign || !supported.contains(n.op.as_str()) {
            return Err(PruneError::Unsupported {
                node: n.describe(),
                op: if foreign {
                    format!("{}::{}", n.domain, n.op)
                } else {
                    n.op.clone()
                },
                why: "it is not one of the ops the pruner knows (docs/pruning.md, 'Which models')"
                    .into(),
            });
        }
    }
    Ok(())
}

/// How many nodes read each initializer (a weight read by two layers must be sliced the same way
/// for both, or copied).
pub(crate) fn initializer_readers(m: &Model) -> HashMap<String, usize> {
    let mut c: HashMap<String, usize> = HashMap::new();
    for n in &m.graph.nodes {
        for i in &n.inputs {
            if m.graph.initializers.contains_key(i) {
                *c.entry(i.clone()).or_default() += 1;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{Attr, Graph, Node, ValueInfo};

    fn vi(name: &str) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            elem_type: 1,
            shape: None,
        }
    }

    #[test]
    fn transpose_matches_index_arithmetic() {
        let t = Tensor::f32(vec![2, 3], vec![0., 1., 2., 3., 4., 5.]);
        let tt = transpose(&t, &[1, 0]).unwrap();
        assert_eq!(tt.dims, vec![3, 2]);
        assert_eq!(tt.f32_data().unwrap(), &[0., 3., 1., 4., 2., 5.]);
    }

    #[test]
    fn identity_and_transpose_weights_are_folded() {
        let mut g = Graph::default();
        g.inputs.push(vi("x"));
        g.outputs.push(vi("y"));
        g.initializers
            .insert("w".into(), Tensor::f32(vec![2, 3], vec![1.; 6]));
        g.nodes.push(Node::new("Identity", "id", &["w"], &["w1"]));
        g.nodes.push(
            Node::new("Transpose", "t", &["w1"], &["wt"]).with_attr("perm", Attr::Ints(vec![1, 0])),
        );
        g.nodes
            .push(Node::new("MatMul", "mm", &["x", "wt"], &["y"]));
        let m = Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: g,
        };
        let m = import(&m).unwrap();
        assert_eq!(m.graph.nodes.len(), 1);
        assert_eq!(m.graph.nodes[0].inputs[1], "wt");
        assert_eq!(m.graph.initializers["wt"].dims, vec![3, 2]);
    }

    #[test]
    fn unsupported_data_op_is_named() {
        let mut g = Graph::default();
        g.inputs.push(vi("x"));
        g.outputs.push(vi("y"));
        g.nodes.push(Node::new("Relu", "r", &["x"], &["a"]));
        g.nodes.push(Node::new("LSTM", "my_lstm", &["a"], &["y"]));
        let m = Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: g,
        };
        let e = check_supported(&m).unwrap_err().to_string();
        assert!(e.contains("my_lstm") && e.contains("LSTM"), "{e}");
    }
}
