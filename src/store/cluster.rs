//! What a core remembers of the edges feeding it (src/cluster): each edge run is one run of the
//! store (tracker ids restart with every run of an edge), and the last message stored of every
//! remote tracklet, so that a redelivered copy, a re-published copy or an older snapshot of the
//! same tracklet is dropped instead of being linked again.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store, now_ms};

impl Store {
    /// The store's run for the edge run `token` (made on first sight).
    pub fn edge_run(&self, token: &str, edge: &str) -> Result<i64> {
        if let Some(run) = self
            .conn
            .query_row("SELECT run FROM edge_runs WHERE token = ?1", [token], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
        {
            return Ok(run);
        }
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        tx.execute("INSERT INTO runs (started_ms) VALUES (?1)", [now_ms()])
            .map_err(|e| self.err(e))?;
        let run = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO edge_runs (token, run, edge, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![token, run, edge, now_ms()],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(run)
    }

    /// The number of the last message stored of a remote tracklet, if any.
    pub fn edge_seq(&self, run: i64, camera: &str, track: u64) -> Result<Option<u64>> {
        self.conn
            .prepare_cached(
                "SELECT seq FROM edge_tracklets WHERE run = ?1 AND camera = ?2 AND track_id = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![run, camera, track as i64], |r| r.get::<_, i64>(0))
            })
            .optional()
            .map(|s| s.map(|s| s as u64))
            .map_err(|e| self.err(e))
    }

    /// The row of a remote tracklet, if it is stored.
    pub fn tracklet_row(&self, run: i64, camera: &str, track: u64) -> Result<Option<i64>> {
        self.conn
            .prepare_cached(
                "SELECT id FROM tracklets WHERE run = ?1 AND camera = ?2 AND track_id = ?3",
            )
            .and_then(|mut st| st.query_row(params![run, camera, track as i64], |r| r.get(0)))
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Records that message `seq` of a remote tracklet is stored.
    pub fn set_edge_seq(&self, run: i64, camera: &str, track: u64, seq: u64) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO edge_tracklets (run, camera, track_id, seq) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(run, camera, track_id) DO UPDATE SET seq = MAX(seq, excluded.seq)",
            )
            .and_then(|mut st| st.execute(params![run, camera, track as i64, seq as i64]))
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_runs_and_sequences_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.edge_run("aa11", "edge-a").unwrap();
        let b = s.edge_run("bb22", "edge-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(s.edge_run("aa11", "edge-a").unwrap(), a);
        assert_eq!(s.edge_seq(a, "cam", 7).unwrap(), None);
        s.set_edge_seq(a, "cam", 7, 3).unwrap();
        s.set_edge_seq(a, "cam", 7, 2).unwrap();
        assert_eq!(s.edge_seq(a, "cam", 7).unwrap(), Some(3));
        assert_eq!(s.edge_seq(b, "cam", 7).unwrap(), None);
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.edge_run("aa11", "edge-a").unwrap(), a);
        assert_eq!(s.edge_seq(a, "cam", 7).unwrap(), Some(3));
    }
}
