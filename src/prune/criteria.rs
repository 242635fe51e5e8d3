//! Channel importance: which channels of a group to keep (higher score = more important).
//!
//! Weight criteria (`l1`, `l2`, `fpgm`, `bn-scale`, `random`) look at the stored model only.
//! `apoz` and `mean-activation` run the model on calibration images and observe each group's
//! activations. `taylor` needs gradients, which only the training engine can compute: it plugs in
//! through [`GradientSource`] (wrapped by [`TaylorScorer`]); any other scoring scheme can implement
//! [`ChannelScorer`] directly.
//!
//! A group's score combines its members' scores: each member's score vector is L2-normalised, then
//! the vectors are averaged, so a layer with larger weights does not outvote the others.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::onnx::{Model, ValueInfo};

use super::PruneError;
use super::groups::{Analysis, Role, filters};

/// The criteria `crosscam prune --criterion` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Σ|W| of each output filter (Li et al. 2017).
    L1,
    /// ‖W‖₂ of each output filter (soft filter pruning, He et al. 2018).
    L2,
    /// Distance of each filter to the others; filters near the geometric median are redundant
    /// (He et al. 2019).
    Fpgm,
    /// |γ| of the BatchNorm after each conv (network slimming, Liu et al. 2017).
    BnScale,
    /// Uniform random scores (the baseline every study needs).
    Random,
    /// 1 − average percentage of zeros after the activation, over calibration images (Hu et al. 2016).
    Apoz,
    /// Mean absolute activation over calibration images.
    MeanActivation,
    /// First-order Taylor expansion of the loss (Molchanov et al. 2017/2019): needs gradients.
    Taylor,
}

impl Criterion {
    pub fn as_str(self) -> &'static str {
        match self {
            Criterion::L1 => "l1",
            Criterion::L2 => "l2",
            Criterion::Fpgm => "fpgm",
            Criterion::BnScale => "bn-scale",
            Criterion::Random => "random",
            Criterion::Apoz => "apoz",
            Criterion::MeanActivation => "mean-activation",
            Criterion::Taylor => "taylor",
        }
    }
    /// Whether it needs `--calibration` images.
    pub fn needs_calibration(self) -> bool {
        matches!(self, Criterion::Apoz | Criterion::MeanActivation)
    }
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scores the channels of a model's groups.
///
/// Called once per pruning step, on the current (possibly already pruned and re-tuned) model.
pub trait ChannelScorer {
    /// The criterion's name, for reports.
    fn name(&self) -> String;
    /// `result[g.id]` holds one score per channel of group `g` (length `g.channels`, higher = more
    /// important) for every prunable group of `analysis`; entries of other groups may be empty.
    fn score(&mut self, model: &Model, analysis: &Analysis) -> Result<Vec<Vec<f32>>, PruneError>;
}

/// Gradients from the training engine, for the `taylor` criterion.
///
/// The training engine builds its network from the same ONNX model, runs forward and backward
/// passes on its own data, and reports per-channel Taylor importance for the tensors the pruner
/// names (each group's activations, see [`super::PruneGroup::activations`]; all are `[N, C, …]`).
/// The recommended estimate (Molchanov et al. 2017) is, per channel `c`, the sum over batches of
/// `|mean over batch and positions of a[:, c] · ∂L/∂a[:, c]|`.
pub trait GradientSource {
    /// One value per channel for each name in `activations` (every name must be answered).
    fn taylor(
        &mut self,
        model: &Model,
        activations: &[String],
    ) -> Result<HashMap<String, Vec<f32>>, Box<dyn std::error::Error + Send + Sync>>;
}

/// The `taylor` criterion on top of a [`GradientSource`].
pub struct TaylorScorer<G: GradientSource> {
    pub source: G,
}

impl<G: GradientSource> ChannelScorer for TaylorScorer<G> {
    fn name(&self) -> String {
        "taylor".into()
    }
    fn score(&mut self, model: &Model, analysis: &Analysis) -> Result<Vec<Vec<f32>>, PruneError> {
        let wanted = activation_names(analysis);
        let got = self.source.taylor(model, &wanted).map_err(|e| {
            PruneError::Criterion(format!("taylor: the gradient source failed: {e}"))
        })?;
        per_group_from_values(analysis, &got, "taylor")
    }
}

/// The activation tensors of all prunable groups, without duplicates, in group order.
pub fn activation_names(analysis: &Analysis) -> Vec<String> {
    let mut seen = HashSet::new();
    analysis
        .prunable()
        .flat_map(|g| g.activations.iter().cloned())
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

fn per_group_from_values(
    analysis: &Analysis,
    per_value: &HashMap<String, Vec<f32>>,
    what: &str,
) -> Result<Vec<Vec<f32>>, PruneError> {
    let mut out = vec![Vec::new(); analysis.groups.len()];
    for g in analysis.prunable() {
        let mut members = Vec::new();
        for v in &g.activations {
            let s = per_value.get(v).ok_or_else(|| {
                PruneError::Criterion(format!(
                    "{what}: no scores for tensor '{v}' of group '{}'",
                    g.name
                ))
            })?;
            if s.len() != g.channels {
                return Err(PruneError::Criterion(format!(
                    "{what}: {} scores for tensor '{v}', which has {} channels",
                    s.len(),
                    g.channels
                )));
            }
            members.push(s.clone());
        }
        out[g.id] = combine(&members);
    }
    Ok(out)
}

/// Averages member score vectors after L2-normalising each (a zero vector stays zero).
pub fn combine(members: &[Vec<f32>]) -> Vec<f32> {
    let Some(first) = members.first() else {
        return Vec::new();
    };
    let mut acc = vec![0f64; first.len()];
    for m in members {
        let norm = m
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for (a, &v) in acc.iter_mut().zip(m) {
                *a += v as f64 / norm;
            }
        }
    }
    acc.iter()
        .map(|&a| (a / members.len() as f64) as f32)
        .collect()
}

/// Σ|w| of each filter.
pub fn l1(filters: &[Vec<f32>]) -> Vec<f32> {
    filters
        .iter()
        .map(|f| f.iter().map(|v| v.abs()).sum())
        .collect()
}

/// ‖w‖₂ of each filter.
pub fn l2(filters: &[Vec<f32>]) -> Vec<f32> {
    filters
        .iter()
        .map(|f| f.iter().map(|v| v * v).sum::<f32>().sqrt())
        .collect()
}

/// FPGM: Σ over the other filters of the Euclidean distance. The filter nearest the geometric
/// median of the layer has the smallest sum: the others can stand in for it, so it goes first.
pub fn fpgm(filters: &[Vec<f32>]) -> Vec<f32> {
    let n = filters.len();
    let mut s = vec![0f64; n];
    for i in 0..n {
        for j in i + 1..n {
            let d = filters[i]
                .iter()
                .zip(&filters[j])
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            s[i] += d;
            s[j] += d;
        }
    }
    s.into_iter().map(|v| v as f32).collect()
}

/// The weight-only criteria.
pub struct WeightScorer {
    pub criterion: Criterion,
}

impl ChannelScorer for WeightScorer {
    fn name(&self) -> String {
        self.criterion.to_string()
    }
    fn score(&mut self, model: &Model, analysis: &Analysis) -> Result<Vec<Vec<f32>>, PruneError> {
        let roles: HashMap<usize, &Role> = analysis.roles.iter().map(|(i, r)| (*i, r)).collect();
        let mut out = vec![Vec::new(); analysis.groups.len()];
        for g in analysis.prunable() {
            let mut members = Vec::new();
            if self.criterion == Criterion::BnScale {
                if g.norms.is_empty() {
                    return Err(PruneError::Criterion(format!(
                        "bn-scale needs a BatchNormalization on every pruned group, and group '{}' has none \
                         (the exporter may have folded BatchNorm into the conv biases; use l1, l2 or fpgm)",
                        g.name
                    )));
                }
                for m in &g.norms {
                    let n = &model.graph.nodes[m.node];
                    let gamma = n
                        .input(1)
                        .and_then(|s| model.graph.initializers.get(s))
                        .and_then(|t| t.f32_data())
                        .ok_or_else(|| {
                            PruneError::Criterion(format!("{}: no float scale", n.describe()))
                        })?;
                    members.push(gamma.iter().map(|v| v.abs()).collect());
                }
            } else {
                for m in &g.producers {
                    let role = roles.get(&m.node).copied().ok_or_else(|| {
                        PruneError::Invalid(format!("internal: no role for producer {}", m.name))
                    })?;
                    let f = filters(model, m.node, role).ok_or_else(|| {
                        PruneError::Criterion(format!("{}: its weight is not float32", m.name))
                    })?;
                    members.push(match self.criterion {
                        Criterion::L1 => l1(&f),
                        Criterion::L2 => l2(&f),
                        Criterion::Fpgm => fpgm(&f),
                        c => {
                            return Err(PruneError::Criterion(format!(
                                "{c} is not a weight criterion"
                            )));
                        }
                    });
                }
            }
            out[g.id] = combine(&members);
        }
        Ok(out)
    }
}

/// Uniform random scores (seeded, so a study can repeat a run).
pub struct RandomScorer {
    rng: StdRng,
}

impl RandomScorer {
    pub fn new(seed: u64) -> RandomScorer {
        RandomScorer {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl ChannelScorer for RandomScorer {
    fn name(&self) -> String {
        "random".into()
    }
    fn score(&mut self, _model: &Model, analysis: &Analysis) -> Result<Vec<Vec<f32>>, PruneError> {
        let mut out = vec![Vec::new(); analysis.groups.len()];
        for g in analysis.prunable() {
            out[g.id] = (0..g.channels).map(|_| self.rng.random::<f32>()).collect();
        }
        Ok(out)
    }
}

/// `apoz` and `mean-activation`: statistics of each group's activations over calibration images,
/// read by running the model in ONNX Runtime with those tensors exposed as extra outputs.
pub struct ActivationScorer {
    pub criterion: Criterion,
    images: Vec<image::RgbImage>,
    /// Images per forward pass.
    pub batch: usize,
    pub quiet: bool,
}

/// Image files of a calibration folder (jpg, jpeg, png), sorted by name.
pub fn calibration_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, PruneError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| PruneError::Calibration(format!("cannot read {}: {e}", dir.display())))?;
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

impl ActivationScorer {
    /// Loads up to `max_images` images from `dir` (sorted by name; unreadable files are an error).
    pub fn from_dir(
        criterion: Criterion,
        dir: &Path,
        max_images: usize,
    ) -> Result<ActivationScorer, PruneError> {
        let files = calibration_files(dir)?;
        if files.is_empty() {
            return Err(PruneError::Calibration(format!(
                "{} holds no .jpg or .png images",
                dir.display()
            )));
        }
        let mut images = Vec::new();
        for f in files.iter().take(max_images.max(1)) {
            let img = image::open(f).map_err(|e| {
                PruneError::Calibration(format!("cannot read {}: {e}", f.display()))
            })?;
            images.push(img.to_rgb8());
        }
        Ok(ActivationScorer::from_images(criterion, images))
    }

    pub fn from_images(criterion: Criterion, images: Vec<image::RgbImage>) -> ActivationScorer {
        ActivationScorer {
            criterion,
            images,
            batch: 8,
            quiet: true,
        }
    }

    pub fn quiet(mut self, quiet: bool) -> ActivationScorer {
        self.quiet = quiet;
        self
    }
}

/// Per-channel running statistics of one tensor.
#[derive(Clone, Default)]
struct ChannelStats {
    zeros: Vec<f64>,
    abs_sum: Vec<f64>,
    count: f64,
}

impl ChannelScorer for ActivationScorer {
    fn name(&self) -> String {
        self.criterion.to_string()
    }

    fn score(&mut self, model: &Model, analysis: &Analysis) -> Result<Vec<Vec<f32>>, PruneError> {
        use crate::frame::{BBox, Frame, resize_into_planes};
        let calib = |e: String| PruneError::Calibration(e);
        let spec =
            crate::reid::EmbedderSpec::from_model(model).map_err(|e| calib(e.to_string()))?;
        let in_shape = analysis
            .shapes
            .get(&spec.input)
            .ok_or_else(|| calib(format!("the shape of input '{}' is unknown", spec.input)))?;
        let (h, w) = (in_shape[2] as usize, in_shape[3] as usize);
        let wanted = activation_names(analysis);
        let mut m = model.clone();
        for v in &wanted {
            if !m.graph.is_graph_output(v) {
                m.graph.outputs.push(ValueInfo {
                    name: v.clone(),
                    elem_type: crate::onnx::proto::data_type::FLOAT,
                    shape: None,
                });
            }
        }
        let rt = crate::runtime::init(&crate::config::RuntimeSettings::default())?;
        let (mut session, _) =
            rt.session_from_bytes(&m.to_bytes(), crate::runtime::SessionOptions::default())?;
        let mut stats: HashMap<String, ChannelStats> = HashMap::new();
        let mut progress = crate::progress::Progress::new(
            &format!("{} calibration", self.criterion),
            self.images.len() as u64,
        )
        .quiet(self.quiet);
        for chunk in self.images.chunks(self.batch.max(1)) {
            let mut x = ndarray::Array4::<f32>::zeros((chunk.len(), 3, h, w));
            for (i, img) in chunk.iter().enumerate() {
                let f = Frame::from_image(img);
                let bb = BBox::new(0.0, 0.0, f.width as f32, f.height as f32);
                let mut item = x.index_axis_mut(ndarray::Axis(0), i);
                let dst = item
                    .as_slice_mut()
                    .ok_or_else(|| calib("non-contiguous batch".into()))?;
                resize_into_planes(&f, &bb, dst, w, h, 0, 0, w, h, &spec.norm);
            }
            let input =
                ort::value::TensorRef::from_array_view(&x).map_err(|e| calib(e.to_string()))?;
            let outputs = session
                .run(ort::inputs![spec.input.as_str() => input])
                .map_err(|e| calib(e.to_string()))?;
            for v in &wanted {
                let val = outputs
                    .get(v.as_str())
                    .ok_or_else(|| calib(format!("ONNX Runtime did not return '{v}'")))?;
                let (shape, data) = val
                    .try_extract_tensor::<f32>()
                    .map_err(|e| calib(e.to_string()))?;
                if shape.len() < 2 {
                    return Err(calib(format!("'{v}' has shape {:?}", shape.to_vec())));
                }
                let (n, c) = (shape[0] as usize, shape[1] as usize);
                let per: usize = shape[2..].iter().map(|&d| d as usize).product();
                let st = stats.entry(v.clone()).or_insert_with(|| ChannelStats {
                    zeros: vec![0.0; c],
                    abs_sum: vec![0.0; c],
                    count: 0.0,
                });
                if st.zeros.len() != c || n * c * per != data.len() {
                    return Err(calib(format!(
                        "'{v}' changed shape between batches or holds too few values ({:?})",
                        shape.to_vec()
                    )));
                }
                for b in 0..n {
                    for ch in 0..c {
                        let s = &data[(b * c + ch) * per..(b * c + ch + 1) * per];
                        st.zeros[ch] += s.iter().filter(|&&v| v <= 0.0).count() as f64;
                        st.abs_sum[ch] += s.iter().map(|v| v.abs() as f64).sum::<f64>();
                    }
                }
                st.count += (n * per) as f64;
            }
            progress.inc(chunk.len() as u64);
        }
        progress.finish();
        let per_value: HashMap<String, Vec<f32>> = stats
            .into_iter()
            .map(|(k, s)| {
                let v = (0..s.zeros.len())
                    .map(|c| match self.criterion {
                        Criterion::Apoz => (1.0 - s.zeros[c] / s.count.max(1.0)) as f32,
                        _ => (s.abs_sum[c] / s.count.max(1.0)) as f32,
                    })
                    .collect();
                (k, v)
            })
            .collect();
        per_group_from_values(analysis, &per_value, self.criterion.as_str())
    }
}

/// The built-in scorer for `criterion`. Activation criteria need `calibration` (a folder of
/// images); `taylor` is refused here because it needs the training engine's gradients.
pub fn builtin(
    criterion: Criterion,
    calibration: Option<&Path>,
    max_images: usize,
    seed: u64,
    quiet: bool,
) -> Result<Box<dyn ChannelScorer>, PruneError> {
    Ok(match criterion {
        Criterion::L1 | Criterion::L2 | Criterion::Fpgm | Criterion::BnScale => {
            Box::new(WeightScorer { criterion })
        }
        Criterion::Random => Box::new(RandomScorer::new(seed)),
        Criterion::Apoz | Criterion::MeanActivation => {
            let dir = calibration.ok_or_else(|| {
                PruneError::Criterion(format!(
                    "{criterion} needs sample images: give --calibration DIR (a folder of person crops)"
                ))
            })?;
            Box::new(ActivationScorer::from_dir(criterion, dir, max_images)?.quiet(quiet))
        }
        Criterion::Taylor => {
            return Err(PruneError::Criterion(
                "taylor needs gradients, which come from the training engine on training data: \
                 use `crosscam retune --criterion taylor` (it prunes with re-tuning on a dataset); \
                 `crosscam prune` alone has l1, l2, fpgm, bn-scale, random, apoz and mean-activation"
                    .into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argsort(s: &[f32]) -> Vec<usize> {
        let mut i: Vec<usize> = (0..s.len()).collect();
        i.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
        i
    }

    #[test]
    fn l1_and_l2_rank_hand_made_filters() {
        let f = vec![
            vec![1.0, -1.0, 1.0], // l1 3, l2 1.73
            vec![0.1, 0.1, -0.1], // l1 0.3
            vec![3.0, 0.0, 0.0],  // l1 3, l2 3
            vec![-2.0, 0.5, 0.0], // l1 2.5, l2 2.06
        ];
        assert_eq!(l1(&f), vec![3.0, 0.3, 3.0, 2.5]);
        assert_eq!(argsort(&l1(&f))[..2], [1, 3]);
        let s = l2(&f);
        assert!((s[0] - 3f32.sqrt()).abs() < 1e-6 && (s[2] - 3.0).abs() < 1e-6);
        assert_eq!(argsort(&s), vec![1, 0, 3, 2]);
    }

    #[test]
    fn fpgm_ranks_the_median_like_filter_lowest() {
        // four filters at the corners of a square and one at its centre: the centre one is the
        // geometric median (the others can represent it), so it is the least important
        let f = vec![
            vec![1.0, 1.0],
            vec![-1.0, 1.0],
            vec![0.05, -0.02],
            vec![-1.0, -1.0],
            vec![1.0, -1.0],
        ];
        let s = fpgm(&f);
        assert_eq!(argsort(&s)[0], 2, "{s:?}");
        // although it is not the smallest-norm filter by l2 on a shifted copy
        let shifted: Vec<Vec<f32>> = f
            .iter()
            .map(|v| v.iter().map(|x| x + 3.0).collect())
            .collect();
        assert_eq!(argsort(&fpgm(&shifted))[0], 2);
        assert_ne!(argsort(&l2(&shifted))[0], 2);
    }

    #[test]
    fn combine_normalises_members_before_averaging() {
        let a = vec![3.0, 4.0]; // norm 5
        let b = vec![0.0, 100.0]; // norm 100: would dominate a plain sum
        let c = combine(&[a, b]);
        assert!(
            (c[0] - 0.3).abs() < 1e-6 && (c[1] - 0.9).abs() < 1e-6,
            "{c:?}"
        );
        assert_eq!(combine(&[vec![0.0, 0.0]]), vec![0.0, 0.0]);
    }

    #[test]
    fn bn_scale_reads_gamma_of_the_groups_batchnorm() {
        use crate::onnx::resnet::{Head, Init, ResNetSpec, Style, build};
        let spec = ResNetSpec::resnet18()
            .for_reid()
            .scaled(0.25)
            .with_input(64, 32);
        let mut m = build(&spec, Head::BnNeck, Style::default(), Init::RandomStats, 1);
        let gamma = m.graph.initializers.get_mut("layer2.0.bn1.weight").unwrap();
        let c = gamma.dims[0];
        // channel i gets |γ| = (c − i), with alternating signs
        let vals: Vec<f32> = (0..c)
            .map(|i| (c - i) as f32 * if i % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        *gamma = crate::onnx::Tensor::f32(vec![c], vals);
        let a = super::super::groups::analyze(&m, &Default::default()).unwrap();
        let g = a
            .groups
            .iter()
            .find(|g| g.name == "layer2.0.conv1")
            .unwrap();
        let s = WeightScorer {
            criterion: Criterion::BnScale,
        }
        .score(&m, &a)
        .unwrap();
        let order = argsort(&s[g.id]);
        assert_eq!(order, (0..c).rev().collect::<Vec<_>>());
    }

    #[test]
    fn criteria_names_round_trip_through_clap() {
        use clap::ValueEnum;
        for c in Criterion::value_variants() {
            assert_eq!(Criterion::from_str(c.as_str(), false).unwrap(), *c);
        }
    }
}
