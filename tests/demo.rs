//! `make demo`'s exact command (`./target/release/crosscam demo --config config/demo.toml`, a
//! relative config path) run from a fresh-clone layout: its virtual RTSP cameras (in-process RTSP
//! server on 127.0.0.1), the web UI and API with the demo login it prints on stdout, both cameras
//! live and a person linked across them, a clean stop.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::agent;

/// The Makefile's `demo` recipe, read from the Makefile itself.
fn makefile_demo_command(root: &str) -> Vec<String> {
    let make = std::fs::read_to_string(format!("{root}/Makefile")).unwrap();
    let mut lines = make.lines().skip_while(|l| !l.starts_with("demo:"));
    lines.next();
    let recipe = lines.next().expect("a recipe line under demo:").trim();
    recipe.split_whitespace().map(str::to_string).collect()
}

#[test]
fn make_demo_command_runs_from_a_fresh_clone_layout() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cmd = makefile_demo_command(root);
    assert_eq!(
        cmd,
        [
            "./target/release/crosscam",
            "demo",
            "--config",
            "config/demo.toml"
        ],
        "the Makefile's demo command changed: update this test"
    );
    for port in [8080, 8554] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} (the demo config's) is in use: stop the other demo or server first"
        );
    }
    // a fresh clone: the config copied as it is, models and the binary where a clone has them
    let clone = tempfile::tempdir().unwrap();
    let c = clone.path();
    std::fs::create_dir_all(c.join("config")).unwrap();
    std::fs::create_dir_all(c.join("target/release")).unwrap();
    std::fs::copy(
        format!("{root}/config/demo.toml"),
        c.join("config/demo.toml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("{root}/models"), c.join("models")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_crosscam"),
        c.join("target/release/crosscam"),
    )
    .unwrap();
    let mut child = common::KillOnDrop(
        Command::new(&cmd[0])
            .args(&cmd[1..])
            .current_dir(c)
            .env_remove("CROSSCAM_DEMO_PASSWORD")
            .env_remove("CROSSCAM_HOME")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // logs go to stderr, without colour codes when it is not a terminal
    let err = child.stderr.take().unwrap();
    let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sl = stderr_lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            sl.lock().unwrap().push(line);
        }
    });
    let (mut base, mut password, mut lines) = (None, None, Vec::new());
    let t0 = Instant::now();
    while (base.is_none() || password.is_none()) && t0.elapsed() < Duration::from_secs(120) {
        if let Ok(l) = rx.recv_timeout(Duration::from_secs(1)) {
            if let Some(rest) = l.strip_prefix("web UI and API: ") {
                base = rest
                    .split_whitespace()
                    .next()
                    .map(|u| u.trim_end_matches('/').to_string());
            }
            if let Some(i) = l.find("sign in as  demo / ") {
                password = l[i + 19..].split_whitespace().next().map(str::to_string);
            }
            lines.push(l);
        }
    }
    let (base, password) = match (base, password) {
        (Some(b), Some(p)) => (b, p),
        _ => {
            let _ = child.kill();
            panic!(
                "no URL or demo login on stdout:\n{}\nstderr:\n{}",
                lines.join("\n"),
                stderr_lines.lock().unwrap().join("\n")
            );
        }
    };
    assert_eq!(base, "http://127.0.0.1:8080");
    assert!(password.len() >= 12, "a generated password: {password}");
    assert!(
        lines.iter().any(|l| l.contains("trained on about")),
        "the demo says what its embedder was trained on: {lines:?}"
    );
    let a = agent();
    let r = a
        .post(&format!("{base}/api/v1/login"))
        .send_json(serde_json::json!({"user": "demo", "password": password}))
        .unwrap();
    let (st, v) = common::daemon::json_of(r);
    assert_eq!((st, v["role"].as_str()), (200, Some("admin")), "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let get = |p: &str| {
        common::daemon::json_of(
            a.get(&format!("{base}{p}"))
                .header("Authorization", format!("Bearer {token}"))
                .call()
                .unwrap(),
        )
        .1
    };
    // both virtual cameras come in over RTSP and go live; someone is linked across them
    let t0 = Instant::now();
    let mut all_live_once = false;
    loop {
        let cams = get("/api/v1/cameras");
        let ids = get("/api/v1/identities?limit=1000");
        let linked = ids["identities"].as_array().unwrap().iter().any(|i| {
            let cs: std::collections::BTreeSet<&str> = i["cameras"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c.as_str())
                .collect();
            cs.contains("entrance") && cs.contains("plaza")
        });
        let states: Vec<String> = cams["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["status"]["state"].as_str().unwrap_or("").to_string())
            .collect();
        all_live_once |= states.len() == 2 && states.iter().all(|s| s == "live");
        if all_live_once && linked {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "cameras {cams}\nidentities {ids}\nnarration:\n{}",
            lines.join("\n")
        );
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cams = get("/api/v1/cameras");
    for c in cams["cameras"].as_array().unwrap() {
        assert_eq!(c["status"]["reconnects"], 0, "{c}");
    }
    // the narration reaches stdout through the event bus and a pipe: it may follow the API's
    // view of the link by a moment
    let narrated = Instant::now();
    while !lines.iter().any(|l| l.contains("seen again"))
        && narrated.elapsed() < Duration::from_secs(15)
    {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(l);
        }
    }
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    assert!(
        lines.iter().any(|l| l.contains("seen again")),
        "the narration tells of a person seen again: {lines:?}"
    );
    let status = child.terminate(60).expect("the demo stops on SIGTERM");
    assert!(status.success(), "{status:?}");
    let stderr = stderr_lines.lock().unwrap().join("\n");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in logs that go to a pipe"
    );
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "log lines mixed into the narration: {lines:?}"
    );
    // the data went where the config says, relative to the config file
    assert!(c.join("data/demo/crosscam.db").is_file());
}
