//! The crop writer: a thread beside the link stage that stores tracklets' crop pictures (a JPEG
//! file each, then its row, with its own connection to the store), so that the link stage's
//! thread only links. Creating thousands of small files a second is mostly the kernel's work
//! (inode allocation); on the link thread it was 40 % of a core's time at 700 cameras
//! (docs/PERFORMANCE.md, "One core's capacity").
//!
//! Order is kept: jobs are done one after the other, and an [`Inbound`](super::Inbound)'s
//! `done` (an edge's acknowledgement) is called only after its crops are stored, so that an
//! acknowledged observation is completely stored, pictures included. A file is written before
//! its row, as before (a crash leaves at most an unreferenced file).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use super::Outcome;
use crate::store::Store;

/// Jobs waiting at most (the link stage waits when the disk cannot keep up).
const QUEUE: usize = 4096;
/// Jobs done together at most.
const BATCH: usize = 64;

type Done = Box<dyn FnOnce(Outcome) + Send>;

/// One output's crops, and what to call once they are stored.
pub struct Job {
    /// (tracklet row, camera, crops) of the output's observations.
    pub crops: Vec<(i64, String, Vec<crate::track::Crop>)>,
    pub done: Option<Done>,
    pub outcome: Outcome,
}

/// Counters for status and `/metrics`.
#[derive(Debug, Default)]
pub struct CropWriterMetrics {
    /// Crop files written.
    pub written: AtomicU64,
    /// Outputs whose crops could not be stored (the error is logged; linking is unaffected).
    pub errors: AtomicU64,
}

pub struct CropWriter {
    tx: Option<crossbeam_channel::Sender<Job>>,
    depth: crossbeam_channel::Receiver<Job>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub metrics: Arc<CropWriterMetrics>,
}

impl CropWriter {
    /// Starts the thread with its own connection to the store of `data_dir`.
    pub fn start(data_dir: &std::path::Path) -> crate::store::Result<CropWriter> {
        let store = Store::open(data_dir)?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let metrics = Arc::new(CropWriterMetrics::default());
        let (m, depth) = (metrics.clone(), rx.clone());
        let thread = std::thread::Builder::new()
            .name("crop-writer".into())
            .spawn(move || {
                // what is waiting is done together: files first, then every row in one
                // transaction (the link stage's writes wait for the store's lock less often),
                // then the acknowledgements
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < BATCH
                        && let Ok(j) = rx.try_recv()
                    {
                        jobs.push(j);
                    }
                    let mut rows = Vec::new();
                    let mut files = 0u64;
                    for job in &jobs {
                        for (tracklet, camera, crops) in &job.crops {
                            match store.write_crop_files(*tracklet, camera, crops) {
                                Ok(r) => {
                                    files += r.len() as u64;
                                    rows.extend(r);
                                }
                                Err(e) => {
                                    m.errors.fetch_add(1, Ordering::Relaxed);
                                    tracing::info_span!("camera", id = %camera).in_scope(|| {
                                        warn!(error = %e, tracklet, "cannot store a tracklet's crops")
                                    });
                                }
                            }
                        }
                    }
                    let recorded = match store.insert_crop_rows(&rows) {
                        Ok(()) => {
                            m.written.fetch_add(files, Ordering::Relaxed);
                            true
                        }
                        Err(e) => {
                            m.errors.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                            warn!(error = %e, crops = rows.len(), "cannot record crops in the store");
                            false
                        }
                    };
                    for job in jobs {
                        if let Some(done) = job.done {
                            // not acknowledged: delivered again, its copy brings the crops
                            done(if recorded { job.outcome } else { Outcome::Failed });
                        }
                    }
                }
            })
            .map_err(|e| crate::store::StoreError::Io("crop-writer thread".into(), e))?;
        Ok(CropWriter {
            tx: Some(tx),
            depth,
            thread: Some(thread),
            metrics,
        })
    }

    /// Queues a job (waiting while the queue is full); done at once if the thread is gone.
    pub fn send(&self, job: Job) {
        let job = match &self.tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        warn!("the crop writer has stopped; crops not stored");
        if let Some(done) = job.done {
            done(job.outcome);
        }
    }

    /// Jobs waiting.
    pub fn depth(&self) -> usize {
        self.depth.len()
    }
}

impl Drop for CropWriter {
    /// Stores what is queued, then ends the thread.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
