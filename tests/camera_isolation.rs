//! With two RTSP cameras analysed by the real detector, killing one leaves the other's analysed
//! frame rate unchanged (within 10 %) — one camera's trouble never stalls another.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestCamera, wait_for};
use crosscam::config::Config;
use crosscam::ingest::CameraState;
use crosscam::server::Server;

fn analysed(server: &Server, id: &str) -> u64 {
    server
        .ingest
        .camera_status(id)
        .map(|s| s.analysed)
        .unwrap_or(0)
}

/// Analysed frames per second of `id` over `window`.
fn rate(server: &Server, id: &str, window: Duration) -> f64 {
    let (n0, t0) = (analysed(server, id), Instant::now());
    std::thread::sleep(window);
    (analysed(server, id) - n0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn killing_one_camera_leaves_the_others_rate_unchanged() {
    let mut a = TestCamera::start(None);
    let b = TestCamera::start(None);
    let root = env!("CARGO_MANIFEST_DIR");
    // the server's store goes to a temporary directory, not into the source tree
    let data = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n\
         [models]\nmanifest = \"{root}/models/manifest.toml\"\n[analysis]\nfps = 4\nwidth = 416\n\
         [ingest]\nreconnect_initial_ms = 500\nreconnect_max_ms = 2000\n\
         [[cameras]]\nid = \"a\"\nurl = \"{}\"\ntransport = \"tcp\"\n\
         [[cameras]]\nid = \"b\"\nurl = \"{}\"\ntransport = \"tcp\"\n",
        data.path().display(),
        a.url(),
        b.url()
    );
    let cfg = Config::parse(&text, Path::new(&format!("{root}/tests/isolation.toml"))).unwrap();
    let server = Server::start(&cfg, None).unwrap();
    let live = |id: &str| {
        server
            .ingest
            .camera_status(id)
            .is_some_and(|s| s.state == CameraState::Live)
    };
    assert!(
        wait_for(Duration::from_secs(20), || live("a") && live("b")).is_some(),
        "{:?}",
        server.status()
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = rate(&server, "b", Duration::from_secs(6));
    a.stop();
    assert!(wait_for(Duration::from_secs(3), || !live("a")).is_some());
    let after = rate(&server, "b", Duration::from_secs(6));
    let st = server.status();
    eprintln!(
        "camera b: {before:.2} analysed frames/s with a alive, {after:.2} with a dead; {st:?}"
    );
    assert!(before > 3.0, "b runs near its 4 fps: {before}");
    assert!(
        (after - before).abs() / before <= 0.10,
        "b's rate changed from {before:.2} to {after:.2}"
    );
    let b_status = server.ingest.camera_status("b").unwrap();
    assert_eq!(
        (b_status.state, b_status.reconnects),
        (CameraState::Live, 0)
    );
    drop(b);
    server.shutdown();
}
