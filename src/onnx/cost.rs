//! What a network costs: multiply-accumulates (MACs) of its conv and fully-connected layers, and
//! its learnable parameters — the convention re-id papers and torchvision tables use (they print
//! GMACs as "GFLOPs"; PLATFORM.md has reference figures).
//!
//! MACs: Conv = output elements × (input channels / groups) × kernel area; ConvTranspose = input
//! elements × (output channels / groups) × kernel area; Gemm / MatMul = M × N × K per batch item.
//! Pooling, normalisation, activations and additions are not counted.
//! Parameters: float constants that a layer learns — conv / linear weights and biases, the scale
//! and bias of normalisation layers (not BatchNorm running statistics), PReLU slopes, and
//! non-scalar constants added or multiplied in. Shared weights count once.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::graph::Model;
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
pub fn cost(model: &Model, shapes: &Shapes) -> Cost {
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
            if p.op != "Identity" {
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
                if t.is_float() && (!elementwise || t.numel() > 1) {
                    learnable.insert(init);
                }
            }
        }
        let layer_macs = match n.op.as_str() {
            "Conv" => shapes
                .get(&n.outputs[0])
                .zip(n.input(1).and_then(|w| shapes.get(w)))
                .map(|(out, w)| {
                    let per_out: i64 = w[1..].iter().product();
                    out.iter().product::<i64>() as u64 * per_out as u64
                }),
            // weight [Cin, Cout/group, k...]: each input element feeds Cout/group × kernel outputs
            "ConvTranspose" => shapes
                .get(&n.inputs[0])
                .zip(n.input(1).and_then(|w| shapes.get(w)))
                .map(|(x, w)| {
                    let per_in: i64 = w[1..].iter().product();
                    x.iter().product::<i64>() as u64 * per_in as u64
                }),
            "Gemm" => shapes
                .get(&n.outputs[0])
                .zip(shapes.get(&n.inputs[0]))
                .map(|(out, a)| {
                    let k = if n.attr_i("transA").unwrap_or(0) == 1 {
                        a[0]
                    } else {
                        a[1]
                    };
                    out.iter().product::<i64>() as u64 * k as u64
                }),
            "MatMul" => shapes
                .get(&n.outputs[0])
                .zip(shapes.get(&n.inputs[0]))
                .map(|(out, a)| {
                    out.iter().product::<i64>() as u64 * *a.last().unwrap_or(&1) as u64
                }),
            _ => continue,
        };
        match layer_macs {
            Some(m) => {
                macs += m;
                layers.push(LayerCost {
                    node: if n.name.is_empty() {
                        n.outputs[0].clone()
                    } else {
                        n.name.clone()
                    },
                    op: n.op.clone(),
                    macs: m,
                    output_shape: shapes
                        .get(&n.outputs[0])
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
    Cost {
        macs,
        params,
        layers,
        complete,
        op_counts,
    }
}
