//! `crosscam eval`: embeds a dataset's query and gallery images with a model, scores them with the
//! Market-1501 protocol, and optionally saves the features (`.npy` + `.csv`) so the numbers can be
//! checked with other tools. Nothing is cached: every run embeds every image.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use super::dataset::{Dataset, Item, Split};
use super::metrics::{Label, MetricOptions, evaluate};
use super::npy;
use super::rerank::RerankParams;
use crate::progress::Progress;
use crate::reid::Embedder;

/// Crops per inference batch unless told otherwise.
pub const DEFAULT_BATCH: usize = 32;

#[derive(Debug, Clone)]
pub struct ModelEvalOptions {
    /// Images per inference batch (also how many are decoded and held at once).
    pub batch: usize,
    pub metrics: MetricOptions,
    /// Folder for `query.npy`, `gallery.npy`, `query.csv`, `gallery.csv`.
    pub save_features: Option<PathBuf>,
    /// No progress lines (for `--json`).
    pub quiet: bool,
}

impl Default for ModelEvalOptions {
    fn default() -> Self {
        ModelEvalOptions {
            batch: DEFAULT_BATCH,
            metrics: MetricOptions::default(),
            save_features: None,
            quiet: false,
        }
    }
}

/// What `crosscam eval --json` prints. Rates are fractions in [0, 1].
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub rank1: f64,
    pub rank5: f64,
    pub rank10: f64,
    #[serde(rename = "mAP")]
    pub map: f64,
    pub num_query: usize,
    pub num_gallery: usize,
    /// Queries with at least one valid match (the ones CMC and mAP average over).
    pub num_valid_query: usize,
    /// Queries left out: no gallery image of the same person from another camera (or pid −1/0).
    pub num_skipped_query: usize,
    /// Multiply-accumulates of one embedding at the model's input size (null when the model has
    /// layers whose cost cannot be counted).
    pub model_macs: Option<u64>,
    pub model: String,
    pub dataset: String,
    pub format: String,
    /// True for crosscam-built datasets (pseudo-identities from tracklets).
    pub pseudo_labels: bool,
    pub feature_dim: usize,
    pub rerank: Option<RerankParams>,
    /// CMC for ranks 1..=20.
    pub cmc: Vec<f64>,
    pub device: String,
    pub embed_seconds: f64,
    pub metric_seconds: f64,
    /// Linking calibration from the same features (null when nobody is in two cameras).
    pub linking: Option<super::calibrate::LinkCalibrationReport>,
    /// Reasons not to trust the numbers above (too few queries, collapsed features); empty when
    /// none applies.
    pub warnings: Vec<EvalWarning>,
}

/// Fewer scored queries than this and rank-1 / mAP are too coarse to compare models.
pub const MIN_QUERIES: usize = 30;
/// Median cosine similarity between features above which the model is taken as collapsed.
pub const DEGENERATE_SIMILARITY: f64 = 0.99;
/// Features compared (all pairs) for the median similarity: evenly spaced rows.
const SIMILARITY_SAMPLE: usize = 512;

/// Why the numbers of an evaluation may not mean what they seem to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalWarning {
    /// `few_queries` or `degenerate_features`.
    pub code: &'static str,
    /// One sentence for people.
    pub message: String,
    /// The measured value (scored queries; median pairwise cosine similarity).
    pub value: f64,
    /// The limit it crossed.
    pub threshold: f64,
}

/// Median cosine similarity over all pairs of (up to 512 evenly spaced) rows of `features`;
/// None with fewer than two rows. Rows are normalised here; two zero rows count as identical.
pub fn median_pair_similarity(features: ArrayView2<f32>) -> Option<f64> {
    let n = features.nrows();
    if n < 2 {
        return None;
    }
    let m = n.min(SIMILARITY_SAMPLE);
    let rows: Vec<Vec<f32>> = (0..m)
        .map(|k| {
            let r = features.row(k * n / m);
            let norm = r.dot(&r).sqrt();
            if norm > 1e-12 {
                r.iter().map(|v| v / norm).collect()
            } else {
                vec![0.0; r.len()]
            }
        })
        .collect();
    let zero = |v: &[f32]| v.iter().all(|x| *x == 0.0);
    let mut sims = Vec::with_capacity(m * (m - 1) / 2);
    for i in 0..m {
        for j in i + 1..m {
            let (a, b) = (&rows[i], &rows[j]);
            sims.push(if zero(a) && zero(b) {
                1.0
            } else {
                a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>()
            });
        }
    }
    sims.sort_by(f64::total_cmp);
    let k = sims.len();
    Some(if k % 2 == 1 {
        sims[k / 2]
    } else {
        (sims[k / 2 - 1] + sims[k / 2]) / 2.0
    })
}

/// The warnings for `scored_queries` queries and these features (query and gallery rows).
pub fn eval_warnings(scored_queries: usize, features: ArrayView2<f32>) -> Vec<EvalWarning> {
    let mut w = Vec::new();
    if scored_queries < MIN_QUERIES {
        let step = if scored_queries > 0 {
            format!(
                " (one query moves rank-1 by {:.1} points)",
                100.0 / scored_queries as f64
            )
        } else {
            String::new()
        };
        w.push(EvalWarning {
            code: "few_queries",
            message: format!(
                "only {scored_queries} quer{} scored{step}: with fewer than {MIN_QUERIES} the \
                 scores are too coarse to compare models; use a dataset with more people seen \
                 by two cameras",
                if scored_queries == 1 { "y" } else { "ies" }
            ),
            value: scored_queries as f64,
            threshold: MIN_QUERIES as f64,
        });
    }
    if let Some(median) = median_pair_similarity(features)
        && median > DEGENERATE_SIMILARITY
    {
        w.push(EvalWarning {
            code: "degenerate_features",
            message: format!(
                "the features are nearly all alike (median cosine similarity {median:.3} between \
                 images, above {DEGENERATE_SIMILARITY}): the model has collapsed, and its ranks \
                 are decided by tiny differences, not by who is in the picture"
            ),
            value: median,
            threshold: DEGENERATE_SIMILARITY,
        });
    }
    w
}

/// Embeds `items` in batches (L2-normalised rows, in item order).
pub fn embed_items(
    embedder: &mut Embedder,
    items: &[Item],
    batch: usize,
    progress: &mut Progress,
) -> Result<Array2<f32>> {
    let batch = batch.max(1);
    let mut out: Option<Array2<f32>> = None;
    let mut row = 0;
    for chunk in items.chunks(batch) {
        let images = chunk
            .iter()
            .map(|it| {
                image::open(&it.path)
                    .map(|i| i.to_rgb8())
                    .with_context(|| format!("cannot read image {}", it.path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let e = embedder.embed_images(&images).with_context(|| {
            format!(
                "embedding failed on the batch starting with {}",
                chunk[0].path.display()
            )
        })?;
        let all = out.get_or_insert_with(|| Array2::zeros((items.len(), e.ncols())));
        anyhow::ensure!(
            e.ncols() == all.ncols(),
            "the model's output width changed from {} to {}",
            all.ncols(),
            e.ncols()
        );
        all.slice_mut(ndarray::s![row..row + e.nrows(), ..])
            .assign(&e);
        row += e.nrows();
        progress.inc(chunk.len() as u64);
    }
    Ok(out.unwrap_or_else(|| Array2::zeros((0, embedder.spec.dim))))
}

/// Embeds and scores a dataset's query and gallery sets with `embedder`.
pub fn evaluate_model(
    embedder: &mut Embedder,
    model_name: &str,
    model_macs: Option<u64>,
    ds: &Dataset,
    opts: &ModelEvalOptions,
) -> Result<EvalReport> {
    for split in [Split::Query, Split::Gallery] {
        anyhow::ensure!(
            !ds.items(split).is_empty(),
            "the dataset has no {} images ({} is missing or empty)",
            match split {
                Split::Query => "query",
                _ => "gallery",
            },
            ds.source(split).display()
        );
    }
    let t0 = Instant::now();
    let total = (ds.query.len() + ds.gallery.len()) as u64;
    let mut progress = Progress::new("embedding", total).quiet(opts.quiet);
    let qf = embed_items(embedder, &ds.query, opts.batch, &mut progress)?;
    let gf = embed_items(embedder, &ds.gallery, opts.batch, &mut progress)?;
    progress.finish();
    let embed_seconds = t0.elapsed().as_secs_f64();
    if let Some(dir) = &opts.save_features {
        save_features(dir, &ds.query, &qf, &ds.gallery, &gf)?;
    }
    let t1 = Instant::now();
    let ql: Vec<Label> = ds.query.iter().map(Item::label).collect();
    let gl: Vec<Label> = ds.gallery.iter().map(Item::label).collect();
    let m = evaluate(qf.view(), gf.view(), &ql, &gl, &opts.metrics)?;
    let metric_seconds = t1.elapsed().as_secs_f64();
    let all: Vec<&Item> = ds.query.iter().chain(&ds.gallery).collect();
    let features = ndarray::concatenate(ndarray::Axis(0), &[qf.view(), gf.view()])?;
    let linking = super::calibrate::calibrate(&all, features.view());
    let warnings = eval_warnings(m.num_valid_query, features.view());
    Ok(EvalReport {
        rank1: m.rank(1),
        rank5: m.rank(5),
        rank10: m.rank(10),
        map: m.map,
        num_query: m.num_query,
        num_gallery: m.num_gallery,
        num_valid_query: m.num_valid_query,
        num_skipped_query: m.num_skipped_query,
        model_macs,
        model: model_name.to_string(),
        dataset: ds.root.display().to_string(),
        format: ds.format.name().to_string(),
        pseudo_labels: ds.pseudo_labels(),
        feature_dim: qf.ncols(),
        rerank: opts.metrics.rerank,
        cmc: m.cmc.iter().take(20).copied().collect(),
        device: embedder.device.to_string(),
        embed_seconds,
        metric_seconds,
        linking,
        warnings,
    })
}

/// Writes `query.npy`, `gallery.npy` (float32 [n, D]) and `query.csv`, `gallery.csv`
/// (`path,pid,camid`, one row per feature row, same order) into `dir`.
pub fn save_features(
    dir: &Path,
    query: &[Item],
    qf: &Array2<f32>,
    gallery: &[Item],
    gf: &Array2<f32>,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, items, f) in [("query", query, qf), ("gallery", gallery, gf)] {
        npy::write_f32(&dir.join(format!("{name}.npy")), f.view())?;
        let p = dir.join(format!("{name}.csv"));
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(&p).with_context(|| format!("cannot create {}", p.display()))?,
        );
        let mut write = || -> std::io::Result<()> {
            writeln!(w, "path,pid,camid")?;
            for it in items {
                writeln!(
                    w,
                    "{},{},{}",
                    csv_field(&it.path.to_string_lossy()),
                    it.pid,
                    it.camid
                )?;
            }
            w.flush()
        };
        write().with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The human-readable report.
pub fn render(r: &EvalReport) -> String {
    let mut s = String::new();
    let macs = r
        .model_macs
        .map(|m| format!("{:.3} GMACs", m as f64 / 1e9))
        .unwrap_or_else(|| "MACs unknown".into());
    s.push_str(&format!(
        "model    {} ({macs}, {}-d features, {})\n",
        r.model, r.feature_dim, r.device
    ));
    s.push_str(&format!(
        "dataset  {} ({}{})\n",
        r.dataset,
        r.format,
        if r.pseudo_labels {
            ", pseudo-labels"
        } else {
            ""
        }
    ));
    s.push_str(&format!(
        "queries  {} ({} scored, {} skipped: no match in another camera)   gallery {}\n",
        r.num_query, r.num_valid_query, r.num_skipped_query, r.num_gallery
    ));
    if let Some(p) = &r.rerank {
        s.push_str(&format!(
            "re-ranking  k-reciprocal, k1 {} k2 {} lambda {}\n",
            p.k1, p.k2, p.lambda
        ));
    }
    s.push_str("\n  rank-1   rank-5  rank-10      mAP\n");
    s.push_str(&format!(
        "  {:5.1}%   {:5.1}%   {:5.1}%   {:5.1}%\n",
        100.0 * r.rank1,
        100.0 * r.rank5,
        100.0 * r.rank10,
        100.0 * r.map
    ));
    if let Some(l) = &r.linking {
        s.push_str(&format!(
            "\nlinking  {} tracklets; cross-camera similarity: same person p10/p50/p90 \
             {:.2}/{:.2}/{:.2} ({} pairs), different people p50/p90/p99 {:.2}/{:.2}/{:.2} ({} pairs)\n\
             \x20        best pair F1 {:.2} at threshold {:.2} (precision {:.2}, recall {:.2})\n",
            l.tracklets,
            l.same[0],
            l.same[1],
            l.same[2],
            l.same_pairs,
            l.different[0],
            l.different[1],
            l.different[2],
            l.different_pairs,
            l.f1,
            l.threshold,
            l.precision,
            l.recall
        ));
    }
    s.push_str(&format!(
        "\nembedding {:.1} s, metrics {:.2} s\n",
        r.embed_seconds, r.metric_seconds
    ));
    if !r.warnings.is_empty() {
        s.push('\n');
        for w in &r.warnings {
            s.push_str(&format!("warning: {}\n", w.message));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(
            csv_field("/d/q/0001_c1s1_000001_00.jpg"),
            "/d/q/0001_c1s1_000001_00.jpg"
        );
        assert_eq!(csv_field("/d/a,b \"x\".jpg"), "\"/d/a,b \"\"x\"\".jpg\"");
    }

    /// `n` unit rows spread over `dim` dimensions: row i is mostly axis i % dim.
    fn varied(n: usize, dim: usize) -> Array2<f32> {
        Array2::from_shape_fn((n, dim), |(i, j)| {
            if j == i % dim {
                1.0
            } else {
                0.02 * ((i * 7 + j * 3) % 5) as f32
            }
        })
    }

    #[test]
    fn collapsed_features_are_flagged() {
        // every image gets nearly the same feature: pairwise similarity ≈ 1.00
        let f = Array2::from_shape_fn((40, 16), |(i, j)| {
            1.0 + if j == 0 { 1e-3 * i as f32 } else { 0.0 }
        });
        let median = median_pair_similarity(f.view()).unwrap();
        assert!(median > 0.999, "{median}");
        let w = eval_warnings(100, f.view());
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].code, "degenerate_features");
        assert!(w[0].value > DEGENERATE_SIMILARITY);
        assert!(w[0].message.contains("collapsed"), "{}", w[0].message);
        // all-zero features are collapsed too
        let w = eval_warnings(100, Array2::<f32>::zeros((10, 8)).view());
        assert_eq!(w[0].code, "degenerate_features");
    }

    #[test]
    fn few_queries_are_flagged() {
        let f = varied(60, 32);
        let w = eval_warnings(6, f.view());
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].code, "few_queries");
        assert_eq!((w[0].value, w[0].threshold), (6.0, 30.0));
        assert!(w[0].message.contains("16.7 points"), "{}", w[0].message);
        let both = eval_warnings(0, Array2::<f32>::ones((5, 4)).view());
        let codes: Vec<&str> = both.iter().map(|w| w.code).collect();
        assert_eq!(codes, ["few_queries", "degenerate_features"]);
    }

    #[test]
    fn enough_varied_queries_give_no_warning() {
        let f = varied(800, 64);
        let median = median_pair_similarity(f.view()).unwrap();
        assert!(median < 0.5, "{median}");
        assert_eq!(eval_warnings(MIN_QUERIES, f.view()), []);
        assert_eq!(eval_warnings(750, f.view()), []);
    }

    #[test]
    fn median_similarity_of_known_pairs() {
        assert_eq!(median_pair_similarity(varied(1, 4).view()), None);
        // three rows: pairs (a,b) = 1, (a,c) = 0, (b,c) = 0 → median 0
        let f = ndarray::array![[1.0f32, 0.0], [2.0, 0.0], [0.0, 3.0]];
        assert_eq!(median_pair_similarity(f.view()), Some(0.0));
        // two rows: the one pair, normalised (cos 45° ≈ 0.707)
        let g = ndarray::array![[1.0f32, 0.0], [1.0, 1.0]];
        let m = median_pair_similarity(g.view()).unwrap();
        assert!((m - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6, "{m}");
    }

    #[test]
    fn warnings_are_in_the_json_and_the_text() {
        let r = EvalReport {
            rank1: 1.0,
            rank5: 1.0,
            rank10: 1.0,
            map: 1.0,
            num_query: 6,
            num_gallery: 9,
            num_valid_query: 6,
            num_skipped_query: 0,
            model_macs: None,
            model: "m".into(),
            dataset: "d".into(),
            format: "market1501".into(),
            pseudo_labels: false,
            feature_dim: 4,
            rerank: None,
            cmc: vec![1.0],
            device: "cpu".into(),
            embed_seconds: 0.0,
            metric_seconds: 0.0,
            linking: None,
            warnings: eval_warnings(6, Array2::<f32>::ones((15, 4)).view()),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["warnings"][0]["code"], "few_queries");
        assert_eq!(v["warnings"][1]["code"], "degenerate_features");
        assert!(
            v["warnings"][1]["message"]
                .as_str()
                .unwrap()
                .contains("1.000")
        );
        let text = render(&r);
        assert_eq!(text.matches("\nwarning: ").count(), 2, "{text}");
    }
}
