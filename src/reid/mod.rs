//! Re-identification embeddings: the embedder (any `[N,3,H,W] → [N,D]` ONNX model), crop
//! batching across cameras, and tracklet descriptors.

pub mod embedder;
pub mod service;

pub use embedder::{Embedder, EmbedderSpec, l2_normalize_rows};
pub use service::{Observation, ReidOutput, ReidSettings, ReidStage};
