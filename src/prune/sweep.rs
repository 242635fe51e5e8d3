//! `crosscam prune sweep`: cost against kept channels for several criteria and ratios, as a table
//! (CSV and Markdown) and a picture (SVG). Each criterion is scored once; every ratio is then
//! applied and measured for real. With `--eval-dataset` every pruned model (not re-tuned) is also
//! scored on a dataset's query/gallery sets: `accuracy` is then its mAP, `rank1` its rank-1, and
//! the picture gets a third panel, mAP against MACs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::onnx::{Model, cost, shape};
use crate::plot::{Chart, Figure, Legend, Series};
use crate::progress::Progress;

use super::criteria::{self, Criterion};
use super::groups::{self, AnalyzeOptions};
use super::strategy::{Planner, Scope, WidthPolicy};
use super::{PruneError, apply, ir};

#[derive(Clone, Debug)]
pub struct SweepOptions {
    pub criteria: Vec<Criterion>,
    /// Channel ratios to remove (0 = the original).
    pub ratios: Vec<f64>,
    pub scope: Scope,
    pub widths: WidthPolicy,
    pub analyze: AnalyzeOptions,
    pub calibration: Option<PathBuf>,
    pub calibration_images: usize,
    pub seed: u64,
    /// Write every pruned model next to the table (for evaluation).
    pub keep_models: bool,
    pub quiet: bool,
}

/// Default ratios: 0 to 0.8 in steps of 0.1.
pub fn default_ratios() -> Vec<f64> {
    (0..=8).map(|i| i as f64 / 10.0).collect()
}

#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub criterion: String,
    pub scope: String,
    pub ratio: f64,
    /// Kept share of the prunable channels (after rounding to the width multiple).
    pub kept_fraction: f64,
    pub macs: u64,
    pub macs_fraction: f64,
    pub params: u64,
    pub params_fraction: f64,
    /// The pruned model, when kept.
    pub model: Option<String>,
    /// mAP on the evaluation dataset (`--eval-dataset`); empty without one.
    pub accuracy: Option<f64>,
    /// Rank-1 on the evaluation dataset; empty without one.
    pub rank1: Option<f64>,
}

/// Runs the sweep; with `keep_models`, writes `<criterion>-r<ratio>.onnx` into `out_dir`.
pub fn sweep(
    model: &Model,
    opts: &SweepOptions,
    out_dir: &Path,
) -> Result<Vec<SweepRow>, PruneError> {
    let m = ir::import(model)?;
    let a = groups::analyze(&m, &opts.analyze)?;
    let c0 = cost::cost(&m, &a.shapes)?;
    let mut rows = Vec::new();
    let mut progress =
        Progress::new("sweep", (opts.criteria.len() * opts.ratios.len()) as u64).quiet(opts.quiet);
    for &crit in &opts.criteria {
        let mut scorer = criteria::builtin(
            crit,
            opts.calibration.as_deref(),
            opts.calibration_images,
            opts.seed,
            opts.quiet,
        )?;
        progress.note(crit.to_string());
        let scores = scorer.score(&m, &a)?;
        let planner = Planner::new(&a, scores, opts.scope, opts.widths)?;
        for &r in &opts.ratios {
            let counts = planner.counts(r);
            let (total, kept) = planner.kept(&counts);
            let pruned = apply::apply(&m, &a, &planner.select(&counts), &opts.analyze)?;
            let s = shape::infer(
                &pruned,
                &shape::input_shapes(&pruned, 1, opts.analyze.input_chw.as_deref())?,
            );
            let c = cost::cost(&pruned, &s)?;
            let file = if opts.keep_models {
                let p = out_dir.join(format!("{crit}-r{r:.2}.onnx"));
                pruned.save(&p)?;
                Some(p.display().to_string())
            } else {
                None
            };
            rows.push(SweepRow {
                criterion: crit.to_string(),
                scope: opts.scope.as_str().into(),
                ratio: r,
                kept_fraction: if total == 0 {
                    1.0
                } else {
                    kept as f64 / total as f64
                },
                macs: c.macs,
                macs_fraction: c.macs as f64 / c0.macs.max(1) as f64,
                params: c.params,
                params_fraction: c.params as f64 / c0.params.max(1) as f64,
                model: file,
                accuracy: None,
                rank1: None,
            });
            progress.inc(1);
        }
    }
    progress.finish();
    Ok(rows)
}

pub fn to_csv(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "criterion,scope,ratio,kept_fraction,macs,macs_fraction,params,params_fraction,model,accuracy,rank1\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{},{:.3},{:.4},{},{:.4},{},{:.4},{},{},{}\n",
            r.criterion,
            r.scope,
            r.ratio,
            r.kept_fraction,
            r.macs,
            r.macs_fraction,
            r.params,
            r.params_fraction,
            r.model.as_deref().unwrap_or(""),
            r.accuracy.map(|a| format!("{a:.4}")).unwrap_or_default(),
            r.rank1.map(|a| format!("{a:.4}")).unwrap_or_default()
        ));
    }
    s
}

pub fn to_markdown(rows: &[SweepRow]) -> String {
    let mut s = String::from(
        "| criterion | scope | ratio | kept channels | GMACs | MACs kept | M params | params kept | mAP | rank-1 |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.1}% | {:.3} | {:.1}% | {:.2} | {:.1}% | {} | {} |\n",
            r.criterion,
            r.scope,
            r.ratio,
            100.0 * r.kept_fraction,
            r.macs as f64 / 1e9,
            100.0 * r.macs_fraction,
            r.params as f64 / 1e6,
            100.0 * r.params_fraction,
            r.accuracy
                .map(|a| format!("{:.1}%", 100.0 * a))
                .unwrap_or_else(|| "–".into()),
            r.rank1
                .map(|a| format!("{:.1}%", 100.0 * a))
                .unwrap_or_else(|| "–".into())
        ));
    }
    s
}

/// Two panels: MACs and parameters (fractions of the original) against kept channels, one line
/// per criterion.
pub fn figure(rows: &[SweepRow], title: &str) -> Figure {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.criterion.as_str()) {
            names.push(&r.criterion);
        }
    }
    let panel = |what: &str, pick: fn(&SweepRow) -> f64| {
        let mut c = Chart::new(format!("{what} vs kept channels"))
            .x_label("kept fraction of prunable channels")
            .y_label(format!("{what} (fraction of original)"))
            .x_range(0.0, 1.0)
            .y_range(0.0, 1.0)
            .legend(Legend::TopLeft);
        for n in &names {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.criterion == *n)
                .map(|r| (r.kept_fraction, pick(r)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.push(Series::line(*n, pts).markers());
        }
        c
    };
    let mut charts = vec![
        panel("MACs", |r| r.macs_fraction),
        panel("params", |r| r.params_fraction),
    ];
    if rows.iter().any(|r| r.accuracy.is_some()) {
        let top = rows.iter().filter_map(|r| r.accuracy).fold(0.0, f64::max);
        let mut c = Chart::new("mAP vs MACs (pruned, not re-tuned)")
            .x_label("MACs (fraction of original)")
            .y_label("mAP")
            .x_range(0.0, 1.0)
            .y_range(0.0, (top * 1.15).max(0.05))
            .legend(Legend::TopLeft);
        for n in &names {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.criterion == *n)
                .filter_map(|r| r.accuracy.map(|a| (r.macs_fraction, a)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            c.push(Series::line(*n, pts).markers());
        }
        charts.push(c);
    }
    let cols = charts.len();
    Figure::new(charts).columns(cols).title(title)
}

/// Writes `sweep.csv`, `sweep.md` and `sweep.svg` into `dir`; returns their paths.
pub fn write_outputs(rows: &[SweepRow], dir: &Path, title: &str) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let csv = dir.join("sweep.csv");
    let md = dir.join("sweep.md");
    let svg = dir.join("sweep.svg");
    std::fs::write(&csv, to_csv(rows))?;
    std::fs::write(
        &md,
        format!("# {title}\n\n![sweep](sweep.svg)\n\n{}", to_markdown(rows)),
    )?;
    figure(rows, title).save_svg(&svg)?;
    Ok(vec![csv, md, svg])
}
