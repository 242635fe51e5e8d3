//! Shared test fixtures: real RTSP cameras served by gstreamer-rtsp-server on 127.0.0.1.
#![allow(dead_code)]

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
        gst::init().unwrap();
        let media = crosscam::paths::media("vtest-h264.mp4");
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
