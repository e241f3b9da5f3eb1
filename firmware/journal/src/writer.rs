//! [`PartWriter`]: turns the capture pipeline's stream of MPEG-TS chunks into
//! committed segment files for one part of one recording. It owns the open
//! segment (file, running SHA-256, PTS bookkeeping, audio levels) and its own
//! SQLite connection, so it can live on the writer thread while
//! [`crate::Journal`] stays on the main thread.
//!
//! State machine, per writer: `Idle` (no segment yet) → first chunk opens
//! segment 1 → each keyframe chunk at or past `segment_target` of media time
//! commits the open segment and opens the next one starting with that chunk
//! → `finish` commits (or, if empty, drops) the open segment and closes the
//! part. A cut that finds less free space than the reserve (`min_free_bytes`)
//! commits the open segment, opens none and refuses every later push with
//! [`crate::JournalError::StorageFull`]; the caller then finishes the part. Dropping a writer without `finish` deliberately does nothing to the
//! index: the part and its open segment stay `open` and are recovered later
//! exactly like after a power cut.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use crate::db::Ctx;
use crate::error::{DbContext, IoContext, JournalError, Result};
use crate::fsio::{fsync_dir, segment_rel};
use crate::levels::LevelAccumulator;
use crate::model::{CommittedSegment, JournalOptions, PartEnd, PartState, PartSummary};
use crate::space::check_reserve;
use crate::ts::hex;

/// Write buffer per open segment. Chunks are often a single 188-byte packet
/// at ~1500/s, so unbuffered writes would mean a syscall per packet. Kept small
/// (16 KiB is ~30 ms at 4 Mbit/s, ~0.25 s at 500 kbit/s) because what sits in
/// this buffer is lost on a process crash, while the page cache survives it.
const WRITE_BUFFER: usize = 16 * 1024;

/// The page-cache page: the unit the kernel dirties, writes back and counts in
/// `/proc/PID/io` `write_bytes`.
const PAGE: u64 = 4096;

/// The buffer only ever hands whole pages to the kernel, and a periodic sync holds back the
/// partly filled last page for at most `fsync_interval / HOLD_DIVISOR`. Syncing a partial page
/// would clean it, and the next write would dirty and count it again: at one sync a second that
/// was ~4 KiB/s of extra writes, about 0.8 % of a 4 Mbit/s stream (issue 2's write-amplification
/// budget is 2 %). The held tail is younger than the bound, so what a cut can lose stays within
/// `fsync_interval × (1 + 1/HOLD_DIVISOR)`; the default interval (800 ms) keeps that, plus the ~70 ms the
/// encoder and muxer hold upstream (x264 zerolatency), under 1 s.
const HOLD_DIVISOR: u32 = 20;

/// Ids of parts whose writer is alive in this process, shared between the
/// [`crate::Journal`] and its writers. It lets the journal tell a part that
/// is being written from one whose writer was dropped (for example because
/// the writer thread panicked) and can be recovered in place.
pub(crate) type LiveParts = Arc<Mutex<HashSet<i64>>>;

/// Removes a part from [`LiveParts`] when its writer goes away, however it
/// goes away.
pub(crate) struct LiveGuard {
    live: LiveParts,
    part_id: i64,
}

impl LiveGuard {
    pub(crate) fn register(live: &LiveParts, part_id: i64) -> LiveGuard {
        live.lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(part_id);
        LiveGuard {
            live: live.clone(),
            part_id,
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.part_id);
    }
}

/// Inserts (in the caller's transaction, or as its own) the row of a segment about to be
/// opened. Opening protocol: this row is committed before the file exists.
#[allow(clippy::too_many_arguments)]
fn insert_open_row(
    conn: &Connection,
    ctx: &Ctx,
    recording_id: &str,
    part_id: i64,
    part_seq: u32,
    seq: u32,
    first_pts: Option<u64>,
    now_ms: i64,
) -> Result<i64> {
    let rel_path = segment_rel(recording_id, part_seq, seq);
    conn.execute(
        "INSERT INTO segments (recording_id, part_id, seq, path, first_pts_ns, state, opened_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6)",
        params![recording_id, part_id, seq, rel_path, sql_ns(first_pts), now_ms],
    )
    .db("insert open segment", &ctx.db_path)?;
    Ok(conn.last_insert_rowid())
}

/// A nanosecond value as SQLite can store it: `None` (NULL) when it does not fit an i64.
fn sql_ns(v: Option<u64>) -> Option<i64> {
    v.and_then(|v| i64::try_from(v).ok())
}

/// Decides whether a keyframe chunk should start a new segment: only when
/// the open segment already spans at least ¾ of `target` of media time, measured
/// from the segment's first PTS to this chunk's PTS. Without both PTS values
/// there is no media time, so no cut.
pub fn cut_due(
    segment_first_pts_ns: Option<u64>,
    chunk_pts_ns: Option<u64>,
    target: Duration,
) -> bool {
    match (segment_first_pts_ns, chunk_pts_ns) {
        // Encoders place keyframes only approximately on the requested interval (x264 put them
        // 58–60 frames apart for a 60-frame GOP), so a keyframe within the last quarter of the
        // target already cuts; otherwise segments would come out at twice the target.
        (Some(first), Some(at)) => u128::from(at.saturating_sub(first)) * 4 >= target.as_nanos() * 3,
        _ => false,
    }
}

/// The segment currently being written.
struct OpenSegment {
    row_id: i64,
    seq: u32,
    rel_path: String,
    abs_path: PathBuf,
    file: File,
    /// Bytes not yet handed to the kernel; the file length is `bytes - buf.len()`.
    buf: Vec<u8>,
    /// When the stream entered the page that `bytes` currently ends in: the age of the oldest
    /// byte a periodic sync would hold back.
    page_started: Instant,
    hasher: Sha256,
    bytes: u64,
    first_pts: Option<u64>,
    max_pts: Option<u64>,
    /// Previous chunk PTS and the sum/count of positive steps between chunk
    /// PTS values, for the one-frame estimate added to a part's last segment.
    prev_pts: Option<u64>,
    step_sum: u64,
    step_count: u64,
    last_sync: Instant,
    unsynced: bool,
    /// Number of `sync_data` calls, exposed to tests.
    syncs: u32,
}

impl OpenSegment {
    fn write(&mut self, bytes: &[u8], pts_ns: Option<u64>, now: Instant) -> Result<()> {
        if self.bytes / PAGE != (self.bytes + bytes.len() as u64) / PAGE {
            self.page_started = now;
        }
        self.buf.extend_from_slice(bytes);
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.unsynced = true;
        if self.buf.len() >= WRITE_BUFFER {
            self.write_out(self.bytes % PAGE)?;
        }
        if let Some(pts) = pts_ns {
            if self.first_pts.is_none() {
                self.first_pts = Some(pts);
            }
            self.max_pts = Some(self.max_pts.map_or(pts, |m| m.max(pts)));
            if let Some(prev) = self.prev_pts {
                if pts > prev {
                    self.step_sum += pts - prev;
                    self.step_count += 1;
                }
            }
            self.prev_pts = Some(pts);
        }
        Ok(())
    }

    /// Hands the buffer to the kernel except its last `keep` bytes.
    fn write_out(&mut self, keep: u64) -> Result<()> {
        let n = self.buf.len() - (keep as usize).min(self.buf.len());
        self.file
            .write_all(&self.buf[..n])
            .io("write segment", &self.abs_path)?;
        self.buf.drain(..n);
        Ok(())
    }

    /// Hands everything to the kernel (before the commit's fsync).
    fn flush(&mut self) -> Result<()> {
        self.write_out(0)
    }

    /// The periodic sync: everything up to the last whole page, and the partial page too once
    /// it is older than `hold` (`fsync_interval / HOLD_DIVISOR`; zero syncs everything).
    fn sync_data(&mut self, now: Instant, hold: Duration) -> Result<()> {
        let young = now.saturating_duration_since(self.page_started) < hold;
        self.write_out(if young { self.bytes % PAGE } else { 0 })?;
        self.file
            .sync_data()
            .io("fsync segment data", &self.abs_path)?;
        self.last_sync = now;
        self.unsynced = !self.buf.is_empty();
        self.syncs += 1;
        Ok(())
    }

    /// Media duration: up to the next segment's first PTS when cut, else
    /// last − first plus one mean PTS step as an estimate of the last frame.
    /// The mean step is rough when audio and video interleave, but it is
    /// only ever added to a part's final segment. A segment of one chunk has no step of its own
    /// and borrows `part_step` (the mean over the part's earlier segments): a part whose last
    /// keyframe fell on its very last frame ends with a one-frame segment, which lasts one frame,
    /// not 0 s.
    fn duration_ns(&self, next_first_pts: Option<u64>, part_step: Option<u64>) -> Option<u64> {
        let first = self.first_pts?;
        match next_first_pts {
            Some(next) if next >= first => Some(next - first),
            _ => {
                let last = self.max_pts.unwrap_or(first);
                let frame = self.step_sum.checked_div(self.step_count).or(part_step).unwrap_or(0);
                Some(last - first + frame)
            }
        }
    }
}

impl Drop for OpenSegment {
    /// A writer dropped without `finish` (its thread panicked) still hands its buffer to the
    /// kernel, like a process that crashed after a write: recovery then keeps what the page cache
    /// holds. Errors cannot be reported from here; recovery checks what arrived.
    fn drop(&mut self) {
        let _ = self.file.write_all(&self.buf);
    }
}

/// Writes one part of one recording. `Send`: create it with
/// [`crate::Journal::open_part`] and move it to the writer thread.
pub struct PartWriter {
    conn: Connection,
    ctx: Ctx,
    opts: JournalOptions,
    recording_id: String,
    part_id: i64,
    part_seq: u32,
    part_dir: PathBuf,
    next_seq: u32,
    open: Option<OpenSegment>,
    /// Levels pushed since the last commit; they belong to the open segment,
    /// or to the next one if none is open yet.
    levels: LevelAccumulator,
    last_pts_seen: Option<u64>,
    committed: u32,
    committed_bytes: u64,
    last_committed: Option<CommittedSegment>,
    /// Sum and count of the PTS steps of the segments committed so far (see `duration_ns`).
    part_steps: (u64, u64),
    /// Set when a segment cut found less free space than the reserve: the part was committed up
    /// to that cut and takes no more data; every later push answers with this refusal.
    storage_full: Option<(u64, u64)>,
    _live: LiveGuard,
}

impl std::fmt::Debug for PartWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartWriter")
            .field("recording_id", &self.recording_id)
            .field("part_seq", &self.part_seq)
            .field("open_segment", &self.open.as_ref().map(|s| s.seq))
            .finish_non_exhaustive()
    }
}

impl PartWriter {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        conn: Connection,
        ctx: Ctx,
        opts: JournalOptions,
        recording_id: String,
        part_id: i64,
        part_seq: u32,
        next_seq: u32,
        live: LiveGuard,
    ) -> PartWriter {
        let part_dir = ctx
            .media_dir
            .join(crate::fsio::part_dir_rel(&recording_id, part_seq));
        PartWriter {
            conn,
            ctx,
            opts,
            recording_id,
            part_id,
            part_seq,
            part_dir,
            next_seq,
            open: None,
            levels: LevelAccumulator::default(),
            last_pts_seen: None,
            committed: 0,
            committed_bytes: 0,
            last_committed: None,
            part_steps: (0, 0),
            storage_full: None,
            _live: live,
        }
    }

    /// The recording this writer belongs to.
    pub fn recording_id(&self) -> &str {
        &self.recording_id
    }

    /// The part number (1-based) within the recording.
    pub fn part_seq(&self) -> u32 {
        self.part_seq
    }

    /// Appends one muxed chunk.
    ///
    /// A chunk with `keyframe` set is where a segment may start; if the open
    /// segment already spans `segment_target`, it is committed first and the
    /// chunk starts the next segment. That committed segment is returned.
    /// Chunks before the first keyframe still open the first segment, so no
    /// data is lost. The pipeline should stamp keyframe chunks with their
    /// PTS; one without is measured against the last PTS seen, so its cut may
    /// slip to the next keyframe, but it is never lost.
    pub fn push_data(
        &mut self,
        bytes: &[u8],
        pts_ns: Option<u64>,
        keyframe: bool,
        now: Instant,
        now_ms: i64,
    ) -> Result<Option<CommittedSegment>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        // A PTS beyond i64::MAX ns (292 years) is not a time but a muxer's wrapped negative
        // value; seen once under CPU starvation, where it made SQLite refuse the segment row
        // ("out of range integral type conversion") and failed the recording. Treat it as
        // unstamped: the cut rule already copes with chunks without a PTS.
        let pts_ns = pts_ns.filter(|&p| i64::try_from(p).is_ok());
        if let Some((free_bytes, reserve_bytes)) = self.storage_full {
            return Err(JournalError::StorageFull { path: self.ctx.media_dir.clone(), free_bytes, reserve_bytes });
        }
        let media_pts = pts_ns.or(self.last_pts_seen);
        let mut committed = None;
        if let Some(seg) = &self.open {
            if keyframe
                && seg.bytes > 0
                && cut_due(seg.first_pts, media_pts, self.opts.segment_target)
            {
                // The storage-full guard, read once per cut: below the reserve the open segment is
                // committed whole and no next one opens, so the part ends on a segment boundary
                // instead of writing on until ENOSPC tears a segment or SQLite reports it full.
                if let Err(e) = check_reserve(self.opts.free_space, self.opts.min_free_bytes, &self.ctx.media_dir) {
                    // The caller logs and reports the error; `finish` logs the part's end.
                    if let JournalError::StorageFull { free_bytes, reserve_bytes, .. } = &e {
                        self.commit_open(pts_ns, now_ms, None)?;
                        self.storage_full = Some((*free_bytes, *reserve_bytes));
                    }
                    return Err(e);
                }
                // The old segment lasts until this chunk's PTS; if the chunk
                // has none, its duration is estimated like a final segment's.
                // One SQLite transaction commits the old row and inserts the next one: half the
                // WAL traffic of two commits per cut (write amplification on the SD card).
                let (c, next_row) = self.commit_open(pts_ns, now_ms, Some((pts_ns, now_ms)))?;
                committed = Some(c);
                if let Some(row_id) = next_row {
                    self.create_open(row_id, pts_ns, now)?;
                }
            }
        }
        if self.open.is_none() {
            self.open_segment(pts_ns, now, now_ms)?;
        }
        let interval = self.opts.fsync_interval;
        let seg = self.open.as_mut().expect("a segment was just opened");
        seg.write(bytes, pts_ns, now)?;
        if pts_ns.is_some() {
            self.last_pts_seen = pts_ns;
        }
        if now.saturating_duration_since(seg.last_sync) >= interval {
            seg.sync_data(now, interval / HOLD_DIVISOR)?;
        }
        Ok(committed)
    }

    /// Records one audio level message for the open (or next) segment.
    pub fn push_level(&mut self, peak_db: f64, rms_db: f64) {
        self.levels.push(peak_db, rms_db);
    }

    /// Fsyncs buffered data if `fsync_interval` has passed since the last
    /// sync. Call it periodically so a stalled pipeline still gets its last
    /// chunks onto the card.
    pub fn tick(&mut self, now: Instant) -> Result<()> {
        if let Some(seg) = self.open.as_mut() {
            // A tail held back by the last sync waits for the next one: it was younger than the
            // hold bound then, so the loss bound of `HOLD_DIVISOR` still holds.
            let interval = self.opts.fsync_interval;
            if seg.unsynced && now.saturating_duration_since(seg.last_sync) >= interval {
                seg.sync_data(now, interval / HOLD_DIVISOR)?;
            }
        }
        Ok(())
    }

    /// Makes everything pushed so far durable at once, whatever the interval: the whole buffer
    /// (partial page too) is written and the open segment's data fsynced. The row stays open:
    /// if the box dies before [`PartWriter::finish`], recovery commits these bytes. For the
    /// power-fail edge, before the encoder is drained into the part.
    pub fn sync_now(&mut self, now: Instant) -> Result<()> {
        if let Some(seg) = self.open.as_mut() {
            seg.sync_data(now, Duration::ZERO)?;
        }
        Ok(())
    }

    /// Commits the open segment (or drops it if it holds no bytes) and marks
    /// the part closed, interrupted or failed.
    pub fn finish(mut self, end: PartEnd, now_ms: i64) -> Result<PartSummary> {
        if let Some(seg) = &self.open {
            if seg.bytes > 0 {
                self.commit_open(None, now_ms, None)?;
            } else {
                self.drop_empty_open()?;
            }
        }
        let (state, reason) = match end {
            PartEnd::Closed => (PartState::Closed, None),
            PartEnd::Interrupted(r) => (PartState::Interrupted, Some(r)),
            PartEnd::Failed(r) => (PartState::Failed, Some(r)),
        };
        self.conn
            .execute(
                "UPDATE parts SET state = ?1, ended_at_ms = ?2, end_reason = ?3 WHERE id = ?4",
                params![state, now_ms, reason, self.part_id],
            )
            .db("close part", &self.ctx.db_path)?;
        let detail = format!(
            "part {} {state}{}: {} segments, {} bytes",
            self.part_seq,
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            self.committed,
            self.committed_bytes
        );
        self.ctx.log_state(
            &self.conn,
            now_ms,
            Some(&self.recording_id),
            &format!("part-{state}"),
            &detail,
        )?;
        log::info!(target: "journal", "recording {}: {detail}", self.recording_id);
        Ok(PartSummary {
            recording_id: self.recording_id.clone(),
            part_seq: self.part_seq,
            state,
            end_reason: reason,
            segments: self.committed,
            bytes: self.committed_bytes,
            last_segment: self.last_committed.take(),
        })
    }

    /// Opening protocol: committed row first, then the file, then the
    /// directory fsync, so a crash can leave a row without a file (recovery
    /// drops it) but never a file without a row.
    fn open_segment(&mut self, first_pts: Option<u64>, now: Instant, now_ms: i64) -> Result<()> {
        let row_id = insert_open_row(&self.conn, &self.ctx, &self.recording_id, self.part_id, self.part_seq, self.next_seq, first_pts, now_ms)?;
        self.create_open(row_id, first_pts, now)
    }

    /// The file half of opening: the row `row_id` (seq `self.next_seq`) is already committed.
    fn create_open(&mut self, row_id: i64, first_pts: Option<u64>, now: Instant) -> Result<()> {
        let seq = self.next_seq;
        let rel_path = segment_rel(&self.recording_id, self.part_seq, seq);
        let abs_path = self.ctx.media_dir.join(&rel_path);
        // Truncating is safe: the UNIQUE path constraint just proved no row
        // refers to this file, so anything there is an orphan.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&abs_path)
            .io("create segment", &abs_path)?;
        fsync_dir(&self.part_dir)?;
        self.next_seq += 1;
        log::debug!(target: "journal", "recording {}: opened segment {seq} at {rel_path}", self.recording_id);
        self.open = Some(OpenSegment {
            row_id,
            seq,
            rel_path,
            abs_path,
            file,
            buf: Vec::with_capacity(WRITE_BUFFER + PAGE as usize),
            page_started: now,
            hasher: Sha256::new(),
            bytes: 0,
            first_pts,
            max_pts: first_pts,
            prev_pts: None,
            step_sum: 0,
            step_count: 0,
            last_sync: now,
            unsynced: false,
            syncs: 0,
        });
        Ok(())
    }

    /// Commit protocol: flush, fsync the file, fsync the directory, then one
    /// UPDATE to `committed`. The segment stays in `self.open` until all of
    /// that succeeded, so a failed commit can be retried by the next cut or
    /// by `finish`.
    /// With `next` (`first_pts`, `now_ms` of the next segment), the next segment's open row is
    /// inserted in the same transaction and its id returned; the caller then creates its file.
    fn commit_open(
        &mut self,
        next_first_pts: Option<u64>,
        now_ms: i64,
        next: Option<(Option<u64>, i64)>,
    ) -> Result<(CommittedSegment, Option<i64>)> {
        let seg = self
            .open
            .as_mut()
            .expect("commit_open needs an open segment");
        seg.flush()?;
        if crate::fault::active() != Some(crate::fault::Fault::RowBeforeDataFsync) {
            seg.file
                .sync_all()
                .io("fsync segment", &seg.abs_path)?;
        }
        fsync_dir(&self.part_dir)?;
        let sha256 = hex(&seg.hasher.clone().finalize());
        let duration_ns = seg.duration_ns(next_first_pts, self.part_steps.0.checked_div(self.part_steps.1));
        let peak = self.levels.peak_db();
        let rms = self.levels.rms_db();
        let tx = self
            .conn
            .unchecked_transaction()
            .db("begin commit", &self.ctx.db_path)?;
        let changed = tx
            .execute(
                "UPDATE segments SET state = 'committed', bytes = ?1, sha256 = ?2, duration_ns = ?3,
                     first_pts_ns = ?4, last_pts_ns = ?5, audio_peak_db = ?6, audio_rms_db = ?7,
                     committed_at_ms = ?8
                 WHERE id = ?9 AND state = 'open'",
                // Timing metadata must never cost a segment its commit: a value SQLite cannot
                // hold is stored as unknown (NULL) rather than failing the commit.
                params![seg.bytes, sha256, sql_ns(duration_ns), sql_ns(seg.first_pts), sql_ns(seg.max_pts), peak, rms, now_ms, seg.row_id],
            )
            .db("commit segment", &self.ctx.db_path)?;
        let next_row = match next {
            Some((first_pts, opened_ms)) => Some(insert_open_row(
                &tx,
                &self.ctx,
                &self.recording_id,
                self.part_id,
                self.part_seq,
                self.next_seq,
                first_pts,
                opened_ms,
            )?),
            None => None,
        };
        tx.commit().db("commit segment", &self.ctx.db_path)?;
        if changed != 1 {
            // Only recovery changes open rows behind a writer's back, and it
            // never touches a live part; make the impossible loud.
            log::error!(target: "journal",
                "recording {}: segment {} row {} was not open at commit ({changed} rows changed)",
                self.recording_id, seg.rel_path, seg.row_id);
        }
        let mut seg = self.open.take().expect("checked above");
        self.part_steps = (self.part_steps.0 + seg.step_sum, self.part_steps.1 + seg.step_count);
        self.levels = LevelAccumulator::default();
        let committed = CommittedSegment {
            recording_id: self.recording_id.clone(),
            part_seq: self.part_seq,
            seq: seg.seq,
            path: std::mem::take(&mut seg.rel_path),
            abs_path: std::mem::take(&mut seg.abs_path),
            bytes: seg.bytes,
            sha256,
            duration_ns,
            first_pts_ns: seg.first_pts,
            last_pts_ns: seg.max_pts,
            audio_peak_db: peak,
            audio_rms_db: rms,
        };
        log::debug!(target: "journal", "recording {}: committed segment {} ({} bytes, {:?} ns)",
            self.recording_id, committed.seq, committed.bytes, committed.duration_ns);
        self.committed += 1;
        self.committed_bytes += committed.bytes;
        self.last_committed = Some(committed.clone());
        Ok((committed, next_row))
    }

    /// Removes an open segment that never received a byte: file first (then
    /// its directory entry is made durable), row second, mirroring the
    /// opening order.
    fn drop_empty_open(&mut self) -> Result<()> {
        let seg = self
            .open
            .take()
            .expect("drop_empty_open needs an open segment");
        let (abs_path, row_id) = (seg.abs_path.clone(), seg.row_id);
        drop(seg);
        std::fs::remove_file(&abs_path).io("remove empty segment", &abs_path)?;
        fsync_dir(&self.part_dir)?;
        self.conn
            .execute("DELETE FROM segments WHERE id = ?1", [row_id])
            .db("delete empty segment", &self.ctx.db_path)?;
        Ok(())
    }

    /// Number of data fsyncs on the open segment, for tests.
    #[cfg(test)]
    pub(crate) fn open_segment_syncs(&self) -> Option<u32> {
        self.open.as_ref().map(|s| s.syncs)
    }
}
