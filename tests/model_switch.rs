//! The live model switch, end to end: a real `crosscam serve` on two file cameras (the bundled
//! vtest clip), a second real embedder registered with `crosscam job register` (the bundled
//! `crosscam-resnet18-vtest-half`, the serving model pruned to half its MACs and re-tuned), then:
//!
//! - promote through the API: 202, `model.switch` progresses in `/api/v1/status`, the new version
//!   serves within a bounded time, no identity lost or renumbered, every live identity described
//!   by the new model (descriptor rows tagged with its version and checksum), events flowing
//!   during the switch; rollback the same way; then a short re-tune job started through the API,
//!   whose candidate (kept, not promoted: no labels) is promoted and switches the same way;
//! - SIGKILL in the middle of a switch started by `crosscam job promote`: the restarted daemon
//!   serves one model with its whole gallery, then finishes the switch the registry asks for;
//! - a candidate whose file no longer loads: the old model keeps serving, the reason is in the
//!   status.
//!
//! `[models] reembed_pause_ms` slows re-embedding down so that a switch lasts long enough to be
//! observed and interrupted; `reembed_nice = 0` keeps it at the cameras' priority, so that a
//! machine loaded by other tests cannot starve it (the priority has a unit test of its own).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, add_user, bin, clip_camera, config_text};
use crosscam::store::Store;
use serde_json::Value;

/// A daemon on two cameras with re-embedding slowed down by `pause_ms` after every batch of 32
/// crops; returns it once it has `min_ids` identities whose tracklets have at least `min_crops`
/// stored crops (so that a switch re-embeds several batches and lasts long enough to watch).
fn start(min_ids: usize, min_crops: usize, pause_ms: u64) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("site.toml");
    let cams = format!("{}{}", clip_camera("a", 0.0), clip_camera("b", 20.0));
    let text = config_text(dir.path(), &cams, "").replace(
        "embedder = \"crosscam-resnet18-vtest\"\n",
        &format!(
            "embedder = \"crosscam-resnet18-vtest\"\nreembed_pause_ms = {pause_ms}\nreembed_nice = 0\n"
        ),
    );
    assert!(text.contains("reembed_pause_ms"));
    std::fs::write(&config, text).unwrap();
    add_user(&config, "admin", "admin");
    let d = Daemon::spawn(dir, config);
    wait_identities(&d, min_ids);
    let data = data(&d);
    d.wait_for(
        240,
        &format!("{min_crops} stored crops of linked tracklets"),
        || (linked_crops(&data) >= min_crops).then_some(()),
    );
    d
}

/// Stored crops of ended tracklets linked to an identity (what a switch re-embeds).
fn linked_crops(data: &Path) -> usize {
    let Ok(store) = Store::open(data) else {
        return 0;
    };
    store
        .tracklets_with_crops()
        .unwrap_or_default()
        .into_iter()
        .filter(|(t, ..)| store.identity_of(*t).ok().flatten().is_some())
        .map(|(t, ..)| store.crops_of(t).map(|c| c.len()).unwrap_or(0))
        .sum()
}

fn data(d: &Daemon) -> std::path::PathBuf {
    d.dir.path().join("data")
}

fn wait_identities(d: &Daemon, n: usize) {
    let data = data(d);
    d.wait_for(240, &format!("{n} identities"), || {
        let ids = live_ids(&data);
        (ids.len() >= n).then_some(())
    });
}

/// Live identities with at least one sighting (the store as another process sees it).
fn live_ids(data: &Path) -> BTreeSet<i64> {
    Store::open(data)
        .and_then(|s| s.identities(false))
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.sightings > 0)
        .map(|i| i.id)
        .collect()
}

/// Every identity id ever made (live, retired or merged).
fn all_ids(data: &Path) -> BTreeSet<i64> {
    Store::open(data)
        .unwrap()
        .identities(true)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Identities that have a tracklet described by model `tag`, and the dimensions of those rows.
fn described_by(data: &Path, tag: &str) -> (BTreeSet<i64>, BTreeSet<usize>) {
    let rows = Store::open(data).unwrap().live_tracklets(tag).unwrap();
    (
        rows.iter().map(|t| t.identity).collect(),
        rows.iter().map(|t| t.descriptor.len()).collect(),
    )
}

fn register(d: &Daemon, file: &Path) -> Value {
    let out = Command::new(bin())
        .args(["job", "register", "--json", "--config"])
        .arg(&d.config)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "job register {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn status(d: &Daemon, token: &str) -> Value {
    let (st, v) = d.get("/api/v1/status", Some(token));
    assert_eq!(st, 200, "{v}");
    v
}

fn tag(v: &Value) -> String {
    format!(
        "{}:{}",
        v["id"].as_str().unwrap(),
        &v["sha256"].as_str().unwrap()[..12]
    )
}

/// Waits until `/api/v1/status` shows `version` serving with no switch in progress; returns
/// the phases of `model.switch` seen on the way.
fn wait_serving(d: &Daemon, token: &str, version: &str, secs: u64) -> Vec<String> {
    let mut phases: Vec<String> = Vec::new();
    d.wait_for(secs, &format!("{version} serving"), || {
        let s = status(d, token);
        if let Some(p) = s["model"]["switch"]["phase"].as_str()
            && phases.last().map(String::as_str) != Some(p)
        {
            phases.push(p.to_string());
        }
        assert_ne!(
            s["model_switch_last"]["outcome"], "failed",
            "the switch failed: {}",
            s["model_switch_last"]
        );
        (s["model"]["version"] == version && s["model"]["switch"].is_null()).then_some(())
    });
    phases
}

/// Collects the daemon's WebSocket events (with the time each arrived) on a thread of its own.
struct EventLog {
    events: Arc<Mutex<Vec<(Instant, Value)>>>,
}

impl EventLog {
    fn start(d: &Daemon, token: &str) -> EventLog {
        let url = format!("{}/api/v1/events", d.base.replace("http://", "ws://"));
        let token = token.to_string();
        let events = Arc::new(Mutex::new(Vec::new()));
        let ev = events.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                use futures_util::StreamExt;
                use tokio_tungstenite::tungstenite::client::IntoClientRequest;
                let mut req = url.into_client_request().unwrap();
                req.headers_mut()
                    .insert("Authorization", format!("Bearer {token}").parse().unwrap());
                let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
                let _ = ready_tx.send(());
                while let Some(Ok(m)) = ws.next().await {
                    if let Ok(t) = m.to_text()
                        && let Ok(v) = serde_json::from_str::<Value>(t)
                    {
                        ev.lock().unwrap().push((Instant::now(), v));
                    }
                }
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the event stream connects");
        EventLog { events }
    }

    /// Events of the pipeline (tracklets, identities) received between the first `model_switch`
    /// event towards `to` and its `model_switched` event, and the kinds seen of the switch.
    fn during_switch(&self, to: &str) -> (usize, Vec<String>) {
        let ev = self.events.lock().unwrap();
        let start = ev
            .iter()
            .find(|(_, v)| v["type"] == "model_switch" && v["to"] == to)
            .map(|(t, _)| *t)
            .expect("a model_switch event");
        let end = ev
            .iter()
            .find(|(_, v)| v["type"] == "model_switched" && v["to"] == to)
            .map(|(t, _)| *t)
            .expect("a model_switched event");
        let pipeline = ev
            .iter()
            .filter(|(t, v)| {
                *t > start
                    && *t < end
                    && v["type"]
                        .as_str()
                        .is_some_and(|k| k.starts_with("tracklet_") || k.starts_with("identity_"))
            })
            .count();
        let phases = ev
            .iter()
            .filter(|(_, v)| v["type"] == "model_switch" && v["to"] == to)
            .filter_map(|(_, v)| v["phase"].as_str().map(str::to_string))
            .collect();
        (pipeline, phases)
    }
}

/// Checks what a finished switch to `version` (descriptor tag `tag`) must leave: every identity
/// of `before` still exists with its id, every live identity is described by the new model, and
/// the gallery held as many identities after the swap as before it.
fn check_switched(d: &Daemon, token: &str, before: &BTreeSet<i64>, tag: &str, old_tag: &str) {
    let data = data(d);
    let all = all_ids(&data);
    let lost: Vec<_> = before.difference(&all).collect();
    assert!(lost.is_empty(), "identities lost by the switch: {lost:?}");
    let live = live_ids(&data);
    let (described, dims) = described_by(&data, tag);
    let undescribed: Vec<_> = live.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "live identities without a descriptor of {tag}: {undescribed:?} (live {live:?})"
    );
    assert_eq!(dims.len(), 1, "one dimension per model: {dims:?}");
    // the old model's rows are still there (a rollback reuses them), but they are not the
    // serving ones: the serving tag's rows cover everything the old ones did
    let (old_described, _) = described_by(&data, old_tag);
    assert!(
        old_described
            .intersection(&live)
            .all(|i| described.contains(i)),
        "an identity described by the old model only"
    );
    let s = status(d, token);
    let last = &s["model_switch_last"];
    assert_eq!(last["outcome"], "switched", "{last}");
    assert_eq!(
        last["identities_before"], last["identities_after"],
        "the gallery changed size in the swap: {last}"
    );
    assert!(last["crops"].as_u64().unwrap() > 0, "{last}");
    assert!(
        s["pipeline"]["link"]["gallery_identities"]
            .as_u64()
            .unwrap()
            >= before.len() as u64,
        "{}",
        s["pipeline"]["link"]
    );
}

#[test]
fn promote_and_rollback_switch_the_running_daemon_and_keep_every_identity() {
    let d = start(4, 160, 500);
    let admin = d.login("admin");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s0 = status(&d, &admin);
    assert_eq!(s0["model"]["version"], "v0001", "{}", s0["model"]);
    assert!(s0["model"]["switch"].is_null());
    let keys: BTreeSet<&str> = s0["model"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["version", "file", "sha256", "since_ms", "switch"])
    );
    let v2 = register(&d, &root.join("models/crosscam-resnet18-vtest-half.onnx"));
    assert_eq!(v2["id"], "v0002");
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(models["current"], "v0001", "register does not promote");
    let v1 = models["versions"][0].clone();
    assert_eq!(s0["model"]["sha256"], v1["sha256"]);
    let (tag1, tag2) = (tag(&v1), tag(&v2));
    let events = EventLog::start(&d, &admin);

    // promote: 202 with the switch; the old model serves until the new one is ready
    let before = live_ids(&data(&d));
    let (st, r) = d.post_json("/api/v1/models/v0002/promote", Some(&admin), &Value::Null);
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["switch"]["to"], "v0002");
    assert_eq!(r["from"], "v0001");
    // a second request while it runs is refused
    let (st, r2) = d.post_json("/api/v1/models/v0002/promote", Some(&admin), &Value::Null);
    assert_eq!(st, 409, "{r2}");
    let phases = wait_serving(&d, &admin, "v0002", 300);
    assert!(
        phases.iter().any(|p| p == "re-embedding"),
        "the status never showed the re-embedding: {phases:?}"
    );
    let s = status(&d, &admin);
    assert_eq!(s["model"]["sha256"], v2["sha256"]);
    assert!(s["model"]["since_ms"].as_i64().unwrap() > s0["model"]["since_ms"].as_i64().unwrap());
    assert_eq!(s["serving_model"], tag2);
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(
        (models["current"].as_str(), models["previous"].as_str()),
        (Some("v0002"), Some("v0001"))
    );
    check_switched(&d, &admin, &before, &tag2, &tag1);
    let (flowing, ev_phases) = events.during_switch("v0002");
    assert!(
        flowing > 0,
        "no tracklet or identity event while the gallery was re-embedded"
    );
    assert!(
        ev_phases.iter().any(|p| p == "re-embedding"),
        "{ev_phases:?}"
    );
    // the cameras keep linking with the new model after the switch
    let linked = status(&d, &admin)["pipeline"]["link"]["observations"]
        .as_u64()
        .unwrap();
    d.wait_for(120, "observations after the switch", || {
        (status(&d, &admin)["pipeline"]["link"]["observations"]
            .as_u64()
            .unwrap()
            > linked)
            .then_some(())
    });

    // rollback: the same way back
    let before = live_ids(&data(&d));
    let (st, r) = d.post_json("/api/v1/models/rollback", Some(&admin), &Value::Null);
    assert_eq!(st, 202, "{r}");
    assert_eq!(r["switch"]["to"], "v0001");
    wait_serving(&d, &admin, "v0001", 300);
    let s = status(&d, &admin);
    assert_eq!(s["model"]["sha256"], v1["sha256"]);
    check_switched(&d, &admin, &before, &tag1, &tag2);
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(
        (models["current"].as_str(), models["previous"].as_str()),
        (Some("v0001"), Some("v0002"))
    );
    // promoting what already serves is refused, and so is an unknown version
    let (st, _) = d.post_json("/api/v1/models/v0001/promote", Some(&admin), &Value::Null);
    assert_eq!(st, 409);
    let (st, _) = d.post_json("/api/v1/models/v0099/promote", Some(&admin), &Value::Null);
    assert_eq!(st, 404);

    // a short re-tune job started through the API: with no operators' labels it never promotes
    // on its own, and keeps its candidate in the registry; promoting that switches the same way
    let (st, job) = d.post_json(
        "/api/v1/jobs",
        Some(&admin),
        &serde_json::json!({"budget": "1ep"}),
    );
    assert_eq!(st, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let report = d.wait_for(900, &format!("job {id} to finish"), || {
        let (_, j) = d.get(&format!("/api/v1/jobs/{id}"), Some(&admin));
        (j["state"] == "finished").then(|| j["report"].clone())
    });
    println!(
        "re-tune job through the API: {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert_eq!(report["automatic_promotion"], false, "{report}");
    let candidate = report["candidate"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"));
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(
        models["current"], "v0001",
        "the job promoted nothing: {models}"
    );
    let v3 = models["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == candidate)
        .unwrap_or_else(|| panic!("{candidate} not in {models}"))
        .clone();
    let before = live_ids(&data(&d));
    let (st, r) = d.post_json(
        &format!("/api/v1/models/{candidate}/promote"),
        Some(&admin),
        &Value::Null,
    );
    assert_eq!(st, 202, "{r}");
    wait_serving(&d, &admin, candidate, 300);
    assert_eq!(status(&d, &admin)["model"]["sha256"], v3["sha256"]);
    check_switched(&d, &admin, &before, &tag(&v3), &tag1);
}

#[test]
fn sigkill_during_a_switch_restarts_with_one_consistent_model_and_every_identity() {
    let mut d = start(4, 160, 3000);
    let admin = d.login("admin");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let v2 = register(&d, &root.join("models/crosscam-resnet18-vtest-half.onnx"));
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    let (tag1, tag2) = (tag(&models["versions"][0]), tag(&v2));
    // promote from the command line: the registry changes, the daemon notices and switches
    let out = Command::new(bin())
        .args(["job", "promote", "v0002", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("switches to it live"), "{said}");
    // kill it while it re-embeds (some tracklets done, not all)
    d.wait_for(120, "the switch half-way", || {
        let s = status(&d, &admin);
        let sw = &s["model"]["switch"];
        assert_ne!(
            s["model"]["version"], "v0002",
            "the switch ended before the kill"
        );
        (sw["phase"] == "re-embedding"
            && sw["done"].as_u64().unwrap() > 0
            && sw["done"].as_u64() < sw["total"].as_u64())
        .then_some(())
    });
    let before = live_ids(&data(&d));
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let data_dir = data(&d);
    // what the killed daemon left: it served v0001, the registry asks for v0002, and v0002's
    // descriptors are incomplete
    let serving: Value = serde_json::from_str(
        &std::fs::read_to_string(data_dir.join("models/serving.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(serving["version"], "v0001");
    let (partial, _) = described_by(&data_dir, &tag2);
    assert!(
        partial.len() < before.len(),
        "the kill came after the re-embedding: {} of {}",
        partial.len(),
        before.len()
    );

    // restart: it serves v0001 with its whole gallery, then resumes the switch to v0002
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    let config = d.config.clone();
    let d = Daemon::spawn(dir, config);
    let admin = d.login("admin");
    let s = status(&d, &admin);
    let serving = s["model"]["version"].as_str().unwrap().to_string();
    let serving_tag = if serving == "v0001" { &tag1 } else { &tag2 };
    let (described, _) = described_by(&data(&d), serving_tag);
    let missing: Vec<_> = before.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "after the restart, identities missing from the serving model ({serving}): {missing:?}"
    );
    assert!(
        s["pipeline"]["link"]["gallery_identities"]
            .as_u64()
            .unwrap()
            >= before.len() as u64,
        "the restored gallery is smaller than before the kill: {}",
        s["pipeline"]["link"]
    );
    wait_serving(&d, &admin, "v0002", 300);
    check_switched(&d, &admin, &before, &tag2, &tag1);
    let last = status(&d, &admin)["model_switch_last"].clone();
    assert_eq!(last["trigger"], "registry", "{last}");
    // the index dumped after the switch matches the serving model: a restart restores the same
    // gallery from it
    let n = status(&d, &admin)["pipeline"]["link"]["gallery_identities"]
        .as_u64()
        .unwrap();
    assert!(n > 0);
}

#[test]
fn a_candidate_that_does_not_load_leaves_the_old_model_serving_and_says_why() {
    let d = start(2, 0, 500);
    let admin = d.login("admin");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // a file that is not an embedder is refused by register, naming the problem
    let junk = d.dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let out = Command::new(bin())
        .args(["job", "register", "--config"])
        .arg(&d.config)
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.onnx"), "{err}");
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(models["versions"].as_array().unwrap().len(), 1, "{models}");
    // a registered version whose file was damaged afterwards: the switch fails at loading
    let v2 = register(&d, &root.join("models/crosscam-resnet18-vtest-half.onnx"));
    let file = data(&d).join("models").join(v2["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    std::fs::write(&file, bytes).unwrap();
    let s0 = status(&d, &admin);
    let (st, r) = d.post_json("/api/v1/models/v0002/promote", Some(&admin), &Value::Null);
    assert_eq!(st, 202, "{r}");
    let last = d.wait_for(120, "the switch to fail", || {
        let s = status(&d, &admin);
        (s["model"]["switch"].is_null() && s["model_switch_last"]["to"] == "v0002")
            .then(|| s["model_switch_last"].clone())
    });
    assert_eq!(last["outcome"], "failed", "{last}");
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.contains("v0002") && reason.contains("sha256"),
        "{reason}"
    );
    let s = status(&d, &admin);
    assert_eq!(s["model"], s0["model"], "the serving model changed");
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(models["current"], "v0001");
    // it keeps linking with the old model
    let linked = s["pipeline"]["link"]["observations"].as_u64().unwrap();
    d.wait_for(120, "observations after the failed switch", || {
        (status(&d, &admin)["pipeline"]["link"]["observations"]
            .as_u64()
            .unwrap()
            > linked)
            .then_some(())
    });
    assert!(
        d.log_tail(400).contains("model switch failed"),
        "the log does not say the switch failed"
    );
}
