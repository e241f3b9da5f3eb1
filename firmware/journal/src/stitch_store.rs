//! Stitch bookkeeping: which recordings are *final* and owe a stitched file, the files
//! themselves (created, made durable and renamed here, because the journal is the only writer
//! under the media directory), and the manifest beside each stitched file.
//!
//! A recording becomes final when it completes, or when it stays interrupted and the daemon
//! decides not to resume it. [`Journal::request_stitch`] then inserts a `pending` row. The
//! stitcher itself (crate `lectern-stitch`) only writes bytes into the file a [`StitchJob`] hands
//! it; the job commits the result:
//!
//! 1. `begin`: `recordings/<id>/stitched.mp4.partial` is created (truncated) and `attempts` counts
//!    up in the row, so a stitch that crashes the box every time gives up after
//!    [`MAX_STITCH_ATTEMPTS`] and is marked `failed` instead of looping forever.
//! 2. the stitcher writes; the job fsyncs the file,
//! 3. the manifest is written to `manifest.json.partial` and fsynced,
//! 4. both are renamed to `<id>.mp4` and `<id>.manifest.json`, the recording directory is
//!    fsynced,
//! 5. the row becomes `done` with the file's size, SHA-256 and duration.
//!
//! A cut anywhere before 5 leaves the row `pending`, so the next start stitches again from the
//! segments, which nothing here ever modifies or deletes (only the retention policy after upload
//! may). A cut between 4 and 5 leaves finished files that the rerun simply replaces.
//!
//! Resuming an interrupted recording after it was declared final (its event was extended, say)
//! reopens it: [`Journal::start_recording`] deletes the stitch row, and a job still running for
//! it finds its row gone at commit and discards its output.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::{json, Value};

use crate::db::{self, Ctx};
use crate::error::{DbContext, IoContext, JournalError, Result};
use crate::fsio::{fsync_dir, RECORDINGS_DIR};
use crate::journal::Journal;
use crate::model::{PartState, RecordingSummary, SegmentRow, SegmentState};

/// The table, created by [`crate::db::migrate`] on every open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stitches (
    recording_id    TEXT PRIMARY KEY NOT NULL REFERENCES recordings(id),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
    requested_at_ms INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    finished_at_ms  INTEGER,
    path            TEXT,
    manifest_path   TEXT,
    bytes           INTEGER,
    sha256          TEXT,
    duration_ns     INTEGER,
    error           TEXT
);
";

/// A stitch that was started this many times without finishing is marked failed.
pub const MAX_STITCH_ATTEMPTS: i64 = 3;

/// Where a recording's stitch stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StitchRow {
    pub recording_id: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    pub requested_at_ms: i64,
    pub attempts: i64,
    pub finished_at_ms: Option<i64>,
    /// Relative to the media directory.
    pub path: Option<String>,
    pub manifest_path: Option<String>,
    pub bytes: Option<u64>,
    pub sha256: Option<String>,
    pub duration_ns: Option<u64>,
    pub error: Option<String>,
}

/// One part of a recording as the stitcher needs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StitchPart {
    pub seq: u32,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
    pub state: PartState,
    pub end_reason: Option<String>,
    pub encoder: String,
    /// Committed segments only, in sequence.
    pub segments: Vec<SegmentRow>,
}

impl StitchPart {
    /// True when the part did not end normally, so its last segment may end mid-frame.
    pub fn ended_abruptly(&self) -> bool {
        self.state != PartState::Closed
    }
}

/// What the stitcher reports back, for the row and the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StitchedInfo {
    pub bytes: u64,
    pub sha256: String,
    pub duration_ns: u64,
    pub video_frames: u64,
    pub audio_frames: u64,
    /// Per part (by `seq`): where it starts and ends in the stitched file's timeline.
    pub part_spans_ns: Vec<(u32, u64, u64)>,
}

/// One stitch in progress: `Send`, with its own connection, so it can run on a worker thread.
pub struct StitchJob {
    conn: Connection,
    ctx: Ctx,
    pub recording: RecordingSummary,
    pub parts: Vec<StitchPart>,
    partial_path: PathBuf,
    file: Option<File>,
}

impl std::fmt::Debug for StitchJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StitchJob")
            .field("recording", &self.recording.id)
            .field("parts", &self.parts.len())
            .finish_non_exhaustive()
    }
}

fn rel_dir(recording_id: &str) -> String {
    format!("{RECORDINGS_DIR}/{recording_id}")
}

/// Relative path of a recording's stitched file.
pub fn stitched_rel(recording_id: &str) -> String {
    format!("{}/{recording_id}.mp4", rel_dir(recording_id))
}

/// Relative path of a recording's manifest.
pub fn manifest_rel(recording_id: &str) -> String {
    format!("{}/{recording_id}.manifest.json", rel_dir(recording_id))
}

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<StitchRow> {
    Ok(StitchRow {
        recording_id: r.get(0)?,
        state: r.get(1)?,
        requested_at_ms: r.get(2)?,
        attempts: r.get(3)?,
        finished_at_ms: r.get(4)?,
        path: r.get(5)?,
        manifest_path: r.get(6)?,
        bytes: r.get(7)?,
        sha256: r.get(8)?,
        duration_ns: r.get(9)?,
        error: r.get(10)?,
    })
}

const ROW_COLUMNS: &str = "recording_id, state, requested_at_ms, attempts, finished_at_ms, path,
    manifest_path, bytes, sha256, duration_ns, error";

/// Marks a stitch failed, with the reason, through `conn`.
fn mark_failed(conn: &Connection, ctx: &Ctx, id: &str, error: &str, now_ms: i64) -> Result<()> {
    conn.execute(
        "UPDATE stitches SET state = 'failed', finished_at_ms = ?2, error = ?3 WHERE recording_id = ?1",
        params![id, now_ms, error],
    )
    .db("mark stitch failed", &ctx.db_path)?;
    ctx.log_state(conn, now_ms, Some(id), "stitch-failed", error)?;
    log::error!(target: "journal", "recording {id}: stitch failed: {error}");
    Ok(())
}

impl Journal {
    /// Declares a recording final: it owes a stitched file. Returns false if it already had a
    /// stitch row. Recordings that ended `failed` hold no media and are refused.
    pub fn request_stitch(&mut self, recording_id: &str, now_ms: i64) -> Result<bool> {
        let Some(rec) = self.recording(recording_id)? else {
            return Err(JournalError::UnknownRecording { id: recording_id.to_string() });
        };
        if rec.segments == 0 {
            return Ok(false);
        }
        let added = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO stitches (recording_id, state, requested_at_ms) VALUES (?1, 'pending', ?2)",
                params![recording_id, now_ms],
            )
            .db("request stitch", &self.ctx.db_path)?;
        if added == 1 {
            self.log_state(Some(recording_id), "stitch-pending", &format!("{} parts, {} segments", rec.parts, rec.segments), now_ms)?;
        }
        Ok(added == 1)
    }

    /// The stitch row of a recording, if it is final.
    pub fn stitch_status(&self, recording_id: &str) -> Result<Option<StitchRow>> {
        self.conn
            .query_row(&format!("SELECT {ROW_COLUMNS} FROM stitches WHERE recording_id = ?1"), [recording_id], row_from)
            .optional()
            .db("query stitch", &self.ctx.db_path)
    }

    /// Recordings whose stitch is pending, oldest request first.
    pub fn pending_stitches(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT recording_id FROM stitches WHERE state = 'pending' ORDER BY requested_at_ms, recording_id")
            .db("prepare pending stitches", &self.ctx.db_path)?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .db("query pending stitches", &self.ctx.db_path)?;
        Ok(rows)
    }

    /// Interrupted recordings that have media and are not final yet: candidates for resuming,
    /// or for being declared final.
    pub fn interrupted_not_final(&self) -> Result<Vec<RecordingSummary>> {
        // The daemon asks this at every idle tick: only the interrupted, not yet final
        // recordings are aggregated, never the whole segment table.
        let cond = "r.state = 'interrupted' AND NOT EXISTS (SELECT 1 FROM stitches f WHERE f.recording_id = r.id)";
        Ok(self.query_recordings(None, cond)?.into_iter().filter(|r| r.segments > 0).collect())
    }

    /// Removes a recording's stitch row because it is being resumed.
    pub(crate) fn reopen_stitch(&mut self, recording_id: &str, now_ms: i64) -> Result<()> {
        let removed = self
            .conn
            .execute("DELETE FROM stitches WHERE recording_id = ?1", [recording_id])
            .db("reopen stitch", &self.ctx.db_path)?;
        if removed == 1 {
            self.log_state(Some(recording_id), "stitch-reopened", "resumed after it was declared final; will stitch again", now_ms)?;
        }
        Ok(())
    }

    /// Whether the stitched file of `recording_id` fits above the reserve (with the storage
    /// guard on): its committed segments' bytes, room for the manifest, plus
    /// `journal.min_free_mb` must be free.
    fn check_stitch_space(&self, recording_id: &str) -> Result<()> {
        let reserve = self.opts.min_free_bytes;
        if reserve == 0 {
            return Ok(());
        }
        let needed: i64 = self
            .conn
            .query_row("SELECT COALESCE(SUM(bytes), 0) FROM segments WHERE recording_id = ?1 AND state = 'committed'", [recording_id], |r| r.get(0))
            .db("sum segment bytes", &self.ctx.db_path)?;
        // The manifest (about 200 bytes a segment) and the database's growth come on top.
        let segments: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM segments WHERE recording_id = ?1 AND state = 'committed'", [recording_id], |r| r.get(0))
            .db("count segments", &self.ctx.db_path)?;
        let needed = needed.max(0) as u64 + segments.max(0) as u64 * 512 + 64 * 1024;
        let free = (self.opts.free_space.0)(&self.ctx.media_dir).io("read free space (statvfs) of", &self.ctx.media_dir)?;
        match free {
            Some(free) if free < needed.saturating_add(reserve) => Err(JournalError::StitchNeedsSpace {
                id: recording_id.to_owned(),
                path: self.ctx.media_dir.clone(),
                needed_bytes: needed,
                free_bytes: free,
                reserve_bytes: reserve,
            }),
            _ => Ok(()),
        }
    }

    /// Starts the pending stitch of `recording_id`: counts the attempt, gathers its parts and
    /// committed segments and creates the partial output file.
    pub fn stitch_job(&mut self, recording_id: &str, now_ms: i64) -> Result<StitchJob> {
        let row = self.stitch_status(recording_id)?.filter(|r| r.state == "pending");
        let Some(row) = row else {
            return Err(JournalError::StitchNotPending { id: recording_id.to_string() });
        };
        if row.attempts >= MAX_STITCH_ATTEMPTS {
            let why = format!("gave up after {} attempts that did not finish (each start after a crash counts)", row.attempts);
            mark_failed(&self.conn, &self.ctx, recording_id, &why, now_ms)?;
            return Err(JournalError::StitchNotPending { id: recording_id.to_string() });
        }
        self.check_stitch_space(recording_id)?;
        self.conn
            .execute("UPDATE stitches SET attempts = attempts + 1 WHERE recording_id = ?1", [recording_id])
            .db("count stitch attempt", &self.ctx.db_path)?;
        let recording = self
            .recording(recording_id)?
            .ok_or_else(|| JournalError::UnknownRecording { id: recording_id.to_string() })?;
        let segments = self.segments(recording_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, started_at_ms, ended_at_ms, state, end_reason, encoder FROM parts
                 WHERE recording_id = ?1 ORDER BY seq",
            )
            .db("prepare parts query", &self.ctx.db_path)?;
        let mut parts = stmt
            .query_map([recording_id], |r| {
                Ok(StitchPart {
                    seq: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    ended_at_ms: r.get(2)?,
                    state: r.get(3)?,
                    end_reason: r.get(4)?,
                    encoder: r.get(5)?,
                    segments: Vec::new(),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .db("query parts", &self.ctx.db_path)?;
        drop(stmt);
        for seg in segments.into_iter().filter(|s| s.state == SegmentState::Committed) {
            if let Some(part) = parts.iter_mut().find(|p| p.seq == seg.part_seq) {
                part.segments.push(seg);
            }
        }
        parts.retain(|p| !p.segments.is_empty());
        let partial_path = self.ctx.media_dir.join(rel_dir(recording_id)).join("stitched.mp4.partial");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial_path)
            .io("create stitched file", &partial_path)?;
        log::info!(target: "journal", "recording {recording_id}: stitching {} parts (attempt {})", parts.len(), row.attempts + 1);
        Ok(StitchJob {
            conn: db::connect(&self.ctx.db_path)?,
            ctx: self.ctx.clone(),
            recording,
            parts,
            partial_path,
            file: Some(file),
        })
    }
}

impl StitchJob {
    /// The file the stitcher writes into (positioned at 0, empty).
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("the file lives until commit or fail")
    }

    /// The media directory (segment rows carry absolute paths already).
    pub fn media_dir(&self) -> &Path {
        &self.ctx.media_dir
    }

    /// Commits the stitched file and its manifest (see the module doc for the order).
    /// `device` describes the box (agent name, host, board, software version) for the manifest.
    pub fn commit(mut self, info: &StitchedInfo, device: Value, now_ms: i64) -> Result<StitchRow> {
        let id = self.recording.id.clone();
        let file = self.file.take().expect("commit once");
        file.sync_all().io("fsync stitched file", &self.partial_path)?;
        drop(file);
        let dir = self.ctx.media_dir.join(rel_dir(&id));
        let mut manifest = manifest(&self.recording, &self.parts, info, device, now_ms);
        let stretches = crate::signal_report::load(&self.conn, &self.ctx, &id)?;
        let scheduled = self.recording.kind == crate::RecordingKind::Scheduled;
        manifest["quality"] = crate::signal_report::quality_json(&stretches, &self.parts, scheduled);
        let manifest_partial = dir.join("manifest.json.partial");
        {
            let mut f = File::create(&manifest_partial).io("create manifest", &manifest_partial)?;
            let mut text = serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises");
            text.push(b'\n');
            f.write_all(&text).io("write manifest", &manifest_partial)?;
            f.sync_all().io("fsync manifest", &manifest_partial)?;
        }
        let (out_rel, manifest_rel) = (stitched_rel(&id), manifest_rel(&id));
        let out = self.ctx.media_dir.join(&out_rel);
        std::fs::rename(&self.partial_path, &out).io("rename stitched file", &out)?;
        let manifest_path = self.ctx.media_dir.join(&manifest_rel);
        std::fs::rename(&manifest_partial, &manifest_path).io("rename manifest", &manifest_path)?;
        fsync_dir(&dir)?;
        let changed = self
            .conn
            .execute(
                "UPDATE stitches SET state = 'done', finished_at_ms = ?2, path = ?3, manifest_path = ?4,
                     bytes = ?5, sha256 = ?6, duration_ns = ?7, error = NULL
                 WHERE recording_id = ?1 AND state = 'pending'",
                params![id, now_ms, out_rel, manifest_rel, info.bytes, info.sha256, i64::try_from(info.duration_ns).ok()],
            )
            .db("commit stitch", &self.ctx.db_path)?;
        if changed != 1 {
            // Reopened (resumed) while we stitched: the files are from an older state of the
            // recording and will be replaced by the next stitch.
            log::warn!(target: "journal", "recording {id}: reopened while stitching; result kept until the next stitch replaces it");
            return Err(JournalError::StitchNotPending { id });
        }
        let detail = format!("{} bytes, {:.1} s, sha256 {}", info.bytes, info.duration_ns as f64 / 1e9, info.sha256);
        self.ctx.log_state(&self.conn, now_ms, Some(&id), "stitched", &detail)?;
        log::info!(target: "journal", "recording {id}: stitched {out_rel} ({detail})");
        self.conn
            .query_row(&format!("SELECT {ROW_COLUMNS} FROM stitches WHERE recording_id = ?1"), [&id], row_from)
            .db("query stitch", &self.ctx.db_path)
    }

    /// Puts the stitch back for later without counting this attempt: the card ran out of space
    /// while writing (ENOSPC), which is not the recording's fault. The partial file is removed;
    /// the row stays pending.
    pub fn postpone(mut self, why: &str) -> Result<()> {
        drop(self.file.take());
        let _ = std::fs::remove_file(&self.partial_path);
        let id = self.recording.id.clone();
        self.conn
            .execute("UPDATE stitches SET attempts = MAX(attempts - 1, 0) WHERE recording_id = ?1 AND state = 'pending'", [&id])
            .db("postpone stitch", &self.ctx.db_path)?;
        log::warn!(target: "journal", "recording {id}: stitch postponed: {why}");
        Ok(())
    }

    /// Gives up on this recording's stitch (bad input the stitcher cannot use). The partial file
    /// is removed; the segments stay.
    pub fn fail(mut self, error: &str, now_ms: i64) -> Result<()> {
        drop(self.file.take());
        let _ = std::fs::remove_file(&self.partial_path);
        mark_failed(&self.conn, &self.ctx, &self.recording.id, error, now_ms)
    }
}

pub(crate) fn rfc3339(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
}

/// What caused the gap after a part, from how the part ended.
pub fn gap_cause(part: &StitchPart) -> &'static str {
    match (part.state, part.end_reason.as_deref()) {
        (PartState::Failed, _) => "device error",
        (_, Some("power")) => "power",
        (_, Some("shutdown")) => "shutdown",
        (_, Some(r)) if r.contains("crash") || r.contains("writer lost") => "crash",
        (PartState::Closed, _) => "stopped",
        _ => "interrupted",
    }
}

/// A part's last segment, when it is much shorter than a segment, holds the frames after the
/// part's last keyframe: a segment begins at each keyframe, so a stop (or power cut) just after
/// one leaves a segment of a frame or a few. The manifest says so, so nobody reads it as an empty
/// or damaged segment.
const TAIL_NOTE_BELOW_NS: u64 = 500_000_000;

fn tail_note(last_of_several: bool, duration_ns: Option<u64>) -> Option<String> {
    let d = duration_ns.filter(|&d| last_of_several && d < TAIL_NOTE_BELOW_NS)?;
    Some(format!(
        "the part's last {:.3} s: the frames after its last keyframe (a segment begins at each keyframe, and the part ended just after one)",
        d as f64 / 1e9
    ))
}

/// The manifest written beside the stitched file.
pub fn manifest(rec: &RecordingSummary, parts: &[StitchPart], info: &StitchedInfo, device: Value, now_ms: i64) -> Value {
    let span = |seq: u32| info.part_spans_ns.iter().find(|(s, _, _)| *s == seq).map(|&(_, a, b)| (a, b));
    let parts_json: Vec<Value> = parts
        .iter()
        .map(|p| {
            let (start, end) = span(p.seq).unwrap_or((0, 0));
            json!({
                "seq": p.seq,
                "started_at": rfc3339(p.started_at_ms),
                "ended_at": p.ended_at_ms.map_or(Value::Null, rfc3339),
                "state": p.state,
                "end_reason": p.end_reason,
                "encoder": p.encoder,
                "stitched_start_s": start as f64 / 1e9,
                "stitched_end_s": end as f64 / 1e9,
                "segments": p.segments.iter().enumerate().map(|(i, s)| {
                    let mut seg = json!({
                        "seq": s.seq,
                        "path": s.path,
                        "bytes": s.bytes,
                        "duration_s": s.duration_ns.map(|d| d as f64 / 1e9),
                        "sha256": s.sha256,
                        "recovered": s.recovered,
                    });
                    if let Some(note) = tail_note(i + 1 == p.segments.len() && i > 0, s.duration_ns) {
                        seg["note"] = note.into();
                    }
                    seg
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let gaps: Vec<Value> = parts
        .windows(2)
        .map(|w| {
            let (a, b) = (&w[0], &w[1]);
            let from = a.ended_at_ms.unwrap_or(b.started_at_ms);
            json!({
                "after_part": a.seq,
                "from": rfc3339(from),
                "to": rfc3339(b.started_at_ms),
                "duration_s": (b.started_at_ms - from).max(0) as f64 / 1e3,
                "cause": gap_cause(a),
                "detail": a.end_reason,
            })
        })
        .collect();
    json!({
        "manifest_version": 1,
        "recording": {
            "id": rec.id,
            "title": rec.title,
            "kind": rec.kind,
            "event_uid": rec.event_uid,
            "state": rec.state,
            "end_reason": rec.end_reason,
            "started_at": rfc3339(rec.started_at_ms),
            "ended_at": rec.ended_at_ms.map_or(Value::Null, rfc3339),
        },
        "device": device,
        "parts": parts_json,
        "gaps": gaps,
        "stitched": {
            "path": stitched_rel(&rec.id),
            "container": "mp4",
            "index_at_front": true,
            "bytes": info.bytes,
            "sha256": info.sha256,
            "duration_s": info.duration_ns as f64 / 1e9,
            "video_frames": info.video_frames,
            "audio_frames": info.audio_frames,
        },
        "generated_at": rfc3339(now_ms),
    })
}
