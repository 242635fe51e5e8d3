//! `[retune] schedule`: the daemon re-tunes its embedder on its own footage on a schedule.
//!
//! At each due time (`daily HH:MM` in the machine's local time, or `every 6h`) the scheduler
//! counts the crops stored since the last job started; with at least `min_new_crops` it starts a
//! job exactly as an admin would through the API (`started_by` = `scheduler`), else it skips and
//! says why. Whether the candidate then serves is the job's gate: it promotes on its own only when
//! it is better on the operators' held-out labels (docs/retuning.md), and the daemon switches to a
//! promoted model live. Every due time ends in a `retune_scheduled` event (`started` or
//! `skipped`, with the reason) and in `/api/v1/status` (`retune_schedule`).

use std::fmt;
use std::str::FromStr;

/// When scheduled re-tuning is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Off,
    /// Every day at this minute of the day, local time.
    Daily {
        minute: u32,
    },
    /// Every this many milliseconds, counted from the daemon's start.
    Every {
        ms: i64,
    },
}

impl FromStr for Schedule {
    type Err = String;

    /// `off`, `daily HH:MM` or `every N` with `s`, `m`, `h` or `d` (at least 10 s).
    fn from_str(s: &str) -> Result<Schedule, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("off") || t.is_empty() {
            return Ok(Schedule::Off);
        }
        let bad = || format!("expected \"off\", \"daily HH:MM\" or \"every 6h\", found {s:?}");
        let (word, rest) = t.split_once(char::is_whitespace).ok_or_else(bad)?;
        let rest = rest.trim();
        match word.to_ascii_lowercase().as_str() {
            "daily" => {
                let (h, m) = rest.split_once(':').ok_or_else(bad)?;
                let (h, m): (u32, u32) = (
                    h.trim().parse().map_err(|_| bad())?,
                    m.trim().parse().map_err(|_| bad())?,
                );
                if h > 23 || m > 59 {
                    return Err(format!("{s:?}: the time must be from 00:00 to 23:59"));
                }
                Ok(Schedule::Daily { minute: h * 60 + m })
            }
            "every" => {
                let unit_at = rest
                    .find(|c: char| !c.is_ascii_digit() && c != '.')
                    .ok_or_else(bad)?;
                let n: f64 = rest[..unit_at].parse().map_err(|_| bad())?;
                let unit = match rest[unit_at..].trim() {
                    "s" => 1_000.0,
                    "m" | "min" => 60_000.0,
                    "h" => 3_600_000.0,
                    "d" => 86_400_000.0,
                    _ => return Err(bad()),
                };
                let ms = n * unit;
                if !(10_000.0..=366.0 * 86_400_000.0).contains(&ms) {
                    return Err(format!("{s:?}: the interval must be from 10 s to a year"));
                }
                Ok(Schedule::Every { ms: ms as i64 })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Off => write!(f, "off"),
            Schedule::Daily { minute } => write!(f, "daily {:02}:{:02}", minute / 60, minute % 60),
            Schedule::Every { ms } if ms % 3_600_000 == 0 => write!(f, "every {}h", ms / 3_600_000),
            Schedule::Every { ms } if ms % 60_000 == 0 => write!(f, "every {}m", ms / 60_000),
            Schedule::Every { ms } => write!(f, "every {}s", ms / 1_000),
        }
    }
}

const DAY_MS: i64 = 86_400_000;

impl Schedule {
    /// The first due time strictly after `after_ms` (Unix ms). `start_ms` anchors `every`;
    /// `utc_offset_ms` is the local time's offset east of UTC (for `daily`).
    pub fn next_after(&self, after_ms: i64, start_ms: i64, utc_offset_ms: i64) -> Option<i64> {
        match *self {
            Schedule::Off => None,
            Schedule::Every { ms } => {
                let k = (after_ms - start_ms).div_euclid(ms) + 1;
                Some(start_ms + k * ms)
            }
            Schedule::Daily { minute } => {
                let local = after_ms + utc_offset_ms;
                let day = local.div_euclid(DAY_MS) * DAY_MS;
                let mut due = day + minute as i64 * 60_000;
                if due <= local {
                    due += DAY_MS;
                }
                Some(due - utc_offset_ms)
            }
        }
    }
}

/// What the scheduler does at a due time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Start,
    Skip(String),
}

/// Starts a job when no other runs and enough new footage was stored.
pub fn decide(new_crops: u64, min_new_crops: u64, running: Option<&str>) -> Verdict {
    if let Some(id) = running {
        return Verdict::Skip(format!("job {id} is still running"));
    }
    if new_crops < min_new_crops {
        return Verdict::Skip(format!(
            "only {new_crops} crops stored since the last job; [retune] min_new_crops is {min_new_crops}"
        ));
    }
    Verdict::Start
}

/// The local time's offset from UTC now, in ms (0 when the C library cannot tell).
pub fn local_utc_offset_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which we own.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_print() {
        assert_eq!("off".parse::<Schedule>().unwrap(), Schedule::Off);
        assert_eq!(
            "daily 02:30".parse::<Schedule>().unwrap(),
            Schedule::Daily { minute: 150 }
        );
        assert_eq!(
            "every 6h".parse::<Schedule>().unwrap(),
            Schedule::Every { ms: 6 * 3_600_000 }
        );
        assert_eq!(
            "every 90m".parse::<Schedule>().unwrap(),
            Schedule::Every { ms: 90 * 60_000 }
        );
        for s in ["daily 02:30", "every 6h", "every 90m", "every 15s", "off"] {
            assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
        }
        for bad in [
            "nightly",
            "daily 25:00",
            "daily 2",
            "every 5s",
            "every 6",
            "every h",
            "weekly 1",
        ] {
            let e = bad.parse::<Schedule>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn due_times() {
        let h = 3_600_000;
        // every 6 h from a start at 1 000 ms
        let s = Schedule::Every { ms: 6 * h };
        assert_eq!(s.next_after(1_000, 1_000, 0), Some(1_000 + 6 * h));
        assert_eq!(s.next_after(1_000 + 6 * h, 1_000, 0), Some(1_000 + 12 * h));
        // daily 02:00 UTC, asked at 01:00 and at 03:00 of day 10
        let d = Schedule::Daily { minute: 120 };
        let day10 = 10 * DAY_MS;
        assert_eq!(d.next_after(day10 + h, 0, 0), Some(day10 + 2 * h));
        assert_eq!(
            d.next_after(day10 + 3 * h, 0, 0),
            Some(day10 + DAY_MS + 2 * h)
        );
        // exactly at the due time: the next one
        assert_eq!(
            d.next_after(day10 + 2 * h, 0, 0),
            Some(day10 + DAY_MS + 2 * h)
        );
        // 02:00 local time two hours east of UTC is 00:00 UTC
        assert_eq!(d.next_after(day10 - h, 0, 2 * h), Some(day10));
        assert_eq!(Schedule::Off.next_after(5, 0, 0), None);
    }

    #[test]
    fn a_job_starts_only_with_enough_new_footage_and_none_running() {
        assert_eq!(decide(500, 100, None), Verdict::Start);
        match decide(50, 100, None) {
            Verdict::Skip(why) => {
                assert!(why.contains("50") && why.contains("min_new_crops"), "{why}")
            }
            v => panic!("{v:?}"),
        }
        match decide(500, 100, Some("j7")) {
            Verdict::Skip(why) => assert!(why.contains("j7"), "{why}"),
            v => panic!("{v:?}"),
        }
    }
}
