//! `crosscam serve` applies an edited config file's cameras while running: a camera added to
//! the file goes live, one removed stops, and a file saved with a mistake changes nothing (the
//! daemon and its cameras keep running, the error is logged).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::wait_for;

fn write(path: &Path, data: &Path, cameras: &[&str]) {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut text = format!(
        "[server]\ndata_dir = \"{}\"\n[models]\nmanifest = \"{root}/models/manifest.toml\"\n\
         embedder = \"mobilenetv2-imagenet\"\n[analysis]\nfps = 2\nwidth = 320\n\
         [api]\nlisten = \"127.0.0.1:0\"\n",
        data.display()
    );
    for c in cameras {
        text.push_str(&format!("[[cameras]]\nid = \"{c}\"\nurl = \"test:ball\"\n"));
    }
    // a rewrite within the same second must still be seen as a change
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(path, text).unwrap();
}

/// The last state the events file reports for `camera`.
fn state(events: &Path, camera: &str) -> Option<String> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "camera_state" && v["camera"] == camera)
        .map(|v| v["state"].as_str().unwrap_or_default().to_string())
}

#[test]
fn edited_cameras_are_applied_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (config, data, events, log) = (
        dir.path().join("site.toml"),
        dir.path().join("data"),
        dir.path().join("events.jsonl"),
        dir.path().join("serve.log"),
    );
    write(&config, &data, &["one"]);
    let mut child = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_crosscam"))
            .args(["serve", "--config"])
            .arg(&config)
            .arg("--events")
            .arg(&events)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let live = |c: &str| state(&events, c).as_deref() == Some("live");
    assert!(
        wait_for(Duration::from_secs(60), || live("one")).is_some(),
        "camera one never went live\n{}",
        log_text()
    );

    write(&config, &data, &["one", "two"]);
    assert!(
        wait_for(Duration::from_secs(30), || live("two")).is_some(),
        "the added camera never went live\n{}",
        log_text()
    );

    // a mistake: the daemon says so and keeps both cameras
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &config,
        "[[cameras]]\nid = \"three\"\nurl = \"nonsense://x\"\n",
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || log_text().contains("not valid")).is_some(),
        "the broken config was not reported\n{}",
        log_text()
    );
    assert!(child.try_wait().unwrap().is_none(), "the daemon stopped");
    assert!(live("one") && live("two"), "a camera was touched");

    write(&config, &data, &["two"]);
    assert!(
        wait_for(Duration::from_secs(30), || state(&events, "one").as_deref()
            == Some("stopped"))
        .is_some(),
        "the removed camera did not stop\n{}",
        log_text()
    );
    assert!(live("two"));

    assert!(
        child.terminate(30).is_some(),
        "SIGTERM did not stop the daemon"
    );
    // the store knows the camera that was added at run time
    let conn = rusqlite::Connection::open(data.join("crosscam.db")).unwrap();
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM cameras WHERE id = 'two'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(n, 1);
}

/// Camera ids and URLs as the API lists them.
fn listed(d: &common::daemon::Daemon, token: &str) -> Vec<(String, String)> {
    let (st, v) = d.get("/api/v1/cameras", Some(token));
    assert_eq!(st, 200, "{v}");
    v["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["url"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn cameras_changed_through_the_api_outlast_a_restart_until_the_config_file_is_edited() {
    use common::daemon::{Daemon, config_text};
    let file = |one: &str| {
        format!(
            "[[cameras]]\nid = \"one\"\nurl = \"{one}\"\n[[cameras]]\nid = \"two\"\nurl = \"test:snow\"\n"
        )
    };
    let mut d = Daemon::start(&file("test:ball"), "");
    let t = d.login("integrator");
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&t),
        &serde_json::json!({"id": "lobby", "url": "test:smpte"}),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = d.put_json(
        "/api/v1/cameras/one",
        Some(&t),
        &serde_json::json!({"url": "test:pinwheel"}),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = d.delete("/api/v1/cameras/two", Some(&t));
    assert_eq!(st, 204, "{v}");
    let now = pairs(&[("one", "test:pinwheel"), ("lobby", "test:smpte")]);
    assert_eq!(listed(&d, &t), now);
    let origin = |d: &Daemon, t: &str, id: &str| {
        d.get(&format!("/api/v1/cameras/{id}"), Some(t)).1["origin"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(origin(&d, &t, "one"), "api");
    assert_eq!(origin(&d, &t, "lobby"), "api");

    // a restart runs the cameras as the API left them, not as the file has them
    assert!(d.stop(), "{}", d.log_tail(30));
    let (dir, config) = (
        std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap()),
        d.config.clone(),
    );
    drop(d);
    let mut d = Daemon::spawn(dir, config.clone());
    let t = d.login("integrator");
    assert_eq!(listed(&d, &t), now, "{}", d.log_tail(30));
    d.wait_for(60, "the API's camera live after the restart", || {
        let (_, v) = d.get("/api/v1/cameras/lobby", Some(&t));
        (v["status"]["state"] == "live").then_some(())
    });

    // the file's entry for camera one is edited later: the file wins; two's entry is
    // untouched, so its removal holds
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&config, config_text(d.dir.path(), &file("test:gamut"), "")).unwrap();
    let edited = pairs(&[("one", "test:gamut"), ("lobby", "test:smpte")]);
    d.wait_for(30, "the edited file applied", || {
        (listed(&d, &t) == edited).then_some(())
    });
    assert!(
        d.log_tail(200)
            .contains("edited after its change through the API"),
        "{}",
        d.log_tail(30)
    );
    assert!(d.stop(), "{}", d.log_tail(30));
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);
    let d = Daemon::spawn(dir, config);
    let t = d.login("integrator");
    assert_eq!(listed(&d, &t), edited, "{}", d.log_tail(30));
    assert_eq!(origin(&d, &t, "one"), "config", "the file's version runs");
    assert_eq!(origin(&d, &t, "lobby"), "api");
}
