//! Camera pipelines, built element by element (no `gst-launch` text is ever parsed, so no camera
//! field can become pipeline syntax: a URL, a path or a pattern is only ever one property value),
//! and the appsink samples turned into [`Frame`]s (stride-aware).
//!
//! Every source kind ends in the same analysis tail:
//!
//! ```text
//! file:  filesrc location=PATH ─► decodebin ─┐
//! rtsp:  rtspsrc location=URL ─► decodebin ──┤
//! v4l2:  v4l2src device=/dev/videoN ─► decodebin ─┤
//! test:  videotestsrc pattern=NAME ─► 1280×720@25 ─┤
//!                                                  └► videorate drop-only max-rate=FPS
//!                                                     ─► videoscale ─► width=W, PAR 1/1
//!                                                     ─► videoconvert ─► RGB ─► appsink "sink"
//! ```
//!
//! Frames are dropped (`videorate`) and scaled **before** colour conversion, so only analysed
//! frames pay for it. Decoders are chosen by `decodebin` by rank: a hardware decoder that is
//! installed and ranked higher (NVDEC's `nvh264dec`) is used without any change here.

use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::source::SourceUrl;
use crate::config::RtspTransport;
use crate::frame::Frame;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "the GStreamer element `{factory}` is not installed ({why}); run `make setup` or `crosscam doctor`"
    )]
    Missing { factory: String, why: String },
    #[error("cannot link {from} to {to} in the {kind} pipeline")]
    Link {
        kind: &'static str,
        from: String,
        to: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// What a camera's pipeline is built from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipelineParams {
    /// The camera URL (parsed again where the pipeline is built).
    pub url: String,
    pub transport: RtspTransport,
    pub latency_ms: u64,
    /// Frames per second kept before conversion; `None` keeps every frame.
    pub fps: Option<u32>,
    /// Scale to this width (height keeps the aspect ratio); `None` keeps the source size.
    pub width: Option<u32>,
    /// Files: play at the clip's own rate (true) or as fast as the consumer takes frames.
    pub realtime: bool,
    /// `max-threads` of the software (libav) decoder `decodebin` picks; 0 = libav's choice.
    #[serde(default)]
    pub decoder_threads: u32,
}

/// The elements each source kind needs (what `crosscam doctor` checks).
pub fn required_elements(kind: &str) -> Vec<&'static str> {
    let head: &[&'static str] = match kind {
        "file" => &["filesrc", "decodebin"],
        "rtsp" => &["rtspsrc", "decodebin"],
        "v4l2" => &["v4l2src", "decodebin"],
        "test" => &["videotestsrc"],
        _ => &[],
    };
    let tail = [
        "videorate",
        "videoscale",
        "capsfilter",
        "videoconvert",
        "appsink",
    ];
    head.iter().copied().chain(tail).collect()
}

/// The source kinds, for `crosscam doctor`.
pub const KINDS: [&str; 4] = ["file", "rtsp", "test", "v4l2"];

fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, PipelineError> {
    let mut b = gst::ElementFactory::make(factory);
    if let Some(n) = name {
        b = b.name(n);
    }
    b.build().map_err(|e| PipelineError::Missing {
        factory: factory.to_string(),
        why: e.to_string(),
    })
}

/// `videotestsrc`'s pattern by its nick (`smpte`, `ball`, …), refused when it is not one.
fn test_pattern(src: &gst::Element, nick: &str) -> Result<glib::Value, PipelineError> {
    let pspec = src
        .find_property("pattern")
        .ok_or_else(|| PipelineError::Gst("videotestsrc has no `pattern` property".into()))?;
    let class = glib::EnumClass::with_type(pspec.value_type())
        .ok_or_else(|| PipelineError::Gst("videotestsrc's pattern is not an enum".into()))?;
    let value = class.value_by_nick(nick).ok_or_else(|| {
        let names: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        PipelineError::Invalid(format!(
            "test:{nick} is not a videotestsrc pattern; use one of {}",
            names.join(", ")
        ))
    })?;
    Ok(value.to_value(&class))
}

/// The `decodebin` named "decode"; with `threads` > 0 it sets `max-threads` on the libav decoders
/// it adds (hardware decoders have no such property and are left alone).
fn decodebin(threads: u32) -> Result<gst::Element, PipelineError> {
    let dec = make("decodebin", Some("decode"))?;
    if threads > 0
        && let Some(bin) = dec.downcast_ref::<gst::Bin>()
    {
        bin.connect_deep_element_added(move |_, _, element| {
            let is_libav = element
                .factory()
                .is_some_and(|f| f.name().starts_with("avdec_"));
            if is_libav && element.find_property("max-threads").is_some() {
                element.set_property("max-threads", threads.min(64) as i32);
            }
        });
    }
    Ok(dec)
}

/// Links `decodebin`'s first video pad to `next` when it appears (its audio pads stay unlinked).
fn link_video_pads(decodebin: &gst::Element, next: &gst::Element) {
    let sink = next.static_pad("sink");
    decodebin.connect_pad_added(move |_, pad| {
        let Some(sink) = &sink else { return };
        if sink.is_linked() {
            return;
        }
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let is_video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if is_video {
            let _ = pad.link(sink);
        }
    });
}

/// Builds the pipeline (not started) for `p`, with RTSP credentials set as properties (never in
/// any text), and returns it with its appsink.
pub fn build(
    p: &PipelineParams,
    user: Option<&str>,
    password: Option<&str>,
) -> Result<(gst::Pipeline, gst_app::AppSink), PipelineError> {
    let source = SourceUrl::parse(&p.url).map_err(PipelineError::Invalid)?;
    let kind = source.kind();
    let pipeline = gst::Pipeline::with_name("camera");

    // the tail: videorate ─► videoscale ─► caps ─► videoconvert ─► RGB ─► appsink
    let rate = make("videorate", Some("rate"))?;
    rate.set_property("drop-only", true);
    // videorate's max-rate is whole frames per second; a huge value keeps every frame
    rate.set_property("max-rate", p.fps.map(|f| f.max(1) as i32).unwrap_or(1000));
    let scale = make("videoscale", Some("scale"))?;
    let mut size =
        gst::Caps::builder("video/x-raw").field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    if let Some(w) = p.width {
        let w = (w - w % 2).max(2) as i32;
        size = size.field("width", w);
    }
    let size_filter = make("capsfilter", Some("size"))?;
    size_filter.set_property("caps", size.build());
    let convert = make("videoconvert", Some("convert"))?;
    let rgb_filter = make("capsfilter", Some("rgb"))?;
    rgb_filter.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .build(),
    );
    let live = !matches!(source, SourceUrl::File(_));
    let sync = !live && p.realtime;
    let sink = make("appsink", Some("sink"))?
        .downcast::<gst_app::AppSink>()
        .map_err(|_| PipelineError::Gst("appsink is not an AppSink".into()))?;
    sink.set_sync(sync);
    sink.set_max_buffers(if live { 1 } else { 2 });
    sink.set_drop(live || sync);
    let tail: [&gst::Element; 6] = [
        &rate,
        &scale,
        &size_filter,
        &convert,
        &rgb_filter,
        sink.upcast_ref(),
    ];
    pipeline
        .add_many(tail)
        .map_err(|e| PipelineError::Gst(e.to_string()))?;
    gst::Element::link_many(tail).map_err(|_| PipelineError::Link {
        kind,
        from: "videorate".into(),
        to: "appsink".into(),
    })?;

    let link = |a: &gst::Element, b: &gst::Element| {
        a.link(b).map_err(|_| PipelineError::Link {
            kind,
            from: a.name().to_string(),
            to: b.name().to_string(),
        })
    };
    match &source {
        SourceUrl::File(path) => {
            let src = make("filesrc", Some("src"))?;
            src.set_property("location", path.to_string_lossy().as_ref());
            let dec = decodebin(p.decoder_threads)?;
            pipeline
                .add_many([&src, &dec])
                .map_err(|e| PipelineError::Gst(e.to_string()))?;
            link(&src, &dec)?;
            link_video_pads(&dec, &rate);
        }
        SourceUrl::Rtsp(url) => {
            let src = make("rtspsrc", Some("src"))?;
            src.set_property("location", url.as_str());
            src.set_property_from_str(
                "protocols",
                match p.transport {
                    RtspTransport::Auto => "tcp+udp",
                    RtspTransport::Tcp => "tcp",
                    RtspTransport::Udp => "udp",
                },
            );
            src.set_property("latency", p.latency_ms.min(60_000) as u32);
            src.set_property("drop-on-latency", true);
            if let Some(u) = user {
                src.set_property("user-id", u);
            }
            if let Some(pw) = password {
                src.set_property("user-pw", pw);
            }
            let dec = decodebin(p.decoder_threads)?;
            pipeline
                .add_many([&src, &dec])
                .map_err(|e| PipelineError::Gst(e.to_string()))?;
            // rtspsrc's pads appear per stream once the camera answered: link the first video one
            let dec_sink = dec.static_pad("sink");
            src.connect_pad_added(move |_, pad| {
                let Some(sink) = &dec_sink else { return };
                if sink.is_linked() {
                    return;
                }
                let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
                let video = caps
                    .structure(0)
                    .is_some_and(|s| s.get::<&str>("media").map(|m| m == "video").unwrap_or(true));
                if video {
                    let _ = pad.link(sink);
                }
            });
            link_video_pads(&dec, &rate);
        }
        SourceUrl::V4l2(device) => {
            let src = make("v4l2src", Some("src"))?;
            src.set_property("device", device.to_string_lossy().as_ref());
            let dec = decodebin(p.decoder_threads)?;
            pipeline
                .add_many([&src, &dec])
                .map_err(|e| PipelineError::Gst(e.to_string()))?;
            link(&src, &dec)?;
            link_video_pads(&dec, &rate);
        }
        SourceUrl::Test(pattern) => {
            let src = make("videotestsrc", Some("src"))?;
            src.set_property("is-live", true);
            let v = test_pattern(&src, pattern)?;
            src.set_property_from_value("pattern", &v);
            let caps = make("capsfilter", Some("testcaps"))?;
            caps.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", 1280i32)
                    .field("height", 720i32)
                    .field("framerate", gst::Fraction::new(25, 1))
                    .build(),
            );
            pipeline
                .add_many([&src, &caps])
                .map_err(|e| PipelineError::Gst(e.to_string()))?;
            link(&src, &caps)?;
            link(&caps, &rate)?;
        }
    }
    Ok((pipeline, sink))
}

/// Copies an RGB sample into a frame.
pub fn frame_from_sample(sample: &gst::Sample, seq: u64) -> Result<Frame, PipelineError> {
    let caps = sample
        .caps()
        .ok_or_else(|| PipelineError::Gst("sample without caps".into()))?;
    let info = gst_video::VideoInfo::from_caps(caps)
        .map_err(|e| PipelineError::Gst(format!("caps: {e}")))?;
    if info.format() != gst_video::VideoFormat::Rgb {
        return Err(PipelineError::Gst(format!(
            "the appsink must receive RGB, it got {:?}",
            info.format()
        )));
    }
    let buffer = sample
        .buffer()
        .ok_or_else(|| PipelineError::Gst("sample without buffer".into()))?;
    let map = buffer
        .map_readable()
        .map_err(|e| PipelineError::Gst(e.to_string()))?;
    let stride = info.stride()[0] as usize;
    let (w, h) = (info.width(), info.height());
    let pts = buffer
        .pts()
        .map(|t| Duration::from_nanos(t.nseconds()))
        .unwrap_or_default();
    frame_from_bytes(w, h, stride, pts, seq, map.as_slice())
}

/// A frame from raw RGB rows (`stride` bytes apart), checked against the buffer's length.
pub fn frame_from_bytes(
    w: u32,
    h: u32,
    stride: usize,
    pts: Duration,
    seq: u64,
    bytes: &[u8],
) -> Result<Frame, PipelineError> {
    if w == 0 || h == 0 || w > 16384 || h > 16384 || stride < w as usize * 3 {
        return Err(PipelineError::Gst(format!(
            "unusable frame geometry {w}x{h} (stride {stride})"
        )));
    }
    let need = stride * (h as usize - 1) + w as usize * 3;
    if bytes.len() < need {
        return Err(PipelineError::Gst(format!(
            "RGB buffer of {} bytes is too small for {w}x{h}",
            bytes.len()
        )));
    }
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(Frame {
        width: w,
        height: h,
        stride,
        data: std::sync::Arc::new(bytes[..need.max(stride * h as usize).min(bytes.len())].to_vec()),
        pts,
        seq,
        wall_ms,
    })
}

/// Seconds into a clip as a GStreamer time, refused when it is not a time a clip can have.
pub fn start_time(seconds: f64) -> Result<gst::ClockTime, PipelineError> {
    // a day is far past any clip a camera plays, and far inside what a ClockTime can hold
    if !(seconds.is_finite() && (0.0..=86_400.0).contains(&seconds)) {
        return Err(PipelineError::Invalid(format!(
            "start_s must be seconds from 0 to 86400, found {seconds}"
        )));
    }
    Ok(gst::ClockTime::from_nseconds((seconds * 1e9) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(url: &str) -> PipelineParams {
        PipelineParams {
            url: url.into(),
            transport: RtspTransport::Tcp,
            latency_ms: 150,
            fps: Some(5),
            width: Some(641),
            realtime: false,
            decoder_threads: 0,
        }
    }

    fn names(p: &gst::Pipeline) -> Vec<String> {
        let mut v: Vec<String> = p
            .iterate_elements()
            .into_iter()
            .flatten()
            .map(|e| {
                e.factory()
                    .map(|f| f.name().to_string())
                    .unwrap_or_default()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn each_kind_builds_its_chain_and_values_stay_values() {
        gst::init().unwrap();
        let (p, _) = build(
            &params("rtsp://h/a\"!filesink_location=/tmp/x_name=y"),
            Some("u"),
            Some("p"),
        )
        .unwrap();
        let src = p.by_name("src").unwrap();
        assert_eq!(
            src.property::<Option<String>>("location").as_deref(),
            Some("rtsp://h/a\"!filesink_location=/tmp/x_name=y")
        );
        assert_eq!(
            src.property::<Option<String>>("user-pw").as_deref(),
            Some("p")
        );
        assert!(
            !names(&p).iter().any(|n| n == "filesink"),
            "{:?}",
            names(&p)
        );
        let size = p.by_name("size").unwrap().property::<gst::Caps>("caps");
        assert_eq!(size.structure(0).unwrap().get::<i32>("width").unwrap(), 640);
        let (p, _) = build(&params("test:ball"), None, None).unwrap();
        assert!(names(&p).iter().any(|n| n == "videotestsrc"));
        let e = build(&params("test:nosuchpattern"), None, None).unwrap_err();
        assert!(e.to_string().contains("smpte"), "{e}");
    }

    /// `decoder_threads` reaches the libav decoder that decodebin picks for a real H.264 file.
    #[test]
    fn the_software_decoder_gets_the_configured_threads() {
        gst::init().unwrap();
        let clip = crate::paths::media("vtest-h264.mp4");
        for threads in [0u32, 1, 3] {
            let mut p = params(&format!("file://{}", clip.display()));
            p.decoder_threads = threads;
            let (pipeline, sink) = build(&p, None, None).unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(20));
            assert!(sample.is_some(), "no frame from {}", clip.display());
            let dec = pipeline
                .by_name("decode")
                .and_then(|d| d.downcast::<gst::Bin>().ok())
                .unwrap()
                .iterate_recurse()
                .into_iter()
                .flatten()
                .find(|e| e.factory().is_some_and(|f| f.name() == "avdec_h264"))
                .expect("decodebin picked avdec_h264");
            assert_eq!(dec.property::<i32>("max-threads"), threads as i32);
            pipeline.set_state(gst::State::Null).unwrap();
        }
    }

    /// Every source kind, every text field with GStreamer syntax: the pipeline has exactly the
    /// elements of its kind, or the value is refused; never one more.
    #[test]
    fn no_camera_field_ever_adds_an_element() {
        gst::init().unwrap();
        let hostile = [
            "\" ! filesink location=/tmp/crosscam-injected name=x",
            "x ! filesink location=/tmp/crosscam-injected",
            "' ! fakesink '",
            "a\nfilesink location=/tmp/crosscam-injected",
            "name=src2 ! identity",
            "(x) ! queue ! filesink",
        ];
        for kind in KINDS {
            let expected: std::collections::BTreeSet<String> = required_elements(kind)
                .iter()
                .map(|s| s.to_string())
                .collect();
            for h in hostile {
                let url = match kind {
                    "file" => format!("file:///tmp/{h}"),
                    "rtsp" => format!("rtsp://127.0.0.1:9/{h}"),
                    "test" => format!("test:{h}"),
                    _ => format!("v4l2:///dev/video0{h}"),
                };
                for (user, pass) in [(None, None), (Some(h), Some(h))] {
                    match build(&params(&url), user, pass) {
                        Ok((p, _)) => {
                            let got: std::collections::BTreeSet<String> =
                                names(&p).into_iter().collect();
                            assert_eq!(got, expected, "{kind}: {url:?}");
                            let src = p.by_name("src").unwrap();
                            let prop = if kind == "file" || kind == "rtsp" {
                                "location"
                            } else {
                                "device"
                            };
                            if src.has_property(prop) {
                                let v = src.property::<Option<String>>(prop).unwrap_or_default();
                                assert!(url.contains(&v) || v.contains(h), "{kind}: {v:?}");
                            }
                        }
                        Err(e) => assert!(
                            matches!(e, PipelineError::Invalid(_)),
                            "{kind}: {url:?} refused with {e}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn start_times_out_of_range_are_errors_not_panics() {
        assert!(start_time(1e11).is_err());
        assert!(start_time(f64::NAN).is_err());
        assert!(start_time(-1.0).is_err());
        assert_eq!(start_time(1.5).unwrap().mseconds(), 1500);
    }
}
