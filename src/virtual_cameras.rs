//! Virtual cameras for the demo: an in-process RTSP server (gstreamer-rtsp-server) on 127.0.0.1
//! that replays the bundled clip as several cameras, each starting at its own point of the clip
//! and looping without end (so the daemon sees live RTSP cameras that never stop).
//!
//! The clip is decoded once into JPEG frames (`<dir>/frames`); each camera is a looping
//! `multifilesrc` over its own rotation of those frames (symbolic links with absolute targets),
//! re-encoded to H.264. Every camera after the first also sees the street differently —
//! mirrored, zoomed in, darker and colour-shifted ([`LOOKS`]) — so that matching a person across
//! cameras is re-identification, not matching identical pixels.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

/// Frames per second the virtual cameras play at (the clip's own rate).
const FPS: u32 = 10;

/// How camera k sees the scene (camera 0 as recorded, then these in turn): GStreamer elements
/// between the JPEG decoder and the encoder, constants only.
const LOOKS: [&str; 2] = [
    // mirrored, 15 % zoom off-centre, darker, warmer and less saturated
    "videoflip method=horizontal-flip ! videocrop left=40 right=75 top=30 bottom=56 \
     ! videoscale ! video/x-raw,width=768,height=576 \
     ! videobalance brightness=-0.08 contrast=1.1 saturation=0.7 hue=0.04",
    // zoomed out of a cropped corner, brighter, cooler
    "videocrop left=90 right=0 top=0 bottom=70 ! videoscale ! video/x-raw,width=768,height=576 \
     ! videobalance brightness=0.06 saturation=0.8 hue=-0.05",
];

pub struct VirtualCameras {
    _server: rtsp::RTSPServer,
    main_loop: glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    pub port: u16,
}

/// Decodes `clip` into `dir/frames/%05d.jpg` once; returns the number of frames.
fn extract_frames(clip: &Path, dir: &Path) -> Result<usize> {
    let frames = dir.join("frames");
    let count = |d: &Path| {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
                    .count()
            })
            .unwrap_or(0)
    };
    let done = frames.join(".complete");
    if done.is_file() {
        return Ok(count(&frames));
    }
    let _ = std::fs::remove_dir_all(&frames);
    std::fs::create_dir_all(&frames)
        .with_context(|| format!("cannot create {}", frames.display()))?;
    gst::init()?;
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! videorate ! video/x-raw,framerate={FPS}/1 ! jpegenc quality=90 ! multifilesink location=\"{}/%05d.jpg\"",
        clip.display(),
        frames.display()
    );
    let p = gst::parse::launch(&desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow::anyhow!("not a pipeline"))?;
    p.set_state(gst::State::Playing)?;
    let bus = p.bus().context("pipeline without a bus")?;
    let result = loop {
        match bus.timed_pop(gst::ClockTime::from_seconds(120)) {
            None => {
                break Err(anyhow::anyhow!(
                    "decoding {} took over 2 minutes",
                    clip.display()
                ));
            }
            Some(m) => match m.view() {
                gst::MessageView::Eos(_) => break Ok(()),
                gst::MessageView::Error(e) => {
                    break Err(anyhow::anyhow!(
                        "cannot decode {}: {}",
                        clip.display(),
                        e.error()
                    ));
                }
                _ => {}
            },
        }
    };
    let _ = p.set_state(gst::State::Null);
    result?;
    let n = count(&frames);
    anyhow::ensure!(n > 0, "{} gave no frames", clip.display());
    std::fs::write(&done, n.to_string())?;
    Ok(n)
}

/// `dir/<name>/%05d.jpg`: the frames rotated to start `offset` frames in.
fn rotation(dir: &Path, name: &str, n: usize, offset: usize) -> Result<PathBuf> {
    let d = dir.join(format!("cam-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    for i in 0..n {
        let src = dir
            .join("frames")
            .join(format!("{:05}.jpg", (i + offset) % n));
        std::os::unix::fs::symlink(&src, d.join(format!("{i:05}.jpg")))
            .with_context(|| format!("cannot link {}", src.display()))?;
    }
    Ok(d)
}

impl VirtualCameras {
    /// Serves `rtsp://127.0.0.1:<port>/<name>` for each `(name, start seconds)`; `port` 0 picks a
    /// free one. `work` holds the decoded frames (kept between runs).
    pub fn start(
        clip: &Path,
        work: &Path,
        port: u16,
        cameras: &[(String, f64)],
    ) -> Result<VirtualCameras> {
        anyhow::ensure!(
            clip.is_file(),
            "the demo clip {} is missing: run `make setup`",
            clip.display()
        );
        std::fs::create_dir_all(work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        // absolute, so the links below resolve wherever the demo was started from
        let work = &work
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", work.display()))?;
        anyhow::ensure!(
            !work.to_string_lossy().contains(['"', '\\']),
            "the demo's data directory {} contains a quote or a backslash; use a plainer path",
            work.display()
        );
        let n = extract_frames(clip, work)?;
        gst::init()?;
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        let mounts = server
            .mount_points()
            .context("RTSP server without mount points")?;
        for (k, (name, start_s)) in cameras.iter().enumerate() {
            anyhow::ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "a virtual camera's name must be letters, digits, '-' or '_', found {name:?}"
            );
            let offset = ((start_s * FPS as f64).round() as usize) % n;
            let d = rotation(work, name, n, offset)?;
            let look = match k {
                0 => String::new(),
                k => format!("{} ! ", LOOKS[(k - 1) % LOOKS.len()]),
            };
            let factory = rtsp::RTSPMediaFactory::new();
            factory.set_launch(&format!(
                "( multifilesrc location=\"{}/%05d.jpg\" loop=true caps=\"image/jpeg,framerate={FPS}/1\" ! jpegdec ! videoconvert ! {look}videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={} bitrate=1500 ! rtph264pay name=pay0 pt=96 config-interval=1 )",
                d.display(),
                FPS * 2
            ));
            // one encoder per camera, however many clients watch it
            factory.set_shared(true);
            mounts.add_factory(&format!("/{name}"), factory);
        }
        let ctx = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        server.attach(Some(&ctx)).map_err(|_| {
            anyhow::anyhow!(
                "cannot listen on 127.0.0.1:{port} for the virtual cameras: is another demo running? (the port is in the demo config's camera URLs)"
            )
        })?;
        let bound = server.bound_port() as u16;
        let ml = main_loop.clone();
        let thread = std::thread::Builder::new()
            .name("virtual-cameras".into())
            .spawn(move || {
                let _ = ctx.with_thread_default(|| ml.run());
            })?;
        tracing::info!(
            port = bound,
            cameras = cameras.len(),
            frames = n,
            "virtual cameras serving"
        );
        Ok(VirtualCameras {
            _server: server,
            main_loop,
            thread: Some(thread),
            port: bound,
        })
    }
}

impl Drop for VirtualCameras {
    fn drop(&mut self) {
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
