//! The gallery: identities across cameras, and the linking policy that decides which identity a
//! tracklet belongs to.
//!
//! - [`GalleryIndex`] — nearest-neighbour search over prototype vectors: [`ExactIndex`] (the
//!   default while small, and the oracle), [`HnswIndex`] (hnsw_rs), [`AutoIndex`] (switches).
//! - [`Identity`] — prototypes (capped, kept diverse), recent tracklets, per-camera last seen.
//! - [`Linker`] — observations in, [`Decision`]s and [`GalleryEvent`]s out: threshold (per camera
//!   pair), margin over the runner-up (else *uncertain*), space–time rules ([`Rules`]), open set,
//!   merges on evidence, operator merge/split with audit records, retention.
//! - Persistence — [`GallerySnapshot`] (exact state, for the store) and index dumps
//!   ([`Linker::dump_index`]), so a restarted server decides exactly as before.
//!
//! docs/linking.md explains the policy to operators and admins.

mod auto;
mod dumpfile;
mod error;
mod events;
mod exact;
mod hnsw;
mod identity;
mod index;
mod linker;
mod operations;
mod persist;
mod rules;
pub mod testdata;
#[cfg(test)]
mod tests;
mod vector;

use serde::{Deserialize, Serialize};

pub use auto::{AutoIndex, IndexSettings, dump_index};
pub use error::GalleryError;
pub use events::{
    Actor, Candidate, Decision, GalleryEvent, MergeRecord, Observation, OperatorRequest, Outcome,
    SplitRecord,
};
pub use exact::ExactIndex;
pub use hnsw::{HnswIndex, HnswParams};
pub use identity::{CameraSeen, Evidence, Identity, LinkKind, Prototype, Sighting};
pub use index::{Filter, GalleryIndex, Hit, IndexKind};
pub use linker::{Effects, GalleryMemory, GalleryStats, Linker};
pub use persist::{GallerySnapshot, IndexRestore, RestoreReport, StoredTracklet};
pub use rules::{Conflict, Rules, Span};
pub use vector::unit;

/// Wall-clock time in milliseconds since the Unix epoch.
pub type TimeMs = i64;

/// A person across the site. Ids are never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityId(pub u64);

impl std::fmt::Display for IdentityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A tracklet: one person followed within one camera.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TrackletKey {
    pub camera: String,
    pub tracklet: u64,
}

impl TrackletKey {
    pub fn new(camera: &str, tracklet: u64) -> TrackletKey {
        TrackletKey {
            camera: camera.to_string(),
            tracklet,
        }
    }
}

impl std::fmt::Display for TrackletKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.camera, self.tracklet)
    }
}
