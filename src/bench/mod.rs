//! `crosscam bench …`: the measurements behind docs/PERFORMANCE.md, each made in one run on the
//! machine at hand: embedding models side by side (`embed`), and the camera path — decoding, the
//! bare detector, and cameras → tracklets end to end (`camera`).

pub mod camera;
pub mod embed;

pub use camera::*;
pub use embed::*;
