//! What each camera shows now, for the API's live snapshots: the last analysed frame with its
//! confirmed tracks' boxes (written by the analysis stage), and which identity each live track
//! has been linked to (written by the link stage).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::frame::Frame;

#[derive(Debug, Clone, Serialize)]
pub struct LiveBox {
    /// Tracker id within the camera's run.
    pub track: u64,
    /// x1, y1, x2, y2 in the frame's pixels.
    pub bbox: [f32; 4],
    pub score: f32,
    /// The identity the track's tracklet is linked to (none before its first decision).
    pub identity: Option<i64>,
    /// Not detected in this frame: predicted or held by the tracker (`[analysis] detect_every`,
    /// `motion_gate`).
    pub predicted: bool,
}

/// One camera's latest analysed frame.
#[derive(Clone)]
pub struct LiveView {
    pub frame: Frame,
    pub boxes: Vec<LiveBox>,
    /// Wall-clock time the view was taken (ms since the Unix epoch).
    pub t_ms: i64,
}

#[derive(Default)]
pub struct Live {
    views: Mutex<HashMap<String, LiveView>>,
    labels: Mutex<HashMap<(String, u64), i64>>,
}

impl Live {
    pub fn set_view(&self, camera: &str, frame: &Frame, boxes: Vec<LiveBox>) {
        let v = LiveView {
            frame: frame.clone(),
            boxes,
            t_ms: crate::store::now_ms(),
        };
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(camera.to_string(), v);
    }

    /// The camera's latest view with identity labels filled in.
    pub fn view(&self, camera: &str) -> Option<LiveView> {
        let mut v = self
            .views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
            .cloned()?;
        let labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        for b in &mut v.boxes {
            b.identity = labels.get(&(camera.to_string(), b.track)).copied();
        }
        Some(v)
    }

    /// A camera was removed: forget its view.
    pub fn forget(&self, camera: &str) {
        self.views
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(camera);
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(c, _), _| c != camera);
    }

    pub fn set_label(&self, camera: &str, track: u64, identity: i64) {
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((camera.to_string(), track), identity);
    }

    /// The track ended: its label is no longer needed.
    pub fn clear_label(&self, camera: &str, track: u64) {
        self.labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(camera.to_string(), track));
    }

    /// After a merge, labels of the absorbed identity point at the kept one.
    pub fn relabel(&self, from: i64, to: i64) {
        for v in self
            .labels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            if *v == from {
                *v = to;
            }
        }
    }
}
