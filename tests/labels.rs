//! Operators' labels through the real daemon on the vtest clip: the review queue lists links
//! with crops of both sides; an operator confirms, rejects, marks two identities the same or
//! different; an operator merge is recorded as a label too; integrators may not label; unknown
//! ids and malformed requests are refused with a message naming them; the labels come back with
//! user and time, and `different` tells the gallery to keep the two identities apart.

mod common;

use common::daemon::{Daemon, clip_camera};
use serde_json::{Value, json};

#[test]
fn labels_through_the_api() {
    let cams = format!(
        "{}{}",
        clip_camera("entrance", 0.0),
        clip_camera("plaza", 30.0)
    );
    let d = Daemon::start(&cams, "");
    let op = d.login("operator");
    let admin = d.login("admin");
    // links to ask about, and identities to compare
    let queue = d.wait_for(240, "three links in the review queue", || {
        let (c, r) = d.get("/api/v1/review", Some(&op));
        assert_eq!(c, 200, "{r}");
        let q = r["queue"].as_array().cloned().unwrap_or_default();
        (q.len() >= 3).then_some(q)
    });
    for it in &queue {
        assert!(
            it["kind"] == "uncertain" || it["kind"] == "near_miss",
            "{it}"
        );
        assert!(!it["tracklet_crops"].as_array().unwrap().is_empty(), "{it}");
        assert!(!it["identity_crops"].as_array().unwrap().is_empty(), "{it}");
    }
    // uncertain links come first
    let kinds: Vec<&str> = queue.iter().filter_map(|i| i["kind"].as_str()).collect();
    let first_near = kinds.iter().position(|k| *k == "near_miss");
    if let Some(p) = first_near {
        assert!(kinds[p..].iter().all(|k| *k == "near_miss"), "{kinds:?}");
    }
    let crop = queue[0]["tracklet_crops"][0].as_str().unwrap().to_string();
    let (c, _, bytes) = d.get_bytes(&crop, Some(&op));
    assert_eq!(c, 200);
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG crop");

    let (t0, i0) = (
        queue[0]["tracklet"].as_i64().unwrap(),
        queue[0]["identity"].as_i64().unwrap(),
    );
    let (t1, i1) = (
        queue[1]["tracklet"].as_i64().unwrap(),
        queue[1]["identity"].as_i64().unwrap(),
    );

    // integrators do not label; operators do
    let integ = d.login("integrator");
    let body = json!({"kind": "confirm", "tracklet": t0, "identity": i0});
    let (c, r) = d.post_json("/api/v1/labels", Some(&integ), &body);
    assert_eq!(c, 403, "{r}");
    let (c, r) = d.post_json("/api/v1/labels", None, &body);
    assert_eq!(c, 401, "{r}");
    let (c, r) = d.post_json("/api/v1/labels", Some(&op), &body);
    assert_eq!(c, 201, "{r}");
    assert_eq!(r["same"], true);
    assert_eq!(r["a"], json!([t0]));
    assert!(!r["b"].as_array().unwrap().contains(&json!(t0)), "{r}");
    // answered: no longer in the queue
    let (_, q) = d.get("/api/v1/review?limit=200", Some(&op));
    assert!(
        !q["queue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["tracklet"] == t0),
        "{q}"
    );
    let (c, r) = d.post_json(
        "/api/v1/labels",
        Some(&op),
        &json!({"kind": "reject", "tracklet": t1, "identity": i1, "note": "other coat"}),
    );
    assert_eq!(c, 201, "{r}");
    assert_eq!(r["same"], false);

    // hostile and mistaken requests: clear refusals, nothing stored
    let refusals: [(Value, u16, &str); 8] = [
        (
            json!({"kind": "confirm", "tracklet": t0, "identity": 999_999}),
            404,
            "no identity 999999",
        ),
        (
            json!({"kind": "confirm", "tracklet": 888_888, "identity": i0}),
            404,
            "no tracklet 888888",
        ),
        (
            json!({"kind": "maybe", "tracklet": t0, "identity": i0}),
            422,
            "`kind` must be",
        ),
        (
            json!({"kind": "merge", "identity": i0, "other": i1}),
            422,
            "recorded by the merge and split",
        ),
        (
            json!({"kind": "confirm", "identity": i0}),
            422,
            "needs `tracklet`",
        ),
        (
            json!({"kind": "same", "identity": i0, "other": i0}),
            422,
            "the same identity",
        ),
        (
            json!({"kind": "different", "identity": i0}),
            422,
            "needs `other`",
        ),
        (
            json!({"kind": "same", "identity": i0, "other": i1, "sneaky": 1}),
            422,
            "sneaky",
        ),
    ];
    for (b, code, says) in &refusals {
        let (c, r) = d.post_json("/api/v1/labels", Some(&op), b);
        assert_eq!(c, *code, "{b} → {r}");
        let detail = r["detail"].as_str().unwrap_or("");
        assert!(detail.contains(says), "{b} → {detail}");
    }
    let (c, r) = d.delete("/api/v1/labels/777777", Some(&op));
    assert_eq!(c, 404, "{r}");

    // two live identities marked different: the gallery keeps them apart from now on
    let (_, ids) = d.get("/api/v1/identities?limit=1000", Some(&op));
    let live: Vec<i64> = ids["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["sightings"].as_i64().unwrap_or(0) >= 1)
        .filter_map(|i| i["id"].as_i64())
        .collect();
    assert!(live.len() >= 3, "{ids}");
    let (c, r) = d.post_json(
        "/api/v1/labels",
        Some(&op),
        &json!({"kind": "different", "identity": live[0], "other": live[1]}),
    );
    assert_eq!(c, 201, "{r}");
    assert_eq!(r["never_merged_automatically"], true, "{r}");
    // an operator merge is a label as well
    let (c, r) = d.post_json(
        &format!("/api/v1/identities/{}/merge", live[1]),
        Some(&op),
        &json!({"absorb": live[2], "reason": "same jacket"}),
    );
    assert_eq!(c, 200, "{r}");

    let (c, r) = d.get("/api/v1/labels", Some(&admin));
    assert_eq!(c, 200, "{r}");
    assert_eq!(r["total"], 4, "{r}");
    assert_eq!(
        (r["same"].as_u64(), r["different"].as_u64()),
        (Some(2), Some(2))
    );
    let labels = r["labels"].as_array().unwrap();
    // newest first
    let kinds: Vec<&str> = labels.iter().filter_map(|l| l["kind"].as_str()).collect();
    assert_eq!(kinds, ["merge", "different", "reject", "confirm"]);
    for l in labels {
        assert_eq!(l["user"], "operator", "{l}");
        assert!(l["created_ms"].as_i64().unwrap() > 1_600_000_000_000, "{l}");
    }
    assert_eq!(labels[0]["note"], "same jacket");
    assert_eq!(labels[2]["note"], "other coat");
    // a label given by mistake can be removed
    let id = labels[3]["id"].as_i64().unwrap();
    let (c, _) = d.delete(&format!("/api/v1/labels/{id}"), Some(&op));
    assert_eq!(c, 200);
    let (_, r) = d.get("/api/v1/labels", Some(&op));
    assert_eq!(r["total"], 3, "{r}");
    // the OpenAPI document names the new routes
    let (_, doc) = d.get("/api/v1/openapi.json", Some(&op));
    for p in ["/api/v1/labels", "/api/v1/labels/{id}", "/api/v1/review"] {
        assert!(doc["paths"][p].is_object(), "{p}");
    }
}
