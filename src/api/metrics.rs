//! `GET /metrics`: Prometheus text format. Per camera: frames in / analysed / dropped,
//! reconnects, state, queue depth; per stage: latency histograms, batch sizes, queue depths;
//! the gallery's size; job progress; the API's own requests and WebSocket clients.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::server::histogram::Histogram;

#[derive(Default)]
pub struct HttpMetrics {
    /// (method, route, status) → count
    requests: Mutex<HashMap<(String, String, u16), u64>>,
    latency: Mutex<HashMap<String, Arc<Histogram>>>,
    ws_clients: AtomicI64,
}

impl HttpMetrics {
    pub fn ws_open(&self, d: i64) {
        self.ws_clients.fetch_add(d, Ordering::Relaxed);
    }
}

/// Middleware: counts every request by route and status and times it.
pub async fn track(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    *s.http
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((method, route.clone(), status))
        .or_default() += 1;
    let h = s
        .http
        .latency
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(route)
        .or_insert_with(|| Arc::new(Histogram::latency()))
        .clone();
    h.observe_duration(t0.elapsed());
    resp
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(State(s): State<ApiState>) -> Response {
    let mut o = String::with_capacity(16 * 1024);
    let cams = s.server.ingest.status();
    let counter = |o: &mut String,
                   name: &str,
                   help: &str,
                   f: &dyn Fn(&crate::ingest::CameraStatus) -> u64| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for c in &cams {
            let _ = writeln!(o, "{name}{{camera=\"{}\"}} {}", esc(&c.id), f(c));
        }
    };
    counter(
        &mut o,
        "crosscam_camera_frames_in_total",
        "Frames received from the camera.",
        &|c| c.frames_in,
    );
    counter(
        &mut o,
        "crosscam_camera_frames_analysed_total",
        "Frames analysed (detector and tracker).",
        &|c| c.analysed,
    );
    counter(
        &mut o,
        "crosscam_camera_frames_dropped_total",
        "Frames dropped (sampling or a full queue).",
        &|c| c.dropped,
    );
    counter(
        &mut o,
        "crosscam_camera_reconnects_total",
        "Reconnections to the camera.",
        &|c| c.reconnects,
    );
    let _ = writeln!(
        o,
        "# HELP crosscam_camera_state The camera's state (1 for the current one).\n# TYPE crosscam_camera_state gauge"
    );
    for c in &cams {
        let _ = writeln!(
            o,
            "crosscam_camera_state{{camera=\"{}\",state=\"{}\"}} 1",
            esc(&c.id),
            c.state
        );
    }
    let _ = writeln!(
        o,
        "# HELP crosscam_camera_last_frame_age_seconds Time since the camera's last frame.\n# TYPE crosscam_camera_last_frame_age_seconds gauge"
    );
    for c in &cams {
        if let Some(a) = c.last_frame_age_ms {
            let _ = writeln!(
                o,
                "crosscam_camera_last_frame_age_seconds{{camera=\"{}\"}} {}",
                esc(&c.id),
                a as f64 / 1e3
            );
        }
    }
    let q = s.server.queue_depths();
    let _ = writeln!(
        o,
        "# HELP crosscam_queue_depth Items waiting before a stage.\n# TYPE crosscam_queue_depth gauge"
    );
    for (cam, d) in &q.frames {
        let _ = writeln!(
            o,
            "crosscam_queue_depth{{queue=\"frames\",camera=\"{}\"}} {d}",
            esc(cam)
        );
    }
    let _ = writeln!(
        o,
        "crosscam_queue_depth{{queue=\"tracker_events\"}} {}",
        q.tracker_events
    );
    let _ = writeln!(
        o,
        "crosscam_queue_depth{{queue=\"observations\"}} {}",
        q.observations
    );

    let m = s.server.metrics();
    let _ = writeln!(
        o,
        "# HELP crosscam_stage_seconds Time per unit of work of each stage (detect: a batch of frames; embed: a batch of crops; link: one observation; frame_to_identity: a live tracklet's last frame to its identity decision).\n# TYPE crosscam_stage_seconds histogram"
    );
    m.analysis
        .detect_hist
        .write(&mut o, "crosscam_stage_seconds", "stage=\"detect\"");
    m.reid
        .embed_hist
        .write(&mut o, "crosscam_stage_seconds", "stage=\"embed\"");
    m.link
        .link_hist
        .write(&mut o, "crosscam_stage_seconds", "stage=\"link\"");
    m.link.latency_hist.write(
        &mut o,
        "crosscam_stage_seconds",
        "stage=\"frame_to_identity\"",
    );
    let _ = writeln!(
        o,
        "# HELP crosscam_batch_size Items per inference batch.\n# TYPE crosscam_batch_size histogram"
    );
    m.analysis
        .batch_hist
        .write(&mut o, "crosscam_batch_size", "stage=\"detect\"");
    m.reid
        .batch_hist
        .write(&mut o, "crosscam_batch_size", "stage=\"embed\"");
    let l = m.link.snapshot();
    let a = m.analysis.snapshot();
    let r = m.reid.snapshot();
    for (name, kind, help, v) in [
        (
            "crosscam_gallery_identities",
            "gauge",
            "Live identities in the gallery.",
            l.gallery_identities as f64,
        ),
        (
            "crosscam_gallery_prototypes",
            "gauge",
            "Prototype vectors in the gallery.",
            l.gallery_prototypes as f64,
        ),
        (
            "crosscam_identities_created_total",
            "counter",
            "Identities created.",
            l.created as f64,
        ),
        (
            "crosscam_links_total",
            "counter",
            "Tracklets linked to an existing identity.",
            l.linked as f64,
        ),
        (
            "crosscam_links_uncertain_total",
            "counter",
            "Uncertain links (runner-up within the margin).",
            l.uncertain as f64,
        ),
        (
            "crosscam_merges_total",
            "counter",
            "Identities merged.",
            l.merged as f64,
        ),
        (
            "crosscam_link_errors_total",
            "counter",
            "Observations that could not be recorded.",
            l.errors as f64,
        ),
        (
            "crosscam_detections_total",
            "counter",
            "Person detections.",
            a.detections as f64,
        ),
        (
            "crosscam_detector_errors_total",
            "counter",
            "Detector batches that failed.",
            a.detector_errors as f64,
        ),
        (
            "crosscam_tracklets_started_total",
            "counter",
            "Tracklets started.",
            a.tracklets_started as f64,
        ),
        (
            "crosscam_tracklets_ended_total",
            "counter",
            "Tracklets ended.",
            a.tracklets_ended as f64,
        ),
        (
            "crosscam_crops_embedded_total",
            "counter",
            "Crops embedded.",
            r.crops as f64,
        ),
        (
            "crosscam_embed_errors_total",
            "counter",
            "Embedding batches that failed.",
            r.errors as f64,
        ),
        (
            "crosscam_websocket_clients",
            "gauge",
            "Open WebSocket event streams.",
            s.http.ws_clients.load(Ordering::Relaxed) as f64,
        ),
        (
            "crosscam_uptime_seconds",
            "gauge",
            "Seconds since the API started.",
            s.started.elapsed().as_secs_f64(),
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    let jobs = s.jobs.list();
    let _ = writeln!(
        o,
        "# HELP crosscam_job_progress Progress of running jobs (0–1 within the current phase).\n# TYPE crosscam_job_progress gauge"
    );
    for j in jobs.iter().filter(|j| j.state == "running") {
        let p = if j.total > 0 {
            j.done as f64 / j.total as f64
        } else {
            0.0
        };
        let _ = writeln!(
            o,
            "crosscam_job_progress{{job=\"{}\",phase=\"{}\"}} {p}",
            esc(&j.id),
            esc(&j.phase)
        );
    }
    let _ = writeln!(
        o,
        "# HELP crosscam_http_requests_total API requests by route and status.\n# TYPE crosscam_http_requests_total counter"
    );
    {
        let req = s.http.requests.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = req.iter().collect();
        rows.sort();
        for ((method, route, status), n) in rows {
            let _ = writeln!(
                o,
                "crosscam_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP crosscam_http_request_seconds API request latency by route.\n# TYPE crosscam_http_request_seconds histogram"
    );
    {
        let lat = s.http.latency.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<_> = lat.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for (route, h) in rows {
            h.write(
                &mut o,
                "crosscam_http_request_seconds",
                &format!("route=\"{}\"", esc(route)),
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        o,
    )
        .into_response()
}
