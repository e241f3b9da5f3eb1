//! [`Journal`], the main-thread handle: opens (and recovers) the media
//! directory and index, manages the recording and part lifecycle, hands out
//! [`PartWriter`]s, and answers queries. It never writes segment data itself;
//! that is the writers' job.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection};

use crate::db::{self, Ctx, SEGMENT_COLUMNS, STATE_LOG_KEEP};
use crate::error::{DbContext, IoContext, JournalError, Result};
use crate::fsio::{fsync_dir, part_dir_rel, DB_FILE, RECORDINGS_DIR};
use crate::model::{
    validate_recording_id, JournalOptions, NewRecording, Outcome, RecordingState, RecordingSummary,
    SegmentRow, StateLogRow,
};
use crate::recovery::{self, RecoveryAction, RecoveryReport};
use crate::writer::{LiveGuard, LiveParts, PartWriter};

/// The journal's main handle. Owns one SQLite connection; each
/// [`PartWriter`] it opens gets its own.
pub struct Journal {
    pub(crate) conn: Connection,
    pub(crate) ctx: Ctx,
    pub(crate) opts: JournalOptions,
    live: LiveParts,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("media_dir", &self.ctx.media_dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens the journal in `media_dir` (which must exist), creating the
    /// index and `recordings/` on first use, and runs crash recovery.
    pub fn open(
        media_dir: &Path,
        opts: JournalOptions,
        now_ms: i64,
    ) -> Result<(Journal, RecoveryReport)> {
        Self::open_with_log_keep(media_dir, opts, now_ms, STATE_LOG_KEEP)
    }

    pub(crate) fn open_with_log_keep(
        media_dir: &Path,
        opts: JournalOptions,
        now_ms: i64,
        state_log_keep: i64,
    ) -> Result<(Journal, RecoveryReport)> {
        if !media_dir.is_dir() {
            return Err(JournalError::MediaDirMissing {
                path: media_dir.to_path_buf(),
            });
        }
        let db_path = media_dir.join(DB_FILE);
        let fresh_db = !db_path.exists();
        let mut conn = db::connect(&db_path)?;
        db::migrate(&mut conn, &db_path)?;
        let recordings = media_dir.join(RECORDINGS_DIR);
        let fresh_root = !recordings.exists();
        if fresh_root {
            fs::create_dir(&recordings).io("create recordings directory", &recordings)?;
        }
        if fresh_db || fresh_root {
            fsync_dir(media_dir)?;
        }
        let ctx = Ctx {
            media_dir: media_dir.to_path_buf(),
            db_path,
            state_log_keep,
        };
        let report = recovery::recover_all(&conn, &ctx, now_ms)?;
        if report.is_empty() {
            log::info!(target: "journal", "opened {}: clean", media_dir.display());
        } else {
            log::warn!(target: "journal", "opened {}: {report}", media_dir.display());
        }
        let journal = Journal {
            conn,
            ctx,
            opts,
            live: Arc::new(Mutex::new(HashSet::new())),
        };
        Ok((journal, report))
    }

    /// The media directory.
    pub fn media_dir(&self) -> &Path {
        &self.ctx.media_dir
    }

    /// The index database file.
    pub fn db_path(&self) -> PathBuf {
        self.ctx.db_path.clone()
    }

    /// The options this journal was opened with.
    pub fn options(&self) -> JournalOptions {
        self.opts
    }

    /// Starts a recording, or resumes one that is `recording` or
    /// `interrupted` (its state goes back to `recording`; title, kind and
    /// start time of the existing row are kept). Completed and failed
    /// recordings are final, and so is one whose media was evicted.
    pub fn start_recording(&mut self, rec: &NewRecording, now_ms: i64) -> Result<()> {
        validate_recording_id(&rec.id)?;
        match db::recording_state(&self.conn, &self.ctx.db_path, &rec.id)? {
            None => {
                self.conn
                    .execute(
                        "INSERT INTO recordings (id, title, kind, event_uid, state, started_at_ms)
                         VALUES (?1, ?2, ?3, ?4, 'recording', ?5)",
                        params![rec.id, rec.title, rec.kind, rec.event_uid, now_ms],
                    )
                    .db("insert recording", &self.ctx.db_path)?;
                self.log_state(
                    Some(&rec.id),
                    "recording",
                    &format!("started {} {:?}", rec.kind, rec.title),
                    now_ms,
                )?;
                log::info!(target: "journal", "recording {}: started ({}, {:?})", rec.id, rec.kind, rec.title);
            }
            Some(state @ RecordingState::Interrupted) if self.is_evicted(&rec.id)? => {
                // Its media left the card after the upload; a new part could never be stitched
                // with the old ones.
                return Err(JournalError::RecordingEnded {
                    id: rec.id.clone(),
                    state: format!("{state} and its media evicted"),
                });
            }
            Some(state @ (RecordingState::Recording | RecordingState::Interrupted)) => {
                self.conn
                    .execute(
                        "UPDATE recordings SET state = 'recording', ended_at_ms = NULL, end_reason = NULL
                         WHERE id = ?1",
                        [&rec.id],
                    )
                    .db("resume recording", &self.ctx.db_path)?;
                self.log_state(
                    Some(&rec.id),
                    "recording",
                    &format!("resumed from {state}"),
                    now_ms,
                )?;
                log::info!(target: "journal", "recording {}: resumed from {state}", rec.id);
                self.reopen_stitch(&rec.id, now_ms)?;
            }
            Some(state) => {
                return Err(JournalError::RecordingEnded {
                    id: rec.id.clone(),
                    state: state.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Opens the next part of a recording in state `recording` and returns
    /// its writer. Parts whose writer was dropped without `finish` are
    /// recovered first (marked interrupted, "writer lost"); a part whose
    /// writer is still alive makes this fail with
    /// [`JournalError::WriterActive`].
    pub fn open_part(
        &mut self,
        recording_id: &str,
        encoder: &str,
        now_ms: i64,
    ) -> Result<PartWriter> {
        validate_recording_id(recording_id)?;
        match db::recording_state(&self.conn, &self.ctx.db_path, recording_id)? {
            None => {
                return Err(JournalError::UnknownRecording {
                    id: recording_id.to_string(),
                })
            }
            Some(RecordingState::Recording) => {}
            Some(state) => {
                return Err(JournalError::RecordingNotActive {
                    id: recording_id.to_string(),
                    state: state.to_string(),
                })
            }
        }
        // Nothing of the part exists yet, so a card below the reserve refuses it cleanly: no row,
        // no directory, and the caller's retry back-off opens one once space is freed.
        crate::space::check_reserve(self.opts.free_space, self.opts.min_free_bytes, &self.ctx.media_dir)?;
        self.recover_orphans(recording_id, now_ms)?;

        let part_seq: u32 = self
            .conn
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM parts WHERE recording_id = ?1",
                [recording_id],
                |r| r.get(0),
            )
            .db("choose part number", &self.ctx.db_path)?;
        self.conn
            .execute(
                "INSERT INTO parts (recording_id, seq, started_at_ms, state, encoder) VALUES (?1, ?2, ?3, 'open', ?4)",
                params![recording_id, part_seq, now_ms, encoder],
            )
            .db("insert part", &self.ctx.db_path)?;
        let part_id = self.conn.last_insert_rowid();

        // The row exists before the directory, so a crash here leaves at most
        // an empty part that recovery marks interrupted. Every directory on
        // the way down is fsynced so the new entries survive a power cut.
        let part_dir = self
            .ctx
            .media_dir
            .join(part_dir_rel(recording_id, part_seq));
        fs::create_dir_all(&part_dir).io("create part directory", &part_dir)?;
        let rec_dir = part_dir.parent().expect("part dir has a parent");
        fsync_dir(rec_dir)?;
        fsync_dir(&self.ctx.media_dir.join(RECORDINGS_DIR))?;
        fsync_dir(&self.ctx.media_dir)?;

        let next_seq = db::max_segment_seq(&self.conn, &self.ctx.db_path, recording_id)? + 1;
        self.log_state(
            Some(recording_id),
            "part-open",
            &format!("part {part_seq} opened, encoder {encoder}"),
            now_ms,
        )?;
        log::info!(target: "journal", "recording {recording_id}: opened part {part_seq} (encoder {encoder})");

        let conn = db::connect(&self.ctx.db_path)?;
        let guard = LiveGuard::register(&self.live, part_id);
        Ok(PartWriter::new(
            conn,
            self.ctx.clone(),
            self.opts,
            recording_id.to_string(),
            part_id,
            part_seq,
            next_seq,
            guard,
        ))
    }

    /// Ends a recording. `Completed` or `Interrupted` with no committed
    /// segment becomes `failed` with reason "no media" (plus the interruption's
    /// reason): a recording with nothing in it must never look like one that
    /// merely needs its remainder. Fails with
    /// [`JournalError::WriterActive`] while a writer is still alive; parts
    /// of dropped writers are recovered first.
    pub fn finish_recording(
        &mut self,
        recording_id: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<()> {
        validate_recording_id(recording_id)?;
        match db::recording_state(&self.conn, &self.ctx.db_path, recording_id)? {
            None => {
                return Err(JournalError::UnknownRecording {
                    id: recording_id.to_string(),
                })
            }
            Some(state @ (RecordingState::Completed | RecordingState::Failed)) => {
                return Err(JournalError::RecordingEnded {
                    id: recording_id.to_string(),
                    state: state.to_string(),
                })
            }
            Some(RecordingState::Recording | RecordingState::Interrupted) => {}
        }
        self.recover_orphans(recording_id, now_ms)?;
        let segments: u32 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM segments WHERE recording_id = ?1 AND state = 'committed'",
                [recording_id],
                |r| r.get(0),
            )
            .db("count committed segments", &self.ctx.db_path)?;
        let (state, reason) = match outcome {
            Outcome::Completed if segments == 0 => {
                (RecordingState::Failed, Some("no media".to_string()))
            }
            Outcome::Completed => (RecordingState::Completed, None),
            Outcome::Interrupted(r) if segments == 0 => {
                (RecordingState::Failed, Some(format!("no media: {r}")))
            }
            Outcome::Interrupted(r) => (RecordingState::Interrupted, Some(r)),
            Outcome::Failed(r) => (RecordingState::Failed, Some(r)),
        };
        self.conn
            .execute(
                "UPDATE recordings SET state = ?2, ended_at_ms = ?3, end_reason = ?4 WHERE id = ?1",
                params![recording_id, state, now_ms, reason],
            )
            .db("finish recording", &self.ctx.db_path)?;
        let detail = match &reason {
            Some(r) => format!("{state} ({r}), {segments} segments"),
            None => format!("{state}, {segments} segments"),
        };
        self.log_state(Some(recording_id), state.as_str(), &detail, now_ms)?;
        if state == RecordingState::Completed {
            log::info!(target: "journal", "recording {recording_id}: {detail}");
        } else {
            log::warn!(target: "journal", "recording {recording_id}: {detail}");
        }
        Ok(())
    }

    /// Appends a row to the bounded state log.
    pub fn log_state(
        &mut self,
        recording_id: Option<&str>,
        state: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.ctx
            .log_state(&self.conn, now_ms, recording_id, state, detail)
    }

    /// All recordings, oldest first.
    pub fn recordings(&self) -> Result<Vec<RecordingSummary>> {
        self.query_recordings(None, "1")
    }

    /// The newest `n` recordings (by start), oldest of them first, and how many there are in
    /// all: what a status page or `lectern recordings --newest N` asks for, so a box with a
    /// year of recordings does not build every row to show twenty.
    pub fn newest_recordings(&self, n: u32) -> Result<(Vec<RecordingSummary>, u64)> {
        let total: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM recordings", [], |r| r.get(0))
            .db("count recordings", &self.ctx.db_path)?;
        let cond = format!("r.id IN (SELECT id FROM recordings ORDER BY started_at_ms DESC, id DESC LIMIT {n})");
        Ok((self.query_recordings(None, &cond)?, total as u64))
    }

    /// One recording.
    pub fn recording(&self, id: &str) -> Result<Option<RecordingSummary>> {
        Ok(self.query_recordings(Some(id), "1")?.into_iter().next())
    }

    /// Recordings with their aggregates, restricted to `id` (if any) and to those meeting `cond`
    /// (a constant SQL condition over `recordings r`). The part and segment aggregates are
    /// computed for the selected recordings only, so asking about one recording does not scan
    /// every segment the box ever recorded. An evicted recording has no segment rows left; its
    /// totals come from its `evictions` row (`retention.rs`).
    pub(crate) fn query_recordings(&self, id: Option<&str>, cond: &str) -> Result<Vec<RecordingSummary>> {
        let selected = format!("SELECT r.id FROM recordings r WHERE (?1 IS NULL OR r.id = ?1) AND ({cond})");
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT r.id, r.title, r.kind, r.state, r.event_uid, r.started_at_ms, r.ended_at_ms, r.end_reason,
                        COALESCE(p.n, 0), COALESCE(e.segments, s.n, 0), COALESCE(e.bytes, s.bytes, 0),
                        COALESCE(e.duration_ns, s.dur, 0), e.started_at_ms
                 FROM recordings r
                 LEFT JOIN (SELECT recording_id, COUNT(*) AS n FROM parts
                            WHERE recording_id IN ({selected}) GROUP BY recording_id) p
                        ON p.recording_id = r.id
                 LEFT JOIN (SELECT recording_id, COUNT(*) AS n, SUM(bytes) AS bytes, SUM(duration_ns) AS dur
                            FROM segments WHERE state = 'committed' AND recording_id IN ({selected})
                            GROUP BY recording_id) s
                        ON s.recording_id = r.id
                 LEFT JOIN evictions e ON e.recording_id = r.id
                 WHERE r.id IN ({selected})
                 ORDER BY r.started_at_ms, r.id"
            ))
            .db("prepare recordings query", &self.ctx.db_path)?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(RecordingSummary {
                    id: r.get(0)?,
                    title: r.get(1)?,
                    kind: r.get(2)?,
                    state: r.get(3)?,
                    event_uid: r.get(4)?,
                    started_at_ms: r.get(5)?,
                    ended_at_ms: r.get(6)?,
                    end_reason: r.get(7)?,
                    parts: r.get(8)?,
                    segments: r.get(9)?,
                    bytes: r.get(10)?,
                    media_duration_ns: r.get(11)?,
                    evicted_at_ms: r.get(12)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .db("query recordings", &self.ctx.db_path)?;
        Ok(rows)
    }

    /// All segment rows of a recording (open and committed), in sequence.
    pub fn segments(&self, recording_id: &str) -> Result<Vec<SegmentRow>> {
        let sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments s JOIN parts p ON p.id = s.part_id
             WHERE s.recording_id = ?1 ORDER BY s.seq"
        );
        let mut stmt = self
            .conn
            .prepare_cached(&sql)
            .db("prepare segments query", &self.ctx.db_path)?;
        let media_dir = &self.ctx.media_dir;
        let rows = stmt
            .query_map([recording_id], |r| db::segment_from_row(media_dir, r))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .db("query segments", &self.ctx.db_path)?;
        Ok(rows)
    }

    /// The newest `limit` state-log rows, oldest first.
    pub fn state_log(&self, limit: usize) -> Result<Vec<StateLogRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at_ms, recording_id, state, detail FROM
                     (SELECT * FROM state_log ORDER BY id DESC LIMIT ?1)
                 ORDER BY id",
            )
            .db("prepare state log query", &self.ctx.db_path)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map([limit], |r| {
                Ok(StateLogRow {
                    id: r.get(0)?,
                    at_ms: r.get(1)?,
                    recording_id: r.get(2)?,
                    state: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .db("query state log", &self.ctx.db_path)?;
        Ok(rows)
    }

    /// Recovers parts of `recording_id` left open by dropped writers.
    fn recover_orphans(&mut self, recording_id: &str, now_ms: i64) -> Result<Vec<RecoveryAction>> {
        recovery::recover_orphan_parts(&self.conn, &self.ctx, recording_id, &self.live, now_ms)
    }

    /// Direct access to the main connection, for tests.
    #[cfg(test)]
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }
}
