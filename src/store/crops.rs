//! Person crops on disk. A crop's JPEG is appended to a pack file, `<data_dir>/crops/packs/
//! <ms>-<random>.pack` (directory 0700, files 0600), and its row names the pack, the offset and the
//! length. Creating a file per crop cost the kernel about 0.2–0.35 ms of CPU each (ext4 inode and
//! directory work; 3 200 crops/s at 1 000 cameras took most of a core), appending one costs a few
//! µs (docs/PERFORMANCE.md, "One core's capacity"). Crops stored by older versions, a JPEG file
//! each (`<data_dir>/crops/<camera>/<tracklet>/<seq>.jpg`, row without an offset), are read as
//! before.
//!
//! Each [`Store`] appends to a pack of its own (a new one per store and after 32 MiB), so two
//! writers never share one; the writer holds an exclusive `flock` on it, and retention leaves a
//! locked pack alone, in this process or another. Bytes are written before their
//! row: a crash leaves at most unreferenced bytes, which retention drops with their pack.
//! Retention deletes crops by age and by disk budget (oldest first), deletes a pack once no row
//! names it, and moves the remaining crops of a pack that is less than half alive into the
//! current pack (crops of labelled tracklets, which are kept, would otherwise hold whole packs).
//! Crops of tracklets an operator labelled are kept: a label is worth more than the disk it
//! takes, and training and the promotion gate need its pictures.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rusqlite::params;
use serde::Serialize;

use super::{Result, Store, StoreError, now_ms};

/// A pack is closed and a new one started past this size.
const PACK_BYTES: u64 = 32 << 20;

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
    /// Pack files deleted (no crop left in them).
    pub packs_deleted: usize,
    /// Crops moved out of packs that were less than half alive.
    pub crops_moved: usize,
}

/// Where a stored crop's JPEG is: a file of its own (crops of older versions) or `len` bytes
/// at `offset` of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CropData {
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub len: u64,
}

impl CropData {
    /// A crop row's place, from its `path, pack_offset, bytes` columns, the first at `first`.
    pub fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<CropData> {
        Ok(CropData {
            path: PathBuf::from(row.get::<_, String>(first)?),
            offset: row
                .get::<_, Option<i64>>(first + 1)?
                .map(|o| o.max(0) as u64),
            len: row.get::<_, i64>(first + 2)?.max(0) as u64,
        })
    }

    /// The JPEG's bytes.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        match self.offset {
            None => std::fs::read(&self.path),
            Some(offset) => {
                let mut f = File::open(&self.path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut b = vec![0; self.len as usize];
                f.read_exact(&mut b)?;
                Ok(b)
            }
        }
    }

    /// The picture.
    pub fn image(&self) -> std::result::Result<image::DynamicImage, String> {
        let b = self.read().map_err(|e| e.to_string())?;
        image::load_from_memory_with_format(&b, image::ImageFormat::Jpeg).map_err(|e| e.to_string())
    }

    /// Whether its bytes are on disk: the file exists and, in a pack, the range is there and
    /// starts like a JPEG (a range restored around it may have left a hole of zeros).
    pub fn present(&self) -> bool {
        match self.offset {
            None => self.path.exists(),
            Some(_) => self.read().is_ok_and(|b| b.starts_with(&[0xff, 0xd8])),
        }
    }
}

impl std::fmt::Display for CropData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            None => write!(f, "{}", self.path.display()),
            Some(o) => write!(f, "{} (bytes {o}..{})", self.path.display(), o + self.len),
        }
    }
}

/// The pack a store appends to.
pub(super) struct Pack {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Pack {
    fn open(dir: &Path) -> std::io::Result<Pack> {
        use std::hash::{BuildHasher, Hasher};
        use std::os::unix::fs::OpenOptionsExt;
        super::private::private_dir(dir)?;
        // unique across processes and machines (a standby core restores another core's rows)
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let name = format!("{:013}-{:016x}", now_ms(), h.finish());
        let (part, path) = (
            dir.join(format!("{name}.part")),
            dir.join(format!("{name}.pack")),
        );
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(super::private::FILE_MODE)
            .open(&part)?;
        // locked before it has the name retention looks for
        if !try_lock(&file) {
            return Err(std::io::Error::other("cannot lock a new crop pack"));
        }
        std::fs::rename(&part, &path)?;
        Ok(Pack { file, path, len: 0 })
    }

    /// Appends `bytes`; returns their offset.
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<u64> {
        let at = self.len;
        if let Err(e) = self.file.write_all(bytes) {
            // a part may have been written: go on after it
            self.len = self.file.metadata().map(|m| m.len()).unwrap_or(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        Ok(at)
    }
}

/// Takes `file`'s exclusive lock if nobody holds it (released when the file is closed).
fn try_lock(file: &File) -> bool {
    // SAFETY: flock on a file descriptor this `File` owns; no memory is involved
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn packs_dir(store: &Store) -> PathBuf {
    store.data_dir.join("crops").join("packs")
}

/// Appends `bytes` to the store's pack (a new one when there is none or it is full).
fn append(store: &Store, bytes: &[u8]) -> Result<(PathBuf, u64)> {
    let mut pack = store.pack.borrow_mut();
    if pack
        .as_ref()
        .is_none_or(|p| p.len > 0 && p.len + bytes.len() as u64 > PACK_BYTES)
    {
        let dir = packs_dir(store);
        *pack = None;
        *pack = Some(Pack::open(&dir).map_err(|e| StoreError::Io(dir.display().to_string(), e))?);
    }
    let p = pack.as_mut().expect("opened above");
    let at = p
        .append(bytes)
        .map_err(|e| StoreError::Io(p.path.display().to_string(), e))?;
    Ok((p.path.clone(), at))
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

/// A crop picture written to its pack, waiting for its row.
#[derive(Debug, Clone)]
pub struct CropRow {
    tracklet: i64,
    seq: u64,
    path: PathBuf,
    offset: u64,
    quality: f32,
    bytes: usize,
}

/// Writes the crops of `tracklet` that are not stored yet to the store's pack; their rows are
/// for [`insert_rows`].
pub(super) fn write_files(
    store: &Store,
    tracklet: i64,
    camera: &str,
    crops: &[crate::track::Crop],
) -> Result<Vec<CropRow>> {
    if crops.is_empty() {
        return Ok(Vec::new());
    }
    let stored: HashSet<u64> = store
        .conn()
        .prepare_cached("SELECT seq FROM crops WHERE tracklet = ?1")
        .and_then(|mut st| {
            st.query_map(params![tracklet], |r| r.get::<_, i64>(0).map(|s| s as u64))?
                .collect()
        })
        .map_err(|e| store.err(e))?;
    let mut rows = Vec::new();
    for c in crops {
        if stored.contains(&c.seq) || rows.iter().any(|r: &CropRow| r.seq == c.seq) {
            continue;
        }
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
                            "cannot encode a crop of tracklet {tracklet} (camera {camera}): {e}"
                        ))
                    })?;
                encoded = b;
                &encoded
            }
        };
        let (path, offset) = append(store, bytes)?;
        rows.push(CropRow {
            tracklet,
            seq: c.seq,
            path,
            offset,
            quality: c.quality,
            bytes: bytes.len(),
        });
    }
    Ok(rows)
}

/// Records written crops, in one transaction (a row that exists already is kept).
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
                "INSERT OR IGNORE INTO crops (tracklet, seq, path, pack_offset, quality, bytes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(|e| store.err(e))?;
        let now = now_ms();
        for r in rows {
            st.execute(params![
                r.tracklet,
                r.seq as i64,
                r.path.display().to_string(),
                r.offset as i64,
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
    // (id, path, pack offset, bytes)
    type Victim = (i64, String, Option<i64>, i64);
    let victim = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Victim> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    };
    let mut victims: Vec<Victim> = Vec::new();
    if let Some(age) = r.max_age_ms {
        let mut st = store
            .conn()
            .prepare("SELECT id, path, pack_offset, bytes FROM crops WHERE created_ms < ?1 AND tracklet NOT IN (SELECT tracklet FROM label_tracklets)")
            .map_err(|e| store.err(e))?;
        let rows = st
            .query_map(params![now_ms() - age], victim)
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
    let mut remaining = total as u64 - victims.iter().map(|v| v.3 as u64).sum::<u64>();
    if let Some(budget) = r.max_bytes
        && remaining > budget
    {
        let chosen: HashSet<i64> = victims.iter().map(|v| v.0).collect();
        let mut st = store
            .conn()
            .prepare("SELECT id, path, pack_offset, bytes FROM crops WHERE tracklet NOT IN (SELECT tracklet FROM label_tracklets) ORDER BY created_ms, id")
            .map_err(|e| store.err(e))?;
        let rows = st.query_map([], victim).map_err(|e| store.err(e))?;
        for row in rows {
            let row = row.map_err(|e| store.err(e))?;
            if remaining <= budget {
                break;
            }
            if chosen.contains(&row.0) {
                continue;
            }
            remaining -= row.3 as u64;
            victims.push(row);
        }
    }
    // rows go first (one transaction): a crash before the files leaves unreferenced bytes,
    // never a row without its picture
    let mut packs = BTreeSet::new();
    {
        let tx = store
            .conn()
            .unchecked_transaction()
            .map_err(|e| store.err(e))?;
        {
            let mut st = tx
                .prepare_cached("DELETE FROM crops WHERE id = ?1")
                .map_err(|e| store.err(e))?;
            for (id, path, offset, bytes) in &victims {
                st.execute(params![id]).map_err(|e| store.err(e))?;
                if offset.is_some() {
                    packs.insert(PathBuf::from(path));
                }
                rep.deleted += 1;
                rep.freed_bytes += *bytes as u64;
            }
        }
        tx.commit().map_err(|e| store.err(e))?;
    }
    for (_, path, offset, _) in &victims {
        if offset.is_none() {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(path.clone(), e)),
            }
        }
    }
    // packs on disk that no row names (left by a crash, or emptied by an earlier pass)
    if let Ok(entries) = std::fs::read_dir(packs_dir(store)) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pack" || x == "part") {
                packs.insert(p);
            }
        }
    }
    for pack in packs {
        tidy_pack(store, &pack, &mut rep)?;
    }
    rep.remaining_bytes = remaining;
    Ok(rep)
}

/// Deletes a pack no row names, or moves the crops of one that is less than half alive into
/// the store's own pack and then deletes it. A pack being written (locked) is left alone.
fn tidy_pack(store: &Store, pack: &Path, rep: &mut RetentionReport) -> Result<()> {
    let name = pack.display().to_string();
    let held = match File::open(pack) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::Io(name, e)),
    };
    if !try_lock(&held) {
        return Ok(());
    }
    let (rows, live): (i64, i64) = store
        .conn()
        .prepare_cached("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM crops WHERE path = ?1")
        .and_then(|mut st| st.query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(|e| store.err(e))?;
    let size = held
        .metadata()
        .map_err(|e| StoreError::Io(name.clone(), e))?
        .len();
    if rows > 0 && (live as u64) * 2 >= size {
        return Ok(());
    }
    if rows > 0 {
        let moved: Vec<(i64, CropData)> = {
            let mut st = store
                .conn()
                .prepare("SELECT id, path, pack_offset, bytes FROM crops WHERE path = ?1")
                .map_err(|e| store.err(e))?;
            st.query_map(params![name], |r| {
                Ok((r.get(0)?, CropData::from_row(r, 1)?))
            })
            .map_err(|e| store.err(e))?
            .collect::<rusqlite::Result<_>>()
            .map_err(|e| store.err(e))?
        };
        let mut to = Vec::new();
        for (id, d) in &moved {
            // a range that cannot be read is left where it is (its pack stays)
            let Ok(bytes) = d.read() else { return Ok(()) };
            to.push((*id, append(store, &bytes)?));
        }
        let tx = store
            .conn()
            .unchecked_transaction()
            .map_err(|e| store.err(e))?;
        {
            let mut st = tx
                .prepare_cached("UPDATE crops SET path = ?2, pack_offset = ?3 WHERE id = ?1")
                .map_err(|e| store.err(e))?;
            for (id, (path, offset)) in &to {
                st.execute(params![id, path.display().to_string(), *offset as i64])
                    .map_err(|e| store.err(e))?;
            }
        }
        tx.commit().map_err(|e| store.err(e))?;
        rep.crops_moved += to.len();
    }
    match std::fs::remove_file(pack) {
        Ok(()) => rep.packs_deleted += 1,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Io(name, e)),
    }
    Ok(())
}
