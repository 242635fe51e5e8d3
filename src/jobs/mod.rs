//! Long-running admin jobs: on-site pruning and re-tuning of the embedder, with a model registry,
//! atomic promotion and rollback. Used by the CLI (`crosscam job …`) and, through it, by the
//! daemon's admin API (`src/api/jobs.rs` runs `crosscam job run` as a child process);
//! docs/retuning.md explains them for site admins.
//!
//! - [`source`]: where a job's crops come from ([`source::CropSource`]; the server's crop store
//!   implements it; [`source::DatasetSource`] reads a dataset folder).
//! - [`evaluate`]: held-out data and scores (ONNX Runtime, Market-1501 protocol).
//! - [`registry`]: model versions under `DATA/models`, `current` and `previous`, atomic on disk.
//! - [`serving`]: the serving model, the [`serving::ReembedHook`] the server implements to
//!   re-embed its gallery, [`serving::promote`] and [`serving::rollback`].
//! - [`runner`]: one job end to end ([`runner::run_job`]).
//! - [`gallery`]: a gallery over a folder of crops (the CLI's re-embedding hook).

pub mod evaluate;
pub mod gallery;
pub mod registry;
pub mod runner;
pub mod schedule;
pub mod serving;
pub mod source;

pub use evaluate::{EvalSet, Score};
pub use gallery::FolderGallery;
pub use registry::{ModelVersion, Registry};
pub use runner::{JobContext, JobOutcome, JobPhase, JobReport, JobSpec, PromotePolicy, run_job};
pub use serving::{Loaded, NoGallery, ReembedHook, ServingModel, promote, rollback};
pub use source::{CropSource, DatasetSource, StoreSource};
