//! The camera process: each camera's GStreamer pipeline runs in a child process of its own
//! (`crosscam camera-worker`, started by [`super::camera`]), so an element that aborts or crashes
//! on a hostile stream or file takes down that camera only. The parent restarts it with back-off
//! and reports why it died.
//!
//! Protocol, over the child's standard input and output:
//! - parent → child: one JSON line, the [`WorkerSpec`]; then command lines: `rewind`. Closing the
//!   child's standard input asks it to stop (it sets its pipeline to NULL and exits).
//! - child → parent: messages of `tag: u8, len: u32 LE, payload`: `F` a frame
//!   (`width u32, height u32, stride u32, pts_ns u64`, then the RGB rows), `E` an event as JSON
//!   ([`WorkerEvent`]).
//!
//! The child also runs the file probe (`crosscam camera-worker --probe`): a hostile file crashes
//! the probe, not the daemon.

use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use serde::{Deserialize, Serialize};

use super::pipeline::{self, PipelineParams};

/// What the camera process runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub params: PipelineParams,
    /// Files: seconds into the clip to start at.
    pub start_s: Option<f64>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// What to call the source in messages (a redacted URL, "file PATH", "device PATH").
    pub what: String,
}

/// How a failure should be retried (mirrors [`super::supervisor::Failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    Unauthorized,
    NotFound,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// The pipeline is playing.
    Playing,
    Eos,
    Error {
        failure: FailureKind,
        message: String,
    },
    /// A `rewind` could not seek (some demuxers cannot): the parent rebuilds instead.
    RewindFailed,
}

pub const TAG_FRAME: u8 = b'F';
pub const TAG_EVENT: u8 = b'E';
/// Largest message the parent accepts (a 16384×16384 RGB frame is 805 MB; 256 MB covers 8K).
pub const MAX_MESSAGE: usize = 256 << 20;

/// Standard output, shared by the streaming thread (frames) and the bus loop (events).
#[derive(Clone)]
struct Out(Arc<Mutex<std::io::BufWriter<std::fs::File>>>);

impl Out {
    fn send(&self, tag: u8, parts: &[&[u8]]) -> std::io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut o = self.0.lock().unwrap_or_else(|e| e.into_inner());
        o.write_all(&[tag])?;
        o.write_all(&(len as u32).to_le_bytes())?;
        for p in parts {
            o.write_all(p)?;
        }
        o.flush()
    }
    fn event(&self, e: &WorkerEvent) {
        let json = serde_json::to_vec(e).unwrap_or_default();
        if self.send(TAG_EVENT, &[&json]).is_err() {
            // the parent is gone
            std::process::exit(0);
        }
    }
}

/// Turns a pipeline error message into what an integrator can act on.
pub fn explain(
    what: &str,
    err: &gst::glib::Error,
    debug: &str,
    element: &str,
) -> (FailureKind, String) {
    use gst::ResourceError as R;
    let text = format!("{} {}", err.message(), debug).to_ascii_lowercase();
    let raw = err.message();
    let kind = match err.kind::<R>() {
        Some(R::NotAuthorized) => FailureKind::Unauthorized,
        Some(R::NotFound) => FailureKind::NotFound,
        Some(R::OpenRead)
            if text.contains("no such file") || text.contains("could not open file") =>
        {
            FailureKind::NotFound
        }
        _ if text.contains("401") || text.contains("unauthorized") => FailureKind::Unauthorized,
        _ if text.contains("404") || text.contains("not found") => FailureKind::NotFound,
        _ => FailureKind::Other,
    };
    let rtsp = what.starts_with("rtsp");
    let plain = match kind {
        FailureKind::Unauthorized if rtsp => {
            "RTSP 401: the camera refused the user name or password (check the camera's credential)".to_string()
        }
        FailureKind::NotFound if rtsp => {
            "RTSP 404: the camera has no stream at this path (check the URL's path)".to_string()
        }
        FailureKind::NotFound => "not found (check the path)".to_string(),
        _ if rtsp
            && (matches!(err.kind::<R>(), Some(R::OpenReadWrite) | Some(R::OpenRead))
                || text.contains("connection refused")
                || text.contains("could not connect")) =>
        {
            "cannot connect: nothing answers at this host and port (connection refused or host unreachable; is the camera on, the port right?)".to_string()
        }
        _ if text.contains("connection refused") || text.contains("could not connect") => {
            "connection refused: nothing answers at this host and port (is the camera on, the port right?)".to_string()
        }
        _ if text.contains("timeout") || text.contains("timed out") => {
            "no answer from the camera (timed out): check the host and the network".to_string()
        }
        _ if text.contains("no such device") => "no such device".to_string(),
        _ => raw.trim_end_matches('.').to_string(),
    };
    let elem = element.rsplit('/').next().unwrap_or(element);
    (kind, format!("{what}: {plain} ({raw} in {elem})"))
}

/// The parent's pipe, moved off standard output: the messages get a descriptor of their own and
/// standard output becomes standard error, so whatever a library prints there (GLib writes its
/// informational messages to standard output) joins the process's last words instead of
/// corrupting the frames.
fn protocol_channel() -> anyhow::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: fcntl/dup2 on the process's own standard descriptors; the new descriptor is owned
    // by the returned File alone.
    unsafe {
        let fd = libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3);
        if fd < 0 {
            anyhow::bail!(
                "cannot duplicate standard output: {}",
                std::io::Error::last_os_error()
            );
        }
        if libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) < 0 {
            anyhow::bail!(
                "cannot point standard output at standard error: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

fn read_spec() -> anyhow::Result<WorkerSpec> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(serde_json::from_str(&line)?)
}

/// `crosscam camera-worker`: runs one camera's pipeline until the parent closes standard input.
pub fn run() -> anyhow::Result<()> {
    let spec = read_spec()?;
    let out = Out(Arc::new(Mutex::new(std::io::BufWriter::with_capacity(
        1 << 16,
        protocol_channel()?,
    ))));
    gst::init()?;
    let (pipe, sink) =
        match pipeline::build(&spec.params, spec.user.as_deref(), spec.password.as_deref()) {
            Ok(x) => x,
            Err(e) => {
                out.event(&WorkerEvent::Error {
                    failure: FailureKind::Other,
                    message: format!("{}: {e}", spec.what),
                });
                return Ok(());
            }
        };
    install_sink(&sink, out.clone());
    let bus = pipe
        .bus()
        .ok_or_else(|| anyhow::anyhow!("pipeline without a bus"))?;
    let what = spec.what.clone();
    let report = |msg: &gst::message::Error| {
        let debug = msg.debug().map(|d| d.to_string()).unwrap_or_default();
        let src = msg
            .src()
            .map(|s| s.path_string().to_string())
            .unwrap_or_default();
        let (failure, message) = explain(&what, &msg.error(), &debug, &src);
        out.event(&WorkerEvent::Error { failure, message });
    };
    if let Some(t) = spec.start_s.filter(|t| *t > 0.0) {
        // a file camera that starts into its clip: preroll, then an accurate seek
        let at = pipeline::start_time(t);
        let _ = pipe.set_state(gst::State::Paused);
        let (res, _, _) = pipe.state(gst::ClockTime::from_seconds(10));
        let sought = match at {
            Ok(at) => {
                res.is_ok()
                    && pipe
                        .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, at)
                        .is_ok()
            }
            Err(_) => false,
        };
        if !sought {
            eprintln!("cannot start the file at start_s = {t}: playing it from the beginning");
        }
    }
    if pipe.set_state(gst::State::Playing).is_err() {
        // the reason follows on the bus
        if let Some(m) =
            bus.timed_pop_filtered(gst::ClockTime::from_seconds(2), &[gst::MessageType::Error])
            && let gst::MessageView::Error(e) = m.view()
        {
            report(e);
        } else {
            out.event(&WorkerEvent::Error {
                failure: FailureKind::Other,
                message: format!("{}: the pipeline cannot start", spec.what),
            });
        }
    } else {
        out.event(&WorkerEvent::Playing);
    }
    // commands from the parent; end of input = stop
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if cmd_tx.send(l).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
    });
    loop {
        match cmd_rx.try_recv() {
            Ok(cmd) if cmd.trim() == "rewind" => {
                let ok = pipe
                    .seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT,
                        gst::ClockTime::ZERO,
                    )
                    .is_ok();
                if !ok {
                    out.event(&WorkerEvent::RewindFailed);
                }
            }
            Ok(_) => {}
            Err(crossbeam_channel::TryRecvError::Empty) => {}
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) {
            match msg.view() {
                gst::MessageView::Eos(_) => out.event(&WorkerEvent::Eos),
                gst::MessageView::Error(e) => report(e),
                _ => {}
            }
        }
    }
    let _ = pipe.set_state(gst::State::Null);
    Ok(())
}

fn install_sink(sink: &gst_app::AppSink, out: Out) {
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(caps) = sample.caps() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let Ok(map) = buffer.map_readable() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let pts = buffer.pts().map(|t| t.nseconds()).unwrap_or(0);
                let mut head = [0u8; 20];
                head[0..4].copy_from_slice(&info.width().to_le_bytes());
                head[4..8].copy_from_slice(&info.height().to_le_bytes());
                head[8..12].copy_from_slice(&(info.stride()[0] as u32).to_le_bytes());
                head[12..20].copy_from_slice(&pts.to_le_bytes());
                if out.send(TAG_FRAME, &[&head, map.as_slice()]).is_err() {
                    // the parent is gone: nothing to deliver to
                    return Err(gst::FlowError::Flushing);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}

/// One message read from a camera process.
pub enum Message {
    Frame {
        width: u32,
        height: u32,
        stride: usize,
        pts_ns: u64,
        data: Vec<u8>,
    },
    Event(WorkerEvent),
}

/// Reads the next message; `Ok(None)` at the end of the stream (the process exited).
pub fn read_message(r: &mut impl Read) -> std::io::Result<Option<Message>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    if len > MAX_MESSAGE {
        return Err(bad(format!("camera process sent a {len}-byte message")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    match head[0] {
        TAG_FRAME if len >= 20 => {
            let u32_at = |i: usize| {
                u32::from_le_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]])
            };
            let (width, height, stride) = (u32_at(0), u32_at(4), u32_at(8) as usize);
            let mut pts = [0u8; 8];
            pts.copy_from_slice(&payload[12..20]);
            payload.drain(..20);
            Ok(Some(Message::Frame {
                width,
                height,
                stride,
                pts_ns: u64::from_le_bytes(pts),
                data: payload,
            }))
        }
        TAG_EVENT => serde_json::from_slice(&payload)
            .map(|e| Some(Message::Event(e)))
            .map_err(|e| bad(format!("camera process sent an unreadable event: {e}"))),
        t => Err(bad(format!(
            "camera process sent an unknown message tag {t}"
        ))),
    }
}

/// What the probe found in a file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeReport {
    /// The container or stream type found by typefinding (`video/x-msvideo`, `image/jpeg`, …).
    pub container: Option<String>,
    /// The caps name of each decoded stream (`video/x-raw`, `audio/x-raw`).
    pub streams: Vec<String>,
    /// The frame rate of the first video stream, as (numerator, denominator).
    pub framerate: Option<(i32, i32)>,
    pub error: Option<String>,
}

impl ProbeReport {
    /// `Ok` when this is a video a file camera can play; else what it is instead, in words.
    pub fn verdict(&self) -> Result<(), String> {
        let container = self.container.as_deref().unwrap_or("");
        if container.starts_with("image/") {
            return Err(format!("it is a still image ({container}), not a video"));
        }
        if container.starts_with("text/") || container.starts_with("application/x-executable") {
            return Err(format!("it is not a video ({container})"));
        }
        if let Some(e) = &self.error
            && !self.streams.iter().any(|s| s.starts_with("video/"))
        {
            return Err(format!("it cannot be read as a video: {e}"));
        }
        if !self.streams.iter().any(|s| s.starts_with("video/")) {
            return Err(if self.streams.is_empty() {
                format!(
                    "no stream could be decoded from it ({})",
                    if container.is_empty() {
                        "unknown type"
                    } else {
                        container
                    }
                )
            } else {
                format!(
                    "it has no video stream (streams: {})",
                    self.streams.join(", ")
                )
            });
        }
        if matches!(self.framerate, Some((0, _))) {
            return Err(
                "it is a still image (a video stream of one frame, frame rate 0), not a video"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `crosscam camera-worker --probe`: reads a path from standard input, prerolls
/// `filesrc ! typefind ! decodebin` with a fake sink per stream, prints a [`ProbeReport`].
pub fn probe() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let path = line.trim_end_matches('\n');
    gst::init()?;
    let report = probe_path(std::path::Path::new(path));
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// What typefinding found, and each decoded stream's caps name and frame rate.
type Found = (Option<String>, Vec<(String, Option<(i32, i32)>)>);

fn probe_path(path: &std::path::Path) -> ProbeReport {
    let mut r = ProbeReport {
        container: None,
        streams: Vec::new(),
        framerate: None,
        error: None,
    };
    let built = (|| -> Result<(gst::Pipeline, gst::Element), String> {
        let p = gst::Pipeline::new();
        let mk = |f: &str| {
            gst::ElementFactory::make(f)
                .build()
                .map_err(|e| format!("{f}: {e}"))
        };
        let src = mk("filesrc")?;
        src.set_property("location", path.to_string_lossy().as_ref());
        let find = mk("typefind")?;
        let dec = mk("decodebin")?;
        p.add_many([&src, &find, &dec]).map_err(|e| e.to_string())?;
        gst::Element::link_many([&src, &find, &dec]).map_err(|e| e.to_string())?;
        Ok((p, find))
    })();
    let (p, find) = match built {
        Ok(x) => x,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    let found: Arc<Mutex<Found>> = Arc::default();
    let f2 = found.clone();
    find.connect("have-type", false, move |args| {
        if let Some(caps) = args.get(2).and_then(|v| v.get::<gst::Caps>().ok())
            && let Some(s) = caps.structure(0)
        {
            f2.lock().unwrap_or_else(|e| e.into_inner()).0 = Some(s.name().to_string());
        }
        None
    });
    let dec = p
        .iterate_elements()
        .into_iter()
        .flatten()
        .find(|e| e.factory().is_some_and(|f| f.name() == "decodebin"));
    if let Some(dec) = dec {
        let f3 = found.clone();
        let pw = p.downgrade();
        dec.connect_pad_added(move |_, pad| {
            let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
            let (name, rate) = caps
                .structure(0)
                .map(|s| {
                    let rate = s
                        .get::<gst::Fraction>("framerate")
                        .ok()
                        .map(|f| (f.numer(), f.denom()));
                    (s.name().to_string(), rate)
                })
                .unwrap_or_default();
            f3.lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .push((name, rate));
            if let (Some(p), Ok(sink)) =
                (pw.upgrade(), gst::ElementFactory::make("fakesink").build())
            {
                let _ = p.add(&sink);
                let _ = sink.sync_state_with_parent();
                if let Some(sp) = sink.static_pad("sink") {
                    let _ = pad.link(&sp);
                }
            }
        });
    }
    let _ = p.set_state(gst::State::Paused);
    let bus = p.bus();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while let Some(bus) = &bus {
        if std::time::Instant::now() > deadline {
            r.error = Some("it did not preroll within 8 s".into());
            break;
        }
        let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        match m.view() {
            gst::MessageView::AsyncDone(_) => break,
            gst::MessageView::Error(e) => {
                r.error = Some(e.error().message().to_string());
                break;
            }
            _ => {}
        }
    }
    let _ = p.set_state(gst::State::Null);
    let g = found.lock().unwrap_or_else(|e| e.into_inner());
    r.container = g.0.clone();
    r.streams = g.1.iter().map(|(n, _)| n.clone()).collect();
    r.framerate =
        g.1.iter()
            .find(|(n, _)| n.starts_with("video/"))
            .and_then(|(_, f)| *f);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_hostile_lengths_are_refused() {
        let mut buf = Vec::new();
        let json = serde_json::to_vec(&WorkerEvent::Error {
            failure: FailureKind::NotFound,
            message: "x".into(),
        })
        .unwrap();
        buf.push(TAG_EVENT);
        buf.extend((json.len() as u32).to_le_bytes());
        buf.extend(&json);
        let mut head = vec![0u8; 20];
        head[0..4].copy_from_slice(&2u32.to_le_bytes());
        head[4..8].copy_from_slice(&1u32.to_le_bytes());
        head[8..12].copy_from_slice(&6u32.to_le_bytes());
        head.extend([1, 2, 3, 4, 5, 6]);
        buf.push(TAG_FRAME);
        buf.extend((head.len() as u32).to_le_bytes());
        buf.extend(&head);
        let mut r = std::io::Cursor::new(buf);
        assert!(matches!(
            read_message(&mut r).unwrap(),
            Some(Message::Event(WorkerEvent::Error {
                failure: FailureKind::NotFound,
                ..
            }))
        ));
        match read_message(&mut r).unwrap() {
            Some(Message::Frame {
                width: 2,
                height: 1,
                stride: 6,
                data,
                ..
            }) => assert_eq!(data, vec![1, 2, 3, 4, 5, 6]),
            _ => panic!("frame expected"),
        }
        assert!(read_message(&mut r).unwrap().is_none());
        let mut huge = vec![TAG_FRAME];
        huge.extend(u32::MAX.to_le_bytes());
        assert!(read_message(&mut std::io::Cursor::new(huge)).is_err());
        let mut unknown = vec![b'Z'];
        unknown.extend(0u32.to_le_bytes());
        assert!(read_message(&mut std::io::Cursor::new(unknown)).is_err());
    }

    #[test]
    fn probe_verdicts_name_what_the_file_is() {
        let still = ProbeReport {
            container: Some("image/jpeg".into()),
            streams: vec!["video/x-raw".into()],
            framerate: Some((0, 1)),
            error: None,
        };
        assert!(still.verdict().unwrap_err().contains("still image"));
        let text = ProbeReport {
            container: Some("text/plain".into()),
            streams: vec![],
            framerate: None,
            error: Some("no decoder".into()),
        };
        assert!(text.verdict().unwrap_err().contains("text/plain"));
        let audio = ProbeReport {
            container: Some("audio/x-wav".into()),
            streams: vec!["audio/x-raw".into()],
            framerate: None,
            error: None,
        };
        assert!(audio.verdict().unwrap_err().contains("no video stream"));
        let video = ProbeReport {
            container: Some("video/x-msvideo".into()),
            streams: vec!["video/x-raw".into()],
            framerate: Some((10, 1)),
            error: None,
        };
        assert!(video.verdict().is_ok());
    }
}
