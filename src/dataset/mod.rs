//! `crosscam dataset build`: re-id datasets made from video, because public re-id datasets cannot
//! be downloaded here and a site's own footage is what matters.
//!
//! Detection and tracking turn each (virtual) camera's footage into tracklets; this module does the
//! rest: virtual cameras ([`cameras`], [`transform`]), the tracklet filter ([`filter`]), linking,
//! pseudo-identities, the train/query/gallery split and writing the Market-1501 layout
//! ([`build`]). The detector + tracker side plugs in through [`TrackletSource`].

pub mod build;
pub mod cameras;
pub mod filter;
pub mod from_store;
pub mod rng;
pub mod source;
pub mod transform;

use std::path::{Path, PathBuf};

pub use build::{BuildOptions, BuildReport, CameraTracklets, build_from_tracklets};
pub use cameras::VirtualCamera;
pub use filter::FilterOptions;
pub use transform::Transform;

use crate::eval::dataset::SourceInfo;
use crate::progress::Progress;

/// What the dataset builder needs from detection and tracking.
pub trait TrackletSource {
    /// Frame rate, frame count and duration of a video (recorded in dataset.json; the duration
    /// bounds the cameras' windows).
    fn probe(&mut self, video: &Path) -> anyhow::Result<SourceInfo>;

    /// The tracklets of one virtual camera. The implementation decodes `video` over each of
    /// `camera.segments(duration)` — with a fresh tracker per segment, since time jumps between
    /// them — applies `camera.transform` to every frame before detection, and returns tracklets
    /// whose boxes and crops are in the transformed frames' pixels, whose `pts` is the time in the
    /// source video, and which keep enough crops per tracklet (`crops_per_track`) to sample from.
    fn track(
        &mut self,
        video: &Path,
        source: &SourceInfo,
        camera: &VirtualCamera,
        crops_per_track: usize,
        progress: &mut Progress,
    ) -> anyhow::Result<CameraTracklets>;
}

/// What `crosscam dataset build` was asked for.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub videos: Vec<PathBuf>,
    pub cameras: Vec<VirtualCamera>,
    pub out: PathBuf,
    pub options: BuildOptions,
    /// Crops the tracker keeps per tracklet (the builder samples from them).
    pub crops_per_track: usize,
    pub quiet: bool,
}

/// Runs detection + tracking for every virtual camera through `source`, then builds the dataset.
pub fn build_dataset(
    req: &BuildRequest,
    source: &mut dyn TrackletSource,
) -> anyhow::Result<BuildReport> {
    use anyhow::Context;
    let mut infos = Vec::new();
    for v in &req.videos {
        let mut info = source
            .probe(v)
            .with_context(|| format!("cannot read video {}", v.display()))?;
        if info.path.is_empty() {
            info.path = v.display().to_string();
        }
        infos.push(info);
    }
    let mut per_camera = Vec::new();
    for cam in &req.cameras {
        let video = &req.videos[cam.video];
        let mut progress = Progress::new(&format!("tracking {}", cam.name), 0).quiet(req.quiet);
        let t = source
            .track(
                video,
                &infos[cam.video],
                cam,
                req.crops_per_track,
                &mut progress,
            )
            .with_context(|| format!("camera {} ({})", cam.name, video.display()))?;
        progress.finish();
        per_camera.push(t);
    }
    Ok(build_from_tracklets(
        &req.out,
        &infos,
        per_camera,
        &req.options,
        req.quiet,
    )?)
}
