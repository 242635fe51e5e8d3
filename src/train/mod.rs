//! Training engine (burn): re-id ResNets built from the same ONNX graphs the pruner edits,
//! trained with BoT-style losses on labelled or pseudo-labelled crops, distilled from a teacher,
//! and written back to ONNX. See docs/training.md.
//!
//! One job per file: [`layout`] (what the network is), [`recognise`] (ONNX → layout + weights),
//! [`model`] (the burn module), [`export`] (→ ONNX), [`loss`], [`sampler`] (P×K), [`augment`],
//! [`batch`] (images → tensors), [`schedule`] (learning rate), [`checkpoint`], [`trainer`] (the
//! loop: determinism, progress, cancel), [`cluster`] (k-reciprocal Jaccard + DBSCAN), [`pseudo`]
//! (tracklets → pseudo-identities), [`distill`] (teacher embeddings), [`prune_hooks`] (Taylor
//! scores and soft pruning for `crate::prune`), [`bench`] (throughput), [`device`], [`site`] (a
//! site's tracklets and labels, from a dataset folder), [`scenario`] (the pruning scenarios
//! S0–S5 and the fresh-network recipe; see docs/retuning.md).

pub mod augment;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cluster;
pub mod device;
pub mod distill;
pub mod export;
pub mod layout;
pub mod loss;
pub mod model;
pub mod prune_hooks;
pub mod pseudo;
pub mod recognise;
pub mod sampler;
pub mod scenario;
pub mod schedule;
pub mod site;
pub mod trainer;

pub use export::{ExportOptions, export};
pub use layout::NetLayout;
pub use model::{NetOutput, ReidModel, ReidNet};
pub use trainer::{Cancel, TrainConfig, TrainOutcome, Trainer};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The graph is not a ResNet the trainer understands (says where and why).
    #[error("not a trainable ResNet: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Onnx(#[from] crate::onnx::OnnxError),
    /// Inconsistent inputs (weights that do not fit a layout, empty data sets, bad settings).
    #[error("{0}")]
    Invalid(String),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The teacher (ONNX Runtime) failed.
    #[error("teacher: {0}")]
    Teacher(String),
}
