//! One camera: a thread that runs its GStreamer pipeline in a camera process of its own
//! ([`super::worker`], supervised by [`super::process`]), feeds the frames it sends into the
//! analysis queue, watches its events and the frame flow, and restarts it with back-off — driven
//! by the [`Supervisor`] state machine. Cameras never share a pipeline, a thread or a process, so
//! one camera's trouble (even an element that aborts) cannot stall or kill another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, info_span, warn};

use super::pipeline::{self, PipelineParams};
use super::process;
use super::queue::{AnalysisQueue, CameraId, Pushed};
use super::source::SourceUrl;
use super::state::{CameraState, CameraStatus, Counters, StateCell};
use super::supervisor::{Action, Backoff, Event, Failure, SourceKind, Supervisor, Timing};
use super::worker::{FailureKind, WorkerEvent, WorkerSpec};
use crate::config::{CameraSettings, IngestSettings};

/// Called on every state change: (camera, new state, detail).
pub type StateListener = Arc<dyn Fn(&str, CameraState, &str) + Send + Sync>;

pub struct Camera {
    pub id: CameraId,
    pub settings: CameraSettings,
    pub counters: Arc<Counters>,
    pub state: Arc<StateCell>,
    stop_tx: crossbeam_channel::Sender<()>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub struct CameraContext {
    pub settings: CameraSettings,
    pub ingest: IngestSettings,
    pub fps: u32,
    pub width: Option<u32>,
    /// The program that runs camera processes (`crosscam`, see [`super::process::worker_exe`]).
    pub worker: std::path::PathBuf,
    pub queue: Arc<AnalysisQueue>,
    pub listener: Option<StateListener>,
}

impl Camera {
    pub fn start(ctx: CameraContext) -> Camera {
        let id: CameraId = ctx.settings.id.as_str().into();
        let counters = Arc::new(Counters::default());
        let state = Arc::new(StateCell::default());
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let settings = ctx.settings.clone();
        let runner = Runner {
            id: id.clone(),
            ctx,
            counters: counters.clone(),
            state: state.clone(),
            stop_rx,
            stopping: stopping.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("cam-{}", id))
            .spawn(move || runner.run())
            .expect("spawn camera thread");
        Camera {
            id,
            settings,
            counters,
            state,
            stop_tx,
            stopping,
            thread: Some(thread),
        }
    }

    pub fn status(&self) -> CameraStatus {
        let (state, detail, since) = self.state.get();
        CameraStatus {
            id: self.id.to_string(),
            state,
            detail,
            state_secs: since.as_secs_f64(),
            frames_in: self.counters.frames_in.load(Ordering::Relaxed),
            analysed: self.counters.analysed.load(Ordering::Relaxed),
            detected: self.counters.detected.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            reconnects: self.counters.reconnects.load(Ordering::Relaxed),
            last_frame_age_ms: self.counters.last_frame_age().map(|d| d.as_millis() as u64),
        }
    }

    /// Stops the pipeline and joins the thread.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Runner {
    id: CameraId,
    ctx: CameraContext,
    counters: Arc<Counters>,
    state: Arc<StateCell>,
    stop_rx: crossbeam_channel::Receiver<()>,
    stopping: Arc<AtomicBool>,
}

impl Runner {
    fn publish(&self, s: CameraState, detail: &str) {
        if let Some(prev) = self.state.set(s, detail) {
            match s {
                CameraState::Live | CameraState::Connecting | CameraState::Stopped => {
                    info!(from = %prev, to = %s, detail, "camera state")
                }
                _ => warn!(from = %prev, to = %s, detail, "camera state"),
            }
            if let Some(l) = &self.ctx.listener {
                l(&self.id, s, detail);
            }
        }
    }

    /// Sleeps `d` unless asked to stop; returns true when stopping.
    fn wait(&self, d: Duration) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            return true;
        }
        !matches!(
            self.stop_rx.recv_timeout(d),
            Err(crossbeam_channel::RecvTimeoutError::Timeout)
        )
    }

    fn run(self) {
        let span = info_span!("camera", id = %self.id);
        let _enter = span.enter();
        let c = &self.ctx.settings;
        let source = match SourceUrl::parse(&c.url) {
            Ok(s) => s,
            Err(e) => {
                self.publish(CameraState::Stopped, &format!("invalid url: {e}"));
                return;
            }
        };
        let kind = match source {
            SourceUrl::File(_) => SourceKind::File {
                looping: c.loop_file,
            },
            _ => SourceKind::Live,
        };
        let i = &self.ctx.ingest;
        let timing = Timing {
            stall_timeout: Duration::from_millis(i.stall_timeout_ms),
            connect_timeout: Duration::from_millis(i.connect_timeout_ms),
            slow_retry: Duration::from_millis(i.auth_retry_ms),
        };
        let backoff = Backoff::new(
            Duration::from_millis(i.reconnect_initial_ms),
            Duration::from_millis(i.reconnect_max_ms),
        );
        let mut sup = Supervisor::new(kind, timing, backoff, Instant::now());
        if let Some(t) = c.start_s
            && let Err(e) = pipeline::start_time(t)
        {
            self.publish(CameraState::Stopped, &e.to_string());
            return;
        }
        let params = PipelineParams {
            url: c.url.clone(),
            transport: c.transport,
            latency_ms: i.rtsp_latency_ms,
            fps: Some(c.fps.unwrap_or(self.ctx.fps)),
            width: self.ctx.width,
            realtime: c.realtime,
            decoder_threads: i.decoder_threads,
        };
        let seq = Arc::new(AtomicU64::new(0));
        let mut attempt = 0u64;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            if attempt > 0 {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            attempt += 1;
            sup.connecting(Instant::now());
            self.publish(CameraState::Connecting, "");
            let action = match self.attempt(&params, &mut sup, &seq) {
                Ok(a) => a,
                Err(msg) => {
                    // the pipeline could not even be built: a configuration problem, retried slowly
                    let a = sup.on(
                        Event::Error(Failure::Other, msg),
                        Instant::now(),
                        rand::random(),
                    );
                    self.publish(sup.state, &sup.detail);
                    a
                }
            };
            match action {
                Action::Reconnect { retry_in } => {
                    debug!(
                        retry_in_ms = retry_in.as_millis() as u64,
                        "reconnecting later"
                    );
                    if sup.state == CameraState::Stalled && self.wait(Duration::from_millis(10)) {
                        break;
                    }
                    if self.wait(retry_in) {
                        break;
                    }
                }
                Action::Stop | Action::Nothing | Action::Rewind => break,
            }
        }
        let detail = if self.stopping.load(Ordering::SeqCst) {
            "stopped".to_string()
        } else {
            sup.detail.clone()
        };
        self.publish(CameraState::Stopped, &detail);
    }

    /// What to call the source in messages (never a password).
    fn what(&self) -> String {
        match SourceUrl::parse(&self.ctx.settings.url) {
            Ok(SourceUrl::File(p)) => format!("file {}", p.display()),
            Ok(SourceUrl::Rtsp(u)) => redact(&u),
            Ok(SourceUrl::V4l2(d)) => format!("device {}", d.display()),
            _ => redact(&self.ctx.settings.url),
        }
    }

    /// One connection attempt: starts the camera process and runs until its pipeline must be
    /// rebuilt, it dies, or the camera stops.
    fn attempt(
        &self,
        params: &PipelineParams,
        sup: &mut Supervisor,
        seq: &Arc<AtomicU64>,
    ) -> Result<Action, String> {
        let (user, password) = self.ctx.settings.credentials();
        let spec = WorkerSpec {
            params: params.clone(),
            start_s: self.ctx.settings.start_s,
            user,
            password,
            what: self.what(),
        };
        let mut child = process::CameraProcess::spawn(&self.ctx.worker, &spec, &self.id)?;
        let events = child.take_events();
        self.pump_frames(&mut child, seq.clone());
        let mut frames_seen = self.counters.frames_in.load(Ordering::Relaxed);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                child.stop();
                return Ok(Action::Stop);
            }
            let ev = match events.recv_timeout(Duration::from_millis(100)) {
                Ok(WorkerEvent::Eos) => Some(Event::Eos),
                Ok(WorkerEvent::Error { failure, message }) => Some(Event::Error(
                    match failure {
                        FailureKind::Unauthorized => Failure::Unauthorized,
                        FailureKind::NotFound => Failure::NotFound,
                        FailureKind::Other => Failure::Other,
                    },
                    message,
                )),
                Ok(WorkerEvent::Playing) => None,
                Ok(WorkerEvent::RewindFailed) => {
                    // some demuxers cannot seek: rebuild instead
                    child.stop();
                    return Ok(Action::Reconnect {
                        retry_in: Duration::ZERO,
                    });
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    // the process is gone: say how it ended and what it last said
                    let why = child.exit_reason();
                    warn!(reason = %why, "camera process ended");
                    Some(Event::Error(
                        Failure::Other,
                        format!("{}: the camera process {why}", self.what()),
                    ))
                }
            };
            let now = Instant::now();
            let n = self.counters.frames_in.load(Ordering::Relaxed);
            if n != frames_seen {
                frames_seen = n;
                sup.on(Event::Frame, now, 0.0);
                self.publish(sup.state, &sup.detail);
            }
            let action = match ev {
                Some(e) => sup.on(e, now, rand::random()),
                None => sup.on(Event::Tick, now, rand::random()),
            };
            match action {
                Action::Nothing => {}
                Action::Rewind => {
                    debug!("end of file: looping");
                    if !child.rewind() {
                        child.stop();
                        return Ok(Action::Reconnect {
                            retry_in: Duration::ZERO,
                        });
                    }
                }
                a @ Action::Reconnect { .. } => {
                    child.stop();
                    self.publish(sup.state, &sup.detail);
                    return Ok(a);
                }
                Action::Stop => {
                    child.stop();
                    self.publish(sup.state, &sup.detail);
                    return Ok(Action::Stop);
                }
            }
        }
    }

    /// Moves the process's frames into the analysis queue (on the process's reader thread).
    fn pump_frames(&self, child: &mut process::CameraProcess, seq: Arc<AtomicU64>) {
        let queue = self.ctx.queue.clone();
        let counters = self.counters.clone();
        let id = self.id.clone();
        child.on_frame(Box::new(
            move |width, height, stride, pts_ns, data: &[u8]| {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                match pipeline::frame_from_bytes(
                    width,
                    height,
                    stride,
                    Duration::from_nanos(pts_ns),
                    n,
                    data,
                ) {
                    Ok(frame) => {
                        counters.frame_in();
                        match queue.push(&id, frame) {
                            Pushed::DroppedOldest => {
                                counters.dropped.fetch_add(1, Ordering::Relaxed);
                            }
                            Pushed::Closed | Pushed::Queued => {}
                        }
                    }
                    Err(e) => warn!(error = %e, "dropping an unreadable frame"),
                }
            },
        ));
    }
}

/// An RTSP URL without its credentials, for logs and messages (kept here for older callers).
pub use super::source::redact;
