//! Reading every frame of a video file in order, for offline tools (`crosscam detect`,
//! `crosscam track`, dataset building): the same pipeline as a file camera, but no frame is dropped and
//! the file is read as fast as the consumer takes frames.

use std::path::Path;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::pipeline::{self, PipelineParams};
use crate::config::RtspTransport;
use crate::frame::Frame;

pub struct VideoReader {
    path: std::path::PathBuf,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    seq: u64,
    done: bool,
}

impl VideoReader {
    /// Opens `path`; `fps` keeps that many frames per second of video (None = every frame);
    /// `width` scales frames (None = source size).
    pub fn open(path: &Path, fps: Option<u32>, width: Option<u32>) -> anyhow::Result<VideoReader> {
        VideoReader::open_from(path, fps, width, std::time::Duration::ZERO)
    }

    /// Like [`VideoReader::open`], starting at `start` (an accurate seek; frame times stay the
    /// times in the file).
    pub fn open_from(
        path: &Path,
        fps: Option<u32>,
        width: Option<u32>,
        start: std::time::Duration,
    ) -> anyhow::Result<VideoReader> {
        gst::init()?;
        anyhow::ensure!(
            path.is_file(),
            "video file {} does not exist",
            path.display()
        );
        let params = PipelineParams {
            url: format!("file://{}", path.display()),
            transport: RtspTransport::Auto,
            latency_ms: 0,
            fps,
            width,
            realtime: false,
            decoder_threads: 0,
        };
        let (pipeline, sink) = pipeline::build(&params, None, None)?;
        // lossless: the appsink blocks the pipeline instead of dropping frames
        sink.set_drop(false);
        sink.set_max_buffers(4);
        sink.set_sync(false);
        let target = if start.is_zero() {
            gst::State::Playing
        } else {
            gst::State::Paused
        };
        pipeline.set_state(target).map_err(|e| {
            let detail = pipeline
                .bus()
                .and_then(|b| {
                    b.timed_pop_filtered(
                        gst::ClockTime::from_mseconds(500),
                        &[gst::MessageType::Error],
                    )
                })
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(err) => Some(err.error().to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| e.to_string());
            anyhow::anyhow!("cannot play {}: {detail}", path.display())
        })?;
        if !start.is_zero() {
            // seeking needs the pipeline prerolled
            let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
            res.map_err(|_| anyhow::anyhow!("cannot open {} for seeking", path.display()))?;
            pipeline
                .seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                    gst::ClockTime::from_nseconds(start.as_nanos() as u64),
                )
                .map_err(|e| {
                    anyhow::anyhow!("cannot seek {} to {:?}: {e}", path.display(), start)
                })?;
            pipeline
                .set_state(gst::State::Playing)
                .map_err(|e| anyhow::anyhow!("cannot play {}: {e}", path.display()))?;
        }
        Ok(VideoReader {
            path: path.to_path_buf(),
            pipeline,
            sink,
            seq: 0,
            done: false,
        })
    }

    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(m) = bus.pop() {
            if let gst::MessageView::Error(err) = m.view() {
                return Some(format!(
                    "{} ({})",
                    err.error(),
                    err.debug().map(|d| d.to_string()).unwrap_or_default()
                ));
            }
        }
        None
    }
}

impl Iterator for VideoReader {
    type Item = anyhow::Result<Frame>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // an error (unreadable or corrupt file) stops the pipeline without an end-of-stream, so a
        // blocking pull would wait forever: poll, and look at the bus between polls
        loop {
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                let f = pipeline::frame_from_sample(&sample, self.seq).map_err(anyhow::Error::from);
                self.seq += 1;
                return Some(f);
            }
            if let Some(e) = self.bus_error() {
                self.done = true;
                return Some(Err(anyhow::anyhow!(
                    "{}: decoding failed after {} frames: {e}",
                    self.path.display(),
                    self.seq
                )));
            }
            if self.sink.is_eos() {
                self.done = true;
                return None;
            }
        }
    }
}

impl Drop for VideoReader {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
