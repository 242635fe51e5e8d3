//! The model manifest (`models/manifest.toml`): which ONNX files crosscam ships, what they are
//! for, where they came from, and the exact checksum and tensor shapes each must have. Loading a
//! model goes through here, so a corrupt, replaced or mismatched file is refused with a message
//! that says which model, what differs and how to restore it.

use std::path::{Path, PathBuf};

use ort::session::Session;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, parse_toml};
use crate::runtime::{Device, Runtime, RuntimeError, SessionOptions};

pub mod add;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ConfigError),
    #[error("model '{0}' is not in the manifest {1} (known: {2})")]
    Unknown(String, String, String),
    #[error(
        "model '{name}': file {path} is missing; restore it with `git checkout -- models/` or regenerate it with {recipe}"
    )]
    Missing {
        name: String,
        path: PathBuf,
        recipe: String,
    },
    #[error(
        "model '{name}': checksum mismatch for {path}: the manifest says sha256 {expected}, the file has {found}; \
         the file is corrupt or was replaced — restore it with `git checkout -- models/`, or if you replaced it on purpose, \
         update `sha256` in the manifest"
    )]
    Checksum {
        name: String,
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error(
        "model '{name}': {what} — the file does not match its manifest entry; regenerate it with {recipe}"
    )]
    Mismatch {
        name: String,
        what: String,
        recipe: String,
    },
    #[error("model '{name}': {source}")]
    Runtime {
        name: String,
        #[source]
        source: RuntimeError,
    },
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Person detector (frames → boxes).
    Detector,
    /// Re-id embedder (crops → embeddings), also a distillation teacher.
    Embedder,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub role: Role,
    /// Pre/post-processing family: `nanodet` (detector decoding), `embedding` ([N,3,H,W] → [N,D]).
    pub family: String,
    pub file: PathBuf,
    pub sha256: String,
    pub licence: String,
    /// Registry package and path the weights come from.
    pub source: String,
    /// Command that regenerates the file offline.
    pub recipe: String,
    #[serde(default)]
    pub notes: Option<String>,
    pub input: InputSpec,
    pub outputs: Vec<TensorSpec>,
    /// Embedders: the linking values that suit this network's similarities.
    #[serde(default)]
    pub linking: Option<LinkCalibration>,
    /// Set on models written by `crosscam quantize`: the format (`int8-qdq`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantized: Option<String>,
    /// The sha256 of the float model a quantised one was made from (provenance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
}

/// How similar an embedder makes the same person and different people, as linking values
/// (`[model.linking]` in the manifest; the config's `[linking]` keys override them).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkCalibration {
    pub threshold: f32,
    pub margin: f32,
    pub merge_similarity: f32,
    /// What data and command the values were chosen on.
    pub measured: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    /// -1 marks a dynamic dimension (the batch).
    pub shape: Vec<i64>,
    /// Only `NCHW` is supported today.
    pub layout: String,
    /// Channel order the model expects: `RGB` or `BGR`.
    pub color: String,
    /// Per-channel normalisation applied to pixel values scaled to [0, 1]: (x − mean) / std.
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    #[serde(default)]
    pub meaning: Option<String>,
}

impl InputSpec {
    /// Input height and width.
    pub fn hw(&self) -> (usize, usize) {
        let n = self.shape.len();
        (
            self.shape[n - 2].max(1) as usize,
            self.shape[n - 1].max(1) as usize,
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    /// Another manifest whose models this one adds to (a site manifest extends the shipped
    /// one); relative to this file. Entries here win over its entries of the same name.
    #[serde(default)]
    extends: Option<PathBuf>,
    #[serde(default)]
    model: Vec<ModelEntry>,
}

/// How many manifests may extend one another (a loop is refused, not followed forever).
const MAX_EXTENDS: usize = 4;

#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    pub models: Vec<ModelEntry>,
    /// How many of `models` (the first ones) are this file's own; the rest come from the
    /// manifest it extends, with absolute `file` paths.
    local: usize,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ModelError> {
        Manifest::load_depth(path, 0)
    }

    fn load_depth(path: &Path, depth: usize) -> Result<Manifest, ModelError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ModelError::Io(path.to_path_buf(), e))?;
        let f: ManifestFile = parse_toml(&text, &path.display().to_string())?;
        let mut models = f.model;
        let local = models.len();
        if let Some(base) = f.extends {
            if depth >= MAX_EXTENDS {
                return Err(ModelError::Io(
                    path.to_path_buf(),
                    std::io::Error::other(format!(
                        "manifests extend one another more than {MAX_EXTENDS} deep (a loop?)"
                    )),
                ));
            }
            let dir = path.parent().unwrap_or(Path::new("."));
            let base_path = dir.join(base);
            let base = Manifest::load_depth(&base_path, depth + 1)?;
            for mut m in base.models.iter().cloned() {
                if models[..local].iter().any(|own| own.name == m.name) {
                    continue;
                }
                m.file = base.file_of(&m);
                models.push(m);
            }
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            models,
            local,
        })
    }

    /// Names of the models this file itself lists (not those of the manifest it extends).
    pub fn local_names(&self) -> Vec<String> {
        self.models[..self.local.min(self.models.len())]
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    /// The manifest shipped with crosscam.
    pub fn bundled() -> Result<Manifest, ModelError> {
        Manifest::load(&crate::paths::project_root().join("models/manifest.toml"))
    }

    pub fn get(&self, name: &str) -> Result<&ModelEntry, ModelError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            ModelError::Unknown(
                name.to_string(),
                self.path.display().to_string(),
                self.models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }

    /// The model file's absolute path (manifest paths are relative to the manifest).
    pub fn file_of(&self, m: &ModelEntry) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(&m.file)
    }

    /// Checks that the file exists and has the manifest's checksum.
    pub fn verify_file(&self, m: &ModelEntry) -> Result<PathBuf, ModelError> {
        let path = self.file_of(m);
        if !path.is_file() {
            return Err(ModelError::Missing {
                name: m.name.clone(),
                path,
                recipe: m.recipe.clone(),
            });
        }
        let found = sha256_file(&path).map_err(|e| ModelError::Io(path.clone(), e))?;
        if !found.eq_ignore_ascii_case(&m.sha256) {
            return Err(ModelError::Checksum {
                name: m.name.clone(),
                path,
                expected: m.sha256.clone(),
                found,
            });
        }
        Ok(path)
    }

    /// Verifies the file, opens it in ONNX Runtime and checks its tensors against the manifest.
    pub fn open(
        &self,
        name: &str,
        rt: &Runtime,
        opts: SessionOptions,
    ) -> Result<LoadedModel, ModelError> {
        let entry = self.get(name)?.clone();
        let path = self.verify_file(&entry)?;
        let (session, device) = rt
            .session(&path, opts)
            .map_err(|source| ModelError::Runtime {
                name: entry.name.clone(),
                source,
            })?;
        check_session(&entry, &session)?;
        Ok(LoadedModel {
            entry,
            path,
            session,
            device,
        })
    }
}

/// A model opened in ONNX Runtime whose tensors match its manifest entry.
pub struct LoadedModel {
    pub entry: ModelEntry,
    pub path: PathBuf,
    pub session: Session,
    pub device: Device,
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn shape_matches(declared: &[i64], actual: &[i64]) -> bool {
    declared.len() == actual.len()
        && declared
            .iter()
            .zip(actual)
            .all(|(&d, &a)| d < 0 || a < 0 || d == a)
}

fn fmt_shape(s: &[i64]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| if *d < 0 {
                "N".to_string()
            } else {
                d.to_string()
            })
            .collect::<Vec<_>>()
            .join(",")
    )
}

/// Compares a session's input and output names and shapes with the manifest entry.
pub fn check_session(m: &ModelEntry, s: &Session) -> Result<(), ModelError> {
    let mismatch = |what: String| ModelError::Mismatch {
        name: m.name.clone(),
        what,
        recipe: m.recipe.clone(),
    };
    let inputs = s.inputs();
    let inp = inputs
        .iter()
        .find(|i| i.name() == m.input.name)
        .ok_or_else(|| {
            mismatch(format!(
                "it has no input '{}' (inputs: {})",
                m.input.name,
                inputs
                    .iter()
                    .map(|i| i.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let shape: Vec<i64> = inp
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .unwrap_or_default();
    if !shape_matches(&m.input.shape, &shape) {
        return Err(mismatch(format!(
            "input '{}' has shape {} but the manifest says {}",
            m.input.name,
            fmt_shape(&shape),
            fmt_shape(&m.input.shape)
        )));
    }
    for o in &m.outputs {
        let out = s
            .outputs()
            .iter()
            .find(|x| x.name() == o.name)
            .ok_or_else(|| mismatch(format!("it has no output '{}'", o.name)))?;
        let shape: Vec<i64> = out
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .unwrap_or_default();
        // exporters often leave output shapes symbolic; compare only when the model declares them
        if !shape.is_empty() && shape.iter().all(|&d| d >= 0) && !shape_matches(&o.shape, &shape) {
            return Err(mismatch(format!(
                "output '{}' has shape {} but the manifest says {}",
                o.name,
                fmt_shape(&shape),
                fmt_shape(&o.shape)
            )));
        }
    }
    Ok(())
}

/// Runs the model once on zeros of the manifest's input shape (dynamic dimensions = 1) and checks
/// every output's shape against the manifest. Returns the time the run took.
pub fn smoke_run(model: &mut LoadedModel) -> Result<std::time::Duration, ModelError> {
    let m = &model.entry;
    let dims: Vec<usize> = m
        .input
        .shape
        .iter()
        .map(|&d| if d < 0 { 1 } else { d as usize })
        .collect();
    let x = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&dims));
    let fail = |e: ort::Error| ModelError::Runtime {
        name: m.name.clone(),
        source: RuntimeError::Ort(e.to_string()),
    };
    let t = std::time::Instant::now();
    let input = ort::value::TensorRef::from_array_view(&x).map_err(fail)?;
    let outputs = model
        .session
        .run(ort::inputs![m.input.name.as_str() => input])
        .map_err(fail)?;
    let took = t.elapsed();
    for o in &m.outputs {
        let v = outputs
            .get(o.name.as_str())
            .ok_or_else(|| ModelError::Mismatch {
                name: m.name.clone(),
                what: format!("running it produced no output '{}'", o.name),
                recipe: m.recipe.clone(),
            })?;
        let (shape, _) = v.try_extract_tensor::<f32>().map_err(fail)?;
        let expect: Vec<i64> = o.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
        if shape.to_vec() != expect {
            return Err(ModelError::Mismatch {
                name: m.name.clone(),
                what: format!(
                    "output '{}' came out as {} but the manifest says {}",
                    o.name,
                    fmt_shape(shape),
                    fmt_shape(&o.shape)
                ),
                recipe: m.recipe.clone(),
            });
        }
    }
    Ok(took)
}

/// A model argument as commands take it: a name in the bundled manifest (its file), or a path.
pub fn model_file(model: &str) -> Result<PathBuf, ModelError> {
    let manifest = Manifest::bundled()?;
    Ok(match manifest.get(model) {
        Ok(entry) => manifest.file_of(entry),
        Err(_) => PathBuf::from(model),
    })
}
