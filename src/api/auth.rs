//! Users, roles, sessions and API tokens (`DATA/auth.db`, SQLite), and login rate limiting.
//!
//! Passwords are hashed with argon2id; session and API tokens are 256-bit random strings stored as
//! SHA-256 hashes (a leaked database gives neither passwords nor usable tokens). The first admin
//! is created with `crosscam user add`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::store::now_ms;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watches cameras and identities; merges and splits identities.
    Operator,
    /// Adds, changes and removes cameras; sees their health.
    Integrator,
    /// Everything, including models, jobs, users and tokens.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Integrator => "integrator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "integrator" => Some(Role::Integrator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn allows(self, need: Need) -> bool {
        match need {
            Need::Read => true,
            Need::Operate => matches!(self, Role::Operator | Role::Admin),
            Need::Cameras => matches!(self, Role::Integrator | Role::Admin),
            Need::Admin => self == Role::Admin,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an endpoint needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any signed-in user: cameras, identities, timelines, search, events, metrics.
    Read,
    /// Operators and admins: merge, split.
    Operate,
    /// Integrators and admins: add, change, remove cameras.
    Cameras,
    /// Admins: models, jobs, users, tokens.
    Admin,
}

impl Need {
    /// The roles allowed, for the OpenAPI document.
    pub fn roles(self) -> Vec<Role> {
        [Role::Operator, Role::Integrator, Role::Admin]
            .into_iter()
            .filter(|r| r.allows(self))
            .collect()
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub user: String,
    pub role: Role,
    /// The session or API token used.
    #[serde(skip)]
    pub token_id: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub user: String,
    pub kind: String,
    pub label: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("auth database {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no user {0:?}")]
    NoUser(String),
}

pub struct AuthDb {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Hashed once, verified against when a user name does not exist (same work either way, so
    /// response times do not tell which names exist).
    dummy_hash: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    kind TEXT NOT NULL, label TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL, expires_ms INTEGER, last_used_ms INTEGER);
";

/// User names: what people type, and safe in logs.
pub fn check_user_name(name: &str) -> Result<(), AuthError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
    {
        return Err(AuthError::Invalid(format!(
            "user names are 1–64 letters, digits, '-', '_', '.' or '@'; {name:?} is not"
        )));
    }
    Ok(())
}

pub fn check_password(pw: &str) -> Result<(), AuthError> {
    if pw.chars().count() < 8 || pw.len() > 1024 {
        return Err(AuthError::Invalid(
            "passwords need at least 8 characters (and at most 1024 bytes)".into(),
        ));
    }
    Ok(())
}

fn sha256_hex(s: &str) -> String {
    let d = sha2::Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_token(prefix: &str) -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}_{hex}")
}

fn hash_password(pw: &str) -> Result<String, AuthError> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))
}

fn verify_password(pw: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

impl AuthDb {
    /// Opens (creating if needed) `<data_dir>/auth.db` (mode 0600, in a 0700 directory).
    pub fn open(data_dir: &Path) -> Result<AuthDb, AuthError> {
        crate::store::private::private_dir(data_dir).map_err(|e| {
            AuthError::Invalid(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join("auth.db");
        // password and token hashes: readable by the daemon's user only
        crate::store::private::private_db(&path)
            .map_err(|e| AuthError::Invalid(format!("cannot create {}: {e}", path.display())))?;
        let sql = |e| AuthError::Sqlite {
            path: path.display().to_string(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(AuthDb {
            conn: Mutex::new(conn),
            path,
            dummy_hash: hash_password("not a real password")?,
        })
    }

    fn sql(&self, e: rusqlite::Error) -> AuthError {
        AuthError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add_user(&self, name: &str, role: Role, password: &str) -> Result<(), AuthError> {
        check_user_name(name)?;
        check_password(password)?;
        let hash = hash_password(password)?;
        let n = self
            .conn()
            .execute(
                "INSERT OR IGNORE INTO users (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), hash, now_ms()],
            )
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(AuthError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Changes a user's password and signs them out everywhere (their sessions end; API tokens stay).
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        check_password(password)?;
        let hash = hash_password(password)?;
        let c = self.conn();
        let n = c
            .execute(
                "UPDATE users SET hash = ?2 WHERE name = ?1",
                params![name, hash],
            )
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(AuthError::NoUser(name.to_string()));
        }
        c.execute(
            "DELETE FROM tokens WHERE user = ?1 AND kind = 'session'",
            params![name],
        )
        .map_err(|e| self.sql(e))?;
        Ok(())
    }

    /// Removes a user and every session and token of theirs.
    pub fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        let n = self
            .conn()
            .execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(|e| self.sql(e))?;
        if n == 0 {
            return Err(AuthError::NoUser(name.to_string()));
        }
        Ok(())
    }

    pub fn users(&self) -> Result<Vec<UserRow>, AuthError> {
        let c = self.conn();
        let mut st = c
            .prepare("SELECT name, role, created_ms FROM users ORDER BY name")
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map([], |r| {
                let role: String = r.get(1)?;
                Ok(UserRow {
                    name: r.get(0)?,
                    role: Role::parse(&role).unwrap_or(Role::Operator),
                    created_ms: r.get(2)?,
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }

    /// The user's role when `password` is right.
    pub fn check_login(&self, name: &str, password: &str) -> Result<Option<Role>, AuthError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT role, hash FROM users WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        Ok(match row {
            Some((role, hash)) => {
                if verify_password(password, &hash) {
                    Role::parse(&role)
                } else {
                    None
                }
            }
            None => {
                let _ = verify_password(password, &self.dummy_hash);
                None
            }
        })
    }

    /// Issues a token: `session` (expires after `ttl`) or `api` (until revoked). The plain token
    /// is returned once; only its hash is kept.
    pub fn issue(
        &self,
        user: &str,
        kind: &str,
        label: &str,
        ttl: Option<Duration>,
    ) -> Result<(i64, String, Option<i64>), AuthError> {
        let token = random_token(if kind == "session" { "ccs" } else { "cct" });
        let expires = ttl.map(|d| now_ms() + d.as_millis() as i64);
        let c = self.conn();
        c.execute(
            "INSERT INTO tokens (user, kind, label, hash, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![user, kind, label, sha256_hex(&token), now_ms(), expires],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                AuthError::NoUser(user.to_string())
            }
            e => self.sql(e),
        })?;
        Ok((c.last_insert_rowid(), token, expires))
    }

    /// Who a token belongs to, when it is valid.
    pub fn authenticate(&self, token: &str) -> Result<Option<Caller>, AuthError> {
        if token.len() > 200 {
            return Ok(None);
        }
        let c = self.conn();
        // (token id, user, role, expires, last used)
        type Found = (i64, String, String, Option<i64>, Option<i64>);
        let row: Option<Found> = c
            .query_row(
                "SELECT t.id, t.user, u.role, t.expires_ms, t.last_used_ms FROM tokens t JOIN users u ON u.name = t.user
                 WHERE t.hash = ?1",
                params![sha256_hex(token)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(|e| self.sql(e))?;
        let Some((id, user, role, expires, last_used)) = row else {
            return Ok(None);
        };
        let now = now_ms();
        if expires.is_some_and(|e| e <= now) {
            c.execute("DELETE FROM tokens WHERE id = ?1", params![id])
                .map_err(|e| self.sql(e))?;
            return Ok(None);
        }
        // last use, at most once a minute per token (no write per request)
        if last_used.is_none_or(|t| now - t > 60_000) {
            c.execute(
                "UPDATE tokens SET last_used_ms = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(|e| self.sql(e))?;
        }
        Ok(Role::parse(&role).map(|role| Caller {
            user,
            role,
            token_id: id,
        }))
    }

    pub fn revoke(&self, id: i64) -> Result<bool, AuthError> {
        Ok(self
            .conn()
            .execute("DELETE FROM tokens WHERE id = ?1", params![id])
            .map_err(|e| self.sql(e))?
            > 0)
    }

    /// API tokens (not sessions), every user's.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, AuthError> {
        let c = self.conn();
        let mut st = c
            .prepare(
                "SELECT id, user, kind, label, created_ms, expires_ms, last_used_ms FROM tokens
                 WHERE kind = 'api' ORDER BY id",
            )
            .map_err(|e| self.sql(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    user: r.get(1)?,
                    kind: r.get(2)?,
                    label: r.get(3)?,
                    created_ms: r.get(4)?,
                    expires_ms: r.get(5)?,
                    last_used_ms: r.get(6)?,
                })
            })
            .map_err(|e| self.sql(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sql(e))?;
        Ok(rows)
    }
}

/// Failed logins in a sliding minute, counted per (client address, user name) pair, and per
/// user name from every address together as a slower backstop. Failures from one address never
/// block the same user at another address until the backstop is reached, so a few wrong
/// passwords cannot lock an admin (or everyone behind the same proxy) out.
pub struct LoginLimiter {
    per_pair: usize,
    per_user: usize,
    failures: Mutex<HashMap<LimitKey, VecDeque<Instant>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LimitKey {
    Pair(String, String),
    User(String),
}

const MINUTE: Duration = Duration::from_secs(60);

impl LoginLimiter {
    /// `per_pair` failures a minute for one user from one address, `per_user` for one user from
    /// all addresses.
    pub fn new(per_pair: u32, per_user: u32) -> LoginLimiter {
        LoginLimiter {
            per_pair: per_pair as usize,
            per_user: per_user as usize,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(addr: &str, user: &str) -> [LimitKey; 2] {
        [
            LimitKey::Pair(addr.to_string(), user.to_string()),
            LimitKey::User(user.to_string()),
        ]
    }

    /// Seconds to wait when `user` may not try to sign in from `addr` now, else `None`.
    pub fn blocked(&self, addr: &str, user: &str) -> Option<u64> {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut wait = None;
        for k in LoginLimiter::keys(addr, user) {
            let limit = match k {
                LimitKey::Pair(..) => self.per_pair,
                LimitKey::User(_) => self.per_user,
            };
            if let Some(q) = f.get_mut(&k) {
                while q.front().is_some_and(|t| now - *t > MINUTE) {
                    q.pop_front();
                }
                // the attempt that frees a place: the oldest of the last `limit`
                if q.len() >= limit
                    && let Some(t) = q.get(q.len() - limit)
                {
                    let secs = 60u64.saturating_sub((now - *t).as_secs()).max(1);
                    wait = Some(wait.map_or(secs, |w: u64| w.max(secs)));
                }
            }
        }
        wait
    }

    pub fn failed(&self, addr: &str, user: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if f.len() > 100_000 {
            // a flood of distinct keys: forget the idle ones
            f.retain(|_, q| q.back().is_some_and(|t| now - *t < MINUTE));
        }
        for k in LoginLimiter::keys(addr, user) {
            let q = f.entry(k).or_default();
            q.push_back(now);
            // no more than the limit is ever needed
            while q.len() > self.per_pair.max(self.per_user) {
                q.pop_front();
            }
        }
    }

    /// A right password from `addr`: that pair starts afresh (the per-user backstop does not).
    pub fn succeeded(&self, addr: &str, user: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&LimitKey::Pair(addr.to_string(), user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_tokens_and_roles() {
        let dir = tempfile::tempdir().unwrap();
        let db = AuthDb::open(dir.path()).unwrap();
        db.add_user("ada", Role::Admin, "correct horse").unwrap();
        assert!(matches!(
            db.add_user("ada", Role::Operator, "another one"),
            Err(AuthError::Exists(_))
        ));
        assert!(db.add_user("bob", Role::Operator, "short").is_err());
        assert!(
            db.add_user("bad name", Role::Operator, "long enough")
                .is_err()
        );
        assert_eq!(
            db.check_login("ada", "correct horse").unwrap(),
            Some(Role::Admin)
        );
        assert_eq!(db.check_login("ada", "wrong horse").unwrap(), None);
        assert_eq!(db.check_login("nobody", "correct horse").unwrap(), None);
        // the stored hash is argon2, not the password
        let hash: String = db
            .conn()
            .query_row("SELECT hash FROM users WHERE name='ada'", [], |r| r.get(0))
            .unwrap();
        assert!(hash.starts_with("$argon2id$") && !hash.contains("correct"));

        let (id, tok, _) = db.issue("ada", "api", "ci", None).unwrap();
        let c = db.authenticate(&tok).unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.role), ("ada", Role::Admin));
        let stored: String = db
            .conn()
            .query_row("SELECT hash FROM tokens WHERE id=?1", [id], |r| r.get(0))
            .unwrap();
        assert_ne!(stored, tok);
        assert!(db.authenticate("cct_nope").unwrap().is_none());
        // an expired session is refused and deleted
        let (_, s, _) = db
            .issue("ada", "session", "login", Some(Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(db.authenticate(&s).unwrap().is_none());
        assert!(db.revoke(id).unwrap());
        assert!(db.authenticate(&tok).unwrap().is_none());
        // removing a user ends their tokens
        let (_, t2, _) = db.issue("ada", "api", "x", None).unwrap();
        db.remove_user("ada").unwrap();
        assert!(db.authenticate(&t2).unwrap().is_none());
    }

    #[test]
    fn roles_allow_what_the_issue_says() {
        use Need::*;
        assert!(Role::Operator.allows(Read) && Role::Operator.allows(Operate));
        assert!(!Role::Operator.allows(Cameras) && !Role::Operator.allows(Admin));
        assert!(Role::Integrator.allows(Cameras) && !Role::Integrator.allows(Operate));
        assert!(!Role::Integrator.allows(Admin));
        assert!(
            [Read, Operate, Cameras, Admin]
                .iter()
                .all(|n| Role::Admin.allows(*n))
        );
    }

    #[test]
    fn limiter_blocks_the_pair_not_the_user_elsewhere() {
        let l = LoginLimiter::new(3, 5);
        for _ in 0..3 {
            assert!(l.blocked("1.2.3.4", "ada").is_none());
            l.failed("1.2.3.4", "ada");
        }
        let w = l.blocked("1.2.3.4", "ada").unwrap();
        assert!((1..=60).contains(&w));
        // the same user from another address, and another user from the same address, may try
        assert!(l.blocked("5.6.7.8", "ada").is_none());
        assert!(l.blocked("1.2.3.4", "bob").is_none());
        // a success elsewhere does not unblock the attacker's pair
        l.succeeded("5.6.7.8", "ada");
        assert!(l.blocked("1.2.3.4", "ada").is_some());
        // the backstop: 5 failures of ada from anywhere block ada everywhere
        l.failed("5.6.7.8", "ada");
        assert!(l.blocked("9.9.9.9", "ada").is_none());
        l.failed("9.9.9.9", "ada");
        assert!(l.blocked("10.0.0.1", "ada").is_some(), "per-user backstop");
        assert!(l.blocked("10.0.0.1", "bob").is_none());
    }
}
