//! Table-driven tests of the parser and the diff: one `check(input, expect)` helper, many tiny
//! calendars; the shared Opencast fixtures at the end.

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};

use super::*;

/// The horizon every case uses: March to mid-April 2030 (the fixtures' dates).
fn opts() -> ParseOptions {
    ParseOptions {
        from: Utc.with_ymd_and_hms(2030, 3, 1, 0, 0, 0).unwrap(),
        until: Utc.with_ymd_and_hms(2030, 4, 15, 0, 0, 0).unwrap(),
        max_occurrences: 50,
        max_events: 200,
        max_steps: 5000,
        floating_tz: None,
    }
}

fn cal(body: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n{body}END:VCALENDAR\r\n")
}

/// A VEVENT with `props` (CRLF-separated lines) inside; it begins on line 3 of `cal(ev(..))`.
fn ev(props: &str) -> String {
    format!("BEGIN:VEVENT\r\n{props}END:VEVENT\r\n")
}

/// One line per event (`uid start..end "title"`), then one `SKIP <skipped>` line per skipped
/// event; or `ERR <error>`.
fn render(result: Result<Calendar, ScheduleError>) -> String {
    match result {
        Ok(c) => c
            .events
            .iter()
            .map(|e| format!("{} {}..{} {:?}", e.uid, e.start.format("%m-%dT%H:%MZ"), e.end.format("%m-%dT%H:%MZ"), e.title))
            .chain(c.skipped.iter().map(|s| format!("SKIP {s}")))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("ERR {e}"),
    }
}

/// Parses `input` and compares with `expect`; an expected error or skip at the end need only be
/// a prefix.
fn check(input: impl AsRef<[u8]>, expect: &str) {
    let got = render(parse(input.as_ref(), &opts()));
    // The prefix rule applies to the last line: events are compared whole.
    let last = expect.lines().last().unwrap_or("");
    let ok = if last.starts_with("ERR") || last.starts_with("SKIP") { got.starts_with(expect) } else { got == expect };
    assert!(ok, "input:\n{}\nexpected:\n{expect}\ngot:\n{got}", String::from_utf8_lossy(input.as_ref()));
}

const ONE: &str = "UID:a\r\nDTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\n";

#[test]
fn events() {
    check(cal(""), "");
    check(cal(&ev(&format!("{ONE}SUMMARY:Hi\r\n"))), r#"a 03-04T09:00Z..03-04T10:00Z "Hi""#);
    // Sorted by start, then uid.
    check(
        cal(&(ev("UID:b\r\nDTSTART:20300304T080000Z\r\nDTEND:20300304T083000Z\r\n") + &ev(ONE) + &ev("UID:0\r\nDTSTART:20300304T090000Z\r\nDTEND:20300304T091000Z\r\n"))),
        "b 03-04T08:00Z..03-04T08:30Z \"\"\n0 03-04T09:00Z..03-04T09:10Z \"\"\na 03-04T09:00Z..03-04T10:00Z \"\"",
    );
    // TEXT unescaping, LF line ends, lower-case property names.
    check(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nuid:a\ndtstart:20300304T090000Z\nDTEND:20300304T100000Z\nsummary:A\\, B\\; C\\nD\\\\E\nEND:VEVENT\nEND:VCALENDAR\n",
        r#"a 03-04T09:00Z..03-04T10:00Z "A, B; C\nD\\E""#,
    );
    // A fold through the two bytes of 'Ü' (0xC3 0x9C), and a fold at a space that must keep it.
    check(
        b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\nSUMMARY:\xC3\r\n \x9Cbung mit\r\n  Leerzeichen\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        r#"a 03-04T09:00Z..03-04T10:00Z "Übung mit Leerzeichen""#,
    );
    // DURATION instead of DTEND; an all-day event and a cancelled one are skipped.
    check(cal(&ev("UID:a\r\nDTSTART:20300304T090000Z\r\nDURATION:PT1H30M\r\n")), r#"a 03-04T09:00Z..03-04T10:30Z """#);
    check(cal(&ev("UID:a\r\nDTSTART:20300304T090000Z\r\nDURATION:P1DT1S\r\n")), r#"a 03-04T09:00Z..03-05T09:00Z """#);
    check(cal(&ev("UID:a\r\nDTSTART;VALUE=DATE:20300304\r\nDTEND;VALUE=DATE:20300305\r\n")), "");
    check(cal(&ev(&format!("{ONE}STATUS:CANCELLED\r\n"))), "");
    // A byte-order mark and blank lines are tolerated.
    check(format!("\u{feff}{}", cal(&format!("\r\n{}", ev(ONE)))), r#"a 03-04T09:00Z..03-04T10:00Z """#);
}

#[test]
fn time_zones() {
    // Berlin is UTC+1 in winter and UTC+2 from 31 March 2030.
    check(cal(&ev("UID:a\r\nDTSTART;TZID=Europe/Berlin:20300304T100000\r\nDTEND;TZID=Europe/Berlin:20300304T113000\r\n")), r#"a 03-04T09:00Z..03-04T10:30Z """#);
    check(cal(&ev("UID:a\r\nDTSTART;TZID=\"Europe/Berlin\":20300401T100000\r\nDTEND:20300401T090000Z\r\n")), r#"a 04-01T08:00Z..04-01T09:00Z """#);
    // 02:30 on 31 March does not exist in Berlin: the wall time one gap later is used.
    check(cal(&ev("UID:a\r\nDTSTART;TZID=Europe/Berlin:20300331T023000\r\nDURATION:PT1H\r\n")), r#"a 03-31T01:30Z..03-31T02:30Z """#);
    let floating = cal(&ev("UID:a\r\nDTSTART:20300304T100000\r\nDURATION:PT1H\r\n"));
    check(&floating, "SKIP line 5: event a skipped: bad DTSTART \"20300304T100000\": a local time without TZID");
    let with_zone = ParseOptions { floating_tz: Some(chrono_tz::Europe::Berlin), ..opts() };
    assert_eq!(render(parse(floating.as_bytes(), &with_zone)), r#"a 03-04T09:00Z..03-04T10:00Z """#);
}

#[test]
fn recurrences() {
    let weekly = "UID:w\r\nDTSTART;TZID=Europe/Berlin:20300318T100000\r\nDTEND;TZID=Europe/Berlin:20300318T113000\r\nRRULE:FREQ=WEEKLY;COUNT=3\r\n";
    // The same local time across the DST change; occurrence uids carry the original UTC start.
    check(
        cal(&ev(weekly)),
        "w-20300318T090000Z 03-18T09:00Z..03-18T10:30Z \"\"\n\
         w-20300325T090000Z 03-25T09:00Z..03-25T10:30Z \"\"\n\
         w-20300401T080000Z 04-01T08:00Z..04-01T09:30Z \"\"",
    );
    check(
        cal(&ev(&format!("{weekly}EXDATE;TZID=Europe/Berlin:20300325T100000\r\n"))),
        "w-20300318T090000Z 03-18T09:00Z..03-18T10:30Z \"\"\nw-20300401T080000Z 04-01T08:00Z..04-01T09:30Z \"\"",
    );
    // An override moves one occurrence (same uid) and cancels another.
    check(
        cal(&(ev(weekly)
            + &ev("UID:w\r\nRECURRENCE-ID;TZID=Europe/Berlin:20300325T100000\r\nDTSTART:20300326T120000Z\r\nDTEND:20300326T130000Z\r\nSUMMARY:moved\r\n")
            + &ev("UID:w\r\nRECURRENCE-ID:20300401T080000Z\r\nDTSTART:20300401T080000Z\r\nDTEND:20300401T090000Z\r\nSTATUS:CANCELLED\r\n"))),
        "w-20300318T090000Z 03-18T09:00Z..03-18T10:30Z \"\"\nw-20300325T090000Z 03-26T12:00Z..03-26T13:00Z \"moved\"",
    );
    // An endless rule stops at the horizon; RDATE adds to DTSTART.
    let daily = render(parse(cal(&ev("UID:d\r\nDTSTART:20300401T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY\r\n")).as_bytes(), &opts()));
    assert_eq!(daily.lines().count(), 14, "{daily}");
    check(
        cal(&ev("UID:r\r\nDTSTART:20300304T090000Z\r\nDURATION:PT1H\r\nRDATE:20300305T090000Z,20300306T090000Z\r\n")),
        "r-20300304T090000Z 03-04T09:00Z..03-04T10:00Z \"\"\nr-20300305T090000Z 03-05T09:00Z..03-05T10:00Z \"\"\nr-20300306T090000Z 03-06T09:00Z..03-06T10:00Z \"\"",
    );
    // Occurrences before the horizon are not expanded, one still running at its start is.
    check(
        cal(&ev("UID:p\r\nDTSTART:20300227T233000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY;COUNT=3\r\n")),
        "p-20300228T233000Z 02-28T23:30Z..03-01T00:30Z \"\"\np-20300301T233000Z 03-01T23:30Z..03-02T00:30Z \"\"",
    );
    // A hostile rule is capped at max_occurrences per event.
    let secondly = parse(cal(&ev("UID:s\r\nDTSTART:20300304T090000Z\r\nDURATION:PT1S\r\nRRULE:FREQ=SECONDLY\r\n")).as_bytes(), &opts()).unwrap();
    assert_eq!(secondly.events.len(), 50);
    // An old DTSTART with a fine-grained rule would walk millions of steps to the horizon; the
    // budget is per calendar, so two modest rules can exhaust it together.
    check(cal(&ev("UID:h\r\nDTSTART:19700101T000000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=HOURLY\r\n")), "ERR line 7: recurrences need more than 5000 steps");
    let daily = |uid: &str| ev(&format!("UID:{uid}\r\nDTSTART:20230101T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=DAILY\r\n"));
    assert_eq!(parse(cal(&daily("d1")).as_bytes(), &opts()).unwrap().events.len(), 45);
    check(cal(&(daily("d1") + &daily("d2"))), "ERR line 13: recurrences need more than 5000 steps");
    // ...and a calendar that expands past max_events is refused.
    let many: String = (0..5).map(|i| ev(&format!("UID:m{i}\r\nDTSTART:20300304T090000Z\r\nDURATION:PT1S\r\nRRULE:FREQ=SECONDLY\r\n"))).collect();
    check(cal(&many), "ERR line 27: more than 200 events after expanding recurrences");
}

#[test]
fn bad_calendars_and_bad_events_name_the_line_and_what_is_wrong() {
    check("", "ERR line 1: empty input: not a calendar");
    check("<html><body>502 Bad Gateway</body></html>\n", "ERR line 1: not a calendar: expected BEGIN:VCALENDAR, found \"<html>");
    check("\n\n{\"error\": 1}", "ERR line 3: not a calendar");
    check("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n", "ERR line 3: calendar is truncated: no END:VCALENDAR (the input ends inside VEVENT begun on line 2)");
    check(cal(&ev(ONE)).trim_end_matches("END:VCALENDAR\r\n"), "ERR line 7: calendar is truncated");
    check(cal(&ev(ONE)) + "X:y\r\n", "ERR line 9: content after END:VCALENDAR");
    // Cut off in the middle of a line (here a folded ATTACH), the error says so.
    let full = cal(&ev(&format!("{ONE}ATTACH;ENCODING=BASE64;X-APPLE-FILENAME=e\r\n pisode.xml:PD94bWw=\r\n")));
    check(&full[..full.find("PD94").unwrap() + 3], "ERR line 8: calendar is truncated: the input stops in the middle of a line");
    check(&cal(&ev(ONE))[..60], "ERR line 5: calendar is truncated: the input stops in the middle of a line");
    check(cal(&ev(ONE)).trim_end(), r#"a 03-04T09:00Z..03-04T10:00Z """#);
    check(cal("garbage\r\n"), "ERR line 3: expected NAME:VALUE, found \"garbage\"");
    check(cal("BAD NAME:x\r\n"), "ERR line 3: bad property name");
    check(cal("X-A;\"quoted\":b\r\n"), "ERR line 3: cannot read this content line (bad parameters?): \"X-A;\\\"quoted");
    check(cal("BEGIN:VEVENT\r\nEND:VTODO\r\n"), "ERR line 4: END:VTODO does not close BEGIN:VEVENT on line 3");
    check(cal("END:VEVENT\r\n"), "ERR line 3: END:VEVENT does not close BEGIN:VCALENDAR on line 1");
    check(cal(&"BEGIN:X\r\n".repeat(9)), "ERR line 10: components nested deeper than 8");
    check(b"BEGIN:VCALENDAR\r\nSUMMARY:\xff\r\nEND:VCALENDAR\r\n", "ERR line 2: not valid UTF-8");
    // From here on a whole calendar with one bad event: the event is skipped, naming the line.
    check(cal(&ev("DTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 3: event #1 (no UID, begins on line 3) skipped: VEVENT has no UID");
    check(cal(&ev("UID:x\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 3: event x skipped: VEVENT has no DTSTART");
    check(cal(&ev("UID:x\r\nDTSTART:20300304T100000Z\r\n")), "SKIP line 3: event x skipped: VEVENT has no DTEND or DURATION");
    check(cal(&ev("UID:x\r\nDTSTART:20300304T100000Z\r\nDTEND:20300304T090000Z\r\n")), "SKIP line 6: event x skipped: event x ends (2030-03-04T09:00:00+00:00) at or before its start");
    check(cal(&ev("UID:x\r\nDTSTART:20300304T100000Z\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 6: event x skipped: event x ends");
    check(cal(&ev("UID:x\r\nDTSTART:20301304T100000Z\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 5: event x skipped: bad DTSTART \"20301304T100000Z\"");
    check(cal(&ev("UID:x\r\nDTSTART:2030-03-04T10:00Z\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 5: event x skipped: bad DTSTART");
    check(cal(&ev(&format!("{ONE}LAST-MODIFIED:yesterday\r\n"))), "SKIP line 7: event a skipped: bad LAST-MODIFIED");
    check(cal(&ev("UID:x\r\nDTSTART:20300304T100000Z\r\nDURATION:1 hour\r\n")), "SKIP line 6: event x skipped: bad DURATION \"1 hour\"");
    check(cal(&ev("UID:x\r\nDTSTART;TZID=Mars/Olympus:20300304T100000\r\nDURATION:PT1H\r\n")), "SKIP line 5: event x skipped: unknown time zone TZID=\"Mars/Olympus\"");
    check(cal(&ev(&format!("{ONE}RRULE:FREQ=FORTNIGHTLY\r\n"))), "SKIP line 7: event a skipped: bad RRULE \"FREQ=FORTNIGHTLY\"");
    check(cal(&ev(&format!("{ONE}RDATE;VALUE=PERIOD:20300304T090000Z/PT1H\r\n"))), "SKIP line 7: event a skipped: RDATE periods are not supported");
    check(cal(&(ev(ONE) + &ev(ONE))), "a 03-04T09:00Z..03-04T10:00Z \"\"\nSKIP line 8: event a skipped: duplicate UID a (also on line 3)");
    // The base64 error names the ATTACH line, which is folded over two physical lines.
    check(
        cal(&ev(&format!("{ONE}ATTACH;FMTTYPE=application/xml;ENCODING=BASE64;VALUE=BINARY;X-APPLE-FILENAME=epi\r\n sode.xml:PD9!!!\r\n"))),
        "SKIP line 7: event a skipped: bad base64 in ATTACH \"episode.xml\"",
    );
}

#[test]
fn opencast_attachments() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let props = "org.opencastproject.workflow.definition=fast\norg.opencastproject.workflow.config.straightToPublishing=true\ncapture.device.names=presenter,presentation\n";
    let text = cal(&ev(&format!(
        "{ONE}ATTACH;FMTTYPE=application/xml;VALUE=BINARY;ENCODING=BASE64;X-APPLE-FILENAME=episode.xml:{}\r\n\
         ATTACH;FMTTYPE=application/xml;VALUE=BINARY;ENCODING=BASE64;X-APPLE-FILENAME=series.xml:{}\r\n\
         ATTACH;FMTTYPE=application/text;VALUE=BINARY;ENCODING=BASE64;X-APPLE-FILENAME=org.opencastproject.capture.agent.properties:{}\r\n\
         ATTACH:https://example.invalid/slides.pdf\r\nRELATED-TO:series-1\r\nLOCATION:room-101\r\nLAST-MODIFIED:20300302T081500Z\r\n",
        b64("<episode/>"),
        b64("<series/>"),
        b64(props)
    )));
    let e = &parse(text.as_bytes(), &opts()).unwrap().events[0];
    assert_eq!(e.episode_xml.as_deref(), Some(&b"<episode/>"[..]));
    assert_eq!(e.series_xml.as_deref(), Some(&b"<series/>"[..]));
    assert_eq!(e.workflow.as_deref(), Some("fast"));
    assert_eq!(e.workflow_config.get("straightToPublishing").map(String::as_str), Some("true"));
    assert_eq!(e.device_names, ["presenter", "presentation"]);
    assert_eq!((e.series.as_deref(), e.location.as_deref()), (Some("series-1"), Some("room-101")));
    assert_eq!(e.last_modified, Some(Utc.with_ymd_and_hms(2030, 3, 2, 8, 15, 0).unwrap()));
    let json = serde_json::to_value(e).unwrap();
    assert_eq!(json["start"], "2030-03-04T09:00:00Z");
    assert_eq!(json["episode_xml_bytes"], 10);
}

#[test]
fn replies() {
    let body = cal(&ev(ONE));
    let empty = cal("");
    let events = |r: Result<Reply, ScheduleError>| match r {
        Ok(Reply::Calendar(c)) => format!("{} events", c.events.len()),
        Ok(Reply::NotModified) => "not modified".into(),
        Err(e) => format!("ERR {e}"),
    };
    let cases: &[(u16, &[u8], &str)] = &[
        (200, body.as_bytes(), "1 events"),
        (200, empty.as_bytes(), "0 events"),
        (304, b"", "not modified"),
        (503, body.as_bytes(), "ERR server replied HTTP 503, not a calendar"),
        (404, b"", "ERR server replied HTTP 404"),
        (200, b"<html>login</html>", "ERR line 1: not a calendar"),
        (200, body.strip_suffix("END:VCALENDAR\r\n").unwrap().as_bytes(), "ERR line 7: calendar is truncated"),
        (200, &body.as_bytes()[..body.len() - 10], "ERR line 8: calendar is truncated: the input stops in the middle of a line"),
    ];
    for (status, body, expect) in cases {
        let got = events(parse_reply(*status, body, &opts()));
        assert!(got.starts_with(expect), "{status}: expected {expect}, got {got}");
    }
}

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calendars");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: no shared fixtures at {}", dir.display());
        None
    }
}

fn fixture(name: &str) -> Calendar {
    let dir = fixtures().expect("checked by the caller");
    load_file_with(&dir.join(name), &opts()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn shared_opencast_fixtures_parse() {
    if fixtures().is_none() {
        return;
    }
    for (file, count) in [("week.ics", 10), ("empty.ics", 0), ("unicode-fold.ics", 1), ("edit-before.ics", 3), ("edit-after.ics", 3)] {
        assert_eq!(fixture(file).events.len(), count, "{file}");
    }
    let week = fixture("week.ics");
    assert!(week.events.iter().any(|e| e.title == "Linear Algebra, Lecture 1"));
    for e in &week.events {
        assert_eq!(e.workflow.as_deref(), Some("schedule-and-upload"), "{}", e.uid);
        assert!(e.episode_xml.as_ref().is_some_and(|x| x.starts_with(b"<?xml")), "{}", e.uid);
        assert!(!e.device_names.is_empty(), "{}", e.uid);
    }
    let fold = &fixture("unicode-fold.ics").events[0];
    assert_eq!(fold.title, "Vorlesung Ökonometrie – Ärger mit Ünterschieden, Teil 1; Wiederholung");
    assert!(fold.episode_xml.as_ref().is_some_and(|x| String::from_utf8_lossy(x).contains("Ökonometrie")));
}

#[test]
fn fixture_edit_diff() {
    if fixtures().is_none() {
        return;
    }
    let (before, after) = (fixture("edit-before.ics"), fixture("edit-after.ics"));
    let changes: Vec<String> = diff(&before.events, &after.events)
        .iter()
        .map(|c| match c {
            Change::Added { uid, .. } => format!("added {}", &uid[..6]),
            Change::Moved { uid, old_start, start, .. } => format!("moved {} {}->{}", &uid[..6], old_start.format("%H:%M"), start.format("%H:%M")),
            Change::Retitled { uid, new, .. } => format!("retitled {} {new}", &uid[..6]),
            Change::Updated { uid } => format!("updated {}", &uid[..6]),
            Change::Cancelled { uid, .. } => format!("cancelled {}", &uid[..6]),
        })
        .collect();
    // edit-0 moved an hour later (and retitled; its LAST-MODIFIED and episode.xml changed too),
    // edit-1 cancelled, edit-2 untouched, edit-3 added (see the fixtures' README).
    assert_eq!(changes, ["moved f223b4 08:15->09:15", "retitled f223b4 Seminar 0 (moved)", "updated f223b4", "cancelled cef242", "added 6113c9"]);
}

#[test]
fn diff_cases() {
    let e = |uid: &str, start_h: u32, title: &str| ScheduledEvent {
        uid: uid.into(),
        start: Utc.with_ymd_and_hms(2030, 3, 4, start_h, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2030, 3, 4, start_h + 1, 0, 0).unwrap(),
        title: title.into(),
        location: None,
        series: None,
        last_modified: None,
        workflow: None,
        workflow_config: Default::default(),
        device_names: vec![],
        episode_xml: None,
        series_xml: None,
    };
    let kinds = |old: &[ScheduledEvent], new: &[ScheduledEvent]| {
        diff(old, new).iter().map(|c| format!("{} {}", serde_json::to_value(c).unwrap()["change"].as_str().unwrap(), c.uid())).collect::<Vec<_>>().join(", ")
    };
    let cases: Vec<(Vec<ScheduledEvent>, Vec<ScheduledEvent>, &str)> = vec![
        (vec![], vec![], ""),
        (vec![e("a", 9, "A")], vec![e("a", 9, "A")], ""),
        (vec![], vec![e("b", 10, ""), e("a", 9, "")], "added a, added b"),
        (vec![e("a", 9, ""), e("b", 8, "")], vec![], "cancelled b, cancelled a"),
        (vec![e("a", 9, "A")], vec![e("a", 11, "B")], "moved a, retitled a"),
        (vec![e("a", 9, "A")], vec![ScheduledEvent { workflow: Some("w".into()), ..e("a", 9, "A") }], "updated a"),
        (vec![e("a", 9, ""), e("c", 12, "")], vec![e("b", 10, ""), e("a", 11, "")], "added b, moved a, cancelled c"),
    ];
    for (old, new, expect) in cases {
        assert_eq!(kinds(&old, &new), expect);
    }
}

/// Regression: the unfolded text handed to `icalendar` was LF-terminated, and the crate's search
/// for `\r\n` in every value then ran to the end of the input: a 2.6 MB calendar of 1000 Opencast
/// events took 22 s (release) instead of 0.1 s. The bound is generous for a loaded debug build;
/// the quadratic version needs minutes here.
#[test]
fn regression_a_large_calendar_parses_in_linear_time() {
    let body: String = (0..3000)
        .map(|i| ev(&format!("UID:u{i}\r\nDTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\nSUMMARY:{}\r\n", "x".repeat(200))))
        .collect();
    let text = cal(&body);
    let started = std::time::Instant::now();
    let parsed = parse(text.as_bytes(), &ParseOptions { max_events: 10_000, ..opts() }).unwrap();
    assert_eq!(parsed.events.len(), 3000);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{} bytes took {:?}", text.len(), started.elapsed());
}

/// Issue 12: one event without a UID, or ending before it starts, no longer rejects the whole
/// calendar; the good events around it apply, and each bad one is named by line and UID (or
/// position).
#[test]
fn regression_one_bad_event_does_not_freeze_the_calendar() {
    let good = |uid: &str, hour: u32| ev(&format!("UID:{uid}\r\nDTSTART:20300304T{hour:02}0000Z\r\nDTEND:20300304T{hour:02}3000Z\r\n"));
    let no_uid = ev("DTSTART:20300304T090000Z\r\nDTEND:20300304T100000Z\r\n");
    let backwards = ev("UID:back\r\nDTSTART:20300304T100000Z\r\nDTEND:20300304T090000Z\r\n");
    // Lines: 3-7 g1, 8-11 no uid, 12-16 backwards (DTEND on 15), 17-21 g2.
    let text = cal(&(good("g1", 8) + &no_uid + &backwards + &good("g2", 11)));
    let c = parse(text.as_bytes(), &opts()).unwrap();
    let uids: Vec<&str> = c.events.iter().map(|e| e.uid.as_str()).collect();
    assert_eq!(uids, ["g1", "g2"], "the good events apply");
    let skipped: Vec<String> = c.skipped.iter().map(ToString::to_string).collect();
    assert_eq!(
        skipped,
        [
            "line 8: event #2 (no UID, begins on line 8) skipped: VEVENT has no UID",
            "line 15: event back skipped: event back ends (2030-03-04T09:00:00+00:00) at or before its start (2030-03-04T10:00:00+00:00)",
        ]
    );
    // A bad property before the UID still lets the UID name the event.
    check(cal(&ev("DTSTART:2030\r\nUID:late\r\nDTEND:20300304T100000Z\r\n")), "SKIP line 4: event late skipped: bad DTSTART");
    // A bad recurring master skips the master; an override of it is a good event of its own.
    check(
        cal(&(ev("UID:w\r\nDTSTART:20300304T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=NEVER\r\n")
            + &ev("UID:w\r\nRECURRENCE-ID:20300311T090000Z\r\nDTSTART:20300311T100000Z\r\nDURATION:PT1H\r\n"))),
        "w-20300311T090000Z 03-11T10:00Z..03-11T11:00Z \"\"\nSKIP line 7: event w skipped: bad RRULE",
    );
    // Not a whole calendar: nothing is used, however good the events before the damage.
    check(cal(&(good("g1", 8) + "garbage\r\n")), "ERR line 8: expected NAME:VALUE");
}

#[test]
fn a_skipped_event_covers_itself_and_its_occurrences_only() {
    let s = SkippedEvent { line: 1, begin: 1, position: 1, uid: Some("w".into()), message: String::new() };
    for (uid, covered) in [("w", true), ("w-20300304T090000Z", true), ("w-x", false), ("w2", false), ("w-20300304T090000", false), ("x", false), ("", false)] {
        assert_eq!(s.covers(uid), covered, "{uid}");
    }
    assert!(!SkippedEvent { uid: None, ..s }.covers("w"), "an event without a UID covers nothing");
}
