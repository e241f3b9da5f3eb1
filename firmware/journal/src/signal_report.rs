//! The recording's quality report: the stretches during which a signal alarm (silent mic,
//! clipping, black or frozen picture, lost camera or mic; `lectern-signals`) held, stored per
//! part when the part ends and written into the manifest as `quality` when the recording is
//! stitched. The journal only stores what the daemon's signal monitor reported; it decides
//! nothing about signals.
//!
//! # Schema (additive, created by [`SCHEMA`])
//!
//! `signal_stretches (recording_id, part_seq, alarm, from_ms, to_ms)`: wall-clock milliseconds;
//! `to_ms` NULL for a stretch that lasted to the part's end. Written once per part (a second
//! write for the same part replaces the first), so a crash before the part's end loses only
//! that part's report, never media.

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use crate::db::Ctx;
use crate::error::{DbContext, Result};
use crate::journal::Journal;
use crate::stitch_store::{rfc3339, StitchPart};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS signal_stretches (
    recording_id TEXT NOT NULL,
    part_seq     INTEGER NOT NULL,
    alarm        TEXT NOT NULL,
    from_ms      INTEGER NOT NULL,
    to_ms        INTEGER,
    PRIMARY KEY (recording_id, part_seq, alarm, from_ms)
);";

/// One stretch of one part during which an alarm held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalStretch {
    pub part_seq: u32,
    /// The alarm's stable name, e.g. `silent_mic`.
    pub alarm: String,
    pub from_ms: i64,
    /// `None`: it lasted until the part ended.
    pub to_ms: Option<i64>,
}

impl Journal {
    /// Stores a part's stretches, replacing any stored before for that part.
    pub fn record_signal_stretches(&mut self, recording_id: &str, part_seq: u32, stretches: &[SignalStretch]) -> Result<()> {
        let db_path = self.ctx.db_path.clone();
        let tx = self.conn.transaction().db("begin signal report", &db_path)?;
        tx.execute("DELETE FROM signal_stretches WHERE recording_id = ?1 AND part_seq = ?2", params![recording_id, part_seq])
            .db("replace signal report", &db_path)?;
        for s in stretches {
            tx.execute(
                "INSERT OR REPLACE INTO signal_stretches (recording_id, part_seq, alarm, from_ms, to_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![recording_id, part_seq, s.alarm, s.from_ms, s.to_ms],
            )
            .db("insert signal stretch", &db_path)?;
        }
        tx.commit().db("commit signal report", &db_path)
    }

    /// Every stored stretch of a recording, by part and start.
    pub fn signal_stretches(&self, recording_id: &str) -> Result<Vec<SignalStretch>> {
        load(&self.conn, &self.ctx, recording_id)
    }

    /// The recording's verdict ([`verdict`]) and the alarms raised in it, by name, for
    /// `lectern recordings`.
    pub fn quality(&self, recording_id: &str, scheduled: bool) -> Result<(&'static str, Vec<String>)> {
        let stretches = load(&self.conn, &self.ctx, recording_id)?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT seq, started_at_ms, ended_at_ms FROM parts WHERE recording_id = ?1 ORDER BY seq")
            .db("prepare part spans query", &self.ctx.db_path)?;
        let spans: Vec<(u32, i64, Option<i64>)> = stmt
            .query_map([recording_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(|rows| rows.collect())
            .db("query part spans", &self.ctx.db_path)?;
        let mut alarms: Vec<String> = stretches.iter().map(|s| s.alarm.clone()).collect();
        alarms.sort_unstable();
        alarms.dedup();
        Ok((verdict(&stretches, &spans, scheduled), alarms))
    }
}

/// The share of a recording's captured time that both a silent mic and a still picture must
/// cover for [`verdict`] to call a scheduled lecture an empty room.
pub const EMPTY_ROOM_SHARE: f64 = 0.8;

/// A recording's one-word verdict from its stretches and its parts' spans `(seq, start, end)`:
/// `empty_room` for a *scheduled* recording whose captured time was at least
/// [`EMPTY_ROOM_SHARE`] silent mic and at least as much still picture (frozen or black) — a
/// lecture that did not happen, usually a stale timetable; never deleted, only flagged;
/// `flagged` for any other alarm; `ok` for none. An open stretch ends with its part.
pub fn verdict(stretches: &[SignalStretch], spans: &[(u32, i64, Option<i64>)], scheduled: bool) -> &'static str {
    if stretches.is_empty() {
        return "ok";
    }
    let captured: i64 = spans.iter().map(|&(_, start, end)| end.map_or(0, |e| (e - start).max(0))).sum();
    if scheduled && captured > 0 {
        let covered = |names: &[&str]| -> i64 {
            stretches
                .iter()
                .filter(|s| names.contains(&s.alarm.as_str()))
                .map(|s| {
                    let end = s.to_ms.or_else(|| spans.iter().find(|p| p.0 == s.part_seq).and_then(|p| p.2)).unwrap_or(s.from_ms);
                    (end - s.from_ms).max(0)
                })
                .sum()
        };
        let need = (EMPTY_ROOM_SHARE * captured as f64) as i64;
        let still = covered(&["frozen_picture"]).max(covered(&["black_picture"]));
        if covered(&["silent_mic"]) >= need && still >= need {
            return "empty_room";
        }
    }
    "flagged"
}

pub(crate) fn load(conn: &Connection, ctx: &Ctx, recording_id: &str) -> Result<Vec<SignalStretch>> {
    let mut stmt = conn
        .prepare_cached("SELECT part_seq, alarm, from_ms, to_ms FROM signal_stretches WHERE recording_id = ?1 ORDER BY part_seq, from_ms, alarm")
        .db("prepare signal report query", &ctx.db_path)?;
    stmt.query_map([recording_id], |r| Ok(SignalStretch { part_seq: r.get(0)?, alarm: r.get(1)?, from_ms: r.get(2)?, to_ms: r.get(3)? }))
        .and_then(|rows| rows.collect())
        .db("query signal report", &ctx.db_path)
}

/// The manifest's `quality`: a one-word verdict ([`verdict`]: `ok`, `flagged`, `empty_room`) and
/// each stretch with its times; an open stretch ends with its part.
pub fn quality_json(stretches: &[SignalStretch], parts: &[StitchPart], scheduled: bool) -> Value {
    let items: Vec<Value> = stretches
        .iter()
        .map(|s| {
            let end = s.to_ms.or_else(|| parts.iter().find(|p| p.seq == s.part_seq).and_then(|p| p.ended_at_ms));
            json!({
                "alarm": s.alarm,
                "part": s.part_seq,
                "from": rfc3339(s.from_ms),
                "to": end.map_or(Value::Null, rfc3339),
                "duration_s": end.map(|e| (e - s.from_ms).max(0) as f64 / 1e3),
            })
        })
        .collect();
    let spans: Vec<(u32, i64, Option<i64>)> = parts.iter().map(|p| (p.seq, p.started_at_ms, p.ended_at_ms)).collect();
    json!({ "verdict": verdict(stretches, &spans, scheduled), "stretches": items })
}
