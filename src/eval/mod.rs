//! Evaluation of re-id models: the Market-1501 protocol metrics (CMC rank-k, mAP) with optional
//! k-reciprocal re-ranking, readers and a writer for the public dataset layouts, NumPy `.npy`
//! feature export, and `crosscam eval` (embed a dataset with a model and score it).
//! Also the tracking metrics (CLEAR MOT, IDF1) used to score the tracker. See docs/evaluation.md.

pub mod bench;
pub mod calibrate;
pub mod dataset;
pub mod linking;
pub mod metrics;
pub mod model;
pub mod mot;
pub mod npy;
pub mod rerank;

pub use dataset::{Dataset, DatasetError, Format, Item, Split};
pub use metrics::{Label, MetricOptions, Metrics, evaluate, evaluate_distances};
pub use rerank::RerankParams;

/// `requested` threads, or one per core when 0.
pub(crate) fn thread_count(requested: usize) -> usize {
    if requested > 0 {
        requested
    } else {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    }
}

/// `f(0..n)` computed on `threads` scoped threads (item i on thread i % threads), in order.
/// Results do not depend on the thread count.
pub(crate) fn parallel_map<T: Send>(
    n: usize,
    threads: usize,
    f: &(dyn Fn(usize) -> T + Sync),
) -> Vec<T> {
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| (i, f(i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, v) in h.join().expect("evaluation worker panicked") {
                out[i] = Some(v);
            }
        }
    });
    out.into_iter()
        .map(|v| v.expect("every item computed"))
        .collect()
}
