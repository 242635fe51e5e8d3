//! The serving side of a model change: which model version embeds crops right now, how the
//! gallery follows a new model (the [`ReembedHook`] the server implements), and the two atomic
//! switches, [`promote`] and [`rollback`].
//!
//! A switch never leaves the server between two models. In order:
//!
//! 1. the new model is **loaded** (ONNX Runtime session) — a file that does not load stops here;
//! 2. the hook **prepares** a new gallery by re-embedding the stored crops with it, next to the
//!    serving gallery — a failure or a cancel stops here ([`ReembedHook::abort`]);
//! 3. the registry **commits** (one atomic rename of `registry.json`);
//! 4. under the serving lock, the new model **and** the prepared gallery become the serving ones
//!    ([`ServingModel::swap`] calls [`ReembedHook::commit`] while holding the lock), so no reader
//!    ever sees the new model with the old gallery or the reverse.
//!
//! Until step 4 the old model keeps serving; a failure before it changes nothing.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, Result};
use image::RgbImage;
use ndarray::Array2;

use super::registry::{ModelVersion, Registry};
use crate::reid::Embedder;
use crate::runtime::SessionOptions;
use crate::train::Cancel;

/// A loaded model version.
pub struct Loaded {
    pub version: ModelVersion,
    pub embedder: Mutex<Embedder>,
}

impl Loaded {
    /// Loads a version's file (its checksum is checked first).
    pub fn open(registry: &Registry, version: &ModelVersion) -> Result<Loaded> {
        registry.verify(version)?;
        Ok(Loaded {
            version: version.clone(),
            embedder: Mutex::new(open_embedder(&registry.path_of(version))?),
        })
    }
}

fn open_embedder(path: &Path) -> Result<Embedder> {
    let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
    Embedder::from_file(path, rt, SessionOptions::default())
        .with_context(|| format!("cannot load the model {}", path.display()))
}

/// The model the server embeds with. Readers take a snapshot ([`ServingModel::current`]) and
/// keep using it even while a switch happens.
pub struct ServingModel {
    inner: RwLock<Arc<Loaded>>,
}

impl ServingModel {
    pub fn new(loaded: Loaded) -> ServingModel {
        ServingModel {
            inner: RwLock::new(Arc::new(loaded)),
        }
    }

    /// Loads the registry's current version.
    pub fn from_registry(registry: &Registry) -> Result<ServingModel> {
        let v = registry
            .current()
            .context("the model registry has no current version")?;
        Ok(ServingModel::new(Loaded::open(registry, v)?))
    }

    /// The serving model now.
    pub fn current(&self) -> Arc<Loaded> {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` with the serving model while holding the read lock: a switch waits for it, so
    /// whatever `f` reads of the gallery belongs to the same model.
    pub fn with_current<T>(&self, f: impl FnOnce(&Loaded) -> T) -> T {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    /// Embeds whole crops with the serving model.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<(String, Array2<f32>)> {
        let cur = self.current();
        let mut e = cur.embedder.lock().unwrap_or_else(|p| p.into_inner());
        Ok((cur.version.id.clone(), e.embed_images(images)?))
    }

    /// Makes `next` the serving model, running `commit` (the gallery switch) under the write lock.
    pub fn swap(&self, next: Loaded, commit: impl FnOnce(&ModelVersion)) -> Arc<Loaded> {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        commit(&next.version);
        std::mem::replace(&mut *g, Arc::new(next))
    }
}

/// What the server does with its gallery when the embedder changes: embeddings of different
/// models are not comparable, so every stored crop is embedded again with the new model.
///
/// The server implements it over its crop store and gallery index; tests implement it over a
/// folder of crops.
pub trait ReembedHook {
    /// Re-embeds the stored crops with `embedder` (the new model) into a gallery kept aside; the
    /// serving gallery stays untouched. Long: check `cancel` between batches and return an error
    /// when it is set.
    fn prepare(
        &mut self,
        version: &ModelVersion,
        embedder: &mut Embedder,
        cancel: &Cancel,
    ) -> Result<()>;
    /// Makes the prepared gallery the serving one. Called under the serving lock, right after the
    /// registry switched; must not fail (everything that can fail belongs in `prepare`).
    fn commit(&mut self, version: &ModelVersion);
    /// Drops the prepared gallery: the switch was abandoned.
    fn abort(&mut self, version: &ModelVersion);
}

/// A hook for a server without a gallery (nothing to re-embed).
pub struct NoGallery;

impl ReembedHook for NoGallery {
    fn prepare(&mut self, _: &ModelVersion, _: &mut Embedder, _: &Cancel) -> Result<()> {
        Ok(())
    }
    fn commit(&mut self, _: &ModelVersion) {}
    fn abort(&mut self, _: &ModelVersion) {}
}

/// Lets the hook re-embed with `loaded`, then switches registry and serving model (see the
/// module documentation).
fn switch(
    registry: &mut Registry,
    serving: &ServingModel,
    hook: &mut dyn ReembedHook,
    loaded: Loaded,
    cancel: &Cancel,
    commit_registry: &mut dyn FnMut(&mut Registry) -> Result<()>,
) -> Result<()> {
    let version = loaded.version.clone();
    {
        let mut e = loaded.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = hook.prepare(&version, &mut e, cancel) {
            hook.abort(&version);
            return Err(err.context(format!(
                "re-embedding the gallery with model {} failed; the serving model is unchanged",
                version.id
            )));
        }
    }
    if cancel.is_cancelled() {
        hook.abort(&version);
        anyhow::bail!("cancelled; the serving model is unchanged");
    }
    if let Err(err) = commit_registry(registry) {
        hook.abort(&version);
        return Err(err.context("cannot update the model registry; the serving model is unchanged"));
    }
    serving.swap(loaded, |v| hook.commit(v));
    Ok(())
}

/// Promotes a staged candidate: it is loaded, the gallery is re-embedded with it, and only then
/// does it become a registry version, `current`, and the serving model. On any failure (or a
/// cancel) the candidate is discarded and nothing changes.
pub fn promote(
    registry: &mut Registry,
    serving: &ServingModel,
    hook: &mut dyn ReembedHook,
    staged: &Path,
    origin: &str,
    eval: Option<super::evaluate::Score>,
    cancel: &Cancel,
) -> Result<ModelVersion> {
    let result = (|| {
        let parent = registry.current().map(|v| v.id.clone());
        let v = registry.prepare_version(staged, origin, parent.as_deref(), eval)?;
        let loaded = Loaded {
            version: v.clone(),
            embedder: Mutex::new(open_embedder(staged)?),
        };
        let staged = staged.to_path_buf();
        let v2 = v.clone();
        switch(registry, serving, hook, loaded, cancel, &mut |r| {
            r.commit(&staged, &v2, true)
        })?;
        Ok(v)
    })();
    match result {
        Ok(v) => {
            tracing::info!(version = %v.id, origin, "model promoted");
            Ok(v)
        }
        Err(e) => {
            registry.discard_staged(staged);
            Err(e)
        }
    }
}

/// Rolls back to `previous`: it is loaded, the gallery is re-embedded with it, then registry and
/// serving model switch back (the rolled-back version becomes `previous`, so a second rollback
/// undoes the first).
pub fn rollback(
    registry: &mut Registry,
    serving: &ServingModel,
    hook: &mut dyn ReembedHook,
    cancel: &Cancel,
) -> Result<ModelVersion> {
    let prev = registry
        .previous()
        .cloned()
        .context("there is no previous model version to roll back to")?;
    let loaded = Loaded::open(registry, &prev)?;
    let id = prev.id.clone();
    switch(registry, serving, hook, loaded, cancel, &mut |r| {
        r.set_current(&id)
    })?;
    tracing::info!(version = %prev.id, "model rolled back");
    Ok(prev)
}
