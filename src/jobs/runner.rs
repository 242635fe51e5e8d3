//! The on-site re-tuning job: collect the site's crops, hold out a share for evaluation, prune
//! and/or re-tune the serving model within a budget, score old and new on the held-out crops,
//! and promote the new model only when it is better — or as good and cheaper. A job that fails
//! or is cancelled changes nothing: the registry and the serving model stay as they were, and its
//! candidate file is removed. Every job leaves a report in `DATA/jobs/<id>.json`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::evaluate::{EvalSet, GatePolicy, LabelGate, Score, evaluate_labels, evaluate_set};
use super::registry::{Registry, write_atomic};
use super::serving::{ReembedHook, ServingModel, promote};
use super::source::CropSource;
use crate::onnx::Model;
use crate::train::Cancel;
use crate::train::distill::Teacher;
use crate::train::scenario::{
    RetuneControl, RetuneData, RetuneError, RetuneOptions, RetuneReport, retune,
};

/// When a new model replaces the serving one.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PromotePolicy {
    /// Better: held-out mAP higher by more than this.
    pub min_gain: f64,
    /// As good: held-out mAP lower by at most this — promoted only when it is also cheaper
    /// (fewer MACs).
    pub tolerance: f64,
}

impl Default for PromotePolicy {
    fn default() -> PromotePolicy {
        PromotePolicy {
            min_gain: 0.0,
            tolerance: 0.0,
        }
    }
}

impl PromotePolicy {
    /// Whether `new` should replace `old`, and why.
    pub fn decide(&self, old: &Score, new: &Score) -> (bool, String) {
        let pct = |v: f64| format!("{:.1}%", 100.0 * v);
        if new.map > old.map + self.min_gain {
            (
                true,
                format!("better: held-out mAP {} → {}", pct(old.map), pct(new.map)),
            )
        } else if new.map >= old.map - self.tolerance && new.macs < old.macs {
            (
                true,
                format!(
                    "as good and cheaper: held-out mAP {} → {}, GMACs {:.3} → {:.3}",
                    pct(old.map),
                    pct(new.map),
                    old.macs as f64 / 1e9,
                    new.macs as f64 / 1e9
                ),
            )
        } else {
            (
                false,
                format!(
                    "kept the serving model: held-out mAP {} → {}{}",
                    pct(old.map),
                    pct(new.map),
                    if new.macs < old.macs {
                        format!(
                            " (cheaper, {:.3} → {:.3} GMACs, but worse)",
                            old.macs as f64 / 1e9,
                            new.macs as f64 / 1e9
                        )
                    } else {
                        String::new()
                    }
                ),
            )
        }
    }
}

/// What a job does.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub retune: RetuneOptions,
    /// Share of the identities (or, without labels, of the tracklets) held out for evaluation.
    pub holdout: f64,
    pub policy: PromotePolicy,
    /// How operators' labels judge a candidate.
    pub gate: GatePolicy,
    /// Share of the operators' labels held out for the gate (never trained on), chosen by a
    /// hash of each label's id ([`crate::train::site::gate_holds_out`]).
    pub label_holdout: f64,
}

/// Fewer training tracklets than this cannot make the two pseudo-identities a batch needs.
pub const MIN_TRAIN_TRACKLETS: usize = 4;

/// The default share of labels the gate holds out.
pub const LABEL_HOLDOUT: f64 = 0.5;

/// Where a job is (for progress displays and the admin API).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPhase {
    Queued,
    Collecting,
    Training,
    Evaluating,
    Promoting,
    Finished,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum JobOutcome {
    /// The new model serves now.
    Promoted {
        version: String,
    },
    /// The new model was not good enough; nothing changed.
    Rejected,
    Cancelled,
    Failed {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct HeldOut {
    /// `identities` or `tracklets` (see [`EvalSet::hold_out`]).
    pub kind: String,
    pub query: usize,
    pub gallery: usize,
}

/// A job's record (`DATA/jobs/<id>.json`).
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    pub id: String,
    #[serde(flatten)]
    pub outcome: JobOutcome,
    pub source: String,
    pub scenario: String,
    pub serving_before: Option<String>,
    pub serving_after: Option<String>,
    pub train_tracklets: usize,
    pub train_crops: usize,
    pub held_out: Option<HeldOut>,
    /// The serving model on the held-out crops.
    pub old: Option<Score>,
    /// The candidate on the held-out crops.
    pub new: Option<Score>,
    pub decision: Option<String>,
    /// Both models on the operators' held-out labels (none when the source has no labels).
    pub labels: Option<LabelGate>,
    /// Whether the job was allowed to promote on its own: with site footage only when the
    /// labels are enough (not weak) and the candidate passed on them.
    pub automatic_promotion: bool,
    /// A rejected candidate kept in the registry (not current), for an admin to promote anyway.
    pub candidate: Option<String>,
    pub retune: Option<RetuneReport>,
    pub seconds: f64,
}

/// What a job works with besides its crops.
pub struct JobContext<'a> {
    pub data_dir: &'a Path,
    pub registry: &'a mut Registry,
    pub serving: &'a ServingModel,
    pub hook: &'a mut dyn ReembedHook,
    pub teacher: Option<&'a mut dyn Teacher>,
    pub cancel: Cancel,
    /// Updated as the job moves on.
    pub phase: Option<&'a Mutex<JobPhase>>,
}

/// A job id from the time: `j-YYYYMMDD-HHMMSS` (UTC) plus a counter when needed.
pub fn new_job_id(data_dir: &Path) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (d, s) = ((secs / 86_400) as i64, secs % 86_400);
    // civil date from days since 1970 (Howard Hinnant's algorithm)
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let base = format!(
        "j-{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    );
    let dir = jobs_dir(data_dir);
    let mut id = base.clone();
    let mut k = 1;
    while dir.join(format!("{id}.json")).exists() {
        k += 1;
        id = format!("{base}-{k}");
    }
    id
}

/// Where job reports go.
pub fn jobs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("jobs")
}

/// Runs one job to its end (see the module documentation). Errors become a `failed` report;
/// the report is also written to `DATA/jobs/<id>.json`.
pub fn run_job(
    id: &str,
    spec: &JobSpec,
    source: &mut dyn CropSource,
    mut ctx: JobContext<'_>,
) -> JobReport {
    let t0 = Instant::now();
    let mut report = JobReport {
        id: id.to_string(),
        outcome: JobOutcome::Rejected,
        source: source.describe(),
        scenario: spec.retune.scenario.to_string(),
        serving_before: Some(ctx.serving.current().version.id.clone()),
        serving_after: None,
        train_tracklets: 0,
        train_crops: 0,
        held_out: None,
        old: None,
        new: None,
        decision: None,
        labels: None,
        automatic_promotion: false,
        candidate: None,
        retune: None,
        seconds: 0.0,
    };
    let result = job_body(spec, source, &mut ctx, &mut report);
    report.outcome = match result {
        Ok(o) => o,
        Err(e) if ctx.cancel.is_cancelled() => {
            tracing::info!(job = id, "job cancelled: {e:#}");
            JobOutcome::Cancelled
        }
        Err(e) => JobOutcome::Failed {
            error: format!("{e:#}"),
        },
    };
    set_phase(&ctx, JobPhase::Finished);
    report.serving_after = Some(ctx.serving.current().version.id.clone());
    report.seconds = t0.elapsed().as_secs_f64();
    if let Err(e) = save_report(ctx.data_dir, &report) {
        tracing::warn!(job = id, "cannot write the job report: {e:#}");
    }
    report
}

fn set_phase(ctx: &JobContext<'_>, p: JobPhase) {
    if crate::progress::machine_readable() {
        eprintln!("{}", serde_json::json!({ "phase": p }));
    }
    if let Some(m) = ctx.phase {
        *m.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }
}

fn check(cancel: &Cancel) -> Result<()> {
    anyhow::ensure!(!cancel.is_cancelled(), "cancelled");
    Ok(())
}

fn job_body(
    spec: &JobSpec,
    source: &mut dyn CropSource,
    ctx: &mut JobContext<'_>,
    report: &mut JobReport,
) -> Result<JobOutcome> {
    set_phase(ctx, JobPhase::Collecting);
    let site = source
        .collect(&ctx.cancel)
        .context("collecting the crops")?;
    check(&ctx.cancel)?;
    // the gate's labels and every tracklet they name leave the training data first
    let (site, gate_site) = site.hold_out_labels(spec.label_holdout);
    let (train, held) = EvalSet::hold_out(&site, spec.holdout, spec.retune.seed);
    anyhow::ensure!(
        !held.is_empty(),
        "nothing to evaluate on: {} tracklets, none could be held out (raise --holdout, or \
         collect longer tracklets)",
        site.len()
    );
    anyhow::ensure!(
        train.len() >= MIN_TRAIN_TRACKLETS,
        "not enough footage to re-tune: {} tracklets stored, {} left for training after holding \
         out {:.0} % for evaluation; re-tuning needs at least {MIN_TRAIN_TRACKLETS} (let the \
         cameras run longer, or lower the held-out share)",
        site.len(),
        train.len(),
        100.0 * spec.holdout
    );
    report.held_out = Some(HeldOut {
        kind: held.kind.clone(),
        query: held.query.len(),
        gallery: held.gallery.len(),
    });
    report.train_tracklets = train.len();
    report.train_crops = train.crops();

    let serving = ctx.serving.current();
    let old_path = ctx.registry.path_of(&serving.version);
    let old_model = Model::load(&old_path)
        .with_context(|| format!("cannot read the serving model {}", old_path.display()))?;

    set_phase(ctx, JobPhase::Training);
    let data = RetuneData {
        target: train.without_labels(),
        source: train,
    };
    let retuned = retune(
        &old_model,
        &data,
        &spec.retune,
        RetuneControl {
            cancel: ctx.cancel.clone(),
            teacher: ctx.teacher.as_deref_mut().map(|t| t as &mut dyn Teacher),
        },
    )
    .map_err(|e| match e {
        RetuneError::Cancelled => anyhow::anyhow!("cancelled"),
        e => anyhow::Error::new(e).context("re-tuning"),
    })?;
    report.retune = Some(retuned.report.clone());
    check(&ctx.cancel)?;

    set_phase(ctx, JobPhase::Evaluating);
    let old = evaluate_set(&old_model, &held).context("scoring the serving model")?;
    let new = evaluate_set(&retuned.model, &held).context("scoring the new model")?;
    let (proxy_go, why) = spec.policy.decide(&old, &new);
    let gate = if gate_site.pairs.is_empty() {
        None
    } else {
        let s = evaluate_labels(&old_model, &gate_site, spec.gate.far)
            .context("scoring the serving model on labels")?;
        let c = evaluate_labels(&retuned.model, &gate_site, spec.gate.far)
            .context("scoring the new model on labels")?;
        Some(spec.gate.judge(s, c))
    };
    let (go, why, automatic) = with_labels(proxy_go, why, gate.as_ref(), &held.kind);
    report.automatic_promotion = automatic;
    report.labels = gate;
    report.old = Some(old);
    report.new = Some(new.clone());
    report.decision = Some(why);
    check(&ctx.cancel)?;
    let origin = format!(
        "job {}: {} ({}), target MACs {}, budget {}",
        report.id,
        spec.retune.scenario,
        spec.retune.scenario.description(),
        spec.retune.target_macs,
        spec.retune.budget
    );
    if !go {
        // kept (not current) so that an admin who compares the scores may promote it anyway
        let staged = ctx.registry.stage(&retuned.model, &report.id)?;
        let parent = ctx.registry.current().map(|v| v.id.clone());
        let kept = ctx
            .registry
            .prepare_version(
                &staged,
                &format!("{origin} {}", crate::jobs::registry::REJECTED_SUFFIX),
                parent.as_deref(),
                Some(new),
            )
            .and_then(|v| ctx.registry.commit(&staged, &v, false).map(|_| v.id));
        match kept {
            Ok(id) => {
                report.candidate = Some(id);
                // rejected candidates would otherwise pile up, a model file each
                match ctx
                    .registry
                    .prune_rejected(crate::jobs::registry::KEEP_REJECTED)
                {
                    Ok(gone) if !gone.is_empty() => tracing::info!(
                        removed = ?gone,
                        kept = crate::jobs::registry::KEEP_REJECTED,
                        "older rejected candidates removed from the registry"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot remove older rejected candidates: {e:#}"),
                }
            }
            Err(e) => {
                ctx.registry.discard_staged(&staged);
                tracing::warn!("cannot keep the rejected candidate: {e:#}");
            }
        }
        return Ok(JobOutcome::Rejected);
    }

    set_phase(ctx, JobPhase::Promoting);
    let staged = ctx.registry.stage(&retuned.model, &report.id)?;
    let v = promote(
        ctx.registry,
        ctx.serving,
        ctx.hook,
        &staged,
        &origin,
        Some(new),
        &ctx.cancel,
    )?;
    Ok(JobOutcome::Promoted { version: v.id })
}

/// The job's decision from the held-out crops' verdict (`proxy_go`, `why`) and the label gate:
/// (promote, why, whether the evidence allowed an automatic promotion at all). A site's own
/// footage (`kind` `tracklets`: no identity labels) is judged by the split-tracklet proxy, which
/// favours what re-tuning trains for: there the operators' labels decide, and only when there are
/// enough of them. Held-out identities of a labelled dataset are honest evidence themselves; a
/// label gate, when there is one, must pass too.
pub fn with_labels(
    proxy_go: bool,
    why: String,
    gate: Option<&LabelGate>,
    kind: &str,
) -> (bool, String, bool) {
    let footage = kind == "tracklets";
    match gate {
        Some(g) if !g.passed => (false, format!("{why}; {}", g.reason), !g.weak || !footage),
        Some(g) if footage && g.weak => (false, format!("{why}; {}", g.reason), false),
        Some(g) => (proxy_go, format!("{why}; {}", g.reason), true),
        None if footage => (
            false,
            format!(
                "{why}; no operators' labels held out: the split-tracklet proxy alone never promotes (label links in the review queue, or an admin promotes explicitly)"
            ),
            false,
        ),
        None => (proxy_go, why, true),
    }
}

fn save_report(data_dir: &Path, r: &JobReport) -> Result<()> {
    let dir = jobs_dir(data_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_atomic(
        &dir.join(format!("{}.json", r.id)),
        serde_json::to_string_pretty(r)?.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(map: f64, macs: u64) -> Score {
        Score {
            rank1: map,
            rank5: map,
            map,
            queries: 10,
            gallery: 50,
            macs,
            params: 1,
        }
    }

    #[test]
    fn promotion_needs_better_or_as_good_and_cheaper() {
        let p = PromotePolicy::default();
        assert!(p.decide(&s(0.5, 100), &s(0.51, 100)).0);
        assert!(
            !p.decide(&s(0.5, 100), &s(0.5, 100)).0,
            "same and not cheaper"
        );
        assert!(p.decide(&s(0.5, 100), &s(0.5, 50)).0, "as good and cheaper");
        assert!(!p.decide(&s(0.5, 100), &s(0.49, 50)).0, "cheaper but worse");
        let lenient = PromotePolicy {
            tolerance: 0.02,
            ..p
        };
        assert!(lenient.decide(&s(0.5, 100), &s(0.49, 50)).0);
        let strict = PromotePolicy {
            min_gain: 0.05,
            ..p
        };
        assert!(!strict.decide(&s(0.5, 100), &s(0.52, 100)).0);
    }

    #[test]
    fn on_site_footage_promotes_only_when_enough_labels_pass() {
        use crate::jobs::evaluate::{GatePolicy, LabelScore};
        let score = |auc: f64, n: usize| LabelScore {
            auc: Some(auc),
            tar: Some(auc),
            far: 0.1,
            rank1: None,
            same_pairs: n / 2,
            different_pairs: n - n / 2,
            rank1_queries: 0,
        };
        let p = GatePolicy::default();
        let why = || "better: held-out mAP 50.0% → 60.0%".to_string();
        // the proxy says better, but there are no labels: no automatic promotion
        let (go, r, auto) = with_labels(true, why(), None, "tracklets");
        assert!(!go && !auto, "{r}");
        assert!(r.contains("never promotes"), "{r}");
        // enough labels, candidate as good: promoted
        let g = p.judge(score(0.9, 40), score(0.9, 40));
        let (go, _, auto) = with_labels(true, why(), Some(&g), "tracklets");
        assert!(go && auto);
        // enough labels, candidate worse on them: kept, whatever the proxy says
        let g = p.judge(score(0.9, 40), score(0.7, 40));
        let (go, r, _) = with_labels(true, why(), Some(&g), "tracklets");
        assert!(!go && r.contains("worse on labels"), "{r}");
        // too few labels: weak, an admin decides
        let g = p.judge(score(0.9, 10), score(0.95, 10));
        let (go, r, auto) = with_labels(true, why(), Some(&g), "tracklets");
        assert!(!go && !auto && r.contains("weak evidence"), "{r}");
        // a labelled dataset's held-out identities decide on their own
        let (go, _, auto) = with_labels(true, why(), None, "identities");
        assert!(go && auto);
        // and the proxy still has a veto
        let g = p.judge(score(0.9, 40), score(0.9, 40));
        assert!(!with_labels(false, why(), Some(&g), "tracklets").0);
    }

    #[test]
    fn job_ids_are_dated() {
        let d = tempfile::tempdir().unwrap();
        let id = new_job_id(d.path());
        assert!(id.starts_with("j-20") && id.len() == 17, "{id}");
    }
}
