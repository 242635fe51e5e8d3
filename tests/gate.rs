//! The promotion gate on operators' labels refuses damaged candidates, and one that the old
//! split-tracklet proxy would have promoted.
//!
//! The site: `crosscam dataset build` on the real vtest clip (two virtual cameras, the second
//! with another colour response), whose identities are known (pseudo-identities linked by
//! position and time). Its tracklets go into a real store with their crops, and labels are
//! made from the known identities with the store's own functions, as the API makes them: two
//! tracklets of one person in the two cameras are a `same` label, tracklets of two people a
//! `different` one. The job's store source exports them; the gate scores the serving model and
//! three candidates on them, and each candidate is also scored the old way (each held-out
//! tracklet split in two halves, called two cameras) and judged by the old rule; both sets of
//! numbers are printed:
//!
//! - the serving model pruned to 10 % of its MACs without re-tuning, and the serving network
//!   with random weights: the gate refuses both; on this clip the old proxy refuses them too
//!   (mAP about 80 % → 51 % and 56 %), so nothing is claimed for the proxy there;
//! - a colour-biased candidate (the serving model with the image's mean colour appended to its
//!   embedding, ×30: what a network that learned one camera's colours does): the old proxy
//!   promotes it ("better": same person a few seconds later in the same camera looks even more
//!   alike, mAP 80.0 % → 81.9 %, 41 queries), the gate on labels refuses it (pair AUC
//!   84.8 % → 74.4 %, 46 labelled pairs: a small sample).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use crosscam::jobs::evaluate::{EvalSet, GatePolicy, evaluate_labels, evaluate_set};
use crosscam::jobs::{CropSource, PromotePolicy, StoreSource};
use crosscam::onnx::Model;
use crosscam::prune::criteria::{Criterion, WeightScorer};
use crosscam::prune::{NoRetune, PruneOptions, Target};
use crosscam::store::{LabelKind, NewLabel, Store};
use crosscam::train::Cancel;

fn build_dataset(out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["dataset", "build", "--video"])
        .arg(crosscam::paths::media("vtest.avi"))
        .arg("--out")
        .arg(out)
        .args([
            "--cameras",
            "c1=0-5s,every=10s; c2=5-10s,every=10s,brightness=0.7,cast=1.1:1.0:0.9",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn the_gate_on_labels_refuses_damaged_candidates_and_one_the_old_proxy_promotes() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    build_dataset(&ds);
    let (_, site) = crosscam::train::site::load_dataset(&ds).unwrap();

    // the site's footage in a store: one stored tracklet per dataset tracklet, with its crops
    let data = dir.path().join("data");
    let store = Store::open(&data).unwrap();
    let run = store.begin_run().unwrap();
    let mut rows: Vec<(i64, String, i64)> = Vec::new(); // (row, camera, person)
    for (k, (t, pid)) in site.tracklets.iter().zip(&site.identities).enumerate() {
        let Some(pid) = pid else { continue };
        let start = t.start.as_millis() as i64;
        let tr = crosscam::track::Tracklet {
            camera: t.camera.clone(),
            id: k as u64 + 1,
            start: t.start,
            end: t.end.max(t.start + Duration::from_millis(1)),
            boxes: vec![crosscam::track::TrackedBox {
                seq: 0,
                pts: t.start,
                bbox: crosscam::frame::BBox::new(0.0, 0.0, 32.0, 64.0),
                score: 0.9,
                wall_ms: 1_700_000_000_000 + start,
            }],
            crops: vec![],
        };
        let row = store.upsert_tracklet(run, &tr, 0.5, true).unwrap();
        let crops: Vec<crosscam::track::Crop> = t
            .crops
            .iter()
            .enumerate()
            .map(|(i, c)| crosscam::track::Crop {
                seq: i as u64,
                pts: t.start,
                bbox: crosscam::frame::BBox::new(0.0, 0.0, 32.0, 64.0),
                quality: 0.5,
                image: Arc::clone(c),
                jpeg: None,
            })
            .collect();
        store.save_crops(row, &t.camera, &crops).unwrap();
        rows.push((row, t.camera.clone(), *pid));
    }
    // labels from the known identities
    let mut people: Vec<i64> = rows.iter().map(|r| r.2).collect();
    people.sort_unstable();
    people.dedup();
    let of = |p: i64, cam: Option<&str>| -> Vec<i64> {
        rows.iter()
            .filter(|r| r.2 == p && cam.is_none_or(|c| r.1 == c))
            .map(|r| r.0)
            .collect()
    };
    let label = |kind: LabelKind, a: Vec<i64>, b: Vec<i64>| NewLabel {
        kind,
        identity: None,
        other: None,
        tracklet: None,
        a,
        b,
        actor: "operator".into(),
        note: "from the dataset's identities".into(),
    };
    let (mut same, mut different) = (0, 0);
    for (i, &p) in people.iter().enumerate() {
        let (c1, c2) = (of(p, Some("c1")), of(p, Some("c2")));
        if !c1.is_empty() && !c2.is_empty() {
            store.add_label(&label(LabelKind::Same, c1, c2)).unwrap();
            same += 1;
        }
        for q in people.iter().skip(i + 1).take(2) {
            store
                .add_label(&label(
                    LabelKind::Different,
                    of(p, None)[..1].to_vec(),
                    of(*q, None)[..1].to_vec(),
                ))
                .unwrap();
            different += 1;
        }
    }
    assert!(
        same >= 5 && same + different >= 30,
        "{same} same, {different} different"
    );
    drop(store);

    // the job's store source exports crops and labels; the gate holds all labels out here
    let collected = StoreSource {
        data_dir: data.clone(),
        cameras: vec![],
        min_crops: 1,
    }
    .collect(&Cancel::default())
    .unwrap();
    assert_eq!(collected.pairs.len(), same + different);
    let (train, gate_site) = collected.hold_out_labels(1.0);
    assert!(train.pairs.is_empty());
    assert_eq!(gate_site.pairs.len(), same + different);

    let serving =
        Model::load(&crosscam::paths::project_root().join("models/crosscam-resnet18-vtest.onnx"))
            .unwrap();
    let pruned = crosscam::prune::prune(
        &serving,
        &PruneOptions::new(Target::Macs(0.1)),
        &mut WeightScorer {
            criterion: Criterion::L1,
        },
        &mut NoRetune,
    )
    .unwrap();
    println!(
        "candidate: pruned to {:.1} % of the MACs, not re-tuned",
        100.0 * pruned.report.macs_fraction
    );

    // the new gate, on labels
    let policy = GatePolicy::default();
    let s = evaluate_labels(&serving, &gate_site, policy.far).unwrap();
    let c = evaluate_labels(&pruned.model, &gate_site, policy.far).unwrap();
    println!("labels, serving:   {s:?}");
    println!("labels, candidate: {c:?}");
    let g = policy.judge(s.clone(), c.clone());
    println!(
        "gate on labels: passed {} weak {}: {}",
        g.passed, g.weak, g.reason
    );
    assert_eq!((s.same_pairs, s.different_pairs), (same, different));
    assert!(!g.weak, "{}", g.reason);
    assert!(
        !g.passed,
        "the gate passed a candidate pruned to 10 % without re-tuning: {}",
        g.reason
    );
    // the serving model itself tells labelled people apart (the labels carry information)
    assert!(s.auc.unwrap() > 0.75, "{s:?}");

    // the old proxy: the same footage without labels, tracklets split in two halves
    let (_, held) = EvalSet::hold_out(&collected.without_labels(), 0.25, 0);
    assert_eq!(held.kind, "tracklets");
    let old = evaluate_set(&serving, &held).unwrap();
    let new = evaluate_set(&pruned.model, &held).unwrap();
    let (proxy_go, why) = PromotePolicy::default().decide(&old, &new);
    println!(
        "split-tracklet proxy ({} queries): serving mAP {:.3}, candidate mAP {:.3} → promote {proxy_go}: {why}",
        old.queries, old.map, new.map
    );

    // a candidate judged both ways: (gate on labels passed, its reason, old proxy promoted, why)
    let both = |name: &str, candidate: &Model| {
        let c = evaluate_labels(candidate, &gate_site, policy.far).unwrap();
        let g = policy.judge(s.clone(), c.clone());
        let new = evaluate_set(candidate, &held).unwrap();
        let (proxy_go, why) = PromotePolicy::default().decide(&old, &new);
        println!("{name}: labels {c:?}");
        println!(
            "{name}: gate on labels: passed {} weak {}: {}",
            g.passed, g.weak, g.reason
        );
        println!(
            "{name}: split-tracklet proxy: serving mAP {:.3}, candidate mAP {:.3} → promote {proxy_go}: {why}",
            old.map, new.map
        );
        (g.passed, g.reason, proxy_go, why)
    };

    // the other damaged candidate: the serving network with random weights
    let (passed, reason, _, _) = both("random weights", &random_weights(&serving, 7));
    assert!(!passed, "the gate passed random weights: {reason}");

    // what the proxy favours: a candidate that tells people apart by the colour each camera
    // records (the serving model with the image's mean colour appended): same person a few
    // seconds later, in the same camera, looks even more alike to it; across cameras with
    // another colour response the same person looks less alike
    let (passed, reason, proxy_go, why) = both("colour-biased", &colour_biased(&serving, 30.0));
    assert!(
        proxy_go,
        "the old proxy was expected to promote the colour-biased candidate: {why}"
    );
    assert!(
        !passed,
        "the gate passed the colour-biased candidate: {reason}"
    );
}

/// `model` with the image's mean colour (times `weight`) appended to its embedding: a network
/// that tells people apart by the colour one camera records.
fn colour_biased(model: &Model, weight: f32) -> Model {
    use crosscam::onnx::{Attr, Dim, Node, Tensor};
    let mut m = model.clone();
    let input = m.graph.inputs[0].name.clone();
    let out = m.graph.outputs[0].name.clone();
    let g = &mut m.graph;
    g.initializers
        .insert("cb_w".into(), Tensor::f32(vec![1], vec![weight]));
    g.nodes.push(Node::new(
        "GlobalAveragePool",
        "cb_pool",
        &[&input],
        &["cb_pooled"],
    ));
    g.nodes.push(Node::new(
        "Flatten",
        "cb_flat",
        &["cb_pooled"],
        &["cb_colour"],
    ));
    g.nodes.push(Node::new(
        "Mul",
        "cb_mul",
        &["cb_colour", "cb_w"],
        &["cb_scaled"],
    ));
    g.nodes.push(
        Node::new("Concat", "cb_cat", &[&out, "cb_scaled"], &["cb_out"])
            .with_attr("axis", Attr::Int(1)),
    );
    let batch = g.outputs[0]
        .shape
        .as_ref()
        .and_then(|s| s.first().cloned())
        .unwrap_or(Dim::Unknown);
    g.outputs[0].name = "cb_out".into();
    g.outputs[0].shape = Some(vec![batch, Dim::Unknown]);
    m
}

/// `model` with every weight tensor (2 dimensions or more) replaced by Gaussian noise of the
/// tensor's own mean and standard deviation: the same network, untrained.
fn random_weights(model: &Model, seed: u64) -> Model {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = model.clone();
    for t in m.graph.initializers.values_mut() {
        if t.dims.len() < 2 {
            continue;
        }
        if let crosscam::onnx::TensorData::F32(v) = &mut t.data {
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            for x in v.iter_mut() {
                // Box–Muller
                let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                *x = (mean + sd * z) as f32;
            }
        }
    }
    m
}
