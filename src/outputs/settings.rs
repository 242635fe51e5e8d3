//! `[[outputs]]` in the site config: where events go besides the API (MQTT brokers, webhooks).
//!
//! ```toml
//! [[outputs]]
//! kind = "mqtt"
//! url = "mqtt://127.0.0.1:1883"        # or mqtts://host:8883
//! topic_prefix = "crosscam"
//!
//! [[outputs]]
//! kind = "webhook"
//! url = "https://vms.example/hooks/crosscam"
//! events = ["identity_linked", "identity_merged"]
//! secret_env = "CROSSCAM_WEBHOOK_SECRET"
//! ```

use std::path::PathBuf;

use serde::Deserialize;

use crate::config::secrets;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    Mqtt,
    Webhook,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Mqtt => "mqtt",
            OutputKind::Webhook => "webhook",
        }
    }
}

/// Events a queue keeps while its receiver is away, by default: about 30 MB of JSON on disk,
/// an hour of a busy 12-camera site.
pub const DEFAULT_QUEUE_MAX: u64 = 100_000;

/// One output. Keys that belong to the other kind are refused by [`OutputSettings::check`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSettings {
    pub kind: OutputKind,
    /// Names the output in status, metrics, logs and its queue file; default `<kind>-<n>`
    /// (n counts from 1 in the config's order).
    #[serde(default)]
    pub name: Option<String>,
    /// `mqtt://host:port`, `mqtts://host:port` (MQTT) or `http(s)://…` (webhook).
    pub url: String,
    /// Event types to send (`identity_linked`, …); empty: all of them.
    #[serde(default)]
    pub events: Vec<String>,
    /// Messages kept on disk while the receiver is away; past it the oldest are dropped and
    /// counted.
    #[serde(default = "default_queue_max")]
    pub queue_max: u64,
    /// Seconds one delivery may take before it counts as failed.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    /// PEM file of the certificate authority that signed the receiver's certificate (private
    /// CAs); default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,

    // ---- webhook ----
    /// Environment variable holding the HMAC-SHA256 key; without it deliveries are unsigned.
    #[serde(default)]
    pub secret_env: Option<String>,

    // ---- mqtt ----
    /// Topics start with this (`<prefix>/events/<type>`, `<prefix>/cameras/<id>/…`).
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// MQTT quality of service of event messages: 0, 1 (default) or 2.
    #[serde(default)]
    pub qos: Option<u8>,
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// MQTT client id; default `crosscam-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Publish Home Assistant MQTT discovery for each camera's people count.
    #[serde(default)]
    pub home_assistant: Option<bool>,
    #[serde(default)]
    pub home_assistant_prefix: Option<String>,
}

fn default_queue_max() -> u64 {
    DEFAULT_QUEUE_MAX
}
fn default_timeout_s() -> u64 {
    10
}

/// The most messages a queue may be told to keep (about 3 GB of JSON).
pub const MAX_QUEUE_MAX: u64 = 10_000_000;

impl OutputSettings {
    /// The output's name: `name`, or `<kind>-<index + 1>`.
    pub fn name_at(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.kind.as_str(), index + 1))
    }

    pub fn topic_prefix(&self) -> &str {
        self.topic_prefix.as_deref().unwrap_or("crosscam")
    }

    pub fn qos(&self) -> u8 {
        self.qos.unwrap_or(1)
    }

    pub fn home_assistant_prefix(&self) -> &str {
        self.home_assistant_prefix
            .as_deref()
            .unwrap_or("homeassistant")
    }

    /// Whether events of type `kind` go to this output.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }

    /// Checks one output: `Err((key, message))` names the key at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(n) = &self.name {
            secrets::check_id(n).map_err(|m| ("name", m))?;
        }
        secrets::check_text(&self.url, secrets::MAX_TEXT_CHARS).map_err(|m| ("url", m))?;
        for e in &self.events {
            if !crate::events::Event::KINDS.contains(&e.as_str()) {
                return Err((
                    "events",
                    format!(
                        "unknown event type {}; expected some of {}",
                        secrets::clip(e, 40),
                        crate::events::Event::KINDS.join(", ")
                    ),
                ));
            }
        }
        if self.queue_max == 0 || self.queue_max > MAX_QUEUE_MAX {
            return Err((
                "queue_max",
                format!(
                    "expected 1 to {MAX_QUEUE_MAX} messages, found {}",
                    self.queue_max
                ),
            ));
        }
        if !(1..=300).contains(&self.timeout_s) {
            return Err((
                "timeout_s",
                format!("expected 1 to 300 seconds, found {}", self.timeout_s),
            ));
        }
        if let Some(f) = &self.ca_file
            && !f.is_file()
        {
            return Err((
                "ca_file",
                format!(
                    "expected a PEM certificate file, but {} does not exist",
                    f.display()
                ),
            ));
        }
        let (scheme, _) = self.url.split_once("://").ok_or((
            "url",
            format!(
                "expected a URL such as {}, found {}",
                match self.kind {
                    OutputKind::Mqtt => "mqtt://127.0.0.1:1883",
                    OutputKind::Webhook => "https://vms.example/hooks/crosscam",
                },
                secrets::clip(&self.url, 80)
            ),
        ))?;
        match self.kind {
            OutputKind::Mqtt => {
                if !matches!(scheme, "mqtt" | "mqtts") {
                    return Err((
                        "url",
                        format!("an MQTT output needs mqtt:// or mqtts://, found {scheme}://"),
                    ));
                }
                super::mqtt::Broker::parse(&self.url).map_err(|m| ("url", m))?;
                for (k, set) in [("secret_env", self.secret_env.is_some())] {
                    if set {
                        return Err((k, format!("{k} applies to webhook outputs only")));
                    }
                }
                if let Some(p) = &self.topic_prefix {
                    check_topic_level(p).map_err(|m| ("topic_prefix", m))?;
                }
                if let Some(p) = &self.home_assistant_prefix {
                    check_topic_level(p).map_err(|m| ("home_assistant_prefix", m))?;
                }
                if self.qos() > 2 {
                    return Err(("qos", format!("expected 0, 1 or 2, found {}", self.qos())));
                }
                if let Some(c) = &self.client_id {
                    secrets::check_id(c).map_err(|m| ("client_id", m))?;
                }
                if self.username_env.is_some() != self.password_env.is_some() {
                    return Err((
                        "username_env",
                        "give both username_env and password_env, or neither".into(),
                    ));
                }
                for (k, var) in [
                    ("username_env", &self.username_env),
                    ("password_env", &self.password_env),
                ] {
                    if let Some(v) = var {
                        check_env(v).map_err(|m| (k, m))?;
                    }
                }
            }
            OutputKind::Webhook => {
                if !matches!(scheme, "http" | "https") {
                    return Err((
                        "url",
                        format!("a webhook needs http:// or https://, found {scheme}://"),
                    ));
                }
                for (k, set) in [
                    ("topic_prefix", self.topic_prefix.is_some()),
                    ("qos", self.qos.is_some()),
                    ("username_env", self.username_env.is_some()),
                    ("password_env", self.password_env.is_some()),
                    ("client_id", self.client_id.is_some()),
                    ("home_assistant", self.home_assistant.is_some()),
                    (
                        "home_assistant_prefix",
                        self.home_assistant_prefix.is_some(),
                    ),
                ] {
                    if set {
                        return Err((k, format!("{k} applies to MQTT outputs only")));
                    }
                }
                if let Some(v) = &self.secret_env {
                    check_env(v).map_err(|m| ("secret_env", m))?;
                }
            }
        }
        Ok(())
    }
}

/// A name of an environment variable that is set (its value is never shown).
fn check_env(var: &str) -> Result<(), String> {
    if var.is_empty()
        || var.len() > 128
        || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "expected an environment variable name, found {}",
            secrets::clip(var, 64)
        ));
    }
    if std::env::var_os(var).is_none() {
        return Err(format!(
            "the environment variable {var} is not set; export it before starting crosscam"
        ));
    }
    Ok(())
}

/// One or more MQTT topic levels without wildcards: `crosscam`, `site/a`.
fn check_topic_level(p: &str) -> Result<(), String> {
    if p.is_empty()
        || p.len() > 128
        || p.starts_with('/')
        || p.ends_with('/')
        || p.contains("//")
        || !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
    {
        return Err(format!(
            "expected topic levels of letters, digits, '-', '_' or '.', separated by '/', found {}",
            secrets::clip(p, 64)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OutputSettings, String> {
        let o: OutputSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        o.check().map_err(|(k, m)| format!("{k}: {m}"))?;
        Ok(o)
    }

    #[test]
    fn outputs_parse_with_their_defaults() {
        let o = parse("kind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"").unwrap();
        assert_eq!(o.topic_prefix(), "crosscam");
        assert_eq!(o.qos(), 1);
        assert_eq!(o.queue_max, DEFAULT_QUEUE_MAX);
        assert_eq!(o.name_at(2), "mqtt-3");
        assert!(o.wants("camera_state"));
        let w = parse(
            "kind = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nevents = [\"identity_linked\"]",
        )
        .unwrap();
        assert!(w.wants("identity_linked"));
        assert!(!w.wants("tracklet_started"));
    }

    #[test]
    fn wrong_outputs_name_the_key() {
        for (text, key) in [
            ("kind = \"mqtt\"\nurl = \"http://x\"", "url:"),
            ("kind = \"webhook\"\nurl = \"mqtt://x:1\"", "url:"),
            ("kind = \"webhook\"\nurl = \"http://x\"\nqos = 1", "qos:"),
            (
                "kind = \"mqtt\"\nurl = \"mqtt://x\"\nsecret_env = \"A\"",
                "secret_env:",
            ),
            (
                "kind = \"mqtt\"\nurl = \"mqtt://x\"\ntopic_prefix = \"a/#\"",
                "topic_prefix:",
            ),
            ("kind = \"mqtt\"\nurl = \"mqtt://x\"\nqos = 3", "qos:"),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nevents = [\"everything\"]",
                "events:",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nname = \"../x\"",
                "name:",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nqueue_max = 0",
                "queue_max:",
            ),
            (
                "kind = \"webhook\"\nurl = \"http://x\"\nsecret_env = \"CROSSCAM_TEST_UNSET_VAR_42\"",
                "secret_env:",
            ),
            ("kind = \"mqtt\"\nurl = \"mqtt://host:99999\"", "url:"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(key), "{text}: {e}");
        }
        assert!(parse("kind = \"kafka\"\nurl = \"x\"").is_err());
        assert!(parse("kind = \"mqtt\"\nurl = \"mqtt://x\"\nbogus = 1").is_err());
    }
}
