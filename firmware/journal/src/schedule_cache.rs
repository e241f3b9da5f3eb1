//! The schedule cache: the events the agent will record, kept in the journal database so the box
//! keeps its schedule across restarts and while the calendar source is unreachable.
//!
//! It owns two additive tables and the rule for changing them: the cache changes only by
//! [`Journal::replace_schedule`], which diffs the cached events against a complete new calendar
//! ([`lectern_schedule::diff`]) and applies the changes (add, move, retitle, update, cancel) in
//! **one** transaction, so a failure half-way leaves the old cache as it was.
//! [`Journal::apply_calendar_reply`] is the whole fetch decision in one place: only a 2xx reply
//! whose body is a complete calendar reaches `replace_schedule` (a valid *empty* calendar
//! included: everything was cancelled); a 304 only marks the cache as fresh; a failed, 5xx,
//! non-calendar, truncated or unparsable reply is logged with what was wrong and changes nothing.
//! A complete calendar with bad events applies its good ones; a cached event that one of the
//! skipped events covers ([`lectern_schedule::SkippedEvent::covers`]) is kept as it was, not
//! cancelled, since a bad copy of an event does not say the lecture was cancelled.
//!
//! # Schema (additive, created by [`SCHEMA`])
//!
//! - `schedule_events(uid PK, start_ms, end_ms > start_ms, title, location NULL, series NULL,
//!   last_modified_ms NULL, workflow NULL, workflow_config (JSON object), device_names (JSON
//!   array), episode_xml BLOB NULL, series_xml BLOB NULL, state 'scheduled'|'cancelled',
//!   changed_at_ms)`
//! - `schedule_meta(id = 1, source, etag NULL, fetched_at_ms, changed_at_ms)`: where the cache
//!   came from, the ETag for the next `If-None-Match`, when it was last confirmed and last changed
//!
//! # Bounded growth
//!
//! Events that ended more than [`SCHEDULE_RETENTION_MS`] ago are neither stored nor compared (a
//! server that still lists them does not make them "added" again), and a cancelled row is deleted
//! once it has been cancelled that long; both are pruned by every replace. The table therefore
//! holds at most the calendar's live window plus a week of cancellations.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use lectern_schedule::{diff, parse_reply, Change, ParseOptions, Reply, ScheduleError, ScheduledEvent, SkippedEvent};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::error::{DbContext, Result};
use crate::journal::Journal;

/// How long past and cancelled events stay in the cache.
pub const SCHEDULE_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

/// The schedule tables; run by the journal's migration on every open.
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS schedule_events (
    uid              TEXT PRIMARY KEY NOT NULL,
    start_ms         INTEGER NOT NULL,
    end_ms           INTEGER NOT NULL,
    title            TEXT NOT NULL,
    location         TEXT,
    series           TEXT,
    last_modified_ms INTEGER,
    workflow         TEXT,
    workflow_config  TEXT NOT NULL,
    device_names     TEXT NOT NULL,
    episode_xml      BLOB,
    series_xml       BLOB,
    state            TEXT NOT NULL CHECK (state IN ('scheduled', 'cancelled')),
    changed_at_ms    INTEGER NOT NULL,
    CHECK (end_ms > start_ms)
);
CREATE INDEX IF NOT EXISTS schedule_events_by_start ON schedule_events (state, start_ms);
CREATE TABLE IF NOT EXISTS schedule_meta (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    source        TEXT NOT NULL,
    etag          TEXT,
    fetched_at_ms INTEGER NOT NULL,
    changed_at_ms INTEGER NOT NULL
);
";

/// Where the cached schedule came from and how fresh it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleMeta {
    /// The calendar's URL or file path, as the caller named it.
    pub source: String,
    /// The ETag of the reply the cache holds, for `If-None-Match`.
    pub etag: Option<String>,
    /// When a calendar (or a 304) last confirmed the cache.
    pub fetched_at_ms: i64,
    /// When the cached events last changed.
    pub changed_at_ms: i64,
}

/// What [`Journal::apply_calendar_reply`] did with one reply.
#[derive(Debug)]
pub enum ReplyOutcome {
    /// The reply was a complete calendar; these changes were applied (possibly none).
    Applied {
        /// What changed in the cache.
        changes: Vec<Change>,
        /// The calendar's bad events, skipped (empty for a clean calendar).
        skipped: Vec<SkippedEvent>,
        /// Uids of cached events kept as they were because a skipped event covers them.
        kept: Vec<String>,
    },
    /// 304: the cache is current; only `fetched_at_ms` moved.
    NotModified,
    /// The reply was unusable; the cache was not touched. The error says why.
    Rejected(ScheduleError),
}

const COLUMNS: &str = "uid, start_ms, end_ms, title, location, series, last_modified_ms, workflow, workflow_config, device_names, episode_xml, series_xml";

fn from_ms(ms: i64) -> DateTime<Utc> {
    // Every stored time came from a `DateTime<Utc>`, so it converts back.
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A JSON column, decoded; a bad one is reported as a conversion failure of that column.
fn json_col<T: serde::de::DeserializeOwned>(row: &Row, i: usize) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn event_from_row(row: &Row) -> rusqlite::Result<ScheduledEvent> {
    Ok(ScheduledEvent {
        uid: row.get(0)?,
        start: from_ms(row.get(1)?),
        end: from_ms(row.get(2)?),
        title: row.get(3)?,
        location: row.get(4)?,
        series: row.get(5)?,
        last_modified: row.get::<_, Option<i64>>(6)?.map(from_ms),
        workflow: row.get(7)?,
        workflow_config: json_col(row, 8)?,
        device_names: json_col(row, 9)?,
        episode_xml: row.get(10)?,
        series_xml: row.get(11)?,
    })
}

/// The scheduled (not cancelled) events ending after `after_ms`, by start then uid.
fn scheduled(conn: &Connection, after_ms: i64) -> rusqlite::Result<Vec<ScheduledEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_events WHERE state = 'scheduled' AND end_ms > ?1 ORDER BY start_ms, uid"
    ))?;
    let rows = stmt.query_map([after_ms], event_from_row)?;
    rows.collect()
}

/// Inserts or overwrites one event as scheduled.
fn upsert(conn: &Connection, e: &ScheduledEvent, now_ms: i64) -> rusqlite::Result<()> {
    let config = serde_json::to_string(&e.workflow_config).expect("a string map serializes");
    let devices = serde_json::to_string(&e.device_names).expect("a string list serializes");
    conn.prepare_cached(&format!(
        "INSERT INTO schedule_events ({COLUMNS}, state, changed_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'scheduled', ?13)
         ON CONFLICT (uid) DO UPDATE SET start_ms = excluded.start_ms, end_ms = excluded.end_ms,
           title = excluded.title, location = excluded.location, series = excluded.series,
           last_modified_ms = excluded.last_modified_ms, workflow = excluded.workflow,
           workflow_config = excluded.workflow_config, device_names = excluded.device_names,
           episode_xml = excluded.episode_xml, series_xml = excluded.series_xml,
           state = 'scheduled', changed_at_ms = excluded.changed_at_ms"
    ))?
    .execute(params![
        e.uid,
        e.start.timestamp_millis(),
        e.end.timestamp_millis(),
        e.title,
        e.location,
        e.series,
        e.last_modified.map(|t| t.timestamp_millis()),
        e.workflow,
        config,
        devices,
        e.episode_xml,
        e.series_xml,
        now_ms
    ])?;
    Ok(())
}

impl Journal {
    /// Replaces the cached schedule with `events` (a complete calendar from `source`) and returns
    /// what changed. Everything happens in one transaction: on error the old cache and its meta
    /// row are unchanged. Events that ended more than [`SCHEDULE_RETENTION_MS`] before `now_ms`
    /// are ignored, and expired rows are pruned.
    pub fn replace_schedule(&mut self, source: &str, etag: Option<&str>, events: &[ScheduledEvent], now_ms: i64) -> Result<Vec<Change>> {
        self.replace_schedule_keeping(source, etag, events, &[], now_ms).map(|(changes, _)| changes)
    }

    /// [`Self::replace_schedule`] for a calendar that skipped bad events: a cached event that one
    /// of `skipped` covers is kept as it was instead of cancelled. Returns the changes and the
    /// uids kept that way.
    pub fn replace_schedule_keeping(
        &mut self,
        source: &str,
        etag: Option<&str>,
        events: &[ScheduledEvent],
        skipped: &[SkippedEvent],
        now_ms: i64,
    ) -> Result<(Vec<Change>, Vec<String>)> {
        let db_path = self.ctx.db_path.clone();
        let cutoff = now_ms.saturating_sub(SCHEDULE_RETENTION_MS);
        let live: Vec<ScheduledEvent> = events.iter().filter(|e| e.end.timestamp_millis() > cutoff).cloned().collect();
        // Take the write lock up front: other connections (outbox, writers) share this database.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).db("begin schedule replace", &db_path)?;
        let old = scheduled(&tx, cutoff).db("read cached schedule", &db_path)?;
        let mut kept = Vec::new();
        let mut changes = diff(&old, &live);
        changes.retain(|c| match c {
            Change::Cancelled { uid, .. } if skipped.iter().any(|s| s.covers(uid)) => {
                kept.push(uid.clone());
                false
            }
            _ => true,
        });
        let by_uid: HashMap<&str, &ScheduledEvent> = live.iter().map(|e| (e.uid.as_str(), e)).collect();
        let mut written = HashSet::new();
        for change in &changes {
            match change {
                Change::Cancelled { uid, .. } => {
                    tx.execute("UPDATE schedule_events SET state = 'cancelled', changed_at_ms = ?2 WHERE uid = ?1", params![uid, now_ms])
                        .db("cancel scheduled event", &db_path)?;
                }
                other if written.insert(other.uid()) => {
                    let event = by_uid.get(other.uid()).expect("diff only names uids of the new schedule");
                    upsert(&tx, event, now_ms).db("store scheduled event", &db_path)?;
                }
                _ => {}
            }
        }
        let pruned = tx
            .execute(
                "DELETE FROM schedule_events WHERE end_ms <= ?1 OR (state = 'cancelled' AND changed_at_ms <= ?1)",
                [cutoff],
            )
            .db("prune schedule", &db_path)?;
        let changed = !changes.is_empty() || read_meta(&tx).db("read schedule meta", &db_path)?.is_none_or(|m| m.source != source);
        tx.execute(
            "INSERT INTO schedule_meta (id, source, etag, fetched_at_ms, changed_at_ms) VALUES (1, ?1, ?2, ?3, ?3)
             ON CONFLICT (id) DO UPDATE SET source = excluded.source, etag = excluded.etag,
               fetched_at_ms = excluded.fetched_at_ms,
               changed_at_ms = CASE WHEN ?4 THEN excluded.changed_at_ms ELSE schedule_meta.changed_at_ms END",
            params![source, etag, now_ms, changed],
        )
        .db("write schedule meta", &db_path)?;
        tx.commit().db("commit schedule replace", &db_path)?;
        if !changes.is_empty() || pruned > 0 {
            log::info!(target: "journal", "schedule from {source}: {} events, {} changes, {pruned} expired rows pruned", live.len(), changes.len());
        }
        for change in &changes {
            log::debug!(target: "journal", "schedule change: {change:?}");
        }
        Ok((changes, kept))
    }

    /// The cached events that are still scheduled, by start then uid (cancelled ones excluded).
    pub fn cached_schedule(&self) -> Result<Vec<ScheduledEvent>> {
        scheduled(&self.conn, i64::MIN).db("read cached schedule", &self.ctx.db_path)
    }

    /// Where the cache came from and how fresh it is; `None` before the first calendar.
    pub fn schedule_meta(&self) -> Result<Option<ScheduleMeta>> {
        read_meta(&self.conn).db("read schedule meta", &self.ctx.db_path)
    }

    /// Applies one calendar fetch from `source`: HTTP `status`, its `ETag` and `body` (a local
    /// file is status 200). See the module docs for which replies change the cache; a rejected
    /// reply is logged with what was wrong and returned as [`ReplyOutcome::Rejected`], and the
    /// `Err` case is only for a database failure.
    pub fn apply_calendar_reply(
        &mut self,
        source: &str,
        status: u16,
        etag: Option<&str>,
        body: &[u8],
        opts: &ParseOptions,
        now_ms: i64,
    ) -> Result<ReplyOutcome> {
        match parse_reply(status, body, opts) {
            Ok(Reply::Calendar(cal)) => {
                let (changes, kept) = self.replace_schedule_keeping(source, etag, &cal.events, &cal.skipped, now_ms)?;
                Ok(ReplyOutcome::Applied { changes, skipped: cal.skipped, kept })
            }
            Ok(Reply::NotModified) => {
                self.conn
                    .execute("UPDATE schedule_meta SET fetched_at_ms = ?1 WHERE id = 1", [now_ms])
                    .db("mark schedule fresh", &self.ctx.db_path)?;
                Ok(ReplyOutcome::NotModified)
            }
            Err(e) => {
                let kept = self.cached_schedule()?.len();
                log::error!(target: "journal", "schedule from {source} not updated, keeping {kept} cached events: {e}");
                Ok(ReplyOutcome::Rejected(e))
            }
        }
    }
}

fn read_meta(conn: &Connection) -> rusqlite::Result<Option<ScheduleMeta>> {
    conn.query_row("SELECT source, etag, fetched_at_ms, changed_at_ms FROM schedule_meta WHERE id = 1", [], |r| {
        Ok(ScheduleMeta { source: r.get(0)?, etag: r.get(1)?, fetched_at_ms: r.get(2)?, changed_at_ms: r.get(3)? })
    })
    .optional()
}
