//! `crosscam bench api`: the daemon's API under load. Two real-time cameras run; the cameras'
//! analysed frame rates are measured without WebSocket clients, then with N clients on the event
//! stream, each of which must receive every event the server published (compared with an
//! in-process subscriber); then `wrk` (Debian's package) loads a few endpoints for p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::server::Server;

#[derive(Debug, Clone, Serialize)]
pub struct WrkResult {
    pub endpoint: String,
    pub connections: u32,
    pub seconds: u32,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiBenchReport {
    pub cameras: usize,
    pub seconds: f64,
    pub clients: usize,
    /// Analysed frames per second per camera without and with the WebSocket clients.
    pub fps_without: Vec<(String, f64)>,
    pub fps_with: Vec<(String, f64)>,
    /// Largest relative change of a camera's rate (with vs without clients).
    pub worst_fps_change: f64,
    /// Events the server published while the clients listened.
    pub events: usize,
    /// Clients that received every one of them, in order.
    pub clients_complete: usize,
    /// `lost` notices received (clients that fell behind the bus).
    pub lost_notices: u64,
    pub connect_seconds: f64,
    pub http: Vec<WrkResult>,
}

fn rates(
    a: &[crate::ingest::CameraStatus],
    b: &[crate::ingest::CameraStatus],
    secs: f64,
) -> Vec<(String, f64)> {
    b.iter()
        .map(|s1| {
            let a0 = a
                .iter()
                .find(|s| s.id == s1.id)
                .map(|s| s.analysed)
                .unwrap_or(0);
            (s1.id.clone(), (s1.analysed - a0) as f64 / secs)
        })
        .collect()
}

/// Runs the benchmark; `cfg` gives the models.
pub fn api(cfg: &Config, seconds: f64, clients: usize, wrk_seconds: u32) -> Result<ApiBenchReport> {
    let mut c = super::camera::camera_config_for_api(cfg, 2)?;
    c.api.listen = "127.0.0.1:0".into();
    c.api.enabled = true;
    let _ = std::fs::remove_dir_all(&c.server.data_dir);
    let server = Arc::new(Server::start(&c, None)?);
    let api = crate::api::start(&c, server.clone())?;
    let auth = crate::api::AuthDb::open(&c.server.data_dir)?;
    auth.add_user("bench", crate::api::Role::Admin, "bench-password")?;
    let (_, token, _) = auth.issue("bench", "api", "bench", None)?;
    super::camera::warm_up(&server.ingest);

    // 1. without clients
    let s0 = server.ingest.status();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let fps_without = rates(&s0, &server.ingest.status(), t0.elapsed().as_secs_f64());
    eprintln!(
        "bench api: {} cameras without clients: {fps_without:?}",
        fps_without.len()
    );

    // 2. with the clients
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let url = format!("ws://{}/api/v1/events", api.addr);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tc = Instant::now();
    let handles = rt.block_on(async {
        let mut hs = Vec::with_capacity(clients);
        for _ in 0..clients {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url.as_str().into_client_request()?;
            req.headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse()?);
            let (ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .context("a WebSocket client could not connect")?;
            let mut stop = stop_rx.clone();
            hs.push(tokio::spawn(async move {
                use futures_util::StreamExt;
                let (_, mut rx) = ws.split();
                let mut got: Vec<String> = Vec::new();
                loop {
                    tokio::select! {
                        m = rx.next() => match m {
                            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => got.push(t.to_string()),
                            Some(Ok(_)) => {}
                            _ => break,
                        },
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                got
            }));
        }
        anyhow::Ok(hs)
    })?;
    let connect_seconds = tc.elapsed().as_secs_f64();
    let mut reference = server.events.subscribe();
    let s0 = server.ingest.status();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let fps_with = rates(&s0, &server.ingest.status(), t0.elapsed().as_secs_f64());
    let mut published = Vec::new();
    while let Ok(e) = reference.try_recv() {
        published.push(serde_json::to_string(&e)?);
    }
    // let the clients catch up, then stop them
    std::thread::sleep(Duration::from_secs(2));
    let _ = stop_tx.send(true);
    let received: Vec<Vec<String>> = rt.block_on(async {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap_or_default());
        }
        out
    });
    let mut complete = 0;
    let mut lost = 0u64;
    for got in &received {
        lost += got
            .iter()
            .filter(|m| m.contains("\"type\":\"lost\""))
            .count() as u64;
        let ok = match published.first() {
            None => true,
            Some(first) => got.iter().position(|m| m == first).is_some_and(|k| {
                got.len() >= k + published.len() && got[k..k + published.len()] == published[..]
            }),
        };
        complete += usize::from(ok);
    }
    let worst_fps_change = fps_without
        .iter()
        .filter_map(|(id, a)| {
            let b = fps_with.iter().find(|(j, _)| j == id)?.1;
            Some((b - a).abs() / a.max(1e-9))
        })
        .fold(0.0, f64::max);
    eprintln!(
        "bench api: {clients} clients, {} events, {complete} complete, {lost} lost notices; with clients: {fps_with:?}",
        published.len()
    );
    drop(rt);

    // 3. HTTP load with wrk
    let mut http = Vec::new();
    if wrk_seconds > 0 {
        for ep in [
            "/api/v1/health",
            "/api/v1/cameras",
            "/api/v1/identities?limit=50",
            "/api/v1/cameras/cam0/live",
        ] {
            http.push(wrk(
                &format!("http://{}{ep}", api.addr),
                ep,
                &token,
                wrk_seconds,
                16,
            )?);
        }
    }
    api.stop();
    match Arc::try_unwrap(server) {
        Ok(s) => s.shutdown(),
        Err(_) => anyhow::bail!("the server is still shared after the API stopped"),
    }
    let _ = std::fs::remove_dir_all(&c.server.data_dir);
    Ok(ApiBenchReport {
        cameras: fps_without.len(),
        seconds,
        clients,
        fps_without,
        fps_with,
        worst_fps_change,
        events: published.len(),
        clients_complete: complete,
        lost_notices: lost,
        connect_seconds,
        http,
    })
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit): (String, String) = v.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let n: f64 = num.parse().ok()?;
    Some(match unit.as_str() {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        _ => return None,
    })
}

/// Runs wrk on one URL and reads its latency distribution.
fn wrk(
    url: &str,
    endpoint: &str,
    token: &str,
    seconds: u32,
    connections: u32,
) -> Result<WrkResult> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .context("cannot run wrk (Debian package `wrk`: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
    };
    let p50 = field("50%")
        .and_then(|v| ms(&v))
        .context("wrk output without a 50% line")?;
    let p99 = field("99%")
        .and_then(|v| ms(&v))
        .context("wrk output without a 99% line")?;
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let non_2xx = text
        .lines()
        .find(|l| l.trim().starts_with("Non-2xx or 3xx responses:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(WrkResult {
        endpoint: endpoint.to_string(),
        connections,
        seconds,
        requests_per_s: rps,
        p50_ms: p50,
        p99_ms: p99,
        non_2xx,
    })
}

pub fn render_api(r: &ApiBenchReport) -> String {
    let mut s = format!(
        "{} cameras, {:.0} s per phase\nanalysed fps without clients: {}\nanalysed fps with {} WebSocket clients: {}\nworst change: {:.1} %\nevents published: {}; clients that got all of them in order: {}/{}; lost notices: {}; connecting took {:.2} s\n",
        r.cameras,
        r.seconds,
        r.fps_without
            .iter()
            .map(|(c, f)| format!("{c} {f:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.clients,
        r.fps_with
            .iter()
            .map(|(c, f)| format!("{c} {f:.2}"))
            .collect::<Vec<_>>()
            .join(", "),
        100.0 * r.worst_fps_change,
        r.events,
        r.clients_complete,
        r.clients,
        r.lost_notices,
        r.connect_seconds
    );
    for w in &r.http {
        s.push_str(&format!(
            "{:<32} {:>8.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  non-2xx {}  ({} connections, {} s)\n",
            w.endpoint, w.requests_per_s, w.p50_ms, w.p99_ms, w.non_2xx, w.connections, w.seconds
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_units() {
        assert_eq!(super::ms("812.00us"), Some(0.812));
        assert_eq!(super::ms("3.41ms"), Some(3.41));
        assert_eq!(super::ms("1.20s"), Some(1200.0));
        assert_eq!(super::ms("abc"), None);
    }
}
