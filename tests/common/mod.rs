//! Shared test fixtures: real RTSP cameras served by gstreamer-rtsp-server on 127.0.0.1.
#![allow(dead_code)]

pub mod daemon;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// An RTSP server on 127.0.0.1 (random port) serving the H.264 vtest clip at `/cam`, with an
/// optional user/password, that a test can stop, restart and freeze.
pub struct TestCamera {
    server: rtsp::RTSPServer,
    ctx: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: Option<JoinHandle<()>>,
    source: Option<glib::SourceId>,
    pub port: u16,
    valves: Arc<Mutex<Vec<gst::Element>>>,
}

impl TestCamera {
    pub fn start(credentials: Option<(&str, &str)>) -> TestCamera {
        TestCamera::serve(&crosscam::paths::media("vtest-h264.mp4"), credentials)
    }

    /// Serves `media` (an H.264 MP4) instead of the bundled clip.
    pub fn serve(media: &std::path::Path, credentials: Option<(&str, &str)>) -> TestCamera {
        gst::init().unwrap();
        let media = media.to_path_buf();
        assert!(
            media.is_file(),
            "{} missing: run make setup",
            media.display()
        );
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = rtsp::RTSPMediaFactory::new();
        factory.set_launch(&format!(
            "( filesrc location={} ! qtdemux ! h264parse ! valve name=v drop=false ! rtph264pay name=pay0 pt=96 config-interval=1 )",
            media.display()
        ));
        factory.set_shared(false);
        let valves = Arc::new(Mutex::new(Vec::new()));
        let v = valves.clone();
        factory.connect_media_configure(move |_, m| {
            if let Some(valve) = m
                .element()
                .downcast_ref::<gst::Bin>()
                .and_then(|b| b.by_name("v"))
            {
                v.lock().unwrap().push(valve);
            }
        });
        if let Some((user, pass)) = credentials {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder()
                .field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
                .build();
            auth.add_basic(rtsp::RTSPAuth::make_basic(user, pass).as_str(), &token);
            server.set_auth(Some(&auth));
            factory.add_role_from_structure(
                &gst::Structure::builder("viewer")
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS, true)
                    .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, true)
                    .build(),
            );
        }
        server.mount_points().unwrap().add_factory("/cam", factory);
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let source = server.attach(Some(&ctx)).expect("attach RTSP server");
        let port = server.bound_port() as u16;
        let ml = main_loop.clone();
        let c2 = ctx.clone();
        let thread = std::thread::spawn(move || {
            c2.with_thread_default(|| ml.run()).unwrap();
        });
        TestCamera {
            server,
            ctx,
            main_loop,
            thread: Some(thread),
            source: Some(source),
            port,
            valves,
        }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Runs `f` on the server's main context and waits for it.
    fn on_context(&self, f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ctx.invoke(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("server context answers");
    }

    /// Stops listening and disconnects every client (the camera "dies").
    pub fn stop(&mut self) {
        if let Some(src) = self.source.take() {
            let server = self.server.clone();
            let ctx = self.ctx.clone();
            self.on_context(move || {
                // the source lives in this server's own context, not the global default one
                if let Some(s) = ctx.find_source_by_id(&src) {
                    s.destroy();
                }
                server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
            });
        }
        self.valves.lock().unwrap().clear();
    }

    /// Listens again on the same port.
    pub fn restart(&mut self) {
        assert!(self.source.is_none(), "already running");
        self.server.set_service(&self.port.to_string());
        self.source = Some(
            self.server
                .attach(Some(&self.ctx))
                .expect("re-attach on the same port"),
        );
    }

    /// Stops sending media but keeps every connection open (a frozen camera).
    pub fn freeze(&self) {
        for v in self.valves.lock().unwrap().iter() {
            v.set_property("drop", true);
        }
    }
}

impl Drop for TestCamera {
    fn drop(&mut self) {
        self.stop();
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Cuts `[start, end)` seconds of `src` into an H.264 MP4 at `out` (timestamps from 0), optionally
/// through `videobalance` with the given properties (another camera's colour response).
///
/// Two pipelines: a decoder that seeks (a flushing seek through `mp4mux` would leave a file
/// without its index) and an encoder fed through appsrc.
pub fn cut_clip(
    src: &std::path::Path,
    start: f64,
    end: f64,
    balance: Option<&str>,
    out: &std::path::Path,
) {
    use gstreamer_app as gst_app;
    gst::init().unwrap();
    let launch = |text: &str| {
        gst::parse::launch(text)
            .unwrap()
            .downcast::<gst::Pipeline>()
            .unwrap()
    };
    let dec = launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! {} video/x-raw,format=I420 \
         ! appsink name=s sync=false max-buffers=8",
        src.display(),
        balance
            .map(|b| format!("videobalance {b} ! videoconvert !"))
            .unwrap_or_default(),
    ));
    let enc = launch(&format!(
        "appsrc name=a format=time ! videoconvert ! x264enc key-int-max=10 bframes=0 \
         speed-preset=ultrafast bitrate=1500 ! video/x-h264,profile=main ! h264parse ! mp4mux \
         ! filesink location=\"{}\"",
        out.display()
    ));
    let sink = dec
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let appsrc = enc
        .by_name("a")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    dec.set_state(gst::State::Paused).unwrap();
    let (res, _, _) = dec.state(gst::ClockTime::from_seconds(10));
    res.unwrap();
    let (t0, t1) = (
        gst::ClockTime::from_nseconds((start * 1e9) as u64),
        gst::ClockTime::from_nseconds((end * 1e9) as u64),
    );
    dec.seek(
        1.0,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::SeekType::Set,
        t0,
        gst::SeekType::Set,
        t1,
    )
    .unwrap();
    dec.set_state(gst::State::Playing).unwrap();
    enc.set_state(gst::State::Playing).unwrap();
    let mut frames = 0;
    while let Ok(sample) = sink.pull_sample() {
        if frames == 0 {
            appsrc.set_caps(sample.caps().map(|c| c.to_owned()).as_ref());
        }
        let mut buf = sample.buffer().unwrap().copy();
        let b = buf.make_mut();
        let pts = b.pts().unwrap_or(t0);
        if pts < t0 || pts >= t1 {
            continue;
        }
        b.set_pts(pts - t0);
        b.set_dts(gst::ClockTime::NONE);
        appsrc.push_buffer(buf).unwrap();
        frames += 1;
    }
    assert!(
        frames > 0,
        "cutting {}: no frames in [{start}, {end})",
        src.display()
    );
    appsrc.end_of_stream().unwrap();
    let bus = enc.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("cutting {}: {}", src.display(), e.error()),
            _ => {}
        }
    }
    dec.set_state(gst::State::Null).unwrap();
    enc.set_state(gst::State::Null).unwrap();
}

/// Polls `f` every 50 ms until it is true or `timeout` passes; returns the time it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A child process that is killed when the test ends, also when it panics (a failed assertion
/// must not leave a daemon running on the machine).
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl KillOnDrop {
    /// SIGTERM, then waits up to `secs` for the process to exit; kills it if it has not. The exit
    /// status when it stopped by itself, `None` when it had to be killed.
    pub fn terminate(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of our own child, not reaped yet (try_wait reaps it below)
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
