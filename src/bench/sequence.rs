//! Made-up MOTChallenge sequences with known trajectories and a detector's typical mistakes, for
//! comparing trackers where the truth is exact (`crosscam bench mot-sequence`).
//!
//! People walk across a fixed camera's view (640×480 by default): they enter at the left or right
//! edge or appear in the middle (a door), walk at 0.6–1.6 m/s with slow turns, some stop for a
//! while, some walk side by side in pairs, and those walking the other way pass in front of or
//! behind them. Box height follows the feet's height in the picture (a ground plane seen at an
//! angle), width is 0.38–0.45 of the height.
//!
//! The detections are what a person detector gives on such a scene:
//! - **occlusion**: each box's visibility is the share not covered by people nearer the camera
//!   (lower feet); partly hidden people are found less often and with **lower scores** (the case
//!   ByteTrack's second association exists for), mostly hidden ones rarely;
//! - **misses** at random (`miss`, default 8 % of fully visible people);
//! - **jitter** of every edge (`jitter` × the box size, Gaussian);
//! - **false positives**: random person-sized boxes at low scores in some frames, and a few
//!   fixed clutter spots (a poster, a coat stand) detected on and off at middling scores.
//!
//! `gt.txt` has every person whose box is at least half inside the frame
//! (`frame,id,x,y,w,h,1,1,visibility`); `det.txt` the detections (`frame,-1,x,y,w,h,score,-1,-1,-1`).

use std::io::Write;
use std::path::Path;

use crate::dataset::rng::SplitMix64;
use crate::frame::BBox;

#[derive(Debug, Clone)]
pub struct SequenceOptions {
    pub seed: u64,
    pub frames: u32,
    pub fps: f32,
    pub people: u32,
    pub width: f32,
    pub height: f32,
    /// Share of fully visible people the detector misses.
    pub miss: f32,
    /// Standard deviation of each edge's error, as a share of the box's width or height.
    pub jitter: f32,
    /// Random false positives per frame (mean).
    pub false_positives: f32,
}

impl Default for SequenceOptions {
    fn default() -> Self {
        SequenceOptions {
            seed: 1,
            frames: 750,
            fps: 25.0,
            people: 18,
            width: 640.0,
            height: 480.0,
            miss: 0.08,
            jitter: 0.03,
            false_positives: 0.3,
        }
    }
}

/// One person's box in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthBox {
    pub frame: u32,
    pub id: u32,
    pub bbox: BBox,
    pub visibility: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetBox {
    pub frame: u32,
    pub bbox: BBox,
    pub score: f32,
}

#[derive(Debug, Clone, Default)]
pub struct Sequence {
    pub truth: Vec<TruthBox>,
    pub detections: Vec<DetBox>,
}

struct Walker {
    id: u32,
    /// Feet position in pixels.
    x: f32,
    y: f32,
    /// Velocity in pixels per second.
    vx: f32,
    vy: f32,
    start: u32,
    /// Frames left standing still, and the frame it may stop at.
    stand_left: u32,
    stop_at: Option<u32>,
    aspect: f32,
}

/// Box height of a person whose feet are at `y` (ground plane seen from above at an angle).
fn height_at(y: f32, frame_h: f32) -> f32 {
    let t = (y / frame_h).clamp(0.0, 1.2);
    frame_h * (0.08 + 0.25 * t)
}

fn feet_box(x: f32, y: f32, aspect: f32, frame_h: f32) -> BBox {
    let h = height_at(y, frame_h);
    let w = h * aspect;
    BBox::new(x - w / 2.0, y - h, x + w / 2.0, y)
}

/// The share of `b` covered by the union of `front` (boxes nearer the camera), sampled on a grid.
fn covered_share(b: &BBox, front: &[BBox]) -> f32 {
    if front.is_empty() {
        return 0.0;
    }
    const N: usize = 12;
    let (w, h) = (b.width() / N as f32, b.height() / N as f32);
    let mut hit = 0;
    for i in 0..N {
        for j in 0..N {
            let (px, py) = (b.x1 + (i as f32 + 0.5) * w, b.y1 + (j as f32 + 0.5) * h);
            hit += front
                .iter()
                .any(|f| px >= f.x1 && px <= f.x2 && py >= f.y1 && py <= f.y2)
                as usize;
        }
    }
    hit as f32 / (N * N) as f32
}

pub fn make(o: &SequenceOptions) -> Sequence {
    let mut rng = SplitMix64::new(o.seed);
    let (fw, fh) = (o.width, o.height);
    let px_per_m = fh / 8.0; // about 8 m of floor from the feet at the bottom to the far edge
    let mut walkers: Vec<Walker> = Vec::new();
    let mut id = 0;
    let spread = (o.frames as f32 * 0.8) as u32;
    while (walkers.len() as u32) < o.people {
        id += 1;
        let start = if walkers.len() < 3 {
            0
        } else {
            rng.below(spread.max(1) as usize) as u32
        };
        let speed = (0.6 + rng.next_f32()) * px_per_m;
        let left = rng.next_f32() < 0.5;
        let y = fh * (0.4 + 0.58 * rng.next_f32());
        let door = rng.next_f32() < 0.15;
        let x = if door {
            fw * (0.3 + 0.4 * rng.next_f32())
        } else if left {
            -10.0
        } else {
            fw + 10.0
        };
        let dir = if left { 1.0 } else { -1.0 };
        let vy = (rng.next_f32() - 0.5) * 0.25 * speed;
        let stop_at = (rng.next_f32() < 0.2).then(|| start + 40 + rng.below(120) as u32);
        let aspect = 0.38 + 0.07 * rng.next_f32();
        walkers.push(Walker {
            id,
            x,
            y,
            vx: dir * speed,
            vy,
            start,
            stand_left: 0,
            stop_at,
            aspect,
        });
        // a companion walking side by side, a step behind or beside
        if rng.next_f32() < 0.25 && (walkers.len() as u32) < o.people {
            id += 1;
            let dy = (rng.next_f32() - 0.5) * 0.08 * fh;
            walkers.push(Walker {
                id,
                x: x - dir * (0.1 + 0.4 * rng.next_f32()) * px_per_m,
                y: (y + dy).min(fh * 0.98),
                vx: dir * speed,
                vy,
                start,
                stand_left: 0,
                stop_at,
                aspect: 0.38 + 0.07 * rng.next_f32(),
            });
        }
    }
    // clutter spots the detector fires on now and then
    let clutter: Vec<(BBox, f32)> = (0..2)
        .map(|_| {
            let y = fh * (0.4 + 0.4 * rng.next_f32());
            let x = fw * (0.1 + 0.8 * rng.next_f32());
            (feet_box(x, y, 0.4, fh), 0.25 + 0.35 * rng.next_f32())
        })
        .collect();

    let dt = 1.0 / o.fps;
    let mut truth = Vec::new();
    for f in 1..=o.frames {
        // move, then keep the people at least half inside the view
        for w in walkers.iter_mut() {
            if f <= w.start {
                continue;
            }
            if w.stop_at == Some(f) {
                w.stand_left = (2.0 + 4.0 * rng.next_f32()) as u32 * o.fps as u32;
            }
            if w.stand_left > 0 {
                w.stand_left -= 1;
            } else {
                // slow turns: the heading wanders, the speed stays
                let turn = rng.normal() * 0.15 * dt.sqrt();
                let (c, s) = (turn.cos(), turn.sin());
                let (vx, vy) = (w.vx * c - w.vy * s, w.vx * s + w.vy * c);
                w.vx = vx;
                // keep them on the floor: steer back when near the far or near edge
                w.vy = if w.y < fh * 0.38 {
                    vy.abs()
                } else if w.y > fh * 0.99 {
                    -vy.abs()
                } else {
                    vy
                };
                w.x += w.vx * dt;
                w.y += w.vy * dt;
            }
            let b = feet_box(w.x, w.y, w.aspect, fh);
            if b.clip(fw, fh).area() >= 0.5 * b.area() {
                truth.push(TruthBox {
                    frame: f,
                    id: w.id,
                    bbox: b,
                    visibility: 1.0,
                });
            }
        }
    }
    with_visibility(&mut truth);
    let detections = detect(&truth, o.frames, &clutter, o, &mut rng);
    Sequence { truth, detections }
}

/// Sets each box's visibility: the share not covered by boxes nearer the camera (lower feet) in
/// the same frame.
pub fn with_visibility(truth: &mut [TruthBox]) {
    let mut by_frame: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, t) in truth.iter().enumerate() {
        by_frame.entry(t.frame).or_default().push(i);
    }
    for idx in by_frame.values() {
        for &i in idx {
            let b = truth[i].bbox;
            let front: Vec<BBox> = idx
                .iter()
                .filter(|&&j| j != i && truth[j].bbox.y2 > b.y2)
                .map(|&j| truth[j].bbox)
                .collect();
            truth[i].visibility = 1.0 - covered_share(&b, &front);
        }
    }
}

/// A detector's output on `truth` (frames 1..=`frames`): misses, jitter, lower scores for
/// partly hidden people, random false positives and on-and-off `clutter` detections.
pub fn detect(
    truth: &[TruthBox],
    frames: u32,
    clutter: &[(BBox, f32)],
    o: &SequenceOptions,
    rng: &mut SplitMix64,
) -> Vec<DetBox> {
    let (fw, fh) = (o.width, o.height);
    let mut by_frame: std::collections::BTreeMap<u32, Vec<&TruthBox>> = Default::default();
    for t in truth {
        by_frame.entry(t.frame).or_default().push(t);
    }
    let mut out = Vec::new();
    for f in 1..=frames {
        for t in by_frame.get(&f).map(Vec::as_slice).unwrap_or(&[]) {
            let (b, vis) = (t.bbox, t.visibility);
            // found at all, and at which score: partly hidden people are found less often and
            // score lower
            let (p_found, score) = if vis > 0.8 {
                (1.0 - o.miss, 0.55 + 0.4 * rng.next_f32())
            } else if vis > 0.4 {
                (0.75, 0.15 + 0.55 * vis * rng.next_f32().max(0.3))
            } else {
                (0.3, 0.1 + 0.25 * rng.next_f32())
            };
            if rng.next_f32() >= p_found {
                continue;
            }
            let (w, h) = (b.width(), b.height());
            let mut j = |s: f32| rng.normal() * o.jitter * s;
            // a hidden person's box is the visible part, roughly: shrink towards the top
            let cut = if vis < 0.8 {
                (1.0 - vis) * 0.5 * h
            } else {
                0.0
            };
            let d = BBox::new(b.x1 + j(w), b.y1 + j(h), b.x2 + j(w), b.y2 - cut + j(h));
            if d.width() > 2.0 && d.height() > 4.0 {
                out.push(DetBox {
                    frame: f,
                    bbox: d,
                    score: score.clamp(0.1, 0.99),
                });
            }
        }
        // random false positives: mostly low scores
        let mut n_fp = 0;
        while rng.next_f32() < o.false_positives / (1.0 + o.false_positives) && n_fp < 5 {
            n_fp += 1;
            let y = fh * (0.4 + 0.6 * rng.next_f32());
            let x = fw * rng.next_f32();
            let score = 0.1 + 0.5 * rng.next_f32() * rng.next_f32();
            out.push(DetBox {
                frame: f,
                bbox: feet_box(x, y, 0.3 + 0.4 * rng.next_f32(), fh),
                score,
            });
        }
        for (b, s) in clutter {
            if rng.next_f32() < 0.3 {
                out.push(DetBox {
                    frame: f,
                    bbox: *b,
                    score: (s + 0.1 * rng.normal()).clamp(0.1, 0.9),
                });
            }
        }
    }
    out
}

/// Detections made by [`detect`] for a MOTChallenge ground truth (`frame,id,x,y,w,h,…`): real
/// trajectories with the made-up detector's mistakes. The frame size is taken from the boxes.
pub fn from_ground_truth(rows: &[crate::track::mot::MotRow], o: &SequenceOptions) -> Sequence {
    let mut truth: Vec<TruthBox> = rows
        .iter()
        .map(|r| TruthBox {
            frame: r.frame as u32,
            id: r.id.max(0) as u32,
            bbox: r.bbox,
            visibility: 1.0,
        })
        .collect();
    with_visibility(&mut truth);
    let frames = truth.iter().map(|t| t.frame).max().unwrap_or(0);
    let (w, h) = truth.iter().fold((1f32, 1f32), |(w, h), t| {
        (w.max(t.bbox.x2), h.max(t.bbox.y2))
    });
    let o = SequenceOptions {
        width: w,
        height: h,
        ..o.clone()
    };
    let mut rng = SplitMix64::new(o.seed);
    let detections = detect(&truth, frames, &[], &o, &mut rng);
    Sequence { truth, detections }
}

/// Writes `gt.txt` and `det.txt` into `dir`.
pub fn write(seq: &Sequence, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let p = dir.join("gt.txt");
    let mut gt = std::io::BufWriter::new(
        std::fs::File::create(&p)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", p.display()))?,
    );
    for t in &seq.truth {
        writeln!(
            gt,
            "{},{},{:.2},{:.2},{:.2},{:.2},1,1,{:.3}",
            t.frame,
            t.id,
            t.bbox.x1,
            t.bbox.y1,
            t.bbox.width(),
            t.bbox.height(),
            t.visibility
        )?;
    }
    gt.flush()?;
    // detections in the MOTChallenge detection format crosscam reads and writes everywhere
    let rows: Vec<crate::track::mot::MotRow> = seq
        .detections
        .iter()
        .map(|d| crate::track::mot::MotRow {
            frame: d.frame as u64,
            id: -1,
            bbox: d.bbox,
            score: d.score,
        })
        .collect();
    crate::track::mot::write(&dir.join("det.txt"), &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_is_repeatable_and_has_the_mistakes_it_promises() {
        let o = SequenceOptions::default();
        let a = make(&o);
        let b = make(&o);
        assert_eq!(a.truth, b.truth);
        assert_eq!(a.detections, b.detections);
        let ids: std::collections::BTreeSet<u32> = a.truth.iter().map(|t| t.id).collect();
        assert!(ids.len() >= 12, "{} people seen", ids.len());
        // occlusions happen, and hidden people are found less often than visible ones
        let hidden = a.truth.iter().filter(|t| t.visibility < 0.6).count();
        assert!(hidden > 50, "{hidden} hidden boxes");
        // each detection belongs to the true box it overlaps most (a hidden person's box is
        // also overlapped by the detection of the person in front)
        let mut found = vec![false; a.truth.len()];
        let mut scores: (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
        for d in &a.detections {
            let best = a
                .truth
                .iter()
                .enumerate()
                .filter(|(_, t)| t.frame == d.frame)
                .map(|(i, t)| (i, t.bbox.iou(&d.bbox)))
                .max_by(|x, y| x.1.total_cmp(&y.1));
            if let Some((i, iou)) = best
                && iou > 0.5
            {
                found[i] = true;
                if a.truth[i].visibility > 0.9 {
                    scores.0.push(d.score);
                } else if a.truth[i].visibility < 0.6 {
                    scores.1.push(d.score);
                }
            }
        }
        let share = |pred: &dyn Fn(&TruthBox) -> bool| {
            let idx: Vec<usize> = (0..a.truth.len()).filter(|&i| pred(&a.truth[i])).collect();
            idx.iter().filter(|&&i| found[i]).count() as f32 / idx.len().max(1) as f32
        };
        let (vis, hid) = (
            share(&|t| t.visibility > 0.9),
            share(&|t| t.visibility < 0.4),
        );
        assert!(
            vis > 0.85 && hid < 0.5,
            "found: visible {vis}, hidden {hid}"
        );
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len().max(1) as f32;
        assert!(
            mean(&scores.1) + 0.2 < mean(&scores.0),
            "scores: visible {}, partly hidden {}",
            mean(&scores.0),
            mean(&scores.1)
        );
        // some detections are false: they overlap no person
        let fp = a
            .detections
            .iter()
            .filter(|d| {
                !a.truth
                    .iter()
                    .any(|t| t.frame == d.frame && t.bbox.iou(&d.bbox) > 0.1)
            })
            .count();
        assert!(fp > 100, "{fp} false positives");
        assert_ne!(make(&SequenceOptions { seed: 2, ..o }).truth, a.truth);
    }
}
