//! Which tracklets make good pseudo-identities. A tracklet is only trusted as "one person" when it
//! is long enough, rarely overlaps another tracklet (overlaps are where trackers swap identities
//! and crops hold two people), and its crops show the whole person (not cut by the frame edge).
//! Crops that fail those tests are dropped even from kept tracklets.

use std::collections::HashMap;

use serde::Serialize;

use crate::track::Tracklet;

#[derive(Debug, Clone, Serialize)]
pub struct FilterOptions {
    /// Clean boxes (inside the frame, not overlapped, tall enough) a tracklet needs.
    pub min_len: usize,
    /// Boxes lower than this (pixels of the tracked frame) are too small to be useful crops.
    pub min_height: f64,
    /// A box within this many pixels of the frame border is cut by the edge.
    pub edge_margin: f64,
    /// A box whose IoU with another tracklet's box in the same frame exceeds this is overlapped.
    pub overlap_iou: f64,
    /// Tracklets with a larger share of overlapped boxes are dropped.
    pub max_overlapped: f64,
    /// Clean crops a tracklet needs.
    pub min_crops: usize,
}

pub const DEFAULT_MIN_TRACK_LEN: usize = 10;

impl Default for FilterOptions {
    fn default() -> Self {
        FilterOptions {
            min_len: DEFAULT_MIN_TRACK_LEN,
            min_height: 32.0,
            edge_margin: 2.0,
            overlap_iou: 0.3,
            max_overlapped: 0.3,
            min_crops: 2,
        }
    }
}

/// Counts of what the filter did, for the build report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FilterReport {
    pub tracklets_in: usize,
    pub kept: usize,
    pub dropped_overlapped: usize,
    pub dropped_short: usize,
    pub dropped_few_crops: usize,
    pub crops_in: usize,
    pub crops_kept: usize,
}

impl FilterReport {
    pub fn add(&mut self, o: &FilterReport) {
        self.tracklets_in += o.tracklets_in;
        self.kept += o.kept;
        self.dropped_overlapped += o.dropped_overlapped;
        self.dropped_short += o.dropped_short;
        self.dropped_few_crops += o.dropped_few_crops;
        self.crops_in += o.crops_in;
        self.crops_kept += o.crops_kept;
    }
}

/// Keeps the clean tracklets of one camera (frames of `frame_size` = what the tracker saw), each
/// with only its clean crops.
pub fn filter_tracklets(
    tracklets: Vec<Tracklet>,
    frame_size: (u32, u32),
    opts: &FilterOptions,
) -> (Vec<Tracklet>, FilterReport) {
    let (w, h) = (frame_size.0 as f32, frame_size.1 as f32);
    let (overlap_iou, edge_margin) = (opts.overlap_iou as f32, opts.edge_margin as f32);
    let min_height = opts.min_height as f32;
    let mut by_frame: HashMap<u64, Vec<(usize, crate::frame::BBox)>> = HashMap::new();
    for (i, t) in tracklets.iter().enumerate() {
        for b in &t.boxes {
            by_frame.entry(b.seq).or_default().push((i, b.bbox));
        }
    }
    let overlapped = |i: usize, seq: u64, b: &crate::frame::BBox| {
        by_frame
            .get(&seq)
            .is_some_and(|v| v.iter().any(|(j, o)| *j != i && b.iou(o) > overlap_iou))
    };
    let clean_box =
        |b: &crate::frame::BBox| !b.touches_edge(w, h, edge_margin) && b.height() >= min_height;
    let mut report = FilterReport {
        tracklets_in: tracklets.len(),
        ..Default::default()
    };
    let mut kept = Vec::new();
    for (i, mut t) in tracklets.into_iter().enumerate() {
        report.crops_in += t.crops.len();
        let n_over = t
            .boxes
            .iter()
            .filter(|b| overlapped(i, b.seq, &b.bbox))
            .count();
        if t.boxes.is_empty() || n_over as f64 > opts.max_overlapped * t.boxes.len() as f64 {
            report.dropped_overlapped += !t.boxes.is_empty() as usize;
            report.dropped_short += t.boxes.is_empty() as usize;
            continue;
        }
        let n_clean = t
            .boxes
            .iter()
            .filter(|b| clean_box(&b.bbox) && !overlapped(i, b.seq, &b.bbox))
            .count();
        if n_clean < opts.min_len {
            report.dropped_short += 1;
            continue;
        }
        t.crops
            .retain(|c| clean_box(&c.bbox) && !overlapped(i, c.seq, &c.bbox));
        if t.crops.len() < opts.min_crops.max(1) {
            report.dropped_few_crops += 1;
            continue;
        }
        report.crops_kept += t.crops.len();
        report.kept += 1;
        kept.push(t);
    }
    (kept, report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::build::tests::synthetic_tracklet;
    use crate::frame::BBox;

    #[test]
    fn short_overlapped_and_edge_tracklets_are_dropped() {
        let opts = FilterOptions {
            min_len: 5,
            ..Default::default()
        };
        let walk = |x0: f32, dx: f32| {
            move |k: u64| BBox::from_xywh(x0 + dx * k as f32, 100.0, 40.0, 100.0)
        };
        let good = synthetic_tracklet("c1", 1, 0, 20, walk(100.0, 5.0));
        let short = synthetic_tracklet("c1", 2, 0, 4, walk(500.0, 0.0));
        // walks along the left border for most of its life: few clean boxes
        let edge = synthetic_tracklet("c1", 3, 0, 20, |k| {
            BBox::from_xywh(if k < 17 { 0.0 } else { 20.0 }, 300.0, 40.0, 100.0)
        });
        // two people on top of each other for the whole time
        let a = synthetic_tracklet("c1", 4, 30, 50, walk(300.0, 0.0));
        let b = synthetic_tracklet("c1", 5, 30, 50, walk(305.0, 0.0));
        let (kept, r) = filter_tracklets(vec![good, short, edge, a, b], (768, 576), &opts);
        assert_eq!(kept.iter().map(|t| t.id).collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            (
                r.tracklets_in,
                r.kept,
                r.dropped_short,
                r.dropped_overlapped
            ),
            (5, 1, 2, 2)
        );
        assert_eq!(kept[0].crops.len(), 20);
    }

    #[test]
    fn crops_at_the_edge_or_overlapped_are_removed_from_kept_tracklets() {
        let opts = FilterOptions {
            min_len: 5,
            ..Default::default()
        };
        // enters from the left edge (first 3 boxes touch it)
        let t = synthetic_tracklet("c1", 1, 0, 20, |k| {
            BBox::from_xywh(k as f32 * 1.0 - 2.0, 100.0, 40.0, 100.0)
        });
        // a passer-by overlapping frames 10..12 only
        let p = synthetic_tracklet("c1", 2, 10, 13, |_| {
            BBox::from_xywh(12.0, 100.0, 40.0, 100.0)
        });
        let (kept, r) = filter_tracklets(vec![t, p], (768, 576), &opts);
        assert_eq!(kept.len(), 1, "{r:?}");
        let seqs: Vec<u64> = kept[0].crops.iter().map(|c| c.seq).collect();
        assert!(
            !seqs.contains(&0) && !seqs.contains(&2),
            "edge crops removed: {seqs:?}"
        );
        assert!(
            !seqs.contains(&10) && !seqs.contains(&12),
            "overlapped crops removed: {seqs:?}"
        );
        assert!(seqs.contains(&5) && seqs.contains(&19));
    }
}
