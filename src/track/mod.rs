//! Per-camera multi-object tracking: a ByteTrack-style tracker producing tracklets with boxes
//! and quality-scored crops, and MOTChallenge file I/O for the offline tools.

pub mod assign;
pub mod bytetrack;
pub mod kalman;
pub mod mot;
pub mod offline;
pub mod quality;
pub mod tracklet;

pub use bytetrack::{ActiveBox, TrackEvent, Tracker};
pub use tracklet::{Crop, Detection, TrackedBox, Tracklet};
