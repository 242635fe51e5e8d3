//! An output's messages on disk, oldest first, until its receiver has taken them.
//!
//! One SQLite file per output (`DATA/outputs/<name>.sqlite`, WAL): the daemon's event thread
//! appends, the output's delivery thread reads the oldest and removes it once delivered. The
//! queue survives a restart of the daemon, so a receiver that is away for an hour, or while the
//! daemon restarts, still gets every message, in order. Past `max` messages the oldest are
//! dropped and counted; a failing disk drops the new message and counts it, never blocks.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

/// One message to deliver: where (a topic, or an event type for webhooks), whether an MQTT
/// broker keeps it as the topic's last value, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub retain: bool,
    pub body: Vec<u8>,
}

/// A message waiting in the queue, with its sequence number (increasing, never reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub seq: i64,
    pub message: Message,
}

pub struct DurableQueue {
    db: Mutex<Connection>,
    ready: Condvar,
    len: AtomicU64,
    max: u64,
    /// Dropped because the queue was full (oldest first).
    pub overflowed: AtomicU64,
    /// Dropped because they could not be written (disk full, I/O error).
    pub unwritable: AtomicU64,
}

impl DurableQueue {
    pub fn open(path: &Path, max: u64) -> anyhow::Result<DurableQueue> {
        if let Some(dir) = path.parent() {
            crate::store::private::private_dir(dir)?;
        }
        // event payloads name people's tracklets and cameras: the daemon's user only
        crate::store::private::private_db(path)?;
        let setup = || -> rusqlite::Result<Connection> {
            let db = Connection::open(path)?;
            db.busy_timeout(Duration::from_secs(5))?;
            db.pragma_update(None, "journal_mode", "WAL")?;
            db.pragma_update(None, "synchronous", "NORMAL")?;
            db.execute_batch(
                "CREATE TABLE IF NOT EXISTS queue (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    topic TEXT NOT NULL,
                    retain INTEGER NOT NULL,
                    body BLOB NOT NULL)",
            )?;
            Ok(db)
        };
        let db = setup().map_err(|e| {
            anyhow::anyhow!(
                "cannot open the output queue {} ({e}); if it is damaged, stop crosscam and move it away (its undelivered messages are lost)",
                path.display()
            )
        })?;
        let len: i64 = db.query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))?;
        Ok(DurableQueue {
            db: Mutex::new(db),
            ready: Condvar::new(),
            len: AtomicU64::new(len.max(0) as u64),
            max: max.max(1),
            overflowed: AtomicU64::new(0),
            unwritable: AtomicU64::new(0),
        })
    }

    /// Messages waiting.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends messages in one transaction; drops the oldest past the bound.
    pub fn push(&self, msgs: &[Message]) {
        if msgs.is_empty() {
            return;
        }
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        let res = (|| -> rusqlite::Result<u64> {
            let tx = db.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO queue (topic, retain, body) VALUES (?1, ?2, ?3)",
                )?;
                for m in msgs {
                    ins.execute(params![m.topic, m.retain as i64, m.body])?;
                }
            }
            let len = self.len() + msgs.len() as u64;
            let over = len.saturating_sub(self.max);
            if over > 0 {
                tx.execute(
                    "DELETE FROM queue WHERE seq IN (SELECT seq FROM queue ORDER BY seq LIMIT ?1)",
                    [over as i64],
                )?;
            }
            tx.commit()?;
            Ok(over)
        })();
        match res {
            Ok(over) => {
                self.len
                    .fetch_add(msgs.len() as u64 - over, Ordering::Relaxed);
                if over > 0 {
                    self.overflowed.fetch_add(over, Ordering::Relaxed);
                }
                self.ready.notify_all();
            }
            Err(e) => {
                self.unwritable
                    .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                tracing::warn!(error = %e, lost = msgs.len(), "an output queue could not be written; messages lost");
            }
        }
    }

    /// The oldest message, waiting up to `wait` for one.
    pub fn head(&self, wait: Duration) -> Option<Queued> {
        let mut db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_empty() {
            db = self
                .ready
                .wait_timeout(db, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        db.query_row(
            "SELECT seq, topic, retain, body FROM queue ORDER BY seq LIMIT 1",
            [],
            |r| {
                Ok(Queued {
                    seq: r.get(0)?,
                    message: Message {
                        topic: r.get(1)?,
                        retain: r.get::<_, i64>(2)? != 0,
                        body: r.get(3)?,
                    },
                })
            },
        )
        .optional()
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "an output queue could not be read");
            None
        })
    }

    /// Removes a delivered (or given-up) message.
    pub fn ack(&self, seq: i64) {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        match db.execute("DELETE FROM queue WHERE seq = ?1", [seq]) {
            Ok(n) => {
                let _ = self
                    .len
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                        Some(l.saturating_sub(n as u64))
                    });
            }
            Err(e) => tracing::warn!(error = %e, seq, "an output queue could not be updated"),
        }
    }

    /// Wakes a delivery thread waiting in [`DurableQueue::head`] (at shutdown).
    pub fn wake(&self) {
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: usize) -> Message {
        Message {
            topic: format!("t/{i}"),
            retain: i.is_multiple_of(2),
            body: format!("{{\"i\":{i}}}").into_bytes(),
        }
    }

    #[test]
    fn messages_come_out_in_order_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.sqlite");
        {
            let q = DurableQueue::open(&p, 100).unwrap();
            q.push(&[msg(0), msg(1)]);
            q.push(&[msg(2)]);
            let h = q.head(Duration::ZERO).unwrap();
            assert_eq!(h.message, msg(0));
            q.ack(h.seq);
            assert_eq!(q.len(), 2);
        }
        let q = DurableQueue::open(&p, 100).unwrap();
        assert_eq!(q.len(), 2);
        let a = q.head(Duration::ZERO).unwrap();
        assert_eq!(a.message, msg(1));
        q.ack(a.seq);
        let b = q.head(Duration::ZERO).unwrap();
        assert_eq!(b.message, msg(2));
        assert!(b.seq > a.seq);
        q.ack(b.seq);
        assert!(q.head(Duration::from_millis(10)).is_none());
        assert!(q.is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_are_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let q = DurableQueue::open(&dir.path().join("q.sqlite"), 5).unwrap();
        for i in 0..8 {
            q.push(&[msg(i)]);
        }
        q.push(&[msg(8), msg(9)]);
        assert_eq!(q.len(), 5);
        assert_eq!(q.overflowed.load(Ordering::Relaxed), 5);
        let mut got = Vec::new();
        while let Some(h) = q.head(Duration::ZERO) {
            got.push(h.message.topic.clone());
            q.ack(h.seq);
        }
        assert_eq!(got, ["t/5", "t/6", "t/7", "t/8", "t/9"]);
    }

    #[test]
    fn a_waiting_reader_is_woken_by_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let q = std::sync::Arc::new(DurableQueue::open(&dir.path().join("q.sqlite"), 5).unwrap());
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.head(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        q.push(&[msg(1)]);
        assert_eq!(t.join().unwrap().unwrap().message, msg(1));
    }

    #[test]
    fn a_file_that_is_not_a_queue_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("q.sqlite");
        std::fs::write(
            &p,
            b"this is not sqlite at all, just text that is long enough",
        )
        .unwrap();
        let e = DurableQueue::open(&p, 5).err().unwrap().to_string();
        assert!(e.contains("q.sqlite"), "{e}");
    }
}
