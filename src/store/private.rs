//! Files only the daemon's user may read: the data directory is mode 0700, its databases and
//! person crops 0600 (password and token hashes, camera credentials, pictures of people).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data directory and the directories in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of databases and crops.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700; an existing directory owned by this
/// user that others may enter is tightened to 0700 (a shared directory such as `/tmp`, with
/// its sticky bit, or one owned by someone else, is left as it is).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o7777;
            // SAFETY: geteuid has no preconditions and cannot fail
            let me = unsafe { libc::geteuid() };
            if m.is_dir() && mode & 0o077 != 0 && mode & 0o1000 == 0 && m.uid() == me {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
                tracing::info!(dir = %dir.display(), old = format!("{mode:o}"), "data directory made private (mode 700)");
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// Makes the SQLite database at `path` mode 0600 before it is opened: created empty with that
/// mode when missing (SQLite gives its `-wal` and `-shm` files the database's mode), tightened
/// when it exists, with its `-wal` and `-shm` files.
pub fn private_db(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    for suffix in ["", "-wal", "-shm"] {
        let p = path.with_file_name(format!(
            "{}{suffix}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
        ));
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(FILE_MODE))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` with mode 0600 (replacing what was there).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)?;
    // an existing file keeps its mode through open: tighten it
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_and_files_are_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/data");
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        // an existing, open directory is tightened
        let open = t.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o700);
        let db = d.join("x.db");
        std::fs::write(&db, b"").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_db(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let fresh = d.join("fresh.db");
        private_db(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o600);
        let f = d.join("crop.jpg");
        write_private(&f, b"jpeg").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"jpeg");
    }
}
