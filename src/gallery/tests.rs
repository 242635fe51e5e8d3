//! Linking rules, one test each, on hand-made descriptors whose similarities are known exactly.

use super::*;
use crate::config::{GallerySettings, IndexChoice, LinkingSettings, PairSettings};

const DIM: usize = 16;

/// Unit vector along axis `i`.
fn e(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    v[i] = 1.0;
    v
}

/// A unit vector with cosine `s` to each listed axis (0–7), the rest of its length on axis
/// `rest` (8–15), which keeps vectors built with different `rest` apart.
fn mix(parts: &[(usize, f32)], rest: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIM];
    let mut used = 0.0;
    for &(i, s) in parts {
        assert!(i < 8);
        v[i] = s;
        used += s * s;
    }
    assert!(
        used <= 1.0 && (8..DIM).contains(&rest),
        "impossible similarities"
    );
    v[rest] = (1.0f32 - used).max(0.0).sqrt();
    v
}

fn obs(camera: &str, tracklet: u64, start_s: f64, end_s: f64, v: Vec<f32>) -> Observation {
    Observation {
        camera: camera.into(),
        tracklet,
        start_ms: (start_s * 1000.0) as i64,
        end_ms: (end_s * 1000.0) as i64,
        descriptor: v,
        quality: 0.9,
    }
}

fn pair(a: &str, b: &str) -> PairSettings {
    PairSettings {
        cameras: [a.into(), b.into()],
        threshold: None,
        overlapping: false,
        min_transit_s: None,
        max_transit_s: None,
        directed: false,
    }
}

fn settings() -> (GallerySettings, LinkingSettings) {
    (
        GallerySettings {
            index: IndexChoice::Exact,
            prototypes_per_identity: 4,
            tracklets_per_identity: 8,
            retention_hours: 1.0,
            ..GallerySettings::default()
        },
        LinkingSettings {
            threshold: 0.6,
            margin: 0.05,
            merge_similarity: 0.9,
            merge_evidence: 2,
            clock_tolerance_ms: 500,
            pairs: vec![
                PairSettings {
                    threshold: Some(0.5),
                    ..pair("a", "c")
                },
                PairSettings {
                    overlapping: true,
                    ..pair("a", "d")
                },
                PairSettings {
                    min_transit_s: Some(10.0),
                    max_transit_s: Some(60.0),
                    ..pair("a", "e")
                },
            ],
            ..LinkingSettings::default()
        },
    )
}

fn linker() -> Linker {
    let (g, l) = settings();
    Linker::new(&g, &l, DIM).unwrap()
}

fn id(n: u64) -> IdentityId {
    IdentityId(n)
}

#[test]
fn threshold_links_or_opens_a_new_identity() {
    let mut x = linker();
    let o = x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(1) });
    assert!(matches!(o.events[0], GalleryEvent::IdentityCreated { .. }));
    assert_eq!(o.changed, vec![id(1)]);
    let o = x
        .observe(&obs("b", 2, 20.0, 30.0, mix(&[(0, 0.7)], 8)))
        .unwrap();
    match o.decision {
        Decision::Linked {
            identity,
            similarity,
            margin,
        } => {
            assert_eq!(identity, id(1));
            assert!((similarity - 0.7).abs() < 1e-5);
            assert_eq!(margin, None);
        }
        d => panic!("{d:?}"),
    }
    let o = x
        .observe(&obs("b", 3, 40.0, 50.0, mix(&[(0, 0.55)], 9)))
        .unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(2) });
    assert_eq!(x.identity(id(1)).unwrap().prototypes.len(), 2);
    assert_eq!(x.identity_of(&TrackletKey::new("b", 2)), Some(id(1)));
}

#[test]
fn small_margin_is_uncertain_and_provisional_until_the_tracklet_grows() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    x.observe(&obs("a", 2, 0.0, 10.0, e(1))).unwrap();
    let o = x
        .observe(&obs("b", 3, 20.0, 25.0, mix(&[(0, 0.70), (1, 0.68)], 10)))
        .unwrap();
    match &o.decision {
        Decision::Uncertain {
            identity,
            runner_up,
            ..
        } => {
            assert_eq!(*identity, id(1));
            let r = runner_up.expect("a runner-up competed");
            assert_eq!(r.identity, id(2));
            assert!((r.similarity - 0.68).abs() < 1e-5);
        }
        d => panic!("{d:?}"),
    }
    // attached, but no prototype and no camera record from an uncertain link
    let one = x.identity(id(1)).unwrap();
    assert_eq!(one.prototypes.len(), 1);
    assert_eq!(
        one.sighting(&TrackletKey::new("b", 3)).unwrap().link,
        LinkKind::Uncertain
    );
    assert!(!one.cameras.contains_key("b"));
    // the tracklet grows and becomes clear: decided again, now linked
    let o = x
        .observe(&obs("b", 3, 20.0, 40.0, mix(&[(0, 0.9), (1, 0.3)], 11)))
        .unwrap();
    assert!(o.reobserved);
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
    assert!(o.events.iter().any(|ev| matches!(
        ev,
        GalleryEvent::IdentityLinked {
            decision: LinkKind::Linked,
            previous: None,
            ..
        }
    )));
    assert_eq!(x.identity(id(1)).unwrap().prototypes.len(), 2);
}

#[test]
fn per_pair_threshold_overrides_the_global_one() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // a → c accepts 0.5, a → b needs 0.6
    let o = x
        .observe(&obs("c", 2, 20.0, 30.0, mix(&[(0, 0.55)], 12)))
        .unwrap();
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
    let o = x
        .observe(&obs("b", 3, 40.0, 50.0, mix(&[(0, 0.55)], 13)))
        .unwrap();
    assert!(matches!(o.decision, Decision::New { .. }));
}

#[test]
fn one_person_is_not_in_two_cameras_at_once_unless_they_overlap() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // b at the same time: impossible, whatever the appearance
    let o = x
        .observe(&obs("b", 2, 5.0, 15.0, mix(&[(0, 0.99)], 14)))
        .unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(2) });
    // d overlaps a's view: fine
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    let o = x
        .observe(&obs("d", 2, 5.0, 15.0, mix(&[(0, 0.99)], 15)))
        .unwrap();
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
}

#[test]
fn transit_windows_between_cameras() {
    let v = mix(&[(0, 0.95)], 8);
    // a → e takes 10–60 s
    for (start, linked) in [(15.0, false), (25.0, true), (69.0, true), (75.0, false)] {
        let mut x = linker();
        x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
        let o = x
            .observe(&obs("e", 2, start, start + 5.0, v.clone()))
            .unwrap();
        assert_eq!(
            matches!(o.decision, Decision::Linked { .. }),
            linked,
            "entering e at {start} s: {:?}",
            o.decision
        );
    }
}

#[test]
fn tracklets_alive_together_in_one_camera_are_different_people() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 20.0, e(0))).unwrap();
    let o = x.observe(&obs("a", 2, 10.0, 30.0, e(0))).unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(2) });
    // later in the same camera (re-entry) is fine: links to one of them
    let o = x
        .observe(&obs("a", 3, 40.0, 50.0, mix(&[(0, 0.95)], 9)))
        .unwrap();
    assert!(matches!(
        o.decision,
        Decision::Uncertain { .. } | Decision::Linked { .. }
    ));
}

#[test]
fn a_growing_tracklet_updates_its_identity() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    x.observe(&obs("b", 2, 20.0, 25.0, mix(&[(0, 0.9), (1, 0.1)], 10)))
        .unwrap();
    let before: Vec<u64> = x
        .identity(id(1))
        .unwrap()
        .prototypes
        .iter()
        .map(|p| p.id)
        .collect();
    let o = x
        .observe(&obs("b", 2, 20.0, 35.0, mix(&[(0, 0.85), (2, 0.2)], 11)))
        .unwrap();
    assert!(o.reobserved);
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
    assert!(
        o.events.is_empty(),
        "nothing new to announce: {:?}",
        o.events
    );
    let ident = x.identity(id(1)).unwrap();
    assert_eq!(
        ident.prototypes.len(),
        2,
        "the tracklet's prototype is replaced, not added"
    );
    assert_ne!(
        ident.prototypes.iter().map(|p| p.id).collect::<Vec<_>>(),
        before
    );
    assert_eq!(
        ident.sighting(&TrackletKey::new("b", 2)).unwrap().end_ms,
        35_000
    );
    assert_eq!(ident.cameras["b"].last_end_ms, 35_000);
    assert_eq!(x.stats().identities, 1);
    // a growing tracklet that opened its own identity stays one identity
    let o = x.observe(&obs("c", 7, 100.0, 101.0, e(5))).unwrap();
    let new = o.decision.identity();
    let o = x
        .observe(&obs("c", 7, 100.0, 110.0, mix(&[(5, 0.95)], 12)))
        .unwrap();
    assert_eq!(o.decision, Decision::New { identity: new });
    assert_eq!(x.identity(new).unwrap().prototypes.len(), 1);
    assert_eq!(x.stats().identities, 2);
}

#[test]
fn a_grown_tracklet_that_matches_someone_known_merges_its_young_identity() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // first glimpse in b is poor: a new identity
    let o = x
        .observe(&obs("b", 5, 100.0, 102.0, mix(&[(0, 0.4)], 13)))
        .unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(2) });
    let o = x
        .observe(&obs("b", 5, 100.0, 120.0, mix(&[(0, 0.9)], 14)))
        .unwrap();
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
    let merged = o.events.iter().find_map(|ev| match ev {
        GalleryEvent::IdentityMerged(r) => Some(r.clone()),
        _ => None,
    });
    let r = merged.expect("merge event");
    assert_eq!(
        (r.kept, r.absorbed, r.actor.clone()),
        (id(1), id(2), Actor::Linker)
    );
    assert_eq!(o.removed, vec![id(2)]);
    assert!(x.identity(id(2)).is_none());
    assert_eq!(x.identity_of(&TrackletKey::new("b", 5)), Some(id(1)));
    assert_eq!(x.identity(id(1)).unwrap().prototypes.len(), 2);
}

#[test]
fn a_reused_tracklet_id_with_another_start_is_a_new_tracklet() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // the camera restarted; its tracker counts from 1 again, for someone else
    let o = x.observe(&obs("a", 1, 500.0, 510.0, e(3))).unwrap();
    assert!(!o.reobserved);
    assert_eq!(o.decision, Decision::New { identity: id(2) });
}

/// Two identities 0.8 apart, with a threshold of 0.85 so that the second one opened its own.
fn two_of_one_person(l: &mut LinkingSettings) -> Linker {
    l.threshold = 0.85;
    l.merge_similarity = 0.78;
    let (g, _) = settings();
    let mut x = Linker::new(&g, l, DIM).unwrap();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    let o = x
        .observe(&obs("b", 2, 100.0, 110.0, mix(&[(0, 0.8), (1, 0.6)], 15)))
        .unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(2) });
    x
}

#[test]
fn identities_merge_when_evidence_accumulates() {
    let (_, mut l) = settings();
    let mut x = two_of_one_person(&mut l);
    // halfway between the two: cos 0.949 with both
    let mid = mix(&[(0, 0.9486), (1, 0.3162)], 8);
    let o = x.observe(&obs("c", 3, 200.0, 210.0, mid.clone())).unwrap();
    assert!(
        matches!(o.decision, Decision::Uncertain { .. }),
        "{:?}",
        o.decision
    );
    assert_eq!(
        x.identity(id(1)).unwrap().evidence[&id(2)].tracklets.len(),
        1
    );
    let o = x.observe(&obs("c", 4, 300.0, 310.0, mid)).unwrap();
    let r = o
        .events
        .iter()
        .find_map(|ev| match ev {
            GalleryEvent::IdentityMerged(r) => Some(r.clone()),
            _ => None,
        })
        .expect("merged on the second piece of evidence");
    assert_eq!((r.kept, r.absorbed), (id(1), id(2)));
    assert_eq!(r.evidence.len(), 2);
    assert!((r.similarity - 0.8).abs() < 1e-4);
    assert!(r.reason.contains("2 tracklets"), "{}", r.reason);
    // decided after the merge: one identity left, clearly linked
    assert!(matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)));
    assert_eq!(x.stats().identities, 1);
    assert_eq!(x.identity_of(&TrackletKey::new("b", 2)), Some(id(1)));
    // the uncertain tracklet of the first piece of evidence now belongs to the merged identity
    assert_eq!(x.identity_of(&TrackletKey::new("c", 3)), Some(id(1)));
}

#[test]
fn identities_an_operator_marked_different_are_never_merged_automatically() {
    let (_, mut l) = settings();
    let mut x = two_of_one_person(&mut l);
    assert!(x.mark_different(id(2), id(1)));
    assert!(!x.mark_different(id(1), id(99)), "no such identity");
    // the same evidence that merges them in `identities_merge_when_evidence_accumulates`
    let mid = mix(&[(0, 0.9486), (1, 0.3162)], 8);
    for t in 3..7 {
        let o = x
            .observe(&obs(
                "c",
                t,
                100.0 * t as f64,
                100.0 * t as f64 + 10.0,
                mid.clone(),
            ))
            .unwrap();
        assert!(
            !o.events
                .iter()
                .any(|ev| matches!(ev, GalleryEvent::IdentityMerged(_))),
            "merged identities an operator marked different"
        );
    }
    assert!(x.identity(id(1)).is_some() && x.identity(id(2)).is_some());
}

#[test]
fn no_automatic_merge_across_a_space_time_conflict() {
    let (_, mut l) = settings();
    l.threshold = 0.85;
    l.merge_similarity = 0.78;
    let (g, _) = settings();
    let mut x = Linker::new(&g, &l, DIM).unwrap();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // the look-alike is in b at the same time: two people
    x.observe(&obs("b", 2, 2.0, 8.0, mix(&[(0, 0.8), (1, 0.6)], 9)))
        .unwrap();
    let mid = mix(&[(0, 0.9486), (1, 0.3162)], 10);
    for t in 0..4 {
        let o = x
            .observe(&obs(
                "c",
                10 + t,
                100.0 + 100.0 * t as f64,
                110.0 + 100.0 * t as f64,
                mid.clone(),
            ))
            .unwrap();
        assert!(
            !o.events
                .iter()
                .any(|ev| matches!(ev, GalleryEvent::IdentityMerged(_)))
        );
    }
    assert_eq!(x.stats().identities, 2);
}

#[test]
fn operator_merge_and_split_with_audit_records() {
    let mut x = linker();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    x.observe(&obs("b", 2, 0.0, 10.0, e(1))).unwrap();
    x.observe(&obs("b", 3, 30.0, 40.0, mix(&[(1, 0.95)], 11)))
        .unwrap();
    let req = |reason: &str| OperatorRequest {
        operator: "alice".into(),
        reason: reason.into(),
        t_ms: 1_000_000,
    };
    let fx = x
        .merge(id(1), id(2), &req("same coat, checked on video"))
        .unwrap();
    let r = match &fx.events[..] {
        [GalleryEvent::IdentityMerged(r)] => r.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!((r.kept, r.absorbed), (id(1), id(2)));
    assert_eq!(r.actor, Actor::Operator("alice".into()));
    assert_eq!(r.reason, "same coat, checked on video");
    assert_eq!(
        r.conflicts.len(),
        2,
        "a/1 and b/2 were simultaneous: {:?}",
        r.conflicts
    );
    assert_eq!(fx.removed, vec![id(2)]);
    assert_eq!(x.identity_of(&TrackletKey::new("b", 3)), Some(id(1)));
    assert!(x.merge(id(1), id(2), &req("again")).is_err());
    // split b/2 and b/3 back off
    let moved = [TrackletKey::new("b", 2), TrackletKey::new("b", 3)];
    let fx = x
        .split(id(1), &moved, &req("two people after all"))
        .unwrap();
    let s = match &fx.events[..] {
        [GalleryEvent::IdentitySplit(s)] => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(s.from, id(1));
    assert_eq!(s.to, id(3), "ids are never reused");
    assert_eq!(s.tracklets, moved.to_vec());
    assert_eq!(fx.changed, vec![id(1), id(3)]);
    let three = x.identity(id(3)).unwrap();
    assert_eq!(three.sightings.len(), 2);
    assert!(three.sightings.iter().all(|s| s.link == LinkKind::Operator));
    assert!(three.prototypes.iter().all(|p| p.camera == "b"));
    assert!(
        x.identity(id(1))
            .unwrap()
            .prototypes
            .iter()
            .all(|p| p.camera == "a")
    );
    assert_eq!(x.identity_of(&TrackletKey::new("b", 2)), Some(id(3)));
    assert!(x.identity(id(1)).unwrap().cannot_link.contains(&id(3)));
    // the search finds each side by its own appearance
    assert_eq!(x.search(&e(1), 1).unwrap()[0].identity, id(3));
    // refused: a tracklet the identity does not have, or taking everything
    assert!(
        x.split(id(1), &[TrackletKey::new("z", 9)], &req("?"))
            .is_err()
    );
    assert!(
        x.split(id(1), &[TrackletKey::new("a", 1)], &req("?"))
            .is_err()
    );
    assert!(x.split(id(9), &moved, &req("?")).is_err());
}

#[test]
fn split_identities_are_never_merged_back_automatically() {
    let (_, mut l) = settings();
    let mut x = two_of_one_person(&mut l);
    let req = OperatorRequest {
        operator: "bob".into(),
        reason: "r".into(),
        t_ms: 0,
    };
    x.merge(id(1), id(2), &req).unwrap();
    let fx = x.split(id(1), &[TrackletKey::new("b", 2)], &req).unwrap();
    let new = match &fx.events[0] {
        GalleryEvent::IdentitySplit(s) => s.to,
        e => panic!("{e:?}"),
    };
    let mid = mix(&[(0, 0.9486), (1, 0.3162)], 12);
    for t in 0..4 {
        let o = x
            .observe(&obs(
                "c",
                10 + t,
                200.0 + 100.0 * t as f64,
                210.0 + 100.0 * t as f64,
                mid.clone(),
            ))
            .unwrap();
        assert!(
            !o.events
                .iter()
                .any(|ev| matches!(ev, GalleryEvent::IdentityMerged(_)))
        );
    }
    assert!(x.identity(new).is_some() && x.identity(id(1)).is_some());
}

#[test]
fn identities_unseen_past_the_retention_are_retired() {
    let mut x = linker(); // retention 1 h
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    x.observe(&obs("a", 2, 3000.0, 3010.0, e(1))).unwrap();
    assert!(x.maintain(3_600_000).events.is_empty());
    let fx = x.maintain(3_610_001);
    assert_eq!(
        fx.events,
        vec![GalleryEvent::IdentityRetired {
            t_ms: 3_610_001,
            identity: id(1),
            last_seen_ms: 10_000
        }]
    );
    assert_eq!(fx.removed, vec![id(1)]);
    assert_eq!(x.stats().identities, 1);
    assert_eq!(x.index().len(), 1);
    assert_eq!(x.identity_of(&TrackletKey::new("a", 1)), None);
    // the same person coming back is a new identity, with a new id
    let o = x.observe(&obs("a", 3, 4000.0, 4010.0, e(0))).unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(3) });
}

#[test]
fn bad_observations_are_refused_without_changing_anything() {
    let mut x = linker();
    assert!(x.observe(&obs("a", 1, 10.0, 0.0, e(0))).is_err());
    assert!(x.observe(&obs("a", 1, 0.0, 1.0, vec![0.0; DIM])).is_err());
    assert!(x.observe(&obs("a", 1, 0.0, 1.0, vec![1.0; 3])).is_err());
    let mut nan = obs("a", 1, 0.0, 1.0, e(0));
    nan.quality = f32::NAN;
    assert!(x.observe(&nan).is_err());
    assert_eq!(x.stats().identities, 0);
}

#[test]
fn prototypes_are_capped_and_low_quality_tracklets_do_not_add_any() {
    let mut x = linker(); // 4 prototypes per identity
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    for t in 0..6u64 {
        let mut o = obs(
            "a",
            10 + t,
            100.0 * (t + 1) as f64,
            100.0 * (t + 1) as f64 + 5.0,
            mix(&[(0, 0.9), (1 + t as usize, 0.4)], 13),
        );
        o.quality = if t == 5 { 0.1 } else { 0.9 };
        let out = x.observe(&o).unwrap();
        assert!(
            matches!(out.decision, Decision::Linked { .. }),
            "{:?}",
            out.decision
        );
    }
    let ident = x.identity(id(1)).unwrap();
    assert_eq!(ident.prototypes.len(), 4);
    assert!(
        ident.prototypes.iter().all(|p| p.tracklet != 15),
        "low quality: no prototype"
    );
    assert_eq!(x.index().len(), 4);
    assert_eq!(ident.tracklets_total, 7);
    // one copy per vector: a sighting keeps its descriptor only while it has no prototype
    for sg in &ident.sightings {
        let has_proto = ident.prototypes.iter().any(|p| p.tracklet == sg.tracklet);
        assert_eq!(
            sg.descriptor.is_empty(),
            has_proto,
            "tracklet {}",
            sg.tracklet
        );
        assert_eq!(ident.descriptor_of(&sg.key()).map(<[f32]>::len), Some(DIM));
    }
}

/// Feeds the same observations to two galleries and checks they decide the same.
fn same_decisions(a: &mut Linker, b: &mut Linker, seed: u64) {
    let mut rng = crate::dataset::rng::SplitMix64::new(seed);
    for t in 0..60u64 {
        let who = rng.below(8);
        let v = testdata::jitter(&e(who), 0.5, &mut rng);
        let cam = ["a", "b", "c", "e"][rng.below(4)];
        let start = 10_000.0 + 40.0 * t as f64;
        let o = obs(cam, 1000 + t, start, start + 5.0 + rng.below(20) as f64, v);
        let (x, y) = (a.observe(&o).unwrap(), b.observe(&o).unwrap());
        assert_eq!(x, y, "observation {t}");
    }
}

fn busy_gallery(choice: IndexChoice) -> Linker {
    let (mut g, l) = settings();
    g.index = choice;
    g.recent_exact = 8;
    g.tracklets_per_identity = 64;
    let mut x = Linker::new(&g, &l, DIM).unwrap();
    let mut rng = crate::dataset::rng::SplitMix64::new(7);
    for t in 0..80u64 {
        let who = rng.below(10);
        let v = testdata::jitter(&e(who), 0.5, &mut rng);
        let cam = ["a", "b", "c", "d"][rng.below(4)];
        x.observe(&obs(cam, t, 40.0 * t as f64, 40.0 * t as f64 + 20.0, v))
            .unwrap();
    }
    x
}

#[test]
fn a_restored_gallery_decides_exactly_like_the_original() {
    for choice in [IndexChoice::Exact, IndexChoice::Hnsw] {
        let mut x = busy_gallery(choice);
        let snap = x.snapshot();
        // through JSON, as the store would keep it
        let snap: GallerySnapshot =
            serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        x.dump_index(&dir.path().join("index")).unwrap();
        let (g, l) = x.settings();
        let (g, l) = (g.clone(), l.clone());
        let (mut y, report) =
            Linker::restore(&g, &l, snap.clone(), Some(&dir.path().join("index"))).unwrap();
        assert!(
            matches!(
                report.index,
                IndexRestore::Reloaded {
                    inserted: 0,
                    removed: 0,
                    ..
                }
            ),
            "{report:?}"
        );
        assert_eq!(y.snapshot(), x.snapshot());
        same_decisions(&mut x, &mut y, 99);
        // without a dump (or with a damaged one) the index is rebuilt, same decisions
        let mut x2 = busy_gallery(choice);
        let (mut z, report) =
            Linker::restore(&g, &l, snap.clone(), Some(&dir.path().join("nothing"))).unwrap();
        assert!(
            matches!(report.index, IndexRestore::Rebuilt { reason: Some(_) }),
            "{report:?}"
        );
        same_decisions(&mut x2, &mut z, 99);
        // an older dump is reconciled: only the difference is inserted/removed
        let mut x3 = busy_gallery(choice);
        let old_dump = dir.path().join("index");
        let o = obs("b", 5000, 90_000.0, 90_010.0, e(12));
        x3.observe(&o).unwrap();
        let (mut w, report) = Linker::restore(&g, &l, x3.snapshot(), Some(&old_dump)).unwrap();
        assert!(
            matches!(
                report.index,
                IndexRestore::Reloaded {
                    inserted: 1,
                    removed: 0,
                    ..
                }
            ),
            "{report:?}"
        );
        same_decisions(&mut x3, &mut w, 5);
    }
}

#[test]
fn a_gallery_rebuilt_from_stored_tracklets_keeps_identities() {
    let x = busy_gallery(IndexChoice::Exact);
    let mut stored = Vec::new();
    for ident in x.identities() {
        for s in &ident.sightings {
            stored.push(StoredTracklet {
                identity: ident.id,
                camera: s.camera.clone(),
                tracklet: s.tracklet,
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                quality: s.quality,
                descriptor: ident.descriptor_of(&s.key()).unwrap().to_vec(),
                link: s.link,
                similarity: s.similarity,
            });
        }
    }
    let (g, l) = x.settings();
    let (y, report) = Linker::rebuild(g, l, DIM, stored, 500, &[(id(1), id(2))], None).unwrap();
    assert_eq!(report.identities, x.stats().identities);
    for (a, b) in x.identities().zip(y.identities()) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.sightings, b.sightings);
        let vecs = |i: &Identity| {
            let mut v: Vec<Vec<f32>> = i.prototypes.iter().map(|p| p.vector.clone()).collect();
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v
        };
        assert_eq!(vecs(a), vecs(b), "identity {}", a.id);
    }
    assert!(
        y.identity(id(1))
            .is_none_or(|i| i.cannot_link.contains(&id(2)))
    );
    // new identities continue after the largest id ever used
    let mut y = y;
    let o = y.observe(&obs("z", 1, 1e6, 1e6 + 1.0, e(14))).unwrap();
    assert_eq!(o.decision, Decision::New { identity: id(500) });
}

#[test]
fn a_link_barely_over_the_threshold_stays_uncertain_within_the_band() {
    let (g, l) = settings();
    let mut x = Linker::new(
        &g,
        &LinkingSettings {
            uncertain_band: 0.05,
            ..l
        },
        DIM,
    )
    .unwrap();
    x.observe(&obs("a", 1, 0.0, 10.0, e(0))).unwrap();
    // 0.63 clears the 0.6 threshold with no competitor, but by less than the 0.05 band
    let o = x
        .observe(&obs("b", 2, 20.0, 30.0, mix(&[(0, 0.63)], 8)))
        .unwrap();
    assert!(
        matches!(
            o.decision,
            Decision::Uncertain {
                identity,
                runner_up: None,
                ..
            } if identity == id(1)
        ),
        "{:?}",
        o.decision
    );
    // uncertain adds no prototype; 0.7 is clear of the band and links
    assert_eq!(x.identity(id(1)).unwrap().prototypes.len(), 1);
    let o = x
        .observe(&obs("b", 3, 40.0, 50.0, mix(&[(0, 0.7)], 9)))
        .unwrap();
    assert!(
        matches!(o.decision, Decision::Linked { identity, .. } if identity == id(1)),
        "{:?}",
        o.decision
    );
}

#[test]
fn look_alikes_seen_at_once_in_one_camera_are_no_evidence_for_a_merge() {
    // the setting of identities_merge_when_evidence_accumulates, but the two tracklets that
    // match both identities are in camera c at the same time: two look-alikes, not one person
    // seen twice, so the identities stay apart
    let (_, mut l) = settings();
    let mut x = two_of_one_person(&mut l);
    let mid = mix(&[(0, 0.9486), (1, 0.3162)], 8);
    x.observe(&obs("c", 3, 200.0, 210.0, mid.clone())).unwrap();
    let o = x.observe(&obs("c", 4, 201.0, 209.0, mid)).unwrap();
    assert_eq!(
        x.identity(id(1)).unwrap().evidence[&id(2)].tracklets.len(),
        2
    );
    assert!(
        !o.events
            .iter()
            .any(|e| matches!(e, GalleryEvent::IdentityMerged(_))),
        "{:?}",
        o.events
    );
    assert_eq!(x.stats().identities, 2);
}
