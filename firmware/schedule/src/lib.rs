//! The local schedule: a minimal RFC 5545 reader for the `.ics` file named in the config.
//!
//! It owns turning calendar bytes into [`ScheduledEvent`]s and nothing else: no I/O beyond
//! [`load_file`], no clock. Lines are unfolded at the byte level before any UTF-8 decoding, so an
//! Opencast-style fold through a multi-byte character survives; CRLF and LF are both accepted and
//! TEXT values are unescaped. A calendar without `END:VCALENDAR` is treated as truncated and
//! rejected whole, so a half-downloaded file never replaces a good schedule.
//!
//! Supported now: VEVENTs with UTC `DTSTART`/`DTEND` (`...Z`), `UID`, `SUMMARY`, `LOCATION`.
//! Time-zone (`TZID`) times and `RRULE` recurrences are rejected with an error naming the line;
//! the Opencast calendar issue replaces this reader with a maintained crate that expands them.

use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

/// A calendar that cannot be used, with the 1-based (unfolded) line where it went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{path}: cannot read: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("calendar is truncated: no END:VCALENDAR")]
    Truncated,
}

/// One lecture to record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledEvent {
    pub uid: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub title: String,
    pub location: Option<String>,
}

/// Reads and parses a calendar file.
pub fn load_file(path: &Path) -> Result<Vec<ScheduledEvent>, ScheduleError> {
    let bytes = std::fs::read(path).map_err(|source| ScheduleError::Read { path: path.display().to_string(), source })?;
    parse(&bytes)
}

/// Unfolds content lines at the byte level: a CRLF or LF followed by one space or tab continues
/// the previous line. Returns each logical line with the physical line number it started on.
fn unfold(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match raw.first() {
            Some(b' ') | Some(b'\t') if !out.is_empty() => out.last_mut().unwrap().1.extend_from_slice(&raw[1..]),
            _ if raw.is_empty() => {}
            _ => out.push((i + 1, raw.to_vec())),
        }
    }
    out
}

/// Undoes RFC 5545 TEXT escaping (`\n`, `\,`, `\;`, `\\`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

fn parse_utc(line: usize, value: &str, params: &str) -> Result<DateTime<Utc>, ScheduleError> {
    let err = |message: String| ScheduleError::Parse { line, message };
    if params.to_ascii_uppercase().contains("TZID=") {
        return Err(err(format!("time-zone local time {value:?} is not supported yet; use UTC (…Z)")));
    }
    let Some(naive) = value.strip_suffix('Z') else {
        return Err(err(format!("expected a UTC date-time like 20261126T090000Z, found {value:?}")));
    };
    NaiveDateTime::parse_from_str(naive, "%Y%m%dT%H%M%S")
        .map(|n| n.and_utc())
        .map_err(|e| err(format!("bad date-time {value:?}: {e}")))
}

#[derive(Default)]
struct Partial {
    line: usize,
    uid: Option<String>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
    title: Option<String>,
    location: Option<String>,
}

/// Parses a whole calendar. Events are returned sorted by start, then UID.
pub fn parse(bytes: &[u8]) -> Result<Vec<ScheduledEvent>, ScheduleError> {
    let mut events = Vec::new();
    let mut current: Option<Partial> = None;
    let mut began = false;
    let mut ended = false;
    for (line, raw) in unfold(bytes) {
        let text = String::from_utf8(raw).map_err(|_| ScheduleError::Parse { line, message: "not valid UTF-8".into() })?;
        let Some((head, value)) = text.split_once(':') else {
            return Err(ScheduleError::Parse { line, message: format!("expected NAME:VALUE, found {text:?}") });
        };
        let (name, params) = head.split_once(';').unwrap_or((head, ""));
        let name = name.to_ascii_uppercase();
        match (name.as_str(), &mut current) {
            ("BEGIN", None) if value.eq_ignore_ascii_case("VCALENDAR") => began = true,
            ("END", None) if value.eq_ignore_ascii_case("VCALENDAR") => ended = true,
            ("BEGIN", None) if value.eq_ignore_ascii_case("VEVENT") => {
                if !began {
                    return Err(ScheduleError::Parse { line, message: "VEVENT outside VCALENDAR".into() });
                }
                current = Some(Partial { line, ..Partial::default() })
            }
            ("END", Some(p)) if value.eq_ignore_ascii_case("VEVENT") => {
                let missing = |what: &str| ScheduleError::Parse { line: p.line, message: format!("VEVENT has no {what}") };
                let ev = ScheduledEvent {
                    uid: p.uid.take().ok_or_else(|| missing("UID"))?,
                    start: p.start.ok_or_else(|| missing("DTSTART"))?,
                    end: p.end.ok_or_else(|| missing("DTEND"))?,
                    title: p.title.take().unwrap_or_default(),
                    location: p.location.take(),
                };
                if ev.end <= ev.start {
                    return Err(ScheduleError::Parse { line: p.line, message: format!("event {} ends ({}) before it starts ({})", ev.uid, ev.end, ev.start) });
                }
                events.push(ev);
                current = None;
            }
            ("UID", Some(p)) => p.uid = Some(unescape(value)),
            ("DTSTART", Some(p)) => p.start = Some(parse_utc(line, value, params)?),
            ("DTEND", Some(p)) => p.end = Some(parse_utc(line, value, params)?),
            ("SUMMARY", Some(p)) => p.title = Some(unescape(value)),
            ("LOCATION", Some(p)) => p.location = Some(unescape(value)),
            ("RRULE", Some(_)) => {
                return Err(ScheduleError::Parse { line, message: "RRULE recurrences are not supported yet".into() })
            }
            _ => {}
        }
    }
    if current.is_some() || !ended {
        return Err(ScheduleError::Truncated);
    }
    events.sort_by(|a, b| (a.start, &a.uid).cmp(&(b.start, &b.uid)));
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(body: &str) -> String {
        format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n")
    }

    #[test]
    fn reads_utc_events_sorted() {
        let text = cal(
            "BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20261126T100000Z\r\nDTEND:20261126T110000Z\r\nSUMMARY:Second\r\nEND:VEVENT\r\n\
             BEGIN:VEVENT\r\nUID:a\r\nDTSTART:20261126T090000Z\r\nDTEND:20261126T093000Z\r\nSUMMARY:First\\, with comma\r\nEND:VEVENT\r\n",
        );
        let ev = parse(text.as_bytes()).unwrap();
        assert_eq!(ev.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ev[0].title, "First, with comma");
        assert_eq!(ev[0].start.to_rfc3339(), "2026-11-26T09:00:00+00:00");
    }

    #[test]
    fn unfolds_at_the_byte_level_through_a_multibyte_character() {
        // "Übung" folded between the two bytes of 'Ü' (0xC3 0x9C).
        let bytes: &[u8] = b"BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:u\nDTSTART:20261126T090000Z\nDTEND:20261126T100000Z\nSUMMARY:\xC3\n \x9Cbung mit Leerzeichen\nEND:VEVENT\nEND:VCALENDAR\n";
        let ev = parse(bytes).unwrap();
        assert_eq!(ev[0].title, "Übung mit Leerzeichen");
    }

    #[test]
    fn shared_opencast_fixtures_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calendars");
        if !dir.is_dir() {
            eprintln!("SKIP: no shared fixtures at {}", dir.display());
            return;
        }
        let cases = [("week.ics", 10), ("empty.ics", 0), ("unicode-fold.ics", 1), ("edit-before.ics", 3), ("edit-after.ics", 3)];
        for (file, count) in cases {
            let ev = load_file(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(ev.len(), count, "{file}");
        }
        let week = load_file(&dir.join("week.ics")).unwrap();
        assert!(week.iter().any(|e| e.title == "Linear Algebra, Lecture 1"));
    }

    #[test]
    fn bad_calendars_name_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n", "truncated"),
            (&cal("BEGIN:VEVENT\r\nUID:x\r\nDTSTART:20261126T090000\r\nDTEND:20261126T100000Z\r\nEND:VEVENT\r\n"), "line 5: expected a UTC date-time"),
            (&cal("BEGIN:VEVENT\r\nDTSTART:20261126T090000Z\r\nDTEND:20261126T100000Z\r\nEND:VEVENT\r\n"), "line 3: VEVENT has no UID"),
            (&cal("BEGIN:VEVENT\r\nUID:x\r\nDTSTART:20261126T100000Z\r\nDTEND:20261126T090000Z\r\nEND:VEVENT\r\n"), "ends"),
            (&cal("BEGIN:VEVENT\r\nUID:x\r\nDTSTART;TZID=Europe/Berlin:20261126T100000\r\nDTEND:20261126T110000Z\r\nEND:VEVENT\r\n"), "line 5: time-zone"),
            (&cal("garbage\r\n"), "line 3: expected NAME:VALUE"),
        ];
        for (text, want) in cases {
            let e = parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn an_empty_complete_calendar_is_valid_and_empty() {
        assert_eq!(parse(cal("").as_bytes()).unwrap(), vec![]);
    }
}
