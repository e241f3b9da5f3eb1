//! The upload job store: one row per final recording that owes an upload, with the target it
//! goes to, the endpoint it is on, and the target's own progress (the server's job or upload
//! id, chunks or parts confirmed), so an upload interrupted by a crash, a power cut or a dead
//! network continues from what the server confirmed, never from byte 0. It lives in the journal
//! database next to the outbox; what the progress means and how it is sent is the
//! `lectern-upload` crate's business.
//!
//! # Rules
//!
//! - **Exactly once per recording**: `recording_id` is the primary key. [`UploadStore::create`]
//!   of a recording that already has a job changes nothing ([`Created::Exists`]); a `done` job
//!   is never sent again.
//! - **States**: `queued` (nothing confirmed yet, or waiting for its start time) → `active`
//!   (some progress persisted) → `done` (the target confirmed the whole upload), or `parked`
//!   (refused for good, with the reason, for an operator; [`UploadStore::retry`] queues it
//!   again). A parked job keeps its media: nothing here deletes files.
//! - **Progress is written before it is relied on**: every step's new progress is committed
//!   ([`UploadStore::save_progress`]) before the next step starts, in one transaction with
//!   the byte counters. A cut loses at most the step that was in flight.
//! - **Counters**: `bytes_confirmed` is what the server holds (from the target's progress);
//!   `bytes_sent` counts every byte put on the wire, re-sends included, so re-sent bytes are
//!   `bytes_sent − bytes_confirmed` once a job is done.
//!
//! # Schema (additive, created by [`SCHEMA`])
//!
//! `uploads(recording_id PK, target, spec, endpoint NULL, state, progress NULL, bytes_total,
//! bytes_confirmed, bytes_sent, attempts, last_error NULL, not_before_ms, created_at_ms,
//! started_at_ms NULL, done_at_ms NULL, remote_ref NULL, endpoint_log)`.
//!
//! `endpoint_log` is a JSON array of `{endpoint, at_ms, why}`, one entry per endpoint the job
//! was moved to, so the journal says which endpoint got each recording and why it moved.
//!
//! Each [`UploadStore`] has its own connection (the main loop creates jobs, upload workers
//! advance them); writes take the write lock up front (`BEGIN IMMEDIATE`), as the outbox does.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::error::{DbContext, Result};

/// The uploads table; run by the journal's migration on every open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    recording_id    TEXT PRIMARY KEY NOT NULL,
    target          TEXT NOT NULL,
    spec            TEXT NOT NULL,
    endpoint        TEXT,
    state           TEXT NOT NULL CHECK (state IN ('queued', 'active', 'parked', 'done')),
    progress        TEXT,
    bytes_total     INTEGER NOT NULL,
    bytes_confirmed INTEGER NOT NULL DEFAULT 0,
    bytes_sent      INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    not_before_ms   INTEGER NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER,
    done_at_ms      INTEGER,
    remote_ref      TEXT,
    endpoint_log    TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS uploads_pending ON uploads(state, not_before_ms) WHERE state IN ('queued', 'active');
";

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    Queued,
    Active,
    Parked,
    Done,
}

impl UploadState {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            UploadState::Queued => "queued",
            UploadState::Active => "active",
            UploadState::Parked => "parked",
            UploadState::Done => "done",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<UploadState> {
        Ok(match s {
            "queued" => UploadState::Queued,
            "active" => UploadState::Active,
            "parked" => UploadState::Parked,
            "done" => UploadState::Done,
            other => return Err(rusqlite::Error::InvalidColumnType(4, format!("upload state {other:?}"), rusqlite::types::Type::Text)),
        })
    }
}

/// A job to create.
#[derive(Debug, Clone, Copy)]
pub struct NewUpload<'a> {
    pub recording_id: &'a str,
    /// The configured target's name.
    pub target: &'a str,
    /// The caller's serialised description of what to upload.
    pub spec: &'a str,
    pub bytes_total: u64,
    /// Not before this time (the random start delay).
    pub not_before_ms: i64,
}

/// What [`UploadStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    Added,
    /// The recording already has a job, in this state.
    Exists(UploadState),
}

/// One endpoint move of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointMove {
    pub endpoint: String,
    pub at_ms: i64,
    pub why: String,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub recording_id: String,
    pub target: String,
    pub spec: String,
    pub endpoint: Option<String>,
    pub state: UploadState,
    pub progress: Option<String>,
    pub bytes_total: u64,
    pub bytes_confirmed: u64,
    pub bytes_sent: u64,
    /// Failed attempts since the last success or retry.
    pub attempts: i64,
    pub last_error: Option<String>,
    pub not_before_ms: i64,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub done_at_ms: Option<i64>,
    pub remote_ref: Option<String>,
    pub endpoint_log: Vec<EndpointMove>,
}

const COLUMNS: &str = "recording_id, target, spec, endpoint, state, progress, bytes_total, bytes_confirmed, bytes_sent, \
    attempts, last_error, not_before_ms, created_at_ms, started_at_ms, done_at_ms, remote_ref, endpoint_log";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    let state: String = r.get(4)?;
    let log: String = r.get(16)?;
    Ok(UploadRow {
        recording_id: r.get(0)?,
        target: r.get(1)?,
        spec: r.get(2)?,
        endpoint: r.get(3)?,
        state: UploadState::parse(&state)?,
        progress: r.get(5)?,
        bytes_total: r.get::<_, i64>(6)? as u64,
        bytes_confirmed: r.get::<_, i64>(7)? as u64,
        bytes_sent: r.get::<_, i64>(8)? as u64,
        attempts: r.get(9)?,
        last_error: r.get(10)?,
        not_before_ms: r.get(11)?,
        created_at_ms: r.get(12)?,
        started_at_ms: r.get(13)?,
        done_at_ms: r.get(14)?,
        remote_ref: r.get(15)?,
        // A log that does not parse is shown empty rather than hiding the job.
        endpoint_log: serde_json::from_str(&log).unwrap_or_default(),
    })
}

/// Counts per state, for `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UploadCounts {
    pub queued: i64,
    pub active: i64,
    pub parked: i64,
    pub done: i64,
    /// Bytes not yet confirmed by a server, over queued and active jobs.
    pub bytes_pending: u64,
}

/// The job store; see the module doc.
pub struct UploadStore {
    conn: Connection,
    db_path: PathBuf,
}

impl std::fmt::Debug for UploadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStore").field("db_path", &self.db_path).finish()
    }
}

impl UploadStore {
    /// Opens the store in the journal database at `db_path` (`MEDIA/lectern.db`).
    pub fn open(db_path: &Path) -> Result<UploadStore> {
        let mut conn = db::connect(db_path)?;
        db::migrate(&mut conn, db_path)?;
        Ok(UploadStore { conn, db_path: db_path.to_path_buf() })
    }

    /// Creates the job of a recording unless it has one.
    pub fn create(&mut self, u: &NewUpload<'_>, now_ms: i64) -> Result<Created> {
        let p = &self.db_path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).db("begin upload create", p)?;
        let existing: Option<String> = tx
            .query_row("SELECT state FROM uploads WHERE recording_id = ?1", [u.recording_id], |r| r.get(0))
            .optional()
            .db("look up upload", p)?;
        if let Some(s) = existing {
            return Ok(Created::Exists(UploadState::parse(&s).db("read upload state", p)?));
        }
        tx.execute(
            "INSERT INTO uploads (recording_id, target, spec, state, bytes_total, not_before_ms, created_at_ms)
             VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6)",
            params![u.recording_id, u.target, u.spec, u.bytes_total as i64, u.not_before_ms, now_ms],
        )
        .db("insert upload", p)?;
        tx.commit().db("commit upload create", p)?;
        Ok(Created::Added)
    }

    /// One job.
    pub fn get(&self, recording_id: &str) -> Result<Option<UploadRow>> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM uploads WHERE recording_id = ?1"), [recording_id], row)
            .optional()
            .db("read upload", &self.db_path)
    }

    /// Jobs, newest first, at most `limit`.
    pub fn list(&self, limit: usize) -> Result<Vec<UploadRow>> {
        self.select("1 ORDER BY created_at_ms DESC, recording_id DESC LIMIT ?1", params![limit as i64])
    }

    /// Queued and active jobs whose time has come, oldest first, at most `limit`.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<UploadRow>> {
        self.select(
            "state IN ('queued', 'active') AND not_before_ms <= ?1 ORDER BY created_at_ms, recording_id LIMIT ?2",
            params![now_ms, limit as i64],
        )
    }

    /// The earliest `not_before_ms` of a queued or active job (when a worker should look again).
    pub fn next_due_ms(&self) -> Result<Option<i64>> {
        self.conn
            .query_row("SELECT MIN(not_before_ms) FROM uploads WHERE state IN ('queued', 'active')", [], |r| r.get(0))
            .db("read next upload time", &self.db_path)
    }

    fn select(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<UploadRow>> {
        let p = &self.db_path;
        let mut stmt = self.conn.prepare_cached(&format!("SELECT {COLUMNS} FROM uploads WHERE {filter}")).db("prepare upload query", p)?;
        let rows = stmt.query_map(args, row).db("query uploads", p)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db("read uploads", p)
    }

    /// Queued or active jobs created before `before_ms` (the backlog), whatever their number.
    pub fn pending_created_before(&self, before_ms: i64) -> Result<i64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM uploads WHERE state IN ('queued', 'active') AND created_at_ms < ?1", [before_ms], |r| r.get(0))
            .db("count pending uploads", &self.db_path)
    }

    /// Recordings whose jobs were confirmed at or after `since_ms`.
    pub fn done_since(&self, since_ms: i64) -> Result<Vec<String>> {
        let p = &self.db_path;
        let mut stmt = self.conn.prepare_cached("SELECT recording_id FROM uploads WHERE state = 'done' AND done_at_ms >= ?1").db("prepare done uploads", p)?;
        let rows = stmt.query_map([since_ms], |r| r.get(0)).db("query done uploads", p)?;
        rows.collect::<rusqlite::Result<Vec<String>>>().db("read done uploads", p)
    }

    /// Counts per state.
    pub fn counts(&self) -> Result<UploadCounts> {
        let p = &self.db_path;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*), COALESCE(SUM(bytes_total - bytes_confirmed), 0) FROM uploads GROUP BY state")
            .db("prepare upload counts", p)?;
        let mut c = UploadCounts::default();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))).db("count uploads", p)?;
        for r in rows {
            let (state, n, pending) = r.db("read upload counts", p)?;
            match state.as_str() {
                "queued" => c.queued = n,
                "active" => c.active = n,
                "parked" => c.parked = n,
                _ => c.done = n,
            }
            if state == "queued" || state == "active" {
                c.bytes_pending += pending.max(0) as u64;
            }
        }
        Ok(c)
    }

    /// Commits one step's progress: the target's new progress on `endpoint`, the bytes the
    /// server now confirms and the bytes this step put on the wire. Clears the failure count.
    /// Returns false (and changes nothing) when the job is not queued or active any more.
    pub fn save_progress(&mut self, recording_id: &str, endpoint: &str, progress: &str, bytes_confirmed: u64, sent: u64, now_ms: i64) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE uploads SET state = 'active', endpoint = ?2, progress = ?3, bytes_confirmed = ?4,
                    bytes_sent = bytes_sent + ?5, attempts = 0, last_error = NULL,
                    started_at_ms = COALESCE(started_at_ms, ?6)
                 WHERE recording_id = ?1 AND state IN ('queued', 'active')",
                params![recording_id, endpoint, progress, bytes_confirmed as i64, sent as i64, now_ms],
            )
            .db("save upload progress", &self.db_path)?;
        Ok(n == 1)
    }

    /// A worker takes the job up for the first time: sets `started_at_ms`. Returns false when it
    /// had been started before (so "upload started" is reported once per job, ever).
    pub fn mark_started(&mut self, recording_id: &str, now_ms: i64) -> Result<bool> {
        let n = self
            .conn
            .execute("UPDATE uploads SET started_at_ms = ?2 WHERE recording_id = ?1 AND started_at_ms IS NULL", params![recording_id, now_ms])
            .db("mark upload started", &self.db_path)?;
        Ok(n == 1)
    }

    /// Counts bytes put on the wire that no progress commit counted: a step that then failed
    /// (they count as re-sent), or steps between checkpoints when the job stops. Nothing is
    /// written for zero bytes (a write is a commit, which flushes the card).
    pub fn add_sent(&mut self, recording_id: &str, sent: u64) -> Result<()> {
        if sent == 0 {
            return Ok(());
        }
        self.conn
            .execute("UPDATE uploads SET bytes_sent = bytes_sent + ?2 WHERE recording_id = ?1", params![recording_id, sent as i64])
            .db("count upload bytes", &self.db_path)
            .map(drop)
    }

    /// A step failed and will be retried at `not_before_ms`.
    pub fn record_failure(&mut self, recording_id: &str, error: &str, not_before_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE uploads SET attempts = attempts + 1, last_error = ?2, not_before_ms = ?3
                 WHERE recording_id = ?1 AND state IN ('queued', 'active')",
                params![recording_id, error, not_before_ms],
            )
            .db("record upload failure", &self.db_path)
            .map(drop)
    }

    /// Moves a job to another endpoint: its progress is dropped when it cannot be resumed there
    /// (`keep_progress = false`), and the move is appended to `endpoint_log`.
    pub fn move_endpoint(&mut self, recording_id: &str, endpoint: &str, why: &str, keep_progress: bool, now_ms: i64) -> Result<()> {
        let p = &self.db_path;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).db("begin upload move", p)?;
        let log: Option<String> =
            tx.query_row("SELECT endpoint_log FROM uploads WHERE recording_id = ?1", [recording_id], |r| r.get(0)).optional().db("read upload endpoint log", p)?;
        let Some(log) = log else { return Ok(()) };
        let mut log: Vec<EndpointMove> = serde_json::from_str(&log).unwrap_or_default();
        log.push(EndpointMove { endpoint: endpoint.to_owned(), at_ms: now_ms, why: why.to_owned() });
        // Bounded: a job flapping between endpoints for weeks keeps its newest moves.
        if log.len() > 64 {
            log.drain(..log.len() - 64);
        }
        let log = serde_json::to_string(&log).expect("endpoint moves serialise");
        let sql = if keep_progress {
            "UPDATE uploads SET endpoint = ?2, endpoint_log = ?3 WHERE recording_id = ?1"
        } else {
            "UPDATE uploads SET endpoint = ?2, endpoint_log = ?3, progress = NULL, bytes_confirmed = 0,
                state = CASE WHEN state = 'active' THEN 'queued' ELSE state END
             WHERE recording_id = ?1"
        };
        tx.execute(sql, params![recording_id, endpoint, log]).db("move upload", p)?;
        tx.commit().db("commit upload move", p)
    }

    /// Parks a job: refused for good; the reason is kept for `status` and the operator.
    pub fn park(&mut self, recording_id: &str, reason: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE uploads SET state = 'parked', last_error = ?2 WHERE recording_id = ?1 AND state <> 'done'",
                params![recording_id, reason],
            )
            .db("park upload", &self.db_path)
            .map(drop)
    }

    /// Queues a parked or waiting job again, due now (`lectern uploads retry`). Progress is
    /// kept: the target asks the server where it stands. Returns the state it was in.
    pub fn retry(&mut self, recording_id: &str, now_ms: i64) -> Result<Option<UploadState>> {
        let before = self.get(recording_id)?.map(|r| r.state);
        self.conn
            .execute(
                "UPDATE uploads SET state = CASE WHEN progress IS NULL THEN 'queued' ELSE 'active' END,
                    not_before_ms = ?2, attempts = 0
                 WHERE recording_id = ?1 AND state <> 'done'",
                params![recording_id, now_ms],
            )
            .db("retry upload", &self.db_path)?;
        Ok(before)
    }

    /// The target confirmed the whole upload. Returns false when the job was not pending.
    pub fn complete(&mut self, recording_id: &str, endpoint: &str, progress: &str, remote_ref: &str, sent: u64, now_ms: i64) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE uploads SET state = 'done', endpoint = ?2, progress = ?3, remote_ref = ?4,
                    bytes_confirmed = bytes_total, bytes_sent = bytes_sent + ?5, attempts = 0, last_error = NULL,
                    started_at_ms = COALESCE(started_at_ms, ?6), done_at_ms = ?6
                 WHERE recording_id = ?1 AND state IN ('queued', 'active')",
                params![recording_id, endpoint, progress, remote_ref, sent as i64, now_ms],
            )
            .db("complete upload", &self.db_path)?;
        Ok(n == 1)
    }
}

impl crate::Journal {
    /// Writes where a recording was uploaded into its local manifest (`upload`: target,
    /// endpoint, the server's name for it, when, and every endpoint move), so the manifest the
    /// card keeps after retention evicted the media says where the recording went. The file is
    /// replaced atomically (temp file, fsync, rename, directory fsync); a missing manifest or a
    /// job that is not done changes nothing. Returns whether the manifest was rewritten.
    pub fn record_upload_in_manifest(&mut self, recording_id: &str) -> Result<bool> {
        use crate::error::IoContext;
        use std::io::Write;
        let store = UploadStore::open(&self.db_path())?;
        let Some(job) = store.get(recording_id)?.filter(|j| j.state == UploadState::Done) else { return Ok(false) };
        let Some(rel) = self.stitch_status(recording_id)?.and_then(|s| s.manifest_path) else { return Ok(false) };
        let path = self.media_dir().join(&rel);
        let Ok(text) = std::fs::read(&path) else { return Ok(false) };
        let Ok(mut manifest) = serde_json::from_slice::<serde_json::Value>(&text) else {
            log::warn!(target: "journal", "recording {recording_id}: manifest {} is not JSON; upload not recorded in it", path.display());
            return Ok(false);
        };
        let at = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        manifest["upload"] = serde_json::json!({
            "target": job.target,
            "endpoint": job.endpoint,
            "remote_ref": job.remote_ref,
            "confirmed_at": job.done_at_ms.and_then(at),
            "bytes": job.bytes_total,
            "bytes_sent": job.bytes_sent,
            "endpoint_log": job.endpoint_log.iter().map(|m| serde_json::json!({ "endpoint": m.endpoint, "at": at(m.at_ms), "why": m.why })).collect::<Vec<_>>(),
        });
        let tmp = path.with_extension("json.partial");
        {
            let mut f = std::fs::File::create(&tmp).io("create manifest", &tmp)?;
            let mut out = serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises");
            out.push(b'\n');
            f.write_all(&out).io("write manifest", &tmp)?;
            f.sync_all().io("fsync manifest", &tmp)?;
        }
        std::fs::rename(&tmp, &path).io("rename manifest", &path)?;
        if let Some(dir) = path.parent() {
            crate::fsio::fsync_dir(dir)?;
        }
        Ok(true)
    }
}
