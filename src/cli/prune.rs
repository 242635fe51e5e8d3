//! `crosscam prune` and `crosscam prune sweep`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct PruneCmd {
    #[command(subcommand)]
    pub sub: Option<PruneSub>,
    #[command(flatten)]
    pub args: PruneArgs,
}

#[derive(Subcommand, Debug)]
pub enum PruneSub {
    /// Prune with several criteria and ratios; write a table (CSV, Markdown) and a picture (SVG)
    /// of MACs and parameters against the kept fraction of channels.
    Sweep(SweepArgs),
}

/// Settings shared by `prune` and `prune sweep`.
#[derive(Args, Debug)]
pub struct PruneCommonArgs {
    /// `layer`: the same ratio in every group; `global`: one ranking across groups (scores
    /// L2-normalised per group).
    #[arg(long, value_enum, default_value_t = crate::prune::Scope::Layer)]
    pub scope: crate::prune::Scope,
    /// Folder of sample images (person crops; jpg/png) for `apoz` and `mean-activation`.
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// At most this many calibration images are used.
    #[arg(long, default_value_t = 64)]
    pub calibration_images: usize,
    /// Every group keeps at least this many channels.
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MIN_CHANNELS)]
    pub min_channels: usize,
    /// Kept widths are rounded to a multiple of this (1 = no rounding).
    #[arg(long, default_value_t = crate::prune::strategy::DEFAULT_MULTIPLE)]
    pub round_to: usize,
    /// Input size CxHxW when the model's is dynamic (also the size MACs are counted for).
    #[arg(long)]
    pub input: Option<String>,
    /// Also prune the channels of the model's output (changes the embedding dimension).
    #[arg(long)]
    pub prune_output: bool,
    /// Seed of the `random` criterion.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl PruneCommonArgs {
    fn analyze(&self) -> Result<crate::prune::AnalyzeOptions> {
        Ok(crate::prune::AnalyzeOptions {
            input_chw: self
                .input
                .as_deref()
                .map(crate::onnx::info::parse_input_size)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            prune_outputs: self.prune_output,
        })
    }
    fn widths(&self) -> crate::prune::WidthPolicy {
        crate::prune::WidthPolicy {
            min_channels: self.min_channels,
            multiple: self.round_to,
        }
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["target_macs", "ratio"])))]
pub struct PruneArgs {
    /// The ONNX model to prune.
    #[arg(long, required = true)]
    pub model: Option<PathBuf>,
    /// Where to write the pruned ONNX model.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
    /// Channel importance criterion.
    #[arg(long, value_enum, required = true)]
    pub criterion: Option<crate::prune::Criterion>,
    /// Reach the target at once, or in --steps steps (re-scoring after each).
    #[arg(long, value_enum, default_value_t = crate::prune::StrategyKind::OneShot)]
    pub strategy: crate::prune::StrategyKind,
    /// Steps of the iterative strategy.
    #[arg(long, default_value_t = crate::prune::DEFAULT_STEPS)]
    pub steps: usize,
    /// Keep this fraction of the original MACs (e.g. 0.5 halves the cost).
    #[arg(long)]
    pub target_macs: Option<f64>,
    /// Remove this fraction of the prunable channels.
    #[arg(long)]
    pub ratio: Option<f64>,
    #[command(flatten)]
    pub common: PruneCommonArgs,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Print the report as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// The ONNX model to prune.
    #[arg(long)]
    pub model: PathBuf,
    /// Folder for sweep.csv, sweep.md, sweep.svg (and the models with --keep-models).
    #[arg(long)]
    pub out_dir: PathBuf,
    /// Criteria to compare (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [
        crate::prune::Criterion::L1,
        crate::prune::Criterion::L2,
        crate::prune::Criterion::Fpgm,
        crate::prune::Criterion::Random,
    ])]
    pub criteria: Vec<crate::prune::Criterion>,
    /// Channel ratios to remove (comma-separated; default 0,0.1,…,0.8).
    #[arg(long, value_delimiter = ',')]
    pub ratios: Vec<f64>,
    #[command(flatten)]
    pub common: PruneCommonArgs,
    /// Write every pruned model into the folder (to evaluate them).
    #[arg(long)]
    pub keep_models: bool,
    /// Score every pruned model (as pruned, not re-tuned) on this dataset's query/gallery sets:
    /// fills the table's mAP and rank-1 columns and adds an mAP panel. Implies --keep-models.
    #[arg(long)]
    pub eval_dataset: Option<PathBuf>,
    /// Print the rows as JSON on stdout (no progress lines).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: PruneCmd) -> Result<ExitCode> {
    use crate::prune::{self, NoRetune, PruneOptions, Target, criteria};
    if let Some(PruneSub::Sweep(a)) = cmd.sub {
        let opts = prune::sweep::SweepOptions {
            criteria: a.criteria.clone(),
            ratios: if a.ratios.is_empty() {
                prune::sweep::default_ratios()
            } else {
                a.ratios.clone()
            },
            scope: a.common.scope,
            widths: a.common.widths(),
            analyze: a.common.analyze()?,
            calibration: a.common.calibration.clone(),
            calibration_images: a.common.calibration_images,
            seed: a.common.seed,
            keep_models: a.keep_models || a.eval_dataset.is_some(),
            quiet: a.json,
        };
        if let Some(bad) = opts.ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
            anyhow::bail!("--ratios must lie in [0, 1), found {bad}");
        }
        std::fs::create_dir_all(&a.out_dir)
            .with_context(|| format!("cannot create {}", a.out_dir.display()))?;
        let model = crate::onnx::Model::load(&a.model)?;
        let mut rows = prune::sweep::sweep(&model, &opts, &a.out_dir)
            .with_context(|| format!("cannot sweep {}", a.model.display()))?;
        if let Some(dir) = &a.eval_dataset {
            let ds = crate::eval::Dataset::load(dir, None)?;
            let mut progress =
                crate::progress::Progress::new("evaluating", rows.len() as u64).quiet(a.json);
            for r in &mut rows {
                let Some(file) = &r.model else { continue };
                let m = crate::onnx::Model::load(std::path::Path::new(file))?;
                let s = crate::jobs::evaluate::evaluate_dataset(&m, file, &ds, true)
                    .with_context(|| format!("cannot evaluate {file}"))?;
                r.accuracy = Some(s.map);
                r.rank1 = Some(s.rank1);
                progress.inc(1);
            }
            progress.finish();
        }
        let title = format!(
            "{} ({} scope)",
            a.model
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            opts.scope.as_str()
        );
        let files = prune::sweep::write_outputs(&rows, &a.out_dir, &title)
            .with_context(|| format!("cannot write into {}", a.out_dir.display()))?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            print!("{}", prune::sweep::to_markdown(&rows));
            for f in files {
                println!("written: {}", f.display());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let a = cmd.args;
    let (Some(model), Some(out), Some(criterion)) = (a.model, a.out, a.criterion) else {
        anyhow::bail!("--model, --out and --criterion are required");
    };
    let target = match (a.target_macs, a.ratio) {
        (Some(f), None) => Target::Macs(f),
        (None, Some(r)) => Target::Ratio(r),
        _ => anyhow::bail!("give exactly one of --target-macs and --ratio"),
    };
    let opts = PruneOptions {
        strategy: a.strategy,
        steps: a.steps,
        scope: a.common.scope,
        target,
        widths: a.common.widths(),
        analyze: a.common.analyze()?,
        quiet: a.json,
    };
    let mut scorer = criteria::builtin(
        criterion,
        a.common.calibration.as_deref(),
        a.common.calibration_images,
        a.common.seed,
        a.json,
    )?;
    let report = prune::prune_file(&model, &out, &opts, scorer.as_mut(), &mut NoRetune)
        .with_context(|| format!("cannot prune {}", model.display()))?;
    if let Some(p) = &a.report {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", prune::report::render(&report));
        print!("{}", next_steps(&out));
    }
    Ok(ExitCode::SUCCESS)
}

/// What to do with a pruned model: pruning alone costs accuracy, re-tuning wins it back.
fn next_steps(out: &std::path::Path) -> String {
    let out = out.display().to_string();
    let retuned = match out.strip_suffix(".onnx") {
        Some(stem) => format!("{stem}-retuned.onnx"),
        None => format!("{out}-retuned.onnx"),
    };
    format!(
        "\nnext steps (a pruned model has not been re-tuned; its accuracy is lower until it is):\n\
         \x20 re-tune it on your footage (ResNet re-id models): crosscam retune --model {out} --dataset DATASET --out {retuned}\n\
         \x20 score it: crosscam eval --model {out} --dataset DATASET\n\
         \x20 (DATASET: a re-id dataset folder, e.g. from `crosscam dataset build`; docs/retuning.md)\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_name_the_pruned_model() {
        let s = next_steps(std::path::Path::new("out/half.onnx"));
        assert!(
            s.contains(
                "crosscam retune --model out/half.onnx --dataset DATASET --out out/half-retuned.onnx"
            ),
            "{s}"
        );
        assert!(
            s.contains("crosscam eval --model out/half.onnx --dataset DATASET"),
            "{s}"
        );
    }
}
