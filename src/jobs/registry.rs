//! The model registry under the data directory: every embedder version the site has served,
//! which one is `current`, and the one before it (`previous`, the rollback target).
//!
//! ```text
//! DATA/models/registry.json       {"current": "v0002", "previous": "v0001", "versions": [...]}
//! DATA/models/v0001/model.onnx    one folder per version, never modified once written
//! DATA/models/staging/            candidates of running jobs (not versions yet)
//! ```
//!
//! Every change is atomic on disk: a version folder is written under a temporary name, synced and
//! renamed; `registry.json` is written to a temporary file, synced and renamed over the old one.
//! A crash at any moment leaves the previous `registry.json` intact; a version folder that no
//! `registry.json` lists (a crash between the two renames) is ignored and never reused.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::evaluate::Score;

pub const REGISTRY_FILE: &str = "registry.json";
pub const MODEL_FILE: &str = "model.onnx";
pub const STAGING_DIR: &str = "staging";
/// The end of a rejected candidate's origin (a job kept it without promoting it).
pub const REJECTED_SUFFIX: &str = "(not promoted)";
/// Rejected candidates a registry keeps (the newest); older ones are removed by the next job
/// that rejects one.
pub const KEEP_REJECTED: usize = 5;

/// One registered model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// `v0001`, `v0002`, …
    pub id: String,
    /// Relative to the registry folder.
    pub file: String,
    pub sha256: String,
    pub created_unix: u64,
    /// Where it came from (`initial: models/…`, `job j-…: S4 …`).
    pub origin: String,
    /// The version it was made from.
    pub parent: Option<String>,
    pub macs: u64,
    pub params: u64,
    pub feature_dim: usize,
    /// Its score on the held-out data of the job that made it.
    pub eval: Option<Score>,
    /// Its linking calibration (threshold, margin, merge similarity), when known: recorded by
    /// `crosscam job register --threshold …` or taken from the manifest entry with the same
    /// checksum. Without one the serving daemon uses the config's values, else the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linking: Option<crate::models::LinkCalibration>,
}

impl ModelVersion {
    /// The tag stored with every descriptor this version computes: the version id and the first
    /// 12 hex digits of its checksum, so that descriptors of two different files can never be
    /// mistaken for each other (even in a data directory whose registry was recreated).
    pub fn tag(&self) -> String {
        format!("{}:{}", self.id, &self.sha256[..self.sha256.len().min(12)])
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct State {
    current: Option<String>,
    previous: Option<String>,
    versions: Vec<ModelVersion>,
}

/// The registry of one data directory.
#[derive(Debug)]
pub struct Registry {
    root: PathBuf,
    state: State,
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sync_dir(dir: &Path) {
    // best effort: directory fsync is not supported everywhere
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    {
        use std::io::Write;
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
    }
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

impl Registry {
    /// The registry folder of a data directory.
    pub fn dir_of(data_dir: &Path) -> PathBuf {
        data_dir.join("models")
    }

    /// Opens (creating the folder when needed) the registry under `data_dir/models`.
    pub fn open(data_dir: &Path) -> Result<Registry> {
        let root = Registry::dir_of(data_dir);
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let file = root.join(REGISTRY_FILE);
        let state = if file.is_file() {
            let text = fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a model registry", file.display()))?
        } else {
            State::default()
        };
        Ok(Registry { root, state })
    }

    /// Opens the registry and, when it is empty, registers `initial` as the first, current
    /// version (the model the site serves before any job ran).
    pub fn open_or_init(data_dir: &Path, initial: &Path) -> Result<Registry> {
        let mut r = Registry::open(data_dir)?;
        if r.state.versions.is_empty() {
            let model = crate::onnx::Model::load(initial)
                .with_context(|| format!("cannot read {}", initial.display()))?;
            let staged = r.stage(&model, "initial")?;
            let v = r.prepare_version(
                &staged,
                &format!("initial: {}", initial.display()),
                None,
                None,
            )?;
            r.commit(&staged, &v, true)?;
            tracing::info!(version = %v.id, model = %initial.display(), "model registry created");
        }
        Ok(r)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn versions(&self) -> &[ModelVersion] {
        &self.state.versions
    }

    pub fn get(&self, id: &str) -> Option<&ModelVersion> {
        self.state.versions.iter().find(|v| v.id == id)
    }

    pub fn current(&self) -> Option<&ModelVersion> {
        self.state.current.as_deref().and_then(|id| self.get(id))
    }

    pub fn previous(&self) -> Option<&ModelVersion> {
        self.state.previous.as_deref().and_then(|id| self.get(id))
    }

    /// The ONNX file of a version.
    pub fn path_of(&self, v: &ModelVersion) -> PathBuf {
        self.root.join(&v.file)
    }

    /// Checks a version's file against its checksum.
    pub fn verify(&self, v: &ModelVersion) -> Result<()> {
        let found = sha256_file(&self.path_of(v))?;
        anyhow::ensure!(
            found == v.sha256,
            "model version {}: {} has sha256 {found}, the registry says {}",
            v.id,
            self.path_of(v).display(),
            v.sha256
        );
        Ok(())
    }

    /// Writes a candidate model into `staging/` (not a version yet); returns its path.
    pub fn stage(&self, model: &crate::onnx::Model, name: &str) -> Result<PathBuf> {
        let dir = self.root.join(STAGING_DIR);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let p = dir.join(format!("{name}.onnx"));
        write_atomic(&p, &model.to_bytes())?;
        Ok(p)
    }

    /// The next free version id: above every listed one and every folder on disk.
    fn next_id(&self) -> String {
        let num = |s: &str| s.strip_prefix('v').and_then(|n| n.parse::<u32>().ok());
        let mut top = self
            .state
            .versions
            .iter()
            .filter_map(|v| num(&v.id))
            .max()
            .unwrap_or(0);
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let name = name.trim_start_matches('.').trim_end_matches(".tmp");
                if let Some(n) = num(name) {
                    top = top.max(n);
                }
            }
        }
        format!("v{:04}", top + 1)
    }

    /// Describes a staged file as the next version (id, checksum, cost) without writing
    /// anything: what [`Registry::commit`] will register.
    pub fn prepare_version(
        &self,
        staged: &Path,
        origin: &str,
        parent: Option<&str>,
        eval: Option<Score>,
    ) -> Result<ModelVersion> {
        let model = crate::onnx::Model::load(staged)
            .with_context(|| format!("cannot read the staged model {}", staged.display()))?;
        // the cost is informative: a model the cost counter does not follow (an architecture
        // crosscam did not make) is still registered, with 0 MACs and parameters
        let (macs, params) = crate::train::scenario::model_cost(&model).unwrap_or_else(|e| {
            tracing::warn!(model = %staged.display(), error = %e, "cannot count the model's MACs");
            (0, 0)
        });
        let feature_dim = crate::reid::EmbedderSpec::from_model(&model)
            .map(|s| s.dim)
            .unwrap_or(0);
        let id = self.next_id();
        Ok(ModelVersion {
            file: format!("{id}/{MODEL_FILE}"),
            id,
            sha256: sha256_file(staged)?,
            created_unix: now_unix(),
            origin: origin.to_string(),
            parent: parent.map(str::to_string),
            macs,
            params,
            feature_dim,
            eval,
            linking: None,
        })
    }

    /// Moves a staged file into its version folder (renamed into place) and lists the version;
    /// with `make_current` it also becomes `current` (the old current becoming `previous`) — in
    /// the same atomic write of `registry.json`.
    pub fn commit(&mut self, staged: &Path, v: &ModelVersion, make_current: bool) -> Result<()> {
        anyhow::ensure!(
            self.get(&v.id).is_none(),
            "model version {} is already registered",
            v.id
        );
        anyhow::ensure!(
            v.id == self.next_id(),
            "model version {} was prepared for another state of the registry",
            v.id
        );
        let tmp = self.root.join(format!(".{}.tmp", v.id));
        let dir = self.root.join(&v.id);
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        fs::rename(staged, tmp.join(MODEL_FILE))
            .or_else(|_| fs::copy(staged, tmp.join(MODEL_FILE)).map(|_| ()))
            .with_context(|| format!("cannot move {} into the registry", staged.display()))?;
        if let Ok(f) = fs::File::open(tmp.join(MODEL_FILE)) {
            let _ = f.sync_all();
        }
        fs::rename(&tmp, &dir).with_context(|| format!("cannot create {}", dir.display()))?;
        sync_dir(&self.root);
        let mut next = self.state.clone();
        next.versions.push(v.clone());
        if make_current {
            next.previous = next.current.take();
            next.current = Some(v.id.clone());
        }
        self.save(next)
    }

    /// Makes `id` current; the old current becomes `previous` (one atomic write).
    pub fn set_current(&mut self, id: &str) -> Result<()> {
        anyhow::ensure!(
            self.get(id).is_some(),
            "no model version {id} in the registry"
        );
        if self.state.current.as_deref() == Some(id) {
            return Ok(());
        }
        let mut next = self.state.clone();
        next.previous = next.current.take();
        next.current = Some(id.to_string());
        self.save(next)
    }

    /// Sets `current` and `previous` exactly (one atomic write): a live switch that failed puts
    /// back the pointers it found.
    pub fn set_pointers(&mut self, current: &str, previous: Option<&str>) -> Result<()> {
        for id in std::iter::once(current).chain(previous) {
            anyhow::ensure!(
                self.get(id).is_some(),
                "no model version {id} in the registry"
            );
        }
        let mut next = self.state.clone();
        next.current = Some(current.to_string());
        next.previous = previous.map(str::to_string);
        if next == self.state {
            return Ok(());
        }
        self.save(next)
    }

    /// Removes version `id`: its entry and its model file. Its folder stays (empty), so that its
    /// number is never given to another version. The current and the previous version cannot
    /// be removed.
    pub fn remove(&mut self, id: &str) -> Result<()> {
        let v = self
            .get(id)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no model version {id} in the registry"))?;
        anyhow::ensure!(
            self.state.current.as_deref() != Some(id) && self.state.previous.as_deref() != Some(id),
            "model version {id} is the current or the previous one; it stays"
        );
        let mut next = self.state.clone();
        next.versions.retain(|x| x.id != id);
        self.save(next)?;
        let file = self.path_of(&v);
        match fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "model version removed from the registry, its file not")
            }
        }
        Ok(())
    }

    /// Removes rejected candidates (kept by jobs that did not promote them) beyond the newest
    /// `keep`, oldest first; never the current or the previous version. Returns their ids.
    pub fn prune_rejected(&mut self, keep: usize) -> Result<Vec<String>> {
        let pinned = [self.state.current.clone(), self.state.previous.clone()];
        let rejected: Vec<String> = self
            .state
            .versions
            .iter()
            .filter(|v| v.origin.ends_with(REJECTED_SUFFIX))
            .filter(|v| !pinned.contains(&Some(v.id.clone())))
            .map(|v| v.id.clone())
            .collect();
        let n = rejected.len().saturating_sub(keep);
        let gone: Vec<String> = rejected.into_iter().take(n).collect();
        for id in &gone {
            self.remove(id)?;
        }
        Ok(gone)
    }

    /// Adds an existing ONNX embedder as a new version without making it current (`crosscam job
    /// register`): the file is copied into `staging/`, described and committed like a job's
    /// candidate. The caller checks first that it loads and embeds
    /// ([`crate::server::switch::validate_embedder`]).
    pub fn register(
        &mut self,
        file: &Path,
        origin: &str,
        linking: Option<crate::models::LinkCalibration>,
    ) -> Result<ModelVersion> {
        let dir = self.root.join(STAGING_DIR);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let staged = dir.join(format!("register-{}.onnx", std::process::id()));
        fs::copy(file, &staged)
            .with_context(|| format!("cannot copy {} into the registry", file.display()))?;
        let result = (|| {
            let mut v = self.prepare_version(&staged, origin, None, None)?;
            v.linking = linking;
            self.commit(&staged, &v, false)?;
            Ok(v)
        })();
        if result.is_err() {
            self.discard_staged(&staged);
        }
        result
    }

    /// Writes `next` as `registry.json` (atomically), then adopts it.
    fn save(&mut self, next: State) -> Result<()> {
        let text = serde_json::to_string_pretty(&next)?;
        write_atomic(&self.root.join(REGISTRY_FILE), text.as_bytes())?;
        self.state = next;
        Ok(())
    }

    /// Removes a staged candidate (a job that did not promote).
    pub fn discard_staged(&self, staged: &Path) {
        if staged.starts_with(self.root.join(STAGING_DIR)) {
            let _ = fs::remove_file(staged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, build};

    fn tiny(seed: u64) -> crate::onnx::Model {
        let spec = ResNetSpec::resnet18()
            .for_reid()
            .scaled(0.125)
            .with_input(32, 16);
        build(
            &spec,
            Head::BnNeck,
            Style::default(),
            Init::RandomStats,
            seed,
        )
    }

    #[test]
    fn versions_commit_and_switch_atomically_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.onnx");
        tiny(1).save(&first).unwrap();
        let mut r = Registry::open_or_init(dir.path(), &first).unwrap();
        assert_eq!(r.current().unwrap().id, "v0001");
        assert!(r.previous().is_none());
        r.verify(r.current().unwrap()).unwrap();
        let staged = r.stage(&tiny(2), "job-1").unwrap();
        let v = r
            .prepare_version(&staged, "job-1", Some("v0001"), None)
            .unwrap();
        assert_eq!(v.id, "v0002");
        assert_eq!(r.versions().len(), 1, "preparing writes nothing");
        r.commit(&staged, &v, false).unwrap();
        assert!(!staged.exists());
        assert_eq!(
            r.current().unwrap().id,
            "v0001",
            "commit without make_current"
        );
        r.set_current("v0002").unwrap();
        assert_eq!(
            (
                r.current().unwrap().id.as_str(),
                r.previous().unwrap().id.as_str()
            ),
            ("v0002", "v0001")
        );
        // a folder left by a crash is never reused
        fs::create_dir_all(r.root().join(".v0003.tmp")).unwrap();
        let staged = r.stage(&tiny(3), "job-2").unwrap();
        let v = r
            .prepare_version(&staged, "job-2", Some("v0002"), None)
            .unwrap();
        assert_eq!(v.id, "v0004");
        r.commit(&staged, &v, true).unwrap();
        let mut r2 = Registry::open(dir.path()).unwrap();
        assert_eq!(r2.current().unwrap().id, "v0004");
        assert_eq!(r2.previous().unwrap().id, "v0002");
        assert_eq!(r2.versions().len(), 3);
        // no temporary files next to registry.json
        assert!(!r2.root().join(".registry.json.tmp").exists());
        assert!(r2.set_current("v0099").is_err());
    }

    #[test]
    fn only_the_oldest_rejected_candidates_are_removed_and_their_numbers_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.onnx");
        tiny(1).save(&first).unwrap();
        let mut r = Registry::open_or_init(dir.path(), &first).unwrap();
        // v0002..v0008: seven rejected candidates
        for k in 0..7u64 {
            let staged = r.stage(&tiny(10 + k), "job").unwrap();
            let v = r
                .prepare_version(
                    &staged,
                    &format!("job {k} {REJECTED_SUFFIX}"),
                    Some("v0001"),
                    None,
                )
                .unwrap();
            r.commit(&staged, &v, false).unwrap();
        }
        // an admin promoted the oldest one anyway: it is current and stays
        r.set_current("v0002").unwrap();
        let files: Vec<PathBuf> = r.versions().iter().map(|v| r.path_of(v)).collect();
        let gone = r.prune_rejected(3).unwrap();
        assert_eq!(gone, ["v0003", "v0004", "v0005"]);
        let left: Vec<&str> = r.versions().iter().map(|v| v.id.as_str()).collect();
        assert_eq!(left, ["v0001", "v0002", "v0006", "v0007", "v0008"]);
        for (k, f) in files.iter().enumerate() {
            assert_eq!(f.exists(), !(2..=4).contains(&k), "{}", f.display());
        }
        assert!(r.remove("v0002").is_err(), "the current version stays");
        assert!(r.remove("v0001").is_err(), "the previous version stays");
        // the next version is numbered past every removed one
        let staged = r.stage(&tiny(99), "job").unwrap();
        let v = r.prepare_version(&staged, "job", None, None).unwrap();
        assert_eq!(v.id, "v0009");
        let r2 = Registry::open(dir.path()).unwrap();
        assert_eq!(r2.versions().len(), 5);
    }
}
