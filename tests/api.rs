//! The HTTP API against a real `crosscam serve` (one camera playing the bundled clip): sign-in,
//! every route for every role (allowed and denied), the OpenAPI document against the routes,
//! malformed and oversized requests, cameras changed at run time, identities with crops and
//! timelines, merge / split, search by image, the WebSocket event stream, metrics, tokens, and
//! the login rate limit.

mod common;

use std::time::Duration;

use common::daemon::{Daemon, PASSWORD, clip_camera};
use serde_json::{Value, json};

/// Fills path parameters with values that exist nowhere (the route must still be found).
fn concrete(path: &str) -> String {
    path.replace("{id}", "999999")
}

/// A body the route will refuse after the role check (an empty object, or for jobs an unknown
/// scenario: an allowed caller must not start a real job here).
fn body_for(path: &str, op: &Value) -> Option<Vec<u8>> {
    op.get("requestBody").map(|_| {
        if path == "/api/v1/jobs" {
            br#"{"scenario": "none"}"#.to_vec()
        } else {
            b"{}".to_vec()
        }
    })
}

#[test]
fn api_end_to_end() {
    let d = Daemon::start(
        &clip_camera("gate", 0.0),
        "max_body_kib = 16\nmax_image_kib = 256\n",
    );

    // ---- public and protected ---------------------------------------------------------------
    let (st, health) = d.get("/api/v1/health", None);
    assert_eq!(st, 200);
    assert_eq!(health["status"], "ok");
    let (st, e) = d.get("/api/v1/openapi.json", None);
    assert_eq!(st, 401, "the document needs sign-in: {e}");
    assert_eq!(e["error"], "unauthorized");
    assert!(e["detail"].as_str().unwrap().contains("login"), "{e}");

    let admin = d.login("admin");
    let operator = d.login("operator");
    let integrator = d.login("integrator");
    let (st, me) = d.get("/api/v1/me", Some(&operator));
    assert_eq!((st, me["role"].as_str()), (200, Some("operator")));
    // the session cookie works for the browser, but not in a request another site makes
    let cookie = format!("crosscam_session={operator}");
    let with_origin = |origin: &str| {
        d.agent
            .get(&d.url("/api/v1/me"))
            .header("Cookie", &cookie)
            .header("Origin", origin)
            .call()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        with_origin("http://evil.example"),
        403,
        "cross-site request with the cookie"
    );
    assert_eq!(
        with_origin(&d.base),
        200,
        "same-site request with the cookie"
    );

    // ---- the OpenAPI document matches the routes ---------------------------------------------
    let (st, doc) = d.get("/api/v1/openapi.json", Some(&admin));
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/cameras",
        "/api/v1/cameras/{id}",
        "/api/v1/cameras/{id}/snapshot.jpg",
        "/api/v1/identities",
        "/api/v1/identities/{id}",
        "/api/v1/identities/{id}/timeline",
        "/api/v1/identities/{id}/merge",
        "/api/v1/identities/{id}/split",
        "/api/v1/search",
        "/api/v1/events",
        "/api/v1/models",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/models/{id}/promote",
        "/api/v1/models/rollback",
        "/api/v1/users",
        "/api/v1/tokens",
        "/metrics",
        "/api/v1/login",
        "/api/v1/health",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    let roles = [
        ("operator", &operator),
        ("integrator", &integrator),
        ("admin", &admin),
    ];
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url = concrete(path);
            let m = method.to_uppercase();
            let call = |token: Option<&str>| -> (u16, Value) {
                match m.as_str() {
                    "GET" => d.get(&url, token),
                    "DELETE" => d.delete(&url, token),
                    _ => d.send(
                        &m,
                        &url,
                        token,
                        "application/json",
                        body_for(path, op).unwrap_or_default(),
                    ),
                }
            };
            if path == "/api/v1/logout" || path == "/api/v1/login" {
                continue; // would end the session / counts as a failed login; checked below
            }
            let public = op["security"].as_array().unwrap().is_empty();
            if !public {
                let (st, e) = call(None);
                assert_eq!(st, 401, "{m} {path} without a token: {e}");
                assert_eq!(e["error"], "unauthorized", "{m} {path}");
            }
            let allowed: Vec<&str> = op["x-roles"]
                .as_array()
                .map(|a| a.iter().map(|r| r.as_str().unwrap()).collect())
                .unwrap_or_default();
            for (role, token) in &roles {
                if path == "/api/v1/events" {
                    continue; // a WebSocket: checked with a WebSocket client below
                }
                let (st, e) = call(Some(token));
                // the route exists with this method whatever the answer
                assert_ne!(
                    e["error"], "no_route",
                    "{m} {path} is documented but not routed"
                );
                assert_ne!(st, 405, "{m} {path} is documented but not routed for {m}");
                assert_ne!(st, 401, "{m} {path} as {role}: {e}");
                if public || allowed.contains(role) {
                    assert_ne!(st, 403, "{m} {path} refused to {role}: {e}");
                } else {
                    assert_eq!(st, 403, "{m} {path} allowed to {role}: {e}");
                    assert_eq!(e["error"], "forbidden");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 90, "role checks: {checked}");
    // an undocumented route does not exist, and says so in JSON
    let (st, e) = d.get("/api/v1/nope", Some(&admin));
    assert_eq!((st, e["error"].as_str()), (404, Some("no_route")));
    let (st, e) = d.delete("/api/v1/identities", Some(&admin));
    assert_eq!((st, e["error"].as_str()), (405, Some("method_not_allowed")));

    // ---- malformed and oversized requests -----------------------------------------------------
    let post =
        |path: &str, ct: &str, body: &[u8]| d.send("POST", path, Some(&admin), ct, body.to_vec());
    let (st, e) = post("/api/v1/users", "application/json", b"{not json");
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (st, e) = post(
        "/api/v1/users",
        "application/json",
        br#"{"name": 5, "role": "admin", "password": "x"}"#,
    );
    assert_eq!((st, e["error"].as_str()), (422, Some("invalid")), "{e}");
    let (st, e) = post(
        "/api/v1/users",
        "application/json",
        br#"{"name": "x", "role": "king", "password": "longenough"}"#,
    );
    assert_eq!(st, 422, "{e}");
    let (st, e) = post(
        "/api/v1/users",
        "application/json",
        br#"{"name": "x", "role": "admin", "password": "longenough", "extra": 1}"#,
    );
    assert_eq!(st, 422, "unknown fields are refused: {e}");
    let (st, e) = post("/api/v1/users", "text/plain", br#"{"name": "x"}"#);
    assert_eq!(
        (st, e["error"].as_str()),
        (415, Some("unsupported_media_type")),
        "{e}"
    );
    let big = format!("{{\"label\": \"{}\"}}", "x".repeat(20 * 1024));
    let (st, e) = post("/api/v1/tokens", "application/json", big.as_bytes());
    assert_eq!((st, e["error"].as_str()), (413, Some("too_large")), "{e}");
    let (st, e) = d.get("/api/v1/identities/abc", Some(&admin));
    assert_eq!((st, e["error"].as_str()), (400, Some("bad_request")), "{e}");
    let (st, e) = d.get("/api/v1/identities?limit=0", Some(&admin));
    assert_eq!(st, 400, "{e}");
    let (st, e) = d.get("/api/v1/identities?since_ms=yesterday", Some(&admin));
    assert_eq!(st, 400, "{e}");
    let (st, e) = post("/api/v1/search", "image/jpeg", b"definitely not a jpeg");
    assert_eq!((st, e["error"].as_str()), (422, Some("invalid")), "{e}");
    let (st, e) = post("/api/v1/search", "image/jpeg", &vec![0u8; 300 * 1024]);
    assert_eq!((st, e["error"].as_str()), (413, Some("too_large")), "{e}");
    let (st, e) = post("/api/v1/search", "application/json", b"{}");
    assert_eq!(st, 415, "{e}");
    let (st, e) = post("/api/v1/jobs", "application/json", br#"{"scenario": "S9"}"#);
    assert_eq!(st, 422, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("scenario"), "{e}");
    let (st, e) = post(
        "/api/v1/identities/1/merge",
        "application/json",
        br#"{"absorb": 1}"#,
    );
    assert!(st == 409 || st == 404, "merge into itself: {st} {e}");

    // ---- cameras at run time (integrator), credentials never shown ------------------------------
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ws = rt.block_on(ws_connect(&d, &integrator, "?camera=lobby"));
    let cam = json!({"id": "lobby", "name": "Lobby", "url": "test:ball"});
    let (st, v) = d.post_json("/api/v1/cameras", Some(&integrator), &cam);
    assert_eq!(st, 201, "{v}");
    let (st, _) = d.post_json("/api/v1/cameras", Some(&integrator), &cam);
    assert_eq!(st, 409, "adding the same camera twice");
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&operator),
        &json!({"id": "x", "url": "test:ball"}),
    );
    assert_eq!(st, 403, "{v}");
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "bad id", "url": "test:ball"}),
    );
    assert_eq!(st, 422, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("`id`"), "{v}");
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "y", "url": "ftp://nowhere"}),
    );
    assert_eq!(st, 422, "{v}");
    d.wait_for(30, "the added camera to go live", || {
        let (_, v) = d.get("/api/v1/cameras/lobby", Some(&operator));
        (v["status"]["state"] == "live").then_some(())
    });
    let secret =
        json!({"url": "rtsp://viewer:hunter2secret@127.0.0.1:1/cam", "name": "Lobby RTSP"});
    let (st, v) = d.put_json("/api/v1/cameras/lobby", Some(&integrator), &secret);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["url"], "rtsp://viewer:***@127.0.0.1:1/cam");
    let (st, v) = d.put_json(
        "/api/v1/cameras/lobby",
        Some(&integrator),
        &json!({"id": "other", "url": "test:ball"}),
    );
    assert_eq!(st, 422, "an id that differs from the path: {v}");
    let (_, all) = d.get("/api/v1/cameras", Some(&admin));
    assert!(
        !all.to_string().contains("hunter2secret"),
        "a password in the camera list"
    );
    let (st, _) = d.delete("/api/v1/cameras/lobby", Some(&integrator));
    assert_eq!(st, 204);
    let (st, _) = d.get("/api/v1/cameras/lobby", Some(&integrator));
    assert_eq!(st, 404);
    let events = rt.block_on(ws_collect(ws, Duration::from_secs(3)));
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "camera_state" && e["camera"] == "lobby" && e["state"] == "live"),
        "the WebSocket saw the camera go live: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.get("camera").is_none_or(|c| c == "lobby")),
        "events of other cameras were filtered out: {events:?}"
    );
    // the camera of the config kept running through all this
    let (_, gate) = d.get("/api/v1/cameras/gate", Some(&operator));
    assert_eq!(gate["status"]["state"], "live", "{gate}");
    let log = d.log_tail(100_000);
    assert!(
        !log.contains("hunter2secret"),
        "a camera password in the logs"
    );

    // ---- identities, crops, timelines, snapshots ------------------------------------------------
    let ids = d.wait_for(120, "two identities with crops", || {
        let (_, v) = d.get("/api/v1/identities?camera=gate", Some(&operator));
        let ids: Vec<i64> = v["identities"]
            .as_array()?
            .iter()
            .filter(|i| i["sightings"].as_i64().unwrap_or(0) > 0)
            .map(|i| i["id"].as_i64().unwrap())
            .collect();
        let with_crops: Vec<i64> = ids
            .into_iter()
            .filter(|id| {
                let (_, v) = d.get(&format!("/api/v1/identities/{id}"), Some(&operator));
                v["cameras"][0]["crops"]
                    .as_array()
                    .is_some_and(|c| !c.is_empty())
            })
            .collect();
        (with_crops.len() >= 2).then_some(with_crops)
    });
    let (a, b) = (ids[0], ids[1]);
    let (_, page) = d.get("/api/v1/identities?limit=1&offset=1", Some(&operator));
    assert_eq!(page["identities"].as_array().unwrap().len(), 1, "{page}");
    assert!(
        page["total"].as_u64().unwrap() >= 2,
        "the total is before paging: {page}"
    );
    let (st, detail) = d.get(&format!("/api/v1/identities/{a}"), Some(&operator));
    assert_eq!(st, 200);
    assert_eq!(detail["identity"]["id"], a);
    assert_eq!(detail["cameras"][0]["camera"], "gate");
    let crop_url = detail["cameras"][0]["crops"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, ct, jpeg) = d.get_bytes(&crop_url, Some(&operator));
    assert_eq!((st, ct.as_str()), (200, "image/jpeg"));
    let crop = image::load_from_memory(&jpeg)
        .expect("a JPEG crop")
        .to_rgb8();
    assert!(
        crop.height() > crop.width(),
        "a person crop is taller than wide"
    );
    let (st, tl) = d.get(&format!("/api/v1/identities/{a}/timeline"), Some(&operator));
    assert_eq!(st, 200);
    assert!(
        tl["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["camera"] == "gate")
    );
    let (st, ct, svg) = d.get_bytes(
        &format!("/api/v1/identities/{a}/timeline.svg"),
        Some(&operator),
    );
    assert_eq!((st, ct.as_str()), (200, "image/svg+xml"));
    assert!(
        String::from_utf8_lossy(&svg).contains("<rect"),
        "bars in the timeline"
    );
    let (st, ct, snap) = d.get_bytes("/api/v1/cameras/gate/snapshot.jpg", Some(&operator));
    assert_eq!((st, ct.as_str()), (200, "image/jpeg"));
    let snap = image::load_from_memory(&snap).unwrap();
    assert_eq!(snap.width(), 640);
    let (st, live) = d.get("/api/v1/cameras/gate/live", Some(&operator));
    assert_eq!(st, 200);
    assert_eq!(live["width"], 640);
    let (st, _) = d.get("/api/v1/identities/999999", Some(&operator));
    assert_eq!(st, 404);
    let (st, list) = d.get(
        &format!("/api/v1/identities?since_ms={}", i64::MAX / 2),
        Some(&operator),
    );
    assert_eq!(
        (st, list["total"].as_u64()),
        (200, Some(0)),
        "nothing seen in the far future"
    );

    // ---- search by image: a crop finds its own identity ----------------------------------------
    let (st, found) = d.send(
        "POST",
        "/api/v1/search?k=5",
        Some(&operator),
        "image/jpeg",
        jpeg.clone(),
    );
    assert_eq!(st, 200, "{found}");
    let top: Vec<i64> = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["identity"].as_i64().unwrap())
        .collect();
    assert!(
        top.iter().take(3).any(|i| *i == a),
        "identity {a}'s own crop finds it in the top 3: {found}"
    );

    // ---- merge and split (operator) -------------------------------------------------------------
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{a}/merge"),
        Some(&integrator),
        &json!({"absorb": b}),
    );
    assert_eq!(st, 403, "integrators do not merge: {v}");
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{a}/merge"),
        Some(&operator),
        &json!({"absorb": b, "reason": "same coat"}),
    );
    assert_eq!(st, 200, "{v}");
    let (_, merged) = d.get(&format!("/api/v1/identities/{b}"), Some(&operator));
    assert_eq!(merged["identity"]["merged_into"], a, "{merged}");
    let (_, audit) = d.get("/api/v1/audit", Some(&operator));
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "merge"
                && r["actor"].as_str().unwrap().contains("operator")
                && r["reason"] == "same coat"),
        "{audit}"
    );
    let (_, after) = d.get(&format!("/api/v1/identities/{a}"), Some(&operator));
    let tracklet = after["sightings"].as_array().unwrap().last().unwrap()["tracklet"]
        .as_i64()
        .unwrap();
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{a}/split"),
        Some(&operator),
        &json!({"tracklets": [tracklet]}),
    );
    assert_eq!(st, 200, "{v}");
    let to = v["to"].as_i64().unwrap();
    let (_, new) = d.get(&format!("/api/v1/identities/{to}"), Some(&operator));
    assert!(
        new["sightings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["tracklet"] == tracklet),
        "{new}"
    );
    let (st, v) = d.post_json(
        &format!("/api/v1/identities/{a}/split"),
        Some(&operator),
        &json!({"tracklets": [999999]}),
    );
    assert!(
        st == 404 || st == 409,
        "splitting an unknown tracklet: {st} {v}"
    );

    // ---- metrics -------------------------------------------------------------------------------
    let (st, ct, text) = d.get_bytes("/metrics", Some(&operator));
    assert_eq!(st, 200);
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = String::from_utf8(text).unwrap();
    for needle in [
        "crosscam_camera_frames_in_total{camera=\"gate\"}",
        "crosscam_camera_frames_dropped_total{camera=\"gate\"}",
        "crosscam_camera_state{camera=\"gate\",state=\"live\"} 1",
        "crosscam_stage_seconds_bucket{stage=\"detect\",le=\"+Inf\"}",
        "crosscam_stage_seconds_count{stage=\"frame_to_identity\"}",
        "crosscam_batch_size_bucket{stage=\"embed\"",
        "crosscam_queue_depth{queue=\"observations\"}",
        "crosscam_gallery_identities ",
        "crosscam_http_requests_total{method=\"POST\",route=\"/api/v1/identities/{id}/merge\",status=\"200\"} 1",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}");
    }
    let frames: f64 = text
        .lines()
        .find(|l| l.starts_with("crosscam_camera_frames_in_total{camera=\"gate\"}"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(frames > 10.0, "frames counted: {frames}");

    // ---- users and API tokens ------------------------------------------------------------------
    let (st, v) = d.post_json(
        "/api/v1/tokens",
        Some(&admin),
        &json!({"label": "prometheus", "user": "integrator"}),
    );
    assert_eq!(st, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    let id = v["id"].as_i64().unwrap();
    let (st, me) = d.get("/api/v1/me", Some(&token));
    assert_eq!((st, me["user"].as_str()), (200, Some("integrator")));
    let (_, list) = d.get("/api/v1/tokens", Some(&admin));
    assert!(
        !list.to_string().contains(&token),
        "token values are never listed"
    );
    let (st, _) = d.delete(&format!("/api/v1/tokens/{id}"), Some(&admin));
    assert_eq!(st, 204);
    let (st, _) = d.get("/api/v1/me", Some(&token));
    assert_eq!(st, 401, "a revoked token");
    let (st, v) = d.delete("/api/v1/users/admin", Some(&admin));
    assert_eq!(st, 409, "the last admin stays: {v}");
    let (st, _) = d.post("/api/v1/logout", &operator);
    assert_eq!(st, 204);
    let (st, _) = d.get("/api/v1/me", Some(&operator));
    assert_eq!(st, 401, "a session after logout");

    // ---- login rate limit ----------------------------------------------------------------------
    for _ in 0..5 {
        let (st, _) = d.post_json(
            "/api/v1/login",
            None,
            &json!({"user": "admin", "password": "wrong"}),
        );
        assert_eq!(st, 401);
    }
    let (st, e) = d.post_json(
        "/api/v1/login",
        None,
        &json!({"user": "admin", "password": PASSWORD}),
    );
    assert_eq!(
        (st, e["error"].as_str()),
        (429, Some("rate_limited")),
        "{e}"
    );

    let mut d = d;
    assert!(
        d.stop(),
        "the daemon stops cleanly on SIGTERM:\n{}",
        d.log_tail(30)
    );
}

trait PostEmpty {
    fn post(&self, path: &str, token: &str) -> (u16, Value);
}

impl PostEmpty for Daemon {
    fn post(&self, path: &str, token: &str) -> (u16, Value) {
        self.send("POST", path, Some(token), "", Vec::new())
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(d: &Daemon, token: &str, query: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/events{query}",
        d.base.replace("http://", "ws://")
    );
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("WebSocket connects")
        .0
}

/// Every event the socket receives until it is quiet for `quiet`.
async fn ws_collect(mut ws: Ws, quiet: Duration) -> Vec<Value> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Ok(t) = m.to_text()
            && let Ok(v) = serde_json::from_str::<Value>(t)
        {
            out.push(v);
        }
    }
    out
}

#[test]
fn https_with_a_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (make setup installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let config = dir.path().join("site.toml");
    std::fs::write(
        &config,
        common::daemon::config_text(
            dir.path(),
            "",
            &format!(
                "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        ),
    )
    .unwrap();
    common::daemon::add_user(&config, "admin", "admin");
    let mut d = Daemon::spawn(dir, config.clone());
    assert!(d.base.starts_with("https://"), "{}", d.base);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, body, err) = curl(&[&d.url("/api/v1/health")]);
    assert!(ok, "{err}");
    assert!(body.contains("\"status\":\"ok\""), "{body}");
    let (ok, body, err) = curl(&[
        "-i",
        "-H",
        "Content-Type: application/json",
        "-d",
        &format!("{{\"user\":\"admin\",\"password\":\"{PASSWORD}\"}}"),
        &d.url("/api/v1/login"),
    ]);
    assert!(ok, "{err}");
    assert!(
        body.contains("Secure"),
        "the session cookie is Secure over HTTPS: {body}"
    );
    // plain HTTP to the HTTPS port gets no API answer
    let (ok, body, _) = curl(&[&d.url("/api/v1/health").replace("https://", "http://")]);
    assert!(
        !ok || !body.contains("\"status\":\"ok\""),
        "plain HTTP answered: {body}"
    );
    assert!(d.stop());
}
