//! Operators' labels: "these tracklets are / are not the same person", with who said it and when.
//!
//! A label is one verdict on two sets of tracklets (side a, side b). Storing tracklets rather
//! than identities keeps a label meaningful after the gallery changes (merges, splits,
//! re-embedding with another model): the identities the operator looked at are kept too, for
//! the audit trail and for the gallery's cannot-links, but training and the promotion gate read
//! the tracklets. Crops of labelled tracklets are exempt from retention (see `crops::enforce`),
//! so that a label never loses the pictures it is about.

use rusqlite::{Connection, params};
use serde::Serialize;

use super::{Result, SIGHTING_COLUMNS, SightingRow, Store, StoreError, now_ms, sighting_row};

/// What kind of answer a label records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelKind {
    /// This tracklet is this identity (side a: the tracklet; side b: the identity's others).
    Confirm,
    /// This tracklet is not this identity.
    Reject,
    /// Two identities are one person.
    Same,
    /// Two identities are two people.
    Different,
    /// Recorded by an operator merge (same person).
    Merge,
    /// Recorded by an operator split (different people).
    Split,
}

impl LabelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LabelKind::Confirm => "confirm",
            LabelKind::Reject => "reject",
            LabelKind::Same => "same",
            LabelKind::Different => "different",
            LabelKind::Merge => "merge",
            LabelKind::Split => "split",
        }
    }

    pub fn parse(s: &str) -> Option<LabelKind> {
        Some(match s {
            "confirm" => LabelKind::Confirm,
            "reject" => LabelKind::Reject,
            "same" => LabelKind::Same,
            "different" => LabelKind::Different,
            "merge" => LabelKind::Merge,
            "split" => LabelKind::Split,
            _ => return None,
        })
    }

    /// Whether the label says "one person".
    pub fn same(self) -> bool {
        matches!(
            self,
            LabelKind::Confirm | LabelKind::Same | LabelKind::Merge
        )
    }
}

/// A label to record.
#[derive(Debug, Clone)]
pub struct NewLabel {
    pub kind: LabelKind,
    /// The identity the operator looked at (the one a tracklet was compared with, or the first
    /// of two identities).
    pub identity: Option<i64>,
    /// The second identity (same / different / merge / split).
    pub other: Option<i64>,
    /// The tracklet a confirm / reject is about.
    pub tracklet: Option<i64>,
    pub a: Vec<i64>,
    pub b: Vec<i64>,
    /// The user name.
    pub actor: String,
    pub note: String,
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelRow {
    pub id: i64,
    pub kind: LabelKind,
    /// One person (true) or two (false).
    pub same: bool,
    pub identity: Option<i64>,
    pub other: Option<i64>,
    pub tracklet: Option<i64>,
    /// Tracklets of side a and side b (store row ids).
    pub a: Vec<i64>,
    pub b: Vec<i64>,
    pub user: String,
    pub note: String,
    pub created_ms: i64,
}

/// Writes a label and its tracklets on `conn` (inside the caller's transaction when it has one).
pub(super) fn insert(conn: &Connection, l: &NewLabel) -> rusqlite::Result<i64> {
    conn.execute(
        "INSERT INTO labels (kind, same, identity, other, tracklet, actor, note, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            l.kind.as_str(),
            l.kind.same(),
            l.identity,
            l.other,
            l.tracklet,
            l.actor,
            l.note,
            now_ms()
        ],
    )?;
    let id = conn.last_insert_rowid();
    let mut st = conn.prepare(
        "INSERT OR IGNORE INTO label_tracklets (label, side, tracklet) VALUES (?1, ?2, ?3)",
    )?;
    for (side, ts) in [(0, &l.a), (1, &l.b)] {
        for t in ts {
            st.execute(params![id, side, t])?;
        }
    }
    Ok(id)
}

/// The tracklets linked to `identity` now.
pub(super) fn tracklets_of(conn: &Connection, identity: i64) -> rusqlite::Result<Vec<i64>> {
    let mut st =
        conn.prepare("SELECT tracklet FROM sightings WHERE identity = ?1 ORDER BY tracklet")?;
    st.query_map(params![identity], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()
}

/// The user name in an audit actor (`operator:alice` → `alice`); `None` for the linker.
pub(super) fn operator_of(actor: &str) -> Option<&str> {
    actor.strip_prefix("operator:")
}

impl Store {
    /// Records a label; refuses one with an empty side (a verdict about nothing).
    pub fn add_label(&self, l: &NewLabel) -> Result<i64> {
        if l.a.is_empty() || l.b.is_empty() {
            return Err(StoreError::Invalid(
                "a label needs tracklets on both sides".into(),
            ));
        }
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| StoreError::Sqlite {
                path: self.path.display().to_string(),
                source: e,
            })?;
        let id = insert(&tx, l).map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        })?;
        tx.commit().map_err(|e| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source: e,
        })?;
        Ok(id)
    }

    /// The tracklets linked to `identity` now (store row ids, ascending).
    pub fn tracklets_of_identity(&self, identity: i64) -> Result<Vec<i64>> {
        tracklets_of(&self.conn, identity).map_err(|e| self.err(e))
    }

    /// Every label, oldest first.
    pub fn labels(&self) -> Result<Vec<LabelRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT id, kind, same, identity, other, tracklet, actor, note, created_ms
                 FROM labels ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query_map([], |r| {
                let kind: String = r.get(1)?;
                Ok(LabelRow {
                    id: r.get(0)?,
                    // an unknown kind (a newer crosscam's) reads by its verdict
                    kind: LabelKind::parse(&kind).unwrap_or(if r.get::<_, bool>(2)? {
                        LabelKind::Same
                    } else {
                        LabelKind::Different
                    }),
                    same: r.get(2)?,
                    identity: r.get(3)?,
                    other: r.get(4)?,
                    tracklet: r.get(5)?,
                    a: Vec::new(),
                    b: Vec::new(),
                    user: r.get(6)?,
                    note: r.get(7)?,
                    created_ms: r.get(8)?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare("SELECT label, side, tracklet FROM label_tracklets ORDER BY label, tracklet")
            .map_err(|e| self.err(e))?;
        let members = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        let pos: std::collections::HashMap<i64, usize> =
            rows.iter().enumerate().map(|(i, r)| (r.id, i)).collect();
        for (label, side, t) in members {
            if let Some(&i) = pos.get(&label) {
                if side == 0 {
                    rows[i].a.push(t);
                } else {
                    rows[i].b.push(t);
                }
            }
        }
        Ok(rows)
    }

    /// Removes a label (an operator's mistake); false when there was none.
    pub fn delete_label(&self, id: i64) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM labels WHERE id = ?1", params![id])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Pairs of identities an operator said are different people (different, reject between
    /// two identities, split): the gallery never merges them on its own.
    pub fn different_identities(&self) -> Result<Vec<(i64, i64)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT identity, other FROM labels
                 WHERE same = 0 AND identity IS NOT NULL AND other IS NOT NULL AND identity != other",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Tracklets an operator has already answered about (confirm / reject): the review queue
    /// does not ask again.
    pub fn answered_tracklets(&self) -> Result<std::collections::HashSet<i64>> {
        let mut st = self
            .conn
            .prepare("SELECT tracklet FROM labels WHERE tracklet IS NOT NULL")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

impl Store {
    /// What the review queue asks about, most useful first: links the linker flagged
    /// `uncertain` (small margin over the runner-up), then near-misses (plain links with the
    /// smallest margins, then the lowest similarities). Only ended tracklets of live identities
    /// that have another sighting to compare with, and none an operator already answered.
    pub fn review_candidates(&self, limit: usize, offset: usize) -> Result<Vec<SightingRow>> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {SIGHTING_COLUMNS}
                 FROM sightings s JOIN tracklets t ON t.id = s.tracklet
                 JOIN identities i ON i.id = s.identity
                 WHERE s.decision IN ('uncertain', 'linked') AND t.ended = 1
                   AND i.retired_ms IS NULL
                   AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.tracklet = s.tracklet)
                   AND EXISTS (SELECT 1 FROM sightings o
                               WHERE o.identity = s.identity AND o.tracklet != s.tracklet)
                 ORDER BY s.decision = 'uncertain' DESC, COALESCE(s.margin, 1.0),
                          COALESCE(s.similarity, 1.0), s.tracklet
                 LIMIT ?1 OFFSET ?2"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit as i64, offset as i64], sighting_row)
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The ids of a tracklet's `n` best crops.
    pub fn best_crops_of_tracklet(&self, tracklet: i64, n: usize) -> Result<Vec<i64>> {
        let mut st = self
            .conn
            .prepare("SELECT id FROM crops WHERE tracklet = ?1 ORDER BY quality DESC, seq LIMIT ?2")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![tracklet, n as i64], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{crop, tracklet};
    use crate::store::{CropRetention, Decision};

    #[test]
    fn labels_round_trip_with_user_and_time_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, t2);
        {
            let s = Store::open(dir.path()).unwrap();
            let run = s.begin_run().unwrap();
            t1 = s
                .upsert_tracklet(run, &tracklet("a", 1, 0, 1000), 0.5, true)
                .unwrap();
            t2 = s
                .upsert_tracklet(run, &tracklet("b", 1, 2000, 3000), 0.5, true)
                .unwrap();
            let before = now_ms();
            let id = s
                .add_label(&NewLabel {
                    kind: LabelKind::Reject,
                    identity: Some(7),
                    other: None,
                    tracklet: Some(t1),
                    a: vec![t1],
                    b: vec![t2],
                    actor: "alice".into(),
                    note: "different coat".into(),
                })
                .unwrap();
            let rows = s.labels().unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].id, id);
            assert!(!rows[0].same);
            assert!(rows[0].created_ms >= before);
            // a label about nothing is refused
            let empty = NewLabel {
                kind: LabelKind::Same,
                identity: None,
                other: None,
                tracklet: None,
                a: vec![],
                b: vec![t2],
                actor: "alice".into(),
                note: String::new(),
            };
            assert!(s.add_label(&empty).is_err());
        }
        let s = Store::open(dir.path()).unwrap();
        let rows = s.labels().unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.kind, r.user.as_str(), r.note.as_str()),
            (LabelKind::Reject, "alice", "different coat")
        );
        assert_eq!((r.a.clone(), r.b.clone()), (vec![t1], vec![t2]));
        assert_eq!(s.answered_tracklets().unwrap().len(), 1);
        assert!(s.delete_label(r.id).unwrap());
        assert!(!s.delete_label(r.id).unwrap());
        assert!(s.labels().unwrap().is_empty());
    }

    #[test]
    fn operator_merges_and_splits_are_labels_and_linker_merges_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let run = s.begin_run().unwrap();
        let mut t = Vec::new();
        for (k, id) in [(1, 1), (2, 1), (3, 2), (4, 3)] {
            let row = s
                .upsert_tracklet(
                    run,
                    &tracklet("a", k, k as i64 * 1000, k as i64 * 1000 + 500),
                    0.5,
                    true,
                )
                .unwrap();
            s.record_sighting(row, id, Some(0.9), None, Decision::Linked, "m", 0)
                .unwrap();
            t.push(row);
        }
        s.merge_identities(1, 2, "linker", "evidence", Some(0.8))
            .unwrap();
        assert!(
            s.labels().unwrap().is_empty(),
            "the linker is not an operator"
        );
        s.merge_identities(1, 3, "operator:bob", "same jacket", None)
            .unwrap();
        s.split_identity(1, 9, &[t[1]], "operator:carol", "two people")
            .unwrap();
        let rows = s.labels().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].kind, LabelKind::Merge);
        assert!(rows[0].same);
        assert_eq!(rows[0].user, "bob");
        assert_eq!(rows[0].a, vec![t[0], t[1], t[2]]);
        assert_eq!(rows[0].b, vec![t[3]]);
        assert_eq!(rows[1].kind, LabelKind::Split);
        assert!(!rows[1].same);
        assert_eq!(rows[1].a, vec![t[0], t[2], t[3]]);
        assert_eq!(rows[1].b, vec![t[1]]);
        assert_eq!(s.different_identities().unwrap(), vec![(1, 9)]);
    }

    #[test]
    fn retention_keeps_the_crops_of_labelled_tracklets() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let run = s.begin_run().unwrap();
        let mut rows = Vec::new();
        for k in 0..3 {
            let row = s
                .upsert_tracklet(run, &tracklet("a", k, 0, 100), 0.5, true)
                .unwrap();
            s.save_crops(row, "a", &[crop(0), crop(1)]).unwrap();
            rows.push(row);
        }
        s.add_label(&NewLabel {
            kind: LabelKind::Same,
            identity: Some(1),
            other: Some(2),
            tracklet: None,
            a: vec![rows[0]],
            b: vec![rows[1]],
            actor: "alice".into(),
            note: String::new(),
        })
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let rep = s
            .enforce_crop_retention(&CropRetention {
                max_age_ms: Some(1),
                max_bytes: Some(0),
            })
            .unwrap();
        assert_eq!(rep.deleted, 2, "only the unlabelled tracklet's crops go");
        assert_eq!(s.crops_of(rows[0]).unwrap().len(), 2);
        assert_eq!(s.crops_of(rows[1]).unwrap().len(), 2);
        assert!(s.crops_of(rows[2]).unwrap().is_empty());
        for (p, _) in s.crops_of(rows[0]).unwrap() {
            assert!(p.present(), "{p}");
        }
    }
}
