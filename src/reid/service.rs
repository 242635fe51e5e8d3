//! The embedding stage: turns tracklets into descriptors. Crops of tracklets from every camera
//! are batched into one inference run (up to `max_batch` crops, waiting at most `max_wait` for a
//! batch to fill); a tracklet's descriptor is the quality-weighted mean of its L2-normalised crop
//! embeddings, re-normalised. Growing tracklets are re-described as they gain better crops;
//! embeddings of crops already seen are cached, so only new crops cost inference.

use crate::server::stage::StageThread;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::warn;

use crate::ingest::CameraId;
use crate::server::CameraTrackEvent;
use crate::track::{TrackEvent, Tracklet};

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReidSettings {
    /// Most crops in one inference run.
    pub max_batch: usize,
    /// Longest wait (ms) for a batch to fill before running it anyway.
    pub max_wait_ms: u64,
    /// Tracklets with fewer boxes are not described (short flickers are not people to link).
    pub min_boxes: usize,
    /// Tracklets with fewer crops are not described.
    pub min_crops: usize,
}

impl Default for ReidSettings {
    fn default() -> Self {
        ReidSettings {
            max_batch: 16,
            max_wait_ms: 50,
            min_boxes: 5,
            min_crops: 2,
        }
    }
}

/// A described tracklet.
#[derive(Debug, Clone)]
pub struct Observation {
    pub camera: CameraId,
    pub tracklet: Tracklet,
    /// The tracklet has ended (no more updates will come).
    pub ended: bool,
    /// Unit-length descriptor; `None` when the tracklet is too short to describe.
    pub descriptor: Option<Vec<f32>>,
    /// Mean quality of the crops the descriptor comes from.
    pub quality: f32,
    /// The tag of the model that computed `descriptor` (a live model switch may swap the model
    /// while observations are queued: the link stage re-describes those of the old one).
    pub model: String,
}

/// What the stage emits, in tracker order per camera.
#[derive(Debug, Clone)]
pub enum ReidOutput {
    Started {
        camera: CameraId,
        tracklet: Tracklet,
    },
    Observed(Observation),
}

#[derive(Debug)]
pub struct ReidMetrics {
    /// Embedder time per batch (seconds).
    pub embed_hist: crate::server::histogram::Histogram,
    /// Crops per embedding batch.
    pub batch_hist: crate::server::histogram::Histogram,
    pub batches: AtomicU64,
    pub crops: AtomicU64,
    pub embed_ns: AtomicU64,
    pub observations: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReidSnapshot {
    pub batches: u64,
    pub crops: u64,
    pub mean_batch: f64,
    pub ms_per_crop: f64,
    pub observations: u64,
    pub errors: u64,
}

impl Default for ReidMetrics {
    fn default() -> Self {
        ReidMetrics {
            embed_hist: crate::server::histogram::Histogram::latency(),
            batch_hist: crate::server::histogram::Histogram::batch(),
            batches: AtomicU64::new(0),
            crops: AtomicU64::new(0),
            embed_ns: AtomicU64::new(0),
            observations: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

impl ReidMetrics {
    pub fn snapshot(&self) -> ReidSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ReidSnapshot {
            batches: l(&self.batches),
            crops: l(&self.crops),
            mean_batch: l(&self.crops) as f64 / l(&self.batches).max(1) as f64,
            ms_per_crop: l(&self.embed_ns) as f64 / 1e6 / l(&self.crops).max(1) as f64,
            observations: l(&self.observations),
            errors: l(&self.errors),
        }
    }
}

/// Quality-weighted mean of unit vectors, re-normalised (`None` for no vectors or zero weight).
pub fn weighted_descriptor(embeddings: &[(&[f32], f32)]) -> Option<Vec<f32>> {
    let dim = embeddings.first()?.0.len();
    let mut acc = vec![0f32; dim];
    for (e, w) in embeddings {
        let w = w.max(1e-6);
        for (a, v) in acc.iter_mut().zip(e.iter()) {
            *a += w * v;
        }
    }
    let n = acc.iter().map(|v| v * v).sum::<f32>().sqrt();
    (n > 0.0).then(|| acc.iter().map(|v| v / n).collect())
}

type CropKey = (CameraId, u64, u64);

struct Pending {
    camera: CameraId,
    tracklet: Tracklet,
    ended: bool,
}

pub struct ReidStage {
    pub metrics: Arc<ReidMetrics>,
    thread: StageThread,
}

impl ReidStage {
    /// Starts the stage. Its outputs go to `output` as `T`: the link stage's input in this
    /// process, or the broker's publisher on an edge (`crate::server::Boundary`).
    pub fn start<T: From<ReidOutput> + Send + 'static>(
        embedder: Arc<crate::server::switch::SharedEmbedder>,
        settings: ReidSettings,
        input: crossbeam_channel::Receiver<CameraTrackEvent>,
        output: crossbeam_channel::Sender<T>,
    ) -> ReidStage {
        let metrics = Arc::new(ReidMetrics::default());
        let m = metrics.clone();
        let thread = StageThread::spawn("reid", move |s| {
            let mut cache: HashMap<CropKey, Vec<f32>> = HashMap::new();
            // the model the cached embeddings come from: a switch empties the cache
            let mut cache_model = String::new();
            let mut pending: Vec<Pending> = Vec::new();
            let mut oldest: Option<Instant> = None;
            let wait = Duration::from_millis(settings.max_wait_ms);
            loop {
                let timeout = oldest.map_or(Duration::from_millis(200), |t| {
                    wait.saturating_sub(t.elapsed())
                });
                let mut disconnected = false;
                match input.recv_timeout(timeout) {
                    Ok(ev) => {
                        let camera = ev.camera.clone();
                        let (tracklet, ended) = match ev.event {
                            TrackEvent::Started(t) => {
                                let _ = output.send(
                                    ReidOutput::Started {
                                        camera,
                                        tracklet: t,
                                    }
                                    .into(),
                                );
                                continue;
                            }
                            TrackEvent::Updated(t) => (t, false),
                            TrackEvent::Ended(t) => (t, true),
                        };
                        // a newer snapshot of the same tracklet replaces the waiting one
                        pending.retain(|p| !(p.camera == camera && p.tracklet.id == tracklet.id));
                        pending.push(Pending {
                            camera,
                            tracklet,
                            ended,
                        });
                        oldest.get_or_insert_with(Instant::now);
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => disconnected = true,
                }
                let new_crops: usize = pending
                    .iter()
                    .map(|p| {
                        p.tracklet
                            .crops
                            .iter()
                            .filter(|c| {
                                !cache.contains_key(&(p.camera.clone(), p.tracklet.id, c.seq))
                            })
                            .count()
                    })
                    .sum();
                let due = oldest.is_some_and(|t| t.elapsed() >= wait)
                    || new_crops >= settings.max_batch
                    || disconnected
                    || s.load(Ordering::SeqCst);
                if due && !pending.is_empty() {
                    let model = embedder.current();
                    if model.tag != cache_model {
                        cache.clear();
                        cache_model = model.tag.clone();
                    }
                    describe(
                        &model,
                        &settings,
                        &mut cache,
                        std::mem::take(&mut pending),
                        &output,
                        &m,
                    );
                    oldest = None;
                }
                if disconnected || (s.load(Ordering::SeqCst) && pending.is_empty()) {
                    break;
                }
            }
        });
        ReidStage { metrics, thread }
    }

    /// Waits for the stage to end on its own: it describes what is pending and exits once its
    /// input (the analysis) has closed.
    pub fn finish(&mut self) {
        self.thread.finish();
    }

    /// Finishes what is pending and stops, even if the input is still open.
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

fn describe<T: From<ReidOutput>>(
    model: &crate::server::switch::ServingEmbedder,
    s: &ReidSettings,
    cache: &mut HashMap<CropKey, Vec<f32>>,
    pending: Vec<Pending>,
    output: &crossbeam_channel::Sender<T>,
    m: &ReidMetrics,
) {
    // every new crop of every waiting (long enough) tracklet, embedded in batches across cameras
    let describable = |p: &Pending| {
        p.tracklet.boxes.len() >= s.min_boxes && p.tracklet.crops.len() >= s.min_crops
    };
    let mut todo: Vec<(CropKey, Arc<image::RgbImage>)> = Vec::new();
    for p in pending.iter().filter(|p| describable(p)) {
        for c in &p.tracklet.crops {
            let key = (p.camera.clone(), p.tracklet.id, c.seq);
            if !cache.contains_key(&key) && !todo.iter().any(|(k, _)| *k == key) {
                todo.push((key, c.image.clone()));
            }
        }
    }
    let mut failed = false;
    for chunk in todo.chunks(s.max_batch.max(1)) {
        let images: Vec<image::RgbImage> = chunk.iter().map(|(_, i)| (**i).clone()).collect();
        let t0 = Instant::now();
        match model.embed_images(&images) {
            Ok(e) => {
                m.embed_ns
                    .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                m.batches.fetch_add(1, Ordering::Relaxed);
                m.crops.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                m.embed_hist.observe_duration(t0.elapsed());
                m.batch_hist.observe(chunk.len() as f64);
                for ((key, _), row) in chunk.iter().zip(e.rows()) {
                    cache.insert(key.clone(), row.to_vec());
                }
            }
            Err(err) => {
                m.errors.fetch_add(1, Ordering::Relaxed);
                warn!(error = %err, "embedding failed; the tracklets of this batch stay undescribed");
                failed = true;
            }
        }
    }
    for p in pending {
        let descriptor = if describable(&p) && !failed {
            let embs: Vec<(&[f32], f32)> = p
                .tracklet
                .crops
                .iter()
                .filter_map(|c| {
                    cache
                        .get(&(p.camera.clone(), p.tracklet.id, c.seq))
                        .map(|e| (e.as_slice(), c.quality))
                })
                .collect();
            weighted_descriptor(&embs)
        } else {
            None
        };
        let quality = p.tracklet.crops.iter().map(|c| c.quality).sum::<f32>()
            / p.tracklet.crops.len().max(1) as f32;
        if p.ended {
            cache.retain(|k, _| !(k.0 == p.camera && k.1 == p.tracklet.id));
        }
        if descriptor.is_some() || p.ended {
            m.observations.fetch_add(1, Ordering::Relaxed);
            let _ = output.send(
                ReidOutput::Observed(Observation {
                    camera: p.camera,
                    tracklet: p.tracklet,
                    ended: p.ended,
                    descriptor,
                    quality,
                    model: model.tag.clone(),
                })
                .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_is_the_weighted_mean_renormalised() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let d = weighted_descriptor(&[(&a, 3.0), (&b, 1.0)]).unwrap();
        assert!(
            (d[0] - 0.9486833).abs() < 1e-5 && (d[1] - 0.31622776).abs() < 1e-5,
            "{d:?}"
        );
        assert!(weighted_descriptor(&[]).is_none());
    }
}
