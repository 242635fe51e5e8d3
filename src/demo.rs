//! Running the server until Ctrl-C / SIGTERM: `crosscam serve` (events as JSON lines to a file
//! or stdout) and `crosscam demo` (the embedded default config, human-readable output).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::broadcast::error::TryRecvError;

use crate::config::Config;
use crate::events::Event;
use crate::server::Server;

/// What the demo shows, and what it does not prove: printed at its start.
pub const DEMO_NOTE: &str = "\
demo: two virtual cameras replay one street clip (vtest.avi): `entrance` as recorded, `plaza`
      30 s ahead, mirrored, zoomed in and colour-shifted, so the same people look different
      on the two cameras. The default embedder (crosscam-resnet18-vtest) was trained on about
      20 of the people in this clip (and evaluated on 21 others): links here are easier than
      on your site's footage. Re-tune on your own cameras (docs/retuning.md) before trusting it.";

/// Empties a demo data directory for a clean run, keeping only the decoded clip
/// (`virtual-cameras/`). Returns the number of people that were stored (0 when there was no
/// store). A directory that holds no crosscam store is left alone.
pub fn start_clean(data_dir: &Path) -> Result<u64> {
    let db = data_dir.join("crosscam.db");
    if !db.is_file() {
        return Ok(0);
    }
    let people =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM identities", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0)
            .max(0) as u64;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        if entry.file_name() == "virtual-cameras" {
            continue;
        }
        let p = entry.path();
        let r = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| {
            anyhow::anyhow!(
                "cannot clear {} for a clean demo: {e} (or run with --keep)",
                p.display()
            )
        })?;
    }
    Ok(people)
}

pub struct RunOptions<'a> {
    /// Write every event as a JSON line here (`-` = stdout).
    pub events: Option<&'a Path>,
    /// Stop after this long (None: until Ctrl-C / SIGTERM).
    pub seconds: Option<f64>,
    /// Print events and camera status for people (the demo).
    pub narrate: bool,
    /// Printed once the web UI listens (the demo's login).
    pub banner: Option<String>,
    /// The part of the pipeline this process runs (`crosscam serve --role`).
    pub role: crate::cluster::Role,
}

fn narrate(e: &Event) -> Option<String> {
    Some(match e {
        Event::CameraState {
            camera,
            state,
            detail,
            ..
        } => {
            format!(
                "[{camera}] {state}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(": {detail}")
                }
            )
        }
        Event::IdentityCreated {
            identity, camera, ..
        } => format!("[{camera}] new person #{identity}"),
        Event::IdentityLinked {
            identity,
            camera,
            similarity,
            uncertain,
            ..
        } => format!(
            "[{camera}] person #{identity} seen again (similarity {similarity:.2}{})",
            if *uncertain { ", uncertain" } else { "" }
        ),
        Event::IdentityMerged {
            kept,
            absorbed,
            reason,
            ..
        } => format!("persons #{absorbed} and #{kept} are one: {reason}"),
        Event::IdentityRetired { identity, .. } => {
            format!("person #{identity} retired (not seen for a long time)")
        }
        _ => return None,
    })
}

/// Runs the server on `cfg` until stopped.
pub fn run(cfg: &Config, opts: RunOptions) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    // a core serves only while it holds the site's core lease; until then it is a standby
    let mut active = match (opts.role, &cfg.cluster) {
        (crate::cluster::Role::Core, Some(settings)) => {
            match crate::cluster::failover::ActiveCore::acquire(
                settings,
                &cfg.server.data_dir,
                &stop,
            )? {
                Some(a) => Some(a),
                None => return Ok(()), // stopped while standing by
            }
        }
        _ => None,
    };
    let fence = active.as_ref().map(|a| a.fence.clone());
    let server = match Server::start_with(cfg, None, opts.role, fence.clone()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            if let Some(a) = &mut active {
                a.stop();
            }
            return Err(e);
        }
    };
    // subscribe before anything else takes time: the cameras are starting already
    let writer = opts
        .events
        .map(|p| crate::events::write_json_lines(&server.events, p))
        .transpose()?;
    let mut rx = server.events.subscribe();
    let api = if cfg.api.enabled {
        match crate::api::start(cfg, server.clone()) {
            Ok(a) => Some(a),
            Err(e) => {
                // the pipeline's threads are running: stop them before reporting
                if let Ok(s) = Arc::try_unwrap(server) {
                    s.shutdown();
                }
                if let Some(a) = &mut active {
                    a.stop();
                }
                return Err(e);
            }
        }
    } else {
        None
    };
    if let Some(a) = &api {
        // the demo talks to people on stdout (logs stay on stderr); `serve` keeps stdout for
        // its events (`--events -`)
        let line = format!(
            "web UI and API: {}/  (API document: {}/api/v1/openapi.json)",
            a.url(),
            a.url()
        );
        if opts.narrate {
            println!("{line}");
        } else {
            eprintln!("{line}");
        }
        if let Some(b) = &opts.banner {
            println!("{b}");
        }
    }
    tracing::info!(cameras = cfg.cameras.len(), data = %cfg.server.data_dir.display(), "crosscam running; Ctrl-C to stop");
    let start = Instant::now();
    let mut last_status = Instant::now();
    let mut watch = ConfigWatch::new(cfg);
    let deadline = opts.seconds.map(Duration::from_secs_f64);
    let mut lost = None;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| start.elapsed() < d) {
        if let Some(why) = fence.as_ref().and_then(|f| f.lost()) {
            lost = Some(why);
            break;
        }
        loop {
            match rx.try_recv() {
                Ok(e) => {
                    if opts.narrate
                        && let Some(line) = narrate(&e)
                    {
                        println!("{line}");
                    }
                }
                Err(TryRecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
        if last_status.elapsed() >= Duration::from_secs(if opts.narrate { 10 } else { 60 }) {
            last_status = Instant::now();
            let st = server.status();
            for c in &st.cameras {
                tracing::info!(camera = %c.id, state = %c.state, frames_in = c.frames_in, analysed = c.analysed, dropped = c.dropped, reconnects = c.reconnects, "camera");
            }
            tracing::info!(
                detect_ms_per_frame = format!("{:.1}", st.analysis.detect_ms_per_frame),
                embed_ms_per_crop = format!("{:.1}", st.reid.ms_per_crop),
                identities_created = st.link.created,
                linked = st.link.linked,
                uncertain = st.link.uncertain,
                "pipeline"
            );
        }
        if let Some(new) = watch.changed()
            && let Err(e) = server.apply_cameras(&new.cameras)
        {
            tracing::error!("cannot apply the edited cameras: {e:#}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("stopping: finishing open tracklets");
    if let Some(a) = api {
        a.stop();
    }
    let events = server.events.clone();
    match Arc::try_unwrap(server) {
        Ok(s) => s.shutdown(),
        Err(_) => tracing::error!("the server is still in use after the API stopped; not flushed"),
    }
    drop(events);
    // the consumer has stopped: give the lease to a standby
    if let Some(a) = &mut active {
        a.stop();
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    match lost {
        Some(why) => Err(anyhow::anyhow!(
            "{why}; this core stopped serving (start it again to stand by)"
        )),
        None => Ok(()),
    }
}

/// Watches the config file: when it is saved with other contents, the new cameras are applied
/// (added, changed, removed) without a restart. A file that does not parse is reported and
/// ignored (the running cameras stay); other sections need a restart, and say so.
struct ConfigWatch {
    path: Option<std::path::PathBuf>,
    modified: Option<std::time::SystemTime>,
    last_check: Instant,
    /// The config the daemon runs now.
    current: Config,
}

impl ConfigWatch {
    fn new(running: &Config) -> ConfigWatch {
        let path = running.source.clone();
        ConfigWatch {
            modified: path.as_deref().and_then(mtime),
            path,
            last_check: Instant::now(),
            current: running.clone(),
        }
    }

    /// The new config when the file changed, parses and has other cameras (checked at most once
    /// a second).
    fn changed(&mut self) -> Option<Config> {
        if self.last_check.elapsed() < Duration::from_secs(1) {
            return None;
        }
        self.last_check = Instant::now();
        let path = self.path.clone()?;
        let m = mtime(&path);
        if m == self.modified {
            return None;
        }
        self.modified = m;
        let new = match Config::load(&path) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("the edited config is not valid, nothing changed: {e}");
                return None;
            }
        };
        let without_cameras = |c: &Config| {
            format!(
                "{:?}",
                Config {
                    cameras: Vec::new(),
                    ..c.clone()
                }
            )
        };
        if without_cameras(&self.current) != without_cameras(&new) {
            tracing::warn!(
                file = %path.display(),
                "the config changed outside [[cameras]]: cameras are applied now, the rest at the next restart"
            );
        }
        let cameras_changed = self.current.cameras != new.cameras;
        self.current = new;
        if !cameras_changed {
            return None;
        }
        tracing::info!(file = %path.display(), cameras = self.current.cameras.len(), "config edited: applying the cameras");
        Some(self.current.clone())
    }
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}
