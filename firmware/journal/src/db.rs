//! The SQLite side of the journal: opening a connection with the pragmas the
//! commit protocol relies on (WAL, `synchronous=FULL`, a busy timeout so the
//! main-thread [`crate::Journal`] and a writer-thread [`crate::PartWriter`]
//! can share the file), the schema and its version in `PRAGMA user_version`,
//! the bounded `state_log`, and the row mappers shared by queries and
//! recovery. The schema itself is documented in the crate-level docs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{DbContext, JournalError, Result};
use crate::model::SegmentRow;

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How many `state_log` rows are kept.
pub const STATE_LOG_KEEP: i64 = 10_000;

/// How long a connection waits for the other connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA_V1: &str = "
CREATE TABLE recordings (
    id            TEXT PRIMARY KEY NOT NULL,
    title         TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('adhoc', 'scheduled')),
    event_uid     TEXT,
    state         TEXT NOT NULL
                  CHECK (state IN ('recording', 'completed', 'interrupted', 'failed')),
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    end_reason    TEXT
);
CREATE TABLE parts (
    id            INTEGER PRIMARY KEY,
    recording_id  TEXT NOT NULL REFERENCES recordings(id),
    seq           INTEGER NOT NULL CHECK (seq >= 1),
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER,
    state         TEXT NOT NULL CHECK (state IN ('open', 'closed', 'interrupted', 'failed')),
    end_reason    TEXT,
    encoder       TEXT NOT NULL,
    UNIQUE (recording_id, seq)
);
CREATE INDEX parts_open ON parts(state) WHERE state = 'open';
CREATE TABLE segments (
    id              INTEGER PRIMARY KEY,
    recording_id    TEXT NOT NULL REFERENCES recordings(id),
    part_id         INTEGER NOT NULL REFERENCES parts(id),
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    path            TEXT NOT NULL UNIQUE,
    bytes           INTEGER NOT NULL DEFAULT 0,
    duration_ns     INTEGER,
    first_pts_ns    INTEGER,
    last_pts_ns     INTEGER,
    sha256          TEXT,
    audio_peak_db   REAL,
    audio_rms_db    REAL,
    state           TEXT NOT NULL CHECK (state IN ('open', 'committed')),
    recovered       INTEGER NOT NULL DEFAULT 0 CHECK (recovered IN (0, 1)),
    opened_at_ms    INTEGER NOT NULL,
    committed_at_ms INTEGER,
    UNIQUE (recording_id, seq)
);
CREATE INDEX segments_part ON segments(part_id);
CREATE INDEX segments_open ON segments(state) WHERE state = 'open';
CREATE TABLE state_log (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    recording_id TEXT,
    state        TEXT NOT NULL,
    detail       TEXT NOT NULL
);
";

/// Opens a connection with the journal's pragmas. Does not touch the schema.
pub(crate) fn connect(db_path: &Path) -> Result<Connection> {
    let conn = Connection::open(db_path).db("open database", db_path)?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .db("set busy timeout", db_path)?;
    // Small pages: every segment commit rewrites a few B-tree pages into the WAL and again at
    // checkpoint, and on an SD card those bytes count against the media (write amplification).
    // SQLite's smallest page, 512 bytes: one segment commit (UPDATE of the closed row + INSERT of
    // the next, with their indexes) dirties 9.9 KB of the page cache against 12.2 KB with 1 KiB
    // pages and ~20 KB with 4 KiB (measured with this schema; docs/benchmarks.md, run F). Only
    // takes effect when the database is created; an existing one keeps its page size.
    conn.pragma_update(None, "page_size", 512)
        .db("set page size", db_path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .db("enable WAL", db_path)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // WAL can be refused on filesystems without shared memory support;
        // the journal still works (FULL sync keeps it safe), just slower.
        log::warn!(target: "journal", "database {} refused WAL, running in {mode} mode", db_path.display());
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .db("set synchronous=FULL", db_path)?;
    conn.pragma_update(None, "foreign_keys", true)
        .db("enable foreign keys", db_path)?;
    Ok(conn)
}

/// Creates or checks the schema.
pub(crate) fn migrate(conn: &mut Connection, db_path: &Path) -> Result<()> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .db("read schema version", db_path)?;
    match version {
        0 => {
            let tx = conn.transaction().db("begin schema creation", db_path)?;
            tx.execute_batch(SCHEMA_V1).db("create schema", db_path)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .db("write schema version", db_path)?;
            tx.commit().db("commit schema", db_path)?;
            log::info!(target: "journal", "created schema v{SCHEMA_VERSION} in {}", db_path.display());
            Ok(())
        }
        SCHEMA_VERSION => Ok(()),
        found => Err(JournalError::UnsupportedSchema {
            path: db_path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        }),
    }?;
    // Tables added after v1 that no older table depends on are created by the module that owns
    // them, with `CREATE TABLE IF NOT EXISTS`, in one transaction: an existing database gains them
    // on the next open and `user_version` changes only when an existing table changes.
    let tx = conn.transaction().db("begin additive schema", db_path)?;
    for (owner, sql) in ADDITIVE_SCHEMA {
        tx.execute_batch(sql).db(owner, db_path)?;
    }
    tx.commit().db("commit additive schema", db_path)
}

/// `(what, CREATE TABLE IF NOT EXISTS ...)` of each module that owns tables beyond v1.
const ADDITIVE_SCHEMA: &[(&str, &str)] = &[
    ("create outbox tables", crate::outbox::SCHEMA),
    ("create stitches table", crate::stitch_store::SCHEMA),
    ("create schedule tables", crate::schedule_cache::SCHEMA),
    ("create uploads table", crate::upload_store::SCHEMA),
    ("create evictions table", crate::retention::SCHEMA),
    ("create signal_stretches table", crate::signal_report::SCHEMA),
];

/// Appends to `state_log` and prunes it to the newest `keep` rows.
///
/// Row ids only grow (SQLite picks max(id)+1 and the newest row is never the
/// one pruned), so pruning is a primary-key range delete that usually
/// removes a single row.
pub(crate) fn log_state(
    conn: &Connection,
    db_path: &Path,
    keep: i64,
    at_ms: i64,
    recording_id: Option<&str>,
    state: &str,
    detail: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO state_log (at_ms, recording_id, state, detail) VALUES (?1, ?2, ?3, ?4)",
        params![at_ms, recording_id, state, detail],
    )
    .db("append state log", db_path)?;
    let id = conn.last_insert_rowid();
    conn.execute("DELETE FROM state_log WHERE id <= ?1", params![id - keep])
        .db("prune state log", db_path)?;
    Ok(())
}

/// Column list matching [`segment_from_row`].
pub(crate) const SEGMENT_COLUMNS: &str = "s.id, s.recording_id, p.seq, s.seq, s.path, s.bytes,
    s.duration_ns, s.first_pts_ns, s.last_pts_ns, s.sha256, s.audio_peak_db, s.audio_rms_db,
    s.state, s.recovered, s.committed_at_ms";

/// Maps a row selected with [`SEGMENT_COLUMNS`] from
/// `segments s JOIN parts p ON p.id = s.part_id`.
pub(crate) fn segment_from_row(media_dir: &Path, row: &Row<'_>) -> rusqlite::Result<SegmentRow> {
    let path: String = row.get(4)?;
    Ok(SegmentRow {
        id: row.get(0)?,
        recording_id: row.get(1)?,
        part_seq: row.get(2)?,
        seq: row.get(3)?,
        abs_path: media_dir.join(&path),
        path,
        bytes: row.get(5)?,
        duration_ns: row.get(6)?,
        first_pts_ns: row.get(7)?,
        last_pts_ns: row.get(8)?,
        sha256: row.get(9)?,
        audio_peak_db: row.get(10)?,
        audio_rms_db: row.get(11)?,
        state: row.get(12)?,
        recovered: row.get(13)?,
        committed_at_ms: row.get(14)?,
    })
}

/// Highest segment sequence number used by a recording so far (0 if none).
pub(crate) fn max_segment_seq(
    conn: &Connection,
    db_path: &Path,
    recording_id: &str,
) -> Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM segments WHERE recording_id = ?1",
        [recording_id],
        |r| r.get(0),
    )
    .db("read last segment number", db_path)
}

/// The state of a recording, if it exists.
pub(crate) fn recording_state(
    conn: &Connection,
    db_path: &Path,
    recording_id: &str,
) -> Result<Option<crate::model::RecordingState>> {
    conn.query_row(
        "SELECT state FROM recordings WHERE id = ?1",
        [recording_id],
        |r| r.get(0),
    )
    .optional()
    .db("read recording state", db_path)
}

/// Paths and settings every piece of the journal needs, shared by the main
/// handle, the writers and recovery.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub media_dir: PathBuf,
    pub db_path: PathBuf,
    pub state_log_keep: i64,
}

impl Ctx {
    /// Logs to `state_log` through `conn`.
    pub fn log_state(
        &self,
        conn: &Connection,
        at_ms: i64,
        recording_id: Option<&str>,
        state: &str,
        detail: &str,
    ) -> Result<()> {
        log_state(
            conn,
            &self.db_path,
            self.state_log_keep,
            at_ms,
            recording_id,
            state,
            detail,
        )
    }
}
