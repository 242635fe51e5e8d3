//! Camera pipelines from the templates in `pipelines/`: fill the placeholders, build with
//! `gst::parse::launch`, find the `appsink` and turn its samples into [`Frame`]s (stride-aware).

use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::source::SourceUrl;
use crate::config::RtspTransport;
use crate::frame::Frame;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read the pipeline template {path}: {source}")]
    Template {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the pipeline from {template} does not parse: {msg} (pipeline: {text})")]
    Parse {
        template: String,
        msg: String,
        text: String,
    },
    #[error("the pipeline from {template} has no appsink named `sink`")]
    NoSink { template: String },
    #[error("GStreamer: {0}")]
    Gst(String),
}

/// Everything a template's placeholders can be filled with.
#[derive(Debug, Clone)]
pub struct PipelineParams {
    pub source: SourceUrl,
    pub transport: RtspTransport,
    pub latency_ms: u64,
    /// Frames per second kept before conversion; `None` keeps every frame.
    pub fps: Option<u32>,
    /// Scale to this width (height keeps the aspect ratio); `None` keeps the source size.
    pub width: Option<u32>,
    /// Files: play at the clip's own rate (true) or as fast as the consumer takes frames.
    pub realtime: bool,
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Fills a template's `{placeholders}`.
pub fn render(template: &str, p: &PipelineParams) -> String {
    let (location, pattern, device) = match &p.source {
        SourceUrl::Rtsp(u) => (u.clone(), String::new(), String::new()),
        SourceUrl::File(f) => (f.display().to_string(), String::new(), String::new()),
        SourceUrl::Test(pat) => (String::new(), pat.clone(), String::new()),
        SourceUrl::V4l2(d) => (String::new(), String::new(), d.display().to_string()),
    };
    let protocols = match p.transport {
        RtspTransport::Auto => "tcp+udp",
        RtspTransport::Tcp => "tcp",
        RtspTransport::Udp => "udp",
    };
    // videorate's max-rate is whole frames per second; a huge value keeps every frame
    let fps = p.fps.map(|f| f.max(1)).unwrap_or(1000);
    let scale_caps = p
        .width
        .map(|w| format!("width={},", w - w % 2))
        .unwrap_or_default();
    let sync = if p.realtime { "true" } else { "false" };
    let text: String = template
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    text.replace("{location}", &quote(&location))
        .replace("{protocols}", protocols)
        .replace("{latency}", &p.latency_ms.to_string())
        .replace("{pattern}", &pattern)
        .replace("{device}", &quote(&device))
        .replace("{fps}", &fps.to_string())
        .replace("{scale_caps}", &scale_caps)
        .replace("{sync}", sync)
}

/// Reads `pipelines/<kind>.pipeline`.
pub fn load_template(dir: &Path, kind: &str) -> Result<(String, String), PipelineError> {
    let path = dir.join(format!("{kind}.pipeline"));
    let text = std::fs::read_to_string(&path).map_err(|source| PipelineError::Template {
        path: path.display().to_string(),
        source,
    })?;
    Ok((path.display().to_string(), text))
}

/// Builds the pipeline (not started) and returns it with its appsink.
pub fn build(
    template_name: &str,
    text: &str,
) -> Result<(gst::Pipeline, gst_app::AppSink), PipelineError> {
    let element = gst::parse::launch(text).map_err(|e| PipelineError::Parse {
        template: template_name.to_string(),
        msg: e.to_string(),
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
    })?;
    let pipeline = element
        .downcast::<gst::Pipeline>()
        .map_err(|_| PipelineError::Parse {
            template: template_name.to_string(),
            msg: "it is a single element, not a pipeline".into(),
            text: text.to_string(),
        })?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| PipelineError::NoSink {
            template: template_name.to_string(),
        })?;
    Ok((pipeline, sink))
}

/// Sets RTSP credentials on the element named `src` (never written into the pipeline text, so
/// they do not end up in logs).
pub fn set_credentials(pipeline: &gst::Pipeline, user: Option<&str>, password: Option<&str>) {
    if let Some(src) = pipeline.by_name("src") {
        if let Some(u) = user {
            src.set_property("user-id", u);
        }
        if let Some(p) = password {
            src.set_property("user-pw", p);
        }
    }
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
    let need = stride * (h as usize - 1) + w as usize * 3;
    if map.len() < need {
        return Err(PipelineError::Gst(format!(
            "RGB buffer of {} bytes is too small for {w}x{h}",
            map.len()
        )));
    }
    let pts = buffer
        .pts()
        .map(|t| Duration::from_nanos(t.nseconds()))
        .unwrap_or_default();
    let wall_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(Frame {
        width: w,
        height: h,
        stride,
        data: std::sync::Arc::new(
            map.as_slice()[..need.max(stride * h as usize).min(map.len())].to_vec(),
        ),
        pts,
        seq,
        wall_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_quoted() {
        let t = "# comment\nrtspsrc name=src location=\"{location}\" protocols={protocols} latency={latency} ! videorate max-rate={fps} ! video/x-raw,{scale_caps}pixel-aspect-ratio=1/1 ! appsink name=sink sync={sync}";
        let p = PipelineParams {
            source: SourceUrl::Rtsp("rtsp://h/a\"b".into()),
            transport: RtspTransport::Tcp,
            latency_ms: 150,
            fps: Some(5),
            width: Some(641),
            realtime: false,
        };
        let r = render(t, &p);
        assert!(!r.contains('#'));
        assert!(r.contains("location=\"rtsp://h/a\\\"b\""), "{r}");
        assert!(
            r.contains("protocols=tcp latency=150") && r.contains("max-rate=5"),
            "{r}"
        );
        assert!(
            r.contains("video/x-raw,width=640,pixel-aspect-ratio=1/1"),
            "{r}"
        );
        assert!(r.ends_with("sync=false"), "{r}");
    }
}
