//! What a network costs: multiply-accumulates (MACs) of its conv and fully-connected layers, and
//! its learnable parameters — the convention re-id papers and torchvision tables use (they print
//! GMACs as "GFLOPs"; docs/models.md lists the bundled models' figures).
//!
//! MACs: Conv = output elements × (input channels / groups) × kernel area; ConvTranspose = input
//! elements × (output channels / groups) × kernel area; Gemm / MatMul = M × N × K per batch item.
//! Pooling, normalisation, activations and additions are not counted.
//! Parameters: float constants that a layer learns — conv / linear weights and biases, the scale
//! and bias of normalisation layers (not BatchNorm running statistics), PReLU slopes, and
//! non-scalar constants added or multiplied in. Shared weights count once.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::OnnxError;
use super::graph::{Model, Node};
use super::shape::Shapes;

#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// MACs for one input item (batch 1).
    pub macs: u64,
    pub params: u64,
    /// MACs of each conv / linear node, in graph order.
    pub layers: Vec<LayerCost>,
    /// False when some conv / linear node's shape could not be inferred (its MACs are missing).
    pub complete: bool,
    pub op_counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerCost {
    pub node: String,
    pub op: String,
    pub macs: u64,
    pub output_shape: Vec<i64>,
}

/// Counts MACs from `shapes` (inferred with batch 1) and parameters from the initializers.
/// `Constant` nodes should be folded first (`Graph::fold_constant_nodes`) so their weights count.
/// A conv or linear node whose shapes cannot make that layer (a weight of rank 1, a Gemm input of
/// rank 1, no output) is an error naming the node.
pub fn cost(model: &Model, shapes: &Shapes) -> Result<Cost, OnnxError> {
    let g = &model.graph;
    let producers = g.producers();
    // follow Identity chains back to the initializer they forward (shared weights)
    let resolve = |name: &str| -> Option<String> {
        let mut cur = name.to_string();
        for _ in 0..16 {
            if g.initializers.contains_key(&cur) {
                return Some(cur);
            }
            let p = &g.nodes[*producers.get(cur.as_str())?];
            // QDQ models: an int8 weight (int32 bias) behind its DequantizeLinear
            if p.op != "Identity" && p.op != "DequantizeLinear" {
                return None;
            }
            cur = p.inputs.first()?.clone();
        }
        None
    };
    let mut learnable: HashSet<String> = HashSet::new();
    let mut layers = Vec::new();
    let mut complete = true;
    let mut op_counts = BTreeMap::new();
    let mut macs: u64 = 0;
    for n in &g.nodes {
        *op_counts.entry(n.op.clone()).or_insert(0) += 1;
        let learn_inputs: &[usize] = match n.op.as_str() {
            "Conv"
            | "ConvTranspose"
            | "Gemm"
            | "BatchNormalization"
            | "InstanceNormalization"
            | "LayerNormalization"
            | "GroupNormalization" => &[1, 2],
            "PRelu" => &[1],
            "MatMul" | "Add" | "Sub" | "Mul" | "Div" => &[0, 1],
            _ => &[],
        };
        for &i in learn_inputs {
            if let Some(init) = n.input(i).and_then(resolve) {
                let t = &g.initializers[&init];
                let elementwise = matches!(n.op.as_str(), "Add" | "Sub" | "Mul" | "Div");
                let quantized = matches!(
                    t.data_type(),
                    crate::onnx::proto::data_type::INT8
                        | crate::onnx::proto::data_type::UINT8
                        | crate::onnx::proto::data_type::INT32
                );
                if (t.is_float() || quantized) && (!elementwise || t.numel() > 1) {
                    learnable.insert(init);
                }
            }
        }
        if !matches!(n.op.as_str(), "Conv" | "ConvTranspose" | "Gemm" | "MatMul") {
            continue;
        }
        let bad = |msg: String| OnnxError::Node {
            node: n.describe(),
            msg,
        };
        let out_name = n
            .outputs
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("it has no output".into()))?;
        match layer_macs(n, shapes, out_name).map_err(bad)? {
            Some(m) => {
                macs = macs
                    .checked_add(m)
                    .ok_or_else(|| bad("the network's MACs overflow".into()))?;
                layers.push(LayerCost {
                    node: if n.name.is_empty() {
                        out_name.clone()
                    } else {
                        n.name.clone()
                    },
                    op: n.op.clone(),
                    macs: m,
                    output_shape: shapes
                        .get(out_name)
                        .map(<[i64]>::to_vec)
                        .unwrap_or_default(),
                });
            }
            None => complete = false,
        }
    }
    let params = learnable
        .iter()
        .map(|k| g.initializers[k].numel() as u64)
        .sum();
    Ok(Cost {
        macs,
        params,
        layers,
        complete,
        op_counts,
    })
}

/// MACs of one conv / linear node, `None` when its shapes are unknown.
fn layer_macs(n: &Node, shapes: &Shapes, out_name: &str) -> Result<Option<u64>, String> {
    let out = shapes.get(out_name);
    let x = n.input(0).and_then(|x| shapes.get(x));
    let w = n.input(1).and_then(|w| shapes.get(w));
    // element counts of inferred shapes are bounded (shape::MAX_NUMEL); their product may not be
    let count =
        |s: &[i64]| -> Result<u64, String> { crate::onnx::shape::numel(s).map(|v| v as u64) };
    let mul = |a: u64, b: u64| {
        a.checked_mul(b)
            .ok_or_else(|| "its MACs overflow".to_string())
    };
    let weight_tail = |w: &[i64]| -> Result<u64, String> {
        match w.get(1..) {
            Some(tail) if !tail.is_empty() => count(tail),
            _ => Err(format!(
                "weight of shape {w:?} (a convolution needs rank ≥ 3)"
            )),
        }
    };
    Ok(match n.op.as_str() {
        "Conv" => match (out, w) {
            (Some(out), Some(w)) => Some(mul(count(out)?, weight_tail(w)?)?),
            _ => None,
        },
        // weight [Cin, Cout/group, k...]: each input element feeds Cout/group × kernel outputs
        "ConvTranspose" => match (x, w) {
            (Some(x), Some(w)) => Some(mul(count(x)?, weight_tail(w)?)?),
            _ => None,
        },
        "Gemm" => match (out, x) {
            (Some(out), Some(a)) => {
                if a.len() != 2 {
                    return Err(format!("Gemm input of shape {a:?} (expected rank 2)"));
                }
                let k = if n.attr_i("transA").unwrap_or(0) == 1 {
                    a[0]
                } else {
                    a[1]
                };
                Some(mul(count(out)?, count(&[k])?)?)
            }
            _ => None,
        },
        "MatMul" => match (out, x) {
            (Some(out), Some(a)) => {
                Some(mul(count(out)?, count(&a[a.len().saturating_sub(1)..])?)?)
            }
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::graph::Graph;

    fn model(nodes: Vec<Node>) -> Model {
        Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: Graph {
                nodes,
                ..Graph::default()
            },
        }
    }

    #[test]
    fn malformed_layers_are_errors_naming_the_node() {
        let mut shapes = Shapes::default();
        for (k, v) in [("a", vec![8]), ("b", vec![8, 4]), ("y", vec![4])] {
            shapes.dims.insert(k.into(), v);
        }
        // a Gemm whose input has rank 1 (was `a[1]` out of bounds)
        let m = model(vec![Node::new("Gemm", "fc", &["a", "b"], &["y"])]);
        let e = cost(&m, &shapes).unwrap_err().to_string();
        assert!(
            e.contains("node 'fc' (Gemm)") && e.contains("rank 2"),
            "{e}"
        );
        // a conv without outputs (was `outputs[0]`)
        let m = model(vec![Node::new("Conv", "c", &["a", "b"], &[])]);
        let e = cost(&m, &shapes).unwrap_err().to_string();
        assert!(
            e.contains("node 'c' (Conv)") && e.contains("no output"),
            "{e}"
        );
        // a conv weight of rank 0
        shapes.dims.insert("w0".into(), vec![]);
        let m = model(vec![Node::new("Conv", "c", &["a", "w0"], &["y"])]);
        let e = cost(&m, &shapes).unwrap_err().to_string();
        assert!(e.contains("node 'c' (Conv)"), "{e}");
    }
}
