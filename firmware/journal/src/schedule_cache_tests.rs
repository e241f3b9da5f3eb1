//! Tests of the schedule cache (`schedule_cache.rs`): which calendar replies change it, that a
//! replace is one transaction, what is pruned, and that the cache survives a reopen. Calendars
//! are built inline so nothing here skips; the Opencast fixtures are round-tripped when present.

use chrono::{TimeZone, Utc};
use lectern_schedule::{Change, ParseOptions, ScheduledEvent};

use super::*;
use crate::tests::{new_journal, reopen};

/// "Now" in these tests: 2 March 2030, before every event below.
fn now() -> i64 {
    Utc.with_ymd_and_hms(2030, 3, 2, 0, 0, 0).unwrap().timestamp_millis()
}

fn opts(now_ms: i64) -> ParseOptions {
    ParseOptions::around(chrono::DateTime::from_timestamp_millis(now_ms).unwrap())
}

/// A calendar of `(uid, start, end, title)` events, times as `YYYYMMDDTHHMMSSZ`.
fn cal(events: &[(&str, &str, &str, &str)]) -> Vec<u8> {
    let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n");
    for (uid, start, end, title) in events {
        s += &format!("BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTART:{start}\r\nDTEND:{end}\r\nSUMMARY:{title}\r\nEND:VEVENT\r\n");
    }
    (s + "END:VCALENDAR\r\n").into_bytes()
}

fn week() -> Vec<u8> {
    cal(&[
        ("a", "20300304T090000Z", "20300304T100000Z", "Algebra"),
        ("b", "20300305T090000Z", "20300305T100000Z", "Biology"),
        ("c", "20300306T090000Z", "20300306T100000Z", "Chemistry"),
    ])
}

/// `uid title` of every cached event, in cache order.
fn cached(j: &Journal) -> Vec<String> {
    j.cached_schedule().unwrap().iter().map(|e| format!("{} {}", e.uid, e.title)).collect()
}

fn apply(j: &mut Journal, status: u16, body: &[u8], now_ms: i64) -> String {
    match j.apply_calendar_reply("https://oc.example/cal", status, Some("\"v1\""), body, &opts(now_ms), now_ms).unwrap() {
        ReplyOutcome::Applied { changes, skipped, kept } => {
            let kinds: Vec<String> = changes.iter().map(|c| format!("{} {}", kind(c), c.uid())).collect();
            let mut out = format!("applied [{}]", kinds.join(", "));
            for s in &skipped {
                out += &format!("; {s}");
            }
            if !kept.is_empty() {
                out += &format!("; kept [{}]", kept.join(", "));
            }
            out
        }
        ReplyOutcome::NotModified => "not modified".into(),
        ReplyOutcome::Rejected(e) => format!("rejected: {e}"),
    }
}

fn kind(c: &Change) -> &'static str {
    match c {
        Change::Added { .. } => "added",
        Change::Moved { .. } => "moved",
        Change::Retitled { .. } => "retitled",
        Change::Updated { .. } => "updated",
        Change::Cancelled { .. } => "cancelled",
    }
}

#[test]
fn an_edit_is_applied_as_a_diff() {
    let (_dir, mut j) = new_journal();
    assert_eq!(apply(&mut j, 200, &week(), now()), "applied [added a, added b, added c]");
    let edited = cal(&[
        ("a", "20300304T110000Z", "20300304T120000Z", "Algebra"),
        ("c", "20300306T090000Z", "20300306T100000Z", "Chemistry II"),
        ("d", "20300307T090000Z", "20300307T100000Z", "Drama"),
    ]);
    assert_eq!(apply(&mut j, 200, &edited, now() + 1), "applied [moved a, cancelled b, retitled c, added d]");
    assert_eq!(cached(&j), ["a Algebra", "c Chemistry II", "d Drama"]);
    // The same calendar again changes nothing, but confirms the cache.
    assert_eq!(apply(&mut j, 200, &edited, now() + 2), "applied []");
    let meta = j.schedule_meta().unwrap().unwrap();
    assert_eq!((meta.fetched_at_ms, meta.changed_at_ms, meta.etag.as_deref()), (now() + 2, now() + 1, Some("\"v1\"")));
}

#[test]
fn a_valid_empty_calendar_empties_the_cache() {
    let (_dir, mut j) = new_journal();
    apply(&mut j, 200, &week(), now());
    assert_eq!(apply(&mut j, 200, &cal(&[]), now() + 1), "applied [cancelled a, cancelled b, cancelled c]");
    assert!(cached(&j).is_empty());
    // Rescheduled after the cancellation, the cancelled rows come back.
    assert_eq!(apply(&mut j, 200, &week(), now() + 2), "applied [added a, added b, added c]");
    assert_eq!(cached(&j), ["a Algebra", "b Biology", "c Chemistry"]);
}

#[test]
fn a_bad_reply_never_changes_the_cache() {
    let week = week();
    let text = String::from_utf8(week.clone()).unwrap();
    let truncated = text.strip_suffix("END:VCALENDAR\r\n").unwrap();
    let cases: &[(u16, &[u8], &str)] = &[
        (503, &week, "rejected: server replied HTTP 503, not a calendar"),
        (404, b"", "rejected: server replied HTTP 404"),
        (200, b"", "rejected: line 1: empty input: not a calendar"),
        (200, b"<html><body>Opencast login</body></html>", "rejected: line 1: not a calendar"),
        (200, truncated.as_bytes(), "rejected: line 20: calendar is truncated"),
        (200, &week[..week.len() / 2], "rejected: line 11: calendar is truncated"),
    ];
    for (status, body, expect) in cases {
        let (_dir, mut j) = new_journal();
        apply(&mut j, 200, &week, now());
        let (before, meta) = (j.cached_schedule().unwrap(), j.schedule_meta().unwrap());
        let got = apply(&mut j, *status, body, now() + 1);
        assert!(got.starts_with(expect), "{status}: expected {expect:?}, got {got:?}");
        assert_eq!(j.cached_schedule().unwrap(), before, "{expect}");
        assert_eq!(j.schedule_meta().unwrap(), meta, "{expect}");
    }
}

/// Issue 12: a whole calendar with one bad event applies the good ones; a cached event that now
/// comes back bad is kept as it was (not cancelled) and reported.
#[test]
fn regression_a_bad_event_skips_itself_and_keeps_its_cached_copy() {
    let text = String::from_utf8(week()).unwrap();
    // Each edit also adds d, which must apply despite the bad event.
    let with_d = |t: String| t.replace("END:VCALENDAR", "BEGIN:VEVENT\r\nUID:d\r\nDTSTART:20300307T090000Z\r\nDTEND:20300307T100000Z\r\nSUMMARY:Drama\r\nEND:VEVENT\r\nEND:VCALENDAR");
    let cases: &[(String, &str)] = &[
        (
            with_d(text.replace("20300305T090000Z", "20300305T250000Z")),
            "applied [added d]; line 11: event b skipped: bad DTSTART \"20300305T250000Z\"",
        ),
        (
            with_d(text.replace("DTEND:20300306T100000Z", "DTEND:20300306T080000Z")),
            "applied [added d]; line 18: event c skipped: event c ends (2030-03-06T08:00:00+00:00) at or before its start",
        ),
        // Without its UID the bad copy cannot be matched to b, so b is cancelled: the server no
        // longer lists it under that UID.
        (with_d(text.replace("UID:b\r\n", "")), "applied [cancelled b, added d]; line 9: event #2 (no UID, begins on line 9) skipped: VEVENT has no UID"),
    ];
    for (body, expect) in cases {
        let (_dir, mut j) = new_journal();
        apply(&mut j, 200, &week(), now());
        let before = cached(&j);
        let got = apply(&mut j, 200, body.as_bytes(), now() + 1);
        assert!(got.starts_with(expect), "expected {expect:?}, got {got:?}");
        let after = cached(&j);
        assert!(after.contains(&"d Drama".to_owned()), "{after:?}");
        if expect.contains("event b skipped") || expect.contains("event c skipped") {
            let uid = if expect.contains("event b") { "b" } else { "c" };
            assert!(got.ends_with(&format!("; kept [{uid}]")), "{got}");
            assert_eq!(after.iter().filter(|e| before.contains(e)).count(), 3, "all of {before:?} kept as they were: {after:?}");
        }
    }
}

#[test]
fn not_modified_only_marks_the_cache_fresh() {
    let (_dir, mut j) = new_journal();
    apply(&mut j, 200, &week(), now());
    assert_eq!(apply(&mut j, 304, b"", now() + 5), "not modified");
    let meta = j.schedule_meta().unwrap().unwrap();
    assert_eq!((meta.fetched_at_ms, meta.changed_at_ms), (now() + 5, now()));
    assert_eq!(cached(&j).len(), 3);
}

#[test]
fn a_failure_mid_apply_rolls_back_the_whole_replace() {
    let (_dir, mut j) = new_journal();
    apply(&mut j, 200, &week(), now());
    let before = j.cached_schedule().unwrap();
    // A new event, a move and a cancellation come first in the diff; the last row breaks the
    // table's CHECK (end after start), which `parse` would never produce but a bug might.
    let mut new = before.clone();
    new.remove(1);
    new[0].start += chrono::Duration::hours(1);
    new[0].end += chrono::Duration::hours(1);
    let mut extra = new[0].clone();
    extra.uid = "z-new".into();
    new.push(extra);
    let mut broken = new[1].clone();
    broken.uid = "zz-broken".into();
    broken.start = Utc.with_ymd_and_hms(2030, 3, 9, 10, 0, 0).unwrap();
    broken.end = broken.start;
    new.push(broken);
    let err = j.replace_schedule("other", None, &new, now() + 1).unwrap_err();
    assert!(err.to_string().contains("store scheduled event"), "{err}");
    assert_eq!(j.cached_schedule().unwrap(), before);
    assert_eq!(j.schedule_meta().unwrap().unwrap().source, "https://oc.example/cal");
    // Without the broken row the same replace goes through.
    new.pop();
    let changes = j.replace_schedule("other", None, &new, now() + 1).unwrap();
    assert_eq!(changes.iter().map(kind).collect::<Vec<_>>(), ["moved", "added", "cancelled"]);
}

#[test]
fn past_and_cancelled_events_are_pruned_after_the_retention_window() {
    let (_dir, mut j) = new_journal();
    apply(&mut j, 200, &week(), now());
    apply(&mut j, 200, &cal(&[("a", "20300304T090000Z", "20300304T100000Z", "Algebra")]), now());
    let rows = |j: &Journal| -> i64 { j.conn().query_row("SELECT count(*) FROM schedule_events", [], |r| r.get(0)).unwrap() };
    assert_eq!(rows(&j), 3, "b and c are kept as cancelled for a while");
    let later = now() + SCHEDULE_RETENTION_MS + 1;
    // A week later b and c are gone; a (ended 4 March) is still inside the window.
    assert_eq!(apply(&mut j, 200, &cal(&[("a", "20300304T090000Z", "20300304T100000Z", "Algebra")]), later), "applied []");
    assert_eq!(rows(&j), 1);
    // Long after a ended, a server that still lists it neither re-adds nor keeps it.
    let much_later = Utc.with_ymd_and_hms(2030, 3, 20, 0, 0, 0).unwrap().timestamp_millis();
    let still_listed = cal(&[("a", "20300304T090000Z", "20300304T100000Z", "Algebra"), ("n", "20300321T090000Z", "20300321T100000Z", "New")]);
    assert_eq!(apply(&mut j, 200, &still_listed, much_later), "applied [added n]");
    assert_eq!(rows(&j), 1);
}

#[test]
fn the_cache_survives_a_reopen_byte_for_byte() {
    let (dir, mut j) = new_journal();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calendars/week.ics");
    let body = std::fs::read(&fixtures).unwrap_or_else(|_| {
        eprintln!("SKIP fixture round trip: no {}, using an inline calendar", fixtures.display());
        week()
    });
    assert!(apply(&mut j, 200, &body, now()).starts_with("applied [added"));
    let stored: Vec<ScheduledEvent> = j.cached_schedule().unwrap();
    let parsed = lectern_schedule::parse(&body, &opts(now())).unwrap().events;
    assert_eq!(stored, parsed);
    drop(j);
    let (j, _) = reopen(dir.path(), now() + 1);
    assert_eq!(j.cached_schedule().unwrap(), parsed);
    assert_eq!(j.schedule_meta().unwrap().unwrap().source, "https://oc.example/cal");
}
