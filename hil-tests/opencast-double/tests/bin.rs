//! The `opencast-double` binary: flags, the debug endpoint, and the state written on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::curl;

#[test]
fn serves_a_calendar_file_and_writes_its_state_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ics = dir.path().join("cal.ics");
    std::fs::write(&ics, b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:file-1\r\nDTSTART:20300101T000000Z\r\nDTEND:20300101T010000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").unwrap();
    let out = dir.path().join("state.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_opencast-double"))
        .args(["--port", "0", "--user", "box", "--password", "pw", "--basic", "--calendar"])
        .arg(&ics)
        .arg("--state-out")
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line {line:?}")).to_owned();
    let cal = curl(&["-u", "box:pw"], &format!("{url}/recordings/calendars?agentid=box"));
    assert_eq!(std::fs::read(&ics).unwrap(), cal.body);
    assert_eq!(curl(&["-u", "box:pw", "--data", "state=capturing"], &format!("{url}/capture-admin/recordings/file-1")).status, 200);
    let live: serde_json::Value = serde_json::from_slice(&curl(&[], &format!("{url}/__double/state")).body).unwrap();
    assert_eq!(live["recording_states"][0]["state"], "capturing");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(saved["recording_states"][0]["id"], "file-1");
    assert_eq!(saved["calendar_fetches"][0]["agent"], "box");
}

#[test]
fn bad_flags_are_named() {
    for (args, why) in [
        (vec!["--event", "uid=a,agent=b,start=+5"], "start and end"),
        (vec!["--port", "eighty"], "--port"),
        (vec!["--frobnicate"], "--frobnicate"),
        (vec!["--calendar", "/nonexistent.ics"], "/nonexistent.ics"),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_opencast-double")).args(&args).args(["--port", "0"]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(why), "{args:?}: {err}");
    }
}
