//! Removes the unselected channels of each group from every layer that touches them, consistently:
//! output filters of producers, input slices of consumers (expanded when a flatten put several
//! features per channel), per-channel parameters (BatchNorm, biases, scales), depthwise group
//! counts, reshape targets that spell out a channel count, and the declared output shapes. The
//! result is checked by re-running shape inference before anyone writes it.

use std::collections::HashMap;

use crate::onnx::{Dim, Model, Tensor, TensorData, shape};

use super::PruneError;
use super::groups::{Analysis, AnalyzeOptions, LinearKind, Role};
use super::ir;
use super::strategy::Selection;

/// Slices `t` along `axis`, keeping the entries `idx` (in that order).
pub fn take(t: &Tensor, axis: usize, idx: &[usize]) -> Result<Tensor, String> {
    if axis >= t.dims.len() {
        return Err(format!("axis {axis} out of range for shape {:?}", t.dims));
    }
    let d = t.dims[axis];
    if let Some(&bad) = idx.iter().find(|&&i| i >= d) {
        return Err(format!(
            "index {bad} out of range for axis {axis} of shape {:?}",
            t.dims
        ));
    }
    let outer: usize = t.dims[..axis].iter().product();
    let inner: usize = t.dims[axis + 1..].iter().product();
    let mut dims = t.dims.clone();
    dims[axis] = idx.len();
    fn gather<T: Copy>(v: &[T], outer: usize, d: usize, inner: usize, idx: &[usize]) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let s = (o * d + i) * inner;
                out.extend_from_slice(&v[s..s + inner]);
            }
        }
        out
    }
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32(gather(v, outer, d, inner, idx)),
        TensorData::F64(v) => TensorData::F64(gather(v, outer, d, inner, idx)),
        TensorData::I64(v) => TensorData::I64(gather(v, outer, d, inner, idx)),
        TensorData::I32(v) => TensorData::I32(gather(v, outer, d, inner, idx)),
        _ => return Err("only float32/float64/int tensors can be sliced".into()),
    };
    Ok(Tensor { dims, data })
}

/// Channel indices → feature indices when each channel spans `inner` consecutive features.
pub fn expand(keep: &[usize], inner: usize) -> Vec<usize> {
    if inner == 1 {
        return keep.to_vec();
    }
    keep.iter()
        .flat_map(|&c| c * inner..(c + 1) * inner)
        .collect()
}

/// Writes sliced initializers. An initializer that several nodes read (PyTorch's exporter shares
/// one tensor between layers whose values are equal, e.g. the zero biases of fused BatchNorms in a
/// fresh network) is copied on write: its slices are collected per reader and placed by
/// [`Writer::finish`], so a reader that is not sliced, or sliced differently, keeps its own tensor.
struct Writer<'a> {
    orig: &'a Model,
    out: Model,
    /// How many (node, input) slots read each initializer.
    readers: HashMap<String, usize>,
    /// Slices of shared initializers: name → (node, input) → tensor.
    shared: HashMap<String, HashMap<(usize, usize), Tensor>>,
}

impl Writer<'_> {
    fn put(&mut self, node: usize, input: usize, t: Tensor) -> Result<(), PruneError> {
        let n = &self.out.graph.nodes[node];
        let name = n.inputs.get(input).cloned().ok_or_else(|| {
            PruneError::Invalid(format!("{}: it has no input {input}", n.describe()))
        })?;
        if self.readers.get(&name).copied().unwrap_or(0) <= 1 {
            self.out.graph.initializers.insert(name, t);
            return Ok(());
        }
        self.shared
            .entry(name)
            .or_default()
            .insert((node, input), t);
        Ok(())
    }

    /// Places the slices of shared initializers. When every reader got the same slice, it replaces
    /// the original under its name; otherwise each distinct slice becomes a new initializer for
    /// the readers that use it, and the original stays for the readers left as they were (it is
    /// dropped when none is left).
    fn finish(mut self) -> Model {
        let mut names: Vec<String> = self.shared.keys().cloned().collect();
        names.sort();
        for name in names {
            let mut slices: Vec<((usize, usize), Tensor)> = self
                .shared
                .remove(&name)
                .unwrap_or_default()
                .into_iter()
                .collect();
            slices.sort_by_key(|(slot, _)| *slot);
            let all_read = slices.len() == self.readers.get(&name).copied().unwrap_or(0);
            if all_read && slices.windows(2).all(|w| w[0].1 == w[1].1) {
                if let Some((_, t)) = slices.pop() {
                    self.out.graph.initializers.insert(name, t);
                }
                continue;
            }
            let mut copies: Vec<(String, Tensor)> = Vec::new();
            for ((node, input), t) in slices {
                let copy = match copies.iter().find(|(_, c)| *c == t) {
                    Some((c, _)) => c.clone(),
                    None => {
                        let fresh = self.out.graph.fresh_name(&format!("{name}.pruned"));
                        self.out.graph.initializers.insert(fresh.clone(), t.clone());
                        copies.push((fresh.clone(), t));
                        fresh
                    }
                };
                self.out.graph.nodes[node].inputs[input] = copy;
            }
            let still_read = self
                .out
                .graph
                .nodes
                .iter()
                .any(|n| n.inputs.contains(&name))
                || self.out.graph.is_graph_output(&name);
            if !still_read {
                self.out.graph.initializers.remove(&name);
            }
        }
        self.out
    }

    fn orig_input(&self, node: usize, input: usize) -> Result<&Tensor, PruneError> {
        let n = &self.orig.graph.nodes[node];
        n.input(input)
            .and_then(|s| self.orig.graph.initializers.get(s))
            .ok_or_else(|| {
                PruneError::Invalid(format!("{}: input {input} is not stored", n.describe()))
            })
    }

    /// Slices input `input` of `node` along the given (axis, indices) pairs.
    fn slice(
        &mut self,
        node: usize,
        input: usize,
        cuts: &[(usize, Option<&[usize]>)],
    ) -> Result<(), PruneError> {
        if cuts.iter().all(|(_, k)| k.is_none())
            || self.orig.graph.nodes[node].input(input).is_none()
        {
            return Ok(());
        }
        let mut t = self.orig_input(node, input)?.clone();
        for (axis, keep) in cuts {
            if let Some(k) = keep {
                t = take(&t, *axis, k).map_err(|e| {
                    PruneError::Invalid(format!(
                        "{} input {input}: {e}",
                        self.orig.graph.nodes[node].describe()
                    ))
                })?;
            }
        }
        self.put(node, input, t)
    }
}

/// The pruned model. `analysis` must be of `model`, `sel` must come from its groups.
pub fn apply(
    model: &Model,
    analysis: &Analysis,
    sel: &Selection,
    opts: &AnalyzeOptions,
) -> Result<Model, PruneError> {
    let keep = |space: usize| -> Option<&[usize]> {
        sel.keep
            .get(analysis.space_group[space])
            .and_then(|k| k.as_deref())
    };
    for (g, k) in sel.keep.iter().enumerate() {
        if let Some(k) = k {
            let grp = &analysis.groups[g];
            if !grp.prunable() {
                return Err(PruneError::Invalid(format!(
                    "group '{}' may not be pruned: {:?}",
                    grp.name, grp.fixed
                )));
            }
            if k.is_empty()
                || k.windows(2).any(|w| w[0] >= w[1])
                || k.iter().any(|&c| c >= grp.channels)
            {
                return Err(PruneError::Invalid(format!(
                    "the selection for group '{}' is not a sorted, non-empty subset of its {} channels",
                    grp.name, grp.channels
                )));
            }
        }
    }
    let mut w = Writer {
        orig: model,
        out: model.clone(),
        readers: ir::initializer_readers(model),
        shared: HashMap::new(),
    };
    for (idx, role) in &analysis.roles {
        let idx = *idx;
        match role {
            Role::Conv { input, output } => {
                let (ko, ki) = (keep(*output), keep(input.space));
                w.slice(idx, 1, &[(0, ko), (1, ki)])?;
                w.slice(idx, 2, &[(0, ko)])?;
            }
            Role::Depthwise { layout } => {
                if let Some(k) = keep(layout.space) {
                    w.slice(idx, 1, &[(0, Some(k))])?;
                    w.slice(idx, 2, &[(0, Some(k))])?;
                    w.out.graph.nodes[idx]
                        .set_attr("group", crate::onnx::Attr::Int(k.len() as i64));
                }
            }
            Role::Norm { layout } => {
                let k = keep(layout.space);
                for i in 1..=4 {
                    w.slice(idx, i, &[(0, k)])?;
                }
            }
            Role::Linear {
                input,
                output,
                kind,
            } => {
                let ko = keep(*output);
                let ki = keep(input.space).map(|k| expand(k, input.inner));
                let ki = ki.as_deref();
                match kind {
                    LinearKind::GemmTransB => w.slice(idx, 1, &[(0, ko), (1, ki)])?,
                    LinearKind::Gemm | LinearKind::MatMul => {
                        w.slice(idx, 1, &[(0, ki), (1, ko)])?
                    }
                }
                if *kind != LinearKind::MatMul
                    && let Some(k) = ko
                    && let Ok(b) = w.orig_input(idx, 2)
                    && b.numel() > 1
                {
                    let axis = b.dims.len() - 1;
                    w.slice(idx, 2, &[(axis, Some(k))])?;
                }
            }
            Role::ChannelConst {
                layout,
                input,
                axis,
            } => {
                if let Some(k) = keep(layout.space) {
                    let k = expand(k, layout.inner);
                    w.slice(idx, *input, &[(*axis, Some(&k))])?;
                }
            }
            Role::Reshape { output } => {
                if let Some(k) = keep(output.space) {
                    patch_reshape_target(&mut w, analysis, idx, (k.len() * output.inner) as i64)?;
                }
            }
        }
    }
    let mut out = w.finish();
    for o in &mut out.graph.outputs {
        if let Some(l) = analysis.layouts.get(&o.name)
            && let Some(k) = keep(l.space)
            && let Some(dims) = o.shape.as_mut()
            && dims.len() >= 2
        {
            dims[1] = Dim::Fixed((k.len() * l.inner) as i64);
        }
    }
    // the pruned graph must still be consistent everywhere the original was
    let inputs = shape::input_shapes(&out, 1, opts.input_chw.as_deref())?;
    let s = shape::infer(&out, &inputs);
    if let Some((node, msg)) = &s.first_gap
        && analysis.shapes.first_gap.is_none()
    {
        return Err(PruneError::Invalid(format!(
            "internal: the pruned graph is inconsistent at {node}: {msg}"
        )));
    }
    Ok(out)
}

/// A Reshape target like `[-1, 2048]` (torch.export) or `Concat(batch, [2048])` spells out the
/// channel count: rewrite it. Targets computed from `Shape` follow by themselves.
fn patch_reshape_target(
    w: &mut Writer,
    analysis: &Analysis,
    idx: usize,
    new_c: i64,
) -> Result<(), PruneError> {
    let g = &w.orig.graph;
    let n = &g.nodes[idx];
    let Some(target) = n.input(1) else {
        // opset < 5: the shape is an attribute
        if let Some(s) = n.attr_ints("shape")
            && s.len() >= 2
            && s[1] > 0
        {
            let mut s = s.to_vec();
            s[1] = new_c;
            w.out.graph.nodes[idx].set_attr("shape", crate::onnx::Attr::Ints(s));
        }
        return Ok(());
    };
    let patch = |t: &Tensor, pos: usize| -> Option<Tensor> {
        let mut v = t.as_i64()?;
        if v.get(pos).is_some_and(|&x| x > 0) {
            v[pos] = new_c;
            Some(Tensor {
                dims: t.dims.clone(),
                data: match t.data {
                    TensorData::I32(_) => TensorData::I32(v.iter().map(|&x| x as i32).collect()),
                    _ => TensorData::I64(v),
                },
            })
        } else {
            None
        }
    };
    if let Some(t) = g.initializers.get(target) {
        if let Some(nt) = patch(t, 1) {
            w.put(idx, 1, nt)?;
        }
        return Ok(());
    }
    let producers = g.producers();
    if let Some(&p) = producers.get(target)
        && g.nodes[p].op == "Concat"
    {
        let mut offset = 0usize;
        for (i, piece) in g.nodes[p].inputs.iter().enumerate() {
            let len = analysis
                .shapes
                .get(piece)
                .and_then(|s| s.first().copied())
                .unwrap_or(1);
            let Some(end) = usize::try_from(len)
                .ok()
                .and_then(|l| offset.checked_add(l))
            else {
                break;
            };
            if (offset..end).contains(&1) {
                if let Some(t) = g.initializers.get(piece)
                    && let Some(nt) = patch(t, 1 - offset)
                {
                    w.put(p, i, nt)?;
                }
                break;
            }
            offset = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_slices_any_axis() {
        let t = Tensor::f32(vec![2, 3, 2], (0..12).map(|v| v as f32).collect());
        let a = take(&t, 1, &[0, 2]).unwrap();
        assert_eq!(a.dims, vec![2, 2, 2]);
        assert_eq!(a.f32_data().unwrap(), &[0., 1., 4., 5., 6., 7., 10., 11.]);
        let b = take(&t, 0, &[1]).unwrap();
        assert_eq!(b.f32_data().unwrap(), &[6., 7., 8., 9., 10., 11.]);
        assert!(take(&t, 1, &[3]).is_err());
    }

    #[test]
    fn expand_maps_channels_to_flattened_features() {
        assert_eq!(expand(&[0, 2], 3), vec![0, 1, 2, 6, 7, 8]);
        assert_eq!(expand(&[1], 1), vec![1]);
    }
}
