//! The schedule: turns calendar bytes (an Opencast capture-agent calendar or a plain `.ics`
//! timetable) into [`ScheduledEvent`]s, and computes the [`Change`]s between two schedules.
//!
//! It owns parsing and diffing and nothing else: no network, no store, no clock (the one
//! exception, [`load_file`], reads the wall clock for its recurrence horizon and is meant for the
//! daemon's local-file source and the CLI). The journal stores what this crate returns.
//!
//! # Pipeline
//!
//! 1. [`lines`]: unfold at the byte level (CRLF or LF; a line starting with a space or tab continues
//!    the previous one) *before* UTF-8 decoding, so a fold through a multi-byte character
//!    survives; every logical line keeps the 1-based number of the physical line it starts on.
//!    The same pass checks the component structure (`BEGIN`/`END` nesting, a leading
//!    `BEGIN:VCALENDAR`, a final `END:VCALENDAR`), so a non-calendar or truncated reply is
//!    rejected with the line where it went wrong.
//! 2. The `icalendar` crate parses the unfolded text into components and properties and
//!    unescapes TEXT values (D10).
//! 3. [`mod@event`]: each VEVENT becomes one event, or, with `RRULE`/`RDATE`, one event per
//!    occurrence inside the horizon of [`ParseOptions`] (expanded by the `rrule` crate; `TZID`
//!    local times through `chrono-tz`). Opencast's base64 `ATTACH`es are decoded: `episode.xml`
//!    and `series.xml` are kept as bytes for ingest, the capture-agent properties give the
//!    workflow, its configuration and the device names.
//!
//! # Whole calendar, bad events
//!
//! A reply that is not a whole calendar (empty, not iCalendar, truncated, a content line that does
//! not parse, not UTF-8) is a [`ScheduleError`] naming the line of the original input, and no
//! events are returned: it must change nothing. So are the calendar-wide limits of
//! [`ParseOptions`] and two expanded events with one uid.
//!
//! Inside a whole calendar, one bad event (no `UID`, no `DTSTART`, no end, an end not after the
//! start, a bad date, duration, time zone, `RRULE` or base64 attachment, a duplicate `UID` or
//! `RECURRENCE-ID`) does not stop the others: it is returned in [`Calendar::skipped`] with the
//! line of its problem, its `UID` (or, when that is what is missing, its position among the
//! calendar's VEVENTs) and what was wrong, and every good event is returned as usual. A cache
//! that had the event before keeps it as it was ([`SkippedEvent::covers`]), since a bad copy
//! says nothing about whether the lecture was cancelled.
//!
//! # Occurrence ids
//!
//! A recurring event's occurrences get the uid `UID-YYYYMMDDTHHMMSSZ` (the occurrence's original
//! start in UTC), so the same occurrence keeps its uid across fetches, and an override
//! (`RECURRENCE-ID`) that moves it shows up as a move, not as a cancel plus an add.

mod diff;
mod event;
mod lines;
mod props;
mod reply;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::{Serialize, Serializer};

pub use diff::{diff, Change};
pub use reply::{parse_reply, Reply};

/// A calendar that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The calendar file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a usable calendar. `line` is the 1-based line of the original input
    /// (before unfolding) where the problem is.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based physical line number in the input.
        line: usize,
        /// What was wrong, in words an AV technician can act on.
        message: String,
    },
    /// The server answered with a status that carries no calendar.
    #[error("server replied HTTP {status}, not a calendar")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
}

impl ScheduleError {
    /// The 1-based input line a parse error points at.
    pub fn line(&self) -> Option<usize> {
        match self {
            ScheduleError::Parse { line, .. } => Some(*line),
            _ => None,
        }
    }

    pub(crate) fn at(line: usize, message: impl Into<String>) -> ScheduleError {
        ScheduleError::Parse { line, message: message.into() }
    }
}

/// One lecture to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledEvent {
    /// Opencast's recording id (`UID`), or `UID-YYYYMMDDTHHMMSSZ` for an occurrence of a
    /// recurring event.
    pub uid: String,
    /// Start, UTC.
    pub start: DateTime<Utc>,
    /// End, UTC; always after `start`.
    pub end: DateTime<Utc>,
    /// `SUMMARY`, unescaped; empty when absent.
    pub title: String,
    /// `LOCATION` (Opencast: the capture agent's name).
    pub location: Option<String>,
    /// `RELATED-TO` (Opencast: the series id).
    pub series: Option<String>,
    /// `LAST-MODIFIED`, UTC.
    pub last_modified: Option<DateTime<Utc>>,
    /// `org.opencastproject.workflow.definition` from the capture-agent properties.
    pub workflow: Option<String>,
    /// `org.opencastproject.workflow.config.*` with that prefix stripped.
    pub workflow_config: BTreeMap<String, String>,
    /// `capture.device.names`, split at commas.
    pub device_names: Vec<String>,
    /// The decoded `episode.xml` attachment (Dublin Core), kept for ingest.
    #[serde(rename = "episode_xml_bytes", serialize_with = "byte_len")]
    pub episode_xml: Option<Vec<u8>>,
    /// The decoded `series.xml` attachment (Dublin Core), kept for ingest.
    #[serde(rename = "series_xml_bytes", serialize_with = "byte_len")]
    pub series_xml: Option<Vec<u8>>,
}

/// Attachments are shown as their size in JSON: the CLI is for reading, the bytes are for ingest.
fn byte_len<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => s.serialize_some(&b.len()),
        None => s.serialize_none(),
    }
}

/// A parsed calendar: its events sorted by start, then uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Calendar {
    /// Every event to record, occurrences of recurring events expanded.
    pub events: Vec<ScheduledEvent>,
    /// The events that could not be used, by line; the rest of the calendar still applies.
    pub skipped: Vec<SkippedEvent>,
}

/// One VEVENT of a whole calendar that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedEvent {
    /// 1-based input line of the problem (the property, or the `BEGIN:VEVENT` for a missing one).
    pub line: usize,
    /// 1-based input line of the event's `BEGIN:VEVENT`.
    pub begin: usize,
    /// 1-based position among the calendar's VEVENTs (names the event when it has no UID).
    pub position: usize,
    /// Its `UID`, when it has one.
    pub uid: Option<String>,
    /// What was wrong, in words an AV technician can act on.
    pub message: String,
}

impl SkippedEvent {
    /// Whether a cached event with `uid` is this event, or one occurrence of it
    /// (`UID-YYYYMMDDTHHMMSSZ`): such an event is kept as it was rather than cancelled.
    pub fn covers(&self, uid: &str) -> bool {
        let Some(own) = self.uid.as_deref() else { return false };
        match uid.strip_prefix(own) {
            Some("") => true,
            Some(rest) => {
                let b = rest.as_bytes();
                b.len() == 17
                    && b[0] == b'-'
                    && b[9] == b'T'
                    && b[16] == b'Z'
                    && b[1..9].iter().chain(&b[10..16]).all(u8::is_ascii_digit)
            }
            None => false,
        }
    }
}

impl std::fmt::Display for SkippedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.uid {
            Some(uid) => write!(f, "line {}: event {uid} skipped: {}", self.line, self.message),
            None => write!(f, "line {}: event #{} (no UID, begins on line {}) skipped: {}", self.line, self.position, self.begin, self.message),
        }
    }
}

/// How far recurrences are expanded and how much a calendar may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// Occurrences that end at or before this are not expanded.
    pub from: DateTime<Utc>,
    /// Occurrences that start at or after this are not expanded.
    pub until: DateTime<Utc>,
    /// At most this many occurrences per recurring event (a hostile `RRULE` cannot explode
    /// memory); more are dropped with a warning in the log.
    pub max_occurrences: u16,
    /// A calendar with more events than this (after expansion) is rejected.
    pub max_events: usize,
    /// Dates all recurrences of a calendar may yield on their way from DTSTART to the end of the
    /// horizon, counted before the horizon filter. The `rrule` crate always walks from DTSTART,
    /// so an old DTSTART with a fine-grained rule would otherwise cost unbounded CPU; a calendar
    /// that needs more is rejected.
    pub max_steps: usize,
    /// The zone of "floating" local times (no `Z`, no `TZID`); `None` rejects them.
    pub floating_tz: Option<chrono_tz::Tz>,
}

impl ParseOptions {
    /// Days ahead that recurrences are expanded by default (pyCA's `cal_lookahead` is 14 too).
    pub const DEFAULT_LOOKAHEAD_DAYS: i64 = 14;

    /// The default horizon around `now`: from one day back (so a lecture running now is kept)
    /// to [`Self::DEFAULT_LOOKAHEAD_DAYS`] ahead, 1000 occurrences per event, 10 000 events,
    /// 100 000 recurrence steps (a daily rule may start 270 years back, an hourly one 11).
    pub fn around(now: DateTime<Utc>) -> ParseOptions {
        ParseOptions {
            from: now - Duration::days(1),
            until: now + Duration::days(Self::DEFAULT_LOOKAHEAD_DAYS),
            max_occurrences: 1000,
            max_events: 10_000,
            max_steps: 100_000,
            floating_tz: None,
        }
    }
}

/// Parses a whole calendar; see the crate docs for what is accepted and what is skipped.
pub fn parse(bytes: &[u8], opts: &ParseOptions) -> Result<Calendar, ScheduleError> {
    let doc = lines::scan(bytes)?;
    let text = doc.unfolded_text();
    let parsed = icalendar::parser::read_calendar(&text).map_err(|e| doc.parser_error(&e))?;
    let (mut events, skipped) = event::collect(&doc, &parsed, opts)?;
    events.sort_by(|a, b| (a.start, &a.uid).cmp(&(b.start, &b.uid)));
    Ok(Calendar { events, skipped })
}

/// Reads and parses a calendar file with [`ParseOptions::around`] the current time.
pub fn load_file(path: &Path) -> Result<Calendar, ScheduleError> {
    load_file_with(path, &ParseOptions::around(Utc::now()))
}

/// Reads and parses a calendar file.
pub fn load_file_with(path: &Path, opts: &ParseOptions) -> Result<Calendar, ScheduleError> {
    let bytes = std::fs::read(path).map_err(|source| ScheduleError::Read { path: path.display().to_string(), source })?;
    parse(&bytes, opts)
}

#[cfg(test)]
mod tests;
