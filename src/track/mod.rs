//! Per-camera multi-object tracking: tracklets with boxes and quality-scored crops.

pub mod tracklet;

pub use tracklet::{Crop, Detection, TrackedBox, Tracklet};
