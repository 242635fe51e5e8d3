//! The store: one SQLite database (WAL) with cameras, tracklets, descriptors, identities,
//! sightings (tracklet → identity decisions) and the merge/split audit trail, plus person crops as
//! JPEG pictures in pack files under the data directory with retention by age and disk budget.
//!
//! Crash safety: WAL journal, every decision committed in one transaction, a crop's bytes written
//! before its row. A process killed at any point (SIGKILL) leaves a database that opens
//! with everything committed before the kill, and a gallery that rebuilds from it.

mod camera_changes;
mod cluster;
pub mod credentials;
mod crops;
pub mod labels;
pub mod private;
mod queries;
mod reembed;
mod schema;

pub use queries::{CameraRow, CropRef, IdentityFilter};

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

pub use camera_changes::CameraChange;
pub use crops::{CropData, CropRetention, CropRow};
pub use labels::{LabelKind, LabelRow, NewLabel};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error(
        "database {path} was written by a newer crosscam (schema {found}, this build knows {known}); upgrade crosscam"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    data_dir: PathBuf,
    /// The crop pack this store appends to (opened with the first crop).
    pack: std::cell::RefCell<Option<crops::Pack>>,
}

/// A linking decision as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A new identity was created for the tracklet.
    New,
    /// Linked to an existing identity.
    Linked,
    /// Attached to the best identity, but its margin over the runner-up was small.
    Uncertain,
    /// Set by an operator (merge / split).
    Operator,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::New => "new",
            Decision::Linked => "linked",
            Decision::Uncertain => "uncertain",
            Decision::Operator => "operator",
        }
    }
    fn parse(s: &str) -> Decision {
        match s {
            "new" => Decision::New,
            "linked" => Decision::Linked,
            "uncertain" => Decision::Uncertain,
            _ => Decision::Operator,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IdentityRow {
    pub id: i64,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    pub retired_ms: Option<i64>,
    /// Set when the identity was merged into another one.
    pub merged_into: Option<i64>,
    pub sightings: i64,
    pub cameras: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SightingRow {
    pub tracklet: i64,
    pub camera: String,
    pub track_id: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub identity: i64,
    pub similarity: Option<f32>,
    pub margin: Option<f32>,
    pub decision: Decision,
    pub model: String,
    pub created_ms: i64,
}

/// What the gallery needs to be rebuilt: each live identity's tracklets with their descriptors.
#[derive(Debug, Clone)]
pub struct StoredTracklet {
    pub tracklet: i64,
    pub identity: i64,
    pub camera: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub quality: f32,
    pub descriptor: Vec<f32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeRow {
    pub id: i64,
    pub kind: String,
    pub kept: i64,
    pub other: i64,
    pub actor: String,
    pub reason: String,
    pub similarity: Option<f32>,
    pub created_ms: i64,
}

const BOX_BYTES: usize = 36;

fn pack_boxes(t: &crate::track::Tracklet) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.boxes.len() * BOX_BYTES);
    for b in &t.boxes {
        out.extend((b.pts.as_millis() as i64).to_le_bytes());
        out.extend(b.wall_ms.to_le_bytes());
        for v in [b.bbox.x1, b.bbox.y1, b.bbox.x2, b.bbox.y2, b.score] {
            out.extend(v.to_le_bytes());
        }
    }
    out
}

fn unpack_boxes(blob: &[u8]) -> Vec<(i64, crate::frame::BBox)> {
    blob.chunks_exact(BOX_BYTES)
        .map(|c| {
            let i = |k: usize| i64::from_le_bytes(c[k..k + 8].try_into().expect("8 bytes"));
            let f = |k: usize| f32::from_le_bytes(c[k..k + 4].try_into().expect("4 bytes"));
            (i(0), crate::frame::BBox::new(f(16), f(20), f(24), f(28)))
        })
        .collect()
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The columns [`sighting_row`] reads, in order (`s` = sightings, `t` = their tracklets).
pub(crate) const SIGHTING_COLUMNS: &str = "s.tracklet, t.camera, t.track_id, t.start_ms, t.end_ms, \
     s.identity, s.similarity, s.margin, s.decision, s.model, s.created_ms";

pub(crate) fn sighting_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SightingRow> {
    let d: String = r.get(8)?;
    Ok(SightingRow {
        tracklet: r.get(0)?,
        camera: r.get(1)?,
        track_id: r.get(2)?,
        start_ms: r.get(3)?,
        end_ms: r.get(4)?,
        identity: r.get(5)?,
        similarity: r.get(6)?,
        margin: r.get(7)?,
        decision: Decision::parse(&d),
        model: r.get(9)?,
        created_ms: r.get(10)?,
    })
}

/// Reads an identity from the columns id, created, last seen, retired, merged into, sighting
/// count, comma-separated cameras.
pub(crate) fn identity_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IdentityRow> {
    let cams: String = r.get(6)?;
    Ok(IdentityRow {
        id: r.get(0)?,
        created_ms: r.get(1)?,
        last_seen_ms: r.get(2)?,
        retired_ms: r.get(3)?,
        merged_into: r.get(4)?,
        sightings: r.get(5)?,
        cameras: cams
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// A stored tracklet's boxes: (row id, camera, [(stream-time ms, box)]).
pub type StoredBoxes = (i64, String, Vec<(i64, crate::frame::BBox)>);

impl Store {
    /// Opens (creating if needed) `<data_dir>/crosscam.db` and brings its schema up to date. The
    /// data directory is made mode 0700 and the database 0600.
    pub fn open(data_dir: &Path) -> Result<Store> {
        private::private_dir(data_dir)
            .map_err(|e| StoreError::Io(data_dir.display().to_string(), e))?;
        let path = data_dir.join("crosscam.db");
        private::private_db(&path).map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        let sql = |e| StoreError::Sqlite {
            path: path.display().to_string(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        // the link stage and the crop writer run a dozen statements per observation: each is
        // parsed once and kept (rusqlite keeps 16 by default)
        conn.set_prepared_statement_cache_capacity(64);
        let mut s = Store {
            conn,
            path: path.clone(),
            data_dir: data_dir.to_path_buf(),
            pack: Default::default(),
        };
        schema::migrate(&mut s.conn).map_err(|e| match e {
            schema::MigrateError::Sql(e) => sql(e),
            schema::MigrateError::TooNew(found) => StoreError::TooNew {
                path: path.display().to_string(),
                found,
                known: schema::VERSION,
            },
        })?;
        Ok(s)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        }
    }

    /// Starts a new server run (tracker ids restart with each run) and returns its number.
    pub fn begin_run(&self) -> Result<i64> {
        self.conn
            .execute(
                "INSERT INTO runs (started_ms) VALUES (?1)",
                params![now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn upsert_camera(&self, id: &str, name: &str, url: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO cameras (id, name, url, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET name = excluded.name, url = excluded.url",
                params![id, name, url, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn camera_state(&self, id: &str, state: &str, detail: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE cameras SET state = ?2, state_detail = ?3, state_ms = ?4 WHERE id = ?1",
                params![id, state, detail, now_ms()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Inserts or updates a tracklet (unique per camera, run and tracker id) with all its boxes;
    /// returns its row id. Times are wall-clock ms (stream time when the wall clock is unknown).
    pub fn upsert_tracklet(
        &self,
        run: i64,
        t: &crate::track::Tracklet,
        quality: f32,
        ended: bool,
    ) -> Result<i64> {
        let (w0, w1) = t.wall_span_ms();
        let (start_ms, end_ms) = if w0 > 0 {
            (w0, w1)
        } else {
            (t.start.as_millis() as i64, t.end.as_millis() as i64)
        };
        self.conn
            .prepare_cached("INSERT INTO tracklets (camera, run, track_id, start_ms, end_ms, boxes, quality, ended, track)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(camera, run, track_id) DO UPDATE SET
                   end_ms = excluded.end_ms, boxes = excluded.boxes, quality = excluded.quality,
                   ended = excluded.ended, track = excluded.track
                 RETURNING id").and_then(|mut st| st.query_row(params![t.camera, run, t.id as i64, start_ms, end_ms, t.boxes.len() as i64, quality, ended, pack_boxes(t)], |r| r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// Every tracklet's boxes: (row id, camera, [(stream-time ms, box)]).
    pub fn tracklet_boxes(&self) -> Result<Vec<StoredBoxes>> {
        let mut st = self
            .conn
            .prepare("SELECT id, camera, track FROM tracklets ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                let blob: Option<Vec<u8>> = r.get(2)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    unpack_boxes(blob.as_deref().unwrap_or_default()),
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Stores (replaces) a tracklet's descriptor for `model`.
    pub fn save_descriptor(&self, tracklet: i64, model: &str, v: &[f32]) -> Result<()> {
        self.conn
            .prepare_cached("INSERT INTO descriptors (tracklet, model, dim, vector) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(tracklet, model) DO UPDATE SET dim = excluded.dim, vector = excluded.vector").and_then(|mut st| st.execute(params![tracklet, model, v.len() as i64, to_blob(v)]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Creates identity `id` (ids come from the linker, which owns their numbering).
    pub fn create_identity(&self, id: i64, t_ms: i64) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO identities (id, created_ms, last_seen_ms) VALUES (?1, ?2, ?2)").and_then(|mut st| st.execute(params![id, t_ms]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records (or replaces) the decision for a tracklet and refreshes its identity's last sighting.
    #[allow(clippy::too_many_arguments)]
    pub fn record_sighting(
        &mut self,
        tracklet: i64,
        identity: i64,
        similarity: Option<f32>,
        margin: Option<f32>,
        decision: Decision,
        model: &str,
        seen_ms: i64,
    ) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        })?;
        tx.prepare_cached("INSERT OR IGNORE INTO identities (id, created_ms, last_seen_ms) VALUES (?1, ?2, ?2)").and_then(|mut st| st.execute(params![identity, seen_ms]))
        .and_then(|_| {
            tx.prepare_cached("INSERT INTO sightings (tracklet, identity, similarity, margin, decision, model, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(tracklet) DO UPDATE SET identity = excluded.identity, similarity = excluded.similarity,
                   margin = excluded.margin, decision = excluded.decision, model = excluded.model, created_ms = excluded.created_ms").and_then(|mut st| st.execute(params![tracklet, identity, similarity, margin, decision.as_str(), model, now_ms()]))
        })
        .and_then(|_| {
            tx.prepare_cached("UPDATE identities SET last_seen_ms = MAX(last_seen_ms, ?2) WHERE id = ?1").and_then(|mut st| st.execute(params![identity, seen_ms]))
        })
        .map_err(|e| StoreError::Sqlite { path: self.path.display().to_string(), source: e })?;
        tx.commit().map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        })
    }

    /// Moves every sighting of `absorbed` to `kept`, marks `absorbed` merged, and writes the audit
    /// record — all in one transaction.
    pub fn merge_identities(
        &mut self,
        kept: i64,
        absorbed: i64,
        actor: &str,
        reason: &str,
        similarity: Option<f32>,
    ) -> Result<()> {
        let path = self.path.display().to_string();
        let e = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let t = now_ms();
        // an operator's merge is also a label: both sides as they were
        if let Some(user) = labels::operator_of(actor) {
            let a = labels::tracklets_of(&tx, kept).map_err(e)?;
            let b = labels::tracklets_of(&tx, absorbed).map_err(e)?;
            if !a.is_empty() && !b.is_empty() {
                labels::insert(
                    &tx,
                    &NewLabel {
                        kind: LabelKind::Merge,
                        identity: Some(kept),
                        other: Some(absorbed),
                        tracklet: None,
                        a,
                        b,
                        actor: user.to_string(),
                        note: reason.to_string(),
                    },
                )
                .map_err(e)?;
            }
        }
        tx.execute(
            "UPDATE sightings SET identity = ?1 WHERE identity = ?2",
            params![kept, absorbed],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE identities SET merged_into = ?1, retired_ms = ?2 WHERE id = ?3",
            params![kept, t, absorbed],
        )
        .map_err(e)?;
        tx.execute(
            "UPDATE identities SET last_seen_ms = MAX(last_seen_ms, (SELECT last_seen_ms FROM identities WHERE id = ?2)) WHERE id = ?1",
            params![kept, absorbed],
        )
        .map_err(e)?;
        tx.execute(
            "INSERT INTO audit (kind, kept, other, actor, reason, similarity, created_ms) VALUES ('merge', ?1, ?2, ?3, ?4, ?5, ?6)",
            params![kept, absorbed, actor, reason, similarity, t],
        )
        .map_err(e)?;
        tx.commit().map_err(e)
    }

    /// Moves `tracklets` from `from` to the new identity `to` (operator split), with an audit record.
    pub fn split_identity(
        &mut self,
        from: i64,
        to: i64,
        tracklets: &[i64],
        actor: &str,
        reason: &str,
    ) -> Result<()> {
        let path = self.path.display().to_string();
        let e = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(e)?;
        let t = now_ms();
        tx.execute(
            "INSERT OR IGNORE INTO identities (id, created_ms, last_seen_ms) VALUES (?1, ?2, ?2)",
            params![to, t],
        )
        .map_err(e)?;
        for tr in tracklets {
            let n = tx
                .execute(
                    "UPDATE sightings SET identity = ?1, decision = 'operator' WHERE tracklet = ?2 AND identity = ?3",
                    params![to, tr, from],
                )
                .map_err(e)?;
            if n == 0 {
                return Err(StoreError::Invalid(format!(
                    "tracklet {tr} is not a sighting of identity {from}"
                )));
            }
        }
        tx.execute(
            "INSERT INTO audit (kind, kept, other, actor, reason, similarity, created_ms) VALUES ('split', ?1, ?2, ?3, ?4, NULL, ?5)",
            params![from, to, actor, reason, t],
        )
        .map_err(e)?;
        // an operator's split is also a label: the tracklets left and the ones split off are
        // two people
        if let Some(user) = labels::operator_of(actor) {
            let a = labels::tracklets_of(&tx, from).map_err(e)?;
            if !a.is_empty() {
                labels::insert(
                    &tx,
                    &NewLabel {
                        kind: LabelKind::Split,
                        identity: Some(from),
                        other: Some(to),
                        tracklet: None,
                        a,
                        b: tracklets.to_vec(),
                        actor: user.to_string(),
                        note: reason.to_string(),
                    },
                )
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    pub fn retire_identity(&self, id: i64, t_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE identities SET retired_ms = ?2 WHERE id = ?1 AND retired_ms IS NULL",
                params![id, t_ms],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Largest identity id ever used (the linker continues after it).
    pub fn max_identity(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM identities", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))
    }

    pub fn identities(&self, include_retired: bool) -> Result<Vec<IdentityRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT i.id, i.created_ms, i.last_seen_ms, i.retired_ms, i.merged_into,
                        COUNT(s.tracklet), COALESCE(GROUP_CONCAT(DISTINCT t.camera), '')
                 FROM identities i LEFT JOIN sightings s ON s.identity = i.id LEFT JOIN tracklets t ON t.id = s.tracklet
                 WHERE (?1 OR i.retired_ms IS NULL)
                 GROUP BY i.id ORDER BY i.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![include_retired], identity_row)
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn sightings(&self) -> Result<Vec<SightingRow>> {
        let mut st = self
            .conn
            .prepare(
                &format!("SELECT {SIGHTING_COLUMNS}
                 FROM sightings s JOIN tracklets t ON t.id = s.tracklet ORDER BY t.start_ms, s.tracklet"),
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], sighting_row)
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Every tracklet of a live identity with its descriptor for `model` (gallery rebuild).
    pub fn live_tracklets(&self, model: &str) -> Result<Vec<StoredTracklet>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT t.id, s.identity, t.camera, t.start_ms, t.end_ms, t.quality, d.vector
                 FROM sightings s JOIN tracklets t ON t.id = s.tracklet
                 JOIN identities i ON i.id = s.identity
                 JOIN descriptors d ON d.tracklet = t.id AND d.model = ?1
                 WHERE i.retired_ms IS NULL ORDER BY t.end_ms",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![model], |r| {
                let blob: Vec<u8> = r.get(6)?;
                Ok(StoredTracklet {
                    tracklet: r.get(0)?,
                    identity: r.get(1)?,
                    camera: r.get(2)?,
                    start_ms: r.get(3)?,
                    end_ms: r.get(4)?,
                    quality: r.get(5)?,
                    descriptor: from_blob(&blob),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn audit(&self) -> Result<Vec<MergeRow>> {
        let mut st = self
            .conn
            .prepare("SELECT id, kind, kept, other, actor, reason, similarity, created_ms FROM audit ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(MergeRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    kept: r.get(2)?,
                    other: r.get(3)?,
                    actor: r.get(4)?,
                    reason: r.get(5)?,
                    similarity: r.get(6)?,
                    created_ms: r.get(7)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The identity a tracklet is linked to, if any.
    pub fn identity_of(&self, tracklet: i64) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT identity FROM sightings WHERE tracklet = ?1",
                params![tracklet],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Writes a tracklet's crops that are not stored yet (JPEG bytes in a pack + rows); returns
    /// how many.
    pub fn save_crops(
        &self,
        tracklet: i64,
        camera: &str,
        crops: &[crate::track::Crop],
    ) -> Result<usize> {
        crops::save(self, tracklet, camera, crops)
    }

    /// The first half of [`Store::save_crops`]: writes the crops not stored yet to the pack
    /// and returns their rows, for [`Store::insert_crop_rows`] (one transaction for many).
    pub fn write_crop_files(
        &self,
        tracklet: i64,
        camera: &str,
        crops: &[crate::track::Crop],
    ) -> Result<Vec<crops::CropRow>> {
        crops::write_files(self, tracklet, camera, crops)
    }

    /// Records crops written by [`Store::write_crop_files`], in one transaction.
    pub fn insert_crop_rows(&self, rows: &[crops::CropRow]) -> Result<()> {
        crops::insert_rows(self, rows)
    }

    /// How many crops were stored after `since_ms` (scheduled re-tuning's "new footage").
    pub fn crops_since(&self, since_ms: i64) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM crops WHERE created_ms > ?1",
                [since_ms],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.err(e))
    }

    /// Every ended tracklet that has crops: (row id, camera, start ms, end ms), oldest first.
    pub fn tracklets_with_crops(&self) -> Result<Vec<(i64, String, i64, i64)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT t.id, t.camera, t.start_ms, t.end_ms FROM tracklets t
                 WHERE t.ended = 1 AND EXISTS (SELECT 1 FROM crops c WHERE c.tracklet = t.id)
                 ORDER BY t.start_ms, t.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Where the crops of a tracklet are, and their quality, in order (for re-embedding after a
    /// model change, and for re-tuning).
    pub fn crops_of(&self, tracklet: i64) -> Result<Vec<(CropData, f32)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT path, pack_offset, bytes, quality FROM crops WHERE tracklet = ?1 ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![tracklet], |r| {
                Ok((CropData::from_row(r, 0)?, r.get(3)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Deletes crops older than the retention age and, oldest first, beyond the disk budget.
    pub fn enforce_crop_retention(&self, r: &CropRetention) -> Result<crops::RetentionReport> {
        crops::enforce(self, r)
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}

#[cfg(test)]
pub(crate) mod tests;
