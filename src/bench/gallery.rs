//! `crosscam bench gallery`: gallery search at scale — exact against HNSW at several sizes
//! (build time, single-query latency p50/p99 and their ratio, recall@10 of HNSW against exact),
//! and memory per identity of a full gallery (index + identity records).
//!
//! Data are seeded synthetic re-id-like features (`gallery::testdata::people`): views of persons
//! in groups of look-alikes, so that neighbours are structured as in real galleries. Queries are
//! new views of the same persons, not in the index. Every query is timed alone, as the linker
//! issues them (one tracklet at a time). Exact search uses the product's default (one thread per
//! core for large scans); HNSW searches on the calling thread; both builds use all cores.
//!
//! Memory is reported two ways: *computed* from the structures' sizes (deterministic; allocator
//! overhead not included) and *measured* as the growth of the process's resident set while the
//! structure was built (includes allocator overhead and whatever the allocator kept).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{GallerySettings, IndexChoice, LinkingSettings};
use crate::gallery::testdata::people;
use crate::gallery::{
    CameraSeen, ExactIndex, GalleryIndex, GallerySnapshot, HnswIndex, HnswParams, Identity,
    IdentityId, LinkKind, Linker, Prototype, Sighting,
};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct GalleryBenchOptions {
    pub sizes: Vec<usize>,
    pub dim: usize,
    /// Dimension for sizes of a million and more (1M × 512 f32 is 2 GB per copy).
    pub dim_large: usize,
    pub queries: usize,
    /// Stop timing exact queries after this long (at 1M an exact query takes tens of ms).
    pub max_exact_seconds: f64,
    pub hnsw: HnswParams,
    /// `ef_construction` for sizes of a million and more (building is the long part).
    pub ef_construction_large: usize,
    /// Identities in the memory measurement (0 = skip it).
    pub identities: usize,
    /// Measure memory in a child process per index (`crosscam bench gallery --memory-only`),
    /// so that one measurement does not reuse memory the other freed.
    pub memory_subprocess: bool,
    pub seed: u64,
    pub quiet: bool,
}

impl Default for GalleryBenchOptions {
    fn default() -> Self {
        GalleryBenchOptions {
            sizes: vec![10_000, 100_000, 1_000_000],
            dim: 512,
            dim_large: 128,
            queries: 1000,
            max_exact_seconds: 60.0,
            hnsw: HnswParams::default(),
            ef_construction_large: 100,
            identities: 2000,
            memory_subprocess: false,
            seed: 7,
            quiet: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IndexTimings {
    pub build_seconds: f64,
    pub inserts_per_second: f64,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    /// Computed from the index's sizes, per entry.
    pub bytes_per_entry_computed: f64,
    /// Resident-set growth while building, per entry.
    pub bytes_per_entry_measured: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeRow {
    pub entries: usize,
    pub dim: usize,
    pub exact: IndexTimings,
    pub hnsw: IndexTimings,
    pub m: usize,
    pub ef_construction: usize,
    pub ef_search: usize,
    /// Exact p50 / HNSW p50 (how many times faster HNSW is).
    pub speedup_p50: f64,
    pub speedup_p99: f64,
    /// HNSW recall@10 against exact search over the timed exact queries.
    pub recall_at_10: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    pub index: String,
    pub identities: usize,
    pub dim: usize,
    pub prototypes_per_identity: usize,
    pub tracklets_per_identity: usize,
    /// Whole gallery per identity, computed: index + identity records + maps.
    pub bytes_per_identity_computed: f64,
    pub index_bytes_per_identity: f64,
    pub records_bytes_per_identity: f64,
    /// Resident-set growth while the gallery was built, per identity.
    pub bytes_per_identity_measured: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GalleryBenchReport {
    /// `dev` (crosscam at opt-level 1, dependencies at 2) or `release`.
    pub build: String,
    pub cores: usize,
    pub seed: u64,
    pub sizes: Vec<SizeRow>,
    pub memory: Vec<MemoryRow>,
}

/// Resident set size in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn time_queries(
    idx: &dyn GalleryIndex,
    queries: &[f32],
    dim: usize,
    max: usize,
    budget: f64,
) -> anyhow::Result<(Vec<Duration>, Vec<Vec<u64>>)> {
    let n = (queries.len() / dim).min(max);
    // warm-up: caches, lazy allocations
    for q in queries.chunks_exact(dim).take(20.min(n)) {
        idx.search(q, 10, None)?;
    }
    let start = Instant::now();
    let mut times = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    for q in queries.chunks_exact(dim).take(n) {
        let t = Instant::now();
        let hits = idx.search(q, 10, None)?;
        times.push(t.elapsed());
        results.push(hits.into_iter().map(|h| h.id).collect());
        if start.elapsed().as_secs_f64() > budget && times.len() >= 50 {
            break;
        }
    }
    Ok((times, results))
}

fn timings(
    build: Duration,
    entries: usize,
    times: &mut [Duration],
    computed: usize,
    measured: f64,
) -> IndexTimings {
    times.sort();
    let mean = times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len().max(1) as f64;
    IndexTimings {
        build_seconds: build.as_secs_f64(),
        inserts_per_second: entries as f64 / build.as_secs_f64().max(1e-9),
        queries: times.len(),
        p50_ms: percentile(times, 0.5),
        p99_ms: percentile(times, 0.99),
        mean_ms: mean * 1e3,
        bytes_per_entry_computed: computed as f64 / entries.max(1) as f64,
        bytes_per_entry_measured: measured / entries.max(1) as f64,
    }
}

fn measure_size(n: usize, opts: &GalleryBenchOptions) -> anyhow::Result<SizeRow> {
    let large = n >= 1_000_000;
    let dim = if large { opts.dim_large } else { opts.dim };
    let hnsw_params = HnswParams {
        ef_construction: if large {
            opts.ef_construction_large
        } else {
            opts.hnsw.ef_construction
        },
        // the graph alone (the exact side index of recent inserts would blur the comparison)
        recent: 0,
        ..opts.hnsw
    };
    let say = |m: String| {
        if !opts.quiet {
            eprintln!("{m}");
        }
    };
    // ~10 views per person, 10 persons per look
    let persons = (n / 10).max(1);
    let (data, _) = people(
        n + opts.queries,
        dim,
        persons,
        (persons / 10).max(1),
        0.8,
        0.6,
        opts.seed,
    );
    let (data, queries) = data.split_at(n * dim);

    say(format!("{n} × {dim}: exact index"));
    let rss = rss_bytes();
    let t = Instant::now();
    let mut exact = ExactIndex::new(dim, 0.25);
    for (i, row) in data.chunks_exact(dim).enumerate() {
        exact.insert(i as u64, row)?;
    }
    let exact_build = t.elapsed();
    let exact_rss = rss_bytes() - rss;
    let (mut exact_times, exact_results) =
        time_queries(&exact, queries, dim, opts.queries, opts.max_exact_seconds)?;
    let exact_t = timings(
        exact_build,
        n,
        &mut exact_times,
        exact.memory_bytes(),
        exact_rss,
    );
    drop(exact);

    say(format!(
        "{n} × {dim}: HNSW (m {}, ef_construction {})",
        hnsw_params.m, hnsw_params.ef_construction
    ));
    let entries: Vec<(u64, Vec<f32>)> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, r)| (i as u64, r.to_vec()))
        .collect();
    let rss = rss_bytes();
    let t = Instant::now();
    let hnsw = HnswIndex::build(dim, hnsw_params, entries)?;
    let hnsw_build = t.elapsed();
    let hnsw_rss = rss_bytes() - rss;
    let (mut hnsw_times, hnsw_results) =
        time_queries(&hnsw, queries, dim, opts.queries, f64::INFINITY)?;
    let recall = {
        let mut hit = 0usize;
        for (e, a) in exact_results.iter().zip(&hnsw_results) {
            hit += a.iter().filter(|id| e.contains(id)).count();
        }
        hit as f64 / (exact_results.len() * 10).max(1) as f64
    };
    let hnsw_t = timings(
        hnsw_build,
        n,
        &mut hnsw_times,
        hnsw.memory_bytes(),
        hnsw_rss,
    );
    say(format!(
        "  exact p50 {:.2} ms, HNSW p50 {:.3} ms, recall@10 {recall:.4}",
        exact_t.p50_ms, hnsw_t.p50_ms
    ));
    Ok(SizeRow {
        entries: n,
        dim,
        speedup_p50: exact_t.p50_ms / hnsw_t.p50_ms,
        speedup_p99: exact_t.p99_ms / hnsw_t.p99_ms,
        exact: exact_t,
        hnsw: hnsw_t,
        m: hnsw_params.m,
        ef_construction: hnsw_params.ef_construction,
        ef_search: hnsw_params.ef_search,
        recall_at_10: recall,
    })
}

/// A gallery of `n` identities in the steady state of the default settings: every identity
/// with its full set of prototypes and remembered tracklets (half of which still have their
/// prototype, the others keep their own descriptor).
fn synthetic_snapshot(n: usize, g: &GallerySettings, dim: usize, seed: u64) -> GallerySnapshot {
    let p = g.prototypes_per_identity;
    let t = g.tracklets_per_identity.max(p);
    let (views, _) = people(n * t, dim, n, (n / 10).max(1), 0.8, 0.6, seed);
    let mut next_proto = 1u64;
    let cams = ["gate-north", "lobby", "car-park", "corridor-2"];
    let identities = (0..n)
        .map(|i| {
            let mut ident = Identity::new(IdentityId(i as u64 + 1), 0);
            for j in 0..t {
                let v = views[(i * t + j) * dim..(i * t + j + 1) * dim].to_vec();
                let camera = cams[j % cams.len()].to_string();
                let tracklet = (i * t + j) as u64;
                let with_proto = j < p;
                if with_proto {
                    ident.prototypes.push(Prototype {
                        id: next_proto,
                        vector: v.clone(),
                        camera: camera.clone(),
                        tracklet,
                        time_ms: j as i64 * 60_000,
                        quality: 0.8,
                    });
                    next_proto += 1;
                }
                ident.sightings.push(Sighting {
                    camera: camera.clone(),
                    tracklet,
                    start_ms: j as i64 * 60_000,
                    end_ms: j as i64 * 60_000 + 20_000,
                    descriptor: if with_proto { Vec::new() } else { v },
                    quality: 0.8,
                    link: LinkKind::Linked,
                    similarity: 0.8,
                });
                let c = ident.cameras.entry(camera).or_insert(CameraSeen {
                    first_ms: 0,
                    last_tracklet: tracklet,
                    last_start_ms: 0,
                    last_end_ms: 0,
                    tracklets: 0,
                });
                c.tracklets += 1;
                c.last_tracklet = tracklet;
                c.last_start_ms = j as i64 * 60_000;
                c.last_end_ms = j as i64 * 60_000 + 20_000;
            }
            ident.last_seen_ms = t as i64 * 60_000;
            ident.tracklets_total = t as u64;
            ident
        })
        .collect();
    GallerySnapshot {
        format: 1,
        dim,
        next_identity: n as u64 + 1,
        next_prototype: next_proto,
        identities,
    }
}

/// Memory per identity of a gallery using `index` (see the module docs), in this process.
pub fn measure_memory(index: IndexChoice, opts: &GalleryBenchOptions) -> anyhow::Result<MemoryRow> {
    let g = GallerySettings {
        index,
        hnsw_m: opts.hnsw.m,
        hnsw_ef_construction: opts.hnsw.ef_construction,
        ..GallerySettings::default()
    };
    let n = opts.identities;
    let rss = rss_bytes();
    let snap = synthetic_snapshot(n, &g, opts.dim, opts.seed);
    let (linker, _) = Linker::restore(&g, &LinkingSettings::default(), snap, None)?;
    let measured = rss_bytes() - rss;
    let m = linker.memory();
    Ok(MemoryRow {
        index: format!("{}", linker.index().kind()),
        identities: n,
        dim: opts.dim,
        prototypes_per_identity: g.prototypes_per_identity,
        tracklets_per_identity: g.tracklets_per_identity,
        bytes_per_identity_computed: m.per_identity,
        index_bytes_per_identity: m.index as f64 / n.max(1) as f64,
        records_bytes_per_identity: (m.identities + m.maps) as f64 / n.max(1) as f64,
        bytes_per_identity_measured: measured / n.max(1) as f64,
    })
}

/// Runs the whole benchmark (see the module docs).
pub fn gallery(opts: &GalleryBenchOptions) -> anyhow::Result<GalleryBenchReport> {
    let mut progress =
        Progress::new("bench gallery", opts.sizes.len() as u64 + 2).quiet(opts.quiet);
    let mut sizes = Vec::new();
    for &n in &opts.sizes {
        sizes.push(measure_size(n, opts)?);
        progress.inc(1);
    }
    let mut memory = Vec::new();
    if opts.identities > 0 {
        for kind in [IndexChoice::Exact, IndexChoice::Hnsw] {
            let row = if opts.memory_subprocess {
                memory_in_child(kind, opts)?
            } else {
                measure_memory(kind, opts)?
            };
            memory.push(row);
            progress.inc(1);
        }
    }
    progress.finish();
    Ok(GalleryBenchReport {
        build: if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
        .into(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seed: opts.seed,
        sizes,
        memory,
    })
}

fn memory_in_child(kind: IndexChoice, opts: &GalleryBenchOptions) -> anyhow::Result<MemoryRow> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("cannot find the crosscam executable")?;
    let kind = match kind {
        IndexChoice::Exact => "exact",
        _ => "hnsw",
    };
    let out = std::process::Command::new(exe)
        .args(["bench", "gallery", "--memory-only", kind])
        .args(["--identities", &opts.identities.to_string()])
        .args(["--dim", &opts.dim.to_string()])
        .args(["--m", &opts.hnsw.m.to_string()])
        .args(["--ef-construction", &opts.hnsw.ef_construction.to_string()])
        .args(["--seed", &opts.seed.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run the memory measurement")?;
    anyhow::ensure!(
        out.status.success(),
        "the memory measurement ({kind}) failed"
    );
    serde_json::from_slice(&out.stdout).context("unreadable memory measurement")
}

/// Markdown tables for docs/PERFORMANCE.md.
pub fn render_gallery(r: &GalleryBenchReport) -> String {
    let mut s = format!("build: {}, {} cores, seed {}\n\n", r.build, r.cores, r.seed);
    s += "| entries | dim | index | build s | inserts/s | queries | p50 ms | p99 ms | bytes/entry (computed / measured) |\n";
    s += "|---|---|---|---|---|---|---|---|---|\n";
    for row in &r.sizes {
        for (name, t) in [("exact", &row.exact), ("hnsw", &row.hnsw)] {
            s += &format!(
                "| {} | {} | {} | {:.1} | {:.0} | {} | {:.3} | {:.3} | {:.0} / {:.0} |\n",
                row.entries,
                row.dim,
                if name == "hnsw" {
                    format!(
                        "hnsw (m {}, efC {}, ef {})",
                        row.m, row.ef_construction, row.ef_search
                    )
                } else {
                    name.to_string()
                },
                t.build_seconds,
                t.inserts_per_second,
                t.queries,
                t.p50_ms,
                t.p99_ms,
                t.bytes_per_entry_computed,
                t.bytes_per_entry_measured
            );
        }
    }
    s += "\n| entries | exact/HNSW p50 | exact/HNSW p99 | HNSW recall@10 |\n|---|---|---|---|\n";
    for row in &r.sizes {
        s += &format!(
            "| {} | {:.1}× | {:.1}× | {:.4} |\n",
            row.entries, row.speedup_p50, row.speedup_p99, row.recall_at_10
        );
    }
    if !r.memory.is_empty() {
        s += "\n| index | identities | dim | prototypes / tracklets per identity | bytes per identity computed (index + records) | measured |\n|---|---|---|---|---|---|\n";
        for m in &r.memory {
            s += &format!(
                "| {} | {} | {} | {} / {} | {:.0} ({:.0} + {:.0}) | {:.0} |\n",
                m.index,
                m.identities,
                m.dim,
                m.prototypes_per_identity,
                m.tracklets_per_identity,
                m.bytes_per_identity_computed,
                m.index_bytes_per_identity,
                m.records_bytes_per_identity,
                m.bytes_per_identity_measured
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiny_gallery_bench_runs() {
        let opts = GalleryBenchOptions {
            sizes: vec![500],
            dim: 32,
            queries: 30,
            identities: 50,
            quiet: true,
            ..GalleryBenchOptions::default()
        };
        let r = gallery(&opts).unwrap();
        assert_eq!(r.sizes.len(), 1);
        let row = &r.sizes[0];
        assert_eq!(row.exact.queries, 30);
        assert!(row.recall_at_10 > 0.9, "{row:?}");
        assert!(row.hnsw.bytes_per_entry_computed > row.exact.bytes_per_entry_computed);
        assert_eq!(r.memory.len(), 2);
        assert!(r.memory[0].bytes_per_identity_computed > 8.0 * 32.0 * 4.0);
        let text = render_gallery(&r);
        assert!(text.contains("| 500 | 32 | exact |"), "{text}");
    }
}
