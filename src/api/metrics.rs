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
    /// Requests refused by a rate limit, by class (`login`, `snapshot`, `search`, `export`).
    limited_counts: Mutex<HashMap<&'static str, u64>>,
}

impl HttpMetrics {
    /// Counts a request refused by the rate limit of `class`.
    pub fn limited(&self, class: &'static str) {
        *self
            .limited_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(class)
            .or_default() += 1;
    }

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

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub async fn metrics(State(s): State<ApiState>) -> Response {
    let mut o = String::with_capacity(16 * 1024);
    let cams = s.server.ingest.status();
    type Count = fn(&crate::ingest::CameraStatus) -> u64;
    let per_camera: [(&str, &str, Count); 5] = [
        (
            "crosscam_camera_frames_in_total",
            "Frames received from the camera.",
            |c| c.frames_in,
        ),
        (
            "crosscam_camera_frames_analysed_total",
            "Frames analysed (tracker; detected, predicted or held).",
            |c| c.analysed,
        ),
        (
            "crosscam_camera_frames_detected_total",
            "Analysed frames the person detector ran on ([analysis] detect_every, motion_gate skip the others).",
            |c| c.detected,
        ),
        (
            "crosscam_camera_frames_dropped_total",
            "Frames dropped (sampling or a full queue).",
            |c| c.dropped,
        ),
        (
            "crosscam_camera_reconnects_total",
            "Reconnections to the camera.",
            |c| c.reconnects,
        ),
    ];
    for (name, help, count) in per_camera {
        family(&mut o, name, "counter", help);
        for c in &cams {
            let _ = writeln!(o, "{name}{{camera=\"{}\"}} {}", esc(&c.id), count(c));
        }
    }
    family(
        &mut o,
        "crosscam_camera_state",
        "gauge",
        "The camera's state (1 for the current one).",
    );
    for c in &cams {
        let _ = writeln!(
            o,
            "crosscam_camera_state{{camera=\"{}\",state=\"{}\"}} 1",
            esc(&c.id),
            c.state
        );
    }
    family(
        &mut o,
        "crosscam_camera_last_frame_age_seconds",
        "gauge",
        "Time since the camera's last frame.",
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
    family(
        &mut o,
        "crosscam_queue_depth",
        "gauge",
        "Items waiting before a stage.",
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

    crate::outputs::metrics(&mut o, &s.server.outputs_status());

    let m = s.server.metrics();
    // (family, help, [(histogram, stage label)])
    type Family<'a> = (&'a str, &'a str, Vec<(&'a Histogram, &'a str)>);
    let histograms: [Family; 2] = [
        (
            "crosscam_stage_seconds",
            "Time per unit of work of each stage (detect: a batch of frames; embed: a batch of crops; link: one observation; frame_to_identity: a live tracklet's last frame to its identity decision).",
            vec![
                (&m.analysis.detect_hist, "detect"),
                (&m.reid.embed_hist, "embed"),
                (&m.link.link_hist, "link"),
                (&m.link.latency_hist, "frame_to_identity"),
            ],
        ),
        (
            "crosscam_batch_size",
            "Items per inference batch.",
            vec![
                (&m.analysis.batch_hist, "detect"),
                (&m.reid.batch_hist, "embed"),
            ],
        ),
    ];
    for (name, help, stages) in histograms {
        family(&mut o, name, "histogram", help);
        for (h, stage) in stages {
            h.write(&mut o, name, &format!("stage=\"{stage}\""));
        }
    }
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
            "crosscam_link_redescribed_total",
            "counter",
            "Observations of another model than the serving one, described again from their crops.",
            l.redescribed as f64,
        ),
        (
            "crosscam_crops_written_total",
            "counter",
            "Crop pictures stored by the crop writer.",
            l.crops_written as f64,
        ),
        (
            "crosscam_crop_errors_total",
            "counter",
            "Outputs whose crops could not be stored.",
            l.crop_errors as f64,
        ),
        (
            "crosscam_crop_queue",
            "gauge",
            "Outputs waiting for the crop writer.",
            l.crop_queue as f64,
        ),
        (
            "crosscam_detections_total",
            "counter",
            "Person detections.",
            a.detections as f64,
        ),
        (
            "crosscam_frames_predicted_total",
            "counter",
            "Analysed frames not detected by [analysis] detect_every (boxes predicted by the tracker).",
            a.predicted_frames as f64,
        ),
        (
            "crosscam_frames_held_total",
            "counter",
            "Analysed frames not detected by [analysis] motion_gate (nothing moved; boxes held).",
            a.held_frames as f64,
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
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    if let Some(c) = s.server.cluster() {
        // the broker boundary (edge and core roles): one family per queue counter
        for (name, kind, help, v) in [
            (
                "crosscam_cluster_connected",
                "gauge",
                "Connected to the broker (1) or not (0).",
                u64::from(c.connected),
            ),
            (
                "crosscam_cluster_published_total",
                "counter",
                "Edge: messages the broker acknowledged.",
                c.published,
            ),
            (
                "crosscam_cluster_publish_duplicates_total",
                "counter",
                "Edge: re-published messages the stream already held (dropped by Nats-Msg-Id).",
                c.publish_duplicates,
            ),
            (
                "crosscam_cluster_publish_errors_total",
                "counter",
                "Edge: publish rounds that failed (broker unreachable); the messages stay buffered.",
                c.publish_errors,
            ),
            (
                "crosscam_cluster_buffered",
                "gauge",
                "Edge: messages waiting for the broker.",
                c.buffered,
            ),
            (
                "crosscam_cluster_buffered_on_disk",
                "gauge",
                "Edge: of the messages waiting for the broker, those on disk (past buffer_max).",
                c.buffered_on_disk,
            ),
            (
                "crosscam_cluster_buffered_disk_bytes",
                "gauge",
                "Edge: bytes of the disk buffer.",
                c.buffered_disk_bytes,
            ),
            (
                "crosscam_cluster_buffered_peak",
                "gauge",
                "Edge: the most messages ever waiting for the broker at once.",
                c.buffered_peak,
            ),
            (
                "crosscam_cluster_dropped_total",
                "counter",
                "Edge: messages dropped, oldest first, over [cluster] buffer_max.",
                c.dropped,
            ),
            (
                "crosscam_cluster_consumed_total",
                "counter",
                "Core: messages taken from the stream.",
                c.consumed,
            ),
            (
                "crosscam_cluster_redelivered_total",
                "counter",
                "Core: messages the stream delivered more than once.",
                c.redelivered,
            ),
            (
                "crosscam_cluster_duplicates_total",
                "counter",
                "Core: observations dropped because they (or a later snapshot of the tracklet) were stored already.",
                c.duplicates,
            ),
            (
                "crosscam_cluster_malformed_total",
                "counter",
                "Core: messages that could not be read (terminated, not retried).",
                c.malformed,
            ),
            (
                "crosscam_cluster_acked_total",
                "counter",
                "Core: messages acknowledged after they were stored.",
                c.acked,
            ),
            (
                "crosscam_cluster_cameras_assigned",
                "gauge",
                "Edge: cameras of the site this edge runs now.",
                c.assigned.len() as u64,
            ),
            (
                "crosscam_cluster_cameras_taken_total",
                "counter",
                "Edge: cameras taken from the site (free, or left by a dead edge).",
                c.cameras_taken,
            ),
            (
                "crosscam_cluster_cameras_released_total",
                "counter",
                "Edge: cameras given back so that a less loaded edge takes them.",
                c.cameras_released,
            ),
            (
                "crosscam_cluster_leases_lost_total",
                "counter",
                "Edge: cameras another edge took while this one could not renew its lease.",
                c.leases_lost,
            ),
            (
                "crosscam_cluster_cameras_unplaced",
                "gauge",
                "Core: the site's cameras no live edge runs.",
                c.placement.iter().filter(|a| a.edge.is_none()).count() as u64,
            ),
        ] {
            family(&mut o, name, kind, help);
            let _ = writeln!(o, "{name}{{site=\"{}\"}} {v}", esc(&c.site));
        }
        for (name, help, v) in [
            (
                "crosscam_cluster_edge_speed_cameras",
                "Edge: how many cameras would fill its machine's cores, measured over 30 s (CPU time per analysed frame); its weight in the site's shares.",
                c.speed,
            ),
            (
                "crosscam_cluster_edge_load",
                "Edge: the share of its machine's cores its process kept busy over 30 s (0-1).",
                c.load,
            ),
        ] {
            if let Some(v) = v {
                family(&mut o, name, "gauge", help);
                let _ = writeln!(o, "{name}{{site=\"{}\"}} {v}", esc(&c.site));
            }
        }
        if let Some(core) = &c.core {
            // the core's term (src/cluster/failover.rs)
            let replay_left = core.replay.as_ref().filter(|r| !r.finished).map_or(0, |r| {
                (r.to + 1).saturating_sub(r.from).saturating_sub(r.done)
            });
            for (name, kind, help, v) in [
                (
                    "crosscam_cluster_core_active",
                    "gauge",
                    "Core: holds the site's core lease (1) or lost it (0).",
                    u64::from(core.state == "active"),
                ),
                (
                    "crosscam_cluster_core_epoch",
                    "gauge",
                    "Core: the number of its term as the active core (the lease's revision).",
                    core.epoch,
                ),
                (
                    "crosscam_cluster_core_replay_pending",
                    "gauge",
                    "Core: messages of the takeover replay not yet taken.",
                    replay_left,
                ),
                (
                    "crosscam_cluster_core_snapshot_seq",
                    "gauge",
                    "Core: stream sequence of its last stored snapshot.",
                    core.snapshot.as_ref().map_or(0, |p| p.seq),
                ),
                (
                    "crosscam_cluster_core_snapshot_bytes",
                    "gauge",
                    "Core: size of its last stored snapshot.",
                    core.snapshot.as_ref().map_or(0, |p| p.bytes),
                ),
                (
                    "crosscam_cluster_core_snapshots_failed_total",
                    "counter",
                    "Core: snapshots that could not be stored.",
                    core.snapshots_failed,
                ),
                (
                    "crosscam_cluster_core_standbys",
                    "gauge",
                    "Core: standby cores heartbeating now.",
                    core.standbys.len() as u64,
                ),
            ] {
                family(&mut o, name, kind, help);
                let _ = writeln!(o, "{name}{{site=\"{}\"}} {v}", esc(&c.site));
            }
        }
    }
    family(
        &mut o,
        "crosscam_job_progress",
        "gauge",
        "Progress of running jobs (0–1 within the current phase).",
    );
    for j in s.jobs.running() {
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
    family(
        &mut o,
        "crosscam_http_requests_total",
        "counter",
        "API requests by route and status.",
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
    family(
        &mut o,
        "crosscam_http_rate_limited_total",
        "counter",
        "Requests refused by a rate limit (429), by class: failed-login limits and the per-user limits of snapshots, searches and exports.",
    );
    {
        let lim = s
            .http
            .limited_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for class in ["login", "snapshot", "search", "export"] {
            let n = lim.get(class).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "crosscam_http_rate_limited_total{{class=\"{class}\"}} {n}"
            );
        }
    }
    family(
        &mut o,
        "crosscam_http_request_seconds",
        "histogram",
        "API request latency by route.",
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
