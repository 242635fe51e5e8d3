//! `crosscam bench cluster`: how many cameras' worth of observations one core links in real
//! time. A real `nats-server -js` (from `make setup`) and a real core (the daemon's stages, in
//! this process) on 127.0.0.1; synthetic edges publish what N cameras would: per camera a few
//! people at a time, each a tracklet that starts, is described again every few seconds (every
//! box so far, the best crops as JPEG, a unit descriptor of the core's model) and ends. People
//! come back on other cameras (their descriptors are noisy copies of one per person), so the
//! core links as it would on a site. Each step is a fresh core and stream.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message as _;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::wire::{Observation, SCHEMA, WireBox, WireCrop};
use crate::cluster::{ClusterSettings, Role};
use crate::config::Config;

#[derive(Debug, Clone)]
pub struct ClusterBenchOptions {
    /// Camera counts, one step each.
    pub cameras: Vec<usize>,
    /// Seconds each step publishes.
    pub seconds: f64,
    /// People in view of a camera at once (open tracklets).
    pub people: usize,
    /// Mean tracklet length, seconds.
    pub tracklet_s: f64,
    /// Seconds between two descriptions of an open tracklet.
    pub update_s: f64,
    /// Crops per observation (at most; a young tracklet has fewer).
    pub crops: usize,
    /// An existing broker (`nats://host:port`); default: a `nats-server` started here.
    pub nats: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStep {
    pub cameras: usize,
    /// Observations per second the cameras would send.
    pub offered_per_s: f64,
    /// Observations published (acknowledged by the broker) in the step, and per second.
    pub published: u64,
    pub published_per_s: f64,
    /// Observations the core stored (linked and acknowledged) within the window and after it.
    pub stored: u64,
    pub stored_per_s: f64,
    /// From the broker storing an observation to the core having stored it, ms.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    /// Seconds after publishing stopped until the core had stored everything.
    pub drain_s: f64,
    /// Mean message size, bytes.
    pub bytes_per_obs: f64,
    /// The broker's CPU time per observation, µs (its process's user + system time).
    pub broker_cpu_us_per_obs: Option<f64>,
    /// This process's CPU time per observation, µs (core and publisher together).
    pub process_cpu_us_per_obs: f64,
    /// The publisher reached at least 95 % of the offered rate.
    pub publisher_kept_up: bool,
    /// The core linked in real time: p99 lag ≤ 2 s and drained within 2 s.
    pub kept_up: bool,
    /// The core's gallery at the end of the step (it grows with every new person).
    pub identities: u64,
    pub prototypes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterBenchReport {
    pub steps: Vec<ClusterStep>,
    /// The most cameras the core kept up with.
    pub best: Option<usize>,
    pub obs_per_camera_s: f64,
    pub people: usize,
    pub tracklet_s: f64,
    pub update_s: f64,
    pub crops: usize,
    pub seconds: f64,
    pub cores: usize,
    pub broker: String,
}

/// CPU seconds (user + system) of a process from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    crate::cluster::cpu::proc_cpu(pid).map(|p| p.seconds)
}

/// A folder under the system's temporary directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Scratch> {
        let p = std::env::temp_dir().join(format!(
            "crosscam-bench-cluster-{}-{what}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `nats-server -js` on a free port of 127.0.0.1, stopped on drop.
struct Broker {
    child: std::process::Child,
    url: String,
    _store: Scratch,
}

impl Broker {
    fn start() -> anyhow::Result<Broker> {
        let bin = crate::paths::deps_dir().join("nats/nats-server");
        anyhow::ensure!(
            bin.is_file(),
            "{} is missing: run `make setup` (or give --nats nats://host:port)",
            bin.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let store = Scratch::new("nats")?;
        let child = std::process::Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(20),
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Broker {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A person crop as an edge sends it: 64×128, JPEG quality 90, with some texture.
fn crop_jpeg(rng: &mut impl Rng) -> Vec<u8> {
    let (r0, g0, b0): (u8, u8, u8) = (rng.random(), rng.random(), rng.random());
    let img = image::RgbImage::from_fn(64, 128, |x, y| {
        let n = ((x * 7 + y * 13) % 23) as u8;
        image::Rgb([
            r0.wrapping_add(n),
            g0.wrapping_add(n / 2),
            b0.wrapping_add((y / 8) as u8),
        ])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .expect("encodes");
    jpeg
}

/// One open tracklet of a synthetic camera.
struct Open {
    track: u64,
    person: usize,
    born: f64,
    ends: f64,
    next_update: f64,
    seq: u64,
}

/// What the synthetic edges publish.
struct Synth {
    o: ClusterBenchOptions,
    model: String,
    people_base: Vec<Vec<f32>>,
    crops: Vec<Vec<u8>>,
    rng: rand::rngs::StdRng,
}

impl Synth {
    fn descriptor(&mut self, person: usize) -> Vec<f32> {
        let base = &self.people_base[person];
        let mut d: Vec<f32> = base
            .iter()
            .map(|v| v + 0.35 * self.rng.random_range(-1.0f32..1.0))
            .collect();
        let n = d.iter().map(|v| v * v).sum::<f32>().sqrt();
        d.iter_mut().for_each(|v| *v /= n);
        d
    }

    fn message(&mut self, camera: &str, run: &str, t: &Open, now: f64, kind: i32) -> Observation {
        let age = (now - t.born).max(0.0);
        let started = kind == 1;
        let n_boxes = if started { 1 } else { (age * 5.0) as usize + 1 };
        let boxes = (0..n_boxes)
            .map(|i| {
                let x = 100.0 + i as f32 * 2.0;
                WireBox {
                    seq: i as u64,
                    pts_us: ((t.born + i as f64 / 5.0) * 1e6) as i64,
                    wall_ms: 0,
                    x1: x,
                    y1: 100.0,
                    x2: x + 60.0,
                    y2: 250.0,
                    score: 0.8,
                }
            })
            .collect();
        let n_crops = if started {
            0
        } else {
            self.o.crops.min(1 + (age / 0.6) as usize)
        };
        let crops = (0..n_crops)
            .map(|i| WireCrop {
                seq: i as u64,
                pts_us: ((t.born + i as f64 * 0.6) * 1e6) as i64,
                x1: 100.0,
                y1: 100.0,
                x2: 160.0,
                y2: 250.0,
                quality: 0.7,
                jpeg: self.crops[(t.person + i) % self.crops.len()].clone(),
            })
            .collect();
        let descriptor = if started {
            Vec::new()
        } else {
            self.descriptor(t.person)
        };
        Observation {
            schema: SCHEMA,
            edge: "bench".into(),
            camera: camera.to_string(),
            run: run.to_string(),
            track: t.track,
            seq: t.seq,
            kind,
            start_pts_us: (t.born * 1e6) as i64,
            end_pts_us: (now * 1e6) as i64,
            boxes,
            crops,
            quality: if started { 0.0 } else { 0.7 },
            model: if started {
                String::new()
            } else {
                self.model.clone()
            },
            descriptor,
            published_ms: crate::store::now_ms(),
        }
    }
}

/// Publishes N cameras' observations for `seconds` (in real time); returns (published,
/// bytes, whether it kept the rate).
fn publish(
    settings: &ClusterSettings,
    synth: &mut Synth,
    cameras: usize,
    seconds: f64,
    offered: f64,
) -> anyhow::Result<(u64, u64, bool)> {
    let rt = crate::cluster::runtime()?;
    let client = rt.block_on(settings.connect("bench-edges"))?;
    let js = {
        let _in = rt.enter();
        async_nats::jetstream::new(client.clone())
    };
    let run = format!("{:016x}", rand::random::<u64>());
    let names: Vec<String> = (0..cameras).map(|i| format!("s{i:04}")).collect();
    let mut next_track = 1u64;
    let n_people = synth.people_base.len();
    let (people, tracklet_s, update_s) = (synth.o.people, synth.o.tracklet_s, synth.o.update_s);
    let mut open: Vec<Vec<Open>> = (0..cameras)
        .map(|_| {
            (0..people)
                .map(|_| {
                    // staggered: every tracklet is somewhere in its life at the start
                    let life = tracklet_s * synth.rng.random_range(0.5..1.5);
                    let born = -synth.rng.random_range(0.0..life);
                    next_track += 1;
                    Open {
                        track: next_track,
                        person: synth.rng.random_range(0..n_people),
                        born,
                        ends: born + life,
                        next_update: synth.rng.random_range(0.0..update_s),
                        seq: 0,
                    }
                })
                .collect()
        })
        .collect();
    let t0 = Instant::now();
    let (mut published, mut bytes) = (0u64, 0u64);
    let mut pending = VecDeque::new();
    while t0.elapsed().as_secs_f64() < seconds {
        let now = t0.elapsed().as_secs_f64();
        let mut batch: Vec<(String, String, Vec<u8>)> = Vec::new();
        for (c, tracks) in open.iter_mut().enumerate() {
            for t in tracks.iter_mut() {
                if now >= t.ends {
                    t.seq += 1;
                    let m = synth.message(&names[c], &run, t, now, 3);
                    batch.push((
                        names[c].clone(),
                        format!("{}/{run}/{}/{}", names[c], t.track, t.seq),
                        m.encode_to_vec(),
                    ));
                    // the next person walks in
                    next_track += 1;
                    let life = tracklet_s * synth.rng.random_range(0.5..1.5);
                    *t = Open {
                        track: next_track,
                        person: synth.rng.random_range(0..n_people),
                        born: now,
                        ends: now + life,
                        next_update: now + update_s,
                        seq: 0,
                    };
                    let m = synth.message(&names[c], &run, t, now, 1);
                    batch.push((
                        names[c].clone(),
                        format!("{}/{run}/{}/0", names[c], t.track),
                        m.encode_to_vec(),
                    ));
                } else if now >= t.next_update {
                    t.seq += 1;
                    t.next_update = now + update_s;
                    let m = synth.message(&names[c], &run, t, now, 2);
                    batch.push((
                        names[c].clone(),
                        format!("{}/{run}/{}/{}", names[c], t.track, t.seq),
                        m.encode_to_vec(),
                    ));
                }
            }
        }
        rt.block_on(async {
            for (camera, id, payload) in batch {
                bytes += payload.len() as u64;
                let msg = async_nats::jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(payload))
                    .message_id(id);
                let ack = js.send_publish(settings.obs_subject(&camera), msg).await?;
                pending.push_back(ack);
            }
            // acknowledgements of the rounds before: keep at most a few thousand in flight
            while pending.len() > 4096 {
                if let Some(a) = pending.pop_front() {
                    a.await?;
                    published += 1;
                }
            }
            anyhow::Ok(())
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    rt.block_on(async {
        while let Some(a) = pending.pop_front() {
            a.await?;
            published += 1;
        }
        anyhow::Ok(())
    })?;
    let kept = published as f64 / elapsed >= 0.95 * offered;
    Ok((published, bytes, kept))
}

fn percentile(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64
}

pub fn cluster(cfg: &Config, o: &ClusterBenchOptions) -> anyhow::Result<ClusterBenchReport> {
    anyhow::ensure!(!o.cameras.is_empty(), "--cameras: give at least one count");
    anyhow::ensure!(
        o.people >= 1 && o.tracklet_s > 0.0 && o.update_s > 0.0 && o.seconds > 0.0,
        "--people, --tracklet-s, --update-s and --seconds must be positive"
    );
    let broker = match &o.nats {
        Some(_) => None,
        None => Some(Broker::start()?),
    };
    let url = o
        .nats
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.url.clone()))
        .expect("a broker");
    // per camera: each of `people` tracklets sends a start and an end, and an update every
    // update_s after the first update_s of its life (about 1.5 fewer than life / update_s)
    let obs_per_camera_s = o.people as f64 * (1.0 / o.update_s + 1.5 / o.tracklet_s);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let crops: Vec<Vec<u8>> = (0..16).map(|_| crop_jpeg(&mut rng)).collect();
    let mut steps = Vec::new();
    for &n in &o.cameras {
        let data = Scratch::new(&format!("core-{n}"))?;
        let mut c = cfg.clone();
        c.server.data_dir = data.path().to_path_buf();
        c.cameras.clear();
        c.outputs.clear();
        let settings = ClusterSettings {
            nats: url.clone(),
            site: format!("bench-{n}"),
            edge: None,
            buffer_max: 100_000,
            duplicate_window_s: 120,
            consumer: "core".into(),
            tls_ca: None,
            lease_s: 5,
            buffer_disk_mb: 0,
            replicas: 1,
            snapshot_s: 60,
            capacity: 1.0,
            stream_max_age_hours: 168.0,
            stream_max_gib: 0.0,
        };
        c.cluster = Some(settings.clone());
        let server = crate::server::Server::start_role(&c, None, Role::Core)?;
        let model = server.model();
        let dim = server.embedder.current().dim;
        // wait for the core's stream
        let t0 = Instant::now();
        while server.cluster().is_some_and(|s| !s.connected) && t0.elapsed().as_secs() < 20 {
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        // people of the site: each is seen by a few cameras
        let n_people = (n * o.people * 4).max(16);
        let people_base = (0..n_people)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        let mut synth = Synth {
            o: o.clone(),
            model,
            people_base,
            crops: crops.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(n as u64),
        };
        let link = server.cluster().map(|s| s.acked).unwrap_or_default();
        let broker_cpu0 = broker.as_ref().and_then(|b| cpu_seconds(b.child.id()));
        let me_cpu0 = cpu_seconds(std::process::id()).unwrap_or(0.0);
        let offered = obs_per_camera_s * n as f64;
        eprintln!(
            "bench cluster: {n} cameras, {offered:.0} observations/s offered, {:.0} s …",
            o.seconds
        );
        server.take_cluster_lags();
        let t_pub = Instant::now();
        let (published, bytes, publisher_kept_up) =
            publish(&settings, &mut synth, n, o.seconds, offered)?;
        let window = t_pub.elapsed().as_secs_f64();
        let stored_in_window = server.cluster().map(|s| s.acked).unwrap_or_default() - link;
        // drain: everything published stored
        let t_stop = Instant::now();
        let stored = loop {
            let s = server.cluster().map(|s| s.acked).unwrap_or_default() - link;
            if s >= published || t_stop.elapsed() > Duration::from_secs(120) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let drain_s = t_stop.elapsed().as_secs_f64();
        let broker_cpu = match (
            broker_cpu0,
            broker.as_ref().and_then(|b| cpu_seconds(b.child.id())),
        ) {
            (Some(a), Some(b)) if published > 0 => Some((b - a) * 1e6 / published as f64),
            _ => None,
        };
        let me_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - me_cpu0;
        let mut lags = server.take_cluster_lags();
        let gallery = server.status().link;
        let step = ClusterStep {
            cameras: n,
            offered_per_s: offered,
            published,
            published_per_s: published as f64 / window,
            stored,
            stored_per_s: stored_in_window as f64 / window,
            lag_p50_ms: percentile(&mut lags, 0.5),
            lag_p99_ms: percentile(&mut lags, 0.99),
            drain_s,
            bytes_per_obs: bytes as f64 / published.max(1) as f64,
            broker_cpu_us_per_obs: broker_cpu,
            process_cpu_us_per_obs: me_cpu * 1e6 / published.max(1) as f64,
            publisher_kept_up,
            kept_up: false,
            identities: gallery.gallery_identities,
            prototypes: gallery.gallery_prototypes,
        };
        let kept_up =
            publisher_kept_up && stored >= published && step.lag_p99_ms <= 2000.0 && drain_s <= 2.0;
        let step = ClusterStep { kept_up, ..step };
        eprintln!(
            "  published {:.0}/s, stored {:.0}/s, lag p99 {:.0} ms, drained in {:.1} s: {}",
            step.published_per_s,
            step.stored_per_s,
            step.lag_p99_ms,
            step.drain_s,
            if kept_up { "kept up" } else { "fell behind" }
        );
        server.shutdown();
        steps.push(step);
    }
    let best = steps.iter().filter(|s| s.kept_up).map(|s| s.cameras).max();
    Ok(ClusterBenchReport {
        steps,
        best,
        obs_per_camera_s,
        people: o.people,
        tracklet_s: o.tracklet_s,
        update_s: o.update_s,
        crops: o.crops,
        seconds: o.seconds,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        broker: if o.nats.is_some() {
            "given (--nats)".into()
        } else {
            "nats-server 2.15.1 (.deps/nats), 127.0.0.1, file store".into()
        },
    })
}

pub fn render_cluster(r: &ClusterBenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "one core, synthetic edges: per camera {} people at a time, tracklets of {:.0} s, described every {:.0} s, up to {} crops: {:.2} observations/s per camera; {} s per step; {} CPU cores; broker {}",
        r.people,
        r.tracklet_s,
        r.update_s,
        r.crops,
        r.obs_per_camera_s,
        r.seconds,
        r.cores,
        r.broker
    );
    let _ = writeln!(
        s,
        "{:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>8} {:>9} {:>12} {:>12} {:>11}  result",
        "cameras",
        "offered/s",
        "publ./s",
        "stored/s",
        "lag p50",
        "lag p99",
        "drain",
        "KiB/obs",
        "broker µs/obs",
        "core µs/obs",
        "prototypes"
    );
    for st in &r.steps {
        let _ = writeln!(
            s,
            "{:>8} {:>10.0} {:>10.0} {:>10.0} {:>7.0}ms {:>7.0}ms {:>7.1}s {:>9.1} {:>12} {:>12.0} {:>11}  {}",
            st.cameras,
            st.offered_per_s,
            st.published_per_s,
            st.stored_per_s,
            st.lag_p50_ms,
            st.lag_p99_ms,
            st.drain_s,
            st.bytes_per_obs / 1024.0,
            st.broker_cpu_us_per_obs
                .map_or("-".into(), |v| format!("{v:.0}")),
            st.process_cpu_us_per_obs,
            st.prototypes,
            if !st.publisher_kept_up {
                "publisher behind (inconclusive)"
            } else if st.kept_up {
                "kept up"
            } else {
                "fell behind"
            }
        );
    }
    let _ = writeln!(
        s,
        "most cameras linked in real time: {}",
        r.best.map_or("none of these".into(), |b| b.to_string())
    );
    s
}
