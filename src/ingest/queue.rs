//! The queue between cameras and the analysis: per camera a short FIFO that drops its **oldest**
//! frame when full (a slow analysis never makes latency grow), and a consumer side that takes at
//! most one frame per camera per batch, round-robin, so every camera gets its share of the
//! detector and several cameras share one inference run.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::frame::Frame;

pub type CameraId = Arc<str>;

struct Lane {
    camera: CameraId,
    frames: VecDeque<Frame>,
}

struct Inner {
    lanes: Vec<Lane>,
    /// Lane where the next batch starts (round-robin fairness).
    next: usize,
    closed: bool,
}

pub struct AnalysisQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    depth: usize,
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Queued, and the oldest waiting frame of this camera was dropped to make room.
    DroppedOldest,
    /// The queue is closed (shutting down).
    Closed,
}

impl AnalysisQueue {
    pub fn new(depth: usize) -> Arc<AnalysisQueue> {
        Arc::new(AnalysisQueue {
            inner: Mutex::new(Inner {
                lanes: Vec::new(),
                next: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            depth: depth.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, camera: &CameraId, frame: Frame) -> Pushed {
        let mut g = self.lock();
        if g.closed {
            return Pushed::Closed;
        }
        let idx = match g.lanes.iter().position(|l| l.camera == *camera) {
            Some(i) => i,
            None => {
                g.lanes.push(Lane {
                    camera: camera.clone(),
                    frames: VecDeque::with_capacity(self.depth),
                });
                g.lanes.len() - 1
            }
        };
        let lane = &mut g.lanes[idx];
        let dropped = if lane.frames.len() >= self.depth {
            lane.frames.pop_front();
            true
        } else {
            false
        };
        lane.frames.push_back(frame);
        drop(g);
        self.ready.notify_one();
        if dropped {
            Pushed::DroppedOldest
        } else {
            Pushed::Queued
        }
    }

    /// Waits up to `timeout` for frames, then takes the oldest frame of up to `max` cameras.
    /// Returns an empty batch on timeout or when closed.
    pub fn pop_batch(&self, max: usize, timeout: Duration) -> Vec<(CameraId, Frame)> {
        let mut g = self.lock();
        if !g.closed && g.lanes.iter().all(|l| l.frames.is_empty()) {
            g = self
                .ready
                .wait_timeout_while(g, timeout, |g| {
                    !g.closed && g.lanes.iter().all(|l| l.frames.is_empty())
                })
                .map(|r| r.0)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        let n = g.lanes.len();
        let mut batch = Vec::new();
        if n == 0 {
            return batch;
        }
        let start = g.next % n;
        for k in 0..n {
            if batch.len() >= max.max(1) {
                break;
            }
            let i = (start + k) % n;
            if let Some(f) = g.lanes[i].frames.pop_front() {
                batch.push((g.lanes[i].camera.clone(), f));
                g.next = i + 1;
            }
        }
        batch
    }

    /// Forgets a camera's waiting frames (camera removed).
    pub fn remove_camera(&self, camera: &str) {
        self.lock().lanes.retain(|l| &*l.camera != camera);
    }

    /// Frames waiting per camera (a metric).
    pub fn depths(&self) -> Vec<(CameraId, usize)> {
        self.lock()
            .lanes
            .iter()
            .map(|l| (l.camera.clone(), l.frames.len()))
            .collect()
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        let mut f = Frame::from_rgb(1, 1, vec![0, 0, 0]);
        f.seq = seq;
        f
    }

    #[test]
    fn full_lane_drops_its_oldest_frame() {
        let q = AnalysisQueue::new(2);
        let a: CameraId = "a".into();
        assert_eq!(q.push(&a, frame(1)), Pushed::Queued);
        assert_eq!(q.push(&a, frame(2)), Pushed::Queued);
        assert_eq!(q.push(&a, frame(3)), Pushed::DroppedOldest);
        let b = q.pop_batch(4, Duration::ZERO);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].1.seq, 2, "the oldest (1) was dropped");
    }

    #[test]
    fn batches_take_one_frame_per_camera_round_robin() {
        let q = AnalysisQueue::new(4);
        let cams: Vec<CameraId> = ["a", "b", "c"].iter().map(|s| CameraId::from(*s)).collect();
        for s in 0..3 {
            for c in &cams {
                q.push(c, frame(s));
            }
        }
        let b1 = q.pop_batch(2, Duration::ZERO);
        assert_eq!(
            b1.iter().map(|(c, _)| &**c).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
        let b2 = q.pop_batch(2, Duration::ZERO);
        assert_eq!(
            b2.iter().map(|(c, _)| &**c).collect::<Vec<_>>(),
            vec!["c", "a"]
        );
        assert_eq!(b2[1].1.seq, 1);
    }

    #[test]
    fn pop_waits_for_a_frame_and_close_wakes_it() {
        let q = AnalysisQueue::new(2);
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_batch(4, Duration::from_secs(5)).len());
        std::thread::sleep(Duration::from_millis(50));
        q.push(&CameraId::from("x"), frame(0));
        assert_eq!(t.join().unwrap(), 1);
        let q3 = q.clone();
        let t = std::thread::spawn(move || q3.pop_batch(4, Duration::from_secs(5)).len());
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        assert_eq!(t.join().unwrap(), 0);
        assert_eq!(q.push(&CameraId::from("x"), frame(1)), Pushed::Closed);
    }
}
