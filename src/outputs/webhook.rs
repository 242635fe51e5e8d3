//! Webhook deliveries: each event is one HTTP POST of its JSON, in order, signed.
//!
//! Headers of every delivery:
//! - `Content-Type: application/json`
//! - `X-Crosscam-Event`: the event type (`identity_linked`, …)
//! - `X-Crosscam-Delivery`: `<output>-<sequence>`; the sequence increases by delivery and is
//!   never reused, so a receiver can drop a repeat (a delivery whose answer was lost is sent
//!   again: at least once)
//! - `X-Crosscam-Signature-256: sha256=<hex>`: HMAC-SHA256 of the body with the secret from
//!   `secret_env` (the same scheme as GitHub's `X-Hub-Signature-256`), when a secret is set.
//!
//! A 2xx answer is a delivery. Connection errors, timeouts, 408, 429 and 5xx are retried with
//! back-off (0.5 s doubling to 30 s) and hold the queue, so order is kept. Any other answer
//! (400, 401, 404, …) is the receiver refusing that message: it is dropped, counted as
//! `rejected` and logged with the status, and the next one goes.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::queue::Queued;
use super::{Delivery, Stats};

/// `sha256=<hex>` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in tag {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

pub struct Webhook {
    pub name: String,
    pub url: String,
    pub secret: Option<Vec<u8>>,
    agent: ureq::Agent,
}

impl Webhook {
    pub fn new(
        name: String,
        url: String,
        secret: Option<Vec<u8>>,
        timeout: Duration,
        ca_pem: Option<Vec<u8>>,
    ) -> anyhow::Result<Webhook> {
        let mut cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // a receiver's redirect is not followed: the signature was made for this URL
            .max_redirects(0)
            .user_agent(concat!("crosscam/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                anyhow::bail!("outputs {name}: ca_file has no PEM certificate");
            }
            cfg = cfg.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        Ok(Webhook {
            name,
            url,
            secret,
            agent: cfg.build().into(),
        })
    }

    /// The request headers of a delivery, signature included.
    pub fn headers(&self, q: &Queued) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Content-Type", "application/json".to_string()),
            ("X-Crosscam-Event", q.message.topic.clone()),
            ("X-Crosscam-Delivery", format!("{}-{}", self.name, q.seq)),
        ];
        if let Some(s) = &self.secret {
            h.push(("X-Crosscam-Signature-256", signature(s, &q.message.body)));
        }
        h
    }
}

impl Delivery for Webhook {
    fn send(&mut self, q: &Queued, stats: &Arc<Stats>) -> super::Sent {
        let mut req = self.agent.post(&self.url);
        for (k, v) in self.headers(q) {
            req = req.header(k, v);
        }
        match req.send(&q.message.body[..]) {
            Ok(resp) => {
                let status = resp.status().as_u16();
                stats.set_connected(true);
                match status {
                    200..=299 => super::Sent::Delivered,
                    408 | 429 | 500..=599 => {
                        super::Sent::Retry(format!("the receiver answered {status}"))
                    }
                    _ => super::Sent::Rejected(format!("the receiver answered {status}")),
                }
            }
            Err(e) => {
                stats.set_connected(false);
                super::Sent::Retry(format!("{e}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_rfc_4231_test_vectors() {
        // RFC 4231, test cases 1 and 2
        assert_eq!(
            signature(&[0x0b; 20], b"Hi There"),
            "sha256=b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
