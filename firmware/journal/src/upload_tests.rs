//! Tests of the upload job store (`upload_store.rs`): one job per recording, progress that
//! survives a reopen, failures and parking, endpoint moves, and the counters.

use super::*;
use crate::tests::new_journal;

fn job<'a>(id: &'a str, spec: &'a str) -> NewUpload<'a> {
    NewUpload { recording_id: id, target: "opencast", spec, bytes_total: 1000, not_before_ms: 500 }
}

#[test]
fn one_job_per_recording_and_a_done_job_is_never_due_again() {
    let (dir, journal) = new_journal();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    assert_eq!(s.create(&job("r1", "{}"), 100).unwrap(), Created::Added);
    assert_eq!(s.create(&job("r1", "{\"other\":1}"), 200).unwrap(), Created::Exists(UploadState::Queued));
    assert_eq!(s.get("r1").unwrap().unwrap().spec, "{}", "the second create changed nothing");
    assert!(s.due(499, 10).unwrap().is_empty(), "the start delay holds it back");
    assert_eq!(s.due(500, 10).unwrap().len(), 1);
    assert!(s.complete("r1", "http://oc", "{}", "mp-1", 1000, 600).unwrap());
    assert!(s.due(10_000, 10).unwrap().is_empty());
    assert!(!s.complete("r1", "http://oc", "{}", "mp-2", 1000, 700).unwrap(), "done once");
    assert_eq!(s.create(&job("r1", "{}"), 800).unwrap(), Created::Exists(UploadState::Done));
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!((r.remote_ref.as_deref(), r.done_at_ms, r.bytes_confirmed), (Some("mp-1"), Some(600), 1000));
    drop(dir);
}

#[test]
fn progress_survives_a_reopen_and_failures_count_until_the_next_success() {
    let (dir, journal) = new_journal();
    let db = journal.db_path();
    let mut s = UploadStore::open(&db).unwrap();
    s.create(&job("r1", "{}"), 0).unwrap();
    assert!(s.save_progress("r1", "http://a", "{\"chunk\":3}", 400, 400, 1000).unwrap());
    s.add_sent("r1", 100).unwrap();
    s.record_failure("r1", "timeout", 5000).unwrap();
    s.record_failure("r1", "timeout", 9000).unwrap();
    drop(s);
    let s = UploadStore::open(&db).unwrap();
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!(r.state, UploadState::Active);
    assert_eq!((r.progress.as_deref(), r.bytes_confirmed, r.bytes_sent), (Some("{\"chunk\":3}"), 400, 500));
    assert_eq!((r.attempts, r.last_error.as_deref(), r.not_before_ms, r.started_at_ms), (2, Some("timeout"), 9000, Some(1000)));
    assert!(s.due(8999, 10).unwrap().is_empty());
    assert_eq!(s.next_due_ms().unwrap(), Some(9000));
    let mut s = s;
    s.save_progress("r1", "http://a", "{\"chunk\":4}", 500, 100, 9500).unwrap();
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!((r.attempts, r.last_error), (0, None));
    assert_eq!(s.counts().unwrap(), UploadCounts { queued: 0, active: 1, parked: 0, done: 0, bytes_pending: 500 });
    drop(dir);
}

#[test]
fn parked_jobs_keep_their_reason_until_retried() {
    let (dir, journal) = new_journal();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    s.create(&job("r1", "{}"), 0).unwrap();
    s.park("r1", "HTTP 403: forbidden").unwrap();
    assert!(s.due(i64::MAX, 10).unwrap().is_empty());
    assert!(!s.save_progress("r1", "e", "{}", 1, 1, 1).unwrap(), "a parked job takes no progress");
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!((r.state, r.last_error.as_deref()), (UploadState::Parked, Some("HTTP 403: forbidden")));
    assert_eq!(s.retry("r1", 7).unwrap(), Some(UploadState::Parked));
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!((r.state, r.not_before_ms), (UploadState::Queued, 7));
    assert_eq!(s.retry("nope", 7).unwrap(), None);
    drop(dir);
}

#[test]
fn an_endpoint_move_is_logged_and_drops_progress_unless_it_resumes() {
    let (dir, journal) = new_journal();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    s.create(&job("r1", "{}"), 0).unwrap();
    s.save_progress("r1", "http://a", "{\"upload\":\"x\"}", 300, 300, 10).unwrap();
    s.move_endpoint("r1", "http://b", "http://a failed 5 times", false, 20).unwrap();
    let r = s.get("r1").unwrap().unwrap();
    assert_eq!((r.endpoint.as_deref(), r.progress, r.bytes_confirmed, r.state), (Some("http://b"), None, 0, UploadState::Queued));
    assert_eq!(r.bytes_sent, 300, "what was sent stays counted");
    s.move_endpoint("r1", "http://a", "primary healthy again", true, 30).unwrap();
    let r = s.get("r1").unwrap().unwrap();
    let moves: Vec<(&str, i64)> = r.endpoint_log.iter().map(|m| (m.endpoint.as_str(), m.at_ms)).collect();
    assert_eq!(moves, [("http://b", 20), ("http://a", 30)]);
    drop(dir);
}

#[test]
fn backlog_and_recently_done_are_counted_in_sql() {
    let (dir, journal) = new_journal();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    for (id, at) in [("old", 100), ("new", 900), ("gone", 50)] {
        s.create(&NewUpload { recording_id: id, target: "t", spec: "{}", bytes_total: 1, not_before_ms: 0 }, at).unwrap();
    }
    s.complete("gone", "e", "{}", "r", 1, 1_000).unwrap();
    assert_eq!(s.pending_created_before(500).unwrap(), 1, "only 'old': 'gone' is done, 'new' is recent");
    assert_eq!(s.done_since(1_000).unwrap(), ["gone"]);
    assert!(s.done_since(1_001).unwrap().is_empty());
    drop(dir);
}
