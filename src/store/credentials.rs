//! Named camera credentials (`DATA/credentials.db`, SQLite, mode 0600): a user name and password
//! an admin registers once, that cameras refer to by name (`credential = "gate"`). Values are
//! read back only to hand them to a camera; the API lists names, never values.
//!
//! The password must be sent to the camera as it is, so it is stored as it is: the file's mode
//! and the data directory's (0700) are what protect it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::{Result, StoreError, now_ms};
use crate::config::secrets::{Credential, CredentialSource};

pub struct CredentialStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// A credential as listed: its name and whether it has a user name, never the values.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialInfo {
    pub name: String,
    pub has_username: bool,
    pub updated_ms: i64,
    pub updated_by: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS credentials (
    name TEXT PRIMARY KEY, username TEXT, password TEXT NOT NULL,
    updated_ms INTEGER NOT NULL, updated_by TEXT NOT NULL);
";

/// Longest user name or password kept.
const MAX_VALUE_BYTES: usize = 1024;

impl CredentialStore {
    /// Opens (creating if needed) `<data_dir>/credentials.db`.
    pub fn open(data_dir: &Path) -> Result<CredentialStore> {
        super::private::private_dir(data_dir)
            .map_err(|e| StoreError::Io(data_dir.display().to_string(), e))?;
        let path = data_dir.join("credentials.db");
        super::private::private_db(&path)
            .map_err(|e| StoreError::Io(path.display().to_string(), e))?;
        let sql = |e| StoreError::Sqlite {
            path: path.display().to_string(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(CredentialStore {
            conn: Mutex::new(conn),
            path,
        })
    }

    fn err(&self, e: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers or replaces `name`; `Ok(true)` when it is new.
    pub fn put(&self, name: &str, cred: &Credential, by: &str) -> Result<bool> {
        crate::config::secrets::check_id(name)
            .map_err(|m| StoreError::Invalid(format!("credential name: {m}")))?;
        if let Some(u) = &cred.username {
            crate::config::secrets::check_text(u, crate::config::secrets::MAX_NAME_CHARS)
                .map_err(|m| StoreError::Invalid(format!("username: {m}")))?;
        }
        if cred.password.is_empty() || cred.password.len() > MAX_VALUE_BYTES {
            return Err(StoreError::Invalid(format!(
                "password: expected 1 to {MAX_VALUE_BYTES} bytes"
            )));
        }
        if cred.password.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid(
                "password: NUL and line breaks cannot be sent to a camera".into(),
            ));
        }
        let c = self.conn();
        let existed: bool = c
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM credentials WHERE name = ?1)",
                params![name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        c.execute(
            "INSERT INTO credentials (name, username, password, updated_ms, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET username = ?2, password = ?3, updated_ms = ?4, updated_by = ?5",
            params![name, cred.username, cred.password, now_ms(), by],
        )
        .map_err(|e| self.err(e))?;
        Ok(!existed)
    }

    /// Forgets `name`; `Ok(false)` when there was none.
    pub fn remove(&self, name: &str) -> Result<bool> {
        Ok(self
            .conn()
            .execute("DELETE FROM credentials WHERE name = ?1", params![name])
            .map_err(|e| self.err(e))?
            > 0)
    }

    /// Every credential's name (never the values), by name.
    pub fn list(&self) -> Result<Vec<CredentialInfo>> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT name, username IS NOT NULL, updated_ms, updated_by FROM credentials ORDER BY name",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(CredentialInfo {
                    name: r.get(0)?,
                    has_username: r.get(1)?,
                    updated_ms: r.get(2)?,
                    updated_by: r.get(3)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn exists(&self, name: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM credentials WHERE name = ?1)",
                params![name],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// The values of `name`, for a camera about to connect.
    pub fn get(&self, name: &str) -> Result<Option<Credential>> {
        self.conn()
            .query_row(
                "SELECT username, password FROM credentials WHERE name = ?1",
                params![name],
                |r| {
                    Ok(Credential {
                        username: r.get(0)?,
                        password: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }
}

impl CredentialSource for CredentialStore {
    fn credential(&self, name: &str) -> Option<Credential> {
        match self.get(name) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("cannot read the credential store: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn credentials_are_kept_listed_by_name_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let s = CredentialStore::open(&data).unwrap();
        let c = Credential {
            username: Some("viewer".into()),
            password: "hunter2secret".into(),
        };
        assert!(s.put("gate", &c, "ada").unwrap());
        assert!(!s.put("gate", &c, "ada").unwrap(), "replaced, not new");
        assert_eq!(s.get("gate").unwrap(), Some(c.clone()));
        assert_eq!(s.credential("gate"), Some(c));
        assert_eq!(s.credential("nope"), None);
        let listed = serde_json::to_string(&s.list().unwrap()).unwrap();
        assert!(
            listed.contains("gate") && !listed.contains("hunter2") && !listed.contains("viewer"),
            "{listed}"
        );
        assert!(
            s.put(
                "bad name",
                &Credential {
                    username: None,
                    password: "x".into()
                },
                "ada"
            )
            .is_err()
        );
        assert!(
            s.put(
                "x",
                &Credential {
                    username: None,
                    password: String::new()
                },
                "ada"
            )
            .is_err()
        );
        assert!(s.remove("gate").unwrap());
        assert!(!s.remove("gate").unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("credentials.db")), 0o600);
    }
}
