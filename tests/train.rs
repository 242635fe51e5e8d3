//! The training engine end to end, on tiny networks (64×32 inputs, 1/8 widths) so the suite stays
//! fast on 2 cores: ONNX → burn → ONNX parity against ONNX Runtime (full and pruned widths, BN
//! kept and BN folded, every tail style), training reduces the loss, runs are deterministic,
//! checkpoints resume exactly, cancel leaves the last checkpoint intact, distillation from an ORT
//! teacher learns, and pseudo-labelled training runs on tracklets.

use std::sync::Arc;
use std::time::Duration;

use burn::tensor::{Tensor, TensorData};
use crosscam::config::RuntimeSettings;
use crosscam::frame::Normalize;
use crosscam::onnx::Model;
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, Tail, build};
use crosscam::reid::Embedder;
use crosscam::runtime::{self, SessionOptions};
use crosscam::train::augment::AugmentConfig;
use crosscam::train::distill::{DistillConfig, OrtTeacher};
use crosscam::train::loss::DistillKind;
use crosscam::train::model::tensor_vec;
use crosscam::train::pseudo::{PseudoConfig, TrackletCrops};
use crosscam::train::sampler::PkConfig;
use crosscam::train::trainer::{DecayKind, RunControl, StepReport, TrainData};
use crosscam::train::{
    Cancel, ExportOptions, NetLayout, ReidModel, TrainConfig, Trainer, checkpoint, device, export,
};
use image::RgbImage;
use ndarray::Array4;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const H: usize = 64;
const W: usize = 32;

fn tiny(spec: ResNetSpec) -> ResNetSpec {
    spec.for_reid().scaled(0.125).with_input(H, W)
}

fn input(n: usize, seed: u64) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    (0..n * 3 * H * W)
        .map(|_| r.random_range(-2.0..2.0))
        .collect()
}

/// Runs `model` in ONNX Runtime on `x` ([n,3,H,W]); its first output.
fn ort(model: &Model, x: &[f32], n: usize) -> Vec<f32> {
    let rt =
        runtime::init(&RuntimeSettings::default()).expect("ONNX Runtime from .deps (make setup)");
    let opts = SessionOptions {
        cpu_only: true,
        ..SessionOptions::default()
    };
    let (mut s, _) = rt
        .session_from_bytes(&model.to_bytes(), opts)
        .expect("session");
    let arr = Array4::from_shape_vec((n, 3, H, W), x.to_vec()).unwrap();
    let t = ort::value::TensorRef::from_array_view(&arr).unwrap();
    let name = model.graph.inputs[0].name.clone();
    let out = s.run(ort::inputs![name.as_str() => t]).unwrap();
    let (_, data) = out[0].try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

/// burn's inference embedding of `x`.
fn burn_eval(m: &ReidModel, x: &[f32], n: usize) -> Vec<f32> {
    let t = Tensor::<4>::from_data(
        TensorData::new(x.to_vec(), [n, 3, H, W]),
        &m.device().inner(),
    );
    tensor_vec(m.embed(t))
}

fn unit_rows(v: &[f32], n: usize) -> Vec<f32> {
    v.chunks(v.len() / n)
        .flat_map(|r| {
            let l = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            r.iter().map(move |x| x / l)
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Source graph, burn eval and both exports agree within 1e-4.
fn assert_parity(source: &Model, what: &str) -> ReidModel {
    let m = ReidModel::from_onnx(source, &device::cpu()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let x = input(3, 9);
    let want = ort(source, &x, 3);
    let got = burn_eval(&m, &x, 3);
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(scale > 1e-3, "{what}: degenerate outputs");
    // f32 sums in different orders: 1e-4 absolute, relative to the output scale above 1
    let tol = 1e-4 * scale.max(1.0);
    let d = max_diff(&want, &got);
    assert!(
        d < tol,
        "{what}: burn vs source graph {d} (outputs up to {scale})"
    );
    eprintln!("{what}: outputs up to {scale:.3}, burn vs source graph in ORT {d:.2e}");
    // what the embedder serves, L2-normalised rows: within 1e-4 absolute
    let d = max_diff(&unit_rows(&want, 3), &unit_rows(&got, 3));
    assert!(d < 1e-4, "{what}: normalised embeddings differ by {d}");
    for fold_bn in [true, false] {
        let e = export(
            &m,
            &ExportOptions {
                fold_bn,
                ..ExportOptions::default()
            },
        );
        let e = Model::from_bytes(&e.to_bytes()).unwrap();
        let d = max_diff(&ort(&e, &x, 3), &got);
        assert!(
            d < tol,
            "{what} (fold_bn {fold_bn}): export vs burn {d} (outputs up to {scale})"
        );
        eprintln!("{what}: export (fold_bn {fold_bn}) in ORT vs burn {d:.2e}");
    }
    m
}

#[test]
fn exported_models_match_burn_in_onnx_runtime_full_and_pruned() {
    let fused = Style {
        fuse_bn: true,
        ..Style::default()
    };
    let chain = Style {
        fuse_bn: true,
        tail: Tail::ReduceMeanShapeChain,
        opset: 13,
        identity_weights: true,
    };
    let r18 = tiny(ResNetSpec::resnet18());
    let r50 = tiny(ResNetSpec::resnet50());
    // pruned: irregular inner widths, a narrower stage, a narrower stem
    let mut p18 = r18.clone();
    p18.stem_width = 5;
    p18.inner_widths[0][0] = vec![3];
    p18.inner_widths[2][1] = vec![7];
    p18.stage_widths[3] = 40;
    let mut p50 = r50.clone();
    p50.inner_widths[1][0] = vec![5, 9];
    p50.inner_widths[3][2] = vec![1, 13];
    p50.stage_widths[2] = 72;
    for (spec, name) in [
        (&r18, "resnet18"),
        (&r50, "resnet50"),
        (&p18, "pruned resnet18"),
        (&p50, "pruned resnet50"),
    ] {
        for (style, sname) in [
            (Style::default(), "BN kept"),
            (fused, "BN fused"),
            (chain, "shape-chain tail"),
        ] {
            let g = build(spec, Head::BnNeck, style, Init::RandomStats, 5);
            assert_parity(&g, &format!("{name}, {sname}"));
        }
    }
    let g = build(&p18, Head::Features, Style::default(), Init::RandomStats, 6);
    assert_parity(&g, "pruned resnet18 without neck");
}

/// Four "people" (colour patterns) × `per` noisy crops of different sizes.
fn people(per: usize, seed: u64) -> (Vec<RgbImage>, Vec<i64>) {
    let colours = [
        [200, 30, 30],
        [30, 200, 30],
        [30, 30, 200],
        [200, 200, 30],
        [30, 200, 200],
        [200, 30, 200],
    ];
    let mut r = StdRng::seed_from_u64(seed);
    let mut imgs = Vec::new();
    let mut labels = Vec::new();
    for id in 0..4usize {
        let (top, bottom) = (colours[id], colours[(id + 2) % 6]);
        for _ in 0..per {
            let (w, h) = (r.random_range(20..40), r.random_range(50..80));
            let img = RgbImage::from_fn(w, h, |_, y| {
                let c = if y < h / 2 { top } else { bottom };
                image::Rgb(c.map(|v: u8| v.saturating_add(r.random_range(0..40))))
            });
            imgs.push(img);
            labels.push(id as i64 * 10);
        }
    }
    (imgs, labels)
}

fn small_config(seed: u64, epochs: u64, spe: u64) -> TrainConfig {
    TrainConfig {
        seed,
        epochs,
        steps_per_epoch: spe,
        pk: PkConfig { p: 4, k: 2 },
        lr: 3e-3,
        warmup: 0.0,
        decay: DecayKind::None,
        augment: AugmentConfig {
            erase: 0.0,
            ..AugmentConfig::default()
        },
        infer_batch: 8,
        ..TrainConfig::default()
    }
}

fn fresh_model(seed: u64) -> ReidModel {
    ReidModel::fresh(
        NetLayout::from_spec(&tiny(ResNetSpec::resnet18()), true),
        seed,
        &device::cpu().autodiff(),
    )
}

fn run(
    trainer: Trainer,
    data: &mut TrainData,
    ctl: RunControl<'_>,
) -> crosscam::train::TrainOutcome {
    trainer.run(data, ctl).unwrap()
}

#[test]
fn a_few_steps_reduce_the_loss_and_the_trained_export_still_matches() {
    let (imgs, labels) = people(4, 1);
    let mut data = TrainData::labelled(&imgs, &labels, (H, W), Normalize::IMAGENET).unwrap();
    let t = Trainer::new(fresh_model(1), &data, small_config(1, 1, 24), None).unwrap();
    let out = run(
        t,
        &mut data,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    let l = &out.losses;
    assert_eq!(l.len(), 24);
    let first = l[..4].iter().sum::<f32>() / 4.0;
    let last = l[l.len() - 4..].iter().sum::<f32>() / 4.0;
    assert!(last < 0.7 * first, "loss {first} → {last}: {l:?}");
    // trained BN statistics and weights export exactly too
    let x = input(2, 3);
    let e = export(&out.model, &ExportOptions::default());
    let d = max_diff(&ort(&e, &x, 2), &burn_eval(&out.model, &x, 2));
    assert!(d < 1e-4, "{d}");
}

#[test]
fn same_seed_same_curve_and_resume_continues_exactly_and_cancel_keeps_the_last_checkpoint() {
    let (imgs, labels) = people(3, 2);
    let cfg = TrainConfig {
        checkpoint_every: 2,
        ..small_config(7, 2, 3)
    };
    let fresh = |cfg: &TrainConfig| {
        let data = TrainData::labelled(&imgs, &labels, (H, W), Normalize::IMAGENET).unwrap();
        let t = Trainer::new(fresh_model(3), &data, cfg.clone(), None).unwrap();
        (t, data)
    };
    // two uninterrupted runs
    let (t, mut d) = fresh(&cfg);
    let a = run(
        t,
        &mut d,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    let (t, mut d) = fresh(&cfg);
    let b = run(
        t,
        &mut d,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    assert_eq!(a.losses.len(), 6);
    assert_eq!(a.losses, b.losses, "same seed, different curves");
    let (t, mut d) = fresh(&TrainConfig {
        seed: 8,
        ..cfg.clone()
    });
    let c = run(
        t,
        &mut d,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    assert_ne!(a.losses, c.losses);

    // cancelled after step 3: the checkpoint of step 2 is the latest and intact
    let dir = tempfile::tempdir().unwrap();
    let cancel = Cancel::new();
    let flag = cancel.clone();
    let mut stop_at_3 = move |r: &StepReport| {
        if r.step == 3 {
            flag.cancel();
        }
    };
    let (t, mut d) = fresh(&cfg);
    let out = run(
        t,
        &mut d,
        RunControl {
            cancel,
            checkpoint_dir: Some(dir.path().to_path_buf()),
            quiet: true,
            on_step: Some(&mut stop_at_3),
            ..RunControl::default()
        },
    );
    assert!(out.cancelled);
    assert_eq!(out.steps, 3);
    let latest = checkpoint::latest(dir.path()).unwrap().unwrap();
    assert!(latest.ends_with("step-000000002"), "{}", latest.display());
    assert_eq!(out.last_checkpoint.as_deref(), Some(latest.as_path()));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let st = checkpoint::load_state(&latest).unwrap();
    assert_eq!((st.step, st.losses.as_slice()), (2, &a.losses[..2]));

    // resuming from step 2 gives the uninterrupted curve
    let mut d = TrainData::labelled(&imgs, &labels, (H, W), Normalize::IMAGENET).unwrap();
    let t = Trainer::resume(dir.path(), &mut d, &device::cpu()).unwrap();
    assert_eq!(t.step, 2);
    let ctl = RunControl {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        quiet: true,
        ..RunControl::default()
    };
    let r = run(t, &mut d, ctl);
    assert!(!r.cancelled);
    assert_eq!(
        r.losses, a.losses,
        "resumed run differs from the uninterrupted one"
    );
    assert!(
        checkpoint::latest(dir.path())
            .unwrap()
            .unwrap()
            .ends_with("step-000000006")
    );
    assert_eq!(
        checkpoint::list(dir.path()).unwrap().len(),
        2,
        "older checkpoints are pruned"
    );
}

#[test]
fn fused_models_train_with_calibrated_reinserted_bn() {
    let spec = tiny(ResNetSpec::resnet18());
    let g = build(
        &spec,
        Head::BnNeck,
        Style {
            fuse_bn: true,
            ..Style::default()
        },
        Init::RandomStats,
        4,
    );
    // loaded for inference (plain device): the trainer makes it trainable
    let m = ReidModel::from_onnx(&g, &device::cpu()).unwrap();
    assert!(m.layout.has_reinserted_bn());
    let stem_before = m.weights().convs[0].weight.clone();
    let (imgs, labels) = people(3, 5);
    let mut data = TrainData::labelled(&imgs, &labels, (H, W), Normalize::IMAGENET).unwrap();
    let x = input(2, 4);
    let before = burn_eval(&m, &x, 2);
    // calibration keeps the inference function, and gives BN the data statistics
    let t = Trainer::new(m, &data, small_config(3, 1, 0), None).unwrap();
    let cal = {
        let xs = (0..2)
            .map(|k| {
                crosscam::train::batch::assemble(
                    &data.set,
                    &[2 * k, 2 * k + 1],
                    &AugmentConfig::none(),
                    &data.norm,
                    &mut StdRng::seed_from_u64(0),
                    false,
                )
                .tensor(&device::cpu())
            })
            .collect::<Vec<_>>();
        t.model.clone().calibrate_reinserted_bn(xs)
    };
    assert!(max_diff(&before, &burn_eval(&cal, &x, 2)) < 1e-4);
    let stem = cal.weights().convs[0].bn.clone();
    assert!(stem.mean.iter().any(|&m| m.abs() > 1e-3));
    let out = run(
        t,
        &mut data,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    assert!(out.losses.iter().all(|l| l.is_finite()));
    let stem_after = out.model.weights().convs[0].weight.clone();
    assert_ne!(stem_after, stem_before, "the stem did not train");
}

#[test]
fn a_student_distils_from_an_onnx_runtime_teacher() {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("teacher.onnx");
    let teacher_spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.25)
        .with_input(H, W);
    let mut g = build(
        &teacher_spec,
        Head::Features,
        Style::default(),
        Init::RandomStats,
        8,
    );
    crosscam::reid::EmbedderSpec::from_model(&g)
        .unwrap()
        .write_metadata(&mut g);
    g.save(&p).unwrap();
    let mut teacher = OrtTeacher::new(
        Embedder::from_file(
            &p,
            rt,
            SessionOptions {
                cpu_only: true,
                ..SessionOptions::default()
            },
        )
        .unwrap(),
    )
    .unwrap();
    use crosscam::train::distill::Teacher;
    assert_eq!(teacher.dim(), 128);
    let (imgs, labels) = people(3, 6);
    let mut data = TrainData::labelled(&imgs, &labels, (H, W), Normalize::IMAGENET).unwrap();
    let cfg = TrainConfig {
        ce_weight: 0.0,
        triplet_weight: 0.0,
        distill: Some(DistillConfig {
            kind: DistillKind::Cosine,
            weight: 1.0,
        }),
        augment: AugmentConfig::none(),
        ..small_config(2, 1, 20)
    };
    let t = Trainer::new(fresh_model(2), &data, cfg, Some(teacher.dim())).unwrap();
    assert!(
        t.model.net.projection.is_some(),
        "64-wide student, 128-wide teacher: a projection"
    );
    let out = run(
        t,
        &mut data,
        RunControl {
            quiet: true,
            teacher: Some(&mut teacher),
            ..RunControl::default()
        },
    );
    let l = &out.losses;
    assert!(l[l.len() - 1] < 0.5 * l[0], "{l:?}");
    // the projection is a training head: the export is the plain student
    let e = export(&out.model, &ExportOptions::default());
    assert_eq!(
        crosscam::reid::EmbedderSpec::from_model(&e).unwrap().dim,
        64
    );
}

#[test]
fn pseudo_labelled_training_runs_on_tracklets() {
    let (imgs, labels) = people(6, 7);
    // each person seen as one tracklet of 3 crops in camera a and one in camera b, at other times
    let mut tracklets = Vec::new();
    for (id, chunk) in imgs.chunks(3).enumerate() {
        let person = labels[id * 3] / 10;
        let cam = if id % 2 == 0 { "a" } else { "b" };
        let t0 = person as u64 * 20 + (id % 2) as u64 * 100;
        tracklets.push(TrackletCrops {
            camera: cam.into(),
            track: id as u64,
            start: Duration::from_secs(t0),
            end: Duration::from_secs(t0 + 5),
            crops: chunk.iter().map(|c| Arc::new(c.clone())).collect(),
        });
    }
    let mut data = TrainData::from_tracklets(tracklets, (H, W), Normalize::IMAGENET).unwrap();
    let cfg = TrainConfig {
        pseudo: Some(PseudoConfig {
            refresh_every: 1,
            ..PseudoConfig::default()
        }),
        pk: PkConfig { p: 2, k: 2 },
        ..small_config(4, 2, 3)
    };
    let t = Trainer::new(fresh_model(4), &data, cfg, None).unwrap();
    let out = run(
        t,
        &mut data,
        RunControl {
            quiet: true,
            ..RunControl::default()
        },
    );
    assert_eq!(out.steps, 6);
    let p = out.pseudo.expect("pseudo-labels were made");
    assert_eq!(p.tracklet.len(), 8);
    assert!(p.identities() >= 2 && p.identities() <= 8);
    assert!(out.losses.iter().all(|l| l.is_finite()));
}
