//! Cameras added, changed or removed through the API, kept so that they outlast a restart and
//! (on a core) travel in the database snapshots a standby takes over from.
//!
//! A row holds what the API made of one camera (`settings`; NULL: removed) and the config
//! file's entry for that camera when the change was made (`config`; NULL: the file had none).
//! At start and at a config reload the daemon applies the rows over the config file's cameras,
//! except a row whose `config` no longer matches the file: the file was edited since, and the
//! later change wins (src/server/cameras.rs).

use rusqlite::params;

use super::{Result, Store, StoreError, now_ms};
use crate::config::CameraSettings;

/// One camera as the API left it.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraChange {
    pub id: String,
    /// The camera's settings; `None`: removed through the API.
    pub settings: Option<CameraSettings>,
    /// The config file's entry for the camera when the change was made.
    pub config: Option<CameraSettings>,
    /// Who made the change (the API user).
    pub actor: String,
    pub changed_ms: i64,
}

fn to_json(c: Option<&CameraSettings>) -> Result<Option<String>> {
    c.map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("camera settings: {e}")))
}

impl Store {
    /// The cameras changed through the API, oldest change first. A row that cannot be read
    /// (written by hand, or by a crosscam with other camera keys) is left out with a warning.
    pub fn camera_changes(&self) -> Result<Vec<CameraChange>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, settings, config, actor, changed_ms FROM camera_changes
                 ORDER BY changed_ms, id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, settings, config, actor, changed_ms) = row.map_err(|e| self.err(e))?;
            let parse = |s: Option<String>| -> std::result::Result<Option<CameraSettings>, String> {
                s.map(|s| serde_json::from_str::<CameraSettings>(&s).map_err(|e| e.to_string()))
                    .transpose()
            };
            match (parse(settings), parse(config)) {
                (Ok(settings), Ok(config)) => out.push(CameraChange {
                    id,
                    settings,
                    config,
                    actor,
                    changed_ms,
                }),
                (Err(e), _) | (_, Err(e)) => tracing::warn!(
                    camera = %crate::config::secrets::clip(&id, 80),
                    error = %e,
                    "a camera change stored through the API cannot be read; it is not applied (set the camera again through the API)"
                ),
            }
        }
        Ok(out)
    }

    /// Keeps what the API made of camera `id` (`None`: removed) with the config file's entry
    /// at the time (`None`: the file has none).
    pub fn record_camera_change(
        &self,
        id: &str,
        settings: Option<&CameraSettings>,
        config: Option<&CameraSettings>,
        actor: &str,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO camera_changes (id, settings, config, actor, changed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET settings = excluded.settings,
                    config = excluded.config, actor = excluded.actor,
                    changed_ms = excluded.changed_ms",
                params![id, to_json(settings)?, to_json(config)?, actor, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Forgets the API's change of camera `id` (the config file's entry, or none, holds).
    pub fn forget_camera_change(&self, id: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM camera_changes WHERE id = ?1", params![id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
