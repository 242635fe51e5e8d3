//! `crosscam bench …`: the measurements behind docs/PERFORMANCE.md, each made in one run on the
//! machine at hand: embedding models side by side (`embed`), and the camera path — decoding, the
//! bare detector, and cameras → tracklets end to end (`camera`), and the identity gallery's search
//! and memory at scale (`gallery`), and the live model switch under load (`switch`).

pub mod api;
pub mod camera;
pub mod cluster;
pub mod detect;
pub mod embed;
pub mod gallery;
pub mod linking;
pub mod outputs;
mod rounds;
pub mod scene;
pub mod sequence;
pub mod switch;
pub mod tracking;

pub use api::{ApiBenchReport, api, render_api};
pub use camera::*;
pub use cluster::{ClusterBenchOptions, ClusterBenchReport, cluster, render_cluster};
pub use embed::*;
pub use gallery::{GalleryBenchOptions, GalleryBenchReport, gallery, render_gallery};
pub use outputs::{OutputsBenchReport, outputs};
pub use switch::{SwitchBenchReport, render_switch, switch};
