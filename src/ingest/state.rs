//! Camera states and counters, shared between a camera's thread and the rest of the program.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Where a camera is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Pipeline built, waiting for the first frame.
    Connecting,
    /// Frames are arriving.
    Live,
    /// Was live, but no frame arrived for the stall timeout (frozen stream); about to reconnect.
    Stalled,
    /// Failed or ended; waiting before the next connection attempt.
    Backoff,
    /// The camera refused the credentials; retried slowly.
    Unauthorized,
    /// The stream or file does not exist; retried slowly.
    NotFound,
    /// Stopped on purpose (removed, disabled, or a file that ended without looping).
    Stopped,
}

impl std::fmt::Display for CameraState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            CameraState::Connecting => "connecting",
            CameraState::Live => "live",
            CameraState::Stalled => "stalled",
            CameraState::Backoff => "backoff",
            CameraState::Unauthorized => "unauthorized",
            CameraState::NotFound => "not_found",
            CameraState::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Monotonic nanoseconds since the first call (process-local clock for "last frame age").
pub fn mono_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Lock-free counters updated from GStreamer's streaming thread and the analysis stage.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames delivered by the pipeline (after rate limiting).
    pub frames_in: AtomicU64,
    /// Frames the analysis took from the queue.
    pub analysed: AtomicU64,
    /// Analysed frames the detector ran on (the others were predicted or held by the tracker:
    /// `[analysis] detect_every`, `motion_gate`).
    pub detected: AtomicU64,
    /// Frames dropped because the analysis queue was full (the oldest goes).
    pub dropped: AtomicU64,
    /// Connection attempts after the first.
    pub reconnects: AtomicU64,
    /// `mono_ns()` of the last frame, 0 before the first.
    pub last_frame_ns: AtomicU64,
}

impl Counters {
    pub fn frame_in(&self) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.last_frame_ns
            .store(mono_ns().max(1), Ordering::Relaxed);
    }
    pub fn last_frame_age(&self) -> Option<Duration> {
        match self.last_frame_ns.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_nanos(mono_ns().saturating_sub(t))),
        }
    }
}

/// A camera's state and why it is in it.
#[derive(Debug)]
pub struct StateCell {
    inner: Mutex<(CameraState, String, Instant)>,
}

impl Default for StateCell {
    fn default() -> Self {
        StateCell {
            inner: Mutex::new((CameraState::Connecting, String::new(), Instant::now())),
        }
    }
}

impl StateCell {
    /// Sets the state; returns the previous one when it changed.
    pub fn set(&self, s: CameraState, detail: &str) -> Option<CameraState> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let prev = g.0;
        if prev != s || g.1 != detail {
            *g = (
                s,
                detail.to_string(),
                if prev != s { Instant::now() } else { g.2 },
            );
        }
        (prev != s).then_some(prev)
    }
    pub fn get(&self) -> (CameraState, String, Duration) {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (g.0, g.1.clone(), g.2.elapsed())
    }
}

/// A snapshot of one camera for the API, logs and tests.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub id: String,
    pub state: CameraState,
    /// Why the camera is in this state (last error, watchdog, …).
    pub detail: String,
    /// Seconds in the current state.
    pub state_secs: f64,
    pub frames_in: u64,
    pub analysed: u64,
    /// Analysed frames the detector ran on (fewer than `analysed` with `[analysis] detect_every`
    /// or `motion_gate`).
    pub detected: u64,
    pub dropped: u64,
    pub reconnects: u64,
    /// Milliseconds since the last frame (none before the first).
    pub last_frame_age_ms: Option<u64>,
}
