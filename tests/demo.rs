//! `crosscam demo`: its virtual RTSP cameras (in-process RTSP server on 127.0.0.1), the web UI and
//! API with the demo login it prints, people found on both cameras, a clean stop.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::agent;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn demo_serves_virtual_cameras_and_prints_a_login() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let rtsp = free_port();
    // the demo config, with its data, RTSP and HTTP ports moved out of the way
    let text = std::fs::read_to_string(format!("{root}/config/demo.toml"))
        .unwrap()
        .replace(
            "../data/demo",
            &dir.path().join("data").display().to_string(),
        )
        .replace("../models/", &format!("{root}/models/"))
        .replace("127.0.0.1:8554", &format!("127.0.0.1:{rtsp}"))
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\"");
    let config = dir.path().join("demo.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_crosscam"))
            .args(["demo", "--config"])
            .arg(&config)
            .env("NO_COLOR", "1")
            .env_remove("CROSSCAM_DEMO_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut base, mut password, mut lines) = (None, None, Vec::new());
    let t0 = Instant::now();
    while (base.is_none() || password.is_none()) && t0.elapsed() < Duration::from_secs(90) {
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
            panic!("no URL or demo login printed:\n{}", lines.join("\n"));
        }
    };
    assert!(password.len() >= 12, "a generated password: {password}");
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
    // both virtual cameras come in over RTSP and stay live; people are found on both
    let t0 = Instant::now();
    loop {
        let cams = get("/api/v1/cameras");
        let ids = get("/api/v1/identities?limit=1000");
        let cams_seen: std::collections::BTreeSet<String> = ids["identities"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|i| {
                i["cameras"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_str().unwrap().to_string())
            })
            .collect();
        let all_live = cams["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["status"]["state"] == "live");
        let urls: Vec<&str> = cams["cameras"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["url"].as_str().unwrap())
            .collect();
        assert!(
            urls.iter()
                .all(|u| u.starts_with(&format!("rtsp://127.0.0.1:{rtsp}/"))),
            "{urls:?}"
        );
        if all_live && cams_seen.len() == 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "cameras {cams}\nidentities seen on {cams_seen:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let cams = get("/api/v1/cameras");
    for c in cams["cameras"].as_array().unwrap() {
        assert_eq!(c["status"]["reconnects"], 0, "{c}");
    }
    let status = child.terminate(60).expect("the demo stops on SIGTERM");
    assert!(status.success(), "{status:?}");
}
