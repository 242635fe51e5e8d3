//! `crosscam model info`: what an ONNX file is — tensors, opset, ops, parameters and MACs.

use std::path::Path;

use serde::Serialize;

use super::{Model, OnnxError, cost, shape};

#[derive(Debug, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// Declared shape; symbolic dimensions as their names.
    pub shape: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelInfo {
    pub file: String,
    pub producer: String,
    pub opset: i64,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
    /// The input shape the MACs were counted for (batch 1).
    pub counted_for: Vec<i64>,
    /// Multiply-accumulates of conv and fully-connected layers for one input.
    pub macs: u64,
    pub params: u64,
    /// False when some layer's shape could not be inferred (its MACs are missing from `macs`).
    pub macs_complete: bool,
    /// Why inference stopped, when it did.
    pub shape_gap: Option<String>,
    pub op_counts: std::collections::BTreeMap<String, usize>,
    pub layers: Vec<cost::LayerCost>,
}

/// Parses `3x256x128` (or `256x128`, channels then assumed 3).
pub fn parse_input_size(s: &str) -> Result<Vec<i64>, String> {
    let parts: Result<Vec<i64>, _> = s
        .split(['x', 'X', ','])
        .map(|p| p.trim().parse::<i64>())
        .collect();
    match parts {
        Ok(p) if p.iter().all(|&d| d > 0) && p.len() == 3 => Ok(p),
        Ok(p) if p.iter().all(|&d| d > 0) && p.len() == 2 => Ok(vec![3, p[0], p[1]]),
        _ => Err(format!(
            "expected an input size like 3x256x128 (channels x height x width), found {s:?}"
        )),
    }
}

/// What the ONNX file at `path` is, its MACs counted for `input` (C×H×W). Without `input`, a
/// bundled model whose input height or width is dynamic (NanoDet) is counted at the nominal size
/// of the bundled manifest's entry for the same file (same checksum).
pub fn model_info(path: &Path, input: Option<&[i64]>) -> Result<ModelInfo, OnnxError> {
    let model = Model::load(path)?;
    let nominal = match input {
        Some(_) => None,
        None => nominal_input(&model, path),
    };
    describe(
        model,
        &path.display().to_string(),
        input.or(nominal.as_deref()),
    )
    .map_err(|e| e.in_file(path))
}

/// The C×H×W of the bundled manifest's entry for `path` when `model`'s input declares a dynamic
/// dimension other than the batch.
fn nominal_input(model: &Model, path: &Path) -> Option<Vec<i64>> {
    let declared = model.graph.inputs.first()?.shape.as_ref()?;
    if declared.iter().skip(1).all(|d| d.fixed().is_some()) {
        return None;
    }
    let sha = crate::models::sha256_file(path).ok()?;
    let manifest = crate::models::Manifest::bundled().ok()?;
    let entry = manifest
        .models
        .iter()
        .find(|m| m.sha256.eq_ignore_ascii_case(&sha))?;
    let shape = &entry.input.shape;
    (shape.len() == declared.len() && shape[1..].iter().all(|&d| d > 0))
        .then(|| shape[1..].to_vec())
}

/// What `model` is, for a file called `file` (errors are not yet tagged with the file).
pub fn describe(
    mut model: Model,
    file: &str,
    input: Option<&[i64]>,
) -> Result<ModelInfo, OnnxError> {
    let declared = |v: &super::ValueInfo| TensorInfo {
        name: v.name.clone(),
        shape: v
            .shape
            .as_ref()
            .map(|s| s.iter().map(|d| d.to_string()).collect())
            .unwrap_or_default(),
    };
    let inputs = model.graph.inputs.iter().map(declared).collect();
    let outputs = model.graph.outputs.iter().map(declared).collect();
    model.graph.fold_constant_nodes()?;
    let in_shapes = shape::input_shapes(&model, 1, input)?;
    let shapes = shape::infer(&model, &in_shapes);
    let c = cost::cost(&model, &shapes)?;
    let counted_for = model
        .graph
        .inputs
        .first()
        .and_then(|i| in_shapes.get(&i.name))
        .cloned()
        .unwrap_or_default();
    Ok(ModelInfo {
        file: file.to_string(),
        producer: format!("{} {}", model.producer_name, model.producer_version)
            .trim()
            .to_string(),
        opset: model.opset,
        inputs,
        outputs,
        counted_for,
        macs: c.macs,
        params: c.params,
        macs_complete: c.complete,
        shape_gap: shapes.first_gap.map(|(n, m)| format!("{n}: {m}")),
        op_counts: c.op_counts,
        layers: c.layers,
    })
}

pub fn render(i: &ModelInfo) -> String {
    let mut s = format!(
        "{}\n  producer: {}  opset: {}\n",
        i.file, i.producer, i.opset
    );
    for t in &i.inputs {
        s.push_str(&format!("  input   {} [{}]\n", t.name, t.shape.join(", ")));
    }
    for t in &i.outputs {
        s.push_str(&format!("  output  {} [{}]\n", t.name, t.shape.join(", ")));
    }
    s.push_str(&format!(
        "  params  {:.3} M\n  MACs    {:.3} G for input {:?} (conv + fully-connected multiply-accumulates; papers call these GFLOPs){}\n",
        i.params as f64 / 1e6,
        i.macs as f64 / 1e9,
        i.counted_for,
        if i.macs_complete { String::new() } else { " — INCOMPLETE".into() }
    ));
    if let Some(g) = &i.shape_gap {
        s.push_str(&format!("  note    shape inference stopped at {g}\n"));
    }
    let ops: Vec<String> = i
        .op_counts
        .iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect();
    s.push_str(&format!("  ops     {}\n", ops.join(" ")));
    s
}
