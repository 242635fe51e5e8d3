//! The decisions a camera makes about its pipeline, as a pure state machine over injected time:
//! when it is live, when it is stalled, what an end-of-stream or an error means, and how long to
//! wait before trying again. The camera thread (`camera.rs`) feeds it events from GStreamer and a
//! clock; tests feed it synthetic events and instants.

use std::time::{Duration, Instant};

use super::state::CameraState;

/// What went wrong, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Credentials refused (RTSP 401).
    Unauthorized,
    /// Stream or file missing (RTSP 404, no such file).
    NotFound,
    /// Anything else (network, decoding, server gone).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame reached the appsink.
    Frame,
    /// End of stream.
    Eos,
    Error(Failure, String),
    /// Periodic check (the watchdog runs on ticks).
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Set the pipeline to NULL and build a new one after `retry_in`.
    Reconnect {
        retry_in: Duration,
    },
    /// Seek the file back to its start (looping files).
    Rewind,
    /// Tear down and stop for good.
    Stop,
}

/// Exponential back-off with ±20 % jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }
    /// The next delay; `jitter` in [0, 1) picks the point in the ±20 % band.
    pub fn next(&mut self, jitter: f64) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(self.failures.min(20) as i32);
        self.failures += 1;
        let capped = base.min(self.max.as_secs_f64());
        Duration::from_secs_f64(capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
    }
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[derive(Debug, Clone)]
pub struct Timing {
    pub stall_timeout: Duration,
    pub connect_timeout: Duration,
    /// Delay before retrying after `Unauthorized` / `NotFound`.
    pub slow_retry: Duration,
}

/// Kind of source, as far as end-of-stream is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Cameras and test sources: EOS means the source went away.
    Live,
    /// Files: EOS means the clip ended.
    File { looping: bool },
}

pub struct Supervisor {
    pub state: CameraState,
    pub detail: String,
    kind: SourceKind,
    timing: Timing,
    backoff: Backoff,
    attempt_started: Instant,
    last_frame: Option<Instant>,
}

impl Supervisor {
    pub fn new(kind: SourceKind, timing: Timing, backoff: Backoff, now: Instant) -> Supervisor {
        Supervisor {
            state: CameraState::Connecting,
            detail: String::new(),
            kind,
            timing,
            backoff,
            attempt_started: now,
            last_frame: None,
        }
    }

    /// A new connection attempt begins (pipeline built and starting).
    pub fn connecting(&mut self, now: Instant) {
        self.state = CameraState::Connecting;
        self.detail.clear();
        self.attempt_started = now;
        self.last_frame = None;
    }

    fn fail(&mut self, state: CameraState, detail: String, retry_in: Duration) -> Action {
        self.state = state;
        self.detail = detail;
        Action::Reconnect { retry_in }
    }

    /// Feeds one event; `jitter` in [0, 1) randomises the back-off.
    pub fn on(&mut self, ev: Event, now: Instant, jitter: f64) -> Action {
        match ev {
            Event::Frame => {
                self.last_frame = Some(now);
                if self.state != CameraState::Live {
                    self.state = CameraState::Live;
                    self.detail.clear();
                    self.backoff.reset();
                }
                Action::Nothing
            }
            Event::Tick => match (self.state, self.last_frame) {
                (CameraState::Live, Some(t))
                    if now.duration_since(t) >= self.timing.stall_timeout =>
                {
                    let msg = format!(
                        "no frame for {:.1} s (frozen stream)",
                        now.duration_since(t).as_secs_f64()
                    );
                    let d = self.backoff.next(jitter);
                    self.fail(CameraState::Stalled, msg, d)
                }
                (CameraState::Connecting, _)
                    if now.duration_since(self.attempt_started) >= self.timing.connect_timeout =>
                {
                    let msg = format!(
                        "no first frame after {:.1} s",
                        now.duration_since(self.attempt_started).as_secs_f64()
                    );
                    let d = self.backoff.next(jitter);
                    self.fail(CameraState::Backoff, msg, d)
                }
                _ => Action::Nothing,
            },
            Event::Eos => match self.kind {
                SourceKind::File { looping: true }
                    if self.last_frame.is_some() || self.state == CameraState::Live =>
                {
                    Action::Rewind
                }
                SourceKind::File { .. } => {
                    self.state = CameraState::Stopped;
                    self.detail = "end of file".into();
                    Action::Stop
                }
                SourceKind::Live => {
                    let d = self.backoff.next(jitter);
                    self.fail(
                        CameraState::Backoff,
                        "end of stream (source went away)".into(),
                        d,
                    )
                }
            },
            Event::Error(f, msg) => match f {
                Failure::Unauthorized => {
                    let d = self.timing.slow_retry;
                    self.fail(CameraState::Unauthorized, msg, d)
                }
                Failure::NotFound => {
                    let d = self.timing.slow_retry;
                    self.fail(CameraState::NotFound, msg, d)
                }
                Failure::Other => {
                    let d = self.backoff.next(jitter);
                    self.fail(CameraState::Backoff, msg, d)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sup(kind: SourceKind, t0: Instant) -> Supervisor {
        Supervisor::new(
            kind,
            Timing {
                stall_timeout: Duration::from_secs(2),
                connect_timeout: Duration::from_secs(10),
                slow_retry: Duration::from_secs(30),
            },
            Backoff::new(Duration::from_millis(500), Duration::from_secs(8)),
            t0,
        )
    }

    #[test]
    fn first_frame_makes_live_and_silence_makes_stalled() {
        let t0 = Instant::now();
        let mut s = sup(SourceKind::Live, t0);
        assert_eq!(s.on(Event::Frame, t0, 0.5), Action::Nothing);
        assert_eq!(s.state, CameraState::Live);
        assert_eq!(
            s.on(Event::Tick, t0 + Duration::from_millis(1900), 0.5),
            Action::Nothing
        );
        let a = s.on(Event::Tick, t0 + Duration::from_millis(2100), 0.5);
        assert_eq!(s.state, CameraState::Stalled);
        assert_eq!(
            a,
            Action::Reconnect {
                retry_in: Duration::from_millis(500)
            }
        );
        assert!(s.detail.contains("frozen"));
    }

    #[test]
    fn backoff_doubles_with_jitter_caps_and_resets_when_live() {
        let t0 = Instant::now();
        let mut s = sup(SourceKind::Live, t0);
        let mut delays = Vec::new();
        for i in 0..6 {
            s.connecting(t0);
            match s.on(Event::Error(Failure::Other, "net".into()), t0, 0.5) {
                Action::Reconnect { retry_in } => delays.push(retry_in.as_millis()),
                a => panic!("attempt {i}: {a:?}"),
            }
        }
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 8000, 8000]);
        // jitter stays within ±20 %
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b.next(0.0), Duration::from_millis(800));
        assert_eq!(b.next(0.999_999).as_millis(), 2399);
        s.connecting(t0);
        s.on(Event::Frame, t0, 0.5);
        s.on(Event::Eos, t0, 0.5);
        assert_eq!(s.state, CameraState::Backoff);
        s.connecting(t0);
        assert_eq!(
            s.on(Event::Error(Failure::Other, "x".into()), t0, 0.5),
            Action::Reconnect {
                retry_in: Duration::from_millis(1000)
            }
        );
    }

    #[test]
    fn auth_and_missing_streams_are_named_and_retried_slowly() {
        let t0 = Instant::now();
        let mut s = sup(SourceKind::Live, t0);
        let a = s.on(Event::Error(Failure::Unauthorized, "401".into()), t0, 0.5);
        assert_eq!(
            (s.state, a),
            (
                CameraState::Unauthorized,
                Action::Reconnect {
                    retry_in: Duration::from_secs(30)
                }
            )
        );
        s.connecting(t0);
        s.on(Event::Error(Failure::NotFound, "404".into()), t0, 0.5);
        assert_eq!(s.state, CameraState::NotFound);
    }

    #[test]
    fn files_loop_or_stop_at_the_end() {
        let t0 = Instant::now();
        let mut s = sup(SourceKind::File { looping: true }, t0);
        s.on(Event::Frame, t0, 0.5);
        assert_eq!(s.on(Event::Eos, t0, 0.5), Action::Rewind);
        let mut s = sup(SourceKind::File { looping: false }, t0);
        s.on(Event::Frame, t0, 0.5);
        assert_eq!(s.on(Event::Eos, t0, 0.5), Action::Stop);
        assert_eq!(s.state, CameraState::Stopped);
    }

    #[test]
    fn a_source_that_never_delivers_is_retried() {
        let t0 = Instant::now();
        let mut s = sup(SourceKind::Live, t0);
        assert_eq!(
            s.on(Event::Tick, t0 + Duration::from_secs(9), 0.5),
            Action::Nothing
        );
        assert!(matches!(
            s.on(Event::Tick, t0 + Duration::from_secs(10), 0.5),
            Action::Reconnect { .. }
        ));
        assert_eq!(s.state, CameraState::Backoff);
    }
}
