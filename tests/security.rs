//! Attacks on a real `crosscam serve` with an integrator's or operator's account, each of which
//! must fail with a clear error while the daemon keeps running: reading the daemon's environment
//! through a camera's credentials, a huge picture for search, out-of-range numbers, hostile ids
//! and names, locking the admin out with wrong passwords, flooding the expensive endpoints; and
//! the modes of the data directory and its databases.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::TestCamera;
use common::daemon::{Daemon, PASSWORD};
use serde_json::json;

/// The camera password kept in the credential store.
const CAM_PASSWORD: &str = "s3cret-camera-pw";

fn still_alive(d: &Daemon) {
    let (st, h) = d.get("/api/v1/health", None);
    assert_eq!((st, h["status"].as_str()), (200, Some("ok")), "{h}");
}

#[test]
fn an_integrator_cannot_read_the_environment_and_uses_registered_credentials() {
    let cam = TestCamera::start(Some(("viewer", CAM_PASSWORD)));
    // SAFETY: a variable private to this test, set before the daemon inherits the environment
    unsafe { std::env::set_var("CROSSCAM_CAM_SECURITY_TEST_PW", "config-pw") };
    let d = Daemon::start(
        "[[cameras]]\nid = \"cfg\"\nurl = \"test:ball\"\nusername = \"viewer\"\npassword_env = \"CROSSCAM_CAM_SECURITY_TEST_PW\"\n",
        "",
    );
    let admin = d.login("admin");
    let integrator = d.login("integrator");
    let operator = d.login("operator");

    // any environment variable, set or not: the same refusal, naming the registered-credential way
    let mut details = Vec::new();
    for var in [
        "HOME",
        "AWS_SECRET_ACCESS_KEY",
        "CROSSCAM_NOPE",
        "CROSSCAM_CAM_SECURITY_TEST_PW",
    ] {
        for key in ["password_env", "username_env"] {
            let (st, e) = d.post_json(
                "/api/v1/cameras",
                Some(&integrator),
                &json!({"id": "evil", "url": cam.url(), key: var}),
            );
            assert_eq!(st, 422, "{key} = {var}: {e}");
            let detail = e["detail"].as_str().unwrap().to_string();
            assert!(
                detail.contains("credential") && !detail.contains(var),
                "{detail}"
            );
            details.push(detail.replace(key, "KEY"));
        }
    }
    details.dedup();
    assert_eq!(
        details.len(),
        1,
        "one message for every variable: {details:?}"
    );

    // the environment variable names of config cameras are for admins only
    for (who, token) in [("integrator", &integrator), ("operator", &operator)] {
        let (_, v) = d.get("/api/v1/cameras/cfg", Some(token));
        assert!(v.get("password_env").is_none(), "{who} sees {v}");
        let (_, all) = d.get("/api/v1/cameras", Some(token));
        assert!(
            !all.to_string().contains("CROSSCAM_CAM_SECURITY_TEST_PW"),
            "{who} sees {all}"
        );
    }
    let (_, v) = d.get("/api/v1/cameras/cfg", Some(&admin));
    assert_eq!(v["password_env"], "CROSSCAM_CAM_SECURITY_TEST_PW", "{v}");

    // credentials: admins register them; nobody reads them back
    let body = json!({"username": "viewer", "password": CAM_PASSWORD});
    for token in [&integrator, &operator] {
        let (st, _) = d.put_json("/api/v1/credentials/lobby", Some(token), &body);
        assert_eq!(st, 403);
        let (st, _) = d.get("/api/v1/credentials", Some(token));
        assert_eq!(st, 403);
    }
    let (st, v) = d.put_json("/api/v1/credentials/lobby", Some(&admin), &body);
    assert_eq!(st, 201, "{v}");
    let (st, v) = d.put_json("/api/v1/credentials/lobby", Some(&admin), &body);
    assert_eq!(st, 200, "replaced: {v}");
    let (st, list) = d.get("/api/v1/credentials", Some(&admin));
    assert_eq!(st, 200);
    assert_eq!(list["credentials"][0]["name"], "lobby", "{list}");
    let text = list.to_string();
    assert!(
        !text.contains(CAM_PASSWORD) && !text.contains("viewer"),
        "{text}"
    );

    // an API camera names a registered credential, and the camera server gets it
    let (st, e) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "lobby", "url": cam.url(), "transport": "tcp", "credential": "nope"}),
    );
    assert_eq!(st, 422, "{e}");
    assert!(
        e["detail"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/credentials/nope"),
        "{e}"
    );
    let (st, v) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "lobby", "url": cam.url(), "transport": "tcp", "credential": "lobby"}),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["credential"], "lobby");
    d.wait_for(
        30,
        "the camera with the registered credential to go live",
        || {
            let (_, v) = d.get("/api/v1/cameras/lobby", Some(&operator));
            (v["status"]["state"] == "live").then_some(())
        },
    );
    let (st, e) = d.delete("/api/v1/credentials/lobby", Some(&admin));
    assert_eq!(st, 409, "in use: {e}");
    let (_, all) = d.get("/api/v1/cameras", Some(&admin));
    assert!(!all.to_string().contains(CAM_PASSWORD), "{all}");
    assert!(
        !d.log_tail(100_000).contains(CAM_PASSWORD),
        "the password in the log"
    );
    still_alive(&d);
}

/// A PNG saying `w`×`h` in its header, with one short IDAT chunk: a decoder can read the
/// dimensions, but decoding the pixels would fail — so a refusal naming the size must come from
/// the header, before decoding.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9c, 0, 0, 0]);
    chunk(b"IEND", &[]);
    out
}

/// One HTTP/1.1 login from the source address `from` (any 127.x.y.z is this machine): the status.
fn login_from(d: &Daemon, from: &str, user: &str, password: &str) -> u16 {
    use std::io::{Read, Write};
    let port: u16 = d.base.rsplit(':').next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stream = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{from}:0").parse().unwrap()).unwrap();
        s.connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap()
    });
    let mut stream = stream.into_std().unwrap();
    stream.set_nonblocking(false).unwrap();
    let body = json!({"user": user, "password": password}).to_string();
    write!(
        stream,
        "POST /api/v1/login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hostile_inputs_are_refused_and_the_daemon_keeps_running() {
    // file cameras through the API may play the bundled media (the range checks are the point)
    let media = format!(
        "[ingest]\nmedia_dirs = [\"{}\"]\n",
        crosscam::paths::media("vtest-h264.mp4")
            .parent()
            .unwrap()
            .display()
    );
    let d = Daemon::start(&media, "snapshots_per_minute = 6\n");
    let operator = d.login("operator");
    let integrator = d.login("integrator");

    // a 13000×13000 PNG: refused from its header, before any decoding
    let (st, e) = d.send(
        "POST",
        "/api/v1/search",
        Some(&operator),
        "image/png",
        png_header(13_000, 13_000),
    );
    assert_eq!(st, 413, "{e}");
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains("13000×13000") && detail.contains("max_image_pixels"),
        "{e}"
    );
    still_alive(&d);

    // numbers out of range, on enabled and disabled cameras
    let clip = format!(
        "file://{}",
        crosscam::paths::media("vtest-h264.mp4").display()
    );
    for (enabled, start_s) in [
        (true, json!(1e11)),
        (false, json!(1e300)),
        (true, json!(-1)),
    ] {
        let (st, e) = d.post_json(
            "/api/v1/cameras",
            Some(&integrator),
            &json!({"id": "f", "url": clip, "enabled": enabled, "start_s": start_s}),
        );
        assert_eq!(st, 422, "start_s {start_s}: {e}");
        assert!(e["detail"].as_str().unwrap().contains("`start_s`"), "{e}");
    }
    let (st, e) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": "f", "url": "test:ball", "fps": 100000}),
    );
    assert_eq!(st, 422, "{e}");

    // a 5000-character id: refused, and never written to the log in full
    let long = "x".repeat(5000);
    let (st, e) = d.post_json(
        "/api/v1/cameras",
        Some(&integrator),
        &json!({"id": long, "url": "test:ball"}),
    );
    assert_eq!(st, 422, "{e}");
    assert!(e["detail"].as_str().unwrap().len() < 400, "{e}");
    let (st, _) = d.put_json(
        &format!("/api/v1/cameras/{long}"),
        Some(&integrator),
        &json!({"url": "test:ball"}),
    );
    assert_eq!(st, 422);
    let (st, _) = d.post_json(
        "/api/v1/login",
        None,
        &json!({"user": long, "password": "whatever1"}),
    );
    assert_eq!(st, 422);
    // names with control characters, bidi overrides, or 63 KB
    for name in [
        "a\u{0}b".to_string(),
        "\u{1b}[2Jcleared".to_string(),
        "invoice\u{202E}gpj.exe".to_string(),
        "n".repeat(63 * 1024),
    ] {
        let (st, e) = d.post_json(
            "/api/v1/cameras",
            Some(&integrator),
            &json!({"id": "named", "url": "test:ball", "name": name}),
        );
        assert_eq!(st, 422, "{e}");
        assert!(e["detail"].as_str().unwrap().contains("`name`"), "{e}");
    }
    assert!(
        !d.log_tail(100_000).contains(&"x".repeat(100)),
        "a long id in the log"
    );

    // per-user rate limit of snapshots: 6 a minute allows one at once
    let (st, _) = d.get("/api/v1/cameras/none/snapshot.jpg", Some(&operator));
    assert_eq!(st, 404, "counted, then answered");
    let r = d
        .agent
        .get(&d.url("/api/v1/cameras/none/snapshot.jpg"))
        .header("Authorization", format!("Bearer {operator}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    let (_, body) = common::daemon::json_of(r);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("snapshots_per_minute"),
        "{body}"
    );
    // another user's allowance is their own
    let (st, _) = d.get("/api/v1/cameras/none/snapshot.jpg", Some(&integrator));
    assert_eq!(st, 404);
    let (_, _, metrics) = d.get_bytes("/metrics", Some(&operator));
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("crosscam_http_rate_limited_total{class=\"snapshot\"} 1"),
        "{metrics}"
    );

    // five wrong passwords from one address lock that address out for that user only
    for _ in 0..5 {
        assert_eq!(login_from(&d, "127.0.0.1", "admin", "wrong-password"), 401);
    }
    assert_eq!(login_from(&d, "127.0.0.1", "admin", PASSWORD), 429);
    assert_eq!(
        login_from(&d, "127.0.0.2", "admin", PASSWORD),
        200,
        "the admin from another address"
    );
    assert_eq!(
        login_from(&d, "127.0.0.1", "operator", PASSWORD),
        200,
        "another user behind the same address"
    );
    still_alive(&d);

    // the data directory and its databases are the daemon user's alone
    let data = d.dir.path().join("data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for f in ["auth.db", "crosscam.db", "credentials.db"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}
