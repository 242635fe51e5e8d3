//! The NanoDet person detector on real frames of vtest.avi, decoded by crosscam's own pipeline.

use crosscam::config::{DetectSettings, RuntimeSettings};
use crosscam::detect;
use crosscam::frame::Frame;
use crosscam::ingest::VideoReader;
use crosscam::models::Manifest;
use crosscam::runtime::{self, SessionOptions};

fn vtest_frames(indices: &[u64]) -> Vec<Frame> {
    let reader = VideoReader::open(&crosscam::paths::media("vtest.avi"), None, None)
        .expect("vtest.avi from make setup");
    let last = *indices.iter().max().unwrap();
    reader
        .take(last as usize + 1)
        .map(|f| f.expect("decodes"))
        .filter(|f| indices.contains(&f.seq))
        .collect()
}

fn detector() -> Box<dyn detect::Detector> {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let manifest = Manifest::bundled().unwrap();
    detect::open(
        &manifest,
        "nanodet-416",
        rt,
        &DetectSettings::default(),
        SessionOptions::default(),
    )
    .unwrap()
}

#[test]
fn vtest_frame_100_has_at_least_five_people_inside_the_frame() {
    let frames = vtest_frames(&[100]);
    assert_eq!((frames[0].width, frames[0].height), (768, 576));
    let mut d = detector();
    let dets = &d.detect(&[&frames[0]]).unwrap()[0];
    let people: Vec<_> = dets.iter().filter(|d| d.score >= 0.3).collect();
    eprintln!(
        "frame 100: {} people: {:?}",
        people.len(),
        people.iter().map(|d| d.score).collect::<Vec<_>>()
    );
    assert!(people.len() >= 5, "found {} people", people.len());
    for p in &people {
        let b = p.bbox;
        assert!(
            b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 768.0 && b.y2 <= 576.0,
            "{b:?}"
        );
        assert!(
            b.height() > b.width(),
            "a standing person is taller than wide: {b:?}"
        );
    }
}

#[test]
fn batched_detection_equals_one_frame_at_a_time() {
    let frames = vtest_frames(&[10, 200, 400, 600]);
    let mut d = detector();
    assert!(d.max_batch() >= 4);
    let refs: Vec<&Frame> = frames.iter().collect();
    let batched = d.detect(&refs).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let single = &d.detect(&[f]).unwrap()[0];
        assert_eq!(single.len(), batched[i].len(), "frame {}", f.seq);
        for (a, b) in single.iter().zip(&batched[i]) {
            assert!((a.score - b.score).abs() < 1e-3 && a.bbox.iou(&b.bbox) > 0.99);
        }
    }
}
