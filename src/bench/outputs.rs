//! `crosscam bench outputs`: do outputs slow the pipeline? Real-time vtest cameras run with a
//! webhook output whose receiver (an HTTP server in this process) is alternately up and down
//! (its port closed: every attempt is refused and the output queues), and an MQTT output whose
//! broker is never there. The cameras' analysed frame rates are measured in each phase,
//! interleaved (up, down, up, down, …) so that a drift of the machine's load falls on both.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::config::Config;
use crate::outputs::{OutputKind, OutputSettings};
use crate::server::Server;

#[derive(Debug, Clone, Serialize)]
pub struct OutputsBenchReport {
    pub cameras: usize,
    pub rounds: usize,
    pub seconds_per_phase: f64,
    /// Mean analysed frames/s per camera over the phases with the receiver up, and down.
    pub fps_up: f64,
    pub fps_down: f64,
    /// `fps_down / fps_up - 1`.
    pub change: f64,
    /// Per phase: (receiver up?, mean fps per camera).
    pub phases: Vec<(bool, f64)>,
    /// Webhook deliveries the receiver took, and the most messages queued while it was down.
    pub delivered: u64,
    pub max_queued: u64,
}

/// An HTTP receiver that answers 200 while `up`, and closes its port while not.
fn receiver(port: u16, up: Arc<AtomicBool>, got: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut l: Option<TcpListener> = None;
        loop {
            if !up.load(Ordering::SeqCst) {
                l = None;
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if l.is_none() {
                match TcpListener::bind(("127.0.0.1", port)) {
                    Ok(x) => {
                        let _ = x.set_nonblocking(true);
                        l = Some(x);
                    }
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
            let Some(listener) = l.as_ref() else { continue };
            match listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(false);
                    if answer(s).is_some() {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

fn answer(mut s: std::net::TcpStream) -> Option<()> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    let mut len = 0usize;
    r.read_line(&mut line).ok()?;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()
}

fn output(kind: OutputKind, name: &str, url: String) -> Result<OutputSettings> {
    let o: OutputSettings = toml::from_str(&format!(
        "kind = \"{}\"\nname = \"{name}\"\nurl = \"{url}\"\ntimeout_s = 2",
        kind.as_str()
    ))?;
    o.check().map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    Ok(o)
}

pub fn outputs(
    cfg: &Config,
    cameras: usize,
    seconds: f64,
    rounds: usize,
) -> Result<OutputsBenchReport> {
    let mut c = super::camera::camera_config_for_api(cfg, cameras)?;
    c.api.enabled = false;
    let _ = std::fs::remove_dir_all(&c.server.data_dir);
    let free = || -> Result<u16> { Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let (hook_port, dead_port) = (free()?, free()?);
    let up = Arc::new(AtomicBool::new(true));
    let got = Arc::new(AtomicU64::new(0));
    receiver(hook_port, up.clone(), got.clone());
    c.outputs = vec![
        output(
            OutputKind::Webhook,
            "hook",
            format!("http://127.0.0.1:{hook_port}/"),
        )?,
        output(
            OutputKind::Mqtt,
            "dead-broker",
            format!("mqtt://127.0.0.1:{dead_port}"),
        )?,
    ];
    let server = Server::start(&c, None)?;
    super::camera::warm_up(&server.ingest);
    let mut phases = Vec::new();
    let mut max_queued = 0;
    let total = rounds * 2;
    let t_all = Instant::now();
    for i in 0..total {
        let is_up = i % 2 == 0;
        up.store(is_up, Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs(1)); // the change takes effect
        let s0 = server.ingest.status();
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < seconds {
            std::thread::sleep(Duration::from_millis(250));
            if let Some(h) = server.outputs_status().first() {
                max_queued = max_queued.max(h.queued);
            }
        }
        let s1 = server.ingest.status();
        let secs = t0.elapsed().as_secs_f64();
        let fps: Vec<f64> = s1
            .iter()
            .map(|b| {
                let a = s0.iter().find(|a| a.id == b.id).map_or(0, |a| a.analysed);
                (b.analysed - a) as f64 / secs
            })
            .collect();
        let mean = fps.iter().sum::<f64>() / fps.len().max(1) as f64;
        phases.push((is_up, mean));
        let done = i + 1;
        let eta = t_all.elapsed().as_secs_f64() / done as f64 * (total - done) as f64;
        eprintln!(
            "bench outputs: phase {done}/{total} receiver {}: {mean:.2} frames/s per camera (ETA {eta:.0} s)",
            if is_up { "up" } else { "down" }
        );
    }
    up.store(true, Ordering::SeqCst);
    let delivered = server.outputs_status().first().map_or(0, |h| h.delivered);
    server.shutdown();
    let mean_of = |want: bool| {
        let v: Vec<f64> = phases.iter().filter(|p| p.0 == want).map(|p| p.1).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let (fps_up, fps_down) = (mean_of(true), mean_of(false));
    Ok(OutputsBenchReport {
        cameras,
        rounds,
        seconds_per_phase: seconds,
        fps_up,
        fps_down,
        change: fps_down / fps_up - 1.0,
        phases,
        delivered,
        max_queued,
    })
}
