//! `crosscam demo`: runs the server on the embedded default config until Ctrl-C (or for a given
//! time), printing each camera's state and the analysis rates every few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::config::Config;
use crate::server::Server;
use crate::track::TrackEvent;

pub fn run(cfg: &Config, seconds: Option<f64>) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;
    let server = Server::start(cfg, None)?;
    eprintln!(
        "crosscam demo: {} cameras; Ctrl-C to stop",
        cfg.cameras.len()
    );
    let start = Instant::now();
    let mut last_print = Instant::now();
    let deadline = seconds.map(Duration::from_secs_f64);
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| start.elapsed() < d) {
        while let Ok(ev) = server.track_events.try_recv() {
            match ev.event {
                TrackEvent::Started(t) => eprintln!("[{}] person {} appeared", ev.camera, t.id),
                TrackEvent::Ended(t) => eprintln!(
                    "[{}] person {} left after {:.1} s ({} crops)",
                    ev.camera,
                    t.id,
                    t.duration().as_secs_f64(),
                    t.crops.len()
                ),
                TrackEvent::Updated(_) => {}
            }
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            let st = server.status();
            for c in &st.cameras {
                eprintln!(
                    "  {:<10} {:<12} in {:>6}  analysed {:>6}  dropped {:>5}  reconnects {}",
                    c.id,
                    c.state.to_string(),
                    c.frames_in,
                    c.analysed,
                    c.dropped,
                    c.reconnects
                );
            }
            eprintln!(
                "  detector: {:.1} ms/frame, mean batch {:.2}; tracklets started {} ended {}",
                st.analysis.detect_ms_per_frame,
                st.analysis.mean_batch,
                st.analysis.tracklets_started,
                st.analysis.tracklets_ended
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("stopping…");
    server.shutdown();
    Ok(())
}
