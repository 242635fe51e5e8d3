//! What a pruning run did, for `--report FILE.json`, `--json` and the terminal: cost before and
//! after, the settings, and kept/total channels per group and per layer.

use serde::Serialize;

use super::strategy::Target;

#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Input file, when pruning a file.
    pub model: Option<String>,
    /// Output file, when one was written.
    pub out: Option<String>,
    pub criterion: String,
    pub strategy: String,
    pub steps: usize,
    pub scope: String,
    pub target: Target,
    pub min_channels: usize,
    pub round_to: usize,
    /// The input size MACs are counted for (batch 1).
    pub input: Vec<i64>,
    /// Multiply-accumulates of conv and linear layers (the convention of `crosscam model info`).
    pub macs_before: u64,
    pub macs_after: u64,
    pub macs_fraction: f64,
    pub params_before: u64,
    pub params_after: u64,
    pub params_fraction: f64,
    /// Channels of the prunable groups, before and after.
    pub channels_before: usize,
    pub channels_after: usize,
    /// `channels_after / channels_before`.
    pub kept_fraction: f64,
    /// Declared output shapes, before and after (the embedding dimension is kept unless asked).
    pub outputs_before: Vec<Vec<String>>,
    pub outputs_after: Vec<Vec<String>>,
    pub step_reports: Vec<StepReport>,
    pub groups: Vec<GroupReport>,
    pub layers: Vec<LayerReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: usize,
    /// The channel ratio removed at this step (of the channels present before it).
    pub ratio: f64,
    /// MACs after this step, as a fraction of the original model's.
    pub macs_fraction: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    pub name: String,
    pub kept: usize,
    pub total: usize,
    /// Joined through residual additions (several producing layers).
    pub coupled: bool,
    /// The layers producing these channels.
    pub members: Vec<String>,
    /// Why the group was not pruned, when it may not be.
    pub fixed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub node: String,
    pub op: String,
    /// Output channels kept / at the start.
    pub kept: usize,
    pub total: usize,
    /// Input channels (features for linear layers) kept / at the start.
    pub in_kept: usize,
    pub in_total: usize,
}

fn pct(f: f64) -> String {
    format!("{:.1}%", 100.0 * f)
}

fn g(v: u64) -> String {
    if v >= 1_000_000_000 {
        format!("{:.3} G", v as f64 / 1e9)
    } else {
        format!("{:.2} M", v as f64 / 1e6)
    }
}

/// A terminal summary.
pub fn render(r: &PruneReport) -> String {
    let mut s = String::new();
    let target = match r.target {
        Target::Macs(f) => format!("{} of the MACs", pct(f)),
        Target::Ratio(x) => format!("{} of the channels removed", pct(x)),
    };
    s.push_str(&format!(
        "criterion {}  strategy {} ({} step{})  scope {}  target {}\n",
        r.criterion,
        r.strategy,
        r.steps,
        if r.steps == 1 { "" } else { "s" },
        r.scope,
        target
    ));
    s.push_str(&format!(
        "MACs    {} -> {}  ({})   input {}\n",
        g(r.macs_before),
        g(r.macs_after),
        pct(r.macs_fraction),
        r.input
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x")
    ));
    s.push_str(&format!(
        "params  {} -> {}  ({})\n",
        g(r.params_before),
        g(r.params_after),
        pct(r.params_fraction)
    ));
    s.push_str(&format!(
        "prunable channels {} -> {} ({} kept)\n",
        r.channels_before,
        r.channels_after,
        pct(r.kept_fraction)
    ));
    s.push_str("\ngroup                                    kept/total  members\n");
    for grp in &r.groups {
        let note = match &grp.fixed {
            Some(f) => format!("fixed: {f}"),
            None if grp.coupled => format!("{} coupled layers", grp.members.len()),
            None => String::new(),
        };
        s.push_str(&format!(
            "{:<40} {:>5}/{:<5}  {}\n",
            truncate(&grp.name, 40),
            grp.kept,
            grp.total,
            note
        ));
    }
    if let Some(o) = &r.out {
        s.push_str(&format!("\nwritten: {o}\n"));
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(n - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
