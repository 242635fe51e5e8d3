//! Hostile cameras against a real daemon: no camera field becomes pipeline syntax, the API cannot
//! be used to find out which files exist, files that are not videos are refused before they
//! start, and a camera whose GStreamer element aborts or crashes takes down only that camera.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, clip_camera};
use common::wait_for;
use crosscam::config::{CameraSettings, Config};
use crosscam::ingest::CameraState;
use crosscam::server::Server;
use serde_json::json;

fn camera_state(d: &Daemon, token: &str, id: &str) -> (String, String, u64) {
    let (_, v) = d.get(&format!("/api/v1/cameras/{id}"), Some(token));
    (
        v["status"]["state"].as_str().unwrap_or("").to_string(),
        v["status"]["detail"].as_str().unwrap_or("").to_string(),
        v["status"]["reconnects"].as_u64().unwrap_or(0),
    )
}

#[test]
fn integrator_cannot_inject_elements_probe_files_or_start_non_videos() {
    let media = tempfile::tempdir().unwrap();
    let victim = media.path().join("victim.txt");
    std::fs::write(&victim, "keep me\n").unwrap();
    std::fs::copy(
        crosscam::paths::media("messi5.jpg"),
        media.path().join("photo.jpg"),
    )
    .unwrap();
    std::fs::write(
        media.path().join("notes.mp4"),
        "just some text\n".repeat(100),
    )
    .unwrap();
    std::fs::copy(
        crosscam::paths::media("vtest-h264.mp4"),
        media.path().join("clip.mp4"),
    )
    .unwrap();
    let cameras = format!(
        "[ingest]\nmedia_dirs = [\"{}\"]\n\n{}",
        media.path().display(),
        clip_camera("a", 0.0)
    );
    let d = Daemon::start(&cameras, "");
    let token = d.login("integrator");
    d.wait_for(60, "camera a live", || {
        (camera_state(&d, &token, "a").0 == "live").then_some(())
    });
    let v = victim.display();
    // every source kind, fields with GStreamer syntax: refused, or taken as one plain value
    let attempts = [
        json!({"url": format!("v4l2:///dev/video0  fakesrc ! filesink location={v}  videotestsrc")}),
        json!({"url": format!("v4l2:///dev/video0\"!filesink location={v}")}),
        json!({"url": format!("test:ball ! filesink location={v}")}),
        json!({"url": format!("test:ball\nfilesink location={v}")}),
        json!({"url": format!("rtsp://127.0.0.1:9/x ! filesink location={v}")}),
        json!({"url": format!("file://{}\" ! filesink location={v} name=x", media.path().join("clip.mp4").display())}),
    ];
    for body in &attempts {
        let (st, r) = d.put_json("/api/v1/cameras/x", Some(&token), body);
        assert_eq!(st, 422, "{body} → {r}");
        assert!(!r.to_string().is_empty());
    }
    // a hostile value that is a well-formed URL is one property value: the camera just fails
    let body = json!({"url": format!("rtsp://127.0.0.1:9/a\"!filesink_location={v}_name=y")});
    let (st, r) = d.put_json("/api/v1/cameras/x", Some(&token), &body);
    assert!(st == 201, "{r}");
    let (state, detail, _) = d.wait_for(30, "camera x to report its failure", || {
        let s = camera_state(&d, &token, "x");
        (!s.1.is_empty()).then_some(s)
    });
    assert_ne!(state, "live", "{detail}");
    let (st, _) = d.delete("/api/v1/cameras/x", Some(&token));
    assert_eq!(st, 204);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");

    // files outside the media folders: one answer whether they exist or not
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("id_rsa"), "secret").unwrap();
    let (s1, r1) = d.put_json(
        "/api/v1/cameras/y",
        Some(&token),
        &json!({"url": format!("file://{}", outside.path().join("id_rsa").display())}),
    );
    let (s2, r2) = d.put_json(
        "/api/v1/cameras/y",
        Some(&token),
        &json!({"url": format!("file://{}", outside.path().join("nothing").display())}),
    );
    assert_eq!((s1, s2), (422, 422));
    assert_eq!(r1, r2, "the answer must not tell whether the file exists");
    assert!(r1.to_string().contains("media_dirs"), "{r1}");

    // not videos: refused before they start, saying what they are
    for (file, what) in [("photo.jpg", "still image"), ("notes.mp4", "")] {
        let (st, r) = d.put_json(
            "/api/v1/cameras/z",
            Some(&token),
            &json!({"url": format!("file://{}", media.path().join(file).display()), "loop_file": true}),
        );
        assert_eq!(st, 422, "{file}: {r}");
        assert!(
            r.to_string().contains(what) && r.to_string().contains("video"),
            "{file}: {r}"
        );
    }
    // a real video inside the media folder is fine
    let (st, r) = d.put_json(
        "/api/v1/cameras/z",
        Some(&token),
        &json!({"url": format!("file://{}", media.path().join("clip.mp4").display()), "loop_file": true}),
    );
    assert_eq!(st, 201, "{r}");
    d.wait_for(60, "camera z live", || {
        (camera_state(&d, &token, "z").0 == "live").then_some(())
    });
    // the daemon and camera a never noticed
    let (state, _, reconnects) = camera_state(&d, &token, "a");
    assert_eq!((state.as_str(), reconnects), ("live", 0));
}

/// The pids of this process's children running `camera-worker --camera <id>`.
fn worker_pids(camera: &str) -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .map(str::trim)
            .unwrap_or("");
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).to_string())
            .collect();
        let serves = args
            .windows(3)
            .any(|w| w[0] == "camera-worker" && w[1] == "--camera" && w[2] == camera);
        if ppid == me && serves {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_camera_whose_element_aborts_or_crashes_takes_down_only_itself() {
    let root = env!("CARGO_MANIFEST_DIR");
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[models]\nmanifest = \"{root}/models/manifest.toml\"\n\
         [analysis]\nfps = 4\nwidth = 416\n\
         [ingest]\nreconnect_initial_ms = 300\nreconnect_max_ms = 1000\n\n{}{}",
        data.path().display(),
        clip_camera("a", 0.0),
        clip_camera("b", 10.0),
    );
    let cfg = Config::parse(&text, &data.path().join("site.toml")).unwrap();
    let server = Server::start(&cfg, None).unwrap();
    let status = |id: &str| server.ingest.camera_status(id).unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            status("a").state == CameraState::Live && status("b").state == CameraState::Live
        })
        .is_some(),
        "{:?}",
        server.status()
    );
    // 1. a camera process that is killed (as the kernel's out-of-memory killer would): only b
    //    restarts
    let pids = worker_pids("b");
    assert_eq!(pids.len(), 1, "one camera process for b: {pids:?}");
    unsafe {
        assert_eq!(libc::kill(pids[0], libc::SIGKILL), 0);
    }
    let seen = std::sync::Mutex::new(String::new());
    assert!(
        wait_for(Duration::from_secs(10), || {
            let s = status("b");
            if s.detail.contains("signal 9") {
                *seen.lock().unwrap() = s.detail.clone();
            }
            !seen.lock().unwrap().is_empty()
        })
        .is_some(),
        "b's detail says how its process died: {:?}",
        status("b")
    );
    assert!(
        wait_for(Duration::from_secs(30), || status("b").state
            == CameraState::Live
            && status("b").reconnects >= 1)
        .is_some(),
        "b comes back: {:?}",
        status("b")
    );
    assert_ne!(worker_pids("b"), pids, "b runs in a new process");

    // 2. a real GStreamer element that aborts the process (videorate on a still image; the
    //    probe would refuse this file, so it is added past the probe, as a file that only
    //    breaks during playback would be)
    let jpeg = CameraSettings {
        id: "still".into(),
        url: format!("file://{}", crosscam::paths::media("messi5.jpg").display()),
        name: None,
        enabled: true,
        username: None,
        username_env: None,
        password_env: None,
        transport: Default::default(),
        fps: None,
        realtime: true,
        loop_file: true,
        start_s: None,
        credential: None,
    };
    assert!(
        server
            .ingest
            .check(&jpeg)
            .unwrap_err()
            .contains("still image")
    );
    server.ingest.add(jpeg).unwrap();
    let detail = std::sync::Mutex::new(String::new());
    assert!(
        wait_for(Duration::from_secs(20), || {
            let s = status("still");
            *detail.lock().unwrap() = s.detail.clone();
            s.detail.contains("SIGABRT")
        })
        .is_some(),
        "the aborting camera says why: {:?}",
        status("still")
    );
    eprintln!("the aborting camera's detail: {}", detail.lock().unwrap());
    // the others kept going the whole time: a never restarted, b restarted only for its crash
    let n0 = status("a").analysed;
    std::thread::sleep(Duration::from_secs(3));
    let a = status("a");
    assert_eq!((a.state, a.reconnects), (CameraState::Live, 0), "{a:?}");
    assert!(a.analysed > n0, "a is still analysed: {a:?}");
    assert_eq!(status("b").state, CameraState::Live);
    server.shutdown();
}

/// A library planted in the working directory's parent (with a manifest that makes it look like
/// crosscam's root) is never loaded: ONNX Runtime comes from the config, the environment or the
/// installation.
#[test]
fn libraries_are_not_looked_up_from_the_working_directory() {
    let planted = tempfile::tempdir().unwrap();
    let p = planted.path();
    std::fs::create_dir_all(p.join("models")).unwrap();
    std::fs::copy(
        format!("{}/models/manifest.toml", env!("CARGO_MANIFEST_DIR")),
        p.join("models/manifest.toml"),
    )
    .unwrap();
    std::fs::create_dir_all(p.join(".deps/onnxruntime")).unwrap();
    std::fs::write(
        p.join(".deps/onnxruntime/libonnxruntime.so.1.32.0"),
        "not a library",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("work")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_crosscam"))
        .args(["doctor", "--json"])
        .current_dir(p.join("work"))
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("CROSSCAM_HOME")
        .env_remove("CROSSCAM_DEPS_DIR")
        .env_remove("CROSSCAM_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    let ort = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "onnxruntime")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(ort["ok"], true, "{ort}");
    let detail = ort["detail"].as_str().unwrap();
    assert!(
        !detail.contains(&p.display().to_string()),
        "the planted library was used: {detail}"
    );
}
