//! MQTT: events and per-camera state on a broker, in the shape home-automation users know from
//! Frigate.
//!
//! Topics (`<prefix>` is `topic_prefix`, default `crosscam`):
//! - `<prefix>/events/<type>`: every event (the same JSON as the WebSocket and `--events`),
//!   QoS `qos` (default 1), not retained.
//! - `<prefix>/cameras/<camera>/state`: retained `{"state", "detail", "t_ms"}` of the camera.
//! - `<prefix>/cameras/<camera>/people`: retained number of people tracked in the camera now.
//! - `<prefix>/available`: retained `online`, and `offline` as the last will (the broker
//!   publishes it when crosscam goes away) or on a clean stop.
//! - with `home_assistant = true`: `<ha_prefix>/sensor/crosscam_<camera>_people/config`,
//!   retained Home Assistant discovery of each camera's people count.
//!
//! Delivery is one message at a time from the output's disk queue, acknowledged by the broker
//! (QoS 1/2) before the next, so order is kept and nothing is lost while the broker is away. On
//! a connection error the client is dropped and a new one connects after a back-off: the queue,
//! not the client library, decides what is sent again (no double replay).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, Outgoing,
    Packet, QoS, Transport,
};
use serde_json::json;

use super::queue::{Message, Queued};
use super::{Delivery, Sent, Stats};
use crate::events::Event;
use crate::ingest::CameraState;

/// Where the broker is: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| "expected mqtt://host:port or mqtts://host:port".to_string())?;
        let tls = match scheme {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(format!("expected mqtt:// or mqtts://, found {scheme}://")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err(
                "credentials do not belong in the URL; give username_env and password_env".into(),
            );
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err("expected only host and port after the scheme".into());
        }
        let (host, port) = if let Some(h) = rest.strip_prefix('[') {
            let (h, p) = h
                .split_once(']')
                .ok_or_else(|| "an IPv6 address needs its closing ']'".to_string())?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(format!("expected a host name or address, found {host:?}"));
        }
        let port = match port {
            None => {
                if tls {
                    8883
                } else {
                    1883
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("expected a port from 1 to 65535, found {p:?}"))?,
        };
        Ok(Broker { tls, host, port })
    }
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Turns events into MQTT messages for one output; keeps who is in which camera for the
/// people counts.
pub struct Topics {
    prefix: String,
    home_assistant: Option<String>,
    /// Tracks open per camera.
    people: HashMap<String, HashSet<u64>>,
    announced: HashSet<String>,
}

impl Topics {
    pub fn new(prefix: &str, home_assistant: Option<&str>) -> Topics {
        Topics {
            prefix: prefix.to_string(),
            home_assistant: home_assistant.map(str::to_string),
            people: HashMap::new(),
            announced: HashSet::new(),
        }
    }

    pub fn availability(&self) -> String {
        format!("{}/available", self.prefix)
    }

    /// The messages for one event; `wanted`: whether the event type passes the output's filter
    /// (state and count topics are kept current either way).
    pub fn map(&mut self, e: &Event, wanted: bool) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(cam) = e.camera()
            && self.home_assistant.is_some()
            && self.announced.insert(cam.to_string())
        {
            out.push(self.discovery(cam));
        }
        if wanted && let Ok(body) = serde_json::to_vec(e) {
            out.push(Message {
                topic: format!("{}/events/{}", self.prefix, e.kind()),
                retain: false,
                body,
            });
        }
        let before = e.camera().map(|c| self.count(c));
        match e {
            Event::CameraState {
                t_ms,
                camera,
                state,
                detail,
            } => {
                out.push(Message {
                    topic: format!("{}/cameras/{camera}/state", self.prefix),
                    retain: true,
                    body: json!({"state": state, "detail": detail, "t_ms": t_ms})
                        .to_string()
                        .into_bytes(),
                });
                if *state != CameraState::Live {
                    // a camera that stops loses its open tracks without tracklet_ended
                    self.people.remove(camera.as_str());
                }
            }
            Event::TrackletStarted { camera, track, .. } => {
                self.people
                    .entry(camera.clone())
                    .or_default()
                    .insert(*track);
            }
            Event::TrackletEnded { camera, track, .. } => {
                if let Some(s) = self.people.get_mut(camera.as_str()) {
                    s.remove(track);
                }
            }
            _ => {}
        }
        if let (Some(cam), Some(before)) = (e.camera(), before) {
            let now = self.count(cam);
            if now != before || matches!(e, Event::CameraState { .. }) {
                out.push(Message {
                    topic: format!("{}/cameras/{cam}/people", self.prefix),
                    retain: true,
                    body: now.to_string().into_bytes(),
                });
            }
        }
        out
    }

    fn count(&self, camera: &str) -> usize {
        self.people.get(camera).map_or(0, |s| s.len())
    }

    fn discovery(&self, camera: &str) -> Message {
        let ha = self.home_assistant.as_deref().unwrap_or("homeassistant");
        let uid = format!("crosscam_{}_{camera}_people", self.prefix.replace('/', "_"));
        Message {
            topic: format!("{ha}/sensor/{uid}/config"),
            retain: true,
            body: json!({
                "name": format!("{camera} people"),
                "unique_id": uid,
                "state_topic": format!("{}/cameras/{camera}/people", self.prefix),
                "availability_topic": self.availability(),
                "unit_of_measurement": "people",
                "state_class": "measurement",
                "icon": "mdi:account-multiple",
                "device": {
                    "identifiers": [format!("crosscam_{}", self.prefix.replace('/', "_"))],
                    "name": "crosscam",
                    "manufacturer": "crosscam",
                    "model": "cross-camera re-identification",
                },
            })
            .to_string()
            .into_bytes(),
        }
    }
}

/// Publishes an output's queue on a broker.
pub struct Mqtt {
    options: MqttOptions,
    qos: QoS,
    timeout: Duration,
    availability: String,
    conn: Option<(Client, Connection)>,
    /// Last value of each retained topic delivered, sent again after a reconnect (a broker that
    /// restarted without persistence has forgotten them).
    retained: BTreeMap<String, Vec<u8>>,
}

impl Mqtt {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        broker: &Broker,
        client_id: &str,
        credentials: Option<(String, String)>,
        ca_pem: Option<Vec<u8>>,
        availability: String,
        qos: u8,
        timeout: Duration,
    ) -> Mqtt {
        let mut o = MqttOptions::new(client_id, broker.host.clone(), broker.port);
        o.set_keep_alive(Duration::from_secs(15))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                availability.clone(),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((u, p)) = credentials {
            o.set_credentials(u, p);
        }
        if broker.tls {
            o.set_transport(match ca_pem {
                Some(ca) => Transport::tls(ca, None, None),
                None => Transport::tls_with_default_config(),
            });
        }
        Mqtt {
            options: o,
            qos: qos_of(qos),
            timeout,
            availability,
            conn: None,
            retained: BTreeMap::new(),
        }
    }

    /// Connects (waiting for the broker's CONNACK), then says `online` and sends the retained
    /// values again.
    fn connect(&mut self) -> Result<(), String> {
        let (client, mut conn) = Client::new(self.options.clone(), 16);
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the broker did not answer the connection in time".into());
            }
            match conn.recv_timeout(left) {
                Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => break,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(describe(&e)),
                Err(_) => return Err("the broker did not answer the connection in time".into()),
            }
        }
        self.conn = Some((client, conn));
        let avail = self.availability.clone();
        self.publish(&avail, QoS::AtLeastOnce, true, b"online")?;
        for (topic, body) in self.retained.clone() {
            self.publish(&topic, QoS::AtLeastOnce, true, &body)?;
        }
        Ok(())
    }

    /// Publishes one message and waits until the broker has it (QoS 1: PUBACK, 2: PUBCOMP; 0:
    /// written to the socket).
    fn publish(&mut self, topic: &str, qos: QoS, retain: bool, body: &[u8]) -> Result<(), String> {
        let timeout = self.timeout;
        let Some((client, conn)) = self.conn.as_mut() else {
            return Err("not connected".into());
        };
        client
            .publish(topic, qos, retain, body.to_vec())
            .map_err(|e| format!("{e}"))?;
        let deadline = Instant::now() + timeout;
        let mut pkid = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("the broker did not acknowledge a message in time".into());
            }
            match conn.recv_timeout(left) {
                Ok(Ok(MqttEvent::Outgoing(Outgoing::Publish(id)))) => {
                    if qos == QoS::AtMostOnce {
                        return Ok(());
                    }
                    pkid = Some(id);
                }
                Ok(Ok(MqttEvent::Incoming(Packet::PubAck(a))))
                    if qos == QoS::AtLeastOnce && pkid == Some(a.pkid) =>
                {
                    return Ok(());
                }
                Ok(Ok(MqttEvent::Incoming(Packet::PubComp(c))))
                    if qos == QoS::ExactlyOnce && pkid == Some(c.pkid) =>
                {
                    return Ok(());
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(describe(&e)),
                Err(_) => return Err("the broker did not acknowledge a message in time".into()),
            }
        }
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => {
            format!(
                "the broker refused the connection ({code:?}); check username_env / password_env"
            )
        }
        other => format!("{other}"),
    }
}

impl Delivery for Mqtt {
    fn send(&mut self, q: &Queued, stats: &Arc<Stats>) -> Sent {
        if self.conn.is_none() {
            if let Err(e) = self.connect() {
                self.conn = None;
                stats.set_connected(false);
                return Sent::Retry(e);
            }
            stats.set_connected(true);
        }
        let m = &q.message;
        let qos = if m.retain { QoS::AtLeastOnce } else { self.qos };
        match self.publish(&m.topic, qos, m.retain, &m.body) {
            Ok(()) => {
                if m.retain {
                    self.retained.insert(m.topic.clone(), m.body.clone());
                }
                Sent::Delivered
            }
            Err(e) => {
                // a new client next time: the queue decides what is sent again
                self.conn = None;
                stats.set_connected(false);
                Sent::Retry(e)
            }
        }
    }

    fn idle(&mut self, stats: &Arc<Stats>) {
        // keep-alive pings and the broker's packets are handled while the queue is empty
        if let Some((_, conn)) = self.conn.as_mut()
            && let Ok(Err(e)) = conn.recv_timeout(Duration::from_millis(50))
        {
            tracing::warn!(error = %describe(&e), "MQTT connection lost");
            self.conn = None;
            stats.set_connected(false);
        }
    }

    fn close(&mut self) {
        if self.conn.is_some() {
            let avail = self.availability.clone();
            let _ = self.publish(&avail, QoS::AtLeastOnce, true, b"offline");
            if let Some((client, mut conn)) = self.conn.take() {
                let _ = client.disconnect();
                let _ = conn.recv_timeout(Duration::from_millis(200));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_and_refuse_what_does_not_belong() {
        assert_eq!(
            Broker::parse("mqtt://127.0.0.1:1884").unwrap(),
            Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1884
            }
        );
        assert_eq!(Broker::parse("mqtts://broker.local").unwrap().port, 8883);
        assert_eq!(Broker::parse("mqtt://[::1]:1883").unwrap().host, "::1");
        for bad in [
            "mqtt://u:p@host:1883",
            "mqtt://host:0",
            "mqtt://host:70000",
            "mqtt://host/topic",
            "mqtt://",
            "http://host",
            "mqtt://ho st",
        ] {
            assert!(Broker::parse(bad).is_err(), "{bad}");
        }
    }

    fn started(cam: &str, track: u64) -> Event {
        Event::TrackletStarted {
            t_ms: 1,
            camera: cam.into(),
            track,
        }
    }

    #[test]
    fn people_counts_follow_tracklets_and_camera_states() {
        let mut t = Topics::new("site/a", Some("homeassistant"));
        let m = t.map(&started("gate", 1), true);
        let topics: Vec<&str> = m.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/sensor/crosscam_site_a_gate_people/config",
                "site/a/events/tracklet_started",
                "site/a/cameras/gate/people"
            ]
        );
        assert_eq!(m[2].body, b"1");
        assert!(m[0].retain && !m[1].retain && m[2].retain);
        let m = t.map(&started("gate", 2), false);
        assert_eq!(m.len(), 1, "filtered out: only the count");
        assert_eq!(m[0].body, b"2");
        let m = t.map(
            &Event::TrackletEnded {
                t_ms: 2,
                camera: "gate".into(),
                track: 1,
                tracklet: 7,
                start_ms: 0,
                end_ms: 2,
                boxes: 3,
            },
            true,
        );
        assert_eq!(m.last().unwrap().body, b"1");
        let m = t.map(
            &Event::CameraState {
                t_ms: 3,
                camera: "gate".into(),
                state: CameraState::Backoff,
                detail: "eos".into(),
            },
            true,
        );
        let state = m
            .iter()
            .find(|m| m.topic == "site/a/cameras/gate/state")
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&state.body).unwrap();
        assert_eq!(v["state"], "backoff");
        assert_eq!(m.last().unwrap().body, b"0");
        // an event about no camera has no state or count topics
        let m = t.map(
            &Event::IdentityMerged {
                t_ms: 4,
                kept: 1,
                absorbed: 2,
                reason: "r".into(),
            },
            true,
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].topic, "site/a/events/identity_merged");
    }
}
