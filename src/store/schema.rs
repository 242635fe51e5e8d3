//! Schema migrations: numbered, applied in order inside transactions, the version kept in
//! SQLite's `user_version`. A database from a newer crosscam is refused rather than damaged.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the first schema
    "CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started_ms INTEGER NOT NULL);
     CREATE TABLE cameras (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL, created_ms INTEGER NOT NULL,
        state TEXT, state_detail TEXT, state_ms INTEGER);
     CREATE TABLE tracklets (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        camera TEXT NOT NULL, run INTEGER NOT NULL REFERENCES runs(id), track_id INTEGER NOT NULL,
        start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, boxes INTEGER NOT NULL,
        quality REAL NOT NULL, ended INTEGER NOT NULL,
        UNIQUE (camera, run, track_id));
     CREATE INDEX tracklets_time ON tracklets (end_ms);
     CREATE TABLE descriptors (
        tracklet INTEGER NOT NULL REFERENCES tracklets(id) ON DELETE CASCADE,
        model TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL,
        PRIMARY KEY (tracklet, model));
     CREATE TABLE identities (
        id INTEGER PRIMARY KEY, created_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
        retired_ms INTEGER, merged_into INTEGER REFERENCES identities(id), label TEXT);
     CREATE TABLE sightings (
        tracklet INTEGER PRIMARY KEY REFERENCES tracklets(id) ON DELETE CASCADE,
        identity INTEGER NOT NULL REFERENCES identities(id),
        similarity REAL, margin REAL, decision TEXT NOT NULL, model TEXT NOT NULL,
        created_ms INTEGER NOT NULL);
     CREATE INDEX sightings_identity ON sightings (identity);
     CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, kept INTEGER NOT NULL,
        other INTEGER NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, similarity REAL,
        created_ms INTEGER NOT NULL);
     CREATE TABLE crops (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tracklet INTEGER NOT NULL REFERENCES tracklets(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL, path TEXT NOT NULL, quality REAL NOT NULL, bytes INTEGER NOT NULL,
        created_ms INTEGER NOT NULL, UNIQUE (tracklet, seq));
     CREATE INDEX crops_age ON crops (created_ms);",
    // 2: every box of a tracklet (timelines, overlays, offline scoring), packed little-endian:
    //    pts_ms i64, wall_ms i64, x1 y1 x2 y2 score f32
    "ALTER TABLE tracklets ADD COLUMN track BLOB;",
    // 3: operators' labels: one verdict (same person or not) on two sets of tracklets, with who
    //    and when. `kind`: confirm / reject (a tracklet vs an identity), same / different (two
    //    identities), merge / split (recorded by those operations). The identities are the ones
    //    the operator saw; the tracklets are what the verdict is about (identities change later).
    "CREATE TABLE labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, same INTEGER NOT NULL,
        identity INTEGER, other INTEGER, tracklet INTEGER,
        actor TEXT NOT NULL, note TEXT NOT NULL, created_ms INTEGER NOT NULL);
     CREATE TABLE label_tracklets (
        label INTEGER NOT NULL REFERENCES labels(id) ON DELETE CASCADE,
        side INTEGER NOT NULL, tracklet INTEGER NOT NULL,
        PRIMARY KEY (label, side, tracklet));
     CREATE INDEX label_tracklets_tracklet ON label_tracklets (tracklet);",
    // 4: edges' runs as the core's runs (src/cluster), and the last message of every remote
    //    tracklet stored, so that a copy or an older snapshot that arrives again is dropped
    "CREATE TABLE edge_runs (
        token TEXT PRIMARY KEY, run INTEGER NOT NULL REFERENCES runs(id), edge TEXT NOT NULL,
        created_ms INTEGER NOT NULL);
     CREATE TABLE edge_tracklets (
        run INTEGER NOT NULL, camera TEXT NOT NULL, track_id INTEGER NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (run, camera, track_id));",
    // 5: crops appended to pack files: the row names the pack (`path`), the offset and the length
    //    (`bytes`); NULL offset: a file of its own (crops stored before)
    "ALTER TABLE crops ADD COLUMN pack_offset INTEGER;
     CREATE INDEX crops_path ON crops (path);",
    // 6: a counter of what operators change (their merges and splits, labels, identity names),
    //    kept by triggers: an active core snapshots its database soon after it moves, so that
    //    a takeover does not lose a minute of operators' work (src/cluster/failover.rs). The
    //    linker's own merges are not counted (a replay of the stream makes them again).
    "CREATE TABLE operator_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
     INSERT INTO operator_changes VALUES (1, 0);
     CREATE TRIGGER operator_changes_audit AFTER INSERT ON audit WHEN NEW.actor != 'linker'
        BEGIN UPDATE operator_changes SET n = n + 1; END;
     CREATE TRIGGER operator_changes_label_added AFTER INSERT ON labels
        BEGIN UPDATE operator_changes SET n = n + 1; END;
     CREATE TRIGGER operator_changes_label_removed AFTER DELETE ON labels
        BEGIN UPDATE operator_changes SET n = n + 1; END;
     CREATE TRIGGER operator_changes_identity_named AFTER UPDATE OF label ON identities
        WHEN OLD.label IS NOT NEW.label
        BEGIN UPDATE operator_changes SET n = n + 1; END;",
    // 7: cameras added, changed or removed through the API (store/camera_changes.rs): they
    //    outlast a restart and travel in a core's snapshots; counted as operators' changes
    "CREATE TABLE camera_changes (
        id TEXT PRIMARY KEY, settings TEXT, config TEXT, actor TEXT NOT NULL,
        changed_ms INTEGER NOT NULL);
     CREATE TRIGGER operator_changes_camera_added AFTER INSERT ON camera_changes
        BEGIN UPDATE operator_changes SET n = n + 1; END;
     CREATE TRIGGER operator_changes_camera_changed AFTER UPDATE ON camera_changes
        BEGIN UPDATE operator_changes SET n = n + 1; END;
     CREATE TRIGGER operator_changes_camera_forgotten AFTER DELETE ON camera_changes
        BEGIN UPDATE operator_changes SET n = n + 1; END;",
];

pub const VERSION: i64 = MIGRATIONS.len() as i64;

#[cfg(test)]
pub const MIGRATIONS_FOR_TESTS: &[&str] = MIGRATIONS;

pub enum MigrateError {
    Sql(rusqlite::Error),
    TooNew(i64),
}

pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(MigrateError::Sql)?;
    if current > VERSION {
        return Err(MigrateError::TooNew(current));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(MigrateError::Sql)?;
        tx.execute_batch(m).map_err(MigrateError::Sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(MigrateError::Sql)?;
        tx.commit().map_err(MigrateError::Sql)?;
    }
    Ok(())
}
