//! `crosscam study`: a grid of pruning scenarios × criteria × prune levels on one model and one
//! dataset, each run re-tuned within the same budget and scored on the dataset's held-out query
//! and gallery sets; a table (CSV, Markdown) and pictures like the paper's Figure 3 (mAP against
//! GMACs, rank-1 against parameters).
//!
//! The grid: S0 once (the input model); S5 once per prune level (a narrower fresh network: no
//! criterion); S1–S4 for every criterion and level (S2 skips `taylor`, which it cannot use).
//! Level 1.0 means no pruning: S1–S4 then only train, once (criterion `–`). Rows are written after
//! every run, so an interrupted study keeps what it did and `--resume` skips it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::jobs::evaluate::{Score, evaluate_dataset};
use crate::plot::{Chart, Figure, Legend, Series};
use crate::prune::{Criterion, Scope, StrategyKind, WidthPolicy};
use crate::train::Cancel;
use crate::train::distill::Teacher;
use crate::train::sampler::PkConfig;
use crate::train::scenario::{Budget, RetuneControl, RetuneData, RetuneOptions, Scenario, retune};

/// `study.toml`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// The model every run starts from (ONNX file or manifest name).
    pub model: String,
    /// Dataset folder: train split for training, query + gallery for scoring.
    pub dataset: PathBuf,
    /// Where the table, pictures and (with `keep_models`) models go.
    pub out_dir: PathBuf,
    /// Distillation teacher (S1, S5).
    #[serde(default = "default_teacher")]
    pub teacher: String,
    /// Cameras of the source data (labelled; pre-training crops). Empty: all.
    #[serde(default)]
    pub source_cameras: Vec<String>,
    /// Cameras of the target footage (unlabelled). Empty: all.
    #[serde(default)]
    pub target_cameras: Vec<String>,
    #[serde(default = "default_scenarios")]
    pub scenarios: Vec<String>,
    #[serde(default = "default_criteria")]
    pub criteria: Vec<String>,
    /// Fractions of the MACs kept (1.0 = no pruning).
    #[serde(default = "default_levels")]
    pub target_macs: Vec<f64>,
    /// Training budget of every run (`2ep`, `90s`, …).
    #[serde(default = "default_budget")]
    pub budget: String,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub steps: Option<usize>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub min_channels: Option<usize>,
    #[serde(default)]
    pub round_to: Option<usize>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub lr: Option<f64>,
    /// P×K, e.g. "8x4".
    #[serde(default)]
    pub batch: Option<String>,
    /// Write every run's model into `out_dir/models/`.
    #[serde(default)]
    pub keep_models: bool,
    /// Free text for the report (machine, load, dataset command).
    #[serde(default)]
    pub note: Option<String>,
}

fn default_teacher() -> String {
    "mobilenetv2-imagenet".into()
}
fn default_scenarios() -> Vec<String> {
    ["S0", "S1", "S2", "S3", "S4", "S5"]
        .map(String::from)
        .to_vec()
}
fn default_criteria() -> Vec<String> {
    ["l1", "random"].map(String::from).to_vec()
}
fn default_levels() -> Vec<f64> {
    vec![0.5]
}
fn default_budget() -> String {
    "2ep".into()
}

impl StudyConfig {
    pub fn load(path: &Path) -> Result<StudyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut c: StudyConfig = toml::from_str(&text)
            .with_context(|| format!("{}: not a study config", path.display()))?;
        // relative paths are relative to the config file's folder... except those that exist
        // relative to the working directory (the examples are written for the repository root)
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut c.dataset, &mut c.out_dir] {
            if p.is_relative() && !p.exists() && base.join(&*p).exists() {
                *p = base.join(&*p);
            }
        }
        Ok(c)
    }

    fn parse<T: clap::ValueEnum>(s: &str, what: &str) -> Result<T> {
        T::from_str(s, true).map_err(|e| anyhow::anyhow!("{what} {s:?}: {e}"))
    }

    /// The runs of the grid, in order.
    pub fn runs(&self) -> Result<Vec<RunKey>> {
        let scenarios: Vec<Scenario> = self
            .scenarios
            .iter()
            .map(|s| s.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        let criteria: Vec<Criterion> = self
            .criteria
            .iter()
            .map(|c| Self::parse(c, "criterion"))
            .collect::<Result<_>>()?;
        for &l in &self.target_macs {
            anyhow::ensure!(l > 0.0 && l <= 1.0, "target_macs {l}: must be in (0, 1]");
        }
        let mut runs = Vec::new();
        for &s in &scenarios {
            match s {
                Scenario::S0 => runs.push(RunKey::new(s, None, 1.0)),
                Scenario::S5 => {
                    for &l in &self.target_macs {
                        runs.push(RunKey::new(s, None, l));
                    }
                }
                _ => {
                    for &l in &self.target_macs {
                        if l >= 1.0 {
                            runs.push(RunKey::new(s, None, 1.0));
                            continue;
                        }
                        for &c in &criteria {
                            if s == Scenario::S2 && c == Criterion::Taylor {
                                continue;
                            }
                            runs.push(RunKey::new(s, Some(c), l));
                        }
                    }
                }
            }
        }
        runs.dedup();
        Ok(runs)
    }

    pub fn budget(&self) -> Result<Budget> {
        self.budget.parse().map_err(anyhow::Error::msg)
    }

    pub fn options(&self, key: &RunKey, quiet: bool) -> Result<RetuneOptions> {
        let d = RetuneOptions::default();
        let pk = match &self.batch {
            None => d.pk,
            Some(b) => {
                let (p, k) = b
                    .split_once(['x', 'X'])
                    .with_context(|| format!("batch {b:?}: expected PxK"))?;
                PkConfig {
                    p: p.trim().parse()?,
                    k: k.trim().parse()?,
                }
            }
        };
        Ok(RetuneOptions {
            scenario: key.scenario,
            budget: self.budget()?,
            target_macs: key.target_macs,
            criterion: key.criterion.unwrap_or(Criterion::L1),
            strategy: match &self.strategy {
                Some(s) => Self::parse::<StrategyKind>(s, "strategy")?,
                None => d.strategy,
            },
            steps: self.steps.unwrap_or(d.steps),
            scope: match &self.scope {
                Some(s) => Self::parse::<Scope>(s, "scope")?,
                None => d.scope,
            },
            widths: WidthPolicy {
                min_channels: self.min_channels.unwrap_or(d.widths.min_channels),
                multiple: self.round_to.unwrap_or(d.widths.multiple),
            },
            seed: self.seed,
            pk,
            lr: self.lr.unwrap_or(d.lr),
            quiet,
            ..d
        })
    }
}

/// One cell of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    pub scenario: Scenario,
    pub criterion: Option<Criterion>,
    pub target_macs: f64,
}

impl RunKey {
    fn new(scenario: Scenario, criterion: Option<Criterion>, target_macs: f64) -> RunKey {
        RunKey {
            scenario,
            criterion,
            target_macs,
        }
    }

    /// `S4-l1-0.50`.
    pub fn name(&self) -> String {
        format!(
            "{}-{}-{:.2}",
            self.scenario,
            self.criterion
                .map(|c| c.to_string())
                .unwrap_or("none".into()),
            self.target_macs
        )
    }
}

/// One row of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyRow {
    #[serde(flatten)]
    pub key: RunKey,
    pub macs: u64,
    pub params: u64,
    pub rank1: f64,
    pub rank5: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
    pub queries: usize,
    /// Training seconds of the run.
    pub train_seconds: f64,
    pub model: Option<String>,
    /// Set when the run failed (the other fields are then zero).
    pub error: Option<String>,
}

/// What `study.json` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StudyResults {
    pub config: Option<StudyConfig>,
    pub rows: Vec<StudyRow>,
    pub seconds: f64,
}

/// Runs the grid (skipping rows already in `previous`), writing the outputs after every run.
pub fn run_study(
    cfg: &StudyConfig,
    previous: Option<StudyResults>,
    teacher: &mut Option<&mut dyn Teacher>,
    cancel: &Cancel,
    quiet: bool,
) -> Result<StudyResults> {
    let t0 = std::time::Instant::now();
    let path = crate::models::model_file(&cfg.model)?;
    let input = crate::onnx::Model::load(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let (ds, site) = crate::train::site::load_dataset(&cfg.dataset)?;
    let names = crate::train::site::camera_names_of;
    let data = RetuneData {
        source: site.with_cameras(&names(&cfg.source_cameras)),
        target: site
            .with_cameras(&names(&cfg.target_cameras))
            .without_labels(),
    };
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("cannot create {}", cfg.out_dir.display()))?;
    let runs = cfg.runs()?;
    let mut res = previous.unwrap_or_default();
    let spent = res.seconds;
    res.config = Some(cfg.clone());
    let total = runs.len() as u64;
    let mut progress = crate::progress::Progress::new("study runs", total).quiet(quiet);
    for key in runs {
        if res.rows.iter().any(|r| r.key == key && r.error.is_none()) {
            progress.inc(1);
            continue;
        }
        if cancel.is_cancelled() {
            break;
        }
        progress.note(key.name());
        let row = match one_run(cfg, &key, &input, &data, &ds, teacher, cancel, quiet) {
            Ok(r) => r,
            Err(e) if cancel.is_cancelled() => {
                tracing::info!("study cancelled during {}: {e:#}", key.name());
                break;
            }
            Err(e) => {
                tracing::warn!("{} failed: {e:#}", key.name());
                StudyRow {
                    key: key.clone(),
                    macs: 0,
                    params: 0,
                    rank1: 0.0,
                    rank5: 0.0,
                    map: 0.0,
                    queries: 0,
                    train_seconds: 0.0,
                    model: None,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        res.rows.retain(|r| r.key != key);
        res.rows.push(row);
        res.seconds = spent + t0.elapsed().as_secs_f64();
        write_outputs(&res, &cfg.out_dir)?;
        progress.inc(1);
    }
    progress.finish();
    res.seconds = spent + t0.elapsed().as_secs_f64();
    write_outputs(&res, &cfg.out_dir)?;
    Ok(res)
}

#[allow(clippy::too_many_arguments)]
fn one_run(
    cfg: &StudyConfig,
    key: &RunKey,
    input: &crate::onnx::Model,
    data: &RetuneData,
    ds: &crate::eval::Dataset,
    teacher: &mut Option<&mut dyn Teacher>,
    cancel: &Cancel,
    quiet: bool,
) -> Result<StudyRow> {
    let opts = cfg.options(key, quiet)?;
    let r = retune(
        input,
        data,
        &opts,
        RetuneControl {
            cancel: cancel.clone(),
            teacher: teacher.as_deref_mut().map(|t| t as &mut dyn Teacher),
        },
    )?;
    let score: Score = evaluate_dataset(&r.model, &key.name(), ds, quiet)?;
    let model = if cfg.keep_models {
        let dir = cfg.out_dir.join("models");
        std::fs::create_dir_all(&dir)?;
        let p = dir.join(format!("{}.onnx", key.name()));
        r.model.save(&p)?;
        Some(p.display().to_string())
    } else {
        None
    };
    Ok(StudyRow {
        key: key.clone(),
        macs: score.macs,
        params: score.params,
        rank1: score.rank1,
        rank5: score.rank5,
        map: score.map,
        queries: score.queries,
        // + 0.0: an empty float sum is -0.0, which would print as "-0"
        train_seconds: r.report.phases.iter().map(|p| p.seconds).sum::<f64>() + 0.0,
        model,
        error: None,
    })
}

pub fn to_csv(rows: &[StudyRow]) -> String {
    let mut s = String::from(
        "scenario,criterion,target_macs,gmacs,mparams,rank1,rank5,mAP,queries,train_seconds,error\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{:.2},{:.4},{:.4},{:.4},{:.4},{:.4},{},{:.0},{}\n",
            r.key.scenario,
            r.key.criterion.map(|c| c.to_string()).unwrap_or_default(),
            r.key.target_macs,
            r.macs as f64 / 1e9,
            r.params as f64 / 1e6,
            r.rank1,
            r.rank5,
            r.map,
            r.queries,
            r.train_seconds,
            crate::eval::model::csv_field(r.error.as_deref().unwrap_or(""))
        ));
    }
    s
}

pub fn to_markdown(rows: &[StudyRow]) -> String {
    let mut s = String::from(
        "| scenario | criterion | MACs kept (goal) | GMACs | M params | rank-1 | rank-5 | mAP | train s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        if let Some(e) = &r.error {
            s.push_str(&format!(
                "| {} | {} | {:.0}% | failed: {} |||||\n",
                r.key.scenario,
                r.key.criterion.map(|c| c.to_string()).unwrap_or("–".into()),
                100.0 * r.key.target_macs,
                e.replace('|', "/")
            ));
            continue;
        }
        s.push_str(&format!(
            "| {} | {} | {:.0}% | {:.3} | {:.2} | {:.1}% | {:.1}% | {:.1}% | {:.0} |\n",
            r.key.scenario,
            r.key.criterion.map(|c| c.to_string()).unwrap_or("–".into()),
            100.0 * r.key.target_macs,
            r.macs as f64 / 1e9,
            r.params as f64 / 1e6,
            100.0 * r.rank1,
            100.0 * r.rank5,
            100.0 * r.map,
            r.train_seconds
        ));
    }
    s
}

/// Figure 3 of the paper, for this grid: mAP against GMACs and rank-1 against parameters, one
/// series per scenario (and criterion), S0 as the reference point.
pub fn figure(rows: &[StudyRow], title: &str) -> Figure {
    let ok: Vec<&StudyRow> = rows.iter().filter(|r| r.error.is_none()).collect();
    let mut groups: BTreeMap<String, Vec<&StudyRow>> = BTreeMap::new();
    for r in &ok {
        let name = match (r.key.scenario, r.key.criterion) {
            (s, Some(c)) => format!("{s} {c}"),
            (s, None) => s.to_string(),
        };
        groups.entry(name).or_default().push(r);
    }
    let max_x = |f: fn(&StudyRow) -> f64| ok.iter().map(|r| f(r)).fold(0.0, f64::max) * 1.1;
    let max_y =
        |f: fn(&StudyRow) -> f64| (ok.iter().map(|r| f(r)).fold(0.0, f64::max) * 1.15).max(0.05);
    let panel =
        |title: &str, xl: &str, yl: &str, fx: fn(&StudyRow) -> f64, fy: fn(&StudyRow) -> f64| {
            let mut c = Chart::new(title)
                .x_label(xl)
                .y_label(yl)
                .x_range(0.0, max_x(fx).max(1e-3))
                .y_range(0.0, max_y(fy))
                .legend(Legend::BottomRight);
            for (name, rs) in &groups {
                let mut pts: Vec<(f64, f64)> = rs.iter().map(|r| (fx(r), fy(r))).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let s = if pts.len() > 1 {
                    Series::line(name.clone(), pts).markers()
                } else {
                    Series::scatter(name.clone(), pts)
                };
                c.push(s);
            }
            c
        };
    Figure::new(vec![
        panel(
            "mAP vs GMACs",
            "GMACs per crop",
            "mAP",
            |r| r.macs as f64 / 1e9,
            |r| r.map,
        ),
        panel(
            "rank-1 vs parameters",
            "parameters (M)",
            "rank-1",
            |r| r.params as f64 / 1e6,
            |r| r.rank1,
        ),
    ])
    .columns(2)
    .title(title)
}

/// Writes `study.json`, `study.csv`, `study.md` and `study.svg` into `dir`.
pub fn write_outputs(res: &StudyResults, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let title = res
        .config
        .as_ref()
        .map(|c| {
            format!(
                "{} on {} (budget {})",
                Path::new(&c.model)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_else(|| c.model.clone()),
                c.dataset
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                c.budget
            )
        })
        .unwrap_or_else(|| "study".into());
    let files = [
        ("study.json", serde_json::to_string_pretty(res)? + "\n"),
        ("study.csv", to_csv(&res.rows)),
        (
            "study.md",
            format!(
                "# {title}\n\n![mAP vs GMACs, rank-1 vs parameters](study.svg)\n\n{}\n{:.0} s in all.\n",
                to_markdown(&res.rows),
                res.seconds
            ),
        ),
    ];
    let mut out = Vec::new();
    for (name, text) in files {
        let p = dir.join(name);
        crate::jobs::registry::write_atomic(&p, text.as_bytes())?;
        out.push(p);
    }
    let svg = dir.join("study.svg");
    figure(&res.rows, &title).save_svg(&svg)?;
    out.push(svg);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> StudyConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_grid_follows_the_scenarios() {
        let c = cfg(r#"
            model = "m.onnx"
            dataset = "ds"
            out_dir = "out"
            scenarios = ["S0", "S2", "S4", "S5"]
            criteria = ["l1", "taylor"]
            target_macs = [0.5, 1.0]
        "#);
        let names: Vec<String> = c.runs().unwrap().iter().map(RunKey::name).collect();
        assert_eq!(
            names,
            [
                "S0-none-1.00",
                "S2-l1-0.50",
                "S2-none-1.00",
                "S4-l1-0.50",
                "S4-taylor-0.50",
                "S4-none-1.00",
                "S5-none-0.50",
                "S5-none-1.00"
            ]
        );
        assert!(
            cfg(r#"
            model = "m.onnx"
            dataset = "ds"
            out_dir = "out"
            scenarios = ["S7"]
        "#)
            .runs()
            .is_err()
        );
        assert!(
            toml::from_str::<StudyConfig>(
                "model = \"m\"\ndataset = \"d\"\nout_dir = \"o\"\nbogus = 1\n"
            )
            .is_err()
        );
    }

    #[test]
    fn tables_and_figure_render() {
        let row = |s: Scenario, c: Option<Criterion>, l: f64, map: f64| StudyRow {
            key: RunKey::new(s, c, l),
            macs: (130e6 * l) as u64,
            params: (2.8e6 * l) as u64,
            rank1: map + 0.05,
            rank5: map + 0.1,
            map,
            queries: 78,
            train_seconds: 60.0,
            model: None,
            error: None,
        };
        let rows = vec![
            row(Scenario::S0, None, 1.0, 0.2),
            row(Scenario::S4, Some(Criterion::L1), 0.5, 0.25),
            row(Scenario::S4, Some(Criterion::L1), 0.25, 0.2),
        ];
        let csv = to_csv(&rows);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.contains("S4,l1,0.50,0.0650"));
        assert!(to_markdown(&rows).contains("| S4 | l1 | 50% | 0.065 |"));
        let svg = figure(&rows, "t").to_svg();
        assert!(svg.contains("mAP vs GMACs") && svg.contains("S4 l1"));
    }
}
