//! Greedy non-maximum suppression.

use crate::track::Detection;

/// Keeps the best-scoring boxes, dropping any box overlapping a kept one by more than `iou`.
/// Returns detections sorted by descending score.
pub fn nms(mut dets: Vec<Detection>, iou: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if keep.iter().all(|k| k.bbox.iou(&d.bbox) <= iou) {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::BBox;

    #[test]
    fn overlapping_lower_scores_go() {
        let d = |x: f32, s: f32| Detection {
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
            score: s,
        };
        let kept = nms(vec![d(0.0, 0.5), d(1.0, 0.9), d(20.0, 0.3)], 0.5);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].score, 0.3);
    }
}
