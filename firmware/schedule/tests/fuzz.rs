//! The bounded fuzz harness for the calendar parser (run by `cargo test`, so CI runs it on every
//! change): arbitrary bytes, mutated real calendars and generated recurrence rules must never
//! panic, and every parse error and every skipped event must name a line that exists in the
//! input. Generated calendars mixing good and bad events must yield exactly the good ones, the
//! bad ones skipped by line, UID and position, and the same events as the calendar without them. The case counts keep
//! the whole file to a few seconds; raise `PROPTEST_CASES` locally for a longer run.

use chrono::{TimeZone, Utc};
use lectern_schedule::{parse, parse_reply, ParseOptions, ScheduleError, SkippedEvent};
use proptest::prelude::*;

/// A calendar exercising every feature, for when the shared fixtures are not checked out.
const SAMPLE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:w\r\nDTSTART;TZID=Europe/Berlin:20300318T100000\r\n\
DTEND;TZID=Europe/Berlin:20300318T113000\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\nEXDATE;TZID=Europe/Berlin:20300325T100000\r\n\
SUMMARY:Café\\, folded \r\n th\r\n rough\r\nATTACH;ENCODING=BASE64;VALUE=BINARY;X-APPLE-FILENAME=episode.xml:PGVwaXNvZGUvPg==\r\n\
END:VEVENT\r\nBEGIN:VEVENT\r\nUID:w\r\nRECURRENCE-ID:20300401T080000Z\r\nDTSTART:20300402T080000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:o\r\nDTSTART:20300304T081500Z\r\nDTEND:20300304T091500Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

/// The default options with a smaller recurrence budget, so a hostile rule costs milliseconds
/// here (the budget itself is tested in the unit tests).
fn opts() -> ParseOptions {
    ParseOptions { max_steps: 5000, ..ParseOptions::around(Utc.with_ymd_and_hms(2030, 3, 4, 0, 0, 0).unwrap()) }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calendars");
    let mut out = vec![SAMPLE.as_bytes().to_vec()];
    for name in ["week.ics", "edit-before.ics", "unicode-fold.ics", "empty.ics"] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            out.push(bytes);
        }
    }
    out
}

/// Parses and checks the only promises a bad input gets: no panic, and a line that exists.
fn check_no_panic(bytes: &[u8]) {
    let physical = bytes.split(|&b| b == b'\n').count();
    match parse(bytes, &opts()) {
        Ok(cal) => {
            for e in &cal.events {
                assert!(e.end > e.start, "{}: end not after start", e.uid);
            }
            for s in &cal.skipped {
                assert!((1..=physical).contains(&s.line) && s.begin <= s.line, "skipped line {} (begin {}) of {physical}: {s}", s.line, s.begin);
                assert!(!s.message.is_empty() && s.position >= 1, "{s:?}");
            }
        }
        Err(ScheduleError::Parse { line, message }) => {
            assert!((1..=physical).contains(&line), "line {line} of {physical}: {message}");
            assert!(!message.is_empty());
        }
        Err(other) => panic!("parse returned a non-parse error: {other}"),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..200).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), prop::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b':'), Just(b';'), Just(b'\r'), any::<u8>()], 0..12))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Flip(a, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match m {
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Flip(at, b) => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= b | 1;
            }
        }
        Mutation::DuplicateLine(at) => {
            let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
            if !lines.is_empty() {
                let i = at % lines.len();
                let mut out: Vec<u8> = lines[..=i].concat();
                out.extend_from_slice(lines[i]);
                out.extend(lines[i + 1..].concat());
                bytes = out;
            }
        }
    }
    bytes
}

/// RRULEs built from real parts with hostile values.
fn rrule() -> impl Strategy<Value = String> {
    let freq = prop::sample::select(vec!["SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY", "NONE"]);
    let part = prop_oneof![
        (-3i64..100000).prop_map(|n| format!("INTERVAL={n}")),
        (-3i64..100000).prop_map(|n| format!("COUNT={n}")),
        (-400i64..400).prop_map(|n| format!("BYSETPOS={n}")),
        (-60i64..60).prop_map(|n| format!("BYMONTHDAY={n}")),
        (-400i64..400).prop_map(|n| format!("BYYEARDAY={n}")),
        (-60i64..60).prop_map(|n| format!("BYWEEKNO={n}")),
        (-2i64..14).prop_map(|n| format!("BYMONTH={n}")),
        (-2i64..62).prop_map(|n| format!("BYSECOND={n}")),
        (-2i64..26).prop_map(|n| format!("BYHOUR={n}")),
        (-60i64..60).prop_map(|n| format!("BYDAY={n}MO,TU,SU")),
        (1i64..99999).prop_map(|y| format!("UNTIL={y:04}0101T000000Z")),
        Just("WKST=XX".to_owned()),
    ];
    (freq, prop::collection::vec(part, 0..4)).prop_map(|(f, parts)| {
        let mut s = format!("FREQ={f}");
        for p in parts {
            s.push(';');
            s.push_str(&p);
        }
        s
    })
}

/// `cases` per property, or `PROPTEST_CASES` from the environment for a longer local run.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_no_panic(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_calendar_header_never_panic(tail in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(b':')], 0..256)) {
        let mut bytes = b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n".to_vec();
        bytes.extend(tail);
        check_no_panic(&bytes);
    }

    #[test]
    fn mutated_calendars_never_panic(seed in any::<prop::sample::Index>(), mutations in prop::collection::vec(mutation(), 1..6)) {
        let seeds = seeds();
        let bytes = mutations.iter().fold(seed.get(&seeds).clone(), apply);
        check_no_panic(&bytes);
    }

    #[test]
    fn replies_never_panic(status in 0u16..1000, seed in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let seeds = seeds();
        let body = seed.get(&seeds);
        let body = &body[..cut.index(body.len() + 1)];
        if let Ok(lectern_schedule::Reply::Calendar(_)) = parse_reply(status, body, &opts()) {
            prop_assert!((200..300).contains(&status));
        }
    }
}

proptest! {
    // Each case walks up to `max_steps` recurrence dates, so fewer cases keep this to seconds.
    #![proptest_config(config(64))]

    #[test]
    fn generated_recurrences_never_panic(rule in rrule(), start in 0i64..4_000_000_000, tz in prop::sample::select(vec!["", ";TZID=Europe/Berlin", ";TZID=America/New_York", ";TZID=Pacific/Apia"])) {
        let start = Utc.timestamp_opt(start, 0).unwrap().format("%Y%m%dT%H%M%S").to_string();
        let z = if tz.is_empty() { "Z" } else { "" };
        let text = format!(
            "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:r\r\nDTSTART{tz}:{start}{z}\r\nDURATION:PT1H\r\nRRULE:{rule}\r\nEXDATE{tz}:{start}{z}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        );
        check_no_panic(text.as_bytes());
    }
}

/// One VEVENT of a generated calendar: good, or bad in one of the ways a whole calendar survives.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Good,
    NoUid,
    EndsBeforeStart,
    NoDtstart,
    BadDate,
    BadRrule,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(vec![Kind::Good, Kind::Good, Kind::NoUid, Kind::EndsBeforeStart, Kind::NoDtstart, Kind::BadDate, Kind::BadRrule])
}

/// The event's lines (without BEGIN/END), and for a bad one the offset of the problem's line
/// from its BEGIN:VEVENT line.
fn event_lines(kind: Kind, i: usize) -> (Vec<String>, Option<usize>) {
    let (start, end) = (format!("20300304T{:02}0000Z", i % 24), format!("20300304T{:02}3000Z", i % 24));
    let uid = format!("UID:e{i}");
    let lines: Vec<String> = match kind {
        Kind::Good => vec![uid, format!("DTSTART:{start}"), format!("DTEND:{end}")],
        Kind::NoUid => vec![format!("DTSTART:{start}"), format!("DTEND:{end}")],
        Kind::EndsBeforeStart => vec![uid, format!("DTSTART:{end}"), format!("DTEND:{start}")],
        Kind::NoDtstart => vec![uid, format!("DTEND:{end}")],
        Kind::BadDate => vec![uid, "DTSTART:2030-03-04".to_owned(), format!("DTEND:{end}")],
        Kind::BadRrule => vec![uid, format!("DTSTART:{start}"), format!("DTEND:{end}"), "RRULE:FREQ=SOMETIMES".to_owned()],
    };
    let problem = match kind {
        Kind::Good => None,
        Kind::NoUid | Kind::NoDtstart => Some(0),
        Kind::EndsBeforeStart => Some(3),
        Kind::BadDate => Some(2),
        Kind::BadRrule => Some(4),
    };
    (lines, problem)
}

/// A skip a generated calendar must report: (line, position, uid).
type Skip = (usize, usize, Option<String>);

/// Builds a calendar from `kinds`; returns it, the uids of its good events and its skips.
fn mixed(kinds: &[Kind], keep_bad: bool) -> (String, Vec<String>, Vec<Skip>) {
    let mut text = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n".to_owned();
    let (mut line, mut good, mut bad) = (3, Vec::new(), Vec::new());
    for (i, k) in kinds.iter().enumerate() {
        let (lines, problem) = event_lines(*k, i);
        if problem.is_some() && !keep_bad {
            continue;
        }
        match problem {
            None => good.push(format!("e{i}")),
            Some(offset) => bad.push((line + offset, i + 1, (!matches!(k, Kind::NoUid)).then(|| format!("e{i}")))),
        }
        text.push_str("BEGIN:VEVENT\r\n");
        for l in &lines {
            text.push_str(l);
            text.push_str("\r\n");
        }
        text.push_str("END:VEVENT\r\n");
        line += lines.len() + 2;
    }
    text.push_str("END:VCALENDAR\r\n");
    (text, good, bad)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn bad_events_are_skipped_and_good_ones_apply(kinds in prop::collection::vec(kind(), 0..12)) {
        let (text, good, bad) = mixed(&kinds, true);
        let cal = parse(text.as_bytes(), &opts()).unwrap_or_else(|e| panic!("a whole calendar was rejected: {e}\n{text}"));
        let mut got: Vec<String> = cal.events.iter().map(|e| e.uid.clone()).collect();
        let mut want = good.clone();
        got.sort();
        want.sort();
        prop_assert_eq!(got, want, "good events of\n{}", text);
        let skipped: Vec<Skip> = cal.skipped.iter().map(|s: &SkippedEvent| (s.line, s.position, s.uid.clone())).collect();
        prop_assert_eq!(skipped, bad, "skips of\n{}", text);
        // Skipping a bad event is the same as the calendar without it.
        let (clean, _, _) = mixed(&kinds, false);
        let without = parse(clean.as_bytes(), &opts()).unwrap();
        prop_assert_eq!(&without.events, &cal.events);
        prop_assert!(without.skipped.is_empty());
    }

    #[test]
    fn a_cut_calendar_with_bad_events_is_still_rejected_whole(kinds in prop::collection::vec(kind(), 1..8), cut in any::<prop::sample::Index>()) {
        let (text, _, _) = mixed(&kinds, true);
        // Anywhere before the final END:VCALENDAR line ends.
        let cut = cut.index(text.len() - 2);
        prop_assert!(parse(&text.as_bytes()[..cut], &opts()).is_err(), "cut at {} of\n{}", cut, text);
    }
}
