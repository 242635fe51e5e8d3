//! The cameras of a process: the config's, their API changes, and (on an edge) those the site
//! assigned to it. Where they go depends on the role: a single process or an edge runs them
//! (the ingest); a core places them on the edges through the site's camera bucket
//! (src/cluster/assign.rs) and runs none itself.

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
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The cameras as configured now.
    list: Vec<CameraSettings>,
    /// Edge: the ids among them that the site assigned (the others are the edge's own).
    assigned: BTreeSet<String>,
}

impl CameraSet {
    pub fn new(
        ingest: Arc<Ingest>,
        control: crossbeam_channel::Sender<Control>,
        live: Arc<Live>,
        media_dirs: Vec<PathBuf>,
        policy: EnvPolicy,
        placement: Placement,
    ) -> CameraSet {
        CameraSet {
            ingest,
            control,
            live,
            media_dirs,
            policy,
            placement,
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
        self.check_api_source(c)
            .map_err(|m| format!("camera {:?}: url: {m}", c.id))?;
        c.check(&self.policy)
            .map_err(|(k, m)| format!("camera {:?}: {k}: {m}", c.id))?;
        self.ingest.check(c)
    }

    /// Adds a camera, or changes the one with the same id (restarting it); `Ok(true)` when it
    /// was added.
    pub fn put(&self, c: CameraSettings) -> anyhow::Result<bool> {
        let mut st = self.lock();
        refuse_assigned(&st, &c.id)?;
        let mut next = st.list.clone();
        let added = match next.iter_mut().find(|x| x.id == c.id) {
            Some(x) => {
                *x = c;
                false
            }
            None => {
                next.push(c);
                true
            }
        };
        self.apply_locked(&mut st, next)?;
        Ok(added)
    }

    /// Stops and removes a camera; `Ok(false)` when there is none with that id.
    pub fn remove(&self, id: &str) -> anyhow::Result<bool> {
        let mut st = self.lock();
        if !st.list.iter().any(|c| c.id == id) {
            return Ok(false);
        }
        refuse_assigned(&st, id)?;
        let next: Vec<CameraSettings> = st.list.iter().filter(|c| c.id != id).cloned().collect();
        self.apply_locked(&mut st, next)?;
        Ok(true)
    }

    /// Makes this process's own cameras those of `cameras` (the site's assignments on an edge
    /// stay): removes the cameras not listed, adds new ones and restarts only those whose
    /// settings changed.
    pub fn apply(&self, cameras: &[CameraSettings]) -> anyhow::Result<()> {
        let mut st = self.lock();
        let mut next: Vec<CameraSettings> = cameras
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
        self.apply_locked(&mut st, next)
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
