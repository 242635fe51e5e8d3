//! crosscam: real-time cross-camera person re-identification.
//!
//! Data flow (one module per stage): [`ingest`] camera pipelines → `detect` persons →
//! `track` per camera → `reid` embeddings → `gallery` identities across cameras → `store`.
//! [`onnx`] reads, inspects and writes the networks; `prune` and `train` make them cheaper and
//! better on site. See docs/ for operators, integrators and admins.

pub mod cli;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod frame;
pub mod ingest;
pub mod models;
pub mod onnx;
pub mod paths;
pub mod progress;
pub mod reid;
pub mod runtime;
pub mod track;
pub mod train;
