//! Person detection: the [`Detector`] trait, its NanoDet implementation, and non-maximum suppression.
//! The model manifest's `family` says which implementation a model needs.

pub mod gate;
pub mod nanodet;
pub mod nms;

use crate::config::DetectSettings;
use crate::frame::Frame;
use crate::models::Manifest;
use crate::runtime::{Runtime, SessionOptions};
use crate::track::Detection;

/// Finds people in frames. Implementations batch several frames into one inference run when
/// their model allows it.
pub trait Detector: Send {
    /// Person detections per frame, boxes in frame pixels, sorted by descending score.
    fn detect(&mut self, frames: &[&Frame]) -> anyhow::Result<Vec<Vec<Detection>>>;
    /// Most frames one `detect` call runs at once.
    fn max_batch(&self) -> usize;
    fn name(&self) -> &str;
}

/// Opens the manifest model `name` with the implementation its family names.
pub fn open(
    manifest: &Manifest,
    name: &str,
    rt: &Runtime,
    settings: &DetectSettings,
    opts: SessionOptions,
) -> anyhow::Result<Box<dyn Detector>> {
    let entry = manifest.get(name)?;
    match entry.family.as_str() {
        "nanodet" => Ok(Box::new(nanodet::NanoDet::open(
            manifest, name, rt, settings, opts,
        )?)),
        other => anyhow::bail!(
            "model '{name}' has family '{other}', which is not a detector crosscam can run (known: nanodet)"
        ),
    }
}
