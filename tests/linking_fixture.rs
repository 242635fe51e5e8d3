//! A recorded linking sequence where the linker used to join different people, replayed through
//! the daemon's linker without video or models.
//!
//! The fixture (`tests/fixtures/linking/vtest-hard-resnet18.jsonl`) is what
//! `crosscam bench linking --pair vtest-hard --offsets 0 --record FILE` wrote with the default
//! embedder `crosscam-resnet18-vtest`: the 74 described tracklet snapshots (34 tracklets, two
//! virtual cameras of vtest.avi) in the order the linker saw them, each with its ground-truth
//! person (pseudo ground truth: the continuous clip tracked by the same tracker). Descriptors are
//! rounded to 4 decimals.

use std::collections::BTreeSet;
use std::path::Path;

use crosscam::bench::linking::{Recorded, replay_recorded};
use crosscam::config::{Config, LinkingSettings};
use crosscam::eval::linking::Labelled;

fn fixture() -> Vec<Recorded> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/linking/vtest-hard-resnet18.jsonl");
    std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The daemon's linking values for the embedder the fixture was recorded with.
fn calibrated(cfg: &Config) -> LinkingSettings {
    let manifest = crosscam::models::Manifest::load(&cfg.models.manifest).unwrap();
    let mut l = cfg.linking.clone();
    l.calibrate(
        manifest
            .get("crosscam-resnet18-vtest")
            .unwrap()
            .linking
            .as_ref(),
    );
    l
}

/// Pairs of tracklets (by index) given one identity although they are different people.
fn wrong_pairs(items: &[Labelled]) -> BTreeSet<(usize, usize)> {
    let mut w = BTreeSet::new();
    for i in 0..items.len() {
        for j in i + 1..items.len() {
            if items[i].identity == items[j].identity && items[i].truth != items[j].truth {
                w.insert((i, j));
            }
        }
    }
    w
}

#[test]
fn weak_links_no_longer_join_different_people_on_the_recorded_sequence() {
    let rec = fixture();
    assert_eq!(rec.len(), 74);
    let cfg = Config::defaults().unwrap();
    let now = calibrated(&cfg);
    assert!(now.uncertain_band > 0.0, "{now:?}");
    // as the linker was: every link that cleared threshold and margin was confident
    let mut before = now.clone();
    before.uncertain_band = 0.0;
    let (ids_before, _, items_before) = replay_recorded(&cfg.gallery, &before, &rec).unwrap();
    let (ids_now, _, items_now) = replay_recorded(&cfg.gallery, &now, &rec).unwrap();
    eprintln!("before {ids_before:?}\nnow {ids_now:?}");
    // the same tracklets are scored both times, in the same order
    assert_eq!(items_before.len(), items_now.len());
    let (wb, wn) = (wrong_pairs(&items_before), wrong_pairs(&items_now));
    assert!(ids_before.wrong_merges >= 5, "{ids_before:?}");
    // wrong joins that happened are gone, and none is new
    assert!(
        wn.is_subset(&wb),
        "new wrong joins: {:?}",
        wn.difference(&wb)
    );
    assert!(
        ids_now.wrong_merges * 2 <= ids_before.wrong_merges,
        "{ids_before:?} → {ids_now:?}"
    );
    // tracklet pairs of one person given one identity
    let joined_right = |items: &[Labelled]| {
        let mut n = 0;
        for i in 0..items.len() {
            for j in i + 1..items.len() {
                n += (items[i].identity == items[j].identity && items[i].truth == items[j].truth)
                    as usize;
            }
        }
        n
    };
    let (rb, rn) = (joined_right(&items_before), joined_right(&items_now));
    eprintln!(
        "same-person joins before {rb}, now {rn}; wrong joins before {}, now {}",
        wb.len(),
        wn.len()
    );
    // the price: on this sequence the one right join of the old linker (two tracklets of one
    // person, at 0.92–0.96) was weak too and now waits as `uncertain`; more must not be lost
    assert!(rn + 1 >= rb, "same-person joins {rb} → {rn}");
}
