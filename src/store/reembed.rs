//! Descriptors of several model versions side by side, for the live model switch
//! (src/server/switch.rs): the new model's descriptors are written next to the serving model's
//! (the `descriptors` table is keyed by tracklet *and* model tag), so the serving gallery is never
//! touched until the switch commits, and a switch interrupted by a crash leaves only rows that no
//! serving model reads.

use rusqlite::params;

use super::{Result, Store, to_blob};

impl Store {
    /// Tracklets of live identities that still need a descriptor from model `tag`: they have
    /// stored crops to compute it from and no `tag` descriptor yet. Oldest first.
    pub fn reembed_todo(&self, tag: &str) -> Result<Vec<i64>> {
        let mut st = self
            .conn()
            .prepare(
                "SELECT t.id FROM sightings s JOIN tracklets t ON t.id = s.tracklet
                 JOIN identities i ON i.id = s.identity
                 WHERE i.retired_ms IS NULL
                   AND EXISTS (SELECT 1 FROM crops c WHERE c.tracklet = t.id)
                   AND NOT EXISTS (SELECT 1 FROM descriptors d WHERE d.tracklet = t.id AND d.model = ?1)
                 ORDER BY t.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![tag], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<i64>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Stores (replaces) descriptors of model `tag` in one transaction: a batch is written whole
    /// or not at all (a full disk fails the batch, never half of it).
    pub fn save_descriptors(&self, tag: &str, rows: &[(i64, Vec<f32>)]) -> Result<()> {
        let tx = self
            .conn()
            .unchecked_transaction()
            .map_err(|e| self.err(e))?;
        for (tracklet, v) in rows {
            tx.execute(
                "INSERT INTO descriptors (tracklet, model, dim, vector) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(tracklet, model) DO UPDATE SET dim = excluded.dim, vector = excluded.vector",
                params![tracklet, tag, v.len() as i64, to_blob(v)],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Deletes a tracklet's descriptors of every model but `keep`: called when the serving model
    /// re-describes a growing tracklet, so that another model's descriptor of it (from fewer
    /// crops) is recomputed by the next switch instead of being reused.
    pub fn drop_other_descriptors(&self, tracklet: i64, keep: &str) -> Result<()> {
        self.conn()
            .prepare_cached("DELETE FROM descriptors WHERE tracklet = ?1 AND model != ?2")
            .and_then(|mut st| st.execute(params![tracklet, keep]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Copies the descriptors stored under the tag `from` to the tag `to` where `to` has none
    /// (the first start with a model registry: the configured embedder's descriptors were tagged
    /// with its name). Returns how many were copied.
    pub fn adopt_descriptors(&self, from: &str, to: &str) -> Result<usize> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO descriptors (tracklet, model, dim, vector)
                 SELECT tracklet, ?2, dim, vector FROM descriptors WHERE model = ?1",
                params![from, to],
            )
            .map_err(|e| self.err(e))
    }

    /// Per model tag: how many descriptors, and of which dimensions (status and tests: which
    /// model described the gallery).
    pub fn descriptor_models(&self) -> Result<Vec<(String, i64, i64)>> {
        let mut st = self
            .conn()
            .prepare(
                "SELECT model, dim, COUNT(*) FROM descriptors GROUP BY model, dim ORDER BY model",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.err(e))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{crop, tracklet};
    use super::*;
    use crate::store::Decision;

    #[test]
    fn the_todo_list_follows_the_descriptors_of_each_model() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let run = s.begin_run().unwrap();
        s.upsert_camera("a", "A", "file:///x").unwrap();
        s.create_identity(1, 0).unwrap();
        s.create_identity(2, 0).unwrap();
        // two tracklets of identity 1 with crops, one without crops, one of a retired identity
        let mut ids = Vec::new();
        for (k, with_crops, identity) in
            [(1u64, true, 1), (2, true, 1), (3, false, 1), (4, true, 2)]
        {
            let ms = 1000 * k as i64;
            let t = s
                .upsert_tracklet(run, &tracklet("a", k, ms, ms + 500), 0.5, true)
                .unwrap();
            if with_crops {
                s.save_crops(t, "a", &[crop(1), crop(2)]).unwrap();
            }
            s.record_sighting(t, identity, Some(0.9), None, Decision::Linked, "old", 0)
                .unwrap();
            s.save_descriptor(t, "old", &[1.0, 0.0]).unwrap();
            ids.push(t);
        }
        s.retire_identity(2, 10).unwrap();
        // the new model needs the two live tracklets with crops
        assert_eq!(s.reembed_todo("new").unwrap(), vec![ids[0], ids[1]]);
        s.save_descriptors("new", &[(ids[0], vec![0.0, 1.0, 0.0])])
            .unwrap();
        assert_eq!(s.reembed_todo("new").unwrap(), vec![ids[1]]);
        // the serving model re-describes tracklet 1: the new model's older row goes
        s.save_descriptor(ids[0], "old", &[0.6, 0.8]).unwrap();
        s.drop_other_descriptors(ids[0], "old").unwrap();
        assert_eq!(s.reembed_todo("new").unwrap(), vec![ids[0], ids[1]]);
        assert_eq!(s.live_tracklets("old").unwrap().len(), 3);
        // adoption copies rows under another tag, without replacing existing ones
        s.save_descriptors("v1", &[(ids[1], vec![0.0, 0.0, 1.0])])
            .unwrap();
        assert_eq!(s.adopt_descriptors("old", "v1").unwrap(), 3);
        let v1: Vec<(i64, Vec<f32>)> = s
            .live_tracklets("v1")
            .unwrap()
            .into_iter()
            .map(|t| (t.tracklet, t.descriptor))
            .collect();
        assert!(v1.contains(&(ids[1], vec![0.0, 0.0, 1.0])), "{v1:?}");
        assert!(v1.contains(&(ids[0], vec![0.6, 0.8])), "{v1:?}");
        let models = s.descriptor_models().unwrap();
        assert!(models.contains(&("v1".to_string(), 3, 1)), "{models:?}");
    }
}
