//! The NanoDet person detector on real frames of vtest.avi, decoded by crosscam's own pipeline.

use crosscam::config::{DetectInput, DetectSettings, RuntimeSettings};
use crosscam::detect::{self, Detector};
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

fn nanodet(input: DetectInput) -> detect::nanodet::NanoDet {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let manifest = Manifest::bundled().unwrap();
    let settings = DetectSettings {
        input,
        ..DetectSettings::default()
    };
    detect::nanodet::NanoDet::open(
        &manifest,
        "nanodet-416",
        rt,
        &settings,
        SessionOptions::default(),
    )
    .unwrap()
}

/// Boxes at score ≥ 0.3 of `a` that a box of `b` matches at IoU ≥ 0.5, and the counts.
fn agreement(
    a: &[crosscam::track::Detection],
    b: &[crosscam::track::Detection],
) -> (usize, usize, usize) {
    let keep = |d: &[crosscam::track::Detection]| -> Vec<crosscam::track::Detection> {
        d.iter().filter(|x| x.score >= 0.3).cloned().collect()
    };
    let (a, b) = (keep(a), keep(b));
    let m = crosscam::quantize::check::matched_boxes(&a, &b, 0.5);
    (m, a.len(), b.len())
}

/// A fitted input (416×320 for vtest's 4:3 frames, 416×256 for a 16:9 cut of them) finds the
/// people the square letterbox finds, in the same places.
#[test]
fn a_fitted_input_finds_what_the_square_letterbox_finds() {
    let frames = vtest_frames(&[20, 120, 220, 320, 420, 520, 620, 720]);
    let mut fit = nanodet(DetectInput::Fit);
    let mut square = nanodet(DetectInput::Square);
    let wide: Vec<Frame> = frames
        .iter()
        .map(|f| {
            let cut = f.crop(&crosscam::frame::BBox::new(0.0, 72.0, 768.0, 504.0));
            Frame::from_image(&cut)
        })
        .collect();
    for (set, expect) in [(&frames, (416, 320)), (&wide, (416, 256))] {
        let refs: Vec<&Frame> = set.iter().collect();
        assert_eq!(fit.input_size(&refs[..1]), expect);
        assert_eq!(square.input_size(&refs[..1]), (416, 416));
        let (mut matched, mut n_square, mut n_fit) = (0, 0, 0);
        for f in &refs {
            let s = &square.detect(&[f]).unwrap()[0];
            let t = &fit.detect(&[f]).unwrap()[0];
            let (m, a, b) = agreement(s, t);
            matched += m;
            n_square += a;
            n_fit += b;
        }
        let recall = matched as f64 / n_square as f64;
        let precision = matched as f64 / n_fit as f64;
        eprintln!(
            "{}x{} frames: square {n_square} boxes, fit {n_fit}, matched {matched} (recall {recall:.3}, precision {precision:.3})",
            set[0].width, set[0].height
        );
        assert!(n_square >= 30, "too few people to compare: {n_square}");
        assert!(
            recall >= 0.93 && precision >= 0.93,
            "fit and square disagree"
        );
    }
}

/// A smaller `[detect] size` runs the fitted input at that long side; a detector whose input
/// size is fixed refuses it with a message naming the key, and letterboxes to its square when
/// asked to fit.
#[test]
fn the_detector_size_needs_a_model_whose_input_size_may_vary() {
    let frames = vtest_frames(&[100]);
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let manifest = Manifest::bundled().unwrap();
    let entry = manifest.get("nanodet-416").unwrap().clone();
    let path = manifest.verify_file(&entry).unwrap();
    let small = DetectSettings {
        size: Some(320),
        input: DetectInput::Fit,
        ..DetectSettings::default()
    };
    let (s, _) = rt.session(&path, SessionOptions::default()).unwrap();
    let mut d = detect::nanodet::NanoDet::with_session(s, &entry, &small).unwrap();
    assert_eq!(d.input_size(&[&frames[0]]), (320, 256));
    let people = d.detect(&[&frames[0]]).unwrap()[0]
        .iter()
        .filter(|x| x.score >= 0.3)
        .count();
    assert!(people >= 3, "{people} people at 320 px");

    // the same network with its input fixed at 1×3×416×416, as most exports are
    let mut fixed = crosscam::onnx::Model::load(&path).unwrap();
    fixed.graph.inputs[0].shape = Some(
        [1, 3, 416, 416]
            .into_iter()
            .map(crosscam::onnx::Dim::Fixed)
            .collect(),
    );
    let bytes = fixed.to_bytes();
    let (s, _) = rt
        .session_from_bytes(&bytes, SessionOptions::default())
        .unwrap();
    let e = detect::nanodet::NanoDet::with_session(s, &entry, &small)
        .err()
        .expect("a fixed-size model refuses another size");
    let msg = e.to_string();
    assert!(
        msg.contains("[detect] size = 320") && msg.contains("fixed at 416×416"),
        "{msg}"
    );
    let (s, _) = rt
        .session_from_bytes(&bytes, SessionOptions::default())
        .unwrap();
    let fit = DetectSettings {
        input: DetectInput::Fit,
        ..DetectSettings::default()
    };
    let d = detect::nanodet::NanoDet::with_session(s, &entry, &fit).unwrap();
    assert!(!d.fits());
    assert_eq!(d.input_size(&[&frames[0]]), (416, 416));
}
