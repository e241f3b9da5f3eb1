//! Crash recovery: brings the index and the segment files back to the
//! commit-protocol invariant after a power cut, a process crash, or a writer
//! that was dropped without `finish`. Every step is durable on its own and
//! safe to repeat, so a crash during recovery is handled by the next run,
//! and a run with nothing to do changes nothing.
//!
//! Steps (see the crate docs for the full protocol):
//! 1. every recording still `recording`: verify its last committed segment
//!    against the row (size + SHA-256); repair it from the file or report
//!    the loss loudly;
//! 2. every `open` part: recover its `open` segments (truncate to whole TS
//!    packets, fsync, re-checksum, commit with `recovered=1`; drop rows whose
//!    file is missing or empty), then mark the part `interrupted`;
//! 3. any stray `open` segment of a part that is no longer open, likewise;
//! 4. mark the recordings from step 1 `interrupted` (reason `crash`);
//! 5. finish evictions a crash cut short (`evictions` rows without
//!    `done_at_ms`; see `retention.rs`): their files are removed and their
//!    segment rows deleted, as the eviction had decided durably before it
//!    touched a file;
//! 6. remove segment files that no row refers to, but only inside part
//!    directories the index knows — unknown directories are reported in the
//!    log and left alone, because a lost database must never turn into lost
//!    media.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::db::Ctx;
use crate::error::{DbContext, IoContext, JournalError, Result};
use crate::fsio::{self, fsync_dir, RECORDINGS_DIR};
use crate::model::validate_recording_id;
use crate::ts::{pts90k_to_ns, sha256_file, verify_ts_file};
use crate::writer::LiveParts;

/// Everything recovery did, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// One entry per change made (or per problem found and not fixable).
    pub actions: Vec<RecoveryAction>,
}

impl RecoveryReport {
    /// True if recovery found nothing to do.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

impl fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.actions.is_empty() {
            return f.write_str("recovery: nothing to do");
        }
        write!(f, "recovery: {} action(s)", self.actions.len())?;
        for action in &self.actions {
            write!(f, "\n  {action}")?;
        }
        Ok(())
    }
}

/// One recovery step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RecoveryAction {
    /// An open segment was truncated to whole packets (if needed), fsynced,
    /// re-checksummed and committed with `recovered=1`.
    SegmentRecovered {
        /// Owning recording.
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// File size found.
        bytes_before: u64,
        /// File size after truncation.
        bytes_after: u64,
    },
    /// An open segment row was deleted (with its file, if any) because no
    /// usable media was left.
    SegmentDropped {
        /// Owning recording.
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// File size found (0 if missing).
        bytes_before: u64,
        /// Why: "file missing", "file empty", "no complete packet".
        reason: String,
    },
    /// An open part was marked interrupted.
    PartInterrupted {
        /// Owning recording.
        recording_id: String,
        /// Part number.
        part_seq: u32,
        /// The reason stored (`crash` at startup).
        reason: String,
        /// Best estimate of when it ended.
        ended_at_ms: i64,
    },
    /// A recording left in `recording` was marked interrupted.
    RecordingInterrupted {
        /// Recording id.
        recording_id: String,
        /// Best estimate of when it ended.
        ended_at_ms: i64,
    },
    /// A committed segment did not match its row and was repaired from the
    /// file (truncated to whole packets, re-checksummed, `recovered=1`).
    CommittedSegmentRepaired {
        /// Owning recording.
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// Size the row claimed.
        bytes_before: u64,
        /// Size found on disk.
        file_bytes: u64,
        /// Size after repair.
        bytes_after: u64,
    },
    /// A committed segment held no whole packet any more; its row and file
    /// were removed. This leaves a gap in the recording's sequence, which is
    /// why it is reported as damage.
    CommittedSegmentDropped {
        /// Owning recording.
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// Size the row claimed.
        bytes_before: u64,
        /// Size found on disk.
        file_bytes: u64,
    },
    /// A committed segment's file is gone. The row is kept so the loss stays
    /// visible; nothing can be repaired.
    CommittedSegmentMissing {
        /// Owning recording.
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// Size the row claimed.
        bytes: u64,
    },
    /// An eviction (retention policy) that a crash cut short was finished: its
    /// remaining files were removed and its segment rows deleted.
    EvictionFinished {
        /// The evicted recording.
        recording_id: String,
        /// "retention window" or "storage low".
        why: String,
        /// Bytes of the files this run removed.
        bytes_freed: u64,
    },
    /// A segment file with no row was removed from a known part directory.
    OrphanFileRemoved {
        /// Owning recording (from the directory name).
        recording_id: String,
        /// Path relative to the media directory.
        path: String,
        /// Its size.
        bytes: u64,
    },
}

impl RecoveryAction {
    /// Short name stored as the `state` of the `state_log` row.
    pub fn kind(&self) -> &'static str {
        match self {
            RecoveryAction::SegmentRecovered { .. } => "recovery-segment-recovered",
            RecoveryAction::SegmentDropped { .. } => "recovery-segment-dropped",
            RecoveryAction::PartInterrupted { .. } => "recovery-part-interrupted",
            RecoveryAction::RecordingInterrupted { .. } => "recovery-recording-interrupted",
            RecoveryAction::CommittedSegmentRepaired { .. } => {
                "recovery-committed-segment-repaired"
            }
            RecoveryAction::CommittedSegmentDropped { .. } => "recovery-committed-segment-dropped",
            RecoveryAction::CommittedSegmentMissing { .. } => "recovery-committed-segment-missing",
            RecoveryAction::EvictionFinished { .. } => "recovery-eviction-finished",
            RecoveryAction::OrphanFileRemoved { .. } => "recovery-orphan-file-removed",
        }
    }

    /// The recording concerned.
    pub fn recording_id(&self) -> &str {
        match self {
            RecoveryAction::SegmentRecovered { recording_id, .. }
            | RecoveryAction::SegmentDropped { recording_id, .. }
            | RecoveryAction::PartInterrupted { recording_id, .. }
            | RecoveryAction::RecordingInterrupted { recording_id, .. }
            | RecoveryAction::CommittedSegmentRepaired { recording_id, .. }
            | RecoveryAction::CommittedSegmentDropped { recording_id, .. }
            | RecoveryAction::CommittedSegmentMissing { recording_id, .. }
            | RecoveryAction::EvictionFinished { recording_id, .. }
            | RecoveryAction::OrphanFileRemoved { recording_id, .. } => recording_id,
        }
    }

    /// True for actions that mean committed media was damaged: these are
    /// logged at error level, never as routine recovery.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            RecoveryAction::CommittedSegmentRepaired { .. }
                | RecoveryAction::CommittedSegmentDropped { .. }
                | RecoveryAction::CommittedSegmentMissing { .. }
        )
    }
}

impl fmt::Display for RecoveryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryAction::SegmentRecovered { recording_id, path, bytes_before, bytes_after } => write!(
                f,
                "recording {recording_id}: recovered open segment {path} ({bytes_before} -> {bytes_after} bytes)"
            ),
            RecoveryAction::SegmentDropped { recording_id, path, bytes_before, reason } => write!(
                f,
                "recording {recording_id}: dropped open segment {path} ({reason}, {bytes_before} -> 0 bytes)"
            ),
            RecoveryAction::PartInterrupted { recording_id, part_seq, reason, ended_at_ms } => write!(
                f,
                "recording {recording_id}: part {part_seq} marked interrupted ({reason}), ended at {ended_at_ms} ms"
            ),
            RecoveryAction::RecordingInterrupted { recording_id, ended_at_ms } => write!(
                f,
                "recording {recording_id}: marked interrupted (crash), ended at {ended_at_ms} ms"
            ),
            RecoveryAction::CommittedSegmentRepaired { recording_id, path, bytes_before, file_bytes, bytes_after } => write!(
                f,
                "recording {recording_id}: committed segment {path} did not match its row \
                 (row {bytes_before} bytes, file {file_bytes} bytes); repaired to {bytes_after} bytes"
            ),
            RecoveryAction::CommittedSegmentDropped { recording_id, path, bytes_before, file_bytes } => write!(
                f,
                "recording {recording_id}: committed segment {path} is CORRUPT \
                 (row {bytes_before} bytes, file {file_bytes} bytes, no whole packet); dropped -> 0 bytes"
            ),
            RecoveryAction::CommittedSegmentMissing { recording_id, path, bytes } => write!(
                f,
                "recording {recording_id}: committed segment {path} ({bytes} bytes) is MISSING from disk"
            ),
            RecoveryAction::EvictionFinished { recording_id, why, bytes_freed } => write!(
                f,
                "recording {recording_id}: finished its interrupted eviction ({why}), {bytes_freed} bytes freed"
            ),
            RecoveryAction::OrphanFileRemoved { recording_id, path, bytes } => write!(
                f,
                "recording {recording_id}: removed orphan file {path} ({bytes} -> 0 bytes)"
            ),
        }
    }
}

/// Logs an action and appends it to `state_log`.
fn record(
    conn: &Connection,
    ctx: &Ctx,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
    action: RecoveryAction,
) -> Result<()> {
    if action.is_damage() {
        log::error!(target: "journal", "{action}");
    } else {
        log::warn!(target: "journal", "{action}");
    }
    ctx.log_state(
        conn,
        now_ms,
        Some(action.recording_id()),
        action.kind(),
        &action.to_string(),
    )?;
    actions.push(action);
    Ok(())
}

/// Startup recovery over the whole index. Must run before any writer exists.
pub(crate) fn recover_all(conn: &Connection, ctx: &Ctx, now_ms: i64) -> Result<RecoveryReport> {
    let mut actions = Vec::new();
    let crashed: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT id FROM recordings WHERE state = 'recording' ORDER BY started_at_ms, id",
            )
            .db("list active recordings", &ctx.db_path)?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .db("list active recordings", &ctx.db_path)?;
        rows
    };

    // Verify first, while "last committed" still means the last segment its
    // writer committed before the crash, not one recovery is about to commit.
    for recording_id in &crashed {
        verify_last_committed(conn, ctx, recording_id, now_ms, &mut actions)?;
    }

    for part in open_parts(conn, ctx, None)? {
        recover_part(conn, ctx, &part, "crash", now_ms, &mut actions)?;
    }

    // Robustness only: the writer never closes a part around an open
    // segment, but an older build or a manual edit might have.
    for seg in open_segments(conn, ctx, None)? {
        recover_open_segment(conn, ctx, &seg, now_ms, &mut actions)?;
    }

    for recording_id in crashed {
        let ended_at_ms: i64 = conn
            .query_row(
                "SELECT COALESCE(
                     (SELECT MAX(ended_at_ms) FROM parts WHERE recording_id = ?1),
                     (SELECT MAX(committed_at_ms) FROM segments WHERE recording_id = ?1),
                     ?2)",
                params![recording_id, now_ms],
                |r| r.get(0),
            )
            .db("estimate recording end", &ctx.db_path)?;
        conn.execute(
            "UPDATE recordings SET state = 'interrupted', end_reason = 'crash', ended_at_ms = ?2
             WHERE id = ?1 AND state = 'recording'",
            params![recording_id, ended_at_ms],
        )
        .db("mark recording interrupted", &ctx.db_path)?;
        record(
            conn,
            ctx,
            now_ms,
            &mut actions,
            RecoveryAction::RecordingInterrupted {
                recording_id,
                ended_at_ms,
            },
        )?;
    }

    // The eviction writes its own state_log line when it finishes, so this is only logged.
    let mut evictions = Vec::new();
    crate::retention::finish_unfinished(conn, ctx, now_ms, &mut { usize::MAX }, &mut evictions)?;
    for done in evictions {
        let action = RecoveryAction::EvictionFinished {
            recording_id: done.recording_id,
            why: done.why.as_str().to_string(),
            bytes_freed: done.bytes_freed,
        };
        log::warn!(target: "journal", "{action}");
        actions.push(action);
    }

    sweep_orphans(conn, ctx, now_ms, &mut actions)?;
    Ok(RecoveryReport { actions })
}

/// In-process recovery of parts of one recording whose writer is gone
/// (dropped without `finish`). Fails with [`JournalError::WriterActive`] if
/// a writer for one of them is still alive, before changing anything.
pub(crate) fn recover_orphan_parts(
    conn: &Connection,
    ctx: &Ctx,
    recording_id: &str,
    live: &LiveParts,
    now_ms: i64,
) -> Result<Vec<RecoveryAction>> {
    let parts = open_parts(conn, ctx, Some(recording_id))?;
    {
        let live = live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(part) = parts.iter().find(|p| live.contains(&p.id)) {
            return Err(JournalError::WriterActive {
                id: recording_id.to_string(),
                part_seq: part.seq,
            });
        }
    }
    let mut actions = Vec::new();
    for part in parts {
        recover_part(conn, ctx, &part, "writer lost", now_ms, &mut actions)?;
    }
    Ok(actions)
}

struct OpenPart {
    id: i64,
    recording_id: String,
    seq: u32,
}

struct OpenSegmentRow {
    id: i64,
    recording_id: String,
    path: String,
    first_pts_ns: Option<u64>,
}

fn open_parts(conn: &Connection, ctx: &Ctx, recording_id: Option<&str>) -> Result<Vec<OpenPart>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, recording_id, seq FROM parts
             WHERE state = 'open' AND (?1 IS NULL OR recording_id = ?1) ORDER BY id",
        )
        .db("list open parts", &ctx.db_path)?;
    let rows = stmt
        .query_map([recording_id], |r| {
            Ok(OpenPart {
                id: r.get(0)?,
                recording_id: r.get(1)?,
                seq: r.get(2)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .db("list open parts", &ctx.db_path)?;
    Ok(rows)
}

fn open_segments(
    conn: &Connection,
    ctx: &Ctx,
    part_id: Option<i64>,
) -> Result<Vec<OpenSegmentRow>> {
    let mut stmt = conn
        .prepare(
            "SELECT id, recording_id, path, first_pts_ns FROM segments
             WHERE state = 'open' AND (?1 IS NULL OR part_id = ?1) ORDER BY id",
        )
        .db("list open segments", &ctx.db_path)?;
    let rows = stmt
        .query_map([part_id], |r| {
            Ok(OpenSegmentRow {
                id: r.get(0)?,
                recording_id: r.get(1)?,
                path: r.get(2)?,
                first_pts_ns: r.get(3)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .db("list open segments", &ctx.db_path)?;
    Ok(rows)
}

/// Recovers a part's open segments and marks it interrupted.
///
/// Its end time is the latest evidence of what it holds: a committed segment's
/// commit, or a recovered segment's opening plus the media recovery kept in it
/// (recovery's own commit time is not activity; an open segment that kept
/// nothing counts from its opening); only a part with no segments at all falls
/// back to `now_ms`. Dating a killed part's end at its last segment's opening
/// would count the media still in that segment as a hole in the stitched
/// recording's gap manifest.
fn recover_part(
    conn: &Connection,
    ctx: &Ctx,
    part: &OpenPart,
    reason: &str,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
) -> Result<()> {
    // Before recovery: the last commit or segment opening (a segment recovery drops leaves its
    // opening here); after it: what the recovered segments hold.
    let estimate = |sql: &str, fallback: i64| -> Result<i64> {
        conn.query_row(sql, params![part.id, fallback], |r| r.get(0)).db("estimate part end", &ctx.db_path)
    };
    let opened = estimate(
        "SELECT COALESCE(MAX(CASE WHEN state = 'committed' THEN committed_at_ms ELSE opened_at_ms END), ?2)
         FROM segments WHERE part_id = ?1",
        now_ms,
    )?;
    for seg in open_segments(conn, ctx, Some(part.id))? {
        recover_open_segment(conn, ctx, &seg, now_ms, actions)?;
    }
    let held = estimate(
        "SELECT COALESCE(MAX(opened_at_ms + COALESCE(duration_ns, 0) / 1000000), ?2)
         FROM segments WHERE part_id = ?1 AND recovered = 1",
        opened,
    )?;
    let ended_at_ms = opened.max(held).min(now_ms);
    conn.execute(
        "UPDATE parts SET state = 'interrupted', end_reason = ?2, ended_at_ms = ?3 WHERE id = ?1 AND state = 'open'",
        params![part.id, reason, ended_at_ms],
    )
    .db("mark part interrupted", &ctx.db_path)?;
    record(
        conn,
        ctx,
        now_ms,
        actions,
        RecoveryAction::PartInterrupted {
            recording_id: part.recording_id.clone(),
            part_seq: part.seq,
            reason: reason.to_string(),
            ended_at_ms,
        },
    )
}

/// Outcome of repairing one file in place.
enum Repair {
    /// Whole packets remain; the file is truncated and fsynced.
    Kept {
        bytes_after: u64,
        sha256: String,
        first_pts_90k: Option<u64>,
        span_ns: Option<u64>,
    },
    /// Nothing usable remained; the file has been removed.
    Removed,
}

/// Truncates a segment file to its longest valid packet prefix, fsyncs it
/// and its directory (the data may only ever have reached the page cache),
/// and returns what is left. A file with no whole packet is removed.
fn repair_file(abs: &Path) -> Result<Repair> {
    let scan = verify_ts_file(abs)?;
    let dir = abs.parent().unwrap_or(abs);
    if scan.valid_bytes == 0 {
        fs::remove_file(abs).io("remove unusable segment", abs)?;
        fsync_dir(dir)?;
        return Ok(Repair::Removed);
    }
    let file = OpenOptions::new()
        .write(true)
        .open(abs)
        .io("open segment for repair", abs)?;
    if !scan.is_complete() {
        file.set_len(scan.valid_bytes).io("truncate segment", abs)?;
    }
    file.sync_all().io("fsync repaired segment", abs)?;
    fsync_dir(dir)?;
    Ok(Repair::Kept {
        bytes_after: scan.valid_bytes,
        sha256: scan.sha256_valid,
        first_pts_90k: scan.first_pts_90k,
        span_ns: scan.pts_span_ns,
    })
}

/// Recovers one open segment row.
///
/// The committed duration is the PTS span found in the file (last − first),
/// a lower bound short of one frame, because the next segment's first PTS
/// is unknown. `first_pts_ns` keeps the writer's value (pipeline time base)
/// when the row has one, since the TS PTS carry the muxer's offset; only if
/// it is missing is the TS value used.
fn recover_open_segment(
    conn: &Connection,
    ctx: &Ctx,
    seg: &OpenSegmentRow,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
) -> Result<()> {
    let abs = ctx.media_dir.join(&seg.path);
    let dropped = |bytes_before: u64, reason: &str| RecoveryAction::SegmentDropped {
        recording_id: seg.recording_id.clone(),
        path: seg.path.clone(),
        bytes_before,
        reason: reason.to_string(),
    };
    let delete_row = || {
        conn.execute("DELETE FROM segments WHERE id = ?1", [seg.id])
            .db("delete unusable segment", &ctx.db_path)
    };
    let bytes_before = match fs::metadata(&abs) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            delete_row()?;
            return record(conn, ctx, now_ms, actions, dropped(0, "file missing"));
        }
        Err(e) => {
            return Err(JournalError::Io {
                action: "stat open segment",
                path: abs,
                source: e,
            })
        }
        Ok(meta) => meta.len(),
    };
    if bytes_before == 0 {
        fs::remove_file(&abs).io("remove empty segment", &abs)?;
        fsync_dir(abs.parent().unwrap_or(&abs))?;
        delete_row()?;
        return record(conn, ctx, now_ms, actions, dropped(0, "file empty"));
    }
    match repair_file(&abs)? {
        Repair::Removed => {
            delete_row()?;
            record(
                conn,
                ctx,
                now_ms,
                actions,
                dropped(bytes_before, "no complete packet"),
            )
        }
        Repair::Kept {
            bytes_after,
            sha256,
            first_pts_90k,
            span_ns,
        } => {
            let first_pts_ns = seg.first_pts_ns.or(first_pts_90k.map(pts90k_to_ns));
            let last_pts_ns = match (first_pts_ns, span_ns) {
                (Some(first), Some(span)) => Some(first + span),
                (first, _) => first,
            };
            conn.execute(
                "UPDATE segments SET state = 'committed', recovered = 1, bytes = ?2, sha256 = ?3,
                     duration_ns = ?4, first_pts_ns = ?5, last_pts_ns = ?6, committed_at_ms = ?7
                 WHERE id = ?1 AND state = 'open'",
                params![
                    seg.id,
                    bytes_after,
                    sha256,
                    span_ns,
                    first_pts_ns,
                    last_pts_ns,
                    now_ms
                ],
            )
            .db("commit recovered segment", &ctx.db_path)?;
            record(
                conn,
                ctx,
                now_ms,
                actions,
                RecoveryAction::SegmentRecovered {
                    recording_id: seg.recording_id.clone(),
                    path: seg.path.clone(),
                    bytes_before,
                    bytes_after,
                },
            )
        }
    }
}

/// Checks the newest committed segment of a crashed recording against its
/// row. It is the one most at risk: it was committed moments before the
/// crash. Mismatches are repaired from the file and always reported.
fn verify_last_committed(
    conn: &Connection,
    ctx: &Ctx,
    recording_id: &str,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
) -> Result<()> {
    let last: Option<(i64, String, u64, Option<String>)> = conn
        .query_row(
            "SELECT id, path, bytes, sha256 FROM segments
             WHERE recording_id = ?1 AND state = 'committed' ORDER BY seq DESC LIMIT 1",
            [recording_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .db("find last committed segment", &ctx.db_path)?;
    let Some((id, path, row_bytes, row_sha)) = last else {
        return Ok(());
    };
    let abs = ctx.media_dir.join(&path);
    let file_bytes = match fs::metadata(&abs) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let action = RecoveryAction::CommittedSegmentMissing {
                recording_id: recording_id.to_string(),
                path,
                bytes: row_bytes,
            };
            return record(conn, ctx, now_ms, actions, action);
        }
        Err(e) => {
            return Err(JournalError::Io {
                action: "stat committed segment",
                path: abs,
                source: e,
            })
        }
        Ok(meta) => meta.len(),
    };
    if file_bytes == row_bytes && row_sha.as_deref() == Some(sha256_file(&abs)?.as_str()) {
        return Ok(());
    }
    match repair_file(&abs)? {
        Repair::Removed => {
            conn.execute("DELETE FROM segments WHERE id = ?1", [id])
                .db("delete corrupt segment", &ctx.db_path)?;
            let action = RecoveryAction::CommittedSegmentDropped {
                recording_id: recording_id.to_string(),
                path,
                bytes_before: row_bytes,
                file_bytes,
            };
            record(conn, ctx, now_ms, actions, action)
        }
        Repair::Kept {
            bytes_after,
            sha256,
            span_ns,
            ..
        } => {
            // Keep the writer's duration unless media was cut off.
            conn.execute(
                "UPDATE segments SET recovered = 1, bytes = ?2, sha256 = ?3,
                     duration_ns = CASE WHEN ?2 < bytes THEN ?4 ELSE duration_ns END
                 WHERE id = ?1",
                params![id, bytes_after, sha256, span_ns],
            )
            .db("repair committed segment", &ctx.db_path)?;
            let action = RecoveryAction::CommittedSegmentRepaired {
                recording_id: recording_id.to_string(),
                path,
                bytes_before: row_bytes,
                file_bytes,
                bytes_after,
            };
            record(conn, ctx, now_ms, actions, action)
        }
    }
}

/// Removes `seg-*.ts` files that no row refers to, inside part directories
/// the index knows. Anything else unexpected is only logged.
fn sweep_orphans(
    conn: &Connection,
    ctx: &Ctx,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
) -> Result<()> {
    let root = ctx.media_dir.join(RECORDINGS_DIR);
    let entries = match fs::read_dir(&root) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other.io("list recordings directory", &root)?,
    };
    for entry in entries {
        let entry = entry.io("list recordings directory", &root)?;
        let rec_dir = entry.path();
        let Some(recording_id) = entry.file_name().to_str().map(str::to_owned) else {
            log::warn!(target: "journal", "leaving non-UTF-8 entry {} alone", rec_dir.display());
            continue;
        };
        if validate_recording_id(&recording_id).is_err() || !rec_dir.is_dir() {
            log::warn!(target: "journal", "leaving unexpected entry {} alone", rec_dir.display());
            continue;
        }
        let known: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM recordings WHERE id = ?1)",
                [&recording_id],
                |r| r.get(0),
            )
            .db("look up recording", &ctx.db_path)?;
        if !known {
            log::warn!(target: "journal",
                "recording {recording_id}: directory {} has no row in the index; leaving it alone",
                rec_dir.display());
            continue;
        }
        for part_entry in fs::read_dir(&rec_dir).io("list recording directory", &rec_dir)? {
            let part_entry = part_entry.io("list recording directory", &rec_dir)?;
            let part_dir = part_entry.path();
            let part_seq = part_entry
                .file_name()
                .to_str()
                .and_then(fsio::parse_part_dir_name);
            let part_known = match part_seq {
                Some(seq) if part_dir.is_dir() => conn
                    .query_row(
                        "SELECT EXISTS (SELECT 1 FROM parts WHERE recording_id = ?1 AND seq = ?2)",
                        params![recording_id, seq],
                        |r| r.get::<_, bool>(0),
                    )
                    .db("look up part", &ctx.db_path)?,
                _ => false,
            };
            let Some(part_seq) = part_seq.filter(|_| part_known) else {
                log::warn!(target: "journal",
                    "recording {recording_id}: unexpected entry {} left alone", part_dir.display());
                continue;
            };
            sweep_part_dir(
                conn,
                ctx,
                &recording_id,
                part_seq,
                &part_dir,
                now_ms,
                actions,
            )?;
        }
    }
    Ok(())
}

fn sweep_part_dir(
    conn: &Connection,
    ctx: &Ctx,
    recording_id: &str,
    part_seq: u32,
    part_dir: &Path,
    now_ms: i64,
    actions: &mut Vec<RecoveryAction>,
) -> Result<()> {
    for entry in fs::read_dir(part_dir).io("list part directory", part_dir)? {
        let entry = entry.io("list part directory", part_dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| fsio::is_segment_file_name(n)) else {
            log::warn!(target: "journal", "recording {recording_id}: unexpected file {} left alone", path.display());
            continue;
        };
        let rel = format!("{}/{name}", fsio::part_dir_rel(recording_id, part_seq));
        let has_row: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM segments WHERE path = ?1)",
                [&rel],
                |r| r.get(0),
            )
            .db("look up segment file", &ctx.db_path)?;
        if has_row {
            continue;
        }
        let bytes = entry.metadata().io("stat orphan file", &path)?.len();
        fs::remove_file(&path).io("remove orphan file", &path)?;
        fsync_dir(part_dir)?;
        let action = RecoveryAction::OrphanFileRemoved {
            recording_id: recording_id.to_string(),
            path: rel,
            bytes,
        };
        record(conn, ctx, now_ms, actions, action)?;
    }
    Ok(())
}
