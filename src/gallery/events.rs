//! What goes into the linker and what comes out: observations, decisions, and the events a
//! decision or an operator action caused (plain data, for the store and the event stream).

use serde::{Deserialize, Serialize};

use super::{IdentityId, TimeMs, TrackletKey};

/// A finished or still growing tracklet, described by the re-id embedder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub camera: String,
    /// Tracklet id; (camera, tracklet) must not be reused for another person while the gallery
    /// remembers it (the store's tracklet row id is a good choice). A reused id with a different
    /// start time is treated as a new tracklet.
    pub tracklet: u64,
    /// Wall-clock interval of the tracklet so far (ms since the Unix epoch).
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
    /// L2-normalised descriptor (re-normalised here anyway).
    pub descriptor: Vec<f32>,
    /// Tracklet quality 0–1 (crop quality of the tracker): low-quality tracklets link but do
    /// not become prototypes.
    pub quality: f32,
}

impl Observation {
    pub fn key(&self) -> TrackletKey {
        TrackletKey::new(&self.camera, self.tracklet)
    }
}

/// An identity and its similarity with the tracklet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub identity: IdentityId,
    pub similarity: f32,
}

/// The linker's answer for one observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// The tracklet is this identity: above the threshold and clear of the runner-up by the
    /// margin. `margin` is `None` when no other feasible identity competed.
    Linked {
        identity: IdentityId,
        similarity: f32,
        margin: Option<f32>,
    },
    /// The best identity passed the threshold, but the runner-up is within the margin, or the
    /// similarity is within `linking.uncertain_band` of the threshold (then `runner_up` may be
    /// `None`: no other identity competed). The tracklet is attached to `identity`
    /// provisionally: it does not change the identity's prototypes or space–time record, and it
    /// is decided again when the tracklet grows.
    Uncertain {
        identity: IdentityId,
        similarity: f32,
        runner_up: Option<Candidate>,
    },
    /// Nothing acceptable matched: a new identity (open set). On a re-observation of the
    /// tracklet that opened it, `identity` is that same identity.
    New { identity: IdentityId },
}

impl Decision {
    pub fn identity(&self) -> IdentityId {
        match self {
            Decision::Linked { identity, .. }
            | Decision::Uncertain { identity, .. }
            | Decision::New { identity } => *identity,
        }
    }
}

/// Who did something to the gallery (for the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "actor", content = "name", rename_all = "snake_case")]
pub enum Actor {
    /// The linker, on evidence.
    Linker,
    /// An operator, by name.
    Operator(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Linker => f.write_str("linker"),
            Actor::Operator(n) => write!(f, "operator:{n}"),
        }
    }
}

/// An operator's request: who, why, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRequest {
    pub operator: String,
    pub reason: String,
    pub t_ms: TimeMs,
}

/// Audit record of a merge: `absorbed` became part of `kept`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    pub kept: IdentityId,
    pub absorbed: IdentityId,
    pub actor: Actor,
    /// Why, in words (operator's reason, or the evidence).
    pub reason: String,
    /// Best similarity between the two identities' prototypes at merge time.
    pub similarity: f32,
    /// The tracklets that matched both identities (automatic merges).
    pub evidence: Vec<TrackletKey>,
    /// Space–time conflicts between the two that an operator overrode (0 for automatic merges,
    /// which never merge conflicting identities).
    pub conflicts: Vec<String>,
    pub t_ms: TimeMs,
}

/// Audit record of a split: `tracklets` moved from `from` to the new identity `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub from: IdentityId,
    pub to: IdentityId,
    pub tracklets: Vec<TrackletKey>,
    pub actor: Actor,
    pub reason: String,
    pub t_ms: TimeMs,
}

/// Something the gallery did, for the store and the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GalleryEvent {
    IdentityCreated {
        t_ms: TimeMs,
        identity: IdentityId,
        camera: String,
        tracklet: u64,
    },
    /// A tracklet was assigned to an identity (also the tracklet that created it, with
    /// `decision: new`), or moved to another one when a growing tracklet was decided again
    /// (`previous`).
    IdentityLinked {
        t_ms: TimeMs,
        identity: IdentityId,
        camera: String,
        tracklet: u64,
        decision: super::LinkKind,
        similarity: f32,
        margin: Option<f32>,
        runner_up: Option<Candidate>,
        previous: Option<IdentityId>,
    },
    IdentityMerged(MergeRecord),
    IdentitySplit(SplitRecord),
    /// Unseen for longer than the retention: removed from the gallery.
    IdentityRetired {
        t_ms: TimeMs,
        identity: IdentityId,
        last_seen_ms: TimeMs,
    },
}

/// Result of [`super::Linker::observe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub decision: Decision,
    /// The tracklet was already known (a growing tracklet seen again).
    pub reobserved: bool,
    pub events: Vec<GalleryEvent>,
    /// Identities whose stored record changed (write them to the store), in id order.
    pub changed: Vec<IdentityId>,
    /// Identities that no longer exist (merged away), in id order.
    pub removed: Vec<IdentityId>,
}
