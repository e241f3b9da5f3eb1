//! `lectern schedule parse FILE` through the built binary: the JSON an AV team reads, and the
//! `FILE:LINE: what was wrong` line and non-zero exit for a calendar the agent would refuse or an
//! event it would skip.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs the CLI on `calendar` written to a temp file; returns (exit code, stdout, stderr) with the
/// file's path replaced by `FILE`.
fn run(calendar: &[u8]) -> (i32, String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("lectern-schedule-parse-{}-{n}.ics", std::process::id()));
    std::fs::write(&path, calendar).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lectern")).args(["schedule", "parse"]).arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&path.display().to_string(), "FILE");
    (out.status.code().unwrap_or(-1), clean(&out.stdout), clean(&out.stderr))
}

fn check(calendar: &str, expect_code: i32, expect_output: &str) {
    let (code, stdout, stderr) = run(calendar.as_bytes());
    assert_eq!(code, expect_code, "stdout: {stdout}\nstderr: {stderr}");
    let output = if code == 0 { stdout } else { stderr };
    assert!(output.contains(expect_output), "expected {expect_output:?} in:\n{output}");
}

const EVENT: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:u1\r\nDTSTART;TZID=Europe/Berlin:20300304T100000\r\nDTEND:20300304T100000Z\r\nSUMMARY:Caf\u{e9}\\, Teil 1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn schedule_parse_prints_json_or_file_line_errors() {
    check(EVENT, 0, r#""start": "2030-03-04T09:00:00Z""#);
    check(EVENT, 0, r#""title": "Café, Teil 1""#);
    check("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n", 0, "[]");
    check(&EVENT.replace("DTEND:20300304T100000Z", "DTEND:20300304T080000Z"), 1, "FILE:5: event u1 skipped: event u1 ends");
    check(&EVENT.replace("UID:u1\r\n", ""), 1, "FILE:2: event #1 (no UID, begins on line 2) skipped: VEVENT has no UID");
    check(&EVENT[..EVENT.len() - 15], 1, "FILE:7: calendar is truncated");
    check("<html>502</html>", 1, "FILE:1: not a calendar");
}

/// Issue 12: a calendar with one bad event prints its good events on stdout and each skipped one
/// on stderr, and exits 1 so scripts notice.
#[test]
fn regression_schedule_parse_prints_good_events_and_skipped_ones() {
    let vevent = EVENT.strip_prefix("BEGIN:VCALENDAR\r\n").and_then(|e| e.strip_suffix("END:VCALENDAR\r\n")).unwrap();
    let bad = vevent.replace("UID:u1", "UID:bad").replace("DTEND:20300304T100000Z", "DTEND:20300304T080000Z");
    let (code, stdout, stderr) = run(format!("BEGIN:VCALENDAR\r\n{vevent}{bad}END:VCALENDAR\r\n").as_bytes());
    assert_eq!(code, 1, "{stderr}");
    let events: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let uids: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(uids, ["u1"]);
    assert!(stderr.contains("FILE:11: event bad skipped: event bad ends (2030-03-04T08:00:00+00:00)"), "{stderr}");
    assert!(stderr.contains("FILE: 1 events, 1 skipped"), "{stderr}");
}

#[test]
fn schedule_parse_reads_the_shared_opencast_fixture() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/calendars/week.ics");
    let Ok(bytes) = std::fs::read(&fixture) else {
        eprintln!("SKIP: no {}", fixture.display());
        return;
    };
    let (code, stdout, stderr) = run(&bytes);
    assert_eq!(code, 0, "{stderr}");
    let events: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 10);
    for e in events {
        for key in ["uid", "start", "end", "title", "workflow", "device_names"] {
            assert!(!e[key].is_null(), "{key} missing in {e}");
        }
        assert!(e["start"].as_str().unwrap().ends_with('Z'), "{e}");
    }
}

/// Regression: `lectern --json status | grep -q ...` in the demo printed a panic ("failed
/// printing to stdout: Broken pipe") whenever grep had its match and closed the pipe before the
/// CLI finished writing. A reader that stops reading must end the output quietly, exit 0.
#[test]
fn a_reader_that_closes_the_pipe_early_is_not_a_panic() {
    let path = std::env::temp_dir().join(format!("lectern-schedule-pipe-{}.ics", std::process::id()));
    // Many events, so the JSON is far larger than a pipe buffer and the write must hit EPIPE.
    let vevent = EVENT.strip_prefix("BEGIN:VCALENDAR\r\n").and_then(|e| e.strip_suffix("END:VCALENDAR\r\n")).unwrap();
    let events: String = (0..2000).map(|i| vevent.replace("UID:u1", &format!("UID:u{i}"))).collect();
    std::fs::write(&path, format!("BEGIN:VCALENDAR\r\n{events}END:VCALENDAR\r\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lectern"))
        .args(["schedule", "parse"])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away without reading
    let out = child.wait_with_output().unwrap();
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
