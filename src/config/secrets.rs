//! Camera credentials by reference, and the checks on text that people type.
//!
//! A camera names its secret; it never holds it:
//!
//! - `credential = "name"`: a credential an admin registered (`PUT /api/v1/credentials/{name}`),
//!   kept in the data directory's credential store. The only way for cameras added through the
//!   API.
//! - `username_env` / `password_env`: environment variables of the daemon, config file only, and
//!   only variables whose names start with `[ingest] credential_env_prefix` (`CROSSCAM_CAM_`) or
//!   are listed in `[ingest] credential_env_allow`. Any other name is refused with one message,
//!   whether or not it is set, so the config cannot be used to read or probe the environment.
//!
//! The values are read when a camera connects, through [`crate::config::CameraSettings::credentials`]:
//! the process-wide [`Registry`] installed at serve start holds the policy and the credential
//! store, so the ingest asks for a camera's user and password without knowing where they live.

use std::sync::{Arc, RwLock};

/// A registered credential: what a camera sends when its server asks for authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Where registered credentials are looked up (the data directory's credential store).
pub trait CredentialSource: Send + Sync {
    /// The credential called `name`, if registered.
    fn credential(&self, name: &str) -> Option<Credential>;
}

/// Which environment variables cameras may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvPolicy {
    pub prefix: String,
    pub allow: Vec<String>,
}

impl Default for EnvPolicy {
    fn default() -> Self {
        EnvPolicy {
            prefix: DEFAULT_ENV_PREFIX.into(),
            allow: Vec::new(),
        }
    }
}

/// The default prefix of environment variables that may hold camera credentials.
pub const DEFAULT_ENV_PREFIX: &str = "CROSSCAM_CAM_";

impl EnvPolicy {
    pub fn allows(&self, var: &str) -> bool {
        (!self.prefix.is_empty() && var.starts_with(&self.prefix) && var.len() > self.prefix.len())
            || self.allow.iter().any(|a| a == var)
    }

    /// The one refusal for a variable outside the policy (the same whether or not it is set).
    pub fn refusal(&self, key: &str, var: &str) -> String {
        let allow = if self.allow.is_empty() {
            String::new()
        } else {
            " or be listed in [ingest] credential_env_allow".into()
        };
        format!(
            "{} may not be used for camera credentials: {key} names must start with {:?} ([ingest] credential_env_prefix){allow}",
            clip(var, 64),
            self.prefix
        )
    }

    /// Reads `var` when the policy allows it.
    pub fn read(&self, var: &str) -> Option<String> {
        if self.allows(var) {
            std::env::var(var).ok()
        } else {
            None
        }
    }
}

/// What the ingest consults when a camera connects: the environment policy and the store of
/// registered credentials. Installed once per serve ([`install`]).
#[derive(Clone, Default)]
pub struct Registry {
    pub policy: EnvPolicy,
    pub store: Option<Arc<dyn CredentialSource>>,
}

static REGISTRY: RwLock<Option<Registry>> = RwLock::new(None);

/// Makes `r` the process's credential registry (serve start; a later call replaces it).
pub fn install(r: Registry) {
    *REGISTRY.write().unwrap_or_else(|e| e.into_inner()) = Some(r);
}

/// The installed registry, or the default policy without a store.
pub fn registry() -> Registry {
    REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default()
}

/// Longest camera id, credential name and similar identifiers.
pub const MAX_ID_CHARS: usize = 64;
/// Longest human-readable name (camera names, labels).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest URL or free-text reason.
pub const MAX_TEXT_CHARS: usize = 2048;

/// Checks free text a person typed: at most `max` characters, no control characters (NUL, ESC,
/// newlines…) and no bidirectional overrides or isolates (U+202A–U+202E, U+2066–U+2069), which
/// make text display differently from what it is.
pub fn check_text(text: &str, max: usize) -> Result<(), String> {
    let n = text.chars().count();
    if n > max {
        return Err(format!("expected at most {max} characters, found {n}"));
    }
    if let Some((i, ch)) = text.char_indices().find(|(_, c)| is_forbidden(*c)) {
        return Err(format!(
            "control characters and bidirectional overrides are not allowed; found U+{:04X} at byte {i}",
            ch as u32
        ));
    }
    Ok(())
}

fn is_forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// Checks an identifier (camera id, credential name): 1–64 letters, digits, `-` or `_`.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > MAX_ID_CHARS
        || !id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(format!(
            "expected 1–{MAX_ID_CHARS} letters, digits, '-' or '_', found {}",
            clip(id, MAX_ID_CHARS)
        ));
    }
    Ok(())
}

/// `s` quoted and escaped for a log line or a message, cut after `max` characters (with the
/// full length said), so that long or hostile input never reaches a log in full.
pub fn clip(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head:?}… ({n} characters)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_allows_the_prefix_and_the_list_only() {
        let p = EnvPolicy {
            prefix: "CROSSCAM_CAM_".into(),
            allow: vec!["GATE_PW".into()],
        };
        assert!(p.allows("CROSSCAM_CAM_GATE"));
        assert!(p.allows("GATE_PW"));
        assert!(!p.allows("CROSSCAM_CAM_"), "the bare prefix");
        assert!(!p.allows("HOME") && !p.allows("AWS_SECRET_ACCESS_KEY"));
        // set or not, a refused name reads nothing and gets the same message
        assert!(std::env::var_os("PATH").is_some());
        assert_eq!(p.read("PATH"), None);
        let a = p.refusal("password_env", "PATH");
        let b = p.refusal("password_env", "CROSSCAM_SURELY_UNSET_X");
        assert_eq!(
            a.replace("PATH", "V"),
            b.replace("CROSSCAM_SURELY_UNSET_X", "V")
        );
        let empty = EnvPolicy {
            prefix: String::new(),
            allow: vec![],
        };
        assert!(!empty.allows("ANYTHING"), "an empty prefix allows nothing");
    }

    #[test]
    fn text_checks_refuse_controls_bidi_and_length() {
        assert!(check_text("Gate north – Süd", 200).is_ok());
        for bad in [
            "a\0b",
            "a\x1b[31mb",
            "evil\u{202E}gpj.exe",
            "a\nb",
            "x\u{2066}y",
        ] {
            let e = check_text(bad, 200).unwrap_err();
            assert!(e.contains("U+"), "{bad:?}: {e}");
        }
        let long = "x".repeat(201);
        assert!(check_text(&long, 200).unwrap_err().contains("at most 200"));
        assert!(check_id("gate-1_a").is_ok());
        let e = check_id(&"a".repeat(5000)).unwrap_err();
        assert!(e.len() < 200 && e.contains("5000 characters"), "{e}");
        assert!(check_id("").is_err() && check_id("a b").is_err());
    }

    #[test]
    fn credentials_do_not_show_in_debug_output() {
        let c = Credential {
            username: Some("viewer".into()),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
