//! `[gallery]` and `[linking]`: how identities are stored and searched, and when a tracklet is
//! linked to one. docs/linking.md explains every key to site admins; the defaults here are the
//! ones that page documents.

use serde::Deserialize;

use super::KeyPath;

/// Which nearest-neighbour index holds the prototypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexChoice {
    /// Exact search while the gallery is small, HNSW past `hnsw_above` prototypes.
    #[default]
    Auto,
    /// Always exact (one matrix product per query): slower at scale, never misses.
    Exact,
    /// Always HNSW (approximate).
    Hnsw,
}

/// The identity gallery: index, prototypes and retention.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GallerySettings {
    pub index: IndexChoice,
    /// `auto`: switch from exact search to HNSW once this many prototypes are stored. Exact
    /// search costs about 1.7 ms per query per 100k prototypes at 512-d on one core.
    pub hnsw_above: usize,
    /// HNSW links per node (`M`): more = better recall, more memory and slower inserts.
    pub hnsw_m: usize,
    /// HNSW candidate list while inserting.
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list while searching (at least `candidates`).
    pub hnsw_ef_search: usize,
    /// The most recently inserted prototypes that are also searched exactly, so that a new,
    /// poorly connected point is never missed by the graph (0 = off).
    pub recent_exact: usize,
    /// Rebuild an index when this fraction of its entries are tombstones (deleted).
    pub rebuild_tombstone_ratio: f64,
    /// Prototypes fetched from the index per query before they are grouped by identity.
    pub candidates: usize,
    /// Appearance vectors kept per identity; when full, the one most similar to the others is
    /// dropped so the set stays diverse (poses, cameras, lighting).
    pub prototypes_per_identity: usize,
    /// Tracklets below this quality link but do not become prototypes.
    pub min_prototype_quality: f32,
    /// Recent tracklets remembered per identity (for space–time checks and splits).
    pub tracklets_per_identity: usize,
    /// Identities unseen for this long are retired (removed from the gallery); 0 = never.
    pub retention_hours: f64,
}

impl Default for GallerySettings {
    fn default() -> Self {
        GallerySettings {
            index: IndexChoice::Auto,
            hnsw_above: 50_000,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            recent_exact: 4096,
            rebuild_tombstone_ratio: 0.25,
            candidates: 32,
            prototypes_per_identity: 8,
            min_prototype_quality: 0.3,
            tracklets_per_identity: 16,
            retention_hours: 168.0,
        }
    }
}

/// When a tracklet becomes part of an existing identity.
///
/// `threshold`, `margin` and `merge_similarity` depend on the embedder (each network spreads
/// similarities differently): left out of the config, they come from the embedder's calibration
/// in the model manifest (`[model.linking]`), else from the defaults below.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "RawLinking")]
pub struct LinkingSettings {
    /// Cosine similarity a tracklet needs with an identity to link to it (−1…1).
    pub threshold: f32,
    /// The best identity must beat the runner-up by this much, otherwise the link is
    /// `uncertain`.
    pub margin: f32,
    /// Two identities both matching tracklets at least this well are merge candidates.
    pub merge_similarity: f32,
    /// Distinct tracklets that must match two identities (both above `merge_similarity`)
    /// before the linker merges them on its own; 0 = never merge automatically.
    pub merge_evidence: u32,
    /// A link whose similarity is less than this above its threshold stays `uncertain` even
    /// when it clears the margin: evidence that weak waits for the tracklet to grow or for an
    /// operator instead of joining two people for good (0 = off).
    pub uncertain_band: f32,
    /// Clock slack between cameras: intervals overlapping by less than this do not count as
    /// "at the same time", and transit windows are widened by it.
    pub clock_tolerance_ms: u64,
    /// Per camera-pair rules: thresholds, overlapping views, transit times.
    pub pairs: Vec<PairSettings>,
    /// Where `threshold`, `margin` and `merge_similarity` came from (not a key).
    pub origin: LinkingOrigin,
    pub(crate) explicit: Explicit,
}

/// Where the embedder-dependent linking values came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkingOrigin {
    /// Built-in defaults (no calibration for the embedder).
    #[default]
    Default,
    /// The embedder's calibration in the model manifest.
    Manifest,
    /// Set in the config file (at least one of them; the others as calibrated).
    Config,
}

/// The `[linking]` table as written: embedder-dependent keys may be absent.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLinking {
    threshold: Option<f32>,
    margin: Option<f32>,
    merge_similarity: Option<f32>,
    merge_evidence: Option<u32>,
    uncertain_band: Option<f32>,
    clock_tolerance_ms: Option<u64>,
    pairs: Vec<PairSettings>,
}

/// Set in the config file: kept when the embedder's calibration is applied.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Explicit {
    threshold: Option<f32>,
    margin: Option<f32>,
    merge_similarity: Option<f32>,
}

impl From<RawLinking> for LinkingSettings {
    fn from(r: RawLinking) -> Self {
        let d = LinkingSettings::default();
        let explicit = r.threshold.is_some() || r.margin.is_some() || r.merge_similarity.is_some();
        LinkingSettings {
            threshold: r.threshold.unwrap_or(d.threshold),
            margin: r.margin.unwrap_or(d.margin),
            merge_similarity: r.merge_similarity.unwrap_or(d.merge_similarity),
            merge_evidence: r.merge_evidence.unwrap_or(d.merge_evidence),
            uncertain_band: r.uncertain_band.unwrap_or(d.uncertain_band),
            clock_tolerance_ms: r.clock_tolerance_ms.unwrap_or(d.clock_tolerance_ms),
            pairs: r.pairs,
            origin: if explicit {
                LinkingOrigin::Config
            } else {
                LinkingOrigin::Default
            },
            explicit: Explicit {
                threshold: r.threshold,
                margin: r.margin,
                merge_similarity: r.merge_similarity,
            },
        }
    }
}

impl Default for LinkingSettings {
    fn default() -> Self {
        LinkingSettings {
            threshold: 0.6,
            margin: 0.05,
            merge_similarity: 0.75,
            merge_evidence: 3,
            // measured with `crosscam bench linking` (docs/linking.md): on the vtest-hard pair
            // it cut the default embedder's wrong merges from 30 to 10 over 3 runs
            uncertain_band: 0.04,
            clock_tolerance_ms: 500,
            pairs: Vec::new(),
            origin: LinkingOrigin::Default,
            explicit: Explicit::default(),
        }
    }
}

impl LinkingSettings {
    /// Fills the values the config left out from the embedder's calibration (manifest
    /// `[model.linking]`); values set in the config win.
    pub fn calibrate(&mut self, cal: Option<&crate::models::LinkCalibration>) {
        let Some(cal) = cal else { return };
        let e = self.explicit;
        self.threshold = e.threshold.unwrap_or(cal.threshold);
        self.margin = e.margin.unwrap_or(cal.margin);
        self.merge_similarity = e.merge_similarity.unwrap_or(cal.merge_similarity);
        if self.origin == LinkingOrigin::Default {
            self.origin = LinkingOrigin::Manifest;
        }
    }
}

/// Rules for one pair of cameras (`cameras = ["a", "b"]`; the same id twice sets the
/// within-camera threshold).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSettings {
    pub cameras: [String; 2],
    /// Threshold for links between these cameras (overrides `linking.threshold`).
    #[serde(default)]
    pub threshold: Option<f32>,
    /// The views overlap: one person may be seen by both at once.
    #[serde(default)]
    pub overlapping: bool,
    /// Walking from one to the other takes at least this long (seconds).
    #[serde(default)]
    pub min_transit_s: Option<f64>,
    /// Whoever leaves one view reaches the other within this long or by another route
    /// (seconds). Set it only when no unwatched route is longer.
    #[serde(default)]
    pub max_transit_s: Option<f64>,
    /// Transit times apply from the first camera to the second only (default: both ways).
    #[serde(default)]
    pub directed: bool,
}

impl GallerySettings {
    /// Checks ranges; returns the offending key (under `gallery`) and what was expected.
    pub(super) fn validate(&self) -> Result<(), (KeyPath, String)> {
        let at = |k: &str| KeyPath::new().key("gallery").key(k);
        if self.hnsw_above == 0 {
            return Err((at("hnsw_above"), "expected at least 1".into()));
        }
        if !(2..=128).contains(&self.hnsw_m) {
            return Err((
                at("hnsw_m"),
                format!("expected 2 to 128 links per node, found {}", self.hnsw_m),
            ));
        }
        if self.hnsw_ef_construction < self.hnsw_m {
            return Err((
                at("hnsw_ef_construction"),
                format!(
                    "expected at least hnsw_m ({}), found {}",
                    self.hnsw_m, self.hnsw_ef_construction
                ),
            ));
        }
        if self.candidates == 0 || self.candidates > 4096 {
            return Err((
                at("candidates"),
                format!("expected 1 to 4096, found {}", self.candidates),
            ));
        }
        if self.hnsw_ef_search < self.candidates {
            return Err((
                at("hnsw_ef_search"),
                format!(
                    "expected at least `candidates` ({}), found {}",
                    self.candidates, self.hnsw_ef_search
                ),
            ));
        }
        if !(self.rebuild_tombstone_ratio > 0.0 && self.rebuild_tombstone_ratio < 1.0) {
            return Err((
                at("rebuild_tombstone_ratio"),
                format!(
                    "expected a fraction between 0 and 1 (exclusive), found {}",
                    self.rebuild_tombstone_ratio
                ),
            ));
        }
        if !(1..=256).contains(&self.prototypes_per_identity) {
            return Err((
                at("prototypes_per_identity"),
                format!("expected 1 to 256, found {}", self.prototypes_per_identity),
            ));
        }
        if !(0.0..=1.0).contains(&self.min_prototype_quality) {
            return Err((
                at("min_prototype_quality"),
                format!("expected 0 to 1, found {}", self.min_prototype_quality),
            ));
        }
        if self.tracklets_per_identity == 0 {
            return Err((at("tracklets_per_identity"), "expected at least 1".into()));
        }
        if !(self.retention_hours.is_finite() && self.retention_hours >= 0.0) {
            return Err((
                at("retention_hours"),
                format!(
                    "expected hours ≥ 0 (0 = keep forever), found {}",
                    self.retention_hours
                ),
            ));
        }
        Ok(())
    }
}

impl LinkingSettings {
    /// Checks ranges and camera ids (`cameras` = the configured camera ids; pairs naming an
    /// unknown camera are rejected when any camera is configured, since a typo would silently
    /// disable the rule).
    pub(super) fn validate(&self, cameras: &[&str]) -> Result<(), (KeyPath, String)> {
        let at = |k: &str| KeyPath::new().key("linking").key(k);
        let similarity = |v: f32, key: KeyPath| {
            if (-1.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err((
                    key,
                    format!("expected a cosine similarity from -1 to 1, found {v}"),
                ))
            }
        };
        similarity(self.threshold, at("threshold"))?;
        similarity(self.merge_similarity, at("merge_similarity"))?;
        if !(0.0..=2.0).contains(&self.margin) {
            return Err((
                at("margin"),
                format!("expected 0 to 2, found {}", self.margin),
            ));
        }
        if !(0.0..=1.0).contains(&self.uncertain_band) {
            return Err((
                at("uncertain_band"),
                format!(
                    "expected a similarity difference from 0 to 1 (0 = off), found {}",
                    self.uncertain_band
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, p) in self.pairs.iter().enumerate() {
            let at = |k: &str| KeyPath::new().key("linking").key("pairs").index(i).key(k);
            for c in &p.cameras {
                if !cameras.is_empty() && !cameras.contains(&c.as_str()) {
                    return Err((
                        at("cameras"),
                        format!(
                            "camera {c:?} is not configured (known: {})",
                            cameras.join(", ")
                        ),
                    ));
                }
            }
            let key = if p.directed {
                (p.cameras[0].clone(), p.cameras[1].clone(), true)
            } else {
                let mut c = p.cameras.clone();
                c.sort();
                let [a, b] = c;
                (a, b, false)
            };
            if !seen.insert(key) {
                return Err((
                    at("cameras"),
                    format!(
                        "the pair {:?} / {:?} is listed twice",
                        p.cameras[0], p.cameras[1]
                    ),
                ));
            }
            if let Some(t) = p.threshold {
                similarity(t, at("threshold"))?;
            }
            for (k, v) in [
                ("min_transit_s", p.min_transit_s),
                ("max_transit_s", p.max_transit_s),
            ] {
                if let Some(v) = v
                    && !(v.is_finite() && v >= 0.0)
                {
                    return Err((at(k), format!("expected seconds ≥ 0, found {v}")));
                }
            }
            if let (Some(lo), Some(hi)) = (p.min_transit_s, p.max_transit_s)
                && lo > hi
            {
                return Err((
                    at("max_transit_s"),
                    format!("expected at least min_transit_s ({lo}), found {hi}"),
                ));
            }
            if p.cameras[0] == p.cameras[1]
                && (p.overlapping || p.min_transit_s.is_some() || p.max_transit_s.is_some())
            {
                return Err((
                    at("cameras"),
                    "a camera paired with itself may only set `threshold`".into(),
                ));
            }
            if p.overlapping && (p.min_transit_s.is_some() || p.max_transit_s.is_some()) {
                return Err((
                    at("overlapping"),
                    "overlapping views have no transit time; remove min/max_transit_s".into(),
                ));
            }
        }
        Ok(())
    }
}
