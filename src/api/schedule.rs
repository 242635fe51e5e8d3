//! The daemon's re-tuning scheduler (`[retune] schedule`, [`crate::jobs::schedule`]): a task of the
//! API's runtime that, at each due time, starts a job through the same [`super::jobs::JobManager`]
//! an admin's `POST /api/v1/jobs` uses, or skips and says why. The last job's start is kept in
//! `DATA/jobs/schedule.json`, so "new footage" counts from it across restarts.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ApiState;
use super::jobs::JobRequest;
use crate::events::Event;
use crate::jobs::registry::write_atomic;
use crate::jobs::schedule::{Schedule, Verdict, decide, local_utc_offset_ms};
use crate::store::{Store, now_ms};

/// What `/api/v1/status` shows as `retune_schedule`, and what `DATA/jobs/schedule.json` keeps.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScheduleState {
    /// `off`, `daily 02:00`, `every 6h`.
    pub schedule: String,
    pub min_new_crops: u64,
    /// The next due time (Unix ms), none when off.
    pub next_ms: Option<i64>,
    /// When the last job (scheduled or not) started.
    pub last_job_ms: i64,
    /// The last due time's outcome.
    pub last: Option<LastRun>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastRun {
    pub t_ms: i64,
    /// `started` or `skipped`.
    pub outcome: String,
    pub job: String,
    pub reason: String,
    pub new_crops: u64,
}

fn file(data_dir: &Path) -> PathBuf {
    crate::jobs::runner::jobs_dir(data_dir).join("schedule.json")
}

fn load(data_dir: &Path) -> ScheduleState {
    std::fs::read(file(data_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(data_dir: &Path, s: &ScheduleState) {
    let path = file(data_dir);
    let written = std::fs::create_dir_all(crate::jobs::runner::jobs_dir(data_dir))
        .map_err(anyhow::Error::from)
        .and_then(|_| write_atomic(&path, &serde_json::to_vec_pretty(s).unwrap_or_default()));
    if let Err(e) = written {
        tracing::warn!(error = %format!("{e:#}"), file = %path.display(), "cannot record the re-tuning schedule");
    }
}

/// The scheduler's shared state (`None` until the task runs, and when the schedule is off).
#[derive(Default)]
pub struct Scheduler {
    state: Mutex<Option<ScheduleState>>,
}

impl Scheduler {
    pub fn status(&self) -> serde_json::Value {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_value(&*g).unwrap_or(serde_json::Value::Null)
    }

    fn get(&self) -> ScheduleState {
        self.update(|_| {})
    }

    fn update(&self, f: impl FnOnce(&mut ScheduleState)) -> ScheduleState {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = g.get_or_insert_with(ScheduleState::default);
        f(s);
        s.clone()
    }
}

/// Runs until the API closes. `schedule` and `req` come from `[retune]`, checked at config load.
pub async fn run(s: ApiState, schedule: Schedule, req: JobRequest) {
    if schedule == Schedule::Off {
        return;
    }
    let data_dir = s.cfg.server.data_dir.clone();
    let min_new = s.cfg.retune.min_new_crops;
    let start = now_ms();
    let mut kept = load(&data_dir);
    kept.schedule = schedule.to_string();
    kept.min_new_crops = min_new;
    kept.next_ms = schedule.next_after(start, start, local_utc_offset_ms());
    s.scheduler.update(|st| *st = kept.clone());
    tracing::info!(schedule = %schedule, next_ms = ?kept.next_ms, min_new_crops = min_new, "re-tuning on a schedule");
    let mut closing = s.closing.subscribe();
    loop {
        let Some(due) = s.scheduler.get().next_ms else {
            return;
        };
        // wake at least every minute: the clock and the local time's offset may change
        let wait = (due - now_ms()).clamp(0, 60_000) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
            _ = closing.wait_for(|c| *c) => return,
        }
        if now_ms() < due {
            continue;
        }
        let s2 = s.clone();
        let req2 = req.clone();
        let dir = data_dir.clone();
        let done = tokio::task::spawn_blocking(move || due_now(&s2, &dir, min_new, req2)).await;
        if let Err(e) = done {
            tracing::error!(error = %e, "the re-tuning scheduler failed at a due time");
        }
        let now = now_ms();
        let st = s.scheduler.update(|st| {
            st.next_ms = schedule.next_after(now, start, local_utc_offset_ms());
        });
        save(&data_dir, &st);
    }
}

/// One due time: start a job or say why not.
fn due_now(s: &ApiState, data_dir: &Path, min_new: u64, req: JobRequest) {
    let t = now_ms();
    let last_job_ms = {
        let listed = s
            .jobs
            .list()
            .iter()
            .map(|j| j.started_ms)
            .max()
            .unwrap_or(0);
        listed.max(s.scheduler.get().last_job_ms)
    };
    let running = s.jobs.running().first().map(|j| j.id.clone());
    let counted = Store::open(data_dir).and_then(|st| st.crops_since(last_job_ms));
    let (verdict, new_crops) = match counted {
        Ok(n) => (decide(n, min_new, running.as_deref()), n),
        Err(e) => (
            Verdict::Skip(format!("cannot count the stored crops: {e}")),
            0,
        ),
    };
    let (outcome, job, reason) = match verdict {
        Verdict::Start => match s.jobs.start(req, "scheduler") {
            Ok(v) => (
                "started",
                v.id,
                format!("{new_crops} crops stored since the last job"),
            ),
            Err(e) => (
                "skipped",
                String::new(),
                format!("the job did not start: {}", start_error(&e)),
            ),
        },
        Verdict::Skip(why) => ("skipped", String::new(), why),
    };
    tracing::info!(outcome, job = %job, reason = %reason, new_crops, "scheduled re-tuning");
    s.scheduler.update(|st| {
        if outcome == "started" {
            st.last_job_ms = t;
        } else {
            st.last_job_ms = last_job_ms;
        }
        st.last = Some(LastRun {
            t_ms: t,
            outcome: outcome.into(),
            job: job.clone(),
            reason: reason.clone(),
            new_crops,
        });
    });
    s.server.events.publish(Event::RetuneScheduled {
        t_ms: t,
        outcome: outcome.into(),
        job,
        reason,
    });
}

fn start_error(e: &super::jobs::StartError) -> String {
    use super::jobs::StartError;
    match e {
        StartError::Invalid(d) | StartError::Spawn(d) => d.clone(),
        StartError::Busy(id) => format!("job {id} is still running"),
    }
}
