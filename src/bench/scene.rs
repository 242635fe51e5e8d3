//! A mostly static scene made from a clip, for measuring motion gating: stretches of the clip as
//! recorded (people walking) alternate with long stretches of one frozen frame (nothing moves, as
//! in a corridor at night). Written as H.264 MP4 with GStreamer, at the clip's own frame rate.

use std::path::Path;

use anyhow::{Context, Result};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::ingest::VideoReader;

/// How the static scene is cut: `walk_s` seconds of the clip, then its last frame frozen for
/// `freeze_s` seconds, repeated until the clip (or `max_s` of output) ends.
#[derive(Debug, Clone, Copy)]
pub struct StaticScene {
    pub walk_s: f64,
    pub freeze_s: f64,
    pub max_s: f64,
}

impl Default for StaticScene {
    /// 8 s walking, 24 s frozen: a quarter of the time something moves.
    fn default() -> Self {
        StaticScene {
            walk_s: 8.0,
            freeze_s: 24.0,
            max_s: 240.0,
        }
    }
}

impl StaticScene {
    /// Share of the output's time in which the clip plays (something may move).
    pub fn moving_share(&self) -> f64 {
        self.walk_s / (self.walk_s + self.freeze_s)
    }
}

/// Writes the static scene of `src` to `out` (an .mp4); returns its duration in seconds.
pub fn write_static_scene(src: &Path, out: &Path, s: StaticScene) -> Result<f64> {
    anyhow::ensure!(
        s.walk_s > 0.0 && s.freeze_s >= 0.0 && s.max_s > 0.0,
        "static scene: walk and total seconds must be positive"
    );
    gst::init()?;
    let reader = VideoReader::open_from(src, None, None, std::time::Duration::ZERO)?;
    let mut frames = reader.peekable();
    let first = match frames.peek() {
        Some(Ok(f)) => f.clone(),
        Some(Err(e)) => anyhow::bail!("reading {}: {e}", src.display()),
        None => anyhow::bail!("{} has no frames", src.display()),
    };
    // the clip's frame rate from its first two timestamps (25 when unknown)
    let enc = gst::parse::launch(&format!(
        "appsrc name=a format=time ! videoconvert ! x264enc key-int-max=30 bframes=0 \
         speed-preset=ultrafast bitrate=1500 ! video/x-h264,profile=main ! h264parse ! mp4mux \
         ! filesink location=\"{}\"",
        out.display().to_string().replace('"', "")
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| anyhow::anyhow!("encoder is not a pipeline"))?;
    let appsrc = enc
        .by_name("a")
        .context("appsrc")?
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| anyhow::anyhow!("appsrc"))?;
    let (w, h) = (first.width, first.height);
    let stride = (w as usize * 3).div_ceil(4) * 4;
    let mut fps = 0.0;
    enc.set_state(gst::State::Playing)?;
    let mut out_t = 0.0f64;
    let mut in_walk = 0.0f64;
    let mut prev_pts: Option<f64> = None;
    let push = |f: &crate::frame::Frame, t: f64, dt: f64| -> Result<()> {
        let mut data = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            let src_row = &f.data[y * f.stride..y * f.stride + w as usize * 3];
            data[y * stride..y * stride + w as usize * 3].copy_from_slice(src_row);
        }
        let mut buf = gst::Buffer::from_mut_slice(data);
        {
            let b = buf.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds((t * 1e9) as u64));
            b.set_duration(gst::ClockTime::from_nseconds((dt * 1e9) as u64));
        }
        appsrc
            .push_buffer(buf)
            .map_err(|e| anyhow::anyhow!("encoding the static scene: {e:?}"))?;
        Ok(())
    };
    for f in frames {
        let f = f?;
        let t = f.pts.as_secs_f64();
        if fps == 0.0 {
            if let Some(p) = prev_pts {
                fps = if t > p { 1.0 / (t - p) } else { 25.0 };
                appsrc.set_caps(Some(
                    &gst::Caps::builder("video/x-raw")
                        .field("format", "RGB")
                        .field("width", w as i32)
                        .field("height", h as i32)
                        .field(
                            "framerate",
                            gst::Fraction::approximate_f64(fps)
                                .unwrap_or(gst::Fraction::new(25, 1)),
                        )
                        .build(),
                ));
                // the first frame, held back until the rate was known
                push(&first, 0.0, 1.0 / fps)?;
                out_t = 1.0 / fps;
                in_walk = 1.0 / fps;
            } else {
                prev_pts = Some(t);
                continue;
            }
        }
        if f.width != w || f.height != h {
            continue;
        }
        let dt = 1.0 / fps;
        push(&f, out_t, dt)?;
        out_t += dt;
        in_walk += dt;
        if in_walk >= s.walk_s {
            let mut held = 0.0;
            while held < s.freeze_s && out_t < s.max_s {
                push(&f, out_t, dt)?;
                out_t += dt;
                held += dt;
            }
            in_walk = 0.0;
        }
        if out_t >= s.max_s {
            break;
        }
    }
    anyhow::ensure!(fps > 0.0, "{} has fewer than two frames", src.display());
    appsrc
        .end_of_stream()
        .map_err(|e| anyhow::anyhow!("ending the static scene: {e:?}"))?;
    let bus = enc.bus().context("encoder bus")?;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(300)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                let _ = enc.set_state(gst::State::Null);
                anyhow::bail!("encoding {}: {}", out.display(), e.error())
            }
            _ => {}
        }
    }
    enc.set_state(gst::State::Null)?;
    Ok(out_t)
}
