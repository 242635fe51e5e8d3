//! End to end, cameras to identities: two "virtual cameras" cut from vtest.avi — the first 30 s
//! and the next 30 s, the second with another colour response (GStreamer `videobalance`) — served
//! over RTSP on 127.0.0.1 in real time, one after the other as a person walking from one camera's
//! view into the other's would be seen. The server detects, tracks, embeds and links; its store
//! is then scored against pseudo ground truth: identities from tracking the continuous clip.
//!
//! Virtual cameras cut from one clip share one scene and viewpoint: a proxy for real cameras.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{TestCamera, cut_clip, wait_for};
use crosscam::config::Config;
use crosscam::eval::linking::{Labelled, evaluate, majority};
use crosscam::frame::BBox;
use crosscam::ingest::CameraState;
use crosscam::server::Server;
use crosscam::track::offline::{self, OfflineOptions};

const CUT: f64 = 30.0;
const WIDTH: u32 = 640;

/// Ground truth: the continuous clip tracked at the analysis rate and size. Per frame time (ms of
/// clip time, rounded to 100 ms) the boxes and their track ids.
fn ground_truth(cfg: &Config) -> BTreeMap<i64, Vec<(u64, BBox)>> {
    let rt = crosscam::runtime::init(&cfg.runtime).unwrap();
    let manifest = crosscam::models::Manifest::bundled().unwrap();
    let mut det = crosscam::detect::open(
        &manifest,
        "nanodet-416",
        rt,
        &cfg.detect,
        Default::default(),
    )
    .unwrap();
    let opts = OfflineOptions {
        fps: Some(5),
        width: Some(WIDTH),
        crops: false,
        quiet: true,
        track: cfg.track.clone(),
        ..OfflineOptions::default()
    };
    let run = offline::run(
        &crosscam::paths::media("vtest-h264.mp4"),
        det.as_mut(),
        opts,
    )
    .unwrap();
    let mut gt: BTreeMap<i64, Vec<(u64, BBox)>> = BTreeMap::new();
    for t in &run.tracklets {
        for b in &t.boxes {
            gt.entry((b.pts.as_millis() as i64 + 50) / 100 * 100)
                .or_default()
                .push((t.id, b.bbox));
        }
    }
    gt
}

/// Votes of a live tracklet's boxes for ground-truth ids, with the camera's clip-time offset.
fn votes(gt: &BTreeMap<i64, Vec<(u64, BBox)>>, boxes: &[(i64, BBox)], offset_ms: i64) -> Vec<u64> {
    let mut v = Vec::new();
    for (t, b) in boxes {
        let key = (t + offset_ms + 50) / 100 * 100;
        for k in [key - 100, key, key + 100] {
            let best = gt.get(&k).and_then(|bs| {
                bs.iter()
                    .map(|(id, g)| (g.iou(b), *id))
                    .max_by(|a, b| a.0.total_cmp(&b.0))
            });
            if let Some((iou, id)) = best
                && iou >= 0.5
            {
                v.push(id);
                break;
            }
        }
    }
    v
}

#[test]
fn two_virtual_cameras_link_people_better_than_trivial_baselines() {
    let dir = tempfile::tempdir().unwrap();
    let (clip_a, clip_b) = (dir.path().join("a.mp4"), dir.path().join("b.mp4"));
    let src = crosscam::paths::media("vtest-h264.mp4");
    cut_clip(&src, 0.0, CUT, None, &clip_a);
    cut_clip(
        &src,
        CUT,
        2.0 * CUT,
        Some("brightness=-0.08 saturation=0.6 hue=0.03"),
        &clip_b,
    );
    let cam_a = TestCamera::serve(&clip_a, None);
    // The embedder must not have been trained on vtest.avi: crosscam's own ResNet-18 was (its
    // train split is people of this very clip), so the test links with the ImageNet MobileNetV2.
    // CROSSCAM_E2E_EMBEDDER=NAME measures another one (docs/linking.md has both).
    let embedder =
        std::env::var("CROSSCAM_E2E_EMBEDDER").unwrap_or_else(|_| "mobilenetv2-imagenet".into());
    let root = env!("CARGO_MANIFEST_DIR");
    let data = dir.path().join("data");
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[models]\nmanifest = \"{root}/models/manifest.toml\"\nembedder = \"{embedder}\"\n\
         [analysis]\nfps = 5\nwidth = {WIDTH}\n\
         [[cameras]]\nid = \"a\"\nurl = \"{}\"\ntransport = \"tcp\"\n",
        data.display(),
        cam_a.url()
    );
    let cfg = Config::parse(&text, Path::new(&format!("{root}/tests/e2e.toml"))).unwrap();
    let gt = ground_truth(&cfg);

    let server = Server::start(&cfg, None).unwrap();
    let live = |id: &str| {
        server
            .ingest
            .camera_status(id)
            .is_some_and(|s| s.state == CameraState::Live)
    };
    assert!(
        wait_for(Duration::from_secs(20), || live("a")).is_some(),
        "{:?}",
        server.status()
    );
    // camera b comes on when a's clip ends: the people walk on into b's view. Camera a is
    // removed then (its RTSP server would replay the clip on reconnection).
    let ended = wait_for(Duration::from_secs_f64(CUT + 15.0), || !live("a"));
    assert!(
        ended.is_some(),
        "camera a's clip did not end: {:?}",
        server.status()
    );
    server.ingest.remove("a").unwrap();
    let cam_b = TestCamera::serve(&clip_b, None);
    let mut b = cfg.cameras[0].clone();
    b.id = "b".into();
    b.url = cam_b.url();
    server.ingest.add(b).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || live("b")).is_some(),
        "{:?}",
        server.status()
    );
    std::thread::sleep(Duration::from_secs_f64(CUT + 2.0));
    let status = server.status();
    // the tag the serving model's descriptors are stored under (registry version and checksum)
    let model_tag = server.model();
    server.shutdown();
    drop((cam_a, cam_b));

    // what the server decided, from its store
    let store = crosscam::store::Store::open(&data).unwrap();
    let sightings = store.sightings().unwrap();
    let boxes = store.tracklet_boxes().unwrap();
    assert!(
        sightings.len() >= 6,
        "too few linked tracklets: {} ({status:?})",
        sightings.len()
    );
    let mut items = Vec::new();
    // the live descriptors, for the similarity distributions of the report
    let descriptors: BTreeMap<i64, Vec<f32>> = store
        .live_tracklets(&model_tag)
        .unwrap()
        .into_iter()
        .map(|t| (t.tracklet, t.descriptor))
        .collect();
    let (mut calib_items, mut calib_rows) = (Vec::new(), Vec::new());
    let mut best_offsets = BTreeMap::new();
    for cam in ["a", "b"] {
        // the camera's stream time starts near its clip's start: find the exact offset by search
        let base = if cam == "a" { 0 } else { (CUT * 1000.0) as i64 };
        let cam_boxes: Vec<&crosscam::store::StoredBoxes> =
            boxes.iter().filter(|(_, c, _)| c == cam).collect();
        let offset = (-15..=15)
            .map(|k| base + k * 100)
            .max_by_key(|&o| {
                cam_boxes
                    .iter()
                    .map(|(_, _, bs)| votes(&gt, bs, o).len())
                    .sum::<usize>()
            })
            .unwrap();
        best_offsets.insert(cam, offset);
        for (tracklet, _, bs) in cam_boxes {
            let Some(s) = sightings.iter().find(|s| s.tracklet == *tracklet) else {
                continue;
            };
            if let Some(truth) = majority(&votes(&gt, bs, offset), bs.len().div_ceil(2).max(2)) {
                if let Some(d) = descriptors.get(tracklet) {
                    calib_items.push(crosscam::eval::Item {
                        path: Default::default(),
                        pid: truth as i32 + 1,
                        camid: if cam == "a" { 1 } else { 2 },
                        seq: Some(*tracklet as u32),
                        frame: None,
                    });
                    calib_rows.extend_from_slice(d);
                }
                items.push(Labelled {
                    camera: cam.into(),
                    identity: s.identity,
                    truth,
                });
            }
        }
    }
    let report = evaluate(&items);
    if !calib_items.is_empty() {
        let refs: Vec<&crosscam::eval::Item> = calib_items.iter().collect();
        let dim = calib_rows.len() / refs.len();
        let rows = ndarray::Array2::from_shape_vec((refs.len(), dim), calib_rows).unwrap();
        eprintln!(
            "live descriptors ({embedder}): {:?}",
            crosscam::eval::calibrate::calibrate(&refs, rows.view())
        );
    }
    eprintln!(
        "offsets {best_offsets:?}\nlink report: {}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(
        report.linker.true_pairs >= 3,
        "the cut must leave people seen by both cameras: {report:?}"
    );
    assert!(report.linker.f1 > report.baseline_all_new.f1, "{report:?}");
    assert!(
        report.linker.f1 > report.baseline_one_person.f1,
        "{report:?}"
    );
}
