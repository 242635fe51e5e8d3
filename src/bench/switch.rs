//! `crosscam bench switch`: the live model switch under load. Two real-time cameras run the
//! daemon for a while so that the store holds real crops of real tracklets; the stored tracklets
//! are then copied (rows only: the copies point at the same crop files, with the same identities)
//! until the store holds the wanted number of crops; the daemon restarts on that store, its
//! cameras' analysed frame rates are measured, a second embedder (`crosscam-resnet18-vtest-half`
//! unless `--candidate`) is registered and promoted, and the rates are measured again while the
//! gallery is re-embedded. Reported: the switch time, re-embedding throughput (crops/s), the
//! identities before and after, and the cameras' rates before and during the switch.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rusqlite::params;
use serde::Serialize;

use crate::config::Config;
use crate::server::Server;
use crate::server::switch::{SwitchOutcome, SwitchRequest};
use crate::store::Store;

#[derive(Debug, Clone, Serialize)]
pub struct SwitchBenchReport {
    pub cameras: usize,
    /// Seconds the cameras ran to collect real crops before the copies were made.
    pub collect_seconds: f64,
    /// Real tracklets (with crops and an identity) and their crops, before copying.
    pub real_tracklets: usize,
    pub real_crops: usize,
    /// Crops stored when the switch started (real + copies).
    pub stored_crops: usize,
    pub candidate: String,
    /// Analysed frames per second per camera before and during the switch.
    pub fps_before: Vec<(String, f64)>,
    pub fps_during: Vec<(String, f64)>,
    /// Largest relative drop of a camera's rate during the switch (0.1 = 10 %).
    pub worst_fps_drop: f64,
    pub reembed_pause_ms: u64,
    pub reembed_nice: i32,
    pub outcome: SwitchOutcome,
}

fn analysed(server: &Server) -> Vec<(String, u64)> {
    server
        .ingest
        .status()
        .into_iter()
        .map(|s| (s.id, s.analysed))
        .collect()
}

fn rates(a: &[(String, u64)], b: &[(String, u64)], secs: f64) -> Vec<(String, f64)> {
    b.iter()
        .map(|(id, n1)| {
            let n0 = a.iter().find(|(i, _)| i == id).map_or(0, |(_, n)| *n);
            (id.clone(), (n1 - n0) as f64 / secs.max(1e-9))
        })
        .collect()
}

/// Copies the stored tracklets that have crops and an identity (rows only) until the store
/// holds at least `target` crops. Returns (real tracklets, real crops, crops now).
fn copy_until(data_dir: &Path, target: usize) -> Result<(usize, usize, usize)> {
    let store = Store::open(data_dir)?;
    let conn = store.conn();
    let count = |sql: &str| -> Result<usize> {
        Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as usize)
    };
    let real_crops = count("SELECT COUNT(*) FROM crops")?;
    let mut st = conn.prepare(
        "SELECT t.id FROM tracklets t JOIN sightings s ON s.tracklet = t.id
         WHERE EXISTS (SELECT 1 FROM crops c WHERE c.tracklet = t.id) ORDER BY t.id",
    )?;
    let originals: Vec<i64> = st
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    drop(st);
    anyhow::ensure!(
        !originals.is_empty(),
        "the cameras made no linked tracklet with crops to copy; run longer (--collect-seconds)"
    );
    let mut crops = real_crops;
    let mut copy = 1i64;
    while crops < target {
        let tx = conn.unchecked_transaction()?;
        for &t in &originals {
            if crops >= target {
                break;
            }
            tx.execute(
                "INSERT INTO tracklets (camera, run, track_id, start_ms, end_ms, boxes, quality, ended, track)
                 SELECT camera, run, track_id + ?2 * 1000000000, start_ms, end_ms, boxes, quality, ended, track
                 FROM tracklets WHERE id = ?1",
                params![t, copy],
            )?;
            let new = tx.last_insert_rowid();
            crops += tx.execute(
                "INSERT INTO crops (tracklet, seq, path, quality, bytes, created_ms)
                 SELECT ?2, seq, path, quality, bytes, created_ms FROM crops WHERE tracklet = ?1",
                params![t, new],
            )?;
            tx.execute(
                "INSERT INTO sightings (tracklet, identity, similarity, margin, decision, model, created_ms)
                 SELECT ?2, identity, similarity, margin, decision, model, created_ms FROM sightings WHERE tracklet = ?1",
                params![t, new],
            )?;
            tx.execute(
                "INSERT INTO descriptors (tracklet, model, dim, vector)
                 SELECT ?2, model, dim, vector FROM descriptors WHERE tracklet = ?1",
                params![t, new],
            )?;
        }
        tx.commit()?;
        copy += 1;
    }
    Ok((originals.len(), real_crops, crops))
}

/// Runs the benchmark; `cfg` gives the models.
pub fn switch(
    cfg: &Config,
    crops: usize,
    collect_seconds: f64,
    seconds: f64,
    candidate: Option<PathBuf>,
    pause_ms: u64,
    nice: i32,
) -> Result<SwitchBenchReport> {
    crate::config::ModelSettings::check_reembed_nice(nice)
        .map_err(|m| anyhow::anyhow!("--nice: {m}"))?;
    let mut c = super::camera::camera_config_for_api(cfg, 2)?;
    c.models.reembed_pause_ms = pause_ms;
    c.models.reembed_nice = nice;
    let data_dir = c.server.data_dir.clone();
    let _ = std::fs::remove_dir_all(&data_dir);

    // 1. real crops of real tracklets
    let server = Server::start(&c, None)?;
    super::camera::warm_up(&server.ingest);
    eprintln!("bench switch: collecting crops for {collect_seconds:.0} s");
    std::thread::sleep(Duration::from_secs_f64(collect_seconds));
    server.shutdown();
    let (real_tracklets, real_crops, stored_crops) = copy_until(&data_dir, crops)?;
    eprintln!(
        "bench switch: {real_tracklets} real tracklets with {real_crops} crops, copied to {stored_crops} stored crops"
    );

    // 2. the daemon on that store: rates before, then promote and rates during
    let server = Server::start(&c, None)?;
    super::camera::warm_up(&server.ingest);
    let manifest = crate::models::Manifest::load(&c.models.manifest)?;
    let candidate = match candidate {
        Some(p) => p,
        None => manifest.file_of(manifest.get("crosscam-resnet18-vtest-half")?),
    };
    let mut reg = crate::jobs::Registry::open(&data_dir)?;
    let v = reg.register(&candidate, "bench switch", None)?;
    let a0 = analysed(&server);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let fps_before = rates(&a0, &analysed(&server), t0.elapsed().as_secs_f64());
    eprintln!(
        "bench switch: rates before {fps_before:?}; promoting {}",
        v.id
    );
    server
        .switcher
        .request(SwitchRequest::Promote(v.id.clone()), "bench")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // the cameras' rates while the gallery is re-embedded (until the last phase)
    let a0 = analysed(&server);
    let t0 = Instant::now();
    let mut a1 = a0.clone();
    let mut t1 = 0.0;
    let mut last_print = Instant::now();
    while let Some(p) = server.switcher.progress() {
        if p.phase == "re-embedding" || p.phase == "loading" {
            a1 = analysed(&server);
            t1 = t0.elapsed().as_secs_f64();
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("bench switch: {} {}/{}", p.phase, p.done, p.total);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let fps_during = rates(&a0, &a1, t1);
    let outcome = server
        .switcher
        .last()
        .context("the switch left no outcome")?;
    server.shutdown();
    anyhow::ensure!(
        outcome.outcome == "switched",
        "the switch failed: {}",
        outcome.reason
    );
    let worst_fps_drop = fps_before
        .iter()
        .map(|(id, b)| {
            let d = fps_during
                .iter()
                .find(|(i, _)| i == id)
                .map_or(0.0, |(_, r)| *r);
            (b - d) / b.max(1e-9)
        })
        .fold(f64::MIN, f64::max);
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(SwitchBenchReport {
        cameras: c.cameras.len(),
        collect_seconds,
        real_tracklets,
        real_crops,
        stored_crops,
        candidate: candidate.display().to_string(),
        fps_before,
        fps_during,
        worst_fps_drop,
        reembed_pause_ms: pause_ms,
        reembed_nice: nice,
        outcome,
    })
}

pub fn render_switch(r: &SwitchBenchReport) -> String {
    let o = &r.outcome;
    let f = |v: &[(String, f64)]| {
        v.iter()
            .map(|(c, x)| format!("{c} {x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "live model switch, {} real-time cameras, {} stored crops ({} real crops of {} tracklets, copied), candidate {}\n\
         switch {} → {}: {:.1} s, {} tracklets / {} crops re-embedded, {:.1} crops/s, identities {} → {}\n\
         camera fps before: {}\n\
         camera fps during: {}\n\
         worst drop {:.1} % (reembed_pause_ms {}, reembed_nice {})\n",
        r.cameras,
        r.stored_crops,
        r.real_crops,
        r.real_tracklets,
        r.candidate,
        o.from,
        o.to,
        o.seconds,
        o.tracklets,
        o.crops,
        o.crops_per_s,
        o.identities_before,
        o.identities_after,
        f(&r.fps_before),
        f(&r.fps_during),
        100.0 * r.worst_fps_drop,
        r.reembed_pause_ms,
        r.reembed_nice
    )
}
