//! Prune / re-tune jobs started from the API. Each runs as a child process (`crosscam job run`,
//! the same code as the CLI) so that training — minutes of both cores and gigabytes of memory —
//! cannot take the daemon down with it; cancelling sends SIGTERM, which the job answers by
//! stopping cleanly and changing nothing. Progress comes back as JSON lines on the child's
//! stderr and goes out as `job_progress` events.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::events::{Event, EventBus};
use crate::store::now_ms;

/// What an admin asks for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// S0–S5 (docs/retuning.md); default S4, on-site re-tuning of the serving model.
    #[serde(default = "default_scenario")]
    pub scenario: String,
    /// Training allowed: epochs (`2ep`) or time (`10m`).
    #[serde(default = "default_budget")]
    pub budget: String,
    /// Share of the original MACs to prune to (1.0 = no pruning).
    #[serde(default = "one")]
    pub target_macs: f64,
    /// Only these cameras' crops (default all).
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Share of the tracklets held out to compare old and new models.
    #[serde(default = "holdout")]
    pub holdout: f64,
}

fn default_scenario() -> String {
    "S4".into()
}
fn default_budget() -> String {
    "1ep".into()
}
fn one() -> f64 {
    1.0
}
fn holdout() -> f64 {
    0.25
}

impl JobRequest {
    /// Checks the request before anything starts (the child would fail later otherwise).
    pub fn check(&self) -> Result<(), String> {
        if !matches!(
            self.scenario.to_ascii_uppercase().as_str(),
            "S0" | "S1" | "S2" | "S3" | "S4" | "S5"
        ) {
            return Err(format!(
                "`scenario`: expected S0–S5, found {:?}",
                self.scenario
            ));
        }
        self.budget
            .parse::<crate::train::scenario::Budget>()
            .map_err(|e| format!("`budget`: {e}"))?;
        if !(self.target_macs > 0.05 && self.target_macs <= 1.0) {
            return Err(format!(
                "`target_macs`: expected a share above 0.05 and at most 1.0, found {}",
                self.target_macs
            ));
        }
        if !(self.holdout > 0.0 && self.holdout < 1.0) {
            return Err(format!(
                "`holdout`: expected a share between 0 and 1, found {}",
                self.holdout
            ));
        }
        for c in &self.cameras {
            if c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                return Err(format!("`cameras`: {c:?} is not a camera id"));
            }
        }
        Ok(())
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    /// `running` or `finished`.
    pub state: String,
    pub request: Option<JobRequest>,
    pub started_by: Option<String>,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub phase: String,
    pub label: String,
    pub done: u64,
    /// 0 while unknown (a phase that has not counted its work yet).
    pub total: u64,
    /// Seconds since this phase's count started (with `done` and `total`: the rate and ETA).
    pub seconds: f64,
    pub cancel_requested: bool,
    /// The job's report once it ended (outcome, old and new held-out scores, decision).
    pub report: Option<serde_json::Value>,
    /// The last lines the job printed (for failures).
    pub log: Vec<String>,
}

struct Entry {
    view: JobView,
    pid: Option<u32>,
    log: VecDeque<String>,
}

pub struct JobManager {
    jobs: Arc<Mutex<BTreeMap<String, Entry>>>,
    bus: EventBus,
    data_dir: PathBuf,
    config: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JobManager {
    pub fn new(cfg: &Config, bus: EventBus) -> JobManager {
        JobManager {
            jobs: Arc::new(Mutex::new(BTreeMap::new())),
            bus,
            data_dir: cfg.server.data_dir.clone(),
            config: cfg.source.clone(),
        }
    }

    /// Jobs of this daemon run (live) and earlier ones (their reports in DATA/jobs), newest first.
    pub fn list(&self) -> Vec<JobView> {
        let mut out: BTreeMap<String, JobView> = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(crate::jobs::runner::jobs_dir(&self.data_dir)) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json")
                    && let Some(v) = std::fs::read_to_string(&p)
                        .ok()
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    && let Some(id) = v["id"].as_str()
                {
                    out.insert(id.to_string(), finished_view(id, v.clone()));
                }
            }
        }
        for (id, e) in lock(&self.jobs).iter() {
            out.insert(id.clone(), e.view.clone());
        }
        out.into_values().rev().collect()
    }

    pub fn get(&self, id: &str) -> Option<JobView> {
        if let Some(e) = lock(&self.jobs).get(id) {
            let mut v = e.view.clone();
            v.log = e.log.iter().cloned().collect();
            return Some(v);
        }
        if id.contains(['/', '\\', '.']) {
            return None;
        }
        let p = crate::jobs::runner::jobs_dir(&self.data_dir).join(format!("{id}.json"));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
        Some(finished_view(id, v))
    }

    /// Starts a job; refused while another runs (one training job at a time).
    pub fn start(&self, req: JobRequest, user: &str) -> Result<JobView, StartError> {
        req.check().map_err(StartError::Invalid)?;
        let mut jobs = lock(&self.jobs);
        if let Some((id, _)) = jobs.iter().find(|(_, e)| e.view.state == "running") {
            return Err(StartError::Busy(id.clone()));
        }
        std::fs::create_dir_all(crate::jobs::runner::jobs_dir(&self.data_dir))
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        let id = crate::jobs::runner::new_job_id(&self.data_dir);
        // the crosscam binary (CROSSCAM_BIN when the daemon is embedded in another program)
        let exe = match std::env::var_os("CROSSCAM_BIN") {
            Some(b) => PathBuf::from(b),
            None => std::env::current_exe().map_err(|e| StartError::Spawn(e.to_string()))?,
        };
        let mut cmd = Command::new(exe);
        cmd.arg("job").arg("run");
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--id")
            .arg(&id)
            .arg("--json")
            .arg("--scenario")
            .arg(req.scenario.to_ascii_uppercase())
            .arg("--budget")
            .arg(&req.budget)
            .arg("--target-macs")
            .arg(req.target_macs.to_string())
            .arg("--holdout")
            .arg(req.holdout.to_string());
        if !req.cameras.is_empty() {
            cmd.arg("--cameras").arg(req.cameras.join(","));
        }
        cmd.env(crate::progress::PROGRESS_ENV, "1")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StartError::Spawn(format!("cannot start the job process: {e}")))?;
        let view = JobView {
            id: id.clone(),
            state: "running".into(),
            request: Some(req),
            started_by: Some(user.to_string()),
            started_ms: now_ms(),
            ended_ms: None,
            phase: "queued".into(),
            label: String::new(),
            done: 0,
            total: 0,
            seconds: 0.0,
            cancel_requested: false,
            report: None,
            log: Vec::new(),
        };
        jobs.insert(
            id.clone(),
            Entry {
                view: view.clone(),
                pid: Some(child.id()),
                log: VecDeque::new(),
            },
        );
        drop(jobs);
        tracing::info!(job = %id, user, "job started");
        self.watch(id, &mut child);
        let jobs = self.jobs.clone();
        let bus = self.bus.clone();
        let stdout = child.stdout.take();
        std::thread::Builder::new()
            .name("job-wait".into())
            .spawn(move || wait(jobs, bus, child, stdout))
            .map_err(|e| StartError::Spawn(e.to_string()))?;
        Ok(view)
    }

    /// Reads the child's stderr: progress and phases become events, other lines the log tail.
    fn watch(&self, id: String, child: &mut Child) {
        let Some(err) = child.stderr.take() else {
            return;
        };
        let jobs = self.jobs.clone();
        let bus = self.bus.clone();
        let _ = std::thread::Builder::new()
            .name("job-progress".into())
            .spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let v: Option<serde_json::Value> = line
                        .starts_with('{')
                        .then(|| serde_json::from_str(&line).ok())
                        .flatten();
                    let mut g = lock(&jobs);
                    let Some(e) = g.get_mut(&id) else { break };
                    match v {
                        Some(v) if v.get("phase").is_some() => {
                            e.view.phase = v["phase"].as_str().unwrap_or("").to_string();
                            // the last phase's count is not this one's
                            e.view.label.clear();
                            (e.view.done, e.view.total, e.view.seconds) = (0, 0, 0.0);
                        }
                        Some(v) if v.get("progress").is_some() => {
                            let p = &v["progress"];
                            e.view.label = p["label"].as_str().unwrap_or("").to_string();
                            e.view.done = p["done"].as_u64().unwrap_or(0);
                            e.view.total = p["total"].as_u64().unwrap_or(0);
                            e.view.seconds = p["seconds"].as_f64().unwrap_or(0.0);
                        }
                        _ => {
                            if e.log.len() >= 40 {
                                e.log.pop_front();
                            }
                            e.log.push_back(line);
                            continue;
                        }
                    }
                    bus.publish(Event::JobProgress {
                        t_ms: now_ms(),
                        job: id.clone(),
                        phase: e.view.phase.clone(),
                        label: e.view.label.clone(),
                        done: e.view.done,
                        total: e.view.total,
                    });
                }
            });
    }

    /// Asks a running job to stop (SIGTERM); it ends as `cancelled` and changes nothing.
    pub fn cancel(&self, id: &str) -> Result<JobView, CancelError> {
        let mut g = lock(&self.jobs);
        let e = g.get_mut(id).ok_or(CancelError::NotFound)?;
        if e.view.state != "running" {
            return Err(CancelError::NotRunning(e.view.state.clone()));
        }
        e.view.cancel_requested = true;
        if let Some(pid) = e.pid {
            // SAFETY: kill(2) with a pid this process spawned and has not reaped yet (the waiting
            // thread clears `pid` before reaping).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        Ok(e.view.clone())
    }

    /// The jobs running now (only this daemon's; no report files read).
    pub fn running(&self) -> Vec<JobView> {
        lock(&self.jobs)
            .values()
            .filter(|e| e.view.state == "running")
            .map(|e| e.view.clone())
            .collect()
    }

    /// Cancels every running job (daemon shutdown).
    pub fn cancel_all(&self) {
        for j in self.running() {
            let _ = self.cancel(&j.id);
        }
    }
}

fn finished_view(id: &str, report: serde_json::Value) -> JobView {
    JobView {
        id: id.to_string(),
        state: "finished".into(),
        request: None,
        started_by: None,
        started_ms: 0,
        ended_ms: None,
        phase: "finished".into(),
        label: String::new(),
        done: 0,
        total: 0,
        seconds: 0.0,
        cancel_requested: false,
        report: Some(report),
        log: Vec::new(),
    }
}

fn wait(
    jobs: Arc<Mutex<BTreeMap<String, Entry>>>,
    bus: EventBus,
    mut child: Child,
    stdout: Option<std::process::ChildStdout>,
) {
    let mut out = String::new();
    if let Some(mut s) = stdout {
        let _ = s.read_to_string(&mut out);
    }
    let pid = child.id();
    // no more signals to this pid once it is reaped
    let id = {
        let mut g = lock(&jobs);
        let id = g
            .iter()
            .find(|(_, e)| e.pid == Some(pid))
            .map(|(id, _)| id.clone());
        if let Some(e) = id.as_ref().and_then(|i| g.get_mut(i)) {
            e.pid = None;
        }
        id
    };
    let status = child.wait();
    let Some(id) = id else { return };
    let report: Option<serde_json::Value> = serde_json::from_str(out.trim()).ok();
    let mut g = lock(&jobs);
    let Some(e) = g.get_mut(&id) else { return };
    e.view.state = "finished".into();
    e.view.phase = "finished".into();
    e.view.ended_ms = Some(now_ms());
    let (st, detail) = match &report {
        Some(r) => (
            r["status"].as_str().unwrap_or("failed").to_string(),
            r["decision"]
                .as_str()
                .or(r["error"].as_str())
                .unwrap_or("")
                .to_string(),
        ),
        None => (
            if e.view.cancel_requested {
                "cancelled".to_string()
            } else {
                "failed".to_string()
            },
            format!(
                "the job process ended ({}) without a report: {}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                e.log.back().cloned().unwrap_or_default()
            ),
        ),
    };
    e.view.report =
        report.or_else(|| Some(serde_json::json!({"id": id, "status": st, "error": detail})));
    tracing::info!(job = %id, status = %st, "job finished");
    bus.publish(Event::JobFinished {
        t_ms: now_ms(),
        job: id,
        status: st,
        detail,
    });
}

#[derive(Debug)]
pub enum StartError {
    Invalid(String),
    /// Another job is running (its id).
    Busy(String),
    Spawn(String),
}

#[derive(Debug)]
pub enum CancelError {
    NotFound,
    NotRunning(String),
}
