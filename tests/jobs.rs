//! The on-site job runner, the model registry, promotion and rollback — with real ONNX models in
//! ONNX Runtime, the real `Embedder`, and a gallery that really re-embeds a folder of crops
//! (`FolderGallery`). A failed re-embedding or a cancelled job must change nothing; promotion and
//! rollback must switch model and gallery together.

mod fixtures;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use crosscam::config::RuntimeSettings;
use crosscam::jobs::registry::ModelVersion;
use crosscam::jobs::{
    DatasetSource, FolderGallery, JobContext, JobOutcome, JobPhase, JobSpec, PromotePolicy,
    ReembedHook, Registry, ServingModel, promote, rollback, run_job,
};
use crosscam::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
use crosscam::reid::Embedder;
use crosscam::runtime::{self, SessionOptions};
use crosscam::train::Cancel;
use crosscam::train::sampler::PkConfig;
use crosscam::train::scenario::{Budget, RetuneOptions, Scenario};

/// A tiny re-id ResNet (64×32 input, 64-d output) with seeded random weights, written to `path`.
fn tiny_model(path: &Path, seed: u64) {
    let spec = ResNetSpec::resnet18()
        .for_reid()
        .scaled(0.125)
        .with_input(64, 32);
    build(
        &spec,
        Head::BnNeck,
        Style::default(),
        Init::RandomStats,
        seed,
    )
    .save(path)
    .unwrap();
}

/// The embeddings of the crops in `dir` by the model file `model`, straight from ONNX Runtime.
fn embeddings_of(model: &Path, dir: &Path) -> ndarray::Array2<f32> {
    let rt = runtime::init(&RuntimeSettings::default()).unwrap();
    let mut e = Embedder::from_file(model, rt, SessionOptions::default()).unwrap();
    FolderGallery::embed_folder(dir, &mut e, &Cancel::new())
        .unwrap()
        .1
}

/// A FolderGallery that also publishes which version it serves, for a reader thread.
struct Published {
    inner: FolderGallery,
    serving: Arc<Mutex<String>>,
}

impl ReembedHook for Published {
    fn prepare(&mut self, v: &ModelVersion, e: &mut Embedder, c: &Cancel) -> Result<()> {
        // slow enough for the reader thread to run during the switch
        std::thread::sleep(Duration::from_millis(50));
        self.inner.prepare(v, e, c)
    }
    fn commit(&mut self, v: &ModelVersion) {
        self.inner.commit(v);
        *self.serving.lock().unwrap() = v.id.clone();
    }
    fn abort(&mut self, v: &ModelVersion) {
        self.inner.abort(v)
    }
}

struct Site {
    _dir: tempfile::TempDir,
    data: PathBuf,
    crops: PathBuf,
    model_a: PathBuf,
    model_b: PathBuf,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let crops = dir.path().join("crops");
    fixtures::write_crops(&crops, 12, 3);
    let model_a = dir.path().join("a.onnx");
    let model_b = dir.path().join("b.onnx");
    tiny_model(&model_a, 1);
    tiny_model(&model_b, 2);
    Site {
        data,
        crops,
        model_a,
        model_b,
        _dir: dir,
    }
}

/// Registry (A current), serving model, and a gallery embedded with A.
fn start(s: &Site) -> (Registry, ServingModel, Published) {
    let reg = Registry::open_or_init(&s.data, &s.model_a).unwrap();
    let serving = ServingModel::from_registry(&reg).unwrap();
    let mut gallery = FolderGallery::open(&s.crops, &s.data.join("gallery")).unwrap();
    let v1 = reg.current().unwrap().clone();
    {
        let cur = serving.current();
        let mut e = cur.embedder.lock().unwrap();
        gallery.prepare(&v1, &mut e, &Cancel::new()).unwrap();
    }
    gallery.commit(&v1);
    let hook = Published {
        inner: gallery,
        serving: Arc::new(Mutex::new(v1.id.clone())),
    };
    (reg, serving, hook)
}

#[test]
fn promotion_and_rollback_switch_model_and_gallery_together() {
    let s = site();
    let (mut reg, serving, mut hook) = start(&s);
    let registry_file = reg.root().join("registry.json");
    assert_eq!(serving.current().version.id, "v0001");

    // a reader embeds and reads the gallery's version under the serving lock, all along
    let stop = Arc::new(AtomicBool::new(false));
    let published = hook.serving.clone();
    let serving = Arc::new(serving);
    let reader = {
        let (stop, serving) = (stop.clone(), serving.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let img = image::RgbImage::new(24, 60);
            while !stop.load(Ordering::SeqCst) {
                serving.with_current(|l| {
                    let g = published.lock().unwrap().clone();
                    assert_eq!(l.version.id, g, "model and gallery from different versions");
                    let f = l
                        .embedder
                        .lock()
                        .unwrap()
                        .embed_images(std::slice::from_ref(&img))
                        .unwrap();
                    assert_eq!(f.ncols(), 64);
                    if seen.last() != Some(&g) {
                        seen.push(g);
                    }
                });
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };

    let staged = reg
        .stage(&crosscam::onnx::Model::load(&s.model_b).unwrap(), "job-b")
        .unwrap();
    let v2 = promote(
        &mut reg,
        &serving,
        &mut hook,
        &staged,
        "test: model b",
        None,
        &Cancel::new(),
    )
    .unwrap();
    assert_eq!(v2.id, "v0002");
    assert_eq!(reg.current().unwrap().id, "v0002");
    assert_eq!(reg.previous().unwrap().id, "v0001");
    assert_eq!(serving.current().version.id, "v0002");
    assert_eq!(hook.inner.version(), Some("v0002"));
    assert!(!staged.exists());
    // the gallery holds model B's embeddings of the crops, as ONNX Runtime computes them
    let want = embeddings_of(&s.model_b, &s.crops);
    assert_eq!(hook.inner.current.as_ref().unwrap().1, want);
    // and they are on disk, with the record
    let on_disk = crosscam::eval::npy::read_f32(&s.data.join("gallery/gallery.npy")).unwrap();
    assert_eq!(on_disk, want);
    // the registry file on disk says the same (a reopened registry agrees)
    let reopened = Registry::open(&s.data).unwrap();
    assert_eq!(reopened.current().unwrap().id, "v0002");

    std::thread::sleep(Duration::from_millis(20));
    let back = rollback(&mut reg, &serving, &mut hook, &Cancel::new()).unwrap();
    assert_eq!(back.id, "v0001");
    assert_eq!(reg.current().unwrap().id, "v0001");
    assert_eq!(reg.previous().unwrap().id, "v0002");
    assert_eq!(serving.current().version.id, "v0001");
    assert_eq!(
        hook.inner.current.as_ref().unwrap().1,
        embeddings_of(&s.model_a, &s.crops)
    );
    assert!(registry_file.is_file());
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let seen = reader.join().expect("the reader saw a mixed state");
    assert_eq!(seen.first().map(String::as_str), Some("v0001"));
}

#[test]
fn a_failed_reembedding_leaves_the_old_model_current() {
    let s = site();
    let (mut reg, serving, mut hook) = start(&s);
    let before = std::fs::read(reg.root().join("registry.json")).unwrap();
    let gallery_before = hook.inner.current.clone().unwrap();
    // a crop that does not decode: re-embedding fails half-way
    std::fs::write(s.crops.join("crop-999.jpg"), b"not a jpeg").unwrap();
    let staged = reg
        .stage(&crosscam::onnx::Model::load(&s.model_b).unwrap(), "job-b")
        .unwrap();
    let err = promote(
        &mut reg,
        &serving,
        &mut hook,
        &staged,
        "test",
        None,
        &Cancel::new(),
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("crop-999.jpg"), "{err:#}");
    assert_eq!(reg.current().unwrap().id, "v0001");
    assert_eq!(reg.versions().len(), 1);
    assert_eq!(
        std::fs::read(reg.root().join("registry.json")).unwrap(),
        before
    );
    assert_eq!(serving.current().version.id, "v0001");
    assert_eq!(hook.inner.current.as_ref().unwrap(), &gallery_before);
    assert!(!staged.exists(), "the candidate was not discarded");
    let leftovers: Vec<_> = std::fs::read_dir(s.data.join("gallery"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // nothing to roll back to either
    assert!(rollback(&mut reg, &serving, &mut hook, &Cancel::new()).is_err());
    assert_eq!(serving.current().version.id, "v0001");
}

fn job_spec() -> JobSpec {
    JobSpec {
        retune: RetuneOptions {
            scenario: Scenario::S4,
            budget: Budget::Epochs(2.0),
            target_macs: 0.5,
            pk: PkConfig { p: 4, k: 2 },
            lr: 3e-3,
            quiet: true,
            widths: crosscam::prune::WidthPolicy {
                min_channels: 2,
                multiple: 2,
            },
            ..RetuneOptions::default()
        },
        holdout: 0.3,
        policy: PromotePolicy::default(),
        gate: crosscam::jobs::evaluate::GatePolicy::default(),
        label_holdout: crosscam::jobs::runner::LABEL_HOLDOUT,
    }
}

#[test]
fn a_cancelled_job_leaves_the_serving_model_untouched() {
    let s = site();
    let ds = s.data.parent().unwrap().join("ds");
    fixtures::write_dataset(&ds, 12, 5, 4);
    let (mut reg, serving, mut hook) = start(&s);
    let before = std::fs::read(reg.root().join("registry.json")).unwrap();
    let phase = Mutex::new(JobPhase::Queued);
    let cancel = Cancel::new();
    let report = std::thread::scope(|scope| {
        // cancel as soon as training runs
        let (c, p) = (cancel.clone(), &phase);
        scope.spawn(move || {
            for _ in 0..6000 {
                if *p.lock().unwrap() == JobPhase::Training {
                    std::thread::sleep(Duration::from_millis(30));
                    c.cancel();
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        run_job(
            "j-cancel",
            &job_spec(),
            &mut DatasetSource {
                dir: ds.clone(),
                cameras: vec![],
                labels: true,
            },
            JobContext {
                data_dir: &s.data,
                registry: &mut reg,
                serving: &serving,
                hook: &mut hook,
                teacher: None,
                cancel: cancel.clone(),
                phase: Some(&phase),
            },
        )
    });
    assert_eq!(report.outcome, JobOutcome::Cancelled, "{report:?}");
    assert_eq!(report.serving_after.as_deref(), Some("v0001"));
    assert_eq!(serving.current().version.id, "v0001");
    assert_eq!(reg.current().unwrap().id, "v0001");
    assert_eq!(
        std::fs::read(reg.root().join("registry.json")).unwrap(),
        before
    );
    assert_eq!(hook.inner.version(), Some("v0001"));
    let staging = reg.root().join("staging");
    assert!(!staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none());
    // the report was written
    assert!(s.data.join("jobs/j-cancel.json").is_file());
}

#[test]
fn a_finished_job_promotes_or_keeps_consistently() {
    let s = site();
    let ds = s.data.parent().unwrap().join("ds");
    fixtures::write_dataset(&ds, 12, 5, 5);
    let (mut reg, serving, mut hook) = start(&s);
    let report = run_job(
        "j-run",
        &job_spec(),
        &mut DatasetSource {
            dir: ds.clone(),
            cameras: vec![],
            labels: true,
        },
        JobContext {
            data_dir: &s.data,
            registry: &mut reg,
            serving: &serving,
            hook: &mut hook,
            teacher: None,
            cancel: Cancel::new(),
            phase: None,
        },
    );
    let (old, new) = (report.old.clone().unwrap(), report.new.clone().unwrap());
    assert_eq!(report.held_out.as_ref().unwrap().kind, "identities");
    assert!(
        new.macs < old.macs,
        "pruned to half the MACs: {} vs {}",
        new.macs,
        old.macs
    );
    match &report.outcome {
        JobOutcome::Promoted { version } => {
            assert!(new.map >= old.map);
            assert_eq!(reg.current().unwrap().id, *version);
            assert_eq!(serving.current().version.id, *version);
            assert_eq!(hook.inner.version(), Some(version.as_str()));
            assert_eq!(reg.current().unwrap().parent.as_deref(), Some("v0001"));
            assert_eq!(reg.current().unwrap().eval.as_ref().unwrap(), &new);
        }
        JobOutcome::Rejected => {
            assert!(new.map < old.map);
            assert_eq!(reg.current().unwrap().id, "v0001");
            assert_eq!(serving.current().version.id, "v0001");
            // the candidate is kept, not current, for an admin to promote anyway
            let kept = report.candidate.as_deref().expect("candidate kept");
            assert_eq!(reg.get(kept).unwrap().eval.as_ref().unwrap(), &new);
            assert_ne!(reg.current().unwrap().id, kept);
        }
        o => panic!("job ended {o:?}: {report:?}"),
    }
}
