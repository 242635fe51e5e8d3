//! Edge and core roles over a real NATS JetStream broker (docs/scaling.md): one core and two
//! edges, each a `crosscam serve` process, with two file cameras per edge, and a `nats-server
//! -js` on 127.0.0.1 (from `make setup`) that is killed and started again (same store
//! directory) while the edges are publishing. Every tracklet the edges had acknowledged by the
//! broker must be in the core's store exactly once, and every described one a sighting.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, add_user, clip_camera, config_text};

const SITE: &str = "lab-1";

fn nats_server() -> PathBuf {
    let p = crosscam::paths::deps_dir().join("nats/nats-server");
    assert!(p.is_file(), "{} missing: run make setup", p.display());
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `nats-server -js` on 127.0.0.1:`port` keeping its streams in `store`.
struct Broker {
    child: common::KillOnDrop,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    fn start(port: u16, store: &Path) -> Broker {
        let mut cmd = Command::new(nats_server());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store);
        Broker::spawn(cmd)
    }

    /// A `nats-server -c conf` (users, a cluster of nodes).
    fn with_config(conf: &Path) -> Broker {
        let mut cmd = Command::new(nats_server());
        cmd.arg("-c").arg(conf);
        Broker::spawn(cmd)
    }

    /// Starts `cmd` and waits until the server says it is ready.
    fn spawn(mut cmd: Command) -> Broker {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let b = Broker {
            child: common::KillOnDrop(child),
            log,
        };
        let t0 = Instant::now();
        while !b
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("Server is ready"))
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nats-server did not start:\n{}",
                b.log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        b
    }

    /// `kill -9`.
    fn kill(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

fn cluster_section(port: u16, name: &str) -> String {
    format!(
        "\n[cluster]\nnats = \"nats://127.0.0.1:{port}\"\nsite = \"{SITE}\"\nedge = \"{name}\"\nbuffer_max = 100000\n"
    )
}

/// A file camera playing the bundled clip from `start_s` to its end, once.
fn once_camera(id: &str, start_s: f64) -> String {
    clip_camera(id, start_s).replace("loop_file = true", "loop_file = false")
}

fn spawn(role: &str, cameras: &str, port: u16, name: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let text = config_text(dir.path(), cameras, "") + &cluster_section(port, name);
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    Daemon::spawn_with(dir, config, &["--role", role])
}

fn status(d: &Daemon, token: &str) -> serde_json::Value {
    let (st, v) = d.get("/api/v1/status", Some(token));
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits (at most `secs`) for a stopped edge's last log line, which may still be on the way from
/// the pipe; returns what it starts with, for [`logged`].
fn last_line(e: &Daemon, secs: u64) -> &'static str {
    let stopped = "edge: stopped";
    e.wait_for(secs, "the edge's last log line", || {
        e.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(stopped))
            .then_some(())
    });
    stopped
}

/// A client runtime and the site's stream, made as a core would (for tests without a core).
fn site_stream(port: u16) -> (tokio::runtime::Runtime, async_nats::jetstream::Context) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async {
        let js = async_nats::jetstream::new(
            async_nats::connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap(),
        );
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "CROSSCAM_LAB_1".into(),
            subjects: vec![format!("crosscam.{SITE}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
        js
    });
    (rt, js)
}

/// `key=value` of the last log line containing `what`.
fn logged(d: &Daemon, what: &str, key: &str) -> u64 {
    let log = d.log.lock().unwrap();
    let line = log
        .iter()
        .rev()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no log line {what:?}:\n{}", log.join("\n")));
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    v.parse().unwrap_or_else(|_| panic!("{key}={v} in {line}"))
}

fn count(db: &rusqlite::Connection, sql: &str) -> u64 {
    db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64
}

/// Publishes every observation of the site's stream again, without its message id (the stream
/// stores them as new messages), then `hostile` messages the core cannot read: not protobuf, a
/// camera that does not match its subject, a camera id that is not a subject token. Returns
/// (copies, hostile).
fn republish(port: u16) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("CROSSCAM_LAB_1").await.unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let obs = format!("crosscam.{SITE}.obs.");
        let mut copies = 0;
        let mut sample = None;
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            if m.subject.as_str().starts_with(&obs) {
                js.publish(m.subject.clone(), m.payload.clone())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                copies += 1;
                sample.get_or_insert((m.subject, m.payload));
            }
        }
        let (subject, payload) = sample.expect("observations in the stream");
        let other = if subject.as_str().ends_with(".a1") {
            "b1"
        } else {
            "a1"
        };
        let mut bad_id =
            <crosscam::cluster::wire::Observation as prost::Message>::decode(payload.clone())
                .unwrap();
        bad_id.camera = "a1.x".into();
        for (subject, payload) in [
            (
                subject.to_string(),
                bytes::Bytes::from_static(b"\xff\x00 not protobuf"),
            ),
            (format!("{obs}{other}"), payload),
            (
                format!("{obs}a1"),
                prost::Message::encode_to_vec(&bad_id).into(),
            ),
        ] {
            js.publish(subject, payload).await.unwrap().await.unwrap();
        }
        (copies, 3)
    })
}

#[test]
fn edges_feed_one_core_through_jetstream_and_a_broker_restart_loses_and_duplicates_nothing() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let broker = Broker::start(port, store.path());

    let mut core = spawn("core", "", port, "core");
    core.wait_for(60, "the core's stream and consumer", || {
        core.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("stream and consumer ready"))
            .then_some(())
    });
    // about 20 s of the clip per camera, in real time; different parts of it per camera
    let mut edges = [
        spawn(
            "edge",
            &(once_camera("a1", 58.0) + &once_camera("a2", 62.0)),
            port,
            "edge-a",
        ),
        spawn(
            "edge",
            &(once_camera("b1", 60.0) + &once_camera("b2", 64.0)),
            port,
            "edge-b",
        ),
    ];
    let tokens: Vec<String> = edges.iter().map(|e| e.login("admin")).collect();

    // the broker goes down once both edges have published something
    for (e, t) in edges.iter().zip(&tokens) {
        e.wait_for(
            120,
            "a first observation acknowledged by the broker",
            || (status(e, t)["pipeline"]["cluster"]["published"].as_u64() > Some(2)).then_some(()),
        );
    }
    broker.kill();
    // while it is down the edges keep tracking and buffer what they would publish
    for (e, t) in edges.iter().zip(&tokens) {
        e.wait_for(60, "observations buffered during the outage", || {
            let c = &status(e, t)["pipeline"]["cluster"];
            (c["buffered"].as_u64() > Some(0) && c["connected"] == false).then_some(())
        });
    }
    let _broker = Broker::start(port, store.path());

    // the clips end: the cameras stop, their last tracklets end
    for (e, t) in edges.iter().zip(&tokens) {
        e.wait_for(240, "every camera to finish its clip", || {
            let v = status(e, t);
            let cams = v["pipeline"]["cameras"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (cams.len() == 2 && cams.iter().all(|c| c["state"] == "stopped")).then_some(())
        });
    }
    let mut ended = 0;
    let mut described = 0;
    for e in &mut edges {
        assert!(
            e.stop(),
            "the edge did not stop cleanly:\n{}",
            e.log_tail(40)
        );
        let stopped = last_line(e, 10);
        assert_eq!(logged(e, stopped, "dropped"), 0, "{}", e.log_tail(20));
        assert_eq!(logged(e, stopped, "unpublished"), 0, "{}", e.log_tail(20));
        assert!(
            logged(e, stopped, "buffered_peak") > 0,
            "nothing was buffered during the outage"
        );
        ended += logged(e, stopped, "ended_tracklets");
        described += logged(e, stopped, "described_tracklets");
    }
    assert!(
        described >= 4,
        "too few described tracklets to say anything ({described})"
    );

    // the core takes everything from the stream
    let db_path = core.dir.path().join("data/crosscam.db");
    let open = || {
        rusqlite::Connection::open_with_flags(&db_path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    };
    core.wait_for(180, "every ended tracklet in the core's store", || {
        (count(&open(), "SELECT COUNT(*) FROM tracklets WHERE ended = 1") >= ended).then_some(())
    });
    let token = core.login("admin");
    let before = status(&core, &token)["pipeline"]["cluster"].clone();
    assert_eq!(before["malformed"], 0, "{before}");
    // the core's status names the edges, the cameras each sent, and the lag; nothing is waiting
    let edges: Vec<(String, Vec<String>)> = before["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges in the core's status: {before}"))
        .iter()
        .map(|e| {
            assert!(e["messages"].as_u64() > Some(0), "{e}");
            assert!(e["lag_ms"].as_i64().is_some_and(|l| l >= 0), "{e}");
            (
                e["edge"].as_str().unwrap().to_string(),
                e["cameras"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        [
            (
                "edge-a".to_string(),
                vec!["a1".to_string(), "a2".to_string()]
            ),
            (
                "edge-b".to_string(),
                vec!["b1".to_string(), "b2".to_string()]
            ),
        ],
        "{before}"
    );
    assert_eq!(before["backlog"], 0, "{before}");

    // copies that get past the broker's de-duplication (published again without their message
    // id, as after the duplicate window) and hostile messages: the core drops them all
    let (copies, hostile) = republish(port);
    core.wait_for(
        120,
        "the copies and the hostile messages dealt with",
        || {
            let c = status(&core, &token)["pipeline"]["cluster"].clone();
            let dup = c["duplicates"].as_u64().unwrap() - before["duplicates"].as_u64().unwrap();
            (dup == copies && c["malformed"].as_u64() == Some(hostile)).then_some(())
        },
    );
    let after = status(&core, &token)["pipeline"]["cluster"].clone();
    eprintln!(
        "edges: {ended} ended tracklets, {described} described; core before the copies: {before}; after: {after}; {copies} copies, {hostile} hostile messages"
    );
    assert!(
        core.stop(),
        "the core did not stop cleanly:\n{}",
        core.log_tail(40)
    );

    let db = open();
    let rows = count(&db, "SELECT COUNT(*) FROM tracklets");
    let ended_rows = count(&db, "SELECT COUNT(*) FROM tracklets WHERE ended = 1");
    let sightings = count(
        &db,
        "SELECT COUNT(*) FROM sightings s JOIN tracklets t ON t.id = s.tracklet WHERE t.ended = 1",
    );
    assert_eq!(
        (rows, ended_rows, sightings),
        (ended, ended, described),
        "core store (tracklets, ended tracklets, sightings) vs what the edges published (ended, ended, described)"
    );
    // one store run per edge run: a copy delivered again never became a second tracklet
    assert_eq!(count(&db, "SELECT COUNT(*) FROM edge_runs"), 2);
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM (SELECT camera, run, track_id FROM tracklets GROUP BY camera, run, track_id HAVING COUNT(*) > 1)"
        ),
        0
    );
    // the edges' camera states reached the core
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM cameras WHERE id IN ('a1', 'a2', 'b1', 'b2') AND state = 'stopped'"
        ),
        4
    );
}

#[test]
fn an_edge_without_its_broker_keeps_the_newest_observations_up_to_its_bound_and_delivers_them_later()
 {
    // no broker yet: the edge starts anyway and buffers at most 5 messages
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let text = config_text(dir.path(), &once_camera("solo", 66.0), "")
        + &cluster_section(port, "edge-solo")
            .replace("buffer_max = 100000", "buffer_max = 5\nbuffer_disk_mb = 0");
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    let mut edge = Daemon::spawn_with(dir, config, &["--role", "edge"]);
    let token = edge.login("admin");
    edge.wait_for(120, "observations dropped over the bound", || {
        let c = status(&edge, &token)["pipeline"]["cluster"].clone();
        (c["dropped"].as_u64() > Some(0) && c["buffered"] == 5 && c["connected"] == false)
            .then_some(())
    });
    let (st, _, metrics) = edge.get_bytes("/metrics", Some(&token));
    assert_eq!(st, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("crosscam_cluster_dropped_total{site=\"lab-1\"}")
            && metrics.contains("crosscam_cluster_buffered{site=\"lab-1\"} 5"),
        "{metrics}"
    );

    // the broker and the site's stream come: what is buffered goes out
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let (rt, js) = site_stream(port);
    edge.wait_for(120, "the buffer delivered", || {
        let c = status(&edge, &token)["pipeline"]["cluster"].clone();
        (c["buffered"] == 0 && c["published"].as_u64() >= Some(5)).then_some(())
    });
    assert!(edge.stop(), "{}", edge.log_tail(40));
    let stopped = last_line(&edge, 10);
    assert!(logged(&edge, stopped, "dropped") > 0);
    assert_eq!(logged(&edge, stopped, "unpublished"), 0);
    // everything the edge says it published is in the stream, once
    let stored = rt.block_on(async {
        js.get_stream("CROSSCAM_LAB_1")
            .await
            .unwrap()
            .get_info()
            .await
            .unwrap()
            .state
            .messages
    });
    assert_eq!(
        stored,
        logged(&edge, stopped, "published") - logged(&edge, stopped, "publish_duplicates")
    );
}

#[test]
fn an_edge_keeps_what_the_broker_never_took_on_disk_and_delivers_it_after_a_restart() {
    // no broker: 5 messages in memory, the rest on disk (cluster.buffer_disk_mb, default)
    let port = free_port();
    let keep = tempfile::tempdir().unwrap();
    let cluster =
        cluster_section(port, "edge-disk").replace("buffer_max = 100000", "buffer_max = 5");
    let write = |cameras: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("site.toml");
        std::fs::write(&config, config_text(keep.path(), cameras, "") + &cluster).unwrap();
        (dir, config)
    };
    let (dir, config) = write(&once_camera("solo", 66.0));
    add_user(&config, "admin", "admin");
    let mut edge = Daemon::spawn_with(dir, config, &["--role", "edge"]);
    let token = edge.login("admin");
    edge.wait_for(
        120,
        "the clip played to its end, observations on disk",
        || {
            let v = status(&edge, &token);
            let c = &v["pipeline"]["cluster"];
            let stopped = v["pipeline"]["cameras"]
                .as_array()
                .is_some_and(|cs| cs.iter().all(|c| c["state"] == "stopped"));
            (stopped && c["buffered_on_disk"].as_u64() > Some(0) && c["connected"] == false)
                .then_some(())
        },
    );
    let c = status(&edge, &token)["pipeline"]["cluster"].clone();
    assert_eq!(c["dropped"], 0, "{c}");
    assert!(c["buffered_disk_bytes"].as_u64() > Some(0), "{c}");
    // stopped while the broker is still away: what was in memory goes to disk too
    assert!(edge.stop(), "{}", edge.log_tail(40));
    let stopped = last_line(&edge, 30);
    let on_disk = logged(&edge, stopped, "on_disk");
    assert!(on_disk > 5, "{}", edge.log_tail(10));
    assert_eq!(logged(&edge, stopped, "published"), 0);
    assert_eq!(logged(&edge, stopped, "dropped"), 0);
    assert_eq!(logged(&edge, stopped, "unpublished"), 0);
    drop(edge);

    // the broker and the stream come; the edge starts again on the same data, without cameras:
    // it delivers what waited on disk, in order, and nothing twice
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let (rt, js) = site_stream(port);
    let (dir, config) = write("");
    let mut edge = Daemon::spawn_with(dir, config, &["--role", "edge"]);
    let token = edge.login("admin");
    edge.wait_for(60, "the disk buffer delivered", || {
        let c = status(&edge, &token)["pipeline"]["cluster"].clone();
        (c["buffered"] == 0 && c["published"].as_u64() >= Some(on_disk)).then_some(())
    });
    assert!(edge.stop(), "{}", edge.log_tail(40));
    let stream = rt.block_on(async { js.get_stream("CROSSCAM_LAB_1").await.unwrap() });
    let info = rt.block_on(async { stream.clone().get_info().await.unwrap() });
    // every observation of the first run, once: their ids are the first run's
    let obs = format!("crosscam.{SITE}.obs.");
    let mut observations = 0;
    let mut ids = std::collections::BTreeSet::new();
    for seq in 1..=info.state.last_sequence {
        let m = rt.block_on(async { stream.get_raw_message(seq).await.unwrap() });
        if m.subject.as_str().starts_with(&obs) {
            observations += 1;
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.to_string())
                .expect("an observation carries its message id");
            assert!(id.starts_with("solo/"), "{id}");
            ids.insert(id);
        }
    }
    assert_eq!(ids.len(), observations, "an observation stored twice");
    assert!(observations > 5, "{observations}");
    assert_eq!(info.state.messages, on_disk, "{info:?}");
}

/// An edge with no cameras of its own, allowed to play the bundled media (the site's file
/// cameras come from there).
fn spawn_edge(port: u16, name: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let text = config_text(dir.path(), "", "")
        + &cluster_section(port, name)
        + &format!(
            "\n[ingest]\nmedia_dirs = [\"{}\"]\n",
            crosscam::paths::media("").display()
        );
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    Daemon::spawn_with(dir, config, &["--role", "edge"])
}

/// The core's placement: camera → the edge running it.
fn placement(v: &serde_json::Value) -> std::collections::BTreeMap<String, Option<String>> {
    v["pipeline"]["cluster"]["placement"]
        .as_array()
        .unwrap_or_else(|| panic!("no placement in the core's status: {v}"))
        .iter()
        .map(|a| {
            (
                a["camera"].as_str().unwrap().to_string(),
                a["edge"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Cameras an edge runs, with their states.
fn running(e: &Daemon, token: &str) -> Vec<(String, String)> {
    let v = status(e, token);
    let mut cams: Vec<(String, String)> = v["pipeline"]["cameras"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    cams.sort();
    cams
}

fn on(p: &std::collections::BTreeMap<String, Option<String>>, edge: &str) -> Vec<String> {
    p.iter()
        .filter(|(_, e)| e.as_deref() == Some(edge))
        .map(|(c, _)| c.clone())
        .collect()
}

#[test]
fn cameras_defined_at_the_core_run_on_live_edges_and_move_when_one_is_killed() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let all = ["c1", "c2", "c3", "c4"];
    let cameras: String = all
        .iter()
        .enumerate()
        .map(|(i, id)| clip_camera(id, 15.0 * i as f64))
        .collect();
    // the cameras are defined once, at the core; it runs none of them
    let core = spawn("core", &cameras, port, "core");
    let token = core.login("admin");
    // the edges start together (as after a power cut): they share the cameras from the start
    let (mut e1, e2) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_edge(port, "e1"));
        let b = s.spawn(|| spawn_edge(port, "e2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (t1, t2) = (e1.login("admin"), e2.login("admin"));

    // balanced: two cameras per edge, each running where the core says
    let p = core.wait_for(90, "two cameras on each edge", || {
        let p = placement(&status(&core, &token));
        (p.len() == 4 && on(&p, "e1").len() == 2 && on(&p, "e2").len() == 2).then_some(p)
    });
    assert!(
        status(&core, &token)["pipeline"]["cameras"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "the core runs cameras itself"
    );
    for (e, t, name) in [(&e1, &t1, "e1"), (&e2, &t2, "e2")] {
        e.wait_for(60, "the edge's assigned cameras live", || {
            let r = running(e, t);
            (r.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>() == on(&p, name)
                && r.iter().all(|(_, s)| s == "live"))
            .then_some(())
        });
    }
    // both edges' observations reach the core, for all four cameras
    core.wait_for(120, "observations of every camera from its edge", || {
        let v = status(&core, &token);
        let seen: Vec<(String, Vec<String>)> = v["pipeline"]["cluster"]["edges"]
            .as_array()?
            .iter()
            .map(|e| {
                (
                    e["edge"].as_str().unwrap_or_default().to_string(),
                    e["cameras"]
                        .as_array()
                        .map(|c| {
                            c.iter()
                                .filter_map(|x| x.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            })
            .collect();
        // (an edge that started first may have run more cameras before the other came)
        ["e1", "e2"]
            .iter()
            .all(|name| {
                seen.iter()
                    .any(|(e, cams)| e == name && on(&p, name).iter().all(|c| cams.contains(c)))
            })
            .then_some(())
    });
    // the core's status carries each edge's heartbeat: alive, its cameras, its buffer
    core.wait_for(10, "both edges' heartbeats with their cameras", || {
        let v = status(&core, &token);
        let edges = v["pipeline"]["cluster"]["edges"].as_array()?.clone();
        (edges.len() == 2
            && edges.iter().all(|e| {
                let name = e["edge"].as_str().unwrap_or_default();
                e["alive"] == true
                    && e["buffered"].as_u64() == Some(0)
                    && e["assigned"] == serde_json::json!(on(&p, name))
            }))
        .then_some(())
    });
    // the core's web UI shows where each camera runs and the edges (real Chromium)
    browser_check(&core, &["e1", "e2"], &all);
    // an edge's API does not change a camera the core assigned
    let (st, body) = e2.delete(&format!("/api/v1/cameras/{}", on(&p, "e2")[0]), Some(&t2));
    assert_eq!(st, 409, "{body}");

    // kill -9 one edge: its cameras run on the other within the lease (5 s) and a round
    let moved = on(&p, "e1");
    let _ = e1.child.0.kill();
    let _ = e1.child.0.wait();
    let t0 = Instant::now();
    e2.wait_for(60, "the dead edge's cameras live on the other edge", || {
        let r = running(&e2, &t2);
        (r.len() == 4 && r.iter().all(|(_, s)| s == "live")).then_some(())
    });
    let failover = t0.elapsed();
    eprintln!(
        "failover: the killed edge's {} cameras were live on the other edge after {:.1} s",
        moved.len(),
        failover.as_secs_f64()
    );
    assert!(
        failover < Duration::from_secs(15),
        "{:.1} s: more than the lease (5 s), a round and a camera start",
        failover.as_secs_f64()
    );
    // linking goes on: the moved cameras' observations now come from e2
    core.wait_for(60, "observations of the moved cameras from e2", || {
        let v = status(&core, &token);
        let e2seen = v["pipeline"]["cluster"]["edges"]
            .as_array()?
            .iter()
            .find(|e| e["edge"] == "e2")?
            .clone();
        let cams: Vec<&str> = e2seen["cameras"]
            .as_array()?
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        moved
            .iter()
            .all(|m| cams.contains(&m.as_str()))
            .then_some(())
    });
    core.wait_for(10, "the core's placement: every camera on e2", || {
        (on(&placement(&status(&core, &token)), "e2") == all).then_some(())
    });

    // the killed edge comes back: the other gives cameras back one at a time, stopping them
    // first (no camera taken from the edge running it), until each runs two again
    let gave_back = || {
        e2.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("edge: gave a camera back"))
            .count()
    };
    let gave_back_before = gave_back();
    let e1 = spawn_edge(port, "e1");
    let t1 = e1.login("admin");
    let p = core.wait_for(
        2 * assign_wait() + 60,
        "two cameras on each edge again",
        || {
            let p = placement(&status(&core, &token));
            (on(&p, "e1").len() == 2 && on(&p, "e2").len() == 2).then_some(p)
        },
    );
    e1.wait_for(60, "the returned edge's cameras live", || {
        let r = running(&e1, &t1);
        (r.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>() == on(&p, "e1")
            && r.iter().all(|(_, s)| s == "live"))
        .then_some(())
    });
    assert_eq!(gave_back() - gave_back_before, 2, "{}", e2.log_tail(30));
    // the running edge no longer runs what it gave back
    let r = running(&e2, &t2);
    assert_eq!(
        r.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(),
        on(&p, "e2"),
        "{r:?}"
    );
}

/// An edge analysing its cameras at `fps` frames per second (`[analysis] fps`): the same
/// camera costs an edge at 5 fps five times what it costs one at 1 fps.
fn spawn_edge_at(port: u16, name: &str, fps: u32) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let text = config_text(dir.path(), "", "").replace("fps = 5\n", &format!("fps = {fps}\n"))
        + &cluster_section(port, name);
    assert!(text.contains(&format!("fps = {fps}\n")), "{text}");
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    Daemon::spawn_with(dir, config, &["--role", "edge"])
}

/// Whether an edge said it gave a camera back for balance.
fn gave_back(e: &Daemon) -> bool {
    e.log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("edge: gave a camera back"))
}

/// Shares follow the edges' measured load: two edges start together and split eight cameras
/// evenly (nothing measured yet); the one that analyses each camera five times as often (and so
/// pays more CPU per camera, decoding aside) then gives cameras back until the cheaper one runs
/// at least five.
#[test]
fn cameras_move_to_the_edge_with_room_for_them() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let all = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"];
    // test pictures: no people, so no open tracklet holds a camera back
    let cameras: String = all
        .iter()
        .map(|id| format!("[[cameras]]\nid = \"{id}\"\nurl = \"test:ball\"\n"))
        .collect();
    let core = spawn("core", &cameras, port, "core");
    let token = core.login("admin");
    let (light, heavy) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn_edge_at(port, "light", 1));
        let b = s.spawn(|| spawn_edge_at(port, "heavy", 5));
        (a.join().unwrap(), b.join().unwrap())
    });
    let p = core.wait_for(120, "the cameras placed", || {
        let p = placement(&status(&core, &token));
        (p.len() == 8 && p.values().all(Option::is_some)).then_some(p)
    });
    eprintln!(
        "placed at first: light {:?}, heavy {:?}",
        on(&p, "light"),
        on(&p, "heavy")
    );
    let p = core.wait_for(150, "most cameras on the light edge", || {
        let p = placement(&status(&core, &token));
        (p.values().all(Option::is_some) && on(&p, "light").len() >= 5).then_some(p)
    });
    let edges = status(&core, &token)["pipeline"]["cluster"]["edges"].clone();
    eprintln!(
        "placed: light {:?}, heavy {:?}\nedges: {edges}",
        on(&p, "light"),
        on(&p, "heavy")
    );
    let speed = |name: &str| {
        edges
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["edge"] == name)
            .and_then(|e| e["speed"].as_f64())
            .unwrap_or_else(|| panic!("no measured speed of {name}: {edges}"))
    };
    // (decoding costs both the same per camera: measured 2.4 times, not 5)
    assert!(
        speed("light") > 1.6 * speed("heavy"),
        "the edge at 1 fps keeps up with more cameras: {edges}"
    );
    assert!(
        !on(&p, "heavy").is_empty(),
        "the heavy edge still runs its share: {p:?}"
    );
    assert!(gave_back(&heavy), "{}", heavy.log_tail(20));
    // it settles, and nothing swings back: the light edge never gives a camera to the heavy one
    let mut last = (p.clone(), Instant::now());
    core.wait_for(90, "the placement settled for 10 s", || {
        let now = placement(&status(&core, &token));
        if now != last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() >= Duration::from_secs(10)).then_some(())
    });
    let settled = last.0;
    eprintln!(
        "settled: light {:?}, heavy {:?}",
        on(&settled, "light"),
        on(&settled, "heavy")
    );
    assert!(
        on(&settled, "light").len() >= 5 && !on(&settled, "heavy").is_empty(),
        "{settled:?}"
    );
    // the edge's own metrics carry what it measured
    let th = heavy.login("admin");
    let (st, _, metrics) = heavy.get_bytes("/metrics", Some(&th));
    assert_eq!(st, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in the edge's metrics"))
    };
    let (speed_h, load_h) = (
        gauge("crosscam_cluster_edge_speed_cameras"),
        gauge("crosscam_cluster_edge_load"),
    );
    assert!(
        speed_h > 0.0 && load_h > 0.0 && load_h <= 1.0,
        "{speed_h} {load_h}"
    );
    assert!(!gave_back(&light), "{}", light.log_tail(20));
    // a camera added at the core while the edges run is taken by one of them
    let (st, v) = core.post_json(
        "/api/v1/cameras",
        Some(&token),
        &serde_json::json!({"id": "c9", "url": "test:ball"}),
    );
    assert_eq!(st, 201, "{v}");
    core.wait_for(30, "the camera added at run time placed on an edge", || {
        placement(&status(&core, &token))
            .get("c9")
            .cloned()
            .flatten()
    });
}

/// How long an edge over its share may wait for a quiet camera, in seconds.
fn assign_wait() -> u64 {
    crosscam::cluster::assign::REBALANCE_WAIT.as_secs()
}

/// `crosscam bench cluster` end to end at a tiny size: a real broker and core; every
/// observation the synthetic edges published is stored by the core, and the report has the
/// figures docs/PERFORMANCE.md quotes.
#[test]
fn bench_cluster_stores_every_published_observation() {
    let out = Command::new(common::daemon::bin())
        .args([
            "bench",
            "cluster",
            "--cameras",
            "4",
            "--seconds",
            "4",
            "--json",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &r["steps"][0];
    assert_eq!(s["cameras"], 4, "{r}");
    let published = s["published"].as_u64().unwrap();
    assert!(published > 10, "{r}");
    assert_eq!(s["stored"].as_u64(), Some(published), "{r}");
    assert!(s["bytes_per_obs"].as_f64().unwrap() > 1000.0, "{r}");
    for k in [
        "lag_p50_ms",
        "lag_p99_ms",
        "drain_s",
        "process_cpu_us_per_obs",
    ] {
        assert!(s[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {r}");
    }
    assert!(s["broker_cpu_us_per_obs"].as_f64().is_some(), "{r}");
}

/// tests/browser/cluster.mjs against the core: its camera page names the edge running each
/// camera, and its edges table shows each live edge with those cameras.
fn browser_check(core: &Daemon, edges: &[&str], cameras: &[&str]) {
    let (edges, cameras) = (edges.join(","), cameras.join(","));
    let out = common::daemon::browser(
        "cluster.mjs",
        &core.base,
        &[
            ("ADMIN_USER", "admin".as_ref()),
            ("ADMIN_PASSWORD", common::daemon::PASSWORD.as_ref()),
            ("EDGES", edges.as_ref()),
            ("CAMERAS", cameras.as_ref()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("cluster-ui: all checks passed"),
        "browser check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker that knows one user by its nkey (public key only): a core with that user's seed in
/// `CROSSCAM_NATS_NKEY` makes its stream and consumer; an edge with another seed is refused by
/// the broker and says so, and keeps running.
#[test]
fn nkey_users_reach_the_broker_and_other_keys_are_refused() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let conf = store.path().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\nauthorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            store.path().join("js").display(),
            user.public_key()
        ),
    )
    .unwrap();
    let _broker = Broker::with_config(&conf);
    let seed = user.seed().unwrap();
    let spawn_with_seed = |role: &str, name: &str, seed: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), "", "") + &cluster_section(port, name),
        )
        .unwrap();
        add_user(&config, "admin", "admin");
        Daemon::spawn_env(
            dir,
            config,
            &["--role", role],
            &[("CROSSCAM_NATS_NKEY", seed)],
        )
    };
    let core = spawn_with_seed("core", "core", &seed);
    core.wait_for(
        60,
        "the core's stream and consumer, as the nkey user",
        || {
            core.log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("stream and consumer ready"))
                .then_some(())
        },
    );
    let edge = spawn_with_seed("edge", "intruder", &stranger.seed().unwrap());
    let token = edge.login("admin");
    edge.wait_for(30, "the broker refusing the edge", || {
        edge.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.to_lowercase().contains("authorization"))
            .then_some(())
    });
    let c = status(&edge, &token)["pipeline"]["cluster"].clone();
    assert_eq!(c["connected"], false, "{c}");
    assert_eq!(c["published"], 0, "{c}");
}

/// Three `nats-server` nodes in one JetStream cluster on 127.0.0.1 (the recipe of
/// docs/scaling.md), the site's stream and buckets kept on all three (`replicas = 3`): one node
/// is killed while an edge publishes, and every tracklet the edge had acknowledged still reaches
/// the core's store, once.
#[test]
fn a_three_node_broker_loses_a_node_and_no_tracklet() {
    let store = tempfile::tempdir().unwrap();
    let (client, route): (Vec<u16>, Vec<u16>) = (0..3).map(|_| (free_port(), free_port())).unzip();
    let routes = route
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut nodes: Vec<Option<Broker>> = (0..3)
        .map(|i| {
            let conf = store.path().join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\ncluster {{ name: crosscam\n  listen: 127.0.0.1:{}\n  routes: [{routes}] }}\n",
                    client[i],
                    store.path().join(format!("js{i}")).display(),
                    route[i]
                ),
            )
            .unwrap();
            Some(Broker::with_config(&conf))
        })
        .collect();
    let urls = client
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let section = |name: &str| {
        format!(
            "\n[cluster]\nnats = \"{urls}\"\nsite = \"{SITE}\"\nedge = \"{name}\"\nreplicas = 3\nbuffer_max = 100000\n"
        )
    };
    let spawn3 = |role: &str, cameras: &str, name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("site.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), cameras, "") + &section(name),
        )
        .unwrap();
        add_user(&config, "admin", "admin");
        Daemon::spawn_with(dir, config, &["--role", role])
    };
    let core = spawn3("core", "", "core");
    core.wait_for(90, "the core's replicated stream and consumer", || {
        core.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("stream and consumer ready"))
            .then_some(())
    });
    let mut edge = spawn3("edge", &once_camera("r1", 58.0), "edge-r");
    let token = edge.login("admin");
    edge.wait_for(120, "a first observation acknowledged", || {
        (status(&edge, &token)["pipeline"]["cluster"]["published"].as_u64() > Some(2)).then_some(())
    });
    // kill -9 the first node (the one the clients list first)
    if let Some(n) = nodes[0].take() {
        n.kill();
    }
    edge.wait_for(240, "the clip to end", || {
        let v = status(&edge, &token);
        v["pipeline"]["cameras"]
            .as_array()
            .is_some_and(|c| c.len() == 1 && c[0]["state"] == "stopped")
            .then_some(())
    });
    assert!(edge.stop(), "{}", edge.log_tail(40));
    let stopped = last_line(&edge, 30);
    assert_eq!(
        logged(&edge, stopped, "unpublished"),
        0,
        "{}",
        edge.log_tail(20)
    );
    assert_eq!(logged(&edge, stopped, "dropped"), 0);
    let ended = logged(&edge, stopped, "ended_tracklets");
    assert!(ended >= 2, "too few tracklets to say anything ({ended})");
    let db_path = core.dir.path().join("data/crosscam.db");
    core.wait_for(
        120,
        "every ended tracklet in the core's store, once",
        || {
            let db = rusqlite::Connection::open_with_flags(
                &db_path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .ok()?;
            (count(&db, "SELECT COUNT(*) FROM tracklets WHERE ended = 1") == ended).then_some(())
        },
    );
    drop(nodes);
}

/// A core of the site with the cameras `cameras`, a short lease and frequent snapshots; it may
/// stand by (no API yet).
fn launch_core(port: u16, name: &str, cameras: &str) -> common::daemon::Launched {
    launch_core_snapshots(port, name, cameras, 5)
}

fn launch_core_snapshots(
    port: u16,
    name: &str,
    cameras: &str,
    snapshot_s: u64,
) -> common::daemon::Launched {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let text = config_text(dir.path(), cameras, "")
        + &cluster_section(port, name)
        + &format!("lease_s = 3\nsnapshot_s = {snapshot_s}\n");
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    common::daemon::Launched::start(dir, config, &["--role", "core"], &[])
}

/// Snapshots every 10 minutes: an operator's change (a merge through the API) is snapshotted
/// within seconds anyway, so that a standby that takes over a moment later has it.
#[test]
fn an_operators_change_is_snapshotted_at_once_and_survives_a_takeover() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let cameras = once_camera("c1", 40.0);
    let mut a = launch_core_snapshots(port, "core-a", &cameras, 600).api(60);
    let ta = a.login("admin");
    let b = launch_core_snapshots(port, "core-b", &cameras, 600);
    a.wait_for(60, "core-b standing by", || {
        b.logged("standby; another core is active").then_some(())
    });
    let mut edge = spawn_edge(port, "e1");
    let ids: Vec<i64> = a.wait_for(120, "two identities at core-a", || {
        let (_, v) = a.get("/api/v1/identities", Some(&ta));
        let ids: Vec<i64> = v["identities"]
            .as_array()?
            .iter()
            .filter_map(|i| i["id"].as_i64())
            .collect();
        (ids.len() >= 2).then_some(ids)
    });
    let _ = edge.child.0.kill();
    let _ = edge.child.0.wait();
    let core = status(&a, &ta)["pipeline"]["cluster"]["core"].clone();
    assert!(core["snapshot"]["seq"].is_null(), "no snapshot yet: {core}");
    let (keep, absorb) = (ids[0], ids[1]);
    // a camera an integrator adds at the core travels with the snapshot too
    let (st, v) = a.post_json(
        "/api/v1/cameras",
        Some(&ta),
        &serde_json::json!({"id": "lobby", "url": "test:ball", "name": "Lobby", "enabled": false}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = a.post_json(
        &format!("/api/v1/identities/{keep}/merge"),
        Some(&ta),
        &serde_json::json!({"absorb": absorb, "reason": "same coat"}),
    );
    assert_eq!(st, 200, "{v}");
    let t0 = Instant::now();
    a.wait_for(30, "a snapshot after the merge, mirrored by core-b", || {
        let c = status(&a, &ta)["pipeline"]["cluster"]["core"].clone();
        let seq = c["snapshot"]["seq"].as_u64()?;
        c["standbys"]
            .as_array()?
            .iter()
            .any(|s| s["core"] == "core-b" && s["mirrored"]["seq"].as_u64() == Some(seq))
            .then_some(())
    });
    let snapshotted_after = t0.elapsed();
    assert!(
        a.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("snapshot after an operator's change")),
        "{}",
        a.log_tail(30)
    );
    let _ = a.child.0.kill();
    let _ = a.child.0.wait();
    let mut b = b.api(60);
    let tb = b.login("admin");
    let (st, v) = b.get(&format!("/api/v1/identities/{absorb}"), Some(&tb));
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["identity"]["merged_into"], keep,
        "the merge made at core-a holds at core-b: {v}"
    );
    let (st, v) = b.get("/api/v1/cameras/lobby", Some(&tb));
    assert_eq!(
        st, 200,
        "the camera added at core-a is defined at core-b: {v}"
    );
    assert_eq!(
        (v["name"].as_str(), v["enabled"].as_bool()),
        (Some("Lobby"), Some(false))
    );
    eprintln!("snapshot mirrored {snapshotted_after:?} after the merge");
    assert!(b.stop(), "core-b did not stop cleanly:\n{}", b.log_tail(40));
}

#[test]
fn a_standby_core_takes_over_from_a_killed_core_with_its_snapshot_and_the_stream() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    // two cameras defined at both cores (the active one places them), ~45 s of clip each
    let cameras = once_camera("c1", 30.0) + &once_camera("c2", 34.0);
    let mut a = launch_core(port, "core-a", &cameras).api(60);
    let ta = a.login("admin");
    let b = launch_core(port, "core-b", &cameras);
    a.wait_for(60, "core-b standing by", || {
        b.logged("standby; another core is active").then_some(())
    });
    let mut edge = spawn_edge(port, "e1");

    // core-a stores observations with crops and snapshots them; core-b holds a copy of the
    // newest snapshot
    let a_db = a.dir.path().join("data/crosscam.db");
    let crops_at = a.wait_for(120, "crops in core-a's store", || {
        let db = rusqlite::Connection::open_with_flags(
            &a_db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        (count(&db, "SELECT COUNT(*) FROM crops") > 0).then(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
        })
    });
    // a model promoted at core-a (the bundled half-MACs variant): core-b, which has never
    // served, must take it over with the gallery it described
    let half =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crosscam-resnet18-vtest-half.onnx");
    let out = Command::new(common::daemon::bin())
        .args(["job", "register", "--json", "--config"])
        .arg(&a.config)
        .arg(&half)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha2 = v2["sha256"].as_str().unwrap().to_string();
    let (st, r) = a.post_json(
        &format!("/api/v1/models/{}/promote", v2["id"].as_str().unwrap()),
        Some(&ta),
        &serde_json::Value::Null,
    );
    assert_eq!(st, 202, "{r}");
    a.wait_for(300, "core-a serving the promoted model", || {
        (status(&a, &ta)["model"]["sha256"].as_str() == Some(&sha2)).then_some(())
    });
    let crops_at = crops_at.max(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let (epoch_a, snap) = a.wait_for(
        120,
        "a snapshot with stored crops, mirrored by core-b",
        || {
            let c = status(&a, &ta)["pipeline"]["cluster"]["core"].clone();
            let snap = c["snapshot"].clone();
            let seq = snap["seq"].as_u64()?;
            // copied after the crops were stored
            if snap["t_ms"].as_i64()? < crops_at + 2000 {
                return None;
            }
            let mirrored = c["standbys"]
                .as_array()?
                .iter()
                .any(|s| s["core"] == "core-b" && s["mirrored"]["seq"].as_u64() == Some(seq));
            (c["state"] == "active" && seq > 0 && mirrored).then_some((c["epoch"].as_u64()?, snap))
        },
    );

    // kill -9 the active core while the cameras still run
    let _ = a.child.0.kill();
    let _ = a.child.0.wait();
    let t0 = Instant::now();
    let mut b = b.api(60);
    let api_after = t0.elapsed();
    let tb = b.login("admin");
    let core = b.wait_for(120, "core-b's replay finished", || {
        let c = status(&b, &tb)["pipeline"]["cluster"]["core"].clone();
        (c["replay"]["finished"] == true).then_some(c)
    });
    let replayed_after = t0.elapsed();
    // the snapshot's crop pictures (rows only in a snapshot) come back from the stream
    let crops = b.wait_for(120, "core-b's crop pictures restored", || {
        let c = status(&b, &tb)["pipeline"]["cluster"]["core"].clone();
        (c["crops_done"] == true).then_some(c)
    });
    assert_eq!(crops["crops_missing"], 0, "{crops}");
    assert!(crops["crops_restored"].as_u64() > Some(0), "{crops}");
    assert_eq!(core["state"], "active", "{core}");
    assert_eq!(core["restored_from"], "snapshot", "{core}");
    // core-b serves the promoted model, and its gallery is the snapshot's (the descriptors
    // under core-b's own tag for that model)
    assert_eq!(
        status(&b, &tb)["model"]["sha256"].as_str(),
        Some(sha2.as_str())
    );
    let restored = "gallery restored from the store";
    b.wait_for(10, "the gallery restore logged", || {
        b.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(restored))
            .then_some(())
    });
    let line = b
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains(restored))
        .unwrap()
        .clone();
    let n = |key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    assert!(n("tracklets") > 0 && n("identities") > 0, "{line}");
    assert!(core["epoch"].as_u64() > Some(epoch_a), "{core}");
    // the newest snapshot: the one seen, or a later one of the same term
    assert_eq!(core["start"]["epoch"].as_u64(), Some(epoch_a), "{core}");
    assert!(
        core["start"]["seq"].as_u64() >= snap["seq"].as_u64(),
        "{core}"
    );
    assert_eq!(
        core["replay"]["from"].as_u64(),
        Some(core["start"]["seq"].as_u64().unwrap() + 1),
        "{core}"
    );
    eprintln!(
        "core failover: core-b's API answered {:.1} s after core-a was killed, its replay had finished after {:.1} s; {core}",
        api_after.as_secs_f64(),
        replayed_after.as_secs_f64()
    );

    // the clips end; every tracklet the edge had delivered is in core-b's store once
    let te = edge.login("admin");
    edge.wait_for(240, "both cameras to finish their clip", || {
        let r = running(&edge, &te);
        (r.len() == 2 && r.iter().all(|(_, s)| s == "stopped")).then_some(())
    });
    assert!(
        edge.stop(),
        "the edge did not stop cleanly:\n{}",
        edge.log_tail(40)
    );
    let stopped = last_line(&edge, 10);
    assert_eq!(logged(&edge, stopped, "dropped"), 0);
    assert_eq!(logged(&edge, stopped, "unpublished"), 0);
    let ended = logged(&edge, stopped, "ended_tracklets");
    let described = logged(&edge, stopped, "described_tracklets");
    assert!(described >= 2, "too few described tracklets ({described})");
    let b_db = b.dir.path().join("data/crosscam.db");
    let open = |p: &Path| {
        rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap()
    };
    b.wait_for(120, "every ended tracklet in core-b's store", || {
        (count(
            &open(&b_db),
            "SELECT COUNT(*) FROM tracklets WHERE ended = 1",
        ) >= ended)
            .then_some(())
    });
    let db = open(&b_db);
    assert_eq!(
        (
            count(&db, "SELECT COUNT(*) FROM tracklets"),
            count(&db, "SELECT COUNT(*) FROM tracklets WHERE ended = 1"),
            count(
                &db,
                "SELECT COUNT(*) FROM sightings s JOIN tracklets t ON t.id = s.tracklet WHERE t.ended = 1"
            ),
        ),
        (ended, ended, described),
        "core-b's store (tracklets, ended tracklets, sightings) vs what the edge delivered"
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM (SELECT camera, run, track_id FROM tracklets GROUP BY camera, run, track_id HAVING COUNT(*) > 1)"
        ),
        0
    );
    // what core-a had linked before its snapshot kept its numbers: every identity of the
    // snapshot is in core-b's store (kept, or merged with a record in the audit)
    let snap_db = open(&b.dir.path().join("data/cluster-mirror.db"));
    let ids: Vec<i64> = snap_db
        .prepare("SELECT id FROM identities")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!ids.is_empty(), "core-a's snapshot holds no identity");
    for id in &ids {
        assert_eq!(
            count(
                &db,
                &format!("SELECT COUNT(*) FROM identities WHERE id = {id}")
            ),
            1,
            "identity {id} of core-a's snapshot"
        );
    }
    // core-a's own database is left as it was (core-b never wrote to it)
    assert!(a_db.is_file());
    // every crop row of core-b's store has its picture (its range of a pack), in core-b's
    // data directory
    let crop_root = b.dir.path().join("data/crops");
    let places: Vec<crosscam::store::CropData> = db
        .prepare("SELECT path, pack_offset, bytes FROM crops")
        .unwrap()
        .query_map([], |r| crosscam::store::CropData::from_row(r, 0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!places.is_empty());
    for p in &places {
        assert!(p.offset.is_some(), "crop {p} in a pack");
        assert!(
            p.path.starts_with(&crop_root) && p.image().is_ok(),
            "crop {p}"
        );
    }

    // a stopping core gives the lease up at once
    assert!(b.stop(), "core-b did not stop cleanly:\n{}", b.log_tail(40));
    b.wait_for(10, "the lease given up", || {
        b.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("lease given up"))
            .then_some(())
    });
    // and records how far its database holds the stream (the durable consumer's acknowledgement
    // floor: it may trail the replay while the dead core's unacknowledged messages wait out
    // their ack wait), never less than the point its term started from
    let marker: serde_json::Value = serde_json::from_slice(
        &std::fs::read(b.dir.path().join("data/cluster-core.json")).unwrap(),
    )
    .unwrap();
    assert!(
        marker["seq"].as_u64() >= core["start"]["seq"].as_u64(),
        "{marker} vs {core}"
    );
    assert_eq!(marker["epoch"], core["epoch"], "{marker}");
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn a_core_that_hung_past_its_lease_finds_its_term_over_and_stops() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let mut a = launch_core(port, "core-a", "").api(60);
    let b = launch_core(port, "core-b", "");
    a.wait_for(60, "core-b standing by", || {
        b.logged("standby; another core is active").then_some(())
    });
    // core-a stops answering (a long pause, a hung machine) for longer than the lease
    signal(a.child.id(), "STOP");
    let b = b.api(60);
    let tb = b.login("admin");
    let core = status(&b, &tb)["pipeline"]["cluster"]["core"].clone();
    assert_eq!(core["state"], "active", "{core}");
    // core-a wakes up: its next renewal finds core-b's term, and it stops serving
    signal(a.child.id(), "CONT");
    let t0 = Instant::now();
    let code = loop {
        if let Some(st) = a.child.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "core-a kept running after losing its term:\n{}",
            a.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(code, Some(0), "core-a exited as if nothing happened");
    a.wait_for(10, "core-a naming the core that took over", || {
        a.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("core core-b took the site's core lease"))
            .then_some(())
    });
    // core-b is still the active core
    let core = status(&b, &tb)["pipeline"]["cluster"]["core"].clone();
    assert_eq!(core["state"], "active", "{core}");
}

#[test]
fn a_model_promoted_at_the_core_reaches_the_edges_and_they_embed_with_it() {
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let _broker = Broker::start(port, store.path());
    let core = spawn("core", &clip_camera("c1", 0.0), port, "core");
    let tc = core.login("admin");
    let edge = spawn_edge(port, "e1");
    let te = edge.login("admin");
    // the core tells the site which model serves; the edge's observations arrive with it
    let first = status(&core, &tc);
    let v1 = first["model"]["sha256"].as_str().unwrap().to_string();
    core.wait_for(
        120,
        "the edge's observations, described by the site's model",
        || {
            let c = status(&core, &tc)["pipeline"]["cluster"].clone();
            let published = c["site_model"]["sha256"].as_str() == Some(&v1);
            let e = c["edges"].as_array()?.first()?.clone();
            (published && e["model"].as_str()?.ends_with(&v1[..12])).then_some(())
        },
    );

    // a second embedder registered and promoted at the core (the bundled half-MACs variant)
    let half =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/crosscam-resnet18-vtest-half.onnx");
    let out = Command::new(common::daemon::bin())
        .args(["job", "register", "--json", "--config"])
        .arg(&core.config)
        .arg(&half)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v2: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha2 = v2["sha256"].as_str().unwrap().to_string();
    let (st, r) = core.post_json(
        &format!("/api/v1/models/{}/promote", v2["id"].as_str().unwrap()),
        Some(&tc),
        &serde_json::Value::Null,
    );
    assert_eq!(st, 202, "{r}");
    let t0 = Instant::now();
    core.wait_for(300, "the core serving the promoted model", || {
        (status(&core, &tc)["model"]["sha256"].as_str() == Some(&sha2)).then_some(())
    });
    let core_switched = t0.elapsed();
    // the edge takes it from the site's object store, checks it, registers it and switches
    let e = edge.wait_for(120, "the edge serving the site's new model", || {
        let s = status(&edge, &te);
        (s["model"]["sha256"].as_str() == Some(&sha2)).then_some(s)
    });
    let edge_switched = t0.elapsed();
    assert_eq!(
        e["pipeline"]["cluster"]["site_model"]["sha256"].as_str(),
        Some(sha2.as_str()),
        "{e}"
    );
    let (_, models) = edge.get("/api/v1/models", Some(&te));
    let taken = models["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["sha256"] == sha2.as_str())
        .unwrap_or_else(|| panic!("not in the edge's registry: {models}"))
        .clone();
    assert!(
        taken["origin"]
            .as_str()
            .unwrap()
            .contains("site model: core core"),
        "{taken}"
    );
    // the core hears observations of the new model; once it does, none needs describing again
    core.wait_for(120, "observations described by the new model", || {
        let c = status(&core, &tc)["pipeline"]["cluster"].clone();
        let e = c["edges"].as_array()?.first()?.clone();
        e["model"].as_str()?.ends_with(&sha2[..12]).then_some(())
    });
    let s = status(&core, &tc);
    let (redescribed, observations) = (
        s["pipeline"]["link"]["redescribed"].as_u64().unwrap(),
        s["pipeline"]["link"]["observations"].as_u64().unwrap(),
    );
    core.wait_for(120, "ten more observations linked", || {
        (status(&core, &tc)["pipeline"]["link"]["observations"].as_u64()? >= observations + 10)
            .then_some(())
    });
    let s = status(&core, &tc);
    assert_eq!(
        s["pipeline"]["link"]["redescribed"].as_u64(),
        Some(redescribed),
        "the core described observations of the edge again after the edge had switched: {}",
        s["pipeline"]["link"]
    );
    eprintln!(
        "model to edges: the core served the promoted model after {:.1} s, the edge after {:.1} s; {redescribed} observations were described again by the core in between",
        core_switched.as_secs_f64(),
        edge_switched.as_secs_f64()
    );
}
