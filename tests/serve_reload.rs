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
