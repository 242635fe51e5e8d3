//! Outputs: the site's other systems get crosscam's events — MQTT brokers (home automation,
//! alarm panels) and HTTP webhooks (VMS, ticketing).
//!
//! ```text
//!  EventBus ──→ [ingress thread] ──→ disk queue (DATA/outputs/<name>.sqlite) ──→ [delivery thread] ──→ broker / receiver
//! ```
//!
//! Each output has its own two threads and its own queue, so a slow or dead receiver fills
//! only its queue: the pipeline publishes events without waiting (the bus never blocks), and
//! other outputs go on. The ingress thread turns events into messages (a webhook's POST, an
//! MQTT topic) and appends them; the delivery thread sends the oldest, removes it once the
//! receiver has it, and retries with back-off while the receiver is away, so messages arrive
//! in order and none is lost until the queue's bound (then the oldest go, counted). State and
//! counters are in `/api/v1/status` (`outputs`) and `/metrics` (`crosscam_output_*`).

pub mod mqtt;
pub mod queue;
pub mod settings;
pub mod webhook;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::events::{Event, EventBus};
pub use settings::{OutputKind, OutputSettings};

use queue::{DurableQueue, Message, Queued};

/// What became of one delivery attempt.
pub enum Sent {
    Delivered,
    /// The receiver is away or busy: try the same message again after a back-off.
    Retry(String),
    /// The receiver refused this message for good: drop it and go on.
    Rejected(String),
}

/// Sends messages to one receiver; owned by the output's delivery thread.
pub trait Delivery: Send {
    fn send(&mut self, q: &Queued, stats: &Arc<Stats>) -> Sent;
    /// Called while the queue is empty (keep-alives).
    fn idle(&mut self, _stats: &Arc<Stats>) {}
    /// Called once at shutdown.
    fn close(&mut self) {}
}

/// Counters of one output, shared by its threads and read by the API.
pub struct Stats {
    pub name: String,
    pub kind: OutputKind,
    /// The receiver's address with credentials removed.
    pub url: String,
    pub delivered: AtomicU64,
    pub rejected: AtomicU64,
    /// Events the ingress thread missed because it fell behind the bus.
    pub lagged: AtomicU64,
    /// Failed attempts (each retried).
    pub failures: AtomicU64,
    connected: AtomicBool,
    pub last_delivery_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn set_connected(&self, c: bool) {
        self.connected.store(c, Ordering::Relaxed);
    }
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// One output's state as `/api/v1/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OutputStatus {
    pub name: String,
    pub kind: OutputKind,
    pub url: String,
    /// The receiver took the last attempt (or the connection is up).
    pub connected: bool,
    /// Messages waiting on disk.
    pub queued: u64,
    pub delivered: u64,
    /// Refused by the receiver (4xx other than 408 / 429).
    pub rejected: u64,
    /// Lost: the queue's bound (`overflow`), a disk that could not be written (`unwritable`),
    /// events missed by a stalled ingress thread (`lagged`).
    pub dropped: Dropped,
    pub failures: u64,
    pub last_error: Option<String>,
    /// When the last message was delivered (Unix ms; 0: never).
    pub last_delivery_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dropped {
    pub overflow: u64,
    pub unwritable: u64,
    pub lagged: u64,
}

struct Output {
    stats: Arc<Stats>,
    queue: Arc<DurableQueue>,
    threads: Vec<JoinHandle<()>>,
}

/// The running outputs of a daemon.
pub struct Outputs {
    outputs: Vec<Output>,
    stop: Arc<AtomicBool>,
}

/// Turns one event into an output's messages (none when filtered out).
type Mapper = Box<dyn FnMut(&Event) -> Vec<Message> + Send>;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Outputs {
    /// No outputs (a daemon without `[[outputs]]`).
    pub fn none() -> Outputs {
        Outputs {
            outputs: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts every output; subscribes to `bus` before returning, so no event published after
    /// this call is missed. Secrets are read from the environment here.
    pub fn start(
        list: &[OutputSettings],
        data_dir: &Path,
        bus: &EventBus,
    ) -> anyhow::Result<Outputs> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut outputs = Vec::new();
        for (i, o) in list.iter().enumerate() {
            let name = o.name_at(i);
            let ca_pem = match &o.ca_file {
                Some(f) => Some(std::fs::read(f).map_err(|e| {
                    anyhow::anyhow!("outputs {name}: cannot read ca_file {}: {e}", f.display())
                })?),
                None => None,
            };
            let env = |var: &Option<String>| -> anyhow::Result<Option<String>> {
                match var {
                    None => Ok(None),
                    Some(v) => std::env::var(v).map(Some).map_err(|_| {
                        anyhow::anyhow!(
                            "outputs {name}: the environment variable {v} is not set; export it before starting crosscam"
                        )
                    }),
                }
            };
            let queue = Arc::new(DurableQueue::open(
                &data_dir.join("outputs").join(format!("{name}.sqlite")),
                o.queue_max,
            )?);
            let timeout = Duration::from_secs(o.timeout_s);
            let stats = Arc::new(Stats {
                name: name.clone(),
                kind: o.kind,
                url: crate::ingest::source::redact(&o.url),
                delivered: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                lagged: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                connected: AtomicBool::new(false),
                last_delivery_ms: AtomicI64::new(0),
                last_error: Mutex::new(None),
            });
            let (mut map, delivery): (Mapper, Box<dyn Delivery>) = match o.kind {
                OutputKind::Webhook => {
                    let secret = env(&o.secret_env)?.map(String::into_bytes);
                    if secret.is_none() {
                        tracing::warn!(output = %name, "webhook without secret_env: deliveries are not signed");
                    }
                    let hook = webhook::Webhook::new(
                        name.clone(),
                        o.url.clone(),
                        secret,
                        timeout,
                        ca_pem,
                    )?;
                    let filter = o.clone();
                    (
                        Box::new(move |e: &Event| {
                            if !filter.wants(e.kind()) {
                                return Vec::new();
                            }
                            serde_json::to_vec(e)
                                .map(|body| {
                                    vec![Message {
                                        topic: e.kind().to_string(),
                                        retain: false,
                                        body,
                                    }]
                                })
                                .unwrap_or_default()
                        }),
                        Box::new(hook),
                    )
                }
                OutputKind::Mqtt => {
                    let broker = mqtt::Broker::parse(&o.url)
                        .map_err(|m| anyhow::anyhow!("outputs {name}: url: {m}"))?;
                    let creds = match (env(&o.username_env)?, env(&o.password_env)?) {
                        (Some(u), Some(p)) => Some((u, p)),
                        _ => None,
                    };
                    let mut topics = mqtt::Topics::new(
                        o.topic_prefix(),
                        o.home_assistant
                            .unwrap_or(false)
                            .then(|| o.home_assistant_prefix()),
                    );
                    let client = mqtt::Mqtt::new(
                        &broker,
                        o.client_id
                            .clone()
                            .unwrap_or_else(|| format!("crosscam-{name}"))
                            .as_str(),
                        creds,
                        ca_pem,
                        topics.availability(),
                        o.qos(),
                        timeout,
                    );
                    let filter = o.clone();
                    (
                        Box::new(move |e: &Event| topics.map(e, filter.wants(e.kind()))),
                        Box::new(client),
                    )
                }
            };
            let mut rx = bus.subscribe();
            let (q, st) = (queue.clone(), stats.clone());
            let ingress = std::thread::Builder::new()
                .name(format!("out-{name}-in"))
                .spawn(move || {
                    loop {
                        match rx.blocking_recv() {
                            Ok(e) => q.push(&map(&e)),
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                st.lagged.fetch_add(n, Ordering::Relaxed);
                                tracing::warn!(output = %st.name, lost = n, "output fell behind the event bus; events lost");
                            }
                            Err(broadcast::error::RecvError::Closed) => break,
                        }
                    }
                })?;
            let (q, st, stop2) = (queue.clone(), stats.clone(), stop.clone());
            let deliver = std::thread::Builder::new()
                .name(format!("out-{name}"))
                .spawn(move || deliver(delivery, q, st, stop2))?;
            tracing::info!(output = %name, kind = o.kind.as_str(), url = %stats.url, queued = queue.len(), "output started");
            outputs.push(Output {
                stats,
                queue,
                threads: vec![ingress, deliver],
            });
        }
        Ok(Outputs { outputs, stop })
    }

    pub fn status(&self) -> Vec<OutputStatus> {
        self.outputs
            .iter()
            .map(|o| {
                let s = &o.stats;
                OutputStatus {
                    name: s.name.clone(),
                    kind: s.kind,
                    url: s.url.clone(),
                    connected: s.connected(),
                    queued: o.queue.len(),
                    delivered: s.delivered.load(Ordering::Relaxed),
                    rejected: s.rejected.load(Ordering::Relaxed),
                    dropped: Dropped {
                        overflow: o.queue.overflowed.load(Ordering::Relaxed),
                        unwritable: o.queue.unwritable.load(Ordering::Relaxed),
                        lagged: s.lagged.load(Ordering::Relaxed),
                    },
                    failures: s.failures.load(Ordering::Relaxed),
                    last_error: s.last_error(),
                    last_delivery_ms: s.last_delivery_ms.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Stops the delivery threads (what is queued stays on disk for the next start). The
    /// ingress threads end when the event bus is dropped.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for o in &self.outputs {
            o.queue.wake();
        }
        for o in &mut self.outputs {
            // the delivery thread is the second; the ingress thread ends with the bus
            if o.threads.len() > 1 {
                let t = o.threads.remove(1);
                let _ = t.join();
            }
        }
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The delivery loop of one output: oldest first, back-off while the receiver is away.
fn deliver(mut d: Box<dyn Delivery>, q: Arc<DurableQueue>, st: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut backoff = BACKOFF_MIN;
    while !stop.load(Ordering::Relaxed) {
        let Some(item) = q.head(Duration::from_millis(250)) else {
            d.idle(&st);
            continue;
        };
        match d.send(&item, &st) {
            Sent::Delivered => {
                q.ack(item.seq);
                st.delivered.fetch_add(1, Ordering::Relaxed);
                st.last_delivery_ms.store(now_ms(), Ordering::Relaxed);
                if backoff != BACKOFF_MIN {
                    tracing::info!(output = %st.name, queued = q.len(), "output receiver back; delivering");
                    st.set_error(None);
                }
                backoff = BACKOFF_MIN;
            }
            Sent::Rejected(why) => {
                q.ack(item.seq);
                st.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(output = %st.name, seq = item.seq, topic = %item.message.topic, %why, "output receiver refused a message; dropped");
                st.set_error(Some(why));
            }
            Sent::Retry(why) => {
                st.failures.fetch_add(1, Ordering::Relaxed);
                if backoff == BACKOFF_MIN {
                    tracing::warn!(output = %st.name, %why, queued = q.len(), "output receiver unavailable; queueing and retrying");
                }
                st.set_error(Some(why));
                sleep_unless(&stop, backoff);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    d.close();
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// `/metrics` lines of the outputs.
pub fn metrics(out: &mut String, status: &[OutputStatus]) {
    use std::fmt::Write;
    if status.is_empty() {
        return;
    }
    let families: [(&str, &str, &str); 5] = [
        (
            "crosscam_output_queue_depth",
            "gauge",
            "Messages waiting on disk for the output's receiver",
        ),
        (
            "crosscam_output_delivered_total",
            "counter",
            "Messages the output's receiver took",
        ),
        (
            "crosscam_output_dropped_total",
            "counter",
            "Messages lost, by reason (overflow, unwritable, lagged, rejected)",
        ),
        (
            "crosscam_output_failures_total",
            "counter",
            "Delivery attempts that failed and were retried",
        ),
        (
            "crosscam_output_connected",
            "gauge",
            "1 when the output's receiver took the last attempt",
        ),
    ];
    for (name, kind, help) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in status {
            let o = &s.name;
            match name {
                "crosscam_output_queue_depth" => {
                    let _ = writeln!(out, "{name}{{output=\"{o}\"}} {}", s.queued);
                }
                "crosscam_output_delivered_total" => {
                    let _ = writeln!(out, "{name}{{output=\"{o}\"}} {}", s.delivered);
                }
                "crosscam_output_dropped_total" => {
                    for (reason, n) in [
                        ("overflow", s.dropped.overflow),
                        ("unwritable", s.dropped.unwritable),
                        ("lagged", s.dropped.lagged),
                        ("rejected", s.rejected),
                    ] {
                        let _ = writeln!(out, "{name}{{output=\"{o}\",reason=\"{reason}\"}} {n}");
                    }
                }
                "crosscam_output_failures_total" => {
                    let _ = writeln!(out, "{name}{{output=\"{o}\"}} {}", s.failures);
                }
                _ => {
                    let _ = writeln!(out, "{name}{{output=\"{o}\"}} {}", s.connected as u8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    type Request = (Vec<(String, String)>, Vec<u8>);

    /// A webhook receiver on a loopback port that answers `status` to each request and hands
    /// the requests (headers, body) to the test.
    fn receiver(answers: Vec<u16>) -> (String, std::sync::mpsc::Receiver<Request>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { break };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':').unwrap();
                    headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                }
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let status = answers.get(i).copied().unwrap_or(200);
                write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                if status == 200 {
                    tx.send((headers, body)).unwrap();
                }
            }
        });
        (url, rx)
    }

    /// Waits (up to 30 s) for the delivery thread to count what the receiver already has.
    fn wait_for(cond: impl Fn() -> bool) {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while !cond() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn merged(i: i64) -> Event {
        Event::IdentityMerged {
            t_ms: i,
            kept: 1,
            absorbed: i,
            reason: "test".into(),
        }
    }

    #[test]
    fn webhook_deliveries_are_signed_ordered_and_retried_through_errors() {
        // the receiver answers 503, then 500, then 200 to everything
        let (url, rx) = receiver(vec![503, 500]);
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: a variable only this test reads
        unsafe { std::env::set_var("CROSSCAM_TEST_HOOK_SECRET", "s3cret") };
        let o: OutputSettings = toml::from_str(&format!(
            "kind = \"webhook\"\nname = \"vms\"\nurl = \"{url}\"\nsecret_env = \"CROSSCAM_TEST_HOOK_SECRET\"\nevents = [\"identity_merged\"]"
        ))
        .unwrap();
        o.check().unwrap();
        let bus = EventBus::new(64);
        let outs = Outputs::start(&[o], dir.path(), &bus).unwrap();
        bus.publish(Event::TrackletStarted {
            t_ms: 0,
            camera: "a".into(),
            track: 1,
        });
        for i in 2..6 {
            bus.publish(merged(i));
        }
        let mut got = Vec::new();
        for _ in 2..6 {
            got.push(rx.recv_timeout(Duration::from_secs(30)).unwrap());
        }
        wait_for(|| outs.status()[0].delivered == 4);
        let mut seqs = Vec::new();
        for (i, (h, body)) in got.iter().enumerate() {
            let get = |k: &str| {
                h.iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(v["type"], "identity_merged");
            assert_eq!(v["absorbed"], i as i64 + 2, "in order");
            assert_eq!(get("x-crosscam-event"), "identity_merged");
            assert_eq!(
                get("x-crosscam-signature-256"),
                webhook::signature(b"s3cret", body)
            );
            seqs.push(get("x-crosscam-delivery"));
        }
        seqs.dedup();
        assert_eq!(seqs.len(), 4, "one delivery id per event: {seqs:?}");
        let st = &outs.status()[0];
        assert_eq!(st.delivered, 4);
        assert_eq!(st.failures, 2);
        assert_eq!(st.queued, 0);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "nothing twice"
        );
    }

    #[test]
    fn a_refused_message_is_dropped_and_the_next_goes() {
        let (url, rx) = receiver(vec![400]);
        let dir = tempfile::tempdir().unwrap();
        let o: OutputSettings =
            toml::from_str(&format!("kind = \"webhook\"\nurl = \"{url}\"")).unwrap();
        let bus = EventBus::new(64);
        let outs = Outputs::start(&[o], dir.path(), &bus).unwrap();
        bus.publish(merged(1));
        bus.publish(merged(2));
        let (_, body) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["absorbed"], 2);
        wait_for(|| outs.status()[0].delivered == 1);
        let st = &outs.status()[0];
        assert_eq!((st.rejected, st.delivered), (1, 1));
        assert!(st.last_error.as_deref().unwrap().contains("400"));
        let mut m = String::new();
        metrics(&mut m, &outs.status());
        assert!(
            m.contains("crosscam_output_dropped_total{output=\"webhook-1\",reason=\"rejected\"} 1"),
            "{m}"
        );
    }
}
