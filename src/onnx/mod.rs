//! ONNX models as crosscam sees them: protobuf I/O, an editable graph, static shape inference,
//! and the cost (MACs, parameters) of a network. Used by `crosscam model info`, the model
//! manifest checks, the pruner (which edits these graphs) and the trainer (which builds networks
//! from them and writes them back).

pub mod cost;
pub mod graph;
pub mod info;
pub mod proto;
pub mod resnet;
pub mod shape;

pub use graph::{Attr, Dim, Graph, Model, Node, Tensor, TensorData, ValueInfo};

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("cannot read {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("not a valid ONNX protobuf: {0}")]
    Decode(String),
    #[error("invalid ONNX model: {0}")]
    Invalid(String),
    #[error("{file}: {source}")]
    InFile {
        file: String,
        #[source]
        source: Box<OnnxError>,
    },
    #[error("shape inference stopped at {node}: {msg}")]
    Shape { node: String, msg: String },
    /// A node whose inputs, attributes or shapes make no sense (`node` is `Node::describe`).
    #[error("invalid ONNX model at {node}: {msg}")]
    Node { node: String, msg: String },
}

impl OnnxError {
    pub fn in_file(self, path: &std::path::Path) -> OnnxError {
        OnnxError::InFile {
            file: path.display().to_string(),
            source: Box::new(self),
        }
    }
}
