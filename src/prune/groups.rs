//! Channel dependency analysis, from the graph alone (no layer names).
//!
//! Every tensor on the data path carries its channels on axis 1. A conv (group 1) or a linear layer
//! makes a new *channel space*; pass-through ops (BatchNorm, activations, pooling, flattening,
//! reshapes that keep the batch and channel axes) carry the space of their input along; an
//! element-wise `Add` (or `Mul`, …) of two tensors with the same channels joins their spaces, so
//! that a ResNet stage's last convs, its downsample conv and its stem all end up in one group. A
//! group is pruned together or not at all: removing channel `j` removes output filter `j` of every
//! producer, input slice `j` of every consumer, and entry `j` of every per-channel parameter.
//!
//! Groups that reach a model output are fixed by default (the embedding dimension is part of the
//! contract with the gallery), and so is the model input.

use std::collections::HashMap;

use serde::Serialize;

use crate::onnx::shape::{self, Shapes};
use crate::onnx::{Model, Node, Tensor};

use super::PruneError;
use super::ir::{self, ACTIVATIONS, UNARY_PASS_THROUGH};

/// Where a tensor's channels live: channel `c` of `space` occupies indices `c*inner..(c+1)*inner`
/// of axis 1 (`inner` > 1 after flattening `[N,C,H,W]` into `[N,C*H*W]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub space: usize,
    pub inner: usize,
}

/// A set of channels made by one layer (before spaces are joined into groups).
#[derive(Clone, Debug)]
pub struct Space {
    pub channels: usize,
    /// Why this space may not be pruned, if it may not.
    pub fixed: Option<String>,
}

/// How a linear layer stores its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinearKind {
    /// `Gemm` with `transB = 1`: weight `[out, in]` (PyTorch `nn.Linear`).
    GemmTransB,
    /// `Gemm` with `transB = 0`: weight `[in, out]`.
    Gemm,
    /// `MatMul` with a weight `[in, out]`.
    MatMul,
}

/// What a node does to channels, for the nodes whose parameters depend on channel counts.
#[derive(Clone, Debug)]
pub enum Role {
    /// Conv with group 1: weight `[out, in, k…]`.
    Conv { input: Layout, output: usize },
    /// Depthwise conv (group = in = out channels): weight `[C, 1, k…]`, same space in and out.
    Depthwise { layout: Layout },
    /// BatchNormalization: inputs 1–4 are per-channel.
    Norm { layout: Layout },
    /// Gemm / MatMul with a stored weight.
    Linear {
        input: Layout,
        output: usize,
        kind: LinearKind,
    },
    /// A stored constant combined element-wise with a data tensor (bias, PReLU slope, scale):
    /// input `input` is sliced along its `axis`.
    ChannelConst {
        layout: Layout,
        input: usize,
        axis: usize,
    },
    /// A Reshape whose target shape may spell out a channel count.
    Reshape { output: Layout },
}

/// A node of a group, by index into `graph.nodes` and by name (for reports and for the training
/// engine, which finds the same layers in its own model by these names).
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    #[serde(skip)]
    pub node: usize,
    pub name: String,
    pub op: String,
}

/// Channels that must be pruned together.
#[derive(Clone, Debug, Serialize)]
pub struct PruneGroup {
    pub id: usize,
    /// The first producer's name (e.g. `layer1.0.conv1`), or the first value's name.
    pub name: String,
    pub channels: usize,
    /// Layers whose output channels these are (convs, linear layers, depthwise convs).
    pub producers: Vec<Member>,
    /// Layers that read these channels as their input channels.
    pub consumers: Vec<Member>,
    /// BatchNormalization layers over these channels.
    pub norms: Vec<Member>,
    /// Every tensor that carries these channels on axis 1.
    #[serde(skip)]
    pub values: Vec<String>,
    /// The tensors after a non-linearity (or the BN / producer outputs when there is none): what
    /// activation- and gradient-based criteria observe.
    #[serde(skip)]
    pub activations: Vec<String>,
    /// Why the group may not be pruned (`None` = prunable).
    pub fixed: Option<String>,
    /// How many channel spaces (layers' outputs) were joined into this group by element-wise ops.
    pub joined: usize,
}

impl PruneGroup {
    pub fn prunable(&self) -> bool {
        self.fixed.is_none() && !self.producers.is_empty()
    }
    /// Joined through a residual addition (several layers' outputs added together).
    pub fn coupled(&self) -> bool {
        self.joined > 1
    }
}

/// The result of the analysis of one model.
pub struct Analysis {
    /// Shapes at batch 1 (the size MACs are counted for).
    pub shapes: Shapes,
    pub layouts: HashMap<String, Layout>,
    pub spaces: Vec<Space>,
    /// Nodes with channel-dependent parameters, in graph order.
    pub roles: Vec<(usize, Role)>,
    pub groups: Vec<PruneGroup>,
    /// Group index of each space.
    pub space_group: Vec<usize>,
}

impl Analysis {
    pub fn group_of(&self, space: usize) -> &PruneGroup {
        &self.groups[self.space_group[space]]
    }
    pub fn prunable(&self) -> impl Iterator<Item = &PruneGroup> {
        self.groups.iter().filter(|g| g.prunable())
    }
}

#[derive(Clone, Debug, Default)]
pub struct AnalyzeOptions {
    /// Input size C×H×W when the model's is dynamic (batch is always 1).
    pub input_chw: Option<Vec<i64>>,
    /// Allow pruning the channels of the model's outputs (changes the embedding dimension).
    pub prune_outputs: bool,
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut c = x;
        while self.0[c] != r {
            let next = self.0[c];
            self.0[c] = r;
            c = next;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // the older space stays the root: groups are named after their first producer
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

/// `node.name`, or its first output when unnamed.
pub fn node_label(n: &Node) -> String {
    if n.name.is_empty() {
        n.outputs.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

fn unsupported(n: &Node, why: impl Into<String>) -> PruneError {
    PruneError::Unsupported {
        node: n.describe(),
        op: n.op.clone(),
        why: why.into(),
    }
}

/// Finds the channel groups of an imported model (see [`super::ir::import`]).
pub fn analyze(model: &Model, opts: &AnalyzeOptions) -> Result<Analysis, PruneError> {
    ir::check_supported(model)?;
    let g = &model.graph;
    let inputs = shape::input_shapes(model, 1, opts.input_chw.as_deref())?;
    let shapes = shape::infer(model, &inputs);
    let data = ir::data_values(model);

    let mut spaces: Vec<Space> = Vec::new();
    let mut layouts: HashMap<String, Layout> = HashMap::new();
    let mut roles: Vec<(usize, Role)> = Vec::new();
    let mut joins: Vec<(usize, usize)> = Vec::new();
    let new_space = |spaces: &mut Vec<Space>, channels: i64, fixed: Option<String>| {
        spaces.push(Space {
            channels: channels.max(0) as usize,
            fixed,
        });
        spaces.len() - 1
    };

    for inp in &g.inputs {
        let s = shapes.require(&inp.name)?;
        if s.len() < 2 {
            return Err(PruneError::Invalid(format!(
                "input '{}' has shape {s:?}; the pruner needs [N, C, …]",
                inp.name
            )));
        }
        let sp = new_space(&mut spaces, s[1], Some("the model input".into()));
        layouts.insert(
            inp.name.clone(),
            Layout {
                space: sp,
                inner: 1,
            },
        );
    }

    for (idx, n) in g.nodes.iter().enumerate() {
        if !n.inputs.iter().any(|i| data.contains(i)) || matches!(n.op.as_str(), "Shape" | "Size") {
            continue;
        }
        let dims =
            |name: &str| -> Result<Vec<i64>, PruneError> { Ok(shapes.require(name)?.to_vec()) };
        let x_name = n
            .inputs
            .iter()
            .find(|i| data.contains(*i))
            .cloned()
            .unwrap_or_default();
        let lx = *layouts.get(&x_name).ok_or_else(|| {
            PruneError::Invalid(format!(
                "{}: the channels of its input '{x_name}' are unknown",
                n.describe()
            ))
        })?;
        let xs = dims(&x_name)?;
        if xs.len() < 2 {
            return Err(unsupported(
                n,
                format!("its data input '{x_name}' has shape {xs:?}, not [N, C, …]"),
            ));
        }
        let out0 = match n.outputs.first() {
            Some(o) if !o.is_empty() => o.clone(),
            _ => return Err(unsupported(n, "it has no output")),
        };
        let weight = |i: usize| -> Result<&Tensor, PruneError> {
            let name = n
                .input(i)
                .ok_or_else(|| unsupported(n, format!("input {i} is missing")))?;
            if data.contains(name) {
                return Err(unsupported(
                    n,
                    format!(
                        "its input {i} ('{name}') is computed from the model input, not a stored weight"
                    ),
                ));
            }
            g.initializers.get(name).ok_or_else(|| {
                unsupported(
                    n,
                    format!("its weight '{name}' is computed by the graph, not stored; the pruner can only slice stored weights"),
                )
            })
        };
        let flat = |l: Layout| -> Result<(), PruneError> {
            if l.inner != 1 {
                Err(unsupported(
                    n,
                    "it reads a flattened tensor as if it had spatial axes",
                ))
            } else {
                Ok(())
            }
        };
        let op = n.op.as_str();
        let out_layout: Option<Layout> = match op {
            "Conv" => {
                if n.input(0) != Some(x_name.as_str()) {
                    return Err(unsupported(
                        n,
                        "its weights are computed from the model input",
                    ));
                }
                flat(lx)?;
                let w = weight(1)?;
                if let Some(b) = n.input(2)
                    && (data.contains(b) || !g.initializers.contains_key(b))
                {
                    return Err(unsupported(
                        n,
                        format!("its bias '{b}' is not a stored weight"),
                    ));
                }
                let group = n.attr_i("group").unwrap_or(1);
                let cin = xs[1];
                if w.dims.len() < 3 {
                    return Err(unsupported(n, format!("weight of rank {}", w.dims.len())));
                }
                if group == 1 {
                    let s = new_space(&mut spaces, w.dims[0] as i64, None);
                    roles.push((
                        idx,
                        Role::Conv {
                            input: lx,
                            output: s,
                        },
                    ));
                    Some(Layout { space: s, inner: 1 })
                } else if group == cin && w.dims[0] as i64 == cin && w.dims[1] == 1 {
                    roles.push((idx, Role::Depthwise { layout: lx }));
                    Some(lx)
                } else {
                    return Err(unsupported(
                        n,
                        format!(
                            "grouped convolution (group {group}, {cin} input channels) other than depthwise"
                        ),
                    ));
                }
            }
            "BatchNormalization" => {
                flat(lx)?;
                if n.outputs.iter().skip(1).any(|o| !o.is_empty()) {
                    return Err(unsupported(
                        n,
                        "training-mode BatchNormalization (running statistics as outputs)",
                    ));
                }
                for i in 1..=4 {
                    weight(i)?;
                }
                roles.push((idx, Role::Norm { layout: lx }));
                Some(lx)
            }
            "PRelu" => {
                let slope = weight(1)?;
                if let Some(axis) = channel_axis(slope, xs.len()) {
                    roles.push((
                        idx,
                        Role::ChannelConst {
                            layout: lx,
                            input: 1,
                            axis,
                        },
                    ));
                }
                Some(lx)
            }
            _ if UNARY_PASS_THROUGH.contains(&op) => Some(lx),
            "LpNormalization" => Some(lx),
            "MaxPool" | "AveragePool" | "GlobalAveragePool" | "GlobalMaxPool" => {
                flat(lx)?;
                Some(lx)
            }
            "ReduceMean" | "ReduceMax" | "ReduceSum" | "ReduceL2" => {
                let axes_from_input = model.opset >= 18 || (op == "ReduceSum" && model.opset >= 13);
                let axes: Option<Vec<i64>> = if axes_from_input {
                    match n.input(1) {
                        Some(a) => Some(
                            shapes
                                .value(model, a)
                                .and_then(Tensor::as_i64)
                                .ok_or_else(|| unsupported(n, "its axes are not constant"))?,
                        ),
                        None => None,
                    }
                } else {
                    n.attr_ints("axes").map(<[i64]>::to_vec)
                };
                let rank = xs.len() as i64;
                let axes: Vec<i64> = match axes {
                    Some(a) if !a.is_empty() => a
                        .iter()
                        .map(|&v| if v < 0 { v + rank } else { v })
                        .collect(),
                    _ if n.attr_i("noop_with_empty_axes").unwrap_or(0) == 1 => vec![],
                    _ => (0..rank).collect(),
                };
                if axes.contains(&0) {
                    return Err(unsupported(n, "it reduces over the batch axis"));
                }
                if axes.contains(&1) {
                    // a reduction over channels (e.g. an L2 norm): the result has no channels of ours
                    let os = dims(&out0)?;
                    let c = if os.len() >= 2 { os[1] } else { 1 };
                    let s = new_space(
                        &mut spaces,
                        c,
                        Some(format!(
                            "computed by a reduction over channels at {}",
                            n.describe()
                        )),
                    );
                    Some(Layout { space: s, inner: 1 })
                } else {
                    Some(lx)
                }
            }
            "Flatten" => {
                let rank = xs.len() as i64;
                let a = n.attr_i("axis").unwrap_or(1);
                let a = if a < 0 { a + rank } else { a };
                if a != 1 {
                    return Err(unsupported(
                        n,
                        format!("Flatten at axis {a} mixes the channel axis with others"),
                    ));
                }
                Some(Layout {
                    space: lx.space,
                    inner: flattened(n, lx, &xs)?,
                })
            }
            "Reshape" => {
                let ys = dims(&out0)?;
                let l = if ys.len() >= 2 && ys[0] == xs[0] && ys[1] == xs[1] {
                    lx
                } else if ys.len() == 2
                    && ys[0] == xs[0]
                    && shape::numel(&xs[1..]).ok() == Some(ys[1])
                {
                    Layout {
                        space: lx.space,
                        inner: flattened(n, lx, &xs)?,
                    }
                } else {
                    return Err(unsupported(
                        n,
                        format!("it changes the channel layout ({xs:?} → {ys:?})"),
                    ));
                };
                roles.push((idx, Role::Reshape { output: l }));
                Some(l)
            }
            "Squeeze" | "Unsqueeze" => {
                let ys = dims(&out0)?;
                let axes: Option<Vec<i64>> = if model.opset >= 13 {
                    n.input(1)
                        .and_then(|a| shapes.value(model, a))
                        .and_then(Tensor::as_i64)
                } else {
                    n.attr_ints("axes").map(<[i64]>::to_vec)
                };
                let Some(axes) = axes else {
                    return Err(unsupported(
                        n,
                        "it has no explicit axes (it could drop the batch or channel axis)",
                    ));
                };
                let rank = if op == "Squeeze" { xs.len() } else { ys.len() } as i64;
                if axes
                    .iter()
                    .any(|&a| matches!(if a < 0 { a + rank } else { a }, 0 | 1))
                {
                    return Err(unsupported(n, "it moves the batch or channel axis"));
                }
                Some(lx)
            }
            "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Sum" => {
                let os = dims(&out0)?;
                if os.len() < 2 {
                    return Err(unsupported(n, format!("output of rank {}", os.len())));
                }
                let mut main: Option<Layout> = None;
                for (i, name) in n.inputs.iter().enumerate() {
                    if name.is_empty() {
                        continue;
                    }
                    let s = dims(name)?;
                    if data.contains(name) {
                        let l = *layouts.get(name).ok_or_else(|| {
                            unsupported(
                                n,
                                format!("the channels of its input '{name}' are unknown"),
                            )
                        })?;
                        if s.len() != os.len() {
                            return Err(unsupported(n, "it broadcasts a data tensor across ranks"));
                        }
                        if s[1] == os[1] {
                            match main {
                                None => main = Some(l),
                                Some(m) if m.inner == l.inner => joins.push((m.space, l.space)),
                                Some(_) => {
                                    return Err(unsupported(
                                        n,
                                        "it combines tensors with different channel layouts",
                                    ));
                                }
                            }
                        } else if s[1] != 1 {
                            return Err(unsupported(
                                n,
                                format!("channel counts {} and {} do not match", s[1], os[1]),
                            ));
                        }
                    } else {
                        // a constant operand: sliced with the channels when it has a channel axis
                        let rc = s.len();
                        let a = rc as i64 + 1 - os.len() as i64;
                        if a >= 0 && s[a as usize] > 1 {
                            if !g.initializers.contains_key(name) {
                                return Err(unsupported(
                                    n,
                                    format!(
                                        "its per-channel operand '{name}' is computed, not stored"
                                    ),
                                ));
                            }
                            // the layout is filled in below, once the output's is known
                            roles.push((
                                idx,
                                Role::ChannelConst {
                                    layout: lx,
                                    input: i,
                                    axis: a as usize,
                                },
                            ));
                        }
                    }
                }
                let m =
                    main.ok_or_else(|| unsupported(n, "no data input has the output's channels"))?;
                // constants follow the output's layout
                for (ri, r) in roles.iter_mut().rev() {
                    if *ri != idx {
                        break;
                    }
                    if let Role::ChannelConst { layout, .. } = r {
                        *layout = m;
                    }
                }
                Some(m)
            }
            "Gemm" | "MatMul" => {
                if n.input(0) != Some(x_name.as_str()) {
                    return Err(unsupported(n, "its data input is the second operand"));
                }
                if xs.len() != 2 {
                    return Err(unsupported(
                        n,
                        format!("input of rank {} (expected [N, features])", xs.len()),
                    ));
                }
                let w = weight(1)?;
                if w.dims.len() != 2 {
                    return Err(unsupported(n, format!("weight of rank {}", w.dims.len())));
                }
                let kind = if op == "MatMul" {
                    LinearKind::MatMul
                } else {
                    if n.attr_i("transA").unwrap_or(0) != 0 {
                        return Err(unsupported(n, "transA = 1"));
                    }
                    if let Some(c) = n.input(2)
                        && (data.contains(c) || !g.initializers.contains_key(c))
                    {
                        return Err(unsupported(
                            n,
                            format!("its bias '{c}' is not a stored weight"),
                        ));
                    }
                    if n.attr_i("transB").unwrap_or(0) == 1 {
                        LinearKind::GemmTransB
                    } else {
                        LinearKind::Gemm
                    }
                };
                let outs = if kind == LinearKind::GemmTransB {
                    w.dims[0]
                } else {
                    w.dims[1]
                };
                let s = new_space(&mut spaces, outs as i64, None);
                roles.push((
                    idx,
                    Role::Linear {
                        input: lx,
                        output: s,
                        kind,
                    },
                ));
                Some(Layout { space: s, inner: 1 })
            }
            _ => {
                return Err(unsupported(
                    n,
                    "it is not one of the ops the pruner knows (docs/pruning.md, 'Which models')",
                ));
            }
        };
        if let Some(l) = out_layout
            && !out0.is_empty()
        {
            layouts.insert(out0.clone(), l);
        }
    }

    // union-find over spaces joined by element-wise ops
    let mut uf = UnionFind((0..spaces.len()).collect());
    for &(a, b) in &joins {
        if spaces[a].channels != spaces[b].channels {
            return Err(PruneError::Invalid(format!(
                "internal: joined channel spaces differ in size ({} vs {})",
                spaces[a].channels, spaces[b].channels
            )));
        }
        uf.union(a, b);
    }
    for o in &g.outputs {
        if let Some(l) = layouts.get(&o.name)
            && !opts.prune_outputs
        {
            let r = uf.find(l.space);
            if spaces[r].fixed.is_none() {
                spaces[r].fixed = Some(format!("it feeds the model output '{}'", o.name));
            }
        }
    }
    // groups in order of their first space
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    let mut groups: Vec<PruneGroup> = Vec::new();
    let mut space_group = vec![0; spaces.len()];
    for s in 0..spaces.len() {
        let r = uf.find(s);
        let gi = *group_of_root.entry(r).or_insert_with(|| {
            groups.push(PruneGroup {
                id: groups.len(),
                name: String::new(),
                channels: spaces[r].channels,
                producers: vec![],
                consumers: vec![],
                norms: vec![],
                values: vec![],
                activations: vec![],
                fixed: None,
                joined: 0,
            });
            groups.len() - 1
        });
        space_group[s] = gi;
        groups[gi].joined += 1;
        if let Some(f) = &spaces[s].fixed
            && groups[gi].fixed.is_none()
        {
            groups[gi].fixed = Some(f.clone());
        }
    }
    let member = |idx: usize| Member {
        node: idx,
        name: node_label(&g.nodes[idx]),
        op: g.nodes[idx].op.clone(),
    };
    for (idx, r) in &roles {
        match r {
            Role::Conv { input, output } | Role::Linear { input, output, .. } => {
                groups[space_group[*output]].producers.push(member(*idx));
                groups[space_group[input.space]]
                    .consumers
                    .push(member(*idx));
            }
            Role::Depthwise { layout } => groups[space_group[layout.space]]
                .producers
                .push(member(*idx)),
            Role::Norm { layout } => groups[space_group[layout.space]].norms.push(member(*idx)),
            Role::ChannelConst { .. } | Role::Reshape { .. } => {}
        }
    }
    let producer_of = g.producers();
    let mut names: Vec<(&String, &Layout)> = layouts.iter().collect();
    // graph order, so that lists are stable
    let order: HashMap<&str, usize> = producer_of.iter().map(|(k, v)| (*k, *v)).collect();
    names.sort_by_key(|(v, _)| (order.get(v.as_str()).copied().unwrap_or(0), (*v).clone()));
    for (v, l) in names {
        let gi = space_group[l.space];
        groups[gi].values.push(v.clone());
        if l.inner == 1
            && let Some(&p) = producer_of.get(v.as_str())
            && ACTIVATIONS.contains(&g.nodes[p].op.as_str())
        {
            groups[gi].activations.push(v.clone());
        }
    }
    for grp in &mut groups {
        if grp.activations.is_empty() {
            let fallback: Vec<String> = if grp.norms.is_empty() {
                grp.producers
                    .iter()
                    .map(|m| g.nodes[m.node].outputs[0].clone())
                    .collect()
            } else {
                grp.norms
                    .iter()
                    .map(|m| g.nodes[m.node].outputs[0].clone())
                    .collect()
            };
            grp.activations = fallback;
        }
        grp.name = match grp.producers.first() {
            Some(p) => p.name.clone(),
            None => grp.values.first().cloned().unwrap_or_default(),
        };
    }
    Ok(Analysis {
        shapes,
        layouts,
        spaces,
        roles,
        groups,
        space_group,
    })
}

/// Features per channel after flattening `xs` = [N, C, spatial…] laid out as `lx`.
fn flattened(n: &Node, lx: Layout, xs: &[i64]) -> Result<usize, PruneError> {
    shape::numel(xs.get(2..).unwrap_or_default())
        .ok()
        .and_then(|s| usize::try_from(s).ok())
        .and_then(|s| lx.inner.checked_mul(s))
        .ok_or_else(|| unsupported(n, format!("its input {xs:?} is too large to flatten")))
}

/// The axis of a constant operand (broadcast against a data tensor of rank `data_rank`) that lines
/// up with the channel axis, when it has more than one entry there.
pub(crate) fn channel_axis(t: &Tensor, data_rank: usize) -> Option<usize> {
    let a = t.dims.len() as i64 + 1 - data_rank as i64;
    (a >= 0 && t.dims.get(a as usize).is_some_and(|&d| d > 1)).then_some(a as usize)
}

/// The filters (one row per output channel) that a producer applies, for weight criteria.
pub fn filters(model: &Model, idx: usize, role: &Role) -> Option<Vec<Vec<f32>>> {
    let n = &model.graph.nodes[idx];
    let w = model.graph.initializers.get(n.input(1)?)?;
    let data = w.f32_data()?;
    match role {
        Role::Conv { .. }
        | Role::Depthwise { .. }
        | Role::Linear {
            kind: LinearKind::GemmTransB,
            ..
        } => {
            let rows = w.dims[0];
            let per = data.len() / rows.max(1);
            Some(data.chunks(per.max(1)).map(<[f32]>::to_vec).collect())
        }
        Role::Linear { .. } => {
            let (k, m) = (w.dims[0], w.dims[1]);
            Some(
                (0..m)
                    .map(|o| (0..k).map(|i| data[i * m + o]).collect())
                    .collect(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::{BlockKind, Head, Init, ResNetSpec, Style, Tail, build};

    fn small(block: BlockKind) -> ResNetSpec {
        let spec = match block {
            BlockKind::Basic => ResNetSpec::resnet18(),
            BlockKind::Bottleneck => ResNetSpec::resnet50(),
        };
        spec.for_reid().scaled(0.25).with_input(64, 32)
    }

    fn analyze_built(spec: &ResNetSpec, head: Head, style: Style) -> Analysis {
        let m = ir::import(&build(spec, head, style, Init::RandomStats, 1)).unwrap();
        analyze(&m, &AnalyzeOptions::default()).unwrap()
    }

    #[test]
    fn resnet18_groups_follow_the_residual_stages() {
        let a = analyze_built(&small(BlockKind::Basic), Head::Features, Style::default());
        let prunable: Vec<&PruneGroup> = a.prunable().collect();
        // 8 inner convs (free) + stages 1..3 (coupled); stage 4 feeds the output
        assert_eq!(
            prunable.len(),
            11,
            "{:#?}",
            prunable.iter().map(|g| &g.name).collect::<Vec<_>>()
        );
        let stage1 = a.groups.iter().find(|g| g.name == "conv1").unwrap();
        // stem + both blocks' conv2 (no downsample in layer1 of a basic ResNet)
        assert_eq!(stage1.producers.len(), 3);
        assert!(stage1.coupled() && stage1.prunable());
        let stage2 = a
            .groups
            .iter()
            .find(|g| g.name == "layer2.0.conv2")
            .unwrap();
        let names: Vec<&str> = stage2.producers.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"]
        );
        let last = a
            .groups
            .iter()
            .find(|g| g.name == "layer4.0.conv2")
            .unwrap();
        assert!(
            last.fixed.as_deref().unwrap().contains("features"),
            "{:?}",
            last.fixed
        );
        let inner = a
            .groups
            .iter()
            .find(|g| g.name == "layer3.1.conv1")
            .unwrap();
        assert!(!inner.coupled() && inner.prunable());
        assert_eq!(inner.norms.len(), 1);
        assert_eq!(inner.activations, ["layer3.1.conv1.relu.out"]);
    }

    #[test]
    fn exporter_styles_give_the_same_groups() {
        let spec = small(BlockKind::Bottleneck);
        let shape_of = |a: &Analysis| -> Vec<(usize, usize, bool)> {
            a.groups
                .iter()
                .filter(|g| !g.producers.is_empty())
                .map(|g| (g.channels, g.producers.len(), g.prunable()))
                .collect()
        };
        let base = shape_of(&analyze_built(&spec, Head::BnNeck, Style::default()));
        for style in [
            Style {
                fuse_bn: true,
                ..Style::default()
            },
            Style {
                tail: Tail::ReduceMeanShapeChain,
                opset: 13,
                identity_weights: true,
                fuse_bn: false,
            },
            Style {
                tail: Tail::ReduceMean,
                opset: 18,
                identity_weights: true,
                fuse_bn: true,
            },
        ] {
            assert_eq!(
                shape_of(&analyze_built(&spec, Head::BnNeck, style)),
                base,
                "{style:?}"
            );
        }
    }

    #[test]
    fn classifier_output_is_fixed_but_its_input_is_not_without_a_tail_group() {
        let spec = small(BlockKind::Basic);
        let a = analyze_built(&spec, Head::Classifier { classes: 10 }, Style::default());
        let fc = a.groups.iter().find(|g| g.name == "fc").unwrap();
        assert!(fc.fixed.is_some());
        // the last stage now feeds only the classifier: prunable, with the fc as a consumer
        let last = a
            .groups
            .iter()
            .find(|g| g.name == "layer4.0.conv2")
            .unwrap();
        assert!(last.prunable(), "{:?}", last.fixed);
        assert!(last.consumers.iter().any(|m| m.name == "fc"));
    }
}
