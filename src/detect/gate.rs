//! When to run the detector on a camera's frame: every N-th frame (`[analysis] detect_every`, as
//! DeepStream's `interval`) and only when something moved (`[analysis] motion_gate`). The frames
//! in between are not detected: the tracker predicts their boxes (interval) or holds them still
//! (nothing moved). One [`DetectGate`] per camera; it looks only at the frames, never at the
//! tracker, so the daemon and the offline tools decide alike.
//!
//! Motion is measured on a small grey copy of the frame ([`Thumbnail`], at most 96 columns, each
//! cell the mean of 4 samples): the share of its cells whose grey level differs by more than
//! [`MOTION_PIXEL_DELTA`] from the **last detected** frame. Comparing with the last detected frame
//! rather than the previous one means slow motion adds up until it is seen.

use crate::config::AnalysisSettings;
use crate::frame::Frame;

/// Grey levels (0–255) a thumbnail cell must change by to count as changed: above the flicker of
/// H.264 compression on a still scene, below a person crossing a cell.
pub const MOTION_PIXEL_DELTA: u8 = 12;

/// Columns of the thumbnail (rows follow the frame's aspect ratio).
const THUMB_WIDTH: u32 = 96;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Run the detector.
    Detect,
    /// Skipped by `detect_every`: the tracker predicts the boxes (people keep walking).
    Predict,
    /// Skipped because nothing moved: the tracker keeps the boxes where they were.
    Hold,
}

/// The gate's settings (from `[analysis]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GateSettings {
    pub detect_every: u32,
    pub motion_gate: bool,
    pub motion_threshold: f32,
    pub motion_max_skip: u32,
}

impl Default for GateSettings {
    /// Detect on every frame.
    fn default() -> Self {
        GateSettings::from(&AnalysisSettings::default())
    }
}

impl From<&AnalysisSettings> for GateSettings {
    fn from(a: &AnalysisSettings) -> Self {
        GateSettings {
            detect_every: a.detect_every.max(1),
            motion_gate: a.motion_gate,
            motion_threshold: a.motion_threshold,
            motion_max_skip: a.motion_max_skip.max(1),
        }
    }
}

impl GateSettings {
    /// True when every frame is detected (the gate never skips).
    pub fn every_frame(&self) -> bool {
        self.detect_every <= 1 && !self.motion_gate
    }
}

/// A small grey copy of a frame for motion detection.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    /// Source frame size (a change of size is a change of scene).
    source: (u32, u32),
    pub grey: Vec<u8>,
}

impl Thumbnail {
    pub fn of(f: &Frame) -> Thumbnail {
        let tw = THUMB_WIDTH.min(f.width).max(1);
        let th = ((f.height as u64 * tw as u64) / f.width.max(1) as u64).clamp(1, 4096) as u32;
        let mut grey = Vec::with_capacity((tw * th) as usize);
        let (cw, ch) = (f.width as f32 / tw as f32, f.height as f32 / th as f32);
        for ty in 0..th {
            // two sample rows and columns per cell, at a quarter and three quarters of it
            let ys = [
                ((ty as f32 + 0.25) * ch) as u32,
                ((ty as f32 + 0.75) * ch) as u32,
            ];
            for tx in 0..tw {
                let xs = [
                    ((tx as f32 + 0.25) * cw) as u32,
                    ((tx as f32 + 0.75) * cw) as u32,
                ];
                let mut sum = 0u32;
                for &y in &ys {
                    for &x in &xs {
                        let [r, g, b] = f.pixel(x.min(f.width - 1), y.min(f.height - 1));
                        sum += (77 * r as u32 + 150 * g as u32 + 29 * b as u32) >> 8;
                    }
                }
                grey.push((sum / 4) as u8);
            }
        }
        Thumbnail {
            width: tw,
            height: th,
            source: (f.width, f.height),
            grey,
        }
    }

    /// Share of cells that changed by more than [`MOTION_PIXEL_DELTA`] (1.0 when the two are of
    /// different frame sizes).
    pub fn changed(&self, other: &Thumbnail) -> f32 {
        if self.source != other.source || self.grey.len() != other.grey.len() {
            return 1.0;
        }
        let n = self
            .grey
            .iter()
            .zip(&other.grey)
            .filter(|(a, b)| a.abs_diff(**b) > MOTION_PIXEL_DELTA)
            .count();
        n as f32 / self.grey.len().max(1) as f32
    }
}

/// One camera's detection schedule.
#[derive(Debug, Clone)]
pub struct DetectGate {
    s: GateSettings,
    /// Frames since the last detected one (None before the first).
    since: Option<u32>,
    /// The last detected frame's thumbnail (motion gate only).
    reference: Option<Thumbnail>,
    /// Change measured on the last frame (motion gate only).
    pub last_change: f32,
}

impl DetectGate {
    pub fn new(s: GateSettings) -> DetectGate {
        DetectGate {
            s,
            since: None,
            reference: None,
            last_change: 1.0,
        }
    }

    pub fn settings(&self) -> &GateSettings {
        &self.s
    }

    /// Decides for the camera's next frame (frames in order).
    pub fn decide(&mut self, f: &Frame) -> Decision {
        if self.s.every_frame() {
            self.since = Some(0);
            return Decision::Detect;
        }
        let thumb = self.s.motion_gate.then(|| Thumbnail::of(f));
        let since = match self.since {
            None => return self.detected(thumb),
            Some(n) => n + 1,
        };
        let still = match (&thumb, &self.reference) {
            (Some(t), Some(r)) => {
                self.last_change = t.changed(r);
                self.last_change < self.s.motion_threshold
            }
            _ => false,
        };
        let interval = since < self.s.detect_every;
        let forced = self.s.motion_gate && since >= self.s.motion_max_skip;
        if still && !forced {
            self.since = Some(since);
            Decision::Hold
        } else if interval {
            self.since = Some(since);
            Decision::Predict
        } else {
            self.detected(thumb)
        }
    }

    fn detected(&mut self, thumb: Option<Thumbnail>) -> Decision {
        self.since = Some(0);
        if thumb.is_some() {
            self.reference = thumb;
        }
        Decision::Detect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, fill: impl Fn(u32, u32) -> u8) -> Frame {
        let mut d = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let v = fill(x, y);
                d.extend([v, v, v]);
            }
        }
        Frame::from_rgb(w, h, d)
    }

    /// A grey scene with a dark 40×100 "person" at x.
    fn scene(x: u32) -> Frame {
        frame(640, 480, move |px, py| {
            if (x..x + 40).contains(&px) && (200..300).contains(&py) {
                20
            } else {
                128 + ((px / 32 + py / 32) % 2) as u8 * 40
            }
        })
    }

    fn gate(detect_every: u32, motion_gate: bool, max_skip: u32) -> DetectGate {
        DetectGate::new(GateSettings {
            detect_every,
            motion_gate,
            motion_threshold: 0.002,
            motion_max_skip: max_skip,
        })
    }

    #[test]
    fn every_frame_by_default() {
        let mut g = DetectGate::new(GateSettings::default());
        for _ in 0..5 {
            assert_eq!(g.decide(&scene(100)), Decision::Detect);
        }
    }

    #[test]
    fn detect_every_n_predicts_in_between() {
        let mut g = gate(3, false, 10);
        let got: Vec<Decision> = (0..7).map(|i| g.decide(&scene(10 * i))).collect();
        use Decision::*;
        assert_eq!(
            got,
            [Detect, Predict, Predict, Detect, Predict, Predict, Detect]
        );
    }

    #[test]
    fn a_still_scene_is_held_until_the_forced_detection() {
        let mut g = gate(1, true, 4);
        let f = scene(100);
        let got: Vec<Decision> = (0..6).map(|_| g.decide(&f)).collect();
        use Decision::*;
        assert_eq!(got, [Detect, Hold, Hold, Hold, Detect, Hold]);
    }

    #[test]
    fn a_moving_person_is_detected_and_slow_motion_adds_up() {
        let mut g = gate(1, true, 100);
        assert_eq!(g.decide(&scene(100)), Decision::Detect);
        // 40 px to the right: plainly moved
        assert_eq!(g.decide(&scene(140)), Decision::Detect);
        // 1 px steps are under the threshold one by one, but measured against the last detected
        // frame they add up to a detection within a few frames
        let mut decisions = Vec::new();
        for i in 1..=20 {
            decisions.push(g.decide(&scene(140 + i)));
        }
        assert_eq!(decisions[0], Decision::Hold, "1 px is not motion");
        let first = decisions.iter().position(|d| *d == Decision::Detect);
        assert!(
            first.is_some_and(|i| i < 10),
            "accumulated motion detected late or never: {decisions:?}"
        );
    }

    #[test]
    fn compression_like_noise_is_not_motion() {
        // ±6 grey levels of per-pixel noise everywhere
        let noisy = |seed: u32| {
            frame(640, 480, move |x, y| {
                let h = (x.wrapping_mul(73856093) ^ y.wrapping_mul(19349663) ^ seed)
                    .wrapping_mul(2654435761);
                (128 + (h >> 28) as i32 % 7 - 3) as u8
            })
        };
        let mut g = gate(1, true, 100);
        assert_eq!(g.decide(&noisy(1)), Decision::Detect);
        for s in 2..8 {
            assert_eq!(g.decide(&noisy(s)), Decision::Hold);
        }
    }

    #[test]
    fn interval_and_motion_combine() {
        let mut g = gate(2, true, 100);
        use Decision::*;
        assert_eq!(g.decide(&scene(100)), Detect);
        // moving: every second frame detected, the others predicted
        assert_eq!(g.decide(&scene(140)), Predict);
        assert_eq!(g.decide(&scene(180)), Detect);
        // then still: held
        assert_eq!(g.decide(&scene(180)), Hold);
        assert_eq!(g.decide(&scene(180)), Hold);
    }

    #[test]
    fn a_new_frame_size_is_motion() {
        let mut g = gate(1, true, 100);
        assert_eq!(g.decide(&scene(100)), Decision::Detect);
        assert_eq!(g.decide(&frame(320, 240, |_, _| 128)), Decision::Detect);
    }
}
