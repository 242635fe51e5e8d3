//! Space–time rules: when an identity *cannot* be the person of a tracklet, whatever the
//! appearance says.
//!
//! - Tracklets alive at the same time in the same camera are different people (the tracker
//!   already told them apart).
//! - One person is not in two cameras at once, unless the pair is declared `overlapping`.
//! - Optional transit times per camera pair: at least `min_transit_s` between leaving one view and
//!   entering the other; at most `max_transit_s` between the identity's sighting just before
//!   (or just after) the tracklet and the tracklet itself.
//!
//! Intervals are wall-clock milliseconds; `clock_tolerance_ms` absorbs clock skew between
//! cameras and the slight overlap of hand-offs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::identity::Sighting;
use super::{TimeMs, TrackletKey};
use crate::config::LinkingSettings;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PairRule {
    threshold: Option<f32>,
    overlapping: bool,
    min_transit_ms: Option<TimeMs>,
    max_transit_ms: Option<TimeMs>,
}

/// Why an identity cannot be the person of a tracklet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Conflict {
    /// The identity's tracklet `tracklet` was alive in the same camera at the same time.
    SameCamera { tracklet: u64 },
    /// The identity was in `camera` (not overlapping) at the same time.
    Simultaneous { camera: String, tracklet: u64 },
    /// Less than the minimum transit time between `from` and `to`.
    TooFast {
        from: String,
        to: String,
        gap_ms: TimeMs,
        min_ms: TimeMs,
    },
    /// More than the maximum transit time between consecutive sightings.
    TooSlow {
        from: String,
        to: String,
        gap_ms: TimeMs,
        max_ms: TimeMs,
    },
    /// An operator split the two identities apart.
    CannotLink,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::SameCamera { tracklet } => {
                write!(
                    f,
                    "tracklet {tracklet} of the same camera was alive at the same time"
                )
            }
            Conflict::Simultaneous { camera, tracklet } => {
                write!(f, "seen in {camera} (tracklet {tracklet}) at the same time")
            }
            Conflict::TooFast {
                from,
                to,
                gap_ms,
                min_ms,
            } => {
                write!(
                    f,
                    "{from} → {to} in {gap_ms} ms, faster than the {min_ms} ms minimum"
                )
            }
            Conflict::TooSlow {
                from,
                to,
                gap_ms,
                max_ms,
            } => {
                write!(
                    f,
                    "{from} → {to} took {gap_ms} ms, more than the {max_ms} ms maximum"
                )
            }
            Conflict::CannotLink => f.write_str("an operator split these identities"),
        }
    }
}

/// A tracklet's place in space and time.
#[derive(Debug, Clone, Copy)]
pub struct Span<'a> {
    pub camera: &'a str,
    pub tracklet: u64,
    pub start_ms: TimeMs,
    pub end_ms: TimeMs,
}

impl<'a> From<&'a Sighting> for Span<'a> {
    fn from(s: &'a Sighting) -> Self {
        Span {
            camera: &s.camera,
            tracklet: s.tracklet,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
        }
    }
}

impl Span<'_> {
    fn is(&self, k: &TrackletKey) -> bool {
        self.tracklet == k.tracklet && self.camera == k.camera
    }
}

/// The `[linking]` rules, indexed for lookups.
#[derive(Debug, Clone)]
pub struct Rules {
    pub threshold: f32,
    pub margin: f32,
    pub merge_similarity: f32,
    pub merge_evidence: u32,
    pub uncertain_band: f32,
    pub tolerance_ms: TimeMs,
    /// (from, to) → rule; undirected pairs are stored both ways.
    pairs: HashMap<(String, String), PairRule>,
}

fn ms(seconds: Option<f64>) -> Option<TimeMs> {
    seconds.map(|s| (s * 1000.0).round() as TimeMs)
}

impl Rules {
    pub fn new(s: &LinkingSettings) -> Rules {
        let mut pairs = HashMap::new();
        for p in &s.pairs {
            let rule = PairRule {
                threshold: p.threshold,
                overlapping: p.overlapping,
                min_transit_ms: ms(p.min_transit_s),
                max_transit_ms: ms(p.max_transit_s),
            };
            let [a, b] = &p.cameras;
            pairs.insert((a.clone(), b.clone()), rule);
            if !p.directed {
                pairs.insert((b.clone(), a.clone()), rule);
            }
        }
        Rules {
            threshold: s.threshold,
            margin: s.margin,
            merge_similarity: s.merge_similarity,
            merge_evidence: s.merge_evidence,
            uncertain_band: s.uncertain_band,
            tolerance_ms: s.clock_tolerance_ms as TimeMs,
            pairs,
        }
    }

    fn rule(&self, from: &str, to: &str) -> Option<&PairRule> {
        self.pairs.get(&(from.to_string(), to.to_string()))
    }

    /// Similarity needed to link a tracklet in `a` through a prototype seen in `b`.
    pub fn threshold(&self, a: &str, b: &str) -> f32 {
        self.rule(a, b)
            .and_then(|r| r.threshold)
            .or_else(|| self.rule(b, a).and_then(|r| r.threshold))
            .unwrap_or(self.threshold)
    }

    pub fn overlapping(&self, a: &str, b: &str) -> bool {
        a != b
            && (self.rule(a, b).is_some_and(|r| r.overlapping)
                || self.rule(b, a).is_some_and(|r| r.overlapping))
    }

    /// Whether `o` can be the same person as the tracklets `others` (an identity's confident
    /// sightings; `o`'s own earlier observation is skipped).
    pub fn check<'a>(
        &self,
        o: Span<'_>,
        others: impl Iterator<Item = Span<'a>>,
    ) -> Result<(), Conflict> {
        let key = TrackletKey::new(o.camera, o.tracklet);
        let tol = self.tolerance_ms;
        let mut before: Option<Span<'a>> = None;
        let mut after: Option<Span<'a>> = None;
        for t in others {
            if t.is(&key) {
                continue;
            }
            let overlap = o.end_ms.min(t.end_ms) - o.start_ms.max(t.start_ms);
            if t.camera == o.camera {
                if overlap > tol {
                    return Err(Conflict::SameCamera {
                        tracklet: t.tracklet,
                    });
                }
            } else if !self.overlapping(t.camera, o.camera) {
                if overlap > tol {
                    return Err(Conflict::Simultaneous {
                        camera: t.camera.to_string(),
                        tracklet: t.tracklet,
                    });
                }
                // t before o, or after it
                let (from, to, gap) = if t.end_ms <= o.start_ms + tol {
                    (t.camera, o.camera, o.start_ms - t.end_ms)
                } else {
                    (o.camera, t.camera, t.start_ms - o.end_ms)
                };
                if let Some(min) = self.rule(from, to).and_then(|r| r.min_transit_ms)
                    && gap + tol < min
                {
                    return Err(Conflict::TooFast {
                        from: from.into(),
                        to: to.into(),
                        gap_ms: gap.max(0),
                        min_ms: min,
                    });
                }
            }
            if t.end_ms <= o.start_ms + tol {
                if before.is_none_or(|b| (t.end_ms, t.start_ms) > (b.end_ms, b.start_ms)) {
                    before = Some(t);
                }
            } else if t.start_ms + tol >= o.end_ms
                && after.is_none_or(|a| (t.start_ms, t.end_ms) < (a.start_ms, a.end_ms))
            {
                after = Some(t);
            }
        }
        // maximum transit: only against the neighbouring sightings in time
        let too_slow = |from: &Span<'_>, to: &Span<'_>, gap: TimeMs| -> Result<(), Conflict> {
            if from.camera == to.camera || self.overlapping(from.camera, to.camera) {
                return Ok(());
            }
            match self
                .rule(from.camera, to.camera)
                .and_then(|r| r.max_transit_ms)
            {
                Some(max) if gap - tol > max => Err(Conflict::TooSlow {
                    from: from.camera.into(),
                    to: to.camera.into(),
                    gap_ms: gap,
                    max_ms: max,
                }),
                _ => Ok(()),
            }
        };
        if let Some(b) = before {
            too_slow(&b, &o, o.start_ms - b.end_ms)?;
        }
        if let Some(a) = after {
            too_slow(&o, &a, a.start_ms - o.end_ms)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PairSettings;

    fn span(camera: &str, tracklet: u64, start_s: f64, end_s: f64) -> Span<'_> {
        Span {
            camera,
            tracklet,
            start_ms: (start_s * 1000.0) as i64,
            end_ms: (end_s * 1000.0) as i64,
        }
    }

    fn rules() -> Rules {
        let pair = |a: &str, b: &str| PairSettings {
            cameras: [a.into(), b.into()],
            threshold: None,
            overlapping: false,
            min_transit_s: None,
            max_transit_s: None,
            directed: false,
        };
        Rules::new(&LinkingSettings {
            pairs: vec![
                PairSettings {
                    overlapping: true,
                    ..pair("hall", "hall-2")
                },
                PairSettings {
                    threshold: Some(0.5),
                    min_transit_s: Some(10.0),
                    max_transit_s: Some(60.0),
                    ..pair("gate", "lobby")
                },
                PairSettings {
                    min_transit_s: Some(30.0),
                    directed: true,
                    ..pair("lobby", "roof")
                },
            ],
            ..LinkingSettings::default()
        })
    }

    #[test]
    fn thresholds_fall_back_to_the_global_one() {
        let r = rules();
        assert_eq!(r.threshold("gate", "lobby"), 0.5);
        assert_eq!(r.threshold("lobby", "gate"), 0.5);
        assert_eq!(r.threshold("gate", "hall"), 0.6);
    }

    #[test]
    fn same_camera_and_simultaneous_cameras_conflict_unless_overlapping() {
        let r = rules();
        let o = span("hall", 1, 10.0, 20.0);
        assert_eq!(
            r.check(o, [span("hall", 2, 15.0, 30.0)].into_iter()),
            Err(Conflict::SameCamera { tracklet: 2 })
        );
        // the same tracklet seen before is not a conflict; touching within tolerance is not
        assert!(
            r.check(o, [span("hall", 1, 10.0, 15.0)].into_iter())
                .is_ok()
        );
        assert!(
            r.check(o, [span("hall", 3, 20.3, 30.0)].into_iter())
                .is_ok()
        );
        assert!(matches!(
            r.check(o, [span("gate", 4, 5.0, 12.0)].into_iter()),
            Err(Conflict::Simultaneous { .. })
        ));
        assert!(
            r.check(o, [span("hall-2", 5, 5.0, 25.0)].into_iter())
                .is_ok()
        );
    }

    #[test]
    fn transit_windows() {
        let r = rules();
        let o = span("lobby", 1, 100.0, 110.0);
        // gate ended at 95 s: 5 s < 10 s minimum
        assert!(matches!(
            r.check(o, [span("gate", 2, 80.0, 95.0)].into_iter()),
            Err(Conflict::TooFast {
                gap_ms: 5000,
                min_ms: 10000,
                ..
            })
        ));
        assert!(
            r.check(o, [span("gate", 2, 60.0, 85.0)].into_iter())
                .is_ok()
        );
        // 70 s > 60 s maximum, but only against the sighting just before
        assert!(matches!(
            r.check(o, [span("gate", 2, 20.0, 30.0)].into_iter()),
            Err(Conflict::TooSlow { gap_ms: 70000, .. })
        ));
        assert!(
            r.check(
                o,
                [span("gate", 2, 20.0, 30.0), span("hall", 3, 60.0, 80.0)].into_iter()
            )
            .is_ok()
        );
        // directed: lobby → roof needs 30 s, roof → lobby has no rule
        assert!(matches!(
            r.check(span("roof", 9, 120.0, 130.0), [o].into_iter()),
            Err(Conflict::TooFast { .. })
        ));
        assert!(
            r.check(o, [span("roof", 9, 80.0, 95.0)].into_iter())
                .is_ok()
        );
        // a later sighting in gate only 3 s after the lobby tracklet: lobby → gate too fast
        assert!(matches!(
            r.check(o, [span("gate", 7, 113.0, 120.0)].into_iter()),
            Err(Conflict::TooFast { .. })
        ));
    }
}
