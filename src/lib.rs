//! crosscam: real-time cross-camera person re-identification.
//!
//! Data flow (one module per stage): [`ingest`] camera pipelines → `detect` persons →
//! `track` per camera → `reid` embeddings → `gallery` identities across cameras → `store`.
//! [`onnx`] reads, inspects and writes the networks; `prune` and `train` make them cheaper and
//! better on site. [`eval`] scores re-id models on datasets, which [`dataset`] builds from
//! video. See docs/ for operators, integrators and admins.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataset;
pub mod demo;
pub mod detect;
pub mod doctor;
pub mod eval;
pub mod events;
pub mod frame;
pub mod gallery;
pub mod ingest;
pub mod jobs;
pub mod models;
pub mod offline;
pub mod onnx;
pub mod outputs;
pub mod paths;
pub mod plot;
pub mod progress;
pub mod prune;
pub mod quantize;
pub mod reid;
pub mod report;
pub mod runtime;
pub mod server;
pub mod store;
pub mod study;
pub mod track;
pub mod train;
pub mod virtual_cameras;
