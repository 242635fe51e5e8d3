//! Re-id datasets made from video.

pub mod rng;
