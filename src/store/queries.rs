//! Read queries for the HTTP API: filtered identity lists, one identity's sightings and crops,
//! the cameras the store knows. Run on the API's own read connection (WAL lets it read while the
//! link stage writes).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{
    IdentityRow, Result, SIGHTING_COLUMNS, SightingRow, Store, identity_row, sighting_row,
};

/// Which identities to list.
#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    /// Only this identity.
    pub id: Option<i64>,
    /// Only identities seen by this camera.
    pub camera: Option<String>,
    /// Only identities with a sighting ending at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only identities with a sighting starting at or before this time.
    pub until_ms: Option<i64>,
    pub include_retired: bool,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CropRef {
    pub id: i64,
    pub tracklet: i64,
    pub camera: String,
    pub quality: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraRow {
    pub id: String,
    pub name: String,
    /// Credentials already redacted when the camera was recorded.
    pub url: String,
    pub state: Option<String>,
    pub state_detail: Option<String>,
    pub state_ms: Option<i64>,
}

impl Store {
    /// Identities matching `f`, newest last-seen first, with the total before paging.
    pub fn identities_filtered(&self, f: &IdentityFilter) -> Result<(Vec<IdentityRow>, usize)> {
        let matching = "SELECT i.id, i.created_ms, i.last_seen_ms, i.retired_ms, i.merged_into,
                    COUNT(s.tracklet), COALESCE(GROUP_CONCAT(DISTINCT t.camera), '')
             FROM identities i LEFT JOIN sightings s ON s.identity = i.id
             LEFT JOIN tracklets t ON t.id = s.tracklet
             WHERE (?1 OR (i.retired_ms IS NULL AND i.merged_into IS NULL))
               AND (?5 IS NULL OR i.id = ?5)
             GROUP BY i.id
             HAVING (?2 IS NULL OR SUM(t.camera = ?2) > 0)
                AND (?3 IS NULL OR MAX(t.end_ms) >= ?3)
                AND (?4 IS NULL OR MIN(t.start_ms) <= ?4)";
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM ({matching})"),
                params![f.include_retired, f.camera, f.since_ms, f.until_ms, f.id],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let sql = format!("{matching} ORDER BY i.last_seen_ms DESC, i.id DESC LIMIT ?6 OFFSET ?7");
        let mut st = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let limit = i64::try_from(f.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(f.offset).unwrap_or(i64::MAX);
        let rows = st
            .query_map(
                params![
                    f.include_retired,
                    f.camera,
                    f.since_ms,
                    f.until_ms,
                    f.id,
                    limit,
                    offset
                ],
                identity_row,
            )
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok((rows, total as usize))
    }

    pub fn identity(&self, id: i64) -> Result<Option<IdentityRow>> {
        let f = IdentityFilter {
            id: Some(id),
            include_retired: true,
            limit: 1,
            ..Default::default()
        };
        Ok(self.identities_filtered(&f)?.0.into_iter().next())
    }

    /// One identity's sightings, oldest first.
    pub fn sightings_of(&self, identity: i64) -> Result<Vec<SightingRow>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {SIGHTING_COLUMNS} FROM sightings s JOIN tracklets t ON t.id = s.tracklet
                     WHERE s.identity = ?1 ORDER BY t.start_ms, s.tracklet"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![identity], sighting_row)
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The best `per_tracklet` crops of each of an identity's tracklets.
    pub fn crops_of_identity(&self, identity: i64, per_tracklet: usize) -> Result<Vec<CropRef>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT c.id, c.tracklet, t.camera, c.quality FROM crops c
                 JOIN sightings s ON s.tracklet = c.tracklet JOIN tracklets t ON t.id = c.tracklet
                 WHERE s.identity = ?1 ORDER BY t.start_ms, c.tracklet, c.quality DESC",
            )
            .map_err(|e| self.err(e))?;
        let rows: Vec<CropRef> = st
            .query_map(params![identity], |r| {
                Ok(CropRef {
                    id: r.get(0)?,
                    tracklet: r.get(1)?,
                    camera: r.get(2)?,
                    quality: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        let mut last = (-1, 0usize);
        for c in rows {
            if c.tracklet != last.0 {
                last = (c.tracklet, 0);
            }
            if last.1 < per_tracklet {
                last.1 += 1;
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Where a stored crop's picture is.
    pub fn crop_data(&self, id: i64) -> Result<Option<super::CropData>> {
        self.conn
            .query_row(
                "SELECT path, pack_offset, bytes FROM crops WHERE id = ?1",
                params![id],
                |r| super::CropData::from_row(r, 0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The camera a tracklet row belongs to.
    pub fn tracklet_camera(&self, tracklet: i64) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT camera FROM tracklets WHERE id = ?1",
                params![tracklet],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every camera the store has recorded (including removed ones), by id.
    pub fn cameras(&self) -> Result<Vec<CameraRow>> {
        let mut st = self
            .conn
            .prepare("SELECT id, name, url, state, state_detail, state_ms FROM cameras ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(CameraRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    url: r.get(2)?,
                    state: r.get(3)?,
                    state_detail: r.get(4)?,
                    state_ms: r.get(5)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}
