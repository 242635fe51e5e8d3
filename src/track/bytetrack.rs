//! A ByteTrack-style multi-object tracker for one camera: constant-velocity Kalman prediction,
//! IoU association in two rounds (high-score detections first, then low-score ones to keep tracks
//! alive through occlusion), track birth after `min_hits` matched frames and death after
//! `lost_s` seconds without a match (or `max_misses` missed frames, when set). Each confirmed track builds a [`Tracklet`] with its best crops.

use std::sync::Arc;
use std::time::Duration;

use super::assign::assign;
use super::kalman::Kalman;
use super::quality::{geometric_quality, quality};
use super::tracklet::{Crop, Detection, TrackedBox, Tracklet};
use crate::config::TrackSettings;
use crate::frame::{BBox, Frame};

/// What a tracker update reports.
#[derive(Debug, Clone)]
pub enum TrackEvent {
    /// A track was confirmed (it becomes a tracklet with this id).
    Started(Tracklet),
    /// A confirmed tracklet grew; emitted every `update_every` frames (for re-embedding).
    Updated(Tracklet),
    /// A tracklet ended (lost for longer than `lost_s` / `max_misses`, or the tracker was
    /// flushed).
    Ended(Tracklet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tentative,
    Tracked,
    Lost,
}

struct Track {
    kf: Kalman,
    phase: Phase,
    confirmed: bool,
    hits: u32,
    /// Frames spanned by the current run of `hits` (detected and skipped frames): with every
    /// frame detected it equals `hits`.
    hit_frames: u32,
    misses: u32,
    frames_since_update_event: u32,
    tracklet: Tracklet,
}

/// A box of a confirmed track in the current frame (for MOTChallenge output and overlays).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActiveBox {
    pub id: u64,
    /// Kalman-filtered box after this frame's update.
    pub bbox: BBox,
    pub score: f32,
    /// The box was not detected in this frame: the tracker predicted it (`[analysis]
    /// detect_every`) or held it still (`motion_gate`, nothing moved).
    pub predicted: bool,
}

pub struct Tracker {
    s: TrackSettings,
    camera: String,
    tracks: Vec<Track>,
    next_id: u64,
    /// Emit `Updated` for a confirmed tracklet at most every this many frames.
    pub update_every: u32,
    active: Vec<ActiveBox>,
    /// Frames predicted with motion ([`Tracker::skip`]) since the last detected frame.
    moved_skips: u32,
    /// `moved_skips` as it was when the current update began.
    gap: u32,
    /// Stream time of the last detected frame.
    last_pts: Option<Duration>,
}

impl Track {
    /// Matched long enough to be a person: `min_hits` detections in a row, or — when the detector
    /// skips frames — at least 2 in a row spanning `min_hits` frames, so that a track is
    /// confirmed after the same time whatever the detection interval.
    fn established(&self, min_hits: u32) -> bool {
        self.hits >= min_hits || (self.hits >= 2 && self.hit_frames >= min_hits)
    }
}

/// Buffer added to each side of both boxes, as a share of their width and height, per frame the
/// detector skipped (as in C-BIoU, Yang et al. 2023): people walk further between two detected
/// frames than the constant-velocity prediction knows early in a track, and plain IoU of two
/// narrow person boxes drops under the match threshold after one skipped frame at 5 fps. At
/// most 0.3 per skipped frame (5 and 10 frames/s), but also at most 3.0 per skipped second: at 25
/// frames/s a skipped frame is 0.04 s, and 0.3 there joined neighbours' boxes (half again the
/// identity switches; docs/PERFORMANCE.md, "Detection intervals and motion gating").
const GAP_BUFFER_PER_SKIP: f32 = 0.3;
const GAP_BUFFER_PER_S: f32 = 3.0;
const GAP_BUFFER_MAX: f32 = 0.6;

/// `b` grown by `k` of its width and height on every side.
fn buffered(b: &BBox, k: f32) -> BBox {
    let (w, h) = (b.x2 - b.x1, b.y2 - b.y1);
    BBox::new(b.x1 - k * w, b.y1 - k * h, b.x2 + k * w, b.y2 + k * h)
}

fn iou_cost(tracks: &[&Track], dets: &[Detection], buffer: f32) -> Vec<f32> {
    let mut c = Vec::with_capacity(tracks.len() * dets.len());
    for t in tracks {
        let tb = t.kf.bbox();
        for d in dets {
            let iou = if buffer > 0.0 {
                buffered(&tb, buffer).iou(&buffered(&d.bbox, buffer))
            } else {
                tb.iou(&d.bbox)
            };
            c.push(1.0 - iou);
        }
    }
    c
}

impl Tracker {
    pub fn new(camera: &str, s: TrackSettings) -> Tracker {
        Tracker {
            s,
            camera: camera.to_string(),
            tracks: Vec::new(),
            next_id: 1,
            update_every: 25,
            active: Vec::new(),
            moved_skips: 0,
            gap: 0,
            last_pts: None,
        }
    }

    /// Confirmed tracks matched in the last frame.
    pub fn active(&self) -> &[ActiveBox] {
        &self.active
    }

    /// Number of tracks being followed (tentative, tracked or lost).
    pub fn len(&self) -> usize {
        self.tracks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracks.is_empty()
    }

    /// A frame the detector did not see (`[analysis] detect_every` or `motion_gate`): with
    /// `moved`, every track moves on by its velocity (Kalman prediction); without, nothing in the
    /// picture moved and the tracks stay where they are. No track is missed, born or ended, no
    /// crop is taken; [`active`](Self::active) gives the confirmed tracks' boxes, marked predicted.
    pub fn skip(&mut self, moved: bool) {
        if moved {
            self.moved_skips += 1;
            for t in &mut self.tracks {
                if t.phase == Phase::Lost {
                    t.kf.mean[7] = 0.0;
                }
                t.kf.predict();
            }
        }
        self.active.clear();
        for t in &self.tracks {
            if t.confirmed && t.misses == 0 {
                self.active.push(ActiveBox {
                    id: t.tracklet.id,
                    bbox: t.kf.bbox(),
                    score: t.tracklet.boxes.last().map(|b| b.score).unwrap_or(0.0),
                    predicted: true,
                });
            }
        }
    }

    /// Processes one frame's detections. `frame` supplies pixels for crops and the time; pass
    /// `None` to track boxes only (e.g. from a detection file), with `seq`/`pts` given.
    pub fn update(
        &mut self,
        frame: Option<&Frame>,
        seq: u64,
        pts: Duration,
        size: (f32, f32),
        dets: &[Detection],
    ) -> Vec<TrackEvent> {
        let mut events = Vec::new();
        // the skipped frames' share of the time since the last detected frame
        let skipped_s = match self.last_pts {
            Some(last) if self.moved_skips > 0 => {
                pts.saturating_sub(last).as_secs_f32() * self.moved_skips as f32
                    / (self.moved_skips + 1) as f32
            }
            _ => 0.0,
        };
        self.last_pts = Some(pts);
        let buffer = (GAP_BUFFER_PER_S * skipped_s)
            .min(GAP_BUFFER_PER_SKIP * self.moved_skips as f32)
            .min(GAP_BUFFER_MAX);
        self.gap = self.moved_skips;
        self.moved_skips = 0;
        for t in &mut self.tracks {
            if t.phase == Phase::Lost {
                // a lost track keeps drifting with its velocity, but stops growing or shrinking
                t.kf.mean[7] = 0.0;
            }
            t.kf.predict();
        }
        let (high, low): (Vec<usize>, Vec<usize>) = (0..dets.len())
            .filter(|&i| dets[i].score >= self.s.low_score)
            .partition(|&i| dets[i].score >= self.s.high_score);
        let mut det_used = vec![false; dets.len()];
        let mut matched_track = vec![false; self.tracks.len()];

        // 1. high-score detections vs confirmed tracks (tracked and lost)
        let pool: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].phase != Phase::Tentative)
            .collect();
        let high_dets: Vec<Detection> = high.iter().map(|&i| dets[i]).collect();
        let cost = iou_cost(
            &pool.iter().map(|&i| &self.tracks[i]).collect::<Vec<_>>(),
            &high_dets,
            buffer,
        );
        let (pairs, _, _) = assign(&cost, pool.len(), high.len(), 1.0 - self.s.match_iou);
        for (r, c) in pairs {
            self.apply_match(pool[r], dets[high[c]], frame, seq, pts, size, dets);
            matched_track[pool[r]] = true;
            det_used[high[c]] = true;
        }
        // 2. low-score detections vs still unmatched tracked (not lost) tracks
        let rest: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&i| !matched_track[i] && self.tracks[i].phase == Phase::Tracked)
            .collect();
        let low_dets: Vec<Detection> = low.iter().map(|&i| dets[i]).collect();
        let cost = iou_cost(
            &rest.iter().map(|&i| &self.tracks[i]).collect::<Vec<_>>(),
            &low_dets,
            buffer,
        );
        let (pairs, _, _) = assign(&cost, rest.len(), low.len(), 0.5);
        for (r, c) in pairs {
            self.apply_match(rest[r], dets[low[c]], frame, seq, pts, size, dets);
            matched_track[rest[r]] = true;
            det_used[low[c]] = true;
        }
        // 3. tentative tracks vs remaining high-score detections
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].phase == Phase::Tentative)
            .collect();
        let remaining: Vec<usize> = high.iter().copied().filter(|&i| !det_used[i]).collect();
        let rem_dets: Vec<Detection> = remaining.iter().map(|&i| dets[i]).collect();
        let cost = iou_cost(
            &tentative
                .iter()
                .map(|&i| &self.tracks[i])
                .collect::<Vec<_>>(),
            &rem_dets,
            buffer,
        );
        let (pairs, _, _) = assign(
            &cost,
            tentative.len(),
            remaining.len(),
            1.0 - self.s.match_iou,
        );
        for (r, c) in pairs {
            self.apply_match(
                tentative[r],
                dets[remaining[c]],
                frame,
                seq,
                pts,
                size,
                dets,
            );
            matched_track[tentative[r]] = true;
            det_used[remaining[c]] = true;
        }
        // confirmations
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if matched_track[i] && !t.confirmed && t.established(self.s.min_hits) {
                t.confirmed = true;
                t.tracklet.id = self.next_id;
                self.next_id += 1;
                events.push(TrackEvent::Started(t.tracklet.clone()));
            }
        }
        // misses
        let mut keep = Vec::with_capacity(self.tracks.len());
        for (i, mut t) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if matched_track[i] {
                keep.push(t);
                continue;
            }
            t.misses += 1;
            t.hits = 0;
            t.hit_frames = 0;
            // lost for too long: by time since its last detection, so that the buffer is the same
            // at 5 and at 25 analysed frames per second (or by missed frames, when configured)
            let gone = match self.s.max_misses {
                Some(m) => t.misses > m,
                None => pts.saturating_sub(t.tracklet.end).as_secs_f32() > self.s.lost_s + 1e-3,
            };
            match t.phase {
                Phase::Tentative => {} // never confirmed: forgotten
                _ if gone => events.push(TrackEvent::Ended(t.tracklet)),
                _ => {
                    t.phase = Phase::Lost;
                    keep.push(t);
                }
            }
        }
        self.tracks = keep;
        // births
        for (i, d) in dets.iter().enumerate() {
            if det_used[i] || d.score < self.s.new_track_score {
                continue;
            }
            let mut t = Track {
                kf: Kalman::new(&d.bbox),
                phase: Phase::Tentative,
                confirmed: false,
                hits: 1,
                hit_frames: 1,
                misses: 0,
                frames_since_update_event: 0,
                tracklet: Tracklet {
                    camera: self.camera.clone(),
                    id: 0,
                    start: pts,
                    end: pts,
                    boxes: Vec::new(),
                    crops: Vec::new(),
                },
            };
            record(&mut t.tracklet, &self.s, frame, seq, pts, size, *d, dets);
            if self.s.min_hits <= 1 {
                t.confirmed = true;
                t.phase = Phase::Tracked;
                t.tracklet.id = self.next_id;
                self.next_id += 1;
                events.push(TrackEvent::Started(t.tracklet.clone()));
            }
            self.tracks.push(t);
        }
        // periodic updates of growing tracklets, and the active boxes of this frame
        self.active.clear();
        for t in &mut self.tracks {
            if t.confirmed && t.misses == 0 {
                self.active.push(ActiveBox {
                    id: t.tracklet.id,
                    bbox: t.kf.bbox(),
                    score: t.tracklet.boxes.last().map(|b| b.score).unwrap_or(0.0),
                    predicted: false,
                });
                t.frames_since_update_event += 1;
                if t.frames_since_update_event >= self.update_every {
                    t.frames_since_update_event = 0;
                    events.push(TrackEvent::Updated(t.tracklet.clone()));
                }
            }
        }
        events
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_match(
        &mut self,
        ti: usize,
        d: Detection,
        frame: Option<&Frame>,
        seq: u64,
        pts: Duration,
        size: (f32, f32),
        all: &[Detection],
    ) {
        let t = &mut self.tracks[ti];
        t.kf.update(&d.bbox);
        t.hits += 1;
        t.hit_frames += if t.hits == 1 { 1 } else { 1 + self.gap };
        t.misses = 0;
        if t.phase == Phase::Lost || t.established(self.s.min_hits) {
            t.phase = Phase::Tracked;
        }
        record(&mut t.tracklet, &self.s, frame, seq, pts, size, d, all);
    }

    /// Ends every confirmed track (end of stream, camera removed).
    pub fn flush(&mut self) -> Vec<TrackEvent> {
        std::mem::take(&mut self.tracks)
            .into_iter()
            .filter(|t| t.confirmed)
            .map(|t| TrackEvent::Ended(t.tracklet))
            .collect()
    }
}

/// The fraction of `b`'s area inside `other`.
fn covered(b: &BBox, other: &BBox) -> f32 {
    let w = (b.x2.min(other.x2) - b.x1.max(other.x1)).max(0.0);
    let h = (b.y2.min(other.y2) - b.y1.max(other.y1)).max(0.0);
    let a = b.area();
    if a <= 0.0 { 0.0 } else { w * h / a }
}

/// Adds a matched detection to a tracklet: its box, and its crop when it ranks among the best K.
#[allow(clippy::too_many_arguments)]
fn record(
    tl: &mut Tracklet,
    s: &TrackSettings,
    frame: Option<&Frame>,
    seq: u64,
    pts: Duration,
    size: (f32, f32),
    d: Detection,
    all: &[Detection],
) {
    tl.end = pts;
    tl.boxes.push(TrackedBox {
        seq,
        pts,
        bbox: d.bbox,
        score: d.score,
        wall_ms: frame.map_or(0, |f| f.wall_ms),
    });
    let Some(frame) = frame else { return };
    if s.crops_per_tracklet == 0 {
        return;
    }
    let others = || all.iter().filter(|o| o.bbox != d.bbox);
    let overlap = others().map(|o| o.bbox.iou(&d.bbox)).fold(0f32, f32::max);
    // IoU understates a small person in front of a large one: what matters for the embedding is
    // how much of *this* crop another person covers
    if s.crop_max_overlap < 1.0
        && others()
            .map(|o| covered(&d.bbox, &o.bbox))
            .any(|c| c > s.crop_max_overlap)
    {
        return;
    }
    let geo = geometric_quality(&d.bbox, d.score, size.0, size.1, overlap);
    let worst = tl
        .crops
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.quality.total_cmp(&b.1.quality))
        .map(|(i, c)| (i, c.quality));
    let full = tl.crops.len() >= s.crops_per_tracklet;
    // sharpness only lowers quality, so a crop whose geometric quality cannot beat the worst is skipped
    if full && worst.is_some_and(|(_, q)| geo <= q) {
        return;
    }
    let q = quality(frame, &d.bbox, geo);
    if full {
        let (wi, wq) = worst.expect("full set has a worst crop");
        if q <= wq {
            return;
        }
        tl.crops.remove(wi);
    }
    let crop = Crop {
        seq,
        pts,
        bbox: d.bbox,
        quality: q,
        image: Arc::new(frame.crop(&d.bbox)),
        jpeg: None,
    };
    let pos = tl.crops.partition_point(|c| c.seq < seq);
    tl.crops.insert(pos, crop);
}
