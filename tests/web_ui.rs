//! The web UI in real headless Chromium (Debian's `chromium`, driven by playwright-core from
//! npm; both installed by `make setup`): sign in, watch the camera wall update (camera names,
//! one colour per camera, an offline camera with its reason), open an identity (thumbnails, its
//! timeline, sightings as crop groups) and split a sighting off, search by image (camera, time and
//! likelihood band), be told what a camera form lacks before it is sent, start a re-tune job as
//! admin and watch its phase, step and ETA, cancel it and read the outcome; as an operator, be
//! refused the jobs page, see cameras without Add or Remove, and answer the review queue with one
//! key per link (same, different, skip), each answer a stored label (tests/browser/ui.mjs).
//! `SCREENSHOTS=docs/img` keeps a picture of each page.

mod common;

use common::daemon::{Daemon, PASSWORD, clip_camera};

#[test]
fn web_ui_in_headless_chromium() {
    // cameras with names (the UI shows names, not ids), and a third that plays the last seconds
    // of the clip once and stops at its end: the wall shows it offline, with the reason
    let named = |cam: String, name: &str| cam.replacen("\n", &format!("\nname = \"{name}\"\n"), 1);
    let cams = format!(
        "{}{}{}",
        named(clip_camera("entrance", 0.0), "Main entrance"),
        named(clip_camera("plaza", 30.0), "Plaza"),
        named(
            clip_camera("dock", 72.0).replace("loop_file = true", "loop_file = false"),
            "Loading dock"
        )
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
        // the browser splits a person seen at least twice
        let twice = ids["identities"]
            .as_array()
            .is_some_and(|v| v.iter().any(|i| i["sightings"].as_i64().unwrap_or(0) >= 2));
        // the operator answers three links in the review queue
        let (_, review) = d.get("/api/v1/review", Some(&admin));
        let queued = review["queue"].as_array().map_or(0, Vec::len);
        (ended >= 10 && ids["total"].as_u64().unwrap_or(0) >= 3 && twice && queued >= 3)
            .then_some(())
    });
    // a footballer who never walked past these cameras, for the search's likelihood bands
    let footballer = crosscam::paths::media("messi5.jpg");
    let out = common::daemon::browser(
        "ui.mjs",
        &d.base,
        &[
            ("ADMIN_USER", "admin".as_ref()),
            ("ADMIN_PASSWORD", PASSWORD.as_ref()),
            ("OPERATOR_USER", "operator".as_ref()),
            ("OPERATOR_PASSWORD", PASSWORD.as_ref()),
            ("FOOTBALLER", footballer.as_os_str()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\ndaemon log tail:\n{}",
        d.log_tail(40)
    );
    assert!(stdout.contains("ui: all checks passed"), "{stdout}");
    println!("{stdout}");
    // the job the browser cancelled left the registry as it was
    let (_, models) = d.get("/api/v1/models", Some(&admin));
    assert_eq!(models["current"], "v0001", "{models}");
    let (_, jobs) = d.get("/api/v1/jobs", Some(&admin));
    let j = &jobs["jobs"][0];
    assert_eq!(j["state"], "finished", "{jobs}");
    assert_eq!(j["report"]["status"], "cancelled", "{jobs}");
}
