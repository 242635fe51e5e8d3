//! A gallery made of a folder of crops: the [`ReembedHook`] of `crosscam job` (and of the job
//! tests), until the server's crop store and gallery index implement their own.
//!
//! The embeddings live in `DIR/gallery.npy` (float32 `[n, D]`, L2-normalised rows, crops in
//! name order) with `DIR/gallery.json` naming the model version and the crops. Re-embedding
//! writes `DIR/.staging-<version>.npy`; commit renames it into place.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::registry::{ModelVersion, write_atomic};
use super::serving::ReembedHook;
use crate::reid::Embedder;
use crate::train::Cancel;

/// The gallery's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GalleryInfo {
    /// The model version whose embeddings these are.
    pub version: String,
    /// Crop files, in row order.
    pub crops: Vec<String>,
    pub dim: usize,
}

/// Embeddings of a folder of crops, following the serving model.
pub struct FolderGallery {
    /// The crops (jpg, png; sorted by name).
    pub crops: PathBuf,
    /// Where the embeddings are kept.
    pub dir: PathBuf,
    /// The serving gallery.
    pub current: Option<(GalleryInfo, Array2<f32>)>,
    staged: Option<(PathBuf, GalleryInfo, Array2<f32>)>,
}

impl FolderGallery {
    /// Opens the gallery kept in `dir` (empty when nothing was embedded yet).
    pub fn open(crops: &Path, dir: &Path) -> Result<FolderGallery> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let info = dir.join("gallery.json");
        let current = if info.is_file() {
            let i: GalleryInfo = serde_json::from_str(&std::fs::read_to_string(&info)?)
                .with_context(|| format!("{} is not a gallery record", info.display()))?;
            let f = crate::eval::npy::read_f32(&dir.join("gallery.npy"))?;
            Some((i, f))
        } else {
            None
        };
        Ok(FolderGallery {
            crops: crops.to_path_buf(),
            dir: dir.to_path_buf(),
            current,
            staged: None,
        })
    }

    /// The model version of the serving embeddings.
    pub fn version(&self) -> Option<&str> {
        self.current.as_ref().map(|(i, _)| i.version.as_str())
    }

    /// Embeds the folder with `embedder` (every file must decode).
    pub fn embed_folder(
        crops: &Path,
        embedder: &mut Embedder,
        cancel: &Cancel,
    ) -> Result<(Vec<String>, Array2<f32>)> {
        let files =
            crate::prune::criteria::calibration_files(crops).map_err(|e| anyhow::anyhow!("{e}"))?;
        anyhow::ensure!(!files.is_empty(), "{} holds no crops", crops.display());
        let mut rows = Vec::new();
        let mut dim = 0;
        for chunk in files.chunks(32) {
            anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
            let imgs = chunk
                .iter()
                .map(|p| {
                    image::open(p)
                        .map(|i| i.to_rgb8())
                        .with_context(|| format!("cannot read the crop {}", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let e = embedder.embed_images(&imgs)?;
            dim = e.ncols();
            rows.extend(e.iter().copied());
        }
        let names = files
            .iter()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        Ok((names, Array2::from_shape_vec((files.len(), dim), rows)?))
    }
}

impl ReembedHook for FolderGallery {
    fn prepare(
        &mut self,
        version: &ModelVersion,
        embedder: &mut Embedder,
        cancel: &Cancel,
    ) -> Result<()> {
        let (crops, f) = FolderGallery::embed_folder(&self.crops, embedder, cancel)?;
        let p = self.dir.join(format!(".staging-{}.npy", version.id));
        write_atomic(&p, &crate::eval::npy::encode_f32(f.view()))?;
        let info = GalleryInfo {
            version: version.id.clone(),
            dim: f.ncols(),
            crops,
        };
        self.staged = Some((p, info, f));
        Ok(())
    }

    fn commit(&mut self, version: &ModelVersion) {
        let Some((p, info, f)) = self.staged.take() else {
            tracing::warn!(version = %version.id, "gallery commit without a prepared gallery");
            return;
        };
        if let Err(e) = std::fs::rename(&p, self.dir.join("gallery.npy")) {
            tracing::warn!("cannot move {} into place: {e}", p.display());
        }
        if let Ok(text) = serde_json::to_string_pretty(&info)
            && let Err(e) = write_atomic(&self.dir.join("gallery.json"), text.as_bytes())
        {
            tracing::warn!("cannot write the gallery record: {e:#}");
        }
        self.current = Some((info, f));
    }

    fn abort(&mut self, _version: &ModelVersion) {
        if let Some((p, _, _)) = self.staged.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
