//! Outputs against real receivers: a real `mosquitto` broker and a real HTTP webhook receiver on
//! 127.0.0.1, fed by a real daemon on two file cameras. Both receivers go away for a while (the
//! broker is stopped, the receiver's port closed) and come back: every event the daemon wrote
//! to its `--events` file arrives at both, once, in the same order, with the documented payload
//! and a valid signature; the cameras keep running while the receivers are away.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, add_user, clip_camera, config_text};
use serde_json::{Value, json};

const SECRET: &str = "webhook-test-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).is_file() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run make setup");
}

/// A mosquitto broker on 127.0.0.1:`port` that keeps sessions on disk (so a persistent
/// subscriber gets what was published while it was reconnecting).
struct Broker {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    fn start(port: u16) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_string();
        std::fs::write(
            dir.path().join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\nuser {user}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            dir,
            child: None,
        };
        b.up();
        b
    }

    fn up(&mut self) {
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: mosquitto saves its sessions and exits.
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request the webhook receiver took.
#[derive(Clone, Debug)]
struct Hook {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Hook {
    fn header(&self, k: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// An HTTP receiver on a fixed loopback port that can be taken down (its port closed:
/// connections are refused) and brought back.
struct Receiver {
    port: u16,
    up: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Hook>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let port = free_port();
        let up = Arc::new(AtomicBool::new(true));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (u, g) = (up.clone(), got.clone());
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            loop {
                if !u.load(Ordering::SeqCst) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
                    l.set_nonblocking(true).unwrap();
                    l
                });
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        if let Some(h) = read_request(s) {
                            g.lock().unwrap().push(h);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, up, got }
    }

    fn got(&self) -> Vec<Hook> {
        self.got.lock().unwrap().clone()
    }
}

fn read_request(mut s: std::net::TcpStream) -> Option<Hook> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    assert!(line.starts_with("POST /hook "), "{line}");
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Hook { headers, body })
}

/// One message the test's MQTT subscriber got.
#[derive(Clone, Debug)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
}

/// A persistent-session subscriber to `#` that reconnects on its own.
fn subscribe(port: u16) -> Arc<Mutex<Vec<Msg>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut o = rumqttc::MqttOptions::new("crosscam-test-subscriber", "127.0.0.1", port);
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = rumqttc::Client::new(o, 64);
    client.subscribe("#", rumqttc::QoS::AtLeastOnce).unwrap();
    std::thread::spawn(move || {
        let _client = client;
        loop {
            match conn.recv() {
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)))) => {
                    g.lock().unwrap().push(Msg {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                    });
                }
                Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))))
                    if !c.session_present =>
                {
                    // a new session (the first connection): subscribe again to be sure
                    let _ = _client.try_subscribe("#", rumqttc::QoS::AtLeastOnce);
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => return,
            }
        }
    });
    got
}

fn events_file(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `got` contains `want` as one contiguous run (the events file subscribes a moment after the
/// outputs, so the outputs may have a few camera states before it): panics naming the first
/// difference.
fn assert_contains_run(what: &str, got: &[Value], want: &[Value]) {
    assert!(!want.is_empty());
    let k = got
        .iter()
        .position(|g| g == &want[0])
        .unwrap_or_else(|| panic!("{what}: the first event {} never arrived", want[0]));
    assert!(
        got[..k].iter().all(|g| g["type"] == "camera_state"),
        "{what}: only camera states come before the events file's first line: {:?}",
        &got[..k]
    );
    for (i, w) in want.iter().enumerate() {
        let g = got.get(k + i);
        assert_eq!(
            g,
            Some(w),
            "{what}: event {i} of the events file (in order, once) differs"
        );
    }
}

fn frames(d: &Daemon, token: &str) -> Vec<(String, u64)> {
    let (_, s) = d.get("/api/v1/status", Some(token));
    s["pipeline"]["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["analysed"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn output<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap()
}

#[test]
fn events_reach_mqtt_and_webhooks_once_in_order_through_an_outage() {
    // SAFETY: set before any thread of this test reads the environment; only the daemon (a
    // child process, which inherits it) and `user add` use it.
    unsafe { std::env::set_var("CROSSCAM_TEST_WEBHOOK_SECRET", SECRET) };
    let mut broker = Broker::start(free_port());
    let mqtt = subscribe(broker.port);
    let hooks = Receiver::start();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let events = dir.path().join("events.jsonl");
    let outputs = format!(
        "[[outputs]]\nkind = \"mqtt\"\nname = \"broker\"\nurl = \"mqtt://127.0.0.1:{}\"\nhome_assistant = true\n\n[[outputs]]\nkind = \"webhook\"\nname = \"vms\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_env = \"CROSSCAM_TEST_WEBHOOK_SECRET\"\n",
        broker.port, hooks.port
    );
    let cameras = format!(
        "{}{}{outputs}",
        clip_camera("a", 0.0),
        clip_camera("b", 0.0)
    );
    std::fs::write(&config, config_text(dir.path(), &cameras, "")).unwrap();
    for (n, r) in [("admin", "admin"), ("operator", "operator")] {
        add_user(&config, n, r);
    }
    let d = Daemon::spawn_with(dir, config, &["--events", events.to_str().unwrap()]);
    let admin = d.login("admin");
    let operator = d.login("operator");

    // people found on both cameras
    let ids: Vec<i64> = d.wait_for(120, "two identities", || {
        let (_, v) = d.get("/api/v1/identities", Some(&operator));
        let ids: Vec<i64> = v["identities"]
            .as_array()?
            .iter()
            .filter(|i| i["sightings"].as_i64().unwrap_or(0) > 0)
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        (ids.len() >= 2).then_some(ids)
    });
    d.wait_for(60, "webhook deliveries", || {
        (hooks.got().len() > 5).then_some(())
    });

    // ---- the receivers go away -----------------------------------------------------------------
    hooks.up.store(false, Ordering::SeqCst);
    broker.down();
    let before = frames(&d, &admin);
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{}/merge", ids[0]),
        Some(&operator),
        &json!({"absorb": ids[1], "reason": "outputs test"}),
    );
    assert_eq!(st, 200, "{v}");
    let (_, after_merge) = d.get(&format!("/api/v1/identities/{}", ids[0]), Some(&operator));
    let tracklet = after_merge["sightings"].as_array().unwrap()[0]["tracklet"]
        .as_i64()
        .unwrap();
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{}/split", ids[0]),
        Some(&operator),
        &json!({"tracklets": [tracklet]}),
    );
    assert_eq!(st, 200, "{v}");
    let status = d.wait_for(60, "both outputs to queue while away", || {
        let (_, s) = d.get("/api/v1/status", Some(&admin));
        let (m, w) = (output(&s, "broker"), output(&s, "vms"));
        let away = |o: &Value| {
            o["connected"] == false
                && o["queued"].as_u64().unwrap_or(0) > 0
                && o["last_error"].is_string()
        };
        (away(m) && away(w)).then_some(s)
    });
    std::thread::sleep(Duration::from_secs(6));
    let during = frames(&d, &admin);
    for ((cam, f0), (_, f1)) in before.iter().zip(&during) {
        assert!(
            f1 > f0,
            "camera {cam} kept analysing while the receivers were away ({f0} → {f1} frames)"
        );
    }
    let (_, _, metrics) = d.get_bytes("/metrics", Some(&admin));
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("crosscam_output_connected{output=\"vms\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("crosscam_output_queue_depth{output=\"broker\"}"));
    eprintln!(
        "while away: {} events written, status {}",
        events_file(&events).len(),
        output(&status, "vms")
    );

    // ---- they come back: everything arrives ------------------------------------------------------
    broker.up();
    hooks.up.store(true, Ordering::SeqCst);
    let want = events_file(&events);
    let n = want.len();
    d.wait_for(180, "every queued event delivered", || {
        let (_, s) = d.get("/api/v1/status", Some(&admin));
        let drained = |o: &Value| o["queued"] == 0 && o["connected"] == true;
        let m = mqtt
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.starts_with("crosscam/events/"))
            .count();
        (drained(output(&s, "vms"))
            && drained(output(&s, "broker"))
            && hooks.got().len() >= n
            && m >= n)
            .then_some(())
    });

    // webhooks: every event once, in order, signed, with its type in a header
    let got = hooks.got();
    let mut ids_seen = HashSet::new();
    let mut last_seq = 0u64;
    for h in &got {
        let delivery = h.header("x-crosscam-delivery");
        assert!(
            ids_seen.insert(delivery.to_string()),
            "delivered twice: {delivery}"
        );
        let seq: u64 = delivery.strip_prefix("vms-").unwrap().parse().unwrap();
        assert!(
            seq > last_seq,
            "deliveries in order: {seq} after {last_seq}"
        );
        last_seq = seq;
        assert_eq!(
            h.header("x-crosscam-signature-256"),
            crosscam::outputs::webhook::signature(SECRET.as_bytes(), &h.body)
        );
        let v: Value = serde_json::from_slice(&h.body).unwrap();
        assert_eq!(h.header("x-crosscam-event"), v["type"].as_str().unwrap());
    }
    let bodies: Vec<Value> = got
        .iter()
        .map(|h| serde_json::from_slice(&h.body).unwrap())
        .collect();
    assert_contains_run("webhook", &bodies, &want);

    // MQTT: the same events on <prefix>/events/<type>, in order, once — except that QoS 1 is
    // "at least once" on each of its two hops: the one message in flight when the broker went
    // away (delivery is one message at a time) may have reached the broker before crosscam got
    // its acknowledgement (crosscam sends it again), and the broker may deliver it again to
    // this subscriber's persistent session after its restart. Identical payloads in a row can
    // only be that (every event has its own time and ids): one outage allows that one message
    // at most twice more, and no other.
    let msgs = mqtt.lock().unwrap().clone();
    let mut on_events: Vec<Value> = Vec::new();
    let mut repeated: Vec<Value> = Vec::new();
    for m in &msgs {
        if let Some(t) = m.topic.strip_prefix("crosscam/events/") {
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(v["type"], t, "topic and payload type agree");
            if on_events.last() == Some(&v) {
                eprintln!("mqtt: redelivered after the outage: {v}");
                repeated.push(v);
                continue;
            }
            on_events.push(v);
        }
    }
    assert!(
        repeated.len() <= 2 && repeated.windows(2).all(|w| w[0] == w[1]),
        "mqtt: {} repeated messages after one outage (at most the one in flight, once per hop): {repeated:?}",
        repeated.len()
    );
    assert_contains_run("mqtt", &on_events, &want);

    let kinds: HashSet<&str> = want.iter().filter_map(|v| v["type"].as_str()).collect();
    for k in [
        "camera_state",
        "tracklet_started",
        "tracklet_ended",
        "identity_created",
        "identity_merged",
        "identity_split",
    ] {
        assert!(kinds.contains(k), "the run produced {k} events: {kinds:?}");
    }

    // retained state and counts per camera, availability, Home Assistant discovery
    let last = |topic: &str| -> Option<Vec<u8>> {
        msgs.iter()
            .rev()
            .find(|m| m.topic == topic)
            .map(|m| m.payload.clone())
    };
    let state: Value = serde_json::from_slice(&last("crosscam/cameras/a/state").unwrap()).unwrap();
    assert_eq!(state["state"], "live", "{state}");
    let people = String::from_utf8(last("crosscam/cameras/b/people").unwrap()).unwrap();
    assert!(people.parse::<u64>().is_ok(), "a count: {people:?}");
    assert_eq!(last("crosscam/available").unwrap(), b"online");
    let disc: Value = serde_json::from_slice(
        &last("homeassistant/sensor/crosscam_crosscam_a_people/config").unwrap(),
    )
    .unwrap();
    assert_eq!(disc["state_topic"], "crosscam/cameras/a/people");
    assert_eq!(disc["availability_topic"], "crosscam/available");
}
