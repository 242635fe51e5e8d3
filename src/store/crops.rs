//! Person crops on disk: `<data_dir>/crops/<camera>/<tracklet>/<seq>.jpg` (directories 0700,
//! files 0600), written atomically, and deleted by age and by disk budget (oldest first). Crops of
//! tracklets an operator labelled are kept: a label is worth more than the disk it takes, and
//! training and the promotion gate need its pictures.

use std::path::PathBuf;

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store, StoreError, now_ms};

/// How long crops are kept and how much disk they may use.
#[derive(Debug, Clone, Copy)]
pub struct CropRetention {
    /// Crops older than this are deleted (None: no age limit).
    pub max_age_ms: Option<i64>,
    /// Oldest crops are deleted while the total exceeds this (None: no budget).
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    pub deleted: usize,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
}

pub(super) fn save(
    store: &Store,
    tracklet: i64,
    camera: &str,
    crops: &[crate::track::Crop],
) -> Result<usize> {
    let rows = write_files(store, tracklet, camera, crops)?;
    insert_rows(store, &rows)?;
    Ok(rows.len())
}

/// A crop picture written to its file, waiting for its row.
#[derive(Debug, Clone)]
pub struct CropRow {
    tracklet: i64,
    seq: u64,
    path: PathBuf,
    quality: f32,
    bytes: usize,
}

/// Writes the files of the crops of `tracklet` that are not stored yet; their rows are for
/// [`insert_rows`].
pub(super) fn write_files(
    store: &Store,
    tracklet: i64,
    camera: &str,
    crops: &[crate::track::Crop],
) -> Result<Vec<CropRow>> {
    let dir: PathBuf = store
        .data_dir
        .join("crops")
        .join(camera)
        .join(tracklet.to_string());
    let mut rows = Vec::new();
    for c in crops {
        let exists: bool = store
            .conn()
            .prepare_cached("SELECT EXISTS(SELECT 1 FROM crops WHERE tracklet = ?1 AND seq = ?2)")
            .and_then(|mut st| st.query_row(params![tracklet, c.seq as i64], |r| r.get(0)))
            .map_err(|e| store.err(e))?;
        if exists {
            continue;
        }
        if rows.is_empty() {
            super::private::private_dir(&dir)
                .map_err(|e| StoreError::Io(dir.display().to_string(), e))?;
        }
        let path = dir.join(format!("{:08}.jpg", c.seq));
        let tmp = dir.join(format!(".{:08}.jpg.part", c.seq));
        // a crop that arrived as JPEG (from an edge) is kept as it came
        let encoded;
        let bytes: &[u8] = match &c.jpeg {
            Some(j) => j,
            None => {
                let mut b = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut b, 90)
                    .encode_image(c.image.as_ref())
                    .map_err(|e| {
                        StoreError::Invalid(format!(
                            "cannot encode a crop of tracklet {tracklet}: {e}"
                        ))
                    })?;
                encoded = b;
                &encoded
            }
        };
        // pictures of people: readable by the daemon's user only
        super::private::write_private(&tmp, bytes)
            .map_err(|e| StoreError::Io(tmp.display().to_string(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        rows.push(CropRow {
            tracklet,
            seq: c.seq,
            path,
            quality: c.quality,
            bytes: bytes.len(),
        });
    }
    Ok(rows)
}

/// Records written crop files, in one transaction (a row that exists already is kept).
pub(super) fn insert_rows(store: &Store, rows: &[CropRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let tx = store
        .conn()
        .unchecked_transaction()
        .map_err(|e| store.err(e))?;
    {
        let mut st = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO crops (tracklet, seq, path, quality, bytes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(|e| store.err(e))?;
        let now = now_ms();
        for r in rows {
            st.execute(params![
                r.tracklet,
                r.seq as i64,
                r.path.display().to_string(),
                r.quality,
                r.bytes as i64,
                now
            ])
            .map_err(|e| store.err(e))?;
        }
    }
    tx.commit().map_err(|e| store.err(e))
}

pub(super) fn enforce(store: &Store, r: &CropRetention) -> Result<RetentionReport> {
    let mut rep = RetentionReport::default();
    let mut victims: Vec<(i64, String, i64)> = Vec::new();
    if let Some(age) = r.max_age_ms {
        let mut st = store
            .conn()
            .prepare("SELECT id, path, bytes FROM crops WHERE created_ms < ?1 AND tracklet NOT IN (SELECT tracklet FROM label_tracklets)")
            .map_err(|e| store.err(e))?;
        let rows = st
            .query_map(params![now_ms() - age], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(|e| store.err(e))?;
        for row in rows {
            victims.push(row.map_err(|e| store.err(e))?);
        }
    }
    let total: i64 = store
        .conn()
        .query_row("SELECT COALESCE(SUM(bytes), 0) FROM crops", [], |r| {
            r.get(0)
        })
        .map_err(|e| store.err(e))?;
    let mut remaining = total as u64 - victims.iter().map(|v| v.2 as u64).sum::<u64>();
    if let Some(budget) = r.max_bytes
        && remaining > budget
    {
        let mut st = store
            .conn()
            .prepare("SELECT id, path, bytes FROM crops WHERE tracklet NOT IN (SELECT tracklet FROM label_tracklets) ORDER BY created_ms, id")
            .map_err(|e| store.err(e))?;
        let rows = st
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(|e| store.err(e))?;
        for row in rows {
            let row: (i64, String, i64) = row.map_err(|e| store.err(e))?;
            if remaining <= budget {
                break;
            }
            if victims.iter().any(|v| v.0 == row.0) {
                continue;
            }
            remaining -= row.2 as u64;
            victims.push(row);
        }
    }
    for (id, path, bytes) in victims {
        // the row goes first: a crash in between leaves an orphan file, never a row without a file
        store
            .conn()
            .execute("DELETE FROM crops WHERE id = ?1", params![id])
            .map_err(|e| store.err(e))?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(path, e)),
        }
        rep.deleted += 1;
        rep.freed_bytes += bytes as u64;
    }
    rep.remaining_bytes = remaining;
    Ok(rep)
}
