//! Checkpoints: everything a run needs to continue exactly where it stopped — network weights
//! (with BatchNorm running statistics and the training heads), optimiser state (Adam moments and
//! step counts), the step, the run's seed and configuration, the network layout and the labels
//! in use (pseudo-labels change during a run).
//!
//! Layout on disk: `DIR/step-000000120/{state.json, model.bpk, optim.bpk}` (burnpack files) and
//! `DIR/LATEST` naming the newest complete one. A checkpoint is written into `step-….tmp`, synced,
//! renamed, and only then named in `LATEST` (itself replaced by rename), so a crash or a kill at
//! any moment leaves the previous checkpoint intact and findable. Older ones beyond `keep` are
//! removed after the new one is in place.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use super::layout::NetLayout;
use super::trainer::TrainConfig;
use crate::frame::Normalize;

pub const LATEST: &str = "LATEST";
const STATE: &str = "state.json";
pub const MODEL: &str = "model.bpk";
pub const OPTIM: &str = "optim.bpk";

/// Input normalisation in serialisable form.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormSpec {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub bgr: bool,
}

impl From<Normalize> for NormSpec {
    fn from(n: Normalize) -> NormSpec {
        NormSpec {
            mean: n.mean,
            std: n.std,
            bgr: n.bgr,
        }
    }
}

impl From<NormSpec> for Normalize {
    fn from(n: NormSpec) -> Normalize {
        Normalize {
            mean: n.mean,
            std: n.std,
            bgr: n.bgr,
        }
    }
}

/// The non-tensor part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Completed optimiser steps.
    pub step: u64,
    pub steps_per_epoch: u64,
    pub config: TrainConfig,
    pub layout: NetLayout,
    pub norm: NormSpec,
    /// Classifier width, when the network has one.
    pub classes: Option<usize>,
    /// Teacher width, when the network has a distillation projection.
    pub projection: Option<usize>,
    /// Labels of the training samples at this step (as given / as pseudo-labelled).
    pub labels: Vec<i64>,
    /// Loss of every completed step (for curves and determinism checks).
    pub losses: Vec<f32>,
}

pub const FORMAT: u32 = 1;

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(path.display().to_string(), e)
}

fn ck(path: &Path, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Writes a checkpoint atomically. `write_tensors(dir)` writes the model and optimiser files
/// into the (temporary) directory.
pub fn save(
    root: &Path,
    state: &CheckpointState,
    keep: usize,
    write_tensors: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<PathBuf, TrainError> {
    fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let name = format!("step-{:09}", state.step);
    let tmp = root.join(format!("{name}.tmp"));
    let fin = root.join(&name);
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let written = (|| {
        let json = serde_json::to_vec_pretty(state).map_err(|e| ck(&tmp, e))?;
        write_synced(&tmp.join(STATE), &json)?;
        write_tensors(&tmp)?;
        for f in [MODEL, OPTIM] {
            let p = tmp.join(f);
            if p.exists() {
                fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io(&p, e))?;
            }
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if fin.exists() {
        fs::remove_dir_all(&fin).map_err(|e| io(&fin, e))?;
    }
    fs::rename(&tmp, &fin).map_err(|e| io(&fin, e))?;
    let latest_tmp = root.join(format!("{LATEST}.tmp"));
    write_synced(&latest_tmp, name.as_bytes())?;
    fs::rename(&latest_tmp, root.join(LATEST)).map_err(|e| io(root, e))?;
    prune_old(root, keep.max(1))?;
    Ok(fin)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let mut f = fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

/// Complete checkpoint directories under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let mut v: Vec<PathBuf> = match fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(root, e)),
    };
    v.sort();
    Ok(v)
}

fn prune_old(root: &Path, keep: usize) -> Result<(), TrainError> {
    let all = list(root)?;
    let latest = latest(root)?;
    for p in all.iter().take(all.len().saturating_sub(keep)) {
        if Some(p) != latest.as_ref() {
            fs::remove_dir_all(p).map_err(|e| io(p, e))?;
        }
    }
    Ok(())
}

/// The newest complete checkpoint: the one `LATEST` names, else the highest step directory.
pub fn latest(root: &Path) -> Result<Option<PathBuf>, TrainError> {
    let named = fs::read_to_string(root.join(LATEST))
        .ok()
        .map(|s| root.join(s.trim()))
        .filter(|p| p.join(STATE).is_file());
    Ok(match named {
        Some(p) => Some(p),
        None => list(root)?.pop(),
    })
}

/// Reads the state of the checkpoint in `dir`.
pub fn load_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    let p = dir.join(STATE);
    let bytes = fs::read(&p).map_err(|e| io(&p, e))?;
    let s: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| ck(&p, e))?;
    if s.format != FORMAT {
        return Err(ck(
            &p,
            format!("format {} (this crosscam reads {FORMAT})", s.format),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::ResNetSpec;

    fn state(step: u64) -> CheckpointState {
        CheckpointState {
            format: FORMAT,
            step,
            steps_per_epoch: 4,
            config: TrainConfig::default(),
            layout: NetLayout::from_spec(&ResNetSpec::resnet18().scaled(0.125), true),
            norm: Normalize::IMAGENET.into(),
            classes: Some(3),
            projection: None,
            labels: vec![0, 1, 2],
            losses: vec![1.0; step as usize],
        }
    }

    #[test]
    fn latest_survives_half_written_checkpoints_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert_eq!(latest(root).unwrap(), None);
        for step in [2, 4, 6] {
            save(root, &state(step), 2, |d| {
                fs::write(d.join(MODEL), b"m").map_err(|e| io(d, e))
            })
            .unwrap();
        }
        let names: Vec<PathBuf> = list(root).unwrap();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(latest(root).unwrap().unwrap().ends_with("step-000000006"));
        assert_eq!(load_state(&root.join("step-000000006")).unwrap(), state(6));
        // a crash while writing step 8: a .tmp directory, LATEST unchanged
        fs::create_dir_all(root.join("step-000000008.tmp")).unwrap();
        assert!(latest(root).unwrap().unwrap().ends_with("step-000000006"));
        // a failing writer leaves the previous checkpoint as the latest, and no debris
        let err = save(root, &state(10), 2, |d| Err(ck(d, "disk full")));
        assert!(err.is_err());
        assert!(!root.join("step-000000010.tmp").exists());
        assert!(latest(root).unwrap().unwrap().ends_with("step-000000006"));
        // LATEST lost: the newest complete directory is found
        fs::remove_file(root.join(LATEST)).unwrap();
        assert!(latest(root).unwrap().unwrap().ends_with("step-000000006"));
    }
}
