//! `[retune] schedule`: the daemon starts re-tuning jobs on its own. A daemon with no camera yet
//! reaches a due time with no new footage and skips, saying why; a camera added through the API
//! stores crops, and a later due time starts a real job (`crosscam job run`, started by
//! `scheduler`), reported in `/api/v1/status`, as a `retune_scheduled` event, in the jobs list
//! and in `DATA/jobs/schedule.json`. What the job then decides is the job tests' subject; the
//! daemon cancels it when the test stops it.

mod common;

use common::daemon::Daemon;
use serde_json::{Value, json};

#[test]
fn scheduled_retuning_skips_without_footage_and_starts_a_job_with_it() {
    let media = crosscam::paths::media("vtest-h264.mp4");
    let extra = format!(
        "[ingest]\nmedia_dirs = [\"{}\"]\n\n[retune]\nschedule = \"every 10s\"\nmin_new_crops = 8\nbudget = \"1ep\"\n",
        media.parent().unwrap().display()
    );
    let d = Daemon::start(&extra, "");
    let admin = d.login("admin");
    let integrator = d.login("integrator");

    // no camera, no crops: the first due time is skipped, and the status says why
    let (_, st) = d.get("/api/v1/status", Some(&admin));
    let sched = &st["retune_schedule"];
    assert_eq!(sched["schedule"], "every 10s", "{st}");
    assert_eq!(sched["min_new_crops"], 8);
    assert!(sched["next_ms"].as_i64().is_some(), "{sched}");
    let skipped: Value = d.wait_for(40, "the first due time", || {
        let (_, st) = d.get("/api/v1/status", Some(&admin));
        let last = st["retune_schedule"]["last"].clone();
        (!last.is_null()).then_some(last)
    });
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");
    assert_eq!(skipped["new_crops"], 0);
    let why = skipped["reason"].as_str().unwrap();
    assert!(
        why.contains("only 0 crops") && why.contains("min_new_crops is 8"),
        "{why}"
    );
    let (_, jobs) = d.get("/api/v1/jobs", Some(&admin));
    assert_eq!(jobs["jobs"].as_array().map(Vec::len), Some(0), "{jobs}");

    // a camera stores crops; a later due time starts a job
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "gate", "url": format!("file://{}", media.display()),
                "realtime": true, "loop_file": true}),
    );
    assert_eq!(st, 201, "{v}");
    let started: Value = d.wait_for(180, "a scheduled job to start", || {
        let (_, st) = d.get("/api/v1/status", Some(&admin));
        let last = st["retune_schedule"]["last"].clone();
        (last["outcome"] == "started").then_some(last)
    });
    let id = started["job"].as_str().unwrap().to_string();
    assert!(started["new_crops"].as_u64().unwrap() >= 8, "{started}");
    let (_, jobs) = d.get("/api/v1/jobs", Some(&admin));
    let job = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {jobs}"))
        .clone();
    assert_eq!(job["started_by"], "scheduler", "{job}");
    assert_eq!(job["request"]["scenario"], "S4");
    assert_eq!(job["request"]["budget"], "1ep");
    let kept: Value = serde_json::from_slice(
        &std::fs::read(d.dir.path().join("data/jobs/schedule.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(kept["last"]["job"], id.as_str(), "{kept}");
    assert!(kept["last_job_ms"].as_i64().unwrap() >= started["t_ms"].as_i64().unwrap());
}
