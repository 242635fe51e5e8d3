//! The parent's side of a camera process ([`super::worker`]): starts `crosscam camera-worker` with
//! a scrubbed environment, hands it the camera's spec, reads its frames and events, and tells how
//! it ended when it dies (exit code or signal, and the last lines it wrote to standard error,
//! where GStreamer's own fatal messages go).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use super::worker::{self, Message, WorkerEvent, WorkerSpec};

/// Called with each frame: (width, height, stride, pts in ns, RGB rows).
pub type FrameSink = Box<dyn FnMut(u32, u32, usize, u64, &[u8]) + Send>;

/// Lines of a camera process's standard error kept to explain its death.
const STDERR_TAIL: usize = 6;

/// The program that runs camera processes: `CROSSCAM_WORKER`, else this program when it is
/// `crosscam`, else the `crosscam` binary beside it or one folder up (test binaries live in
/// `target/<profile>/deps/`, the binary in `target/<profile>/`).
pub fn worker_exe() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CROSSCAM_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "crosscam") {
        return Ok(me);
    }
    for dir in me.ancestors().skip(1).take(2) {
        let c = dir.join("crosscam");
        if c.is_file() {
            return Ok(c);
        }
    }
    anyhow::bail!(
        "cannot find the crosscam program to run camera processes (next to {}); set CROSSCAM_WORKER to its path",
        me.display()
    )
}

/// Environment variables a camera process keeps: GStreamer's and the locale's, nothing else (the
/// daemon's secrets never reach code that parses hostile streams).
fn kept(name: &str) -> bool {
    const EXACT: [&str; 10] = [
        "HOME",
        "PATH",
        "LANG",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "G_MESSAGES_DEBUG",
        "G_DEBUG",
    ];
    EXACT.contains(&name)
        || ["GST_", "ORC_", "LC_", "XDG_"]
            .iter()
            .any(|p| name.starts_with(p))
}

pub struct CameraProcess {
    camera: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    events_tx: Option<Sender<WorkerEvent>>,
    events_rx: Option<Receiver<WorkerEvent>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    threads: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl CameraProcess {
    /// Starts `worker camera-worker` and sends it `spec`.
    pub fn spawn(worker: &Path, spec: &WorkerSpec, camera: &str) -> Result<CameraProcess, String> {
        let mut cmd = Command::new(worker);
        // the camera id on the command line tells `ps` which camera a process serves
        cmd.args(["camera-worker", "--camera", camera])
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(kept)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child when
        // the thread that started it (this camera's thread) ends, so no camera process outlives
        // its camera, even when the daemon is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the camera process {}: {e}", worker.display()))?;
        let mut stdin = child.stdin.take();
        let line = serde_json::to_string(spec).map_err(|e| e.to_string())? + "\n";
        if let Some(i) = stdin.as_mut() {
            // a process that died at once shows up as its exit reason below
            let _ = i.write_all(line.as_bytes()).and_then(|_| i.flush());
        }
        let stderr_tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let mut threads = Vec::new();
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            let cam = camera.to_string();
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let line: String = line.chars().take(500).collect();
                    warn!(camera = %cam, line = %line, "camera process says");
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }));
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(CameraProcess {
            camera: camera.to_string(),
            stdout: child.stdout.take(),
            child,
            stdin,
            events_tx: Some(tx),
            events_rx: Some(rx),
            stderr_tail,
            threads,
            status: None,
        })
    }

    /// The process's events; disconnected once it exited (or sent something unreadable).
    pub fn take_events(&mut self) -> Receiver<WorkerEvent> {
        self.events_rx
            .take()
            .unwrap_or_else(crossbeam_channel::never)
    }

    /// Starts reading the process's output: frames go to `sink`, events to [`Self::take_events`].
    pub fn on_frame(&mut self, mut sink: FrameSink) {
        let (Some(mut out), Some(tx)) = (self.stdout.take(), self.events_tx.take()) else {
            return;
        };
        let cam = self.camera.clone();
        let pid = self.child.id() as i32;
        self.threads.push(std::thread::spawn(move || {
            let mut r = std::io::BufReader::with_capacity(1 << 20, &mut out);
            loop {
                match worker::read_message(&mut r) {
                    Ok(Some(Message::Frame {
                        width,
                        height,
                        stride,
                        pts_ns,
                        data,
                    })) => sink(width, height, stride, pts_ns, &data),
                    Ok(Some(Message::Event(e))) => {
                        if tx.send(e).is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    // a message cut short: the process ended while writing it (an abort in
                    // another of its threads); its exit status says how, so it is not killed
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => {
                        // a process that speaks nonsense is not trusted further
                        warn!(camera = %cam, error = %e, "camera process sent garbage: stopping it");
                        // SAFETY: kill(2) on our own child's pid
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                        break;
                    }
                }
            }
        }));
    }

    /// Asks the process to seek back to the start; false when it can no longer be asked.
    pub fn rewind(&mut self) -> bool {
        self.stdin
            .as_mut()
            .is_some_and(|i| i.write_all(b"rewind\n").and_then(|_| i.flush()).is_ok())
    }

    pub fn has_exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    fn wait_for(&mut self, d: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + d;
        while !self.has_exited() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.status
    }

    /// How the process ended, in words: "was killed by signal 6 (SIGABRT); it said: …".
    pub fn exit_reason(&mut self) -> String {
        let how = match self.wait_for(Duration::from_secs(2)) {
            Some(s) => describe(s),
            None => "stopped sending anything".to_string(),
        };
        // give the stderr reader a moment to take the last lines
        std::thread::sleep(Duration::from_millis(50));
        let tail: Vec<String> = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| !l.trim().is_empty())
            .cloned()
            .collect();
        match tail.last() {
            Some(last) => format!("{how}; its last words: {last}"),
            None => how,
        }
    }

    /// Stops the process: closes its input (it sets its pipeline to NULL and exits), then kills
    /// it if it has not exited within 2 s.
    pub fn stop(&mut self) {
        self.stdin = None;
        if self.wait_for(Duration::from_secs(2)).is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for CameraProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Probes a file in a camera process of its own (`camera-worker --probe`): `Ok` when a file
/// camera can play it, else what it is instead (a still image, text, no video stream, or that
/// probing it crashed the decoder).
pub fn probe_file(worker: &Path, path: &Path) -> Result<(), String> {
    if !path.is_file() {
        return Err("it does not exist or is not a regular file".into());
    }
    let mut child = Command::new(worker)
        .args(["camera-worker", "--probe"])
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(kept)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the probe {}: {e}", worker.display()))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = writeln!(i, "{}", path.display());
    }
    let out = child.stdout.take();
    let err = child.stderr.take();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut o) = out {
            let _ = std::io::Read::read_to_string(&mut o, &mut text);
        }
        let mut e = String::new();
        if let Some(mut r) = err {
            let _ = std::io::Read::read_to_string(&mut r, &mut e);
        }
        let _ = tx.send((text, e));
    });
    let (text, stderr) = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(x) => x,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err("probing it took over 20 s".into());
        }
    };
    let status = child.wait().map_err(|e| e.to_string())?;
    match serde_json::from_str::<worker::ProbeReport>(text.trim()) {
        Ok(report) => report.verdict(),
        Err(_) => {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!(
                "probing it crashed the decoder (the probe {}{})",
                describe(status),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; its last words: {}",
                        last.chars().take(300).collect::<String>()
                    )
                }
            ))
        }
    }
}

/// "exited with code 1", "was killed by signal 6 (SIGABRT)".
pub fn describe(s: ExitStatus) -> String {
    if let Some(sig) = s.signal() {
        let name = match sig {
            libc::SIGABRT => "SIGABRT: an element aborted",
            libc::SIGSEGV => "SIGSEGV: a crash",
            libc::SIGBUS => "SIGBUS: a crash",
            libc::SIGFPE => "SIGFPE: a crash",
            libc::SIGILL => "SIGILL: a crash",
            libc::SIGKILL => "SIGKILL",
            libc::SIGTERM => "SIGTERM",
            _ => "signal",
        };
        format!("was killed by signal {sig} ({name})")
    } else {
        match s.code() {
            Some(0) => "exited".to_string(),
            Some(c) => format!("exited with code {c}"),
            None => "ended".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gstreamer_and_locale_variables_reach_camera_processes() {
        for k in ["GST_DEBUG", "HOME", "LC_ALL", "XDG_CACHE_HOME", "PATH"] {
            assert!(kept(k), "{k}");
        }
        for k in [
            "AWS_SECRET_ACCESS_KEY",
            "CROSSCAM_CAM_PASS",
            "CROSSCAM_DEMO_PASSWORD",
            "DATABASE_URL",
        ] {
            assert!(!kept(k), "{k}");
        }
    }

    #[test]
    fn exit_reasons_are_in_words() {
        assert!(describe(ExitStatus::from_raw(6)).contains("SIGABRT"));
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exited with code 1");
    }
}
