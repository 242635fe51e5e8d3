//! Cameras against real RTSP servers on 127.0.0.1 (gstreamer-rtsp-server in this process) serving
//! the H.264 vtest clip: going live, surviving server restarts, frozen streams, wrong credentials,
//! missing streams and files, and cameras changed at run time.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{TestCamera, wait_for};
use crosscam::config::Config;
use crosscam::ingest::{AnalysisQueue, CameraState, Ingest, StateListener};

fn config(cameras: &str) -> Config {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "[models]\nmanifest = \"{root}/models/manifest.toml\"\n[analysis]\nfps = 5\nwidth = 320\n\
         [ingest]\nreconnect_initial_ms = 250\nreconnect_max_ms = 1000\nstall_timeout_ms = 2000\nconnect_timeout_ms = 8000\n{cameras}"
    );
    Config::parse(&text, Path::new(&format!("{root}/tests/rtsp.toml"))).unwrap()
}

fn camera(id: &str, url: &str, extra: &str) -> String {
    format!("[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\ntransport = \"tcp\"\n{extra}\n")
}

/// Records every state change of every camera.
#[derive(Clone, Default)]
struct Transitions(Arc<Mutex<Vec<(String, CameraState, String)>>>);

impl Transitions {
    fn listener(&self) -> StateListener {
        let log = self.0.clone();
        Arc::new(move |id: &str, s: CameraState, d: &str| {
            log.lock().unwrap().push((id.to_string(), s, d.to_string()))
        })
    }
    fn saw(&self, id: &str, s: CameraState) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(i, st, _)| i == id && *st == s)
    }
    fn detail(&self, id: &str, s: CameraState) -> Option<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(i, st, _)| i == id && *st == s)
            .map(|(_, _, d)| d.clone())
    }
}

/// Drains the analysis queue like the analysis stage would.
fn drain(q: Arc<AnalysisQueue>, ingest: Arc<Ingest>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        while !q.is_closed() {
            for (cam, _) in q.pop_batch(4, Duration::from_millis(100)) {
                ingest.mark_analysed(&cam, true);
            }
        }
    })
}

fn state(ingest: &Ingest, id: &str) -> CameraState {
    ingest
        .camera_status(id)
        .map(|s| s.state)
        .unwrap_or(CameraState::Stopped)
}

fn start(cameras: &str, t: &Transitions) -> (Arc<Ingest>, JoinHandle<()>) {
    let cfg = config(cameras);
    let ingest = Arc::new(Ingest::new(&cfg, Some(t.listener())).unwrap());
    let d = drain(ingest.queue(), ingest.clone());
    for c in &cfg.cameras {
        ingest.add(c.clone()).unwrap();
    }
    (ingest, d)
}

fn server_restart_cycle(transport: &str) {
    let mut server = TestCamera::start(None);
    let t = Transitions::default();
    let (ingest, drainer) = start(
        &camera(
            "gate",
            &server.url(),
            &format!("transport = \"{transport}\""),
        )
        .replace("transport = \"tcp\"\n", ""),
        &t,
    );
    assert!(
        wait_for(Duration::from_secs(15), || state(&ingest, "gate")
            == CameraState::Live)
        .is_some(),
        "never went live: {:?}",
        ingest.status()
    );
    std::thread::sleep(Duration::from_secs(1));
    let frames_before = ingest.camera_status("gate").unwrap().frames_in;
    assert!(frames_before >= 3, "frames arrive: {:?}", ingest.status());

    server.stop();
    let left = wait_for(Duration::from_secs(3), || {
        state(&ingest, "gate") != CameraState::Live
    });
    assert!(
        left.is_some(),
        "{transport}: still live 3 s after the server stopped: {:?}",
        ingest.status()
    );

    std::thread::sleep(Duration::from_secs(2));
    server.restart();
    let back = wait_for(Duration::from_secs(5), || {
        state(&ingest, "gate") == CameraState::Live
    });
    assert!(
        back.is_some(),
        "{transport}: not live 5 s after the server came back: {:?}",
        ingest.status()
    );
    let st = ingest.camera_status("gate").unwrap();
    assert!(st.reconnects >= 1, "{st:?}");
    eprintln!("{transport}: left live after {left:?}, live again {back:?} after restart; {st:?}");
    ingest.shutdown();
    drainer.join().unwrap();
}

#[test]
fn tcp_camera_survives_a_server_restart() {
    server_restart_cycle("tcp");
}

#[test]
fn udp_camera_survives_a_server_restart() {
    server_restart_cycle("udp");
}

#[test]
fn frozen_stream_is_caught_by_the_watchdog() {
    let server = TestCamera::start(None);
    let t = Transitions::default();
    let (ingest, drainer) = start(&camera("frozen", &server.url(), ""), &t);
    assert!(
        wait_for(Duration::from_secs(15), || state(&ingest, "frozen")
            == CameraState::Live)
        .is_some()
    );
    std::thread::sleep(Duration::from_millis(500));
    server.freeze();
    // stall timeout 2 s: the watchdog must notice within about 3 s (nothing is posted on the bus)
    assert!(
        wait_for(Duration::from_secs(4), || t
            .saw("frozen", CameraState::Stalled))
        .is_some(),
        "{:?}",
        ingest.status()
    );
    assert!(
        t.detail("frozen", CameraState::Stalled)
            .unwrap()
            .contains("frozen")
    );
    // a new session gets fresh media from the server: the camera recovers by itself
    assert!(
        wait_for(Duration::from_secs(8), || state(&ingest, "frozen")
            == CameraState::Live)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    ingest.shutdown();
    drainer.join().unwrap();
}

#[test]
fn wrong_credentials_are_reported_as_unauthorized() {
    let server = TestCamera::start(Some(("operator", "s3cret")));
    // SAFETY: variables private to this test
    unsafe {
        std::env::set_var("CROSSCAM_CAM_TEST_GOOD_PW", "s3cret");
        std::env::set_var("CROSSCAM_CAM_TEST_BAD_PW", "guess");
    }
    let t = Transitions::default();
    let cams = camera(
        "good",
        &server.url(),
        "username = \"operator\"\npassword_env = \"CROSSCAM_CAM_TEST_GOOD_PW\"",
    ) + &camera(
        "bad",
        &server.url(),
        "username = \"operator\"\npassword_env = \"CROSSCAM_CAM_TEST_BAD_PW\"",
    );
    let (ingest, drainer) = start(&cams, &t);
    assert!(
        wait_for(Duration::from_secs(10), || state(&ingest, "bad")
            == CameraState::Unauthorized)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    assert!(
        wait_for(Duration::from_secs(15), || state(&ingest, "good")
            == CameraState::Live)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    let d = t.detail("bad", CameraState::Unauthorized).unwrap();
    assert!(d.to_lowercase().contains("unauthorized"), "{d}");
    // retried slowly: no hammering of the camera
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ingest.camera_status("bad").unwrap().reconnects, 0);
    ingest.shutdown();
    drainer.join().unwrap();
}

#[test]
fn missing_stream_and_missing_file_are_not_found() {
    let server = TestCamera::start(None);
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.mp4");
    std::fs::copy(crosscam::paths::media("vtest-h264.mp4"), &clip).unwrap();
    let t = Transitions::default();
    let cams = camera(
        "nostream",
        &format!("rtsp://127.0.0.1:{}/nope", server.port),
        "",
    ) + &camera(
        "nofile",
        &format!("file://{}", clip.display()),
        "loop_file = true",
    );
    let cfg = config(&cams);
    // the file exists when the config is checked, and disappears before the camera opens it
    std::fs::remove_file(&clip).unwrap();
    let ingest = Arc::new(Ingest::new(&cfg, Some(t.listener())).unwrap());
    let drainer = drain(ingest.queue(), ingest.clone());
    for c in &cfg.cameras {
        ingest.add(c.clone()).unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(10), || state(&ingest, "nostream")
            == CameraState::NotFound)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    assert!(
        wait_for(Duration::from_secs(10), || state(&ingest, "nofile")
            == CameraState::NotFound)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    let d = t.detail("nofile", CameraState::NotFound).unwrap();
    assert!(
        d.contains(&clip.display().to_string()),
        "the message names the path: {d}"
    );
    ingest.shutdown();
    drainer.join().unwrap();
}

#[test]
fn cameras_are_added_changed_and_removed_without_touching_the_others() {
    let server = TestCamera::start(None);
    let t = Transitions::default();
    let (ingest, drainer) = start(&camera("a", &server.url(), ""), &t);
    assert!(
        wait_for(Duration::from_secs(15), || state(&ingest, "a")
            == CameraState::Live)
        .is_some()
    );
    let cfg = config(&(camera("a", &server.url(), "") + &camera("b", "test:ball", "")));
    ingest.apply(&cfg.cameras).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || state(&ingest, "b")
            == CameraState::Live)
        .is_some(),
        "{:?}",
        ingest.status()
    );
    let a_reconnects = ingest.camera_status("a").unwrap().reconnects;
    // change b (another pattern), then remove it: a is never restarted
    let cfg = config(&(camera("a", &server.url(), "") + &camera("b", "test:snow", "")));
    ingest.apply(&cfg.cameras).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || state(&ingest, "b")
            == CameraState::Live)
        .is_some()
    );
    let cfg = config(&camera("a", &server.url(), ""));
    ingest.apply(&cfg.cameras).unwrap();
    assert!(ingest.camera_status("b").is_none());
    let a = ingest.camera_status("a").unwrap();
    assert_eq!(
        (a.state, a.reconnects),
        (CameraState::Live, a_reconnects),
        "{a:?}"
    );
    let before = a.frames_in;
    std::thread::sleep(Duration::from_secs(1));
    assert!(ingest.camera_status("a").unwrap().frames_in > before);
    ingest.shutdown();
    drainer.join().unwrap();
}

#[test]
fn a_file_camera_can_start_into_its_clip() {
    let media = crosscam::paths::media("vtest-h264.mp4");
    let cfg = config(&camera(
        "late",
        &format!("file://{}", media.display()),
        // in real time: a file played as fast as possible fills the queue, which drops its
        // oldest frames before the test reads them
        "start_s = 40",
    ));
    let ingest = Arc::new(Ingest::new(&cfg, None).unwrap());
    ingest.add(cfg.cameras[0].clone()).unwrap();
    let q = ingest.queue();
    let mut first = None;
    wait_for(Duration::from_secs(20), || {
        for (_, f) in q.pop_batch(4, Duration::from_millis(100)) {
            first.get_or_insert(f.pts);
        }
        first.is_some()
    });
    ingest.shutdown();
    let first = first.expect("no frame from the file camera");
    assert!(
        (first.as_secs_f64() - 40.0).abs() < 0.5,
        "the first frame is at {first:?}, not 40 s into the clip"
    );
}
