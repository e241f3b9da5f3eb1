//! The daemon's upload room end to end on the sim board: a button-started recording is
//! stitched, queued as an upload job, and copied to a folder target (a stand-in for a mounted
//! NAS share: a plain directory); `lectern uploads` reports the job; a destination that is
//! missing makes the job wait and retry (with back-off) until it appears, with nothing lost;
//! once uploaded (and the retention window, 0 h here, passed) the media leaves the card.

use std::time::Duration;

use lectern_control::Request;
use lectern_hil_tests::{sha256_file, wait_until, Daemon, SMALL};
use serde_json::Value;

fn config(dest: &std::path::Path) -> String {
    format!(
        "{SMALL}[upload]\nstart_delay_max_s = 0\nretry_initial_s = 1\nretry_max_s = 2\n\
         retention_hours = 0\nevict_below_mb = 17\n\
         [[upload.target]]\nname = \"nas\"\nkind = \"folder\"\ndirs = [\"{}\"]\n",
        dest.display()
    )
}

fn job(d: &Daemon, id: &str) -> Value {
    let v = d.ctl(Request::Uploads).unwrap();
    v["uploads"].as_array().unwrap().iter().find(|j| j["recording_id"] == id).cloned().unwrap_or(Value::Null)
}

/// Records `secs` seconds through the CLI and returns the recording id.
fn record(d: &Daemon, secs: u64) -> String {
    let started = d.ctl(Request::RecordStart { title: Some("Upload test".into()) }).unwrap();
    let id = started["recording"]["id"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_secs(secs));
    d.ctl(Request::RecordStop).unwrap();
    id
}

#[test]
fn a_recording_is_uploaded_to_a_folder_and_waits_while_the_folder_is_missing() {
    let nas = tempfile::tempdir().unwrap();
    let share = nas.path().join("lectures");
    // The share is not mounted yet: its directory does not exist.
    let d = Daemon::start(&config(&share)).unwrap();
    let id = record(&d, 4);
    wait_until("a failed attempt on the missing folder", Duration::from_secs(60), || job(&d, &id)["attempts"].as_i64().unwrap_or(0) >= 1).unwrap();
    let j = job(&d, &id);
    assert_eq!(j["state"], "queued", "{j}");
    assert!(j["last_error"].as_str().unwrap().contains("lectures"), "the error names the folder: {j}");
    let human = d.cli(&["uploads"]).unwrap();
    assert!(human.contains(&id) && human.contains("last error"), "{human}");

    // The share appears: the job goes through on its next try.
    std::fs::create_dir(&share).unwrap();
    wait_until("the upload", Duration::from_secs(60), || job(&d, &id)["state"] == "done").unwrap();
    let j = job(&d, &id);
    let stitched = d.ctl(Request::Recordings).unwrap()["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap()["stitch"].clone();
    let copy = share.join(&id).join(format!("{id}.mp4"));
    assert_eq!(sha256_file(&copy).unwrap(), stitched["sha256"].as_str().unwrap(), "the copy is the stitched file");
    assert!(share.join(&id).join(format!("{id}.manifest.json")).exists());
    assert_eq!(j["bytes_confirmed"], j["bytes_total"]);
    assert_eq!(j["bytes_sent"], j["bytes_total"], "nothing sent twice: {j}");
    assert_eq!(j["remote_ref"], copy.display().to_string());
    let status = d.status();
    assert_eq!(status["uploads"]["done"], 1, "{}", status["uploads"]);
    assert_eq!(status["uploads"]["backlog"], false);

    // Retention: the window is 0 h here, so the uploaded media leaves the card (the segments
    // and the stitched file; the manifest and the journal's record stay).
    let rec_dir = d.media().join("recordings").join(&id);
    wait_until("the media evicted", Duration::from_secs(30), || !rec_dir.join(format!("{id}.mp4")).exists()).unwrap();
    let rec = d.ctl(Request::Recordings).unwrap()["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id.as_str()).unwrap().clone();
    assert!(rec["evicted_at_ms"].is_i64(), "{rec}");
    assert!(rec["segments"].as_u64().unwrap() > 0, "totals from before the eviction stay: {rec}");
    let manifest: Value = serde_json::from_slice(&std::fs::read(rec_dir.join(format!("{id}.manifest.json"))).unwrap()).unwrap();
    assert_eq!(manifest["upload"]["target"], "nas", "the manifest says where the recording went: {}", manifest["upload"]);
    assert_eq!(manifest["upload"]["remote_ref"], copy.display().to_string());
    assert!(!std::fs::read_dir(&rec_dir).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("part-")), "segments gone");

    // Retrying a finished upload is refused with a clear message.
    let e = d.cli(&["uploads", "retry", &id]).unwrap_err().to_string();
    assert!(e.contains("already uploaded"), "{e}");
}
