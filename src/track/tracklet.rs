//! What tracking produces: tracklets — one person followed within one camera — with their boxes
//! and the best crops by quality. Crops feed the re-id embedder, datasets and re-tuning.

use std::sync::Arc;
use std::time::Duration;

use crate::frame::BBox;

/// One detection of a person in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    pub bbox: BBox,
    pub score: f32,
}

/// A tracklet's box in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackedBox {
    /// Analysed-frame sequence number within the camera's stream.
    pub seq: u64,
    /// Stream time of the frame.
    pub pts: Duration,
    pub bbox: BBox,
    /// Detection score (0 for frames where the track was only predicted).
    pub score: f32,
    /// Wall-clock capture time, ms since the Unix epoch (0 when unknown, e.g. offline tools).
    pub wall_ms: i64,
}

/// A stored person crop with its quality score (higher is better).
#[derive(Debug, Clone)]
pub struct Crop {
    pub seq: u64,
    pub pts: Duration,
    pub bbox: BBox,
    pub quality: f32,
    pub image: Arc<image::RgbImage>,
    /// The picture as JPEG when it arrived encoded (an edge's observation at a core): the
    /// store keeps these bytes as they are instead of encoding `image` again.
    pub jpeg: Option<Arc<[u8]>>,
}

/// One person followed within one camera.
#[derive(Debug, Clone)]
pub struct Tracklet {
    pub camera: String,
    /// Track id, unique within the camera's run.
    pub id: u64,
    pub start: Duration,
    pub end: Duration,
    /// Boxes in time order (detected frames; predicted-only frames are not stored).
    pub boxes: Vec<TrackedBox>,
    /// The best crops by quality (at most the configured K), in time order.
    pub crops: Vec<Crop>,
}

impl Tracklet {
    pub fn len(&self) -> usize {
        self.boxes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }
    /// Wall-clock time of the first and last box (ms since the Unix epoch; 0 when unknown).
    pub fn wall_span_ms(&self) -> (i64, i64) {
        (
            self.boxes.first().map_or(0, |b| b.wall_ms),
            self.boxes.last().map_or(0, |b| b.wall_ms),
        )
    }

    pub fn duration(&self) -> Duration {
        self.end.saturating_sub(self.start)
    }
    /// Whether two tracklets of the same camera were alive at the same time (then they are
    /// different people).
    pub fn overlaps_in_time(&self, other: &Tracklet) -> bool {
        self.camera == other.camera && self.start <= other.end && other.start <= self.end
    }
}
