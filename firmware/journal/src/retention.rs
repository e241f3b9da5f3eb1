//! The retention policy: which recordings' media may leave the card, and the eviction that
//! deletes it. Media is deleted only after the upload target confirmed the recording (its
//! `uploads` row is `done`), and then either because the retention window has passed since that
//! confirmation or because the card is running out of space, oldest recording first. Nothing
//! un-uploaded is ever evicted; when everything uploaded is gone and space is still short, the
//! storage-full guard (`space.rs`) refuses new parts as before.
//!
//! # Rules
//!
//! A recording is *evictable* only when all of these hold (one SQL query, [`EVICTABLE`]):
//! - its upload job is `done`, and was confirmed no earlier than its stitch finished (a
//!   recording resumed and stitched again after its upload holds media the target never got);
//! - it is not `recording`, has no `open` part, and its stitch row exists and is not `pending`
//!   (an interrupted recording without a stitch row may still be resumed and restitched, which
//!   needs every segment);
//! - it has no `evictions` row yet.
//!
//! [`Journal::enforce_retention`] first finishes any eviction a crash left half done, then
//! evicts every evictable recording whose upload was confirmed at least `window_ms` ago
//! ("retention window"), then, while free space read through the journal's [`FreeSpace`] seam is
//! below `low_water_bytes`, the oldest evictable recordings by start time ("storage low"),
//! reading free space again after each one. An evicted recording cannot be resumed
//! ([`Journal::start_recording`] refuses it).
//!
//! Deleting a lecture hour's ~1,800 segment files takes seconds on a slow card, so
//! [`Journal::enforce_retention_bounded`] stops after a number of files and says so; the
//! eviction it was in stays decided and the next call continues it before deciding anything
//! new. A caller on a loop that must stay responsive (power-fail edges, segment cuts) calls it
//! in slices until [`RetentionReport::unfinished`] is false.
//!
//! # What eviction deletes, and in which order
//!
//! The segment files and part directories, the stitched `<id>.mp4` and any leftover
//! `stitched.mp4.partial` / `manifest.json.partial`. It keeps `<id>.manifest.json` (small: the
//! record of what was recorded, with every segment's checksum), the `recordings`, `parts` and
//! `stitches` rows, and the upload job. The `segments` rows go too, so the database does not
//! grow without bound over months; their totals live on in the `evictions` row, which the
//! recording summaries report instead.
//!
//! 1. Insert the `evictions` row with the totals and the reason (committed, `synchronous=FULL`):
//!    from here on the recording's media is treated as gone, and whatever happens the eviction
//!    is finished, never undone.
//! 2. Unlink the segment files and remove the part directories, unlink the stitched file, and
//!    fsync the recording directory (once: removing a part directory makes everything inside it
//!    unreachable, so its own entries need no fsync; a part directory that keeps a file the
//!    journal did not name is fsynced and left).
//! 3. In one transaction: delete the `segments` rows, set `done_at_ms` and `bytes_freed`, and
//!    append the `state_log` line ("evicted", with the reason).
//!
//! A cut after 1 leaves a row with `done_at_ms` NULL and some or all files still there; a cut
//! after 2 leaves the files gone and the rows present. Both are finished by the next
//! [`Journal::open`] (recovery) or [`Journal::enforce_retention`], which simply run 2 and 3
//! again: each step tolerates what is already gone. Recovery never sees a half-evicted
//! recording as damage: it verifies segments of crashed (`recording`) recordings only, which
//! are never evicted.
//!
//! # Schema (additive, created by [`SCHEMA`])
//!
//! `evictions(recording_id PK, why 'retention window'|'storage low', started_at_ms,
//! done_at_ms NULL, segments, bytes, duration_ns, bytes_freed)`: `segments`, `bytes` and
//! `duration_ns` are the committed-segment totals before eviction (what [`RecordingSummary`]
//! reports afterwards); `bytes_freed` adds up the files removed (segments and stitched file) by
//! every run or slice that got to commit, so it is a lower bound after a cut.
//!
//! [`RecordingSummary`]: crate::RecordingSummary

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Instant;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::db::Ctx;
use crate::error::{DbContext, IoContext, JournalError, Result};
use crate::fsio::{self, fsync_dir, RECORDINGS_DIR};
use crate::journal::Journal;
use crate::space::FreeSpace;
use crate::stitch_store::stitched_rel;

/// The table; run by the journal's migration on every open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evictions (
    recording_id  TEXT PRIMARY KEY NOT NULL REFERENCES recordings(id),
    why           TEXT NOT NULL CHECK (why IN ('retention window', 'storage low')),
    started_at_ms INTEGER NOT NULL,
    done_at_ms    INTEGER,
    segments      INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    duration_ns   INTEGER NOT NULL,
    bytes_freed   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS evictions_unfinished ON evictions(recording_id) WHERE done_at_ms IS NULL;
";

/// Recordings whose media may be evicted, oldest first, with their upload confirmation time.
/// See the module doc for each condition. Reads the upload store's `uploads` table directly:
/// retention is the one place that joins the two, and the job store's API has no notion of media.
const EVICTABLE: &str = "
SELECT r.id, u.done_at_ms FROM recordings r
JOIN uploads u ON u.recording_id = r.id AND u.state = 'done' AND u.done_at_ms IS NOT NULL
JOIN stitches st ON st.recording_id = r.id AND st.state <> 'pending'
WHERE r.state IN ('completed', 'interrupted', 'failed')
  AND u.done_at_ms >= COALESCE(st.finished_at_ms, u.done_at_ms)
  AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.recording_id = r.id AND p.state = 'open')
  AND NOT EXISTS (SELECT 1 FROM evictions e WHERE e.recording_id = r.id)
ORDER BY r.started_at_ms, r.id";

/// When media that is safe on the server leaves the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How long after the target confirmed the upload the media is kept anyway.
    pub window_ms: i64,
    /// Below this many free bytes, uploaded recordings are evicted inside the window, oldest
    /// first, until it is reached again. Zero switches that off. Set it above the storage guard's
    /// reserve (`journal.min_free_mb`) so eviction makes room before the guard refuses parts.
    pub low_water_bytes: u64,
}

/// Why a recording's media was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvictReason {
    /// The retention window after the upload passed.
    RetentionWindow,
    /// Free space was below the low water mark.
    StorageLow,
}

impl EvictReason {
    /// The stored value (and the `state_log` wording).
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::RetentionWindow => "retention window",
            EvictReason::StorageLow => "storage low",
        }
    }

    fn parse(s: &str) -> EvictReason {
        // The CHECK constraint admits only the two spellings.
        if s == "storage low" {
            EvictReason::StorageLow
        } else {
            EvictReason::RetentionWindow
        }
    }
}

/// One finished eviction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evicted {
    pub recording_id: String,
    pub why: EvictReason,
    /// Committed segments the recording had (their rows are gone now).
    pub segments: u32,
    /// Bytes of files this run removed (segments and stitched file).
    pub bytes_freed: u64,
    /// Files removed by this run.
    pub files_removed: u32,
    /// Directory fsyncs this run issued.
    pub fsyncs: u32,
    /// True when this run finished an eviction an earlier one began (cut short by a crash or
    /// power cut, or stopped by its file budget).
    pub resumed: bool,
}

/// What [`Journal::enforce_retention`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Evictions finished by this run, in order (interrupted ones first).
    pub evicted: Vec<Evicted>,
    /// Free bytes read after the last eviction (`None`: not read, or the volume states no size).
    pub free_bytes: Option<u64>,
    /// Free space is still below the low water mark with nothing uploaded left to evict: the
    /// card holds only media the server does not have yet, and the storage guard decides.
    pub still_low: bool,
    /// The file budget ran out with work left: an eviction may be half done (its media already
    /// counts as evicted, and the next call continues it before deciding anything new), or
    /// more recordings may be due. Call again soon.
    pub unfinished: bool,
}

impl Journal {
    /// Applies the retention policy (see the module doc): finishes interrupted evictions, evicts
    /// uploaded recordings whose window has passed, then uploaded recordings oldest first while
    /// free space is below the low water mark. Removes as many files as that takes; see
    /// [`Journal::enforce_retention_bounded`] to bound the work per call.
    pub fn enforce_retention(&mut self, policy: RetentionPolicy, now_ms: i64) -> Result<RetentionReport> {
        self.enforce_retention_bounded(policy, now_ms, usize::MAX)
    }

    /// [`Journal::enforce_retention`] removing at most `max_files` files, so a caller on a loop
    /// that must stay responsive (a power-fail edge, a recording's cut) can evict a lecture hour
    /// (~1,800 segment files) in slices. A slice that runs out stops between two files and
    /// reports [`RetentionReport::unfinished`]; the eviction stays decided and the next call
    /// continues it first.
    pub fn enforce_retention_bounded(&mut self, policy: RetentionPolicy, now_ms: i64, max_files: usize) -> Result<RetentionReport> {
        let (conn, ctx) = (&self.conn, &self.ctx);
        let mut budget = max_files;
        let mut report = RetentionReport::default();
        if !finish_unfinished(conn, ctx, now_ms, &mut budget, &mut report.evicted)? {
            report.unfinished = true;
            return Ok(report);
        }
        let due = evictable(conn, ctx)?.into_iter().filter(|(_, done_at_ms)| done_at_ms.saturating_add(policy.window_ms) <= now_ms);
        for (id, _) in due {
            if !evict(conn, ctx, &id, EvictReason::RetentionWindow, now_ms, &mut budget, &mut report.evicted)? {
                report.unfinished = true;
                return Ok(report);
            }
        }
        if policy.low_water_bytes == 0 {
            return Ok(report);
        }
        let free_space = self.options().free_space;
        let mut free = read_free(free_space, &ctx.media_dir)?;
        let mut candidates = evictable(conn, ctx)?.into_iter();
        while let Some(f) = free.filter(|&f| f < policy.low_water_bytes) {
            let Some((id, _)) = candidates.next() else {
                report.still_low = true;
                log::warn!(target: "journal",
                    "storage low: {} MB free, below the {} MB low water mark, and nothing uploaded is left to evict",
                    f / (1024 * 1024), policy.low_water_bytes / (1024 * 1024));
                break;
            };
            let finished = evict(conn, ctx, &id, EvictReason::StorageLow, now_ms, &mut budget, &mut report.evicted)?;
            free = read_free(free_space, &ctx.media_dir)?;
            if !finished {
                report.unfinished = true;
                break;
            }
        }
        report.free_bytes = free;
        Ok(report)
    }

    /// True when the recording's media was (or is being) evicted.
    pub(crate) fn is_evicted(&self, recording_id: &str) -> Result<bool> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM evictions WHERE recording_id = ?1)", [recording_id], |r| r.get(0))
            .db("look up eviction", &self.ctx.db_path)
    }
}

fn read_free(free_space: FreeSpace, media_dir: &Path) -> Result<Option<u64>> {
    (free_space.0)(media_dir).map_err(|source| JournalError::Io { action: "read free space (statvfs) of", path: media_dir.to_path_buf(), source })
}

fn evictable(conn: &Connection, ctx: &Ctx) -> Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(EVICTABLE).db("prepare evictable recordings", &ctx.db_path)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .db("query evictable recordings", &ctx.db_path)?;
    Ok(rows)
}

/// Continues every eviction an earlier run began and did not finish (steps 2 and 3 again), within
/// `budget` files; false when the budget ran out first. Also run by recovery, without a budget.
pub(crate) fn finish_unfinished(conn: &Connection, ctx: &Ctx, now_ms: i64, budget: &mut usize, done: &mut Vec<Evicted>) -> Result<bool> {
    let rows: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare_cached("SELECT recording_id, why FROM evictions WHERE done_at_ms IS NULL ORDER BY started_at_ms, recording_id")
            .db("prepare unfinished evictions", &ctx.db_path)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .db("query unfinished evictions", &ctx.db_path)?;
        rows
    };
    for (id, why) in rows {
        log::info!(target: "journal", "recording {id}: continuing its eviction");
        match finish(conn, ctx, &id, EvictReason::parse(&why), true, now_ms, budget)? {
            Some(e) => done.push(e),
            None => return Ok(false),
        }
    }
    Ok(true)
}

/// Steps 1 to 3 for one recording; false when the file budget stopped it, before step 1 if it
/// was spent already (nothing is decided that this run cannot start on).
fn evict(conn: &Connection, ctx: &Ctx, recording_id: &str, why: EvictReason, now_ms: i64, budget: &mut usize, done: &mut Vec<Evicted>) -> Result<bool> {
    if *budget == 0 {
        return Ok(false);
    }
    begin(conn, ctx, recording_id, why, now_ms)?;
    match finish(conn, ctx, recording_id, why, false, now_ms, budget)? {
        Some(e) => {
            done.push(e);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Step 1: the durable decision, with the totals the summaries report from now on.
pub(crate) fn begin(conn: &Connection, ctx: &Ctx, recording_id: &str, why: EvictReason, now_ms: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO evictions (recording_id, why, started_at_ms, segments, bytes, duration_ns)
         SELECT ?1, ?2, ?3, COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(duration_ns), 0)
         FROM segments WHERE recording_id = ?1 AND state = 'committed'",
        params![recording_id, why.as_str(), now_ms],
    )
    .db("insert eviction", &ctx.db_path)
    .map(drop)
}

/// Steps 2 and 3 (see [`remove_files`] and [`mark_done`]); `None` when the budget ran out in
/// step 2 (what was removed is counted in the row, and the eviction stays unfinished).
fn finish(conn: &Connection, ctx: &Ctx, recording_id: &str, why: EvictReason, resumed: bool, now_ms: i64, budget: &mut usize) -> Result<Option<Evicted>> {
    let t = Instant::now();
    let removed = remove_files(ctx, recording_id, budget)?;
    let files_ms = t.elapsed().as_secs_f64() * 1e3;
    if !removed.complete {
        conn.execute("UPDATE evictions SET bytes_freed = bytes_freed + ?2 WHERE recording_id = ?1", params![recording_id, removed.bytes as i64])
            .db("count evicted bytes", &ctx.db_path)?;
        log::info!(target: "journal", "recording {recording_id}: evicting ({}), {} files removed in {files_ms:.0} ms, more to come",
            why.as_str(), removed.files);
        return Ok(None);
    }
    let done = mark_done(conn, ctx, recording_id, why, resumed, &removed, now_ms)?;
    log::info!(target: "journal", "recording {recording_id}: evicted ({}: {} segments, {} files, {:.1} MB freed{}); files {files_ms:.0} ms, total {:.0} ms",
        why.as_str(), done.segments, removed.files, removed.bytes as f64 / 1e6,
        if resumed { ", continued from an earlier run" } else { "" }, t.elapsed().as_secs_f64() * 1e3);
    Ok(Some(done))
}

/// Step 2: removes a recording's segment files, part directories and stitched file, tolerating
/// what is gone already, and makes the removals durable. Stops, incomplete and without the
/// fsync, once `budget` files are removed.
pub(crate) fn remove_files(ctx: &Ctx, recording_id: &str, budget: &mut usize) -> Result<Removed> {
    let rec_dir = ctx.media_dir.join(RECORDINGS_DIR).join(recording_id);
    let mut removed = Removed::default();
    let entries = match fs::read_dir(&rec_dir) {
        // Every part was created inside it; no directory means nothing to delete.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            removed.complete = true;
            return Ok(removed);
        }
        entries => entries.io("list recording directory", &rec_dir)?,
    };
    for entry in entries {
        let entry = entry.io("list recording directory", &rec_dir)?;
        let is_part = entry.file_name().to_str().and_then(fsio::parse_part_dir_name).is_some();
        if is_part && entry.file_type().io("stat part directory", &entry.path())?.is_dir() && !remove_part_dir(recording_id, &entry.path(), budget, &mut removed)? {
            return Ok(removed);
        }
    }
    let stitched = ctx.media_dir.join(stitched_rel(recording_id));
    for path in [stitched, rec_dir.join("stitched.mp4.partial"), rec_dir.join("manifest.json.partial")] {
        if !remove_file_if_present(&path, budget, &mut removed)? {
            return Ok(removed);
        }
    }
    // Unconditionally: an earlier run may have removed everything and been cut before its
    // removals were durable.
    fsync_dir(&rec_dir)?;
    removed.fsyncs += 1;
    removed.complete = true;
    Ok(removed)
}

/// Step 3: deletes the segment rows, marks the eviction done and logs it, in one transaction.
pub(crate) fn mark_done(
    conn: &Connection,
    ctx: &Ctx,
    recording_id: &str,
    why: EvictReason,
    resumed: bool,
    removed: &Removed,
    now_ms: i64,
) -> Result<Evicted> {
    // IMMEDIATE: this transaction reads before it writes, and under WAL a deferred one would
    // fail at once with SQLITE_BUSY_SNAPSHOT when another connection (an upload worker saving
    // progress) committed in between; taking the write lock up front waits for it instead.
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate).db("begin eviction", &ctx.db_path)?;
    let segments: u32 = tx
        .query_row("SELECT segments FROM evictions WHERE recording_id = ?1", [recording_id], |r| r.get(0))
        .optional()
        .db("read eviction", &ctx.db_path)?
        .unwrap_or(0);
    tx.execute("DELETE FROM segments WHERE recording_id = ?1", [recording_id]).db("delete evicted segment rows", &ctx.db_path)?;
    tx.execute(
        "UPDATE evictions SET done_at_ms = ?2, bytes_freed = bytes_freed + ?3 WHERE recording_id = ?1",
        params![recording_id, now_ms, removed.bytes as i64],
    )
    .db("mark eviction done", &ctx.db_path)?;
    let detail = format!(
        "{}: {segments} segments, {} files, {:.1} MB freed{}",
        why.as_str(),
        removed.files,
        removed.bytes as f64 / 1e6,
        if resumed { " (continued from an earlier run)" } else { "" }
    );
    ctx.log_state(&tx, now_ms, Some(recording_id), "evicted", &detail)?;
    tx.commit().db("commit eviction", &ctx.db_path)?;
    Ok(Evicted {
        recording_id: recording_id.to_string(),
        why,
        segments,
        bytes_freed: removed.bytes,
        files_removed: removed.files,
        fsyncs: removed.fsyncs,
        resumed,
    })
}

/// What [`remove_files`] removed.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub files: u32,
    pub bytes: u64,
    /// Directory fsyncs issued.
    pub fsyncs: u32,
    /// Everything is gone, durably; false when the budget stopped it.
    pub complete: bool,
}

/// Unlinks the segment files of one part directory and removes it; false when the budget ran
/// out first. A file the journal did not name is left where it is (as recovery does), so is its
/// directory, whose removals are then made durable on their own.
fn remove_part_dir(recording_id: &str, part_dir: &Path, budget: &mut usize, removed: &mut Removed) -> Result<bool> {
    let mut foreign = false;
    for entry in fs::read_dir(part_dir).io("list part directory", part_dir)? {
        let entry = entry.io("list part directory", part_dir)?;
        if entry.file_name().to_str().is_some_and(fsio::is_segment_file_name) {
            if !remove_file_if_present(&entry.path(), budget, removed)? {
                return Ok(false);
            }
        } else {
            log::warn!(target: "journal", "recording {recording_id}: unexpected entry {} left alone by eviction", entry.path().display());
            foreign = true;
        }
    }
    if foreign {
        fsync_dir(part_dir)?;
        removed.fsyncs += 1;
        return Ok(true);
    }
    match fs::remove_dir(part_dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        other => other.io("remove part directory", part_dir).map(|()| true),
    }
}

/// Removes one file if it exists; false (and nothing removed) when the budget is spent.
fn remove_file_if_present(path: &Path, budget: &mut usize, removed: &mut Removed) -> Result<bool> {
    let bytes = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(true),
        other => other.io("stat evicted file", path)?.len(),
    };
    if *budget == 0 {
        return Ok(false);
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other.io("remove evicted file", path),
    }?;
    *budget -= 1;
    removed.files += 1;
    removed.bytes += bytes;
    Ok(true)
}
