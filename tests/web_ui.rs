//! The web UI in real headless Chromium (Debian's `chromium`, driven by playwright-core from
//! npm; both installed by `make setup`): sign in, watch the camera wall update, open an identity
//! and its timeline, search by image, start and cancel a re-tune job as admin, and be refused the
//! jobs page as an operator (tests/browser/ui.mjs). `SCREENSHOTS=docs/img` keeps a picture of
//! each page.

mod common;

use common::daemon::{Daemon, PASSWORD, clip_camera};

#[test]
fn web_ui_in_headless_chromium() {
    let cams = format!(
        "{}{}",
        clip_camera("entrance", 0.0),
        clip_camera("plaza", 30.0)
    );
    let d = Daemon::start(&cams, "");
    // the job the browser starts re-tunes on stored crops: wait for enough ended tracklets that
    // it trains (and can be cancelled) instead of failing at once for lack of data
    let admin = d.login("admin");
    d.wait_for(180, "ended tracklets and identities in the store", || {
        let (_, st) = d.get("/api/v1/status", Some(&admin));
        let (_, ids) = d.get("/api/v1/identities", Some(&admin));
        let ended = st["pipeline"]["analysis"]["tracklets_ended"]
            .as_u64()
            .unwrap_or(0);
        (ended >= 10 && ids["total"].as_u64().unwrap_or(0) >= 3).then_some(())
    });
    let root = env!("CARGO_MANIFEST_DIR");
    let mut cmd = std::process::Command::new("node");
    cmd.current_dir(format!("{root}/tests/browser"))
        .arg("ui.mjs")
        .arg(&d.base)
        .env("ADMIN_USER", "admin")
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("OPERATOR_USER", "operator")
        .env("OPERATOR_PASSWORD", PASSWORD);
    if let Ok(dir) = std::env::var("SCREENSHOTS") {
        let dir = std::path::Path::new(root).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        cmd.env("SCREENSHOTS", dir);
    }
    let out = cmd
        .output()
        .expect("node (make setup installs Node.js, chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\ndaemon log tail:\n{}",
        d.log_tail(40)
    );
    assert!(stdout.contains("ui: all checks passed"), "{stdout}");
    // the job the browser cancelled left the registry as it was
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(models["current"], "v0001", "{models}");
    let (_, jobs) = d.get("/api/v1/jobs", Some(&admin));
    let j = &jobs["jobs"][0];
    assert_eq!(j["state"], "finished", "{jobs}");
    assert_eq!(j["report"]["status"], "cancelled", "{jobs}");
}
