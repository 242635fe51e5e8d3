//! The cameras of a process: the config's, their API changes, and (on an edge) those the site
//! assigned to it. Where they go depends on the role: a single process or an edge runs them
//! (the ingest); a core places them on the edges through the site's camera bucket
//! (src/cluster/assign.rs) and runs none itself.
//!
//! What the API adds, changes or removes is kept in the store ([`crate::store::CameraChange`])
//! and applied over the config file's cameras at the next start and config reload
//! ([`with_api_changes`]), unless the file's entry for that camera was edited since: then the
//! file, the later change, wins and the API's change is forgotten.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::CameraSettings;
use crate::config::secrets::EnvPolicy;
use crate::ingest::Ingest;

use super::{Control, Live};

/// Where a process's cameras run.
pub enum Placement {
    /// Here: the ingest runs them.
    Local,
    /// On the edges: a core publishes their definitions to the site's camera bucket.
    Site(crate::cluster::assign::SiteCameras),
}

pub struct CameraSet {
    ingest: Arc<Ingest>,
    control: crossbeam_channel::Sender<Control>,
    live: Arc<Live>,
    /// Where `file:` cameras that do not come from the config file may play from (API,
    /// site assignments).
    media_dirs: Vec<PathBuf>,
    /// Which environment variables cameras' credentials may come from.
    policy: EnvPolicy,
    placement: Placement,
    /// Where the API's changes are kept (none: they last until the process stops).
    changes: Option<Mutex<crate::store::Store>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The cameras as configured now.
    list: Vec<CameraSettings>,
    /// Edge: the ids among them that the site assigned (the others are the edge's own).
    assigned: BTreeSet<String>,
    /// The config file's cameras, as last applied.
    config: Vec<CameraSettings>,
}

impl CameraSet {
    pub fn new(
        ingest: Arc<Ingest>,
        control: crossbeam_channel::Sender<Control>,
        live: Arc<Live>,
        media_dirs: Vec<PathBuf>,
        policy: EnvPolicy,
        placement: Placement,
        changes: Option<crate::store::Store>,
    ) -> CameraSet {
        CameraSet {
            ingest,
            control,
            live,
            media_dirs,
            policy,
            placement,
            changes: changes.map(Mutex::new),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cameras as configured now.
    pub fn list(&self) -> Vec<CameraSettings> {
        self.lock().list.clone()
    }

    /// Whether the cameras run on edges (a core).
    pub fn placed_on_edges(&self) -> bool {
        matches!(self.placement, Placement::Site(_))
    }

    /// Checks a camera that comes through the API: `file:` cameras only inside `[ingest]
    /// media_dirs`.
    pub fn check_api_source(&self, c: &CameraSettings) -> Result<(), String> {
        crate::ingest::source::check_media_dir(&c.url, &self.media_dirs)
    }

    /// Checks a camera the site assigned to this edge as the API's cameras are checked (its
    /// definition comes from the broker): an id, a source this edge may play (`file:` only
    /// inside `[ingest] media_dirs`), credentials this edge's policy allows, a file that plays.
    pub fn check_assigned(&self, c: &CameraSettings) -> Result<(), String> {
        self.check_as_from_api(c, true)
    }

    /// The API's checks of a camera that did not come from the config file (assigned by the
    /// site, or kept from an API change): source, credentials, and, with `playable`, that the
    /// ingest can play it.
    fn check_as_from_api(&self, c: &CameraSettings, playable: bool) -> Result<(), String> {
        self.check_api_source(c)
            .map_err(|m| format!("camera {:?}: url: {m}", c.id))?;
        c.check(&self.policy)
            .map_err(|(k, m)| format!("camera {:?}: {k}: {m}", c.id))?;
        if playable {
            self.ingest.check(c)?;
        }
        Ok(())
    }

    /// Adds a camera, or changes the one with the same id (restarting it); `Ok(true)` when it
    /// was added. `actor` made the change through the API: it is kept for the next start.
    pub fn put(&self, c: CameraSettings, actor: &str) -> anyhow::Result<bool> {
        let mut st = self.lock();
        refuse_assigned(&st, &c.id)?;
        let mut next = st.list.clone();
        let added = match next.iter_mut().find(|x| x.id == c.id) {
            Some(x) => {
                *x = c.clone();
                false
            }
            None => {
                next.push(c.clone());
                true
            }
        };
        self.apply_locked(&mut st, next)?;
        self.keep_change(&st, &c.id, Some(&c), actor);
        Ok(added)
    }

    /// Stops and removes a camera; `Ok(false)` when there is none with that id. `actor`
    /// removed it through the API: it stays removed at the next start.
    pub fn remove(&self, id: &str, actor: &str) -> anyhow::Result<bool> {
        let mut st = self.lock();
        if !st.list.iter().any(|c| c.id == id) {
            return Ok(false);
        }
        refuse_assigned(&st, id)?;
        let next: Vec<CameraSettings> = st.list.iter().filter(|c| c.id != id).cloned().collect();
        self.apply_locked(&mut st, next)?;
        self.keep_change(&st, id, None, actor);
        Ok(true)
    }

    /// Keeps an API change of camera `id` (`None`: removed) in the store; a camera set back to
    /// the config file's entry, or an API camera removed, leaves nothing to keep. A store that
    /// cannot write is logged: the camera runs as asked until the process stops.
    fn keep_change(&self, st: &State, id: &str, now: Option<&CameraSettings>, actor: &str) {
        let Some(store) = &self.changes else { return };
        let store = store.lock().unwrap_or_else(|e| e.into_inner());
        let config = st.config.iter().find(|c| c.id == id);
        let r = if now == config {
            store.forget_camera_change(id)
        } else {
            store.record_camera_change(id, now, config, actor)
        };
        if let Err(e) = r {
            tracing::error!(camera = %id, error = %e, "the camera's change through the API runs but could not be kept: it lasts until the daemon stops");
        }
    }

    /// Makes this process's own cameras those of `cameras` (the site's assignments on an edge
    /// stay): removes the cameras not listed, adds new ones and restarts only those whose
    /// settings changed.
    ///
    /// `cameras` are the config file's; the changes the API made and the store kept are applied
    /// over them ([`with_api_changes`]).
    pub fn apply(&self, cameras: &[CameraSettings]) -> anyhow::Result<()> {
        let mut st = self.lock();
        let merged = self.with_kept_changes(cameras);
        let mut next: Vec<CameraSettings> = merged
            .iter()
            .filter(|c| !st.assigned.contains(&c.id))
            .cloned()
            .collect();
        next.extend(
            st.list
                .iter()
                .filter(|c| st.assigned.contains(&c.id))
                .cloned(),
        );
        self.apply_locked(&mut st, next)?;
        // the file's entries the API's next changes are recorded against: those now running
        st.config = cameras.to_vec();
        Ok(())
    }

    /// Edge: makes the site's assigned cameras `assigned` (the edge's own cameras stay).
    pub fn set_assigned(&self, assigned: Vec<CameraSettings>) -> anyhow::Result<()> {
        let mut st = self.lock();
        let mut next: Vec<CameraSettings> = st
            .list
            .iter()
            .filter(|c| !st.assigned.contains(&c.id))
            .cloned()
            .collect();
        next.extend(assigned.iter().cloned());
        let ids: BTreeSet<String> = assigned.into_iter().map(|c| c.id).collect();
        self.apply_locked(&mut st, next)?;
        st.assigned = ids;
        Ok(())
    }

    /// Where a camera's settings come from: `config` (the config file's entry, unchanged),
    /// `api` (added or changed through the API, kept in the store) or `site` (an edge: assigned
    /// by the site's core).
    pub fn origin(&self, id: &str) -> &'static str {
        let st = self.lock();
        if st.assigned.contains(id) {
            "site"
        } else if st.config.iter().any(|c| c.id == id && st.list.contains(c)) {
            "config"
        } else {
            "api"
        }
    }

    /// Whether the site assigned this camera to this edge.
    pub fn is_assigned(&self, id: &str) -> bool {
        self.lock().assigned.contains(id)
    }

    /// The ids of this process's own cameras (not assigned by the site).
    pub fn own_ids(&self) -> BTreeSet<String> {
        let st = self.lock();
        st.list
            .iter()
            .filter(|c| !st.assigned.contains(&c.id))
            .map(|c| c.id.clone())
            .collect()
    }

    /// Makes `next` the cameras: records new and changed ones (names for the store and the
    /// edge's camera events), then runs them here or places them on the edges.
    fn apply_locked(&self, st: &mut State, next: Vec<CameraSettings>) -> anyhow::Result<()> {
        let local = matches!(self.placement, Placement::Local);
        // every new or changed camera is checked before anything changes (a core does not play
        // files: the edges check them)
        if local {
            for c in next.iter().filter(|c| !st.list.contains(c)) {
                self.ingest.check(c).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        for c in &next {
            if !st.list.contains(c) {
                let _ = self.control.send(Control::CameraConfigured {
                    camera: c.id.clone(),
                    name: c.name.clone().unwrap_or_else(|| c.id.clone()),
                    url: crate::ingest::camera::redact(&c.url),
                });
            }
        }
        match &self.placement {
            Placement::Local => {
                self.ingest.apply(&next)?;
                for gone in st
                    .list
                    .iter()
                    .filter(|c| !next.iter().any(|n| n.id == c.id))
                {
                    self.live.forget(&gone.id);
                }
            }
            Placement::Site(site) => site.publish(next.clone()),
        }
        st.list = next;
        Ok(())
    }

    /// The config file's cameras with the API's kept changes applied: a kept change the file
    /// overtook is forgotten (logged), a kept camera that no longer passes the API's checks
    /// (its media folder or credential policy changed) is left out (logged, kept for later).
    fn with_kept_changes(&self, config: &[CameraSettings]) -> Vec<CameraSettings> {
        let Some(store) = &self.changes else {
            return config.to_vec();
        };
        let store = store.lock().unwrap_or_else(|e| e.into_inner());
        let changes = match store.camera_changes() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the cameras changed through the API; running the config file's");
                return config.to_vec();
            }
        };
        let merged = with_api_changes(config, &changes);
        for ch in &merged.overtaken {
            tracing::warn!(camera = %ch.id, changed_by = %ch.actor, changed_ms = ch.changed_ms,
                "the config file's entry for this camera was edited after its change through the API: the file's version runs and the API's change is forgotten");
            if let Err(e) = store.forget_camera_change(&ch.id) {
                tracing::error!(camera = %ch.id, error = %e, "cannot forget an overtaken camera change");
            }
        }
        let local = matches!(self.placement, Placement::Local);
        let mut out = Vec::with_capacity(merged.cameras.len());
        for (c, from_api) in merged.cameras {
            if from_api {
                // a core does not play files: its edges check that
                if let Err(m) = self.check_as_from_api(&c, local) {
                    tracing::error!(camera = %c.id, error = %m,
                        "a camera set through the API no longer passes the checks and does not run; set it again through the API (PUT /api/v1/cameras/{{id}}) or remove it");
                    continue;
                }
            }
            out.push(c);
        }
        let applied = changes.len() - merged.overtaken.len();
        if applied > 0 {
            tracing::info!(
                changes = applied,
                "cameras changed through the API applied over the config file's"
            );
        }
        out
    }

    /// Stops placing cameras (a core's publishing thread).
    pub fn shutdown(&self) {
        if let Placement::Site(site) = &self.placement {
            site.stop();
        }
    }
}

fn refuse_assigned(st: &State, id: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !st.assigned.contains(id),
        "camera {id:?} was assigned to this edge by the site's core; change it at the core"
    );
    Ok(())
}

/// The config file's cameras with the API's changes applied.
#[derive(Debug, Default)]
pub struct Merged {
    /// The cameras, each with whether its settings come from the API: the file's order, then
    /// the cameras the API added, oldest first.
    pub cameras: Vec<(CameraSettings, bool)>,
    /// Changes the file overtook: its entry for the camera is no longer the one the API
    /// changed (edited, added or removed since).
    pub overtaken: Vec<crate::store::CameraChange>,
}

/// Applies `changes` (the API's, kept by the store) over the config file's `config`: a change
/// whose recorded file entry is still the file's replaces, adds or (no settings) removes the
/// camera; any other is overtaken by the file's later edit.
pub fn with_api_changes(
    config: &[CameraSettings],
    changes: &[crate::store::CameraChange],
) -> Merged {
    let mut cameras: Vec<(CameraSettings, bool)> =
        config.iter().map(|c| (c.clone(), false)).collect();
    let mut overtaken = Vec::new();
    for ch in changes {
        let in_file = config.iter().find(|c| c.id == ch.id);
        if in_file != ch.config.as_ref() {
            overtaken.push(ch.clone());
            continue;
        }
        let at = cameras.iter().position(|(c, _)| c.id == ch.id);
        match (&ch.settings, at) {
            (Some(s), Some(i)) => cameras[i] = (s.clone(), true),
            (Some(s), None) => cameras.push((s.clone(), true)),
            (None, Some(i)) => {
                cameras.remove(i);
            }
            (None, None) => {}
        }
    }
    Merged { cameras, overtaken }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CameraChange;

    fn cam(id: &str, url: &str) -> CameraSettings {
        serde_json::from_value(serde_json::json!({"id": id, "url": url})).unwrap()
    }

    fn change(id: &str, now: Option<CameraSettings>, file: Option<CameraSettings>) -> CameraChange {
        CameraChange {
            id: id.into(),
            settings: now,
            config: file,
            actor: "integrator".into(),
            changed_ms: 1,
        }
    }

    fn ids(m: &Merged) -> Vec<(String, String, bool)> {
        m.cameras
            .iter()
            .map(|(c, api)| (c.id.clone(), c.url.clone(), *api))
            .collect()
    }

    #[test]
    fn the_apis_changes_apply_over_the_files_cameras_until_the_file_is_edited() {
        let file = vec![
            cam("a", "test:ball"),
            cam("b", "test:snow"),
            cam("c", "test:smpte"),
        ];
        let changes = vec![
            // changed through the API, the file's entry untouched since
            change(
                "a",
                Some(cam("a", "test:pinwheel")),
                Some(cam("a", "test:ball")),
            ),
            // removed through the API
            change("b", None, Some(cam("b", "test:snow"))),
            // added through the API
            change("lobby", Some(cam("lobby", "test:gamut")), None),
        ];
        let m = with_api_changes(&file, &changes);
        assert_eq!(
            ids(&m),
            vec![
                ("a".into(), "test:pinwheel".into(), true),
                ("c".into(), "test:smpte".into(), false),
                ("lobby".into(), "test:gamut".into(), true),
            ]
        );
        assert!(m.overtaken.is_empty());

        // the file was edited after the API's changes: its camera a changed, b and lobby were
        // added to it; the file wins each time
        let edited = vec![
            cam("a", "test:ball-2"),
            cam("b", "test:snow"),
            cam("c", "test:smpte"),
            cam("lobby", "test:circular"),
        ];
        let m = with_api_changes(&edited, &changes);
        assert_eq!(
            ids(&m),
            vec![
                ("a".into(), "test:ball-2".into(), false),
                ("c".into(), "test:smpte".into(), false),
                ("lobby".into(), "test:circular".into(), false),
            ],
            "b's removal still holds: its entry in the file is the one the API removed"
        );
        let over: Vec<&str> = m.overtaken.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(over, ["a", "lobby"]);

        // a camera the API changed was taken out of the file since: the file wins, it is gone
        let m = with_api_changes(&[cam("c", "test:smpte")], &changes[..1]);
        assert_eq!(ids(&m), vec![("c".into(), "test:smpte".into(), false)]);
        assert_eq!(m.overtaken.len(), 1);
    }
}
