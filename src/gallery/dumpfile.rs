//! Files of an index dump: a `manifest.json` naming the index kind, its parameters and a SHA-256
//! of every file, little-endian vector files, and the directory swap that makes a dump atomic.
//!
//! A dump is written into `<dir>.tmp`, synced, and renamed over `<dir>` (the previous dump is
//! kept as `<dir>.old` until the rename is done), so a crash while dumping leaves either the old
//! or the new dump, never half of one. Checksums are verified before any file is parsed: hnsw_rs
//! asserts (panics) on malformed files, so a damaged dump must be caught first.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{GalleryError, IndexKind};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT: u32 = 1;
const VECTORS_MAGIC: &[u8; 8] = b"CCGVEC01";

/// `manifest.json` of a dump.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub kind: IndexKind,
    pub dim: usize,
    /// Live entries.
    pub entries: usize,
    pub files: Vec<FileEntry>,
    /// Kind-specific parameters (HNSW: m, ef_construction, …).
    #[serde(default)]
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

pub fn sha256_file(path: &Path) -> Result<(u64, String), GalleryError> {
    let mut f = BufReader::new(File::open(path).map_err(|e| GalleryError::io(path, e))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let r = f.read(&mut buf).map_err(|e| GalleryError::io(path, e))?;
        if r == 0 {
            break;
        }
        h.update(&buf[..r]);
        n += r as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((n, hex))
}

impl Manifest {
    /// A manifest for `files` (names inside `dir`), hashing each.
    pub fn new(
        dir: &Path,
        kind: IndexKind,
        dim: usize,
        entries: usize,
        files: &[&str],
        params: serde_json::Value,
    ) -> Result<Manifest, GalleryError> {
        let files = files
            .iter()
            .map(|name| {
                let (bytes, sha256) = sha256_file(&dir.join(name))?;
                Ok(FileEntry {
                    name: name.to_string(),
                    bytes,
                    sha256,
                })
            })
            .collect::<Result<_, GalleryError>>()?;
        Ok(Manifest {
            format: FORMAT,
            kind,
            dim,
            entries,
            files,
            params,
        })
    }

    pub fn write(&self, dir: &Path) -> Result<(), GalleryError> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| GalleryError::dump(&path, e.to_string()))?;
        write_synced(&path, text.as_bytes())
    }

    /// Reads `dir/manifest.json` and checks every listed file's size and checksum.
    pub fn read_verified(dir: &Path) -> Result<Manifest, GalleryError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| GalleryError::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| GalleryError::dump(&path, format!("unreadable manifest: {e}")))?;
        if m.format != FORMAT {
            return Err(GalleryError::dump(
                &path,
                format!("format {} (this build reads {FORMAT})", m.format),
            ));
        }
        for f in &m.files {
            let p = dir.join(&f.name);
            let (bytes, sha) = sha256_file(&p)?;
            if bytes != f.bytes || sha != f.sha256 {
                return Err(GalleryError::dump(
                    &p,
                    "checksum mismatch: the file is damaged or from another dump",
                ));
            }
        }
        Ok(m)
    }
}

pub fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), GalleryError> {
    let mut f = File::create(path).map_err(|e| GalleryError::io(path, e))?;
    f.write_all(bytes).map_err(|e| GalleryError::io(path, e))?;
    f.sync_all().map_err(|e| GalleryError::io(path, e))
}

fn sync_file(path: &Path) -> Result<(), GalleryError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| GalleryError::io(path, e))
}

/// Writes `(id, vector)` entries: magic, dim, count, ids, then the vectors (all little-endian).
pub fn write_vectors<'a>(
    path: &Path,
    dim: usize,
    entries: impl ExactSizeIterator<Item = (u64, &'a [f32])> + Clone,
) -> Result<(), GalleryError> {
    let io = |e| GalleryError::io(path, e);
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    w.write_all(VECTORS_MAGIC).map_err(io)?;
    w.write_all(&(dim as u64).to_le_bytes()).map_err(io)?;
    w.write_all(&(entries.len() as u64).to_le_bytes())
        .map_err(io)?;
    for (id, _) in entries.clone() {
        w.write_all(&id.to_le_bytes()).map_err(io)?;
    }
    for (_, v) in entries {
        if v.len() != dim {
            return Err(GalleryError::dump(path, "vector of the wrong dimension"));
        }
        for x in v {
            w.write_all(&x.to_le_bytes()).map_err(io)?;
        }
    }
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)
}

/// Reads a file written by [`write_vectors`]: `(dim, ids, row-major vectors)`.
pub fn read_vectors(path: &Path) -> Result<(usize, Vec<u64>, Vec<f32>), GalleryError> {
    let bytes = std::fs::read(path).map_err(|e| GalleryError::io(path, e))?;
    let bad = |m: &str| GalleryError::dump(path, m.to_string());
    if bytes.len() < 24 || &bytes[..8] != VECTORS_MAGIC {
        return Err(bad("not a gallery vector file"));
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap_or([0; 8]));
    let dim = word(8) as usize;
    let n = word(16) as usize;
    let need = n
        .checked_mul(8)
        .and_then(|ids| n.checked_mul(dim)?.checked_mul(4)?.checked_add(ids))
        .and_then(|b| b.checked_add(24));
    if need != Some(bytes.len()) {
        return Err(bad("truncated or oversized vector file"));
    }
    let ids = (0..n).map(|i| word(24 + 8 * i)).collect();
    let base = 24 + 8 * n;
    let data = bytes[base..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((dim, ids, data))
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Writes a dump directory atomically: `fill` writes into a fresh `<dir>.tmp`, then it replaces
/// `dir` (see the module docs).
pub fn replace_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), GalleryError>,
) -> Result<(), GalleryError> {
    let tmp = sibling(dir, ".tmp");
    let old = sibling(dir, ".old");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| GalleryError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| GalleryError::io(&tmp, e))?;
    fill(&tmp)?;
    for entry in std::fs::read_dir(&tmp).map_err(|e| GalleryError::io(&tmp, e))? {
        let p = entry.map_err(|e| GalleryError::io(&tmp, e))?.path();
        if p.is_file() {
            sync_file(&p)?;
        }
    }
    if dir.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| GalleryError::io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| GalleryError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| GalleryError::io(dir, e))?;
    if let Some(parent) = dir.parent() {
        // make the renames durable
        let _ = File::open(parent).and_then(|f| f.sync_all());
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| GalleryError::io(&old, e))?;
    }
    Ok(())
}

/// The directory to load: `dir`, or `<dir>.old` when a crash hit between the two renames of
/// [`replace_dir`].
pub fn existing_dump(dir: &Path) -> Option<PathBuf> {
    if dir.join(MANIFEST).is_file() {
        return Some(dir.to_path_buf());
    }
    let old = sibling(dir, ".old");
    old.join(MANIFEST).is_file().then_some(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_damage_is_caught() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.bin");
        let a = [1.0f32, 2.0];
        let b = [3.0f32, -4.5];
        let entries = vec![(7u64, &a[..]), (9u64, &b[..])];
        write_vectors(&p, 2, entries.into_iter()).unwrap();
        let (dim, ids, data) = read_vectors(&p).unwrap();
        assert_eq!((dim, ids, data), (2, vec![7, 9], vec![1.0, 2.0, 3.0, -4.5]));
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.pop();
        std::fs::write(&p, &bytes).unwrap();
        assert!(read_vectors(&p).is_err());
    }

    #[test]
    fn replace_dir_swaps_and_manifest_checks_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("index");
        for round in 0..2u8 {
            replace_dir(&dir, |tmp| {
                write_synced(&tmp.join("x"), &[round])?;
                Manifest::new(tmp, IndexKind::Exact, 2, 0, &["x"], serde_json::Value::Null)?
                    .write(tmp)
            })
            .unwrap();
            assert_eq!(std::fs::read(dir.join("x")).unwrap(), vec![round]);
        }
        assert!(!sibling(&dir, ".old").exists() && !sibling(&dir, ".tmp").exists());
        Manifest::read_verified(&dir).unwrap();
        std::fs::write(dir.join("x"), [9u8]).unwrap();
        let e = Manifest::read_verified(&dir).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // a crash between the renames leaves only <dir>.old: it is found
        std::fs::rename(&dir, sibling(&dir, ".old")).unwrap();
        assert_eq!(existing_dump(&dir), Some(sibling(&dir, ".old")));
    }
}
