//! An editable in-memory form of an ONNX model: nodes in topological order, initializers by name,
//! typed attributes and tensors. `Model::load` / `Model::save` convert from and to the protobuf.
//!
//! The IR keeps every node and attribute it does not understand, so a model that is only read,
//! inspected and written back keeps its meaning; the pruner works on the subset of ops it knows
//! and refuses the others by name (see `crate::prune`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use prost::Message;

use super::OnnxError;
use super::proto::{self, attr_type, data_type};

/// A whole ONNX model: the main graph plus the header fields crosscam preserves.
#[derive(Clone, Debug)]
pub struct Model {
    pub ir_version: i64,
    /// Opset of the default (`ai.onnx`) domain.
    pub opset: i64,
    /// Opsets of other domains (e.g. `ai.onnx.ml`), kept as they were.
    pub other_opsets: Vec<(String, i64)>,
    pub producer_name: String,
    pub producer_version: String,
    pub metadata: Vec<(String, String)>,
    pub graph: Graph,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    /// Nodes in topological order (ONNX requires it; `Model::from_proto` checks it).
    pub nodes: Vec<Node>,
    pub initializers: BTreeMap<String, Tensor>,
    /// Real inputs only (initializers that older exporters also list as inputs are dropped).
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem_type: i32,
    /// `None` when the model declares no shape at all.
    pub shape: Option<Vec<Dim>>,
}

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Named(String),
    Unknown,
}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Named(n) => write!(f, "{n}"),
            Dim::Unknown => write!(f, "?"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: String,
    pub domain: String,
    /// Input value names; an empty string is an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

#[derive(Clone, Debug)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Tensor),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    /// Anything else (sub-graphs, sparse tensors, type protos): carried through untouched.
    Other(Box<proto::AttributeProto>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: TensorData,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    I8(Vec<i8>),
    Bool(Vec<bool>),
    /// Other element types (float16, strings, …) as raw little-endian bytes.
    Raw {
        data_type: i32,
        bytes: Vec<u8>,
    },
}

impl Tensor {
    pub fn f32(dims: Vec<usize>, data: Vec<f32>) -> Tensor {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        Tensor {
            dims,
            data: TensorData::F32(data),
        }
    }
    pub fn i64(dims: Vec<usize>, data: Vec<i64>) -> Tensor {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        Tensor {
            dims,
            data: TensorData::I64(data),
        }
    }
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn data_type(&self) -> i32 {
        match &self.data {
            TensorData::F32(_) => data_type::FLOAT,
            TensorData::F64(_) => data_type::DOUBLE,
            TensorData::I64(_) => data_type::INT64,
            TensorData::I32(_) => data_type::INT32,
            TensorData::U8(_) => data_type::UINT8,
            TensorData::I8(_) => data_type::INT8,
            TensorData::Bool(_) => data_type::BOOL,
            TensorData::Raw { data_type, .. } => *data_type,
        }
    }
    pub fn is_float(&self) -> bool {
        matches!(
            self.data_type(),
            data_type::FLOAT | data_type::DOUBLE | data_type::FLOAT16
        )
    }
    /// The values as f32 (float and integer tensors), or `None` for other types.
    pub fn as_f32(&self) -> Option<std::borrow::Cow<'_, [f32]>> {
        use std::borrow::Cow;
        match &self.data {
            TensorData::F32(v) => Some(Cow::Borrowed(v)),
            TensorData::F64(v) => Some(Cow::Owned(v.iter().map(|&x| x as f32).collect())),
            TensorData::I64(v) => Some(Cow::Owned(v.iter().map(|&x| x as f32).collect())),
            TensorData::I32(v) => Some(Cow::Owned(v.iter().map(|&x| x as f32).collect())),
            _ => None,
        }
    }
    /// The values as i64 (integer tensors, and float tensors holding whole numbers).
    pub fn as_i64(&self) -> Option<Vec<i64>> {
        match &self.data {
            TensorData::I64(v) => Some(v.clone()),
            TensorData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::F32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::F64(v) => Some(v.iter().map(|&x| x as i64).collect()),
            TensorData::Raw { .. } => None,
        }
    }
    pub fn f32_data(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Node {
    pub fn new(op: &str, name: impl Into<String>, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: name.into(),
            op: op.to_string(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Vec::new(),
        }
    }
    pub fn with_attr(mut self, name: &str, a: Attr) -> Node {
        self.attrs.push((name.to_string(), a));
        self
    }
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
    pub fn set_attr(&mut self, name: &str, a: Attr) {
        match self.attrs.iter_mut().find(|(n, _)| n == name) {
            Some((_, slot)) => *slot = a,
            None => self.attrs.push((name.to_string(), a)),
        }
    }
    pub fn attr_i(&self, name: &str) -> Option<i64> {
        match self.attr(name)? {
            Attr::Int(v) => Some(*v),
            _ => None,
        }
    }
    pub fn attr_f(&self, name: &str) -> Option<f32> {
        match self.attr(name)? {
            Attr::Float(v) => Some(*v),
            _ => None,
        }
    }
    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        match self.attr(name)? {
            Attr::Ints(v) => Some(v),
            _ => None,
        }
    }
    pub fn attr_s(&self, name: &str) -> Option<String> {
        match self.attr(name)? {
            Attr::String(v) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
    /// Input `i`, or `None` when absent or given as the empty name (an omitted optional input).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    /// "name (Op)" for messages; unnamed nodes are called by their first output.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            format!(
                "node producing '{}' ({})",
                self.outputs.first().map(String::as_str).unwrap_or("?"),
                self.op
            )
        } else {
            format!("node '{}' ({})", self.name, self.op)
        }
    }
}

impl Model {
    /// Reads a model file. Initializers stored as external data (what PyTorch's torch.export-based
    /// exporter writes by default: `model.onnx` + `model.onnx.data`) are read from their files next
    /// to the model.
    pub fn load(path: &Path) -> Result<Model, OnnxError> {
        let bytes =
            std::fs::read(path).map_err(|e| OnnxError::Io(path.display().to_string(), e))?;
        let mut p = proto::ModelProto::decode(bytes.as_slice())
            .map_err(|e| OnnxError::Decode(e.to_string()).in_file(path))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        load_external_data(&mut p, dir).map_err(|e| e.in_file(path))?;
        Model::from_proto(p).map_err(|e| e.in_file(path))
    }

    /// Copies the model file `src` to `dest` as one self-contained file: initializers stored as
    /// external data are moved inside, everything else is kept byte for byte as the exporter wrote
    /// it. Returns whether there was external data (without any, `dest` is a plain copy).
    pub fn copy_self_contained(src: &Path, dest: &Path) -> Result<bool, OnnxError> {
        let bytes = std::fs::read(src).map_err(|e| OnnxError::Io(src.display().to_string(), e))?;
        let mut p = proto::ModelProto::decode(bytes.as_slice())
            .map_err(|e| OnnxError::Decode(e.to_string()).in_file(src))?;
        let external = p.graph.as_ref().is_some_and(|g| {
            g.initializer
                .iter()
                .any(|t| !t.external_data.is_empty() || t.data_location == Some(1))
        });
        let out = if external {
            let dir = src.parent().unwrap_or(Path::new("."));
            load_external_data(&mut p, dir).map_err(|e| e.in_file(src))?;
            let out = p.encode_to_vec();
            // protobuf's own limit: one message cannot hold more than 2 GiB
            if out.len() >= i32::MAX as usize {
                return Err(OnnxError::Invalid(format!(
                    "{} holds {} MB of weights: more than one ONNX file can hold without external data",
                    src.display(),
                    out.len() / 1_000_000
                )));
            }
            out
        } else {
            bytes
        };
        replace_file(dest, &out)?;
        Ok(external)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model, OnnxError> {
        let p = proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode(e.to_string()))?;
        Model::from_proto(p)
    }

    pub fn from_proto(p: proto::ModelProto) -> Result<Model, OnnxError> {
        let mut opset = None;
        let mut other_opsets = Vec::new();
        for o in &p.opset_import {
            let domain = o.domain.clone().unwrap_or_default();
            let v = o.version.unwrap_or(0);
            if domain.is_empty() || domain == "ai.onnx" {
                opset = Some(v);
            } else {
                other_opsets.push((domain, v));
            }
        }
        let g = p
            .graph
            .ok_or_else(|| OnnxError::Invalid("the model has no graph".into()))?;
        let graph = Graph::from_proto(g)?;
        Ok(Model {
            ir_version: p.ir_version.unwrap_or(0),
            opset: opset.ok_or_else(|| {
                OnnxError::Invalid("the model imports no opset of the default domain".into())
            })?,
            other_opsets,
            producer_name: p.producer_name.unwrap_or_default(),
            producer_version: p.producer_version.unwrap_or_default(),
            metadata: p
                .metadata_props
                .into_iter()
                .map(|e| (e.key.unwrap_or_default(), e.value.unwrap_or_default()))
                .collect(),
            graph,
        })
    }

    pub fn to_proto(&self) -> proto::ModelProto {
        let mut opset_import = vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(self.opset),
        }];
        for (d, v) in &self.other_opsets {
            opset_import.push(proto::OperatorSetIdProto {
                domain: Some(d.clone()),
                version: Some(*v),
            });
        }
        proto::ModelProto {
            // IR version 8 is what opset 13–18 models carry; keep a newer one if the model had it
            ir_version: Some(self.ir_version.max(7)),
            opset_import,
            producer_name: Some(self.producer_name.clone()),
            producer_version: Some(self.producer_version.clone()),
            domain: None,
            model_version: None,
            doc_string: None,
            graph: Some(self.graph.to_proto()),
            metadata_props: self
                .metadata
                .iter()
                .map(|(k, v)| proto::StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Writes the model atomically (temporary file + rename), so a crash never leaves half a model.
    pub fn save(&self, path: &Path) -> Result<(), OnnxError> {
        replace_file(path, &self.to_bytes())
    }

    /// Writes the model as PyTorch's torch.export-based exporter does: the graph in `path` and
    /// every initializer of `min_bytes` or more in `<file name>.data` next to it (ONNX external
    /// data, `location` relative to the model's folder). [`Model::load`] reads both back.
    pub fn save_with_external_data(&self, path: &Path, min_bytes: usize) -> Result<(), OnnxError> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| OnnxError::Invalid(format!("{} has no file name", path.display())))?;
        let data_name = format!("{file_name}.data");
        let kv = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        let mut p = self.to_proto();
        let mut blob = Vec::new();
        if let Some(g) = p.graph.as_mut() {
            for t in g.initializer.iter_mut() {
                if t.raw_data.as_ref().is_none_or(|r| r.len() < min_bytes) {
                    continue;
                }
                let raw = t.raw_data.take().unwrap_or_default();
                t.external_data = vec![
                    kv("location", data_name.clone()),
                    kv("offset", blob.len().to_string()),
                    kv("length", raw.len().to_string()),
                ];
                t.data_location = Some(1);
                blob.extend_from_slice(&raw);
            }
        }
        let data_path = path.with_file_name(&data_name);
        std::fs::write(&data_path, &blob)
            .map_err(|e| OnnxError::Io(data_path.display().to_string(), e))?;
        replace_file(path, &p.encode_to_vec())
    }

    pub fn set_metadata(&mut self, key: &str, value: &str) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.metadata.push((key.to_string(), value.to_string())),
        }
    }
}

impl Graph {
    fn from_proto(g: proto::GraphProto) -> Result<Graph, OnnxError> {
        let mut initializers = BTreeMap::new();
        for t in g.initializer {
            let name = t.name.clone().unwrap_or_default();
            let tensor = tensor_from_proto(&t)
                .map_err(|e| OnnxError::Invalid(format!("initializer '{name}': {e}")))?;
            initializers.insert(name, tensor);
        }
        let inputs = g
            .input
            .iter()
            .map(value_info_from_proto)
            .filter(|v| !initializers.contains_key(&v.name))
            .collect();
        let outputs = g.output.iter().map(value_info_from_proto).collect();
        let mut nodes = Vec::with_capacity(g.node.len());
        for n in g.node {
            let mut attrs = Vec::with_capacity(n.attribute.len());
            for a in n.attribute {
                let name = a.name.clone().unwrap_or_default();
                attrs.push((name, attr_from_proto(a)?));
            }
            nodes.push(Node {
                name: n.name.unwrap_or_default(),
                op: n.op_type.unwrap_or_default(),
                domain: n.domain.unwrap_or_default(),
                inputs: n.input,
                outputs: n.output,
                attrs,
            });
        }
        let graph = Graph {
            name: g.name.unwrap_or_default(),
            nodes,
            initializers,
            inputs,
            outputs,
        };
        graph.check_topological()?;
        Ok(graph)
    }

    fn to_proto(&self) -> proto::GraphProto {
        proto::GraphProto {
            node: self
                .nodes
                .iter()
                .map(|n| proto::NodeProto {
                    input: n.inputs.clone(),
                    output: n.outputs.clone(),
                    name: Some(n.name.clone()),
                    op_type: Some(n.op.clone()),
                    domain: if n.domain.is_empty() {
                        None
                    } else {
                        Some(n.domain.clone())
                    },
                    attribute: n
                        .attrs
                        .iter()
                        .map(|(name, a)| attr_to_proto(name, a))
                        .collect(),
                    doc_string: None,
                })
                .collect(),
            name: Some(if self.name.is_empty() {
                "crosscam".into()
            } else {
                self.name.clone()
            }),
            initializer: self
                .initializers
                .iter()
                .map(|(n, t)| tensor_to_proto(n, t))
                .collect(),
            doc_string: None,
            input: self.inputs.iter().map(value_info_to_proto).collect(),
            output: self.outputs.iter().map(value_info_to_proto).collect(),
            value_info: Vec::new(),
        }
    }

    /// Every value a node consumes must be a graph input, an initializer, or an earlier node's
    /// output, and every value is defined once (ONNX's single-assignment rule: a node output that
    /// reuses the name of an input, an initializer or another output would give one name two
    /// shapes).
    pub fn check_topological(&self) -> Result<(), OnnxError> {
        let mut known: HashSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        known.extend(self.initializers.keys().map(String::as_str));
        for n in &self.nodes {
            for i in n.inputs.iter().filter(|i| !i.is_empty()) {
                if !known.contains(i.as_str()) {
                    return Err(OnnxError::Invalid(format!(
                        "{} reads '{i}', which no earlier node, input or initializer provides",
                        n.describe()
                    )));
                }
            }
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                if !known.insert(o.as_str()) {
                    return Err(OnnxError::Invalid(format!(
                        "{} writes '{o}', which an input, an initializer or another node already defines",
                        n.describe()
                    )));
                }
            }
        }
        for o in &self.outputs {
            if !known.contains(o.name.as_str()) {
                return Err(OnnxError::Invalid(format!(
                    "graph output '{}' is never produced",
                    o.name
                )));
            }
        }
        Ok(())
    }

    /// Index of the node producing each value.
    pub fn producers(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in &n.outputs {
                m.insert(o.as_str(), i);
            }
        }
        m
    }

    /// Indices of the nodes consuming each value.
    pub fn consumers(&self) -> HashMap<&str, Vec<usize>> {
        let mut m: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for inp in n.inputs.iter().filter(|s| !s.is_empty()) {
                m.entry(inp.as_str()).or_default().push(i);
            }
        }
        m
    }

    /// Turns `Constant` nodes into initializers (the legacy PyTorch exporter emits many), so that
    /// every constant is found in one place.
    pub fn fold_constant_nodes(&mut self) -> Result<(), OnnxError> {
        let mut kept = Vec::with_capacity(self.nodes.len());
        for n in std::mem::take(&mut self.nodes) {
            if n.op == "Constant" && n.outputs.len() == 1 {
                let t = constant_value(&n)?;
                self.initializers.insert(n.outputs[0].clone(), t);
            } else {
                kept.push(n);
            }
        }
        self.nodes = kept;
        Ok(())
    }

    /// Removes nodes whose outputs nobody uses and initializers nobody reads.
    pub fn remove_dead(&mut self) {
        loop {
            let mut used: HashSet<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
            for n in &self.nodes {
                used.extend(n.inputs.iter().cloned());
            }
            let before = self.nodes.len();
            self.nodes
                .retain(|n| n.outputs.iter().any(|o| used.contains(o)));
            if self.nodes.len() == before {
                self.initializers.retain(|k, _| used.contains(k));
                break;
            }
        }
    }

    /// Replaces every use of value `from` by `to` (inputs of nodes and graph outputs keep their names:
    /// if `from` is a graph output, the caller must keep a node producing it).
    pub fn rename_uses(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for i in n.inputs.iter_mut() {
                if i == from {
                    *i = to.to_string();
                }
            }
        }
    }

    pub fn is_graph_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }

    /// A name not used by any value or node yet, built from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let mut taken: HashSet<&str> = self.initializers.keys().map(String::as_str).collect();
        for n in &self.nodes {
            taken.extend(n.outputs.iter().map(String::as_str));
            taken.insert(n.name.as_str());
        }
        taken.extend(self.inputs.iter().map(|v| v.name.as_str()));
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|c| !taken.contains(c.as_str()))
            .expect("unbounded")
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`, so a crash never
/// leaves half a model.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), OnnxError> {
    let tmp = path.with_extension("onnx.part");
    std::fs::write(&tmp, bytes).map_err(|e| OnnxError::Io(tmp.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| OnnxError::Io(path.display().to_string(), e))
}

/// Moves the bytes of externally stored initializers into `raw_data`. Locations must be relative
/// paths inside `dir` (the ONNX rule), so a model cannot make crosscam read arbitrary files.
fn load_external_data(p: &mut proto::ModelProto, dir: &Path) -> Result<(), OnnxError> {
    let Some(g) = p.graph.as_mut() else {
        return Ok(());
    };
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for t in &mut g.initializer {
        if t.external_data.is_empty() && t.data_location != Some(1) {
            continue;
        }
        let name = t.name.clone().unwrap_or_default();
        let bad = |msg: String| OnnxError::Invalid(format!("initializer '{name}': {msg}"));
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
        };
        let location =
            get("location").ok_or_else(|| bad("external data without a location".into()))?;
        let rel = Path::new(&location);
        if rel.is_absolute()
            || rel.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            })
        {
            return Err(bad(format!(
                "external data location '{location}' is not a relative path inside the model's folder"
            )));
        }
        let num = |k: &str| -> Result<Option<usize>, OnnxError> {
            get(k)
                .map(|v| {
                    v.trim()
                        .parse::<usize>()
                        .map_err(|_| bad(format!("bad {k} '{v}'")))
                })
                .transpose()
        };
        let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
        if !files.contains_key(&location) {
            let path = dir.join(rel);
            let data =
                std::fs::read(&path).map_err(|e| OnnxError::Io(path.display().to_string(), e))?;
            files.insert(location.clone(), data);
        }
        let data = &files[&location];
        let end = match length {
            Some(l) => offset.checked_add(l),
            None => Some(data.len()),
        };
        let bytes = end
            .filter(|&e| e <= data.len() && offset <= e)
            .map(|e| data[offset..e].to_vec())
            .ok_or_else(|| bad(format!("external data beyond the end of '{location}'")))?;
        t.raw_data = Some(bytes);
        t.external_data.clear();
        t.data_location = None;
    }
    Ok(())
}

/// The tensor a `Constant` node produces, whichever of its value attributes it uses.
pub fn constant_value(n: &Node) -> Result<Tensor, OnnxError> {
    let err = || {
        OnnxError::Invalid(format!(
            "{} has no value attribute crosscam understands",
            n.describe()
        ))
    };
    let (_, a) = n.attrs.first().ok_or_else(err)?;
    Ok(match a {
        Attr::Tensor(t) => t.clone(),
        Attr::Float(f) => Tensor {
            dims: vec![],
            data: TensorData::F32(vec![*f]),
        },
        Attr::Int(i) => Tensor {
            dims: vec![],
            data: TensorData::I64(vec![*i]),
        },
        Attr::Floats(v) => Tensor {
            dims: vec![v.len()],
            data: TensorData::F32(v.clone()),
        },
        Attr::Ints(v) => Tensor {
            dims: vec![v.len()],
            data: TensorData::I64(v.clone()),
        },
        _ => return Err(err()),
    })
}

fn value_info_from_proto(v: &proto::ValueInfoProto) -> ValueInfo {
    let tt = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    ValueInfo {
        name: v.name.clone().unwrap_or_default(),
        elem_type: tt.and_then(|t| t.elem_type).unwrap_or(0),
        shape: tt.and_then(|t| t.shape.as_ref()).map(|s| {
            s.dim
                .iter()
                .map(|d| match (&d.dim_value, &d.dim_param) {
                    (Some(v), _) => Dim::Fixed(*v),
                    (None, Some(p)) if !p.is_empty() => Dim::Named(p.clone()),
                    _ => Dim::Unknown,
                })
                .collect()
        }),
    }
}

fn value_info_to_proto(v: &ValueInfo) -> proto::ValueInfoProto {
    let shape = v.shape.as_ref().map(|dims| proto::TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| match d {
                Dim::Fixed(x) => proto::Dimension {
                    dim_value: Some(*x),
                    ..Default::default()
                },
                Dim::Named(p) => proto::Dimension {
                    dim_param: Some(p.clone()),
                    ..Default::default()
                },
                Dim::Unknown => proto::Dimension::default(),
            })
            .collect(),
    });
    proto::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(proto::TypeProto {
            tensor_type: Some(proto::TypeProtoTensor {
                elem_type: Some(v.elem_type),
                shape,
            }),
            denotation: None,
        }),
        doc_string: None,
    }
}

fn attr_from_proto(a: proto::AttributeProto) -> Result<Attr, OnnxError> {
    let name = a.name.clone().unwrap_or_default();
    // Old exporters may omit `type`; infer it from the field that is set.
    let ty = a.r#type.unwrap_or(if a.f.is_some() {
        attr_type::FLOAT
    } else if a.i.is_some() {
        attr_type::INT
    } else if a.s.is_some() {
        attr_type::STRING
    } else if a.t.is_some() {
        attr_type::TENSOR
    } else if !a.floats.is_empty() {
        attr_type::FLOATS
    } else if !a.ints.is_empty() {
        attr_type::INTS
    } else {
        0
    });
    Ok(match ty {
        attr_type::FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
        attr_type::INT => Attr::Int(a.i.unwrap_or(0)),
        attr_type::STRING => Attr::String(a.s.unwrap_or_default()),
        attr_type::TENSOR => {
            let t = a.t.as_ref().ok_or_else(|| {
                OnnxError::Invalid(format!("attribute '{name}' lacks its tensor"))
            })?;
            Attr::Tensor(
                tensor_from_proto(t)
                    .map_err(|e| OnnxError::Invalid(format!("attribute '{name}': {e}")))?,
            )
        }
        attr_type::FLOATS => Attr::Floats(a.floats),
        attr_type::INTS => Attr::Ints(a.ints),
        attr_type::STRINGS => Attr::Strings(a.strings),
        _ => Attr::Other(Box::new(a)),
    })
}

fn attr_to_proto(name: &str, a: &Attr) -> proto::AttributeProto {
    let mut p = proto::AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    match a {
        Attr::Float(f) => {
            p.r#type = Some(attr_type::FLOAT);
            p.f = Some(*f);
        }
        Attr::Int(i) => {
            p.r#type = Some(attr_type::INT);
            p.i = Some(*i);
        }
        Attr::String(s) => {
            p.r#type = Some(attr_type::STRING);
            p.s = Some(s.clone());
        }
        Attr::Tensor(t) => {
            p.r#type = Some(attr_type::TENSOR);
            p.t = Some(tensor_to_proto("", t));
        }
        Attr::Floats(v) => {
            p.r#type = Some(attr_type::FLOATS);
            p.floats = v.clone();
        }
        Attr::Ints(v) => {
            p.r#type = Some(attr_type::INTS);
            p.ints = v.clone();
        }
        Attr::Strings(v) => {
            p.r#type = Some(attr_type::STRINGS);
            p.strings = v.clone();
        }
        Attr::Other(o) => return (**o).clone(),
    }
    p
}

fn le_chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    raw.chunks_exact(N).map(|c| {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        a
    })
}

fn tensor_from_proto(t: &proto::TensorProto) -> Result<Tensor, String> {
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        return Err(
            "stored as external data, which crosscam does not read; re-export the model with the \
                    weights inside the .onnx file"
                .into(),
        );
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| {
            if d > super::shape::MAX_DIM {
                return Err(format!("dimension {d} is out of range"));
            }
            usize::try_from(d).map_err(|_| format!("negative dimension {d}"))
        })
        .collect::<Result<_, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("its shape {dims:?} has more elements than memory can hold"))?;
    let raw = t.raw_data.as_deref();
    let dt = t.data_type.unwrap_or(0);
    let data = match dt {
        data_type::FLOAT => TensorData::F32(match raw {
            Some(r) => le_chunks::<4>(r).map(f32::from_le_bytes).collect(),
            None => t.float_data.clone(),
        }),
        data_type::DOUBLE => TensorData::F64(match raw {
            Some(r) => le_chunks::<8>(r).map(f64::from_le_bytes).collect(),
            None => t.double_data.clone(),
        }),
        data_type::INT64 => TensorData::I64(match raw {
            Some(r) => le_chunks::<8>(r).map(i64::from_le_bytes).collect(),
            None => t.int64_data.clone(),
        }),
        data_type::INT32 => TensorData::I32(match raw {
            Some(r) => le_chunks::<4>(r).map(i32::from_le_bytes).collect(),
            None => t.int32_data.clone(),
        }),
        data_type::UINT8 => TensorData::U8(match raw {
            Some(r) => r.to_vec(),
            None => t.int32_data.iter().map(|&x| x as u8).collect(),
        }),
        data_type::INT8 => TensorData::I8(match raw {
            Some(r) => r.iter().map(|&x| x as i8).collect(),
            None => t.int32_data.iter().map(|&x| x as i8).collect(),
        }),
        data_type::BOOL => TensorData::Bool(match raw {
            Some(r) => r.iter().map(|&x| x != 0).collect(),
            None => t.int32_data.iter().map(|&x| x != 0).collect(),
        }),
        other => TensorData::Raw {
            data_type: other,
            bytes: match raw {
                Some(r) => r.to_vec(),
                None => {
                    return Err(format!(
                        "element type {other} stored outside raw_data is not supported"
                    ));
                }
            },
        },
    };
    let len = match &data {
        TensorData::F32(v) => v.len(),
        TensorData::F64(v) => v.len(),
        TensorData::I64(v) => v.len(),
        TensorData::I32(v) => v.len(),
        TensorData::U8(v) => v.len(),
        TensorData::I8(v) => v.len(),
        TensorData::Bool(v) => v.len(),
        TensorData::Raw { data_type, bytes } => {
            // the stored bytes must hold the declared elements (sub-byte types pack two per byte)
            let fits = match raw_element_bits(*data_type) {
                Some(bits) => n
                    .checked_mul(bits)
                    .is_some_and(|b| b.div_ceil(8) == bytes.len()),
                None => n <= bytes.len().saturating_mul(2),
            };
            if !fits {
                return Err(format!(
                    "holds {} bytes of element type {data_type}, which do not make its shape {dims:?}",
                    bytes.len()
                ));
            }
            n
        }
    };
    if len != n {
        return Err(format!(
            "holds {len} values but its shape {dims:?} needs {n}"
        ));
    }
    Ok(Tensor { dims, data })
}

/// Bits per element of the element types kept as raw bytes, when ONNX fixes them.
fn raw_element_bits(data_type: i32) -> Option<usize> {
    match data_type {
        // float16, uint16, int16, bfloat16
        4 | 5 | 10 | 16 => Some(16),
        // uint32
        12 => Some(32),
        // uint64, complex64
        13 | 14 => Some(64),
        // complex128
        15 => Some(128),
        // the float8 variants
        17..=20 => Some(8),
        // uint4, int4, float4e2m1
        21..=23 => Some(4),
        _ => None,
    }
}

fn tensor_to_proto(name: &str, t: &Tensor) -> proto::TensorProto {
    let raw: Vec<u8> = match &t.data {
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::U8(v) => v.clone(),
        TensorData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
        TensorData::Raw { bytes, .. } => bytes.clone(),
    };
    proto::TensorProto {
        dims: t.dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(t.data_type()),
        name: if name.is_empty() {
            None
        } else {
            Some(name.to_string())
        },
        raw_data: Some(raw),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_round_trip_keeps_values_and_types() {
        for t in [
            Tensor::f32(vec![2, 3], vec![1.0, -2.5, 3.0, 0.0, 1e-7, 9.0]),
            Tensor::i64(vec![3], vec![0, -1, i64::MAX]),
            Tensor {
                dims: vec![2],
                data: TensorData::Bool(vec![true, false]),
            },
        ] {
            let p = tensor_to_proto("x", &t);
            assert_eq!(tensor_from_proto(&p).unwrap(), t);
        }
    }

    #[test]
    fn reads_typed_fields_as_well_as_raw_data() {
        let p = proto::TensorProto {
            dims: vec![2],
            data_type: Some(data_type::FLOAT),
            float_data: vec![1.5, 2.5],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p).unwrap(),
            Tensor::f32(vec![2], vec![1.5, 2.5])
        );
    }

    #[test]
    fn external_data_is_read_from_the_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = Graph::default();
        g.inputs.push(ValueInfo {
            name: "x".into(),
            elem_type: 1,
            shape: None,
        });
        g.outputs.push(ValueInfo {
            name: "y".into(),
            elem_type: 1,
            shape: None,
        });
        g.nodes.push(Node::new("Add", "add", &["x", "w"], &["y"]));
        g.initializers
            .insert("w".into(), Tensor::f32(vec![2], vec![1.5, -2.0]));
        let m = Model {
            ir_version: 8,
            opset: 17,
            other_opsets: vec![],
            producer_name: String::new(),
            producer_version: String::new(),
            metadata: vec![],
            graph: g,
        };
        let mut p = m.to_proto();
        let t = &mut p.graph.as_mut().unwrap().initializer[0];
        let raw = t.raw_data.take().unwrap();
        let mut file = vec![0u8; 8];
        file.extend_from_slice(&raw);
        std::fs::write(dir.path().join("m.onnx.data"), &file).unwrap();
        let kv = |k: &str, v: &str| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v.into()),
        };
        t.external_data = vec![
            kv("location", "m.onnx.data"),
            kv("offset", "8"),
            kv("length", "8"),
        ];
        t.data_location = Some(1);
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, p.encode_to_vec()).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!(
            back.graph.initializers["w"],
            Tensor::f32(vec![2], vec![1.5, -2.0])
        );
        // a location outside the folder is refused
        let t = &mut p.graph.as_mut().unwrap().initializer[0];
        t.external_data[0] = kv("location", "../m.onnx.data");
        std::fs::write(&path, p.encode_to_vec()).unwrap();
        let e = Model::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a relative path"), "{e}");
    }

    #[test]
    fn wrong_element_count_is_an_error() {
        let p = proto::TensorProto {
            dims: vec![3],
            data_type: Some(data_type::FLOAT),
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(tensor_from_proto(&p).unwrap_err().contains("needs 3"));
    }

    #[test]
    fn out_of_order_nodes_are_rejected_with_the_node_name() {
        let g = Graph {
            nodes: vec![
                Node::new("Relu", "late", &["a"], &["b"]),
                Node::new("Relu", "early", &["x"], &["a"]),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                elem_type: 1,
                shape: None,
            }],
            outputs: vec![ValueInfo {
                name: "b".into(),
                elem_type: 1,
                shape: None,
            }],
            ..Default::default()
        };
        let e = g.check_topological().unwrap_err().to_string();
        assert!(e.contains("'late'") && e.contains("'a'"), "{e}");
    }

    #[test]
    fn a_value_defined_twice_is_rejected_with_the_node_name() {
        let g = Graph {
            nodes: vec![
                Node::new("Relu", "first", &["x"], &["a"]),
                Node::new("Relu", "again", &["x"], &["a"]),
            ],
            inputs: vec![ValueInfo {
                name: "x".into(),
                elem_type: 1,
                shape: None,
            }],
            ..Default::default()
        };
        let e = g.check_topological().unwrap_err().to_string();
        assert!(e.contains("'again'") && e.contains("writes 'a'"), "{e}");
    }

    #[test]
    fn huge_or_unfilled_dimensions_are_errors() {
        let p = proto::TensorProto {
            dims: vec![0, 1 << 62],
            data_type: Some(data_type::FLOAT),
            ..Default::default()
        };
        assert!(tensor_from_proto(&p).unwrap_err().contains("out of range"));
        let p = proto::TensorProto {
            dims: vec![1 << 20, 1 << 20],
            data_type: Some(data_type::FLOAT16),
            raw_data: Some(vec![0; 4]),
            ..Default::default()
        };
        assert!(tensor_from_proto(&p).unwrap_err().contains("do not make"));
    }
}
