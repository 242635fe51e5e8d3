//! Camera ingest: GStreamer pipelines per camera, reconnection, frame sampling, camera health.

pub mod source;
