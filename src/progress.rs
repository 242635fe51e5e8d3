//! Progress for long CLI work (pruning, training, evaluation, dataset building): a line on stderr
//! with count, rate and ETA, refreshed in place on a terminal and every few seconds otherwise
//! (logs, CI). Quiet mode (`--json` runs) prints nothing.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last: Option<Instant>,
    every: Duration,
    tty: bool,
    quiet: bool,
    note: String,
}

impl Progress {
    /// `total` = 0 when unknown (no percentage or ETA then).
    pub fn new(label: &str, total: u64) -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            start: Instant::now(),
            last: None,
            every: if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            },
            tty,
            quiet: false,
            note: String::new(),
        }
    }

    pub fn quiet(mut self, quiet: bool) -> Progress {
        self.quiet = quiet;
        self
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = total;
    }

    /// A short status shown after the counts (e.g. the current loss).
    pub fn note(&mut self, note: impl Into<String>) {
        self.note = note.into();
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        let now = Instant::now();
        let every = if machine_readable() {
            Duration::from_millis(500)
        } else {
            self.every
        };
        if self.last.is_none_or(|l| now - l >= every) {
            self.last = Some(now);
            self.draw(false);
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The current line, without terminal control characters.
    pub fn line(&self) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.done as f64 / secs;
        let mut s = format!("{}  {}", self.label, self.done);
        if self.total > 0 {
            s.push_str(&format!(
                "/{} ({:.0}%)",
                self.total,
                100.0 * self.done as f64 / self.total as f64
            ));
        }
        s.push_str(&format!(
            "  {rate:.1}/s  elapsed {}",
            fmt_duration(self.start.elapsed())
        ));
        if self.total > 0 && self.done > 0 && self.done < self.total {
            let eta = Duration::from_secs_f64((self.total - self.done) as f64 / rate.max(1e-9));
            s.push_str(&format!("  ETA {}", fmt_duration(eta)));
        }
        if !self.note.is_empty() {
            s.push_str("  ");
            s.push_str(&self.note);
        }
        s
    }

    fn draw(&self, end: bool) {
        if machine_readable() {
            // for a parent process (the daemon running a job): one JSON line per update
            let line = serde_json::json!({"progress": {
                "label": self.label, "done": self.done, "total": self.total,
                "seconds": self.start.elapsed().as_secs_f64(), "note": self.note,
            }});
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
            let _ = err.flush();
            return;
        }
        if self.quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{}", self.line());
            if end {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{}", self.line());
        }
        let _ = err.flush();
    }

    /// Prints the final line.
    pub fn finish(&mut self) {
        self.draw(true);
    }
}

/// Set in the environment of a child process whose progress a parent reads: progress and job
/// phases are printed on stderr as JSON lines (`{"progress": {…}}`, `{"phase": "training"}`).
pub const PROGRESS_ENV: &str = "CROSSCAM_PROGRESS_JSON";

pub fn machine_readable() -> bool {
    std::env::var_os(PROGRESS_ENV).is_some_and(|v| v == "1")
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_counts_percentage_and_eta() {
        let mut p = Progress::new("pruning", 10).quiet(true);
        p.inc(5);
        p.note("loss 0.5");
        let l = p.line();
        assert!(l.starts_with("pruning  5/10 (50%)"), "{l}");
        assert!(l.contains("ETA") && l.ends_with("loss 0.5"), "{l}");
        assert_eq!(fmt_duration(Duration::from_secs(125)), "2m05s");
    }
}
