//! The process's one typed event stream: camera states, tracklets, identities. Stages publish;
//! any number of subscribers read (the JSON-lines writer of `crosscam serve --events`, and the
//! WebSocket API, src/api/events.rs). A subscriber that falls behind loses the oldest events and
//! is told how many.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::ingest::CameraState;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    CameraState {
        t_ms: i64,
        camera: String,
        state: CameraState,
        detail: String,
    },
    TrackletStarted {
        t_ms: i64,
        camera: String,
        /// Tracker id within the camera's current run.
        track: u64,
    },
    TrackletEnded {
        t_ms: i64,
        camera: String,
        track: u64,
        /// Row id in the store.
        tracklet: i64,
        start_ms: i64,
        end_ms: i64,
        boxes: usize,
    },
    IdentityCreated {
        t_ms: i64,
        identity: i64,
        camera: String,
        tracklet: i64,
    },
    IdentityLinked {
        t_ms: i64,
        identity: i64,
        camera: String,
        tracklet: i64,
        similarity: f32,
        margin: f32,
        /// The runner-up identity was almost as similar: an operator may want to check.
        uncertain: bool,
    },
    IdentityMerged {
        t_ms: i64,
        kept: i64,
        absorbed: i64,
        reason: String,
    },
    IdentitySplit {
        t_ms: i64,
        from: i64,
        to: i64,
        tracklets: Vec<i64>,
    },
    IdentityRetired {
        t_ms: i64,
        identity: i64,
    },
    /// A prune / re-tune job moved on (phase change or progress within a phase).
    JobProgress {
        t_ms: i64,
        job: String,
        phase: String,
        /// What is being counted (e.g. `training`), with done / total (0 = unknown).
        label: String,
        done: u64,
        total: u64,
    },
    /// A job ended: `promoted`, `rejected`, `cancelled` or `failed`.
    JobFinished {
        t_ms: i64,
        job: String,
        status: String,
        detail: String,
    },
    /// A scheduled re-tune was due (`[retune] schedule`): `outcome` `started` (with the `job`) or
    /// `skipped` (`reason` says why: not enough new footage, a job still running, …).
    RetuneScheduled {
        t_ms: i64,
        outcome: String,
        job: String,
        reason: String,
    },
    /// A live model switch moved on: `loading`, `re-embedding` (`done` of `total` tracklets),
    /// `catching-up`, `switching`.
    ModelSwitch {
        t_ms: i64,
        from: String,
        to: String,
        phase: String,
        done: u64,
        total: u64,
    },
    /// A live model switch ended: `outcome` is `switched` (the new model serves) or `failed`
    /// (the old one still serves; `reason` says why).
    ModelSwitched {
        t_ms: i64,
        from: String,
        to: String,
        outcome: String,
        reason: String,
        seconds: f64,
    },
}

impl Event {
    /// The camera the event is about, if any (for per-camera subscriptions).
    pub fn camera(&self) -> Option<&str> {
        match self {
            Event::CameraState { camera, .. }
            | Event::TrackletStarted { camera, .. }
            | Event::TrackletEnded { camera, .. }
            | Event::IdentityCreated { camera, .. }
            | Event::IdentityLinked { camera, .. } => Some(camera),
            _ => None,
        }
    }

    /// Every `type` tag, as [`Event::kind`] gives them (the WebSocket's `?types=` filter).
    pub const KINDS: &'static [&'static str] = &[
        "camera_state",
        "tracklet_started",
        "tracklet_ended",
        "identity_created",
        "identity_linked",
        "identity_merged",
        "identity_split",
        "identity_retired",
        "job_progress",
        "job_finished",
        "retune_scheduled",
        "model_switch",
        "model_switched",
    ];

    /// The `type` tag as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::CameraState { .. } => "camera_state",
            Event::TrackletStarted { .. } => "tracklet_started",
            Event::TrackletEnded { .. } => "tracklet_ended",
            Event::IdentityCreated { .. } => "identity_created",
            Event::IdentityLinked { .. } => "identity_linked",
            Event::IdentityMerged { .. } => "identity_merged",
            Event::IdentitySplit { .. } => "identity_split",
            Event::IdentityRetired { .. } => "identity_retired",
            Event::JobProgress { .. } => "job_progress",
            Event::JobFinished { .. } => "job_finished",
            Event::RetuneScheduled { .. } => "retune_scheduled",
            Event::ModelSwitch { .. } => "model_switch",
            Event::ModelSwitched { .. } => "model_switched",
        }
    }
}

/// Cloneable publisher.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus { tx }
    }

    /// Publishes to every current subscriber (none listening is fine).
    pub fn publish(&self, e: Event) {
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// Writes events as JSON lines to `target` (a file path, or `-` for stdout) on its own thread
/// until the bus is dropped. Returns the thread.
pub fn write_json_lines(
    bus: &EventBus,
    target: &Path,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let mut rx = bus.subscribe();
    let mut out: Box<dyn Write + Send> = if target == Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(target)
                .map_err(|e| {
                    anyhow::anyhow!("cannot open the events file {}: {e}", target.display())
                })?,
        )
    };
    Ok(std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            loop {
                match rx.blocking_recv() {
                    Ok(e) => {
                        if let Ok(line) = serde_json::to_string(&e) {
                            // one line per event, flushed so a reader (or a crash) sees whole lines
                            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                                break;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(lost = n, "event writer fell behind; events lost");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_tagged_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ev.jsonl");
        let bus = EventBus::new(64);
        let t = write_json_lines(&bus, &p).unwrap();
        bus.publish(Event::IdentityCreated {
            t_ms: 5,
            identity: 1,
            camera: "a".into(),
            tracklet: 9,
        });
        bus.publish(Event::CameraState {
            t_ms: 6,
            camera: "a".into(),
            state: CameraState::Live,
            detail: String::new(),
        });
        drop(bus);
        t.join().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["type"], "identity_created");
        assert_eq!(lines[0]["identity"], 1);
        assert_eq!(lines[1]["state"], "live");
    }

    #[test]
    fn kind_is_the_serialised_type_tag() {
        let events = [
            Event::IdentityCreated {
                t_ms: 1,
                identity: 1,
                camera: "a".into(),
                tracklet: 2,
            },
            Event::IdentityMerged {
                t_ms: 1,
                kept: 1,
                absorbed: 2,
                reason: "r".into(),
            },
            Event::JobFinished {
                t_ms: 1,
                job: "j".into(),
                status: "cancelled".into(),
                detail: String::new(),
            },
            Event::RetuneScheduled {
                t_ms: 1,
                outcome: "skipped".into(),
                job: String::new(),
                reason: "r".into(),
            },
            Event::ModelSwitch {
                t_ms: 1,
                from: "v0001".into(),
                to: "v0002".into(),
                phase: "re-embedding".into(),
                done: 1,
                total: 2,
            },
            Event::ModelSwitched {
                t_ms: 1,
                from: "v0001".into(),
                to: "v0002".into(),
                outcome: "failed".into(),
                reason: "r".into(),
                seconds: 1.0,
            },
            Event::TrackletStarted {
                t_ms: 1,
                camera: "a".into(),
                track: 3,
            },
        ];
        for e in events {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["type"], e.kind());
            assert!(Event::KINDS.contains(&e.kind()));
        }
    }
}
