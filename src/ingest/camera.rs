//! One camera: a thread that builds its GStreamer pipeline, feeds frames into the analysis queue,
//! watches the bus and the frame flow, and reconnects with back-off — driven by the
//! [`Supervisor`] state machine. Cameras never share a pipeline or a thread, so one camera's
//! trouble cannot stall another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tracing::{debug, info, info_span, warn};

use super::pipeline::{self, PipelineParams};
use super::queue::{AnalysisQueue, CameraId, Pushed};
use super::source::SourceUrl;
use super::state::{CameraState, CameraStatus, Counters, StateCell};
use super::supervisor::{Action, Backoff, Event, Failure, SourceKind, Supervisor, Timing};
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
    pub pipelines_dir: std::path::PathBuf,
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

/// Classifies a pipeline error for retrying.
pub fn classify(err: &gst::glib::Error, debug: &str) -> Failure {
    use gst::ResourceError as R;
    let text = format!("{} {}", err.message(), debug).to_ascii_lowercase();
    match err.kind::<R>() {
        Some(R::NotAuthorized) => Failure::Unauthorized,
        Some(R::NotFound) => Failure::NotFound,
        Some(R::OpenRead)
            if text.contains("no such file") || text.contains("could not open file") =>
        {
            Failure::NotFound
        }
        _ if text.contains("401") || text.contains("unauthorized") => Failure::Unauthorized,
        _ if text.contains("404") || text.contains("not found") => Failure::NotFound,
        _ => Failure::Other,
    }
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
        let params = PipelineParams {
            source: source.clone(),
            transport: c.transport,
            latency_ms: i.rtsp_latency_ms,
            fps: Some(c.fps.unwrap_or(self.ctx.fps)),
            width: self.ctx.width,
            realtime: c.realtime,
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

    /// One connection attempt: runs until the pipeline must be rebuilt or the camera stops.
    fn attempt(
        &self,
        params: &PipelineParams,
        sup: &mut Supervisor,
        seq: &Arc<AtomicU64>,
    ) -> Result<Action, String> {
        let (tname, template) =
            pipeline::load_template(&self.ctx.pipelines_dir, params.source.kind())
                .map_err(|e| e.to_string())?;
        let text = pipeline::render(&template, params);
        let (pipe, sink) = pipeline::build(&tname, &text).map_err(|e| e.to_string())?;
        let (user, pass) = self.ctx.settings.credentials();
        pipeline::set_credentials(&pipe, user.as_deref(), pass.as_deref());
        self.install_sink(&sink, seq.clone());
        let guard = PipelineGuard(pipe.clone());
        let bus = pipe.bus().ok_or("pipeline without a bus")?;
        if let (SourceUrl::File(_), Some(t)) = (&params.source, self.ctx.settings.start_s)
            && t > 0.0
        {
            // a file camera that starts into its clip: preroll, then an accurate seek
            let _ = pipe.set_state(gst::State::Paused);
            let (res, _, _) = pipe.state(gst::ClockTime::from_seconds(10));
            let sought = res.is_ok()
                && pipe
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                        gst::ClockTime::from_nseconds((t * 1e9) as u64),
                    )
                    .is_ok();
            if !sought {
                warn!(
                    start_s = t,
                    "cannot start the file at start_s: playing it from the beginning"
                );
            }
        }
        if let Err(e) = pipe.set_state(gst::State::Playing) {
            // the error details follow on the bus; give them a moment to arrive
            if let Some(msg) = bus.timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Error],
            ) && let gst::MessageView::Error(err) = msg.view()
            {
                return Ok(self.error_action(sup, err));
            }
            return Err(format!("cannot start the pipeline: {e}"));
        }
        let mut frames_seen = self.counters.frames_in.load(Ordering::Relaxed);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                drop(guard);
                return Ok(Action::Stop);
            }
            let ev = match bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
                Some(msg) => match msg.view() {
                    gst::MessageView::Eos(_) => Some(Event::Eos),
                    gst::MessageView::Error(err) => return Ok(self.error_action(sup, err)),
                    gst::MessageView::Warning(w) => {
                        debug!(warning = %w.error(), src = ?w.src().map(|s| s.path_string()), "pipeline warning");
                        None
                    }
                    _ => None,
                },
                None => None,
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
                    if pipe
                        .seek_simple(
                            gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                            gst::ClockTime::ZERO,
                        )
                        .is_err()
                    {
                        // some demuxers cannot seek: rebuild instead
                        return Ok(Action::Reconnect {
                            retry_in: Duration::ZERO,
                        });
                    }
                }
                a @ Action::Reconnect { .. } => {
                    self.publish(sup.state, &sup.detail);
                    return Ok(a);
                }
                Action::Stop => {
                    self.publish(sup.state, &sup.detail);
                    return Ok(Action::Stop);
                }
            }
        }
    }

    fn error_action(&self, sup: &mut Supervisor, err: &gst::message::Error) -> Action {
        let debug = err.debug().map(|d| d.to_string()).unwrap_or_default();
        let src = err
            .src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_default();
        let failure = classify(&err.error(), &debug);
        // say which source failed: GStreamer's own messages ("Resource not found.") do not
        let what = match SourceUrl::parse(&self.ctx.settings.url) {
            Ok(SourceUrl::File(p)) => format!("file {}", p.display()),
            Ok(SourceUrl::Rtsp(u)) => redact(&u),
            Ok(SourceUrl::V4l2(d)) => format!("device {}", d.display()),
            _ => self.ctx.settings.url.clone(),
        };
        let msg = format!("{what}: {} (element {src})", err.error());
        let a = sup.on(Event::Error(failure, msg), Instant::now(), rand::random());
        self.publish(sup.state, &sup.detail);
        a
    }

    fn install_sink(&self, sink: &gst_app::AppSink, seq: Arc<AtomicU64>) {
        let queue = self.ctx.queue.clone();
        let counters = self.counters.clone();
        let id = self.id.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    match pipeline::frame_from_sample(&sample, n) {
                        Ok(frame) => {
                            counters.frame_in();
                            match queue.push(&id, frame) {
                                Pushed::DroppedOldest => {
                                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                Pushed::Closed => return Err(gst::FlowError::Flushing),
                                Pushed::Queued => {}
                            }
                        }
                        Err(e) => warn!(error = %e, "dropping an unreadable frame"),
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
}

/// An RTSP URL without the password, for logs and messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Sets the pipeline to NULL when dropped, whatever path the attempt left by.
struct PipelineGuard(gst::Pipeline);

impl Drop for PipelineGuard {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("rtsp://admin:hunter2@10.0.0.5/s1"),
            "rtsp://admin:***@10.0.0.5/s1"
        );
        assert_eq!(redact("rtsp://10.0.0.5/s1"), "rtsp://10.0.0.5/s1");
    }
}
