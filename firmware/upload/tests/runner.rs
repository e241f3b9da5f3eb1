//! The runner against the real journal store: the folder target end to end, and a scripted
//! target (a test double of the `Target` seam whose failures a test dictates) for retries,
//! parking, restarts, failover with abandon, and resuming after the runner was stopped mid-job.
//! Retry delays are milliseconds here; nothing sleeps for long.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_journal::{Journal, JournalOptions, UploadRow, UploadState, UploadStore};
use lectern_upload::folder::FolderTarget;
use lectern_upload::runner::{Clock, TargetFactory};
use lectern_upload::{enqueue, Class, FileRef, RetryPolicy, Rng, Runner, RunnerConfig, Step, StepIo, Target, Throttle, UploadError, UploadEvent, UploadSpec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn journal() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(dir.path(), JournalOptions::default(), 0).unwrap();
    let db = j.db_path();
    drop(j);
    (dir, db)
}

fn file(dir: &Path, name: &str, len: usize) -> FileRef {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    FileRef { path, bytes: len as u64, sha256: hex(&Sha256::digest(&data)) }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn spec(dir: &Path, id: &str, len: usize) -> UploadSpec {
    UploadSpec {
        recording_id: id.into(),
        title: format!("Lecture {id}"),
        started_at_ms: 1_795_000_000_000,
        media: file(dir, &format!("{id}.mp4"), len),
        manifest: Some(file(dir, &format!("{id}.manifest.json"), 300)),
        event: None,
    }
}

fn config(workers: usize) -> RunnerConfig {
    RunnerConfig {
        workers,
        retry: RetryPolicy { initial: Duration::from_millis(20), max: Duration::from_millis(80) },
        failover_after: 3,
        failback_after: Duration::from_secs(3600),
        health_interval: Duration::from_millis(50),
        poll: Duration::from_millis(50),
    }
}

fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64)
}

type Events = Arc<Mutex<Vec<String>>>;

fn recorder(events: &Events, store_db: Option<std::path::PathBuf>) -> Arc<dyn Fn(&UploadEvent) + Send + Sync> {
    let events = events.clone();
    Arc::new(move |e: &UploadEvent| {
        let line = match e {
            UploadEvent::Started { recording_id, endpoint, .. } => format!("started {recording_id} {endpoint}"),
            UploadEvent::Done { recording_id, endpoint, .. } => {
                // The event comes before the job is marked done (module doc of the runner).
                if let Some(db) = &store_db {
                    let st = UploadStore::open(db).unwrap().get(recording_id).unwrap().unwrap().state;
                    assert_ne!(st, UploadState::Done, "Done must be reported before the job is marked done");
                }
                format!("done {recording_id} {endpoint}")
            }
            UploadEvent::Parked { recording_id, reason, .. } => format!("parked {recording_id} {reason}"),
            UploadEvent::Failed { recording_id, class, .. } => format!("failed {recording_id} {class:?}"),
        };
        events.lock().unwrap().push(line);
    })
}

fn wait_for(db: &Path, id: &str, what: &str, mut ok: impl FnMut(&UploadRow) -> bool) -> UploadRow {
    let start = Instant::now();
    let store = UploadStore::open(db).unwrap();
    loop {
        if let Some(r) = store.get(id).unwrap() {
            if ok(&r) {
                return r;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_folder_upload_runs_end_to_end_and_arrives_whole() {
    let (dir, db) = journal();
    let dest = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "r1", 300_000);
    let mut store = UploadStore::open(&db).unwrap();
    enqueue(&mut store, "nas", &s, 0, Duration::ZERO, &mut Rng::new(1)).unwrap();
    let dirs = vec![dest.path().display().to_string()];
    let factory: TargetFactory = Arc::new(move |name| (name == "nas").then(|| Box::new(FolderTarget::with_piece(dirs.clone(), 64 * 1024)) as Box<dyn Target>));
    let events: Events = Default::default();
    let runner = Runner::spawn(config(1), &db, &["nas".into()], factory, system_clock(), Arc::new(Throttle::unlimited()), recorder(&events, Some(db.clone()))).unwrap();
    runner.wake();
    let row = wait_for(&db, "r1", "done", |r| r.state == UploadState::Done);
    runner.shutdown(Duration::from_secs(5));
    let out = dest.path().join("r1/r1.mp4");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&s.media.path).unwrap());
    assert!(dest.path().join("r1/r1.manifest.json").exists());
    assert_eq!(row.remote_ref.as_deref(), Some(out.display().to_string().as_str()));
    assert_eq!((row.bytes_confirmed, row.bytes_sent), (300_300, 300_300), "nothing sent twice");
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.first().map(String::as_str), Some(format!("started r1 {}", dest.path().display()).as_str()));
    assert!(ev.last().unwrap().starts_with("done r1"), "{ev:?}");
}

#[test]
fn a_folder_upload_resumes_from_what_the_folder_holds_after_a_cut() {
    let (dir, _db) = journal();
    let dest = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "r2", 200_000);
    let io = StepIo::unthrottled();
    let mut t = FolderTarget::with_piece(vec![dest.path().display().to_string()], 50_000);
    // Manifest, then two pieces of the MP4 made durable.
    let mut progress = Value::Null;
    for _ in 0..3 {
        let Step::Progress { progress: p, .. } = t.step(0, &s, &progress, &io).unwrap() else { panic!() };
        progress = p;
    }
    // The destination lost the tail of what it had acknowledged? Truncate it below the
    // confirmed count: the copy must continue from what is really there.
    let partial = dest.path().join("r2/.r2.mp4.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 100_000);
    std::fs::OpenOptions::new().write(true).open(&partial).unwrap().set_len(60_000).unwrap();
    let mut t = FolderTarget::with_piece(vec![dest.path().display().to_string()], 50_000);
    let mut sent = 0;
    while let Step::Progress { progress: p, sent: n, .. } = t.step(0, &s, &progress, &io).unwrap() {
        progress = p;
        sent += n;
    }
    assert_eq!(sent, 140_000, "resumed at 60,000, not at 0 and not at the confirmed 100,000");
    assert_eq!(std::fs::read(dest.path().join("r2/r2.mp4")).unwrap(), std::fs::read(&s.media.path).unwrap());
    // A rerun from the pre-rename progress finds it there whole and sends nothing.
    let Step::Progress { sent, .. } = t.step(0, &s, &json!({"done": ["r2.manifest.json"], "copied": 200_000}), &io).unwrap() else { panic!() };
    assert_eq!(sent, 0);
}

#[test]
fn a_folder_upload_commits_progress_only_at_its_durable_checkpoints() {
    let (dir, db) = journal();
    let dest = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "r3", 1_000_000);
    let mut store = UploadStore::open(&db).unwrap();
    enqueue(&mut store, "nas", &s, 0, Duration::ZERO, &mut Rng::new(1)).unwrap();
    // Every write of the job's progress, counted by the database itself.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE progress_writes (n INTEGER);
         CREATE TRIGGER count_progress AFTER UPDATE OF progress ON uploads BEGIN INSERT INTO progress_writes VALUES (1); END;",
    )
    .unwrap();
    let dirs = vec![dest.path().display().to_string()];
    // 16 pieces of 64 KiB, fsynced every 256 KiB.
    let factory: TargetFactory =
        Arc::new(move |name| (name == "nas").then(|| Box::new(FolderTarget::with_pieces(dirs.clone(), 64 * 1024, 256 * 1024)) as Box<dyn Target>));
    let events: Events = Default::default();
    let runner = Runner::spawn(config(1), &db, &["nas".into()], factory, system_clock(), Arc::new(Throttle::unlimited()), recorder(&events, Some(db.clone()))).unwrap();
    runner.wake();
    let row = wait_for(&db, "r3", "done", |r| r.state == UploadState::Done);
    runner.shutdown(Duration::from_secs(5));
    assert_eq!(std::fs::read(dest.path().join("r3/r3.mp4")).unwrap(), std::fs::read(&s.media.path).unwrap());
    assert_eq!((row.bytes_confirmed, row.bytes_sent), (1_000_300, 1_000_300), "every byte counted once, skipped commits included");
    let writes: i64 = conn.query_row("SELECT COUNT(*) FROM progress_writes", [], |r| r.get(0)).unwrap();
    // The manifest (1) and the MP4's first piece, its three checkpoints, its end and the
    // completion: 7. One commit per piece would be 19.
    assert!(writes <= 8, "{writes} progress commits for 17 steps");
}

#[test]
fn a_folder_copy_restarted_between_checkpoints_goes_back_to_the_last_fsync() {
    let (dir, _db) = journal();
    let dest = tempfile::tempdir().unwrap();
    let s = spec(dir.path(), "r4", 400_000);
    let io = StepIo::unthrottled();
    let dirs = vec![dest.path().display().to_string()];
    let mut t = FolderTarget::with_pieces(dirs.clone(), 50_000, 150_000);
    let mut progress = Value::Null;
    let mut confirmed = Vec::new();
    // The manifest, then five pieces of the MP4: a checkpoint after the third.
    for _ in 0..6 {
        let Step::Progress { progress: p, bytes_confirmed, .. } = t.step(0, &s, &progress, &io).unwrap() else { panic!() };
        confirmed.push(bytes_confirmed);
        progress = p;
    }
    assert_eq!(confirmed, [300, 300, 300, 150_300, 150_300, 150_300], "confirmed only at the fsync");
    let partial = dest.path().join("r4/.r4.mp4.partial");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 250_000);
    // A new process (a crash, a reboot) knows only the durable 150,000: the unsynced tail may
    // be anything after a cut of the destination, so it is copied again.
    let mut t = FolderTarget::with_pieces(dirs, 50_000, 150_000);
    let mut sent = 0;
    while let Step::Progress { progress: p, sent: n, .. } = t.step(0, &s, &progress, &io).unwrap() {
        progress = p;
        sent += n;
    }
    assert_eq!(sent, 250_000, "resumed at the checkpoint");
    assert_eq!(std::fs::read(dest.path().join("r4/r4.mp4")).unwrap(), std::fs::read(&s.media.path).unwrap());
}

#[derive(Clone)]
enum Inject {
    Fail(UploadError),
    Down(usize),
}

/// A `Target` whose outcomes a test dictates; it keeps its "server" state (how far each
/// endpoint got) so resuming can be checked against it.
#[derive(Clone)]
struct Scripted {
    endpoints: Vec<String>,
    piece: u64,
    /// Outcomes to return before behaving normally, in order.
    script: Arc<Mutex<VecDeque<UploadError>>>,
    /// Endpoints that fail every step and health check.
    down: Arc<Mutex<HashSet<usize>>>,
    /// What happens (once) when a step starts at this offset: a failure, or an endpoint going down.
    at: Arc<Mutex<Vec<(u64, Inject)>>>,
    /// `(endpoint, offset)` of every step attempted.
    calls: Arc<Mutex<Vec<(usize, u64)>>>,
    abandoned: Arc<Mutex<Vec<usize>>>,
    /// What `abandon` answers.
    already_there: Option<String>,
}

impl Scripted {
    fn new(endpoints: usize, piece: u64) -> Scripted {
        Scripted {
            endpoints: (0..endpoints).map(|i| format!("http://endpoint-{i}")).collect(),
            piece,
            script: Default::default(),
            down: Default::default(),
            at: Default::default(),
            calls: Default::default(),
            abandoned: Default::default(),
            already_there: None,
        }
    }
}

impl Target for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }
    fn endpoints(&self) -> &[String] {
        &self.endpoints
    }
    fn health(&mut self, i: usize) -> Result<(), UploadError> {
        if self.down.lock().unwrap().contains(&i) {
            Err(UploadError::transient("down"))
        } else {
            Ok(())
        }
    }
    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, _io: &StepIo) -> Result<Step, UploadError> {
        let off = progress["off"].as_u64().unwrap_or(0);
        self.calls.lock().unwrap().push((i, off));
        let hit = {
            let mut at = self.at.lock().unwrap();
            at.iter().position(|(o, _)| *o == off).map(|k| at.remove(k).1)
        };
        match hit {
            Some(Inject::Fail(e)) => return Err(e),
            Some(Inject::Down(d)) => {
                self.down.lock().unwrap().insert(d);
            }
            None => {}
        }
        if self.down.lock().unwrap().contains(&i) {
            return Err(UploadError::transient(format!("endpoint {i} down")));
        }
        if let Some(e) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        let total = spec.bytes_total();
        let next = (off + self.piece).min(total);
        let sent = next - off;
        if next == total {
            Ok(Step::Done { progress: json!({"off": next}), remote_ref: format!("{}@{i}", spec.recording_id), sent })
        } else {
            Ok(Step::Progress { progress: json!({"off": next}), bytes_confirmed: next, sent })
        }
    }
    fn abandon(&mut self, i: usize, _spec: &UploadSpec, _progress: &Value) -> Result<Option<String>, UploadError> {
        self.abandoned.lock().unwrap().push(i);
        Ok(self.already_there.clone())
    }
}

fn start(db: &Path, t: &Scripted, cfg: RunnerConfig, events: &Events) -> Runner {
    let t = t.clone();
    let factory: TargetFactory = Arc::new(move |name| (name == "t").then(|| Box::new(t.clone()) as Box<dyn Target>));
    Runner::spawn(cfg, db, &["t".into()], factory, system_clock(), Arc::new(Throttle::unlimited()), recorder(events, Some(db.to_owned()))).unwrap()
}

fn queue(db: &Path, dir: &Path, id: &str, len: usize) {
    let mut store = UploadStore::open(db).unwrap();
    enqueue(&mut store, "t", &spec(dir, id, len), 0, Duration::ZERO, &mut Rng::new(7)).unwrap();
}

#[test]
fn transient_failures_are_retried_and_count_as_re_sent_bytes() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "r1", 9_700);
    let t = Scripted::new(1, 1000);
    {
        let mut s = t.script.lock().unwrap();
        s.push_back(UploadError::transient("connection reset").with_sent(400));
        s.push_back(UploadError::new(Class::Transient { retry_after: Some(Duration::from_secs(0)) }, "HTTP 503"));
        s.push_back(UploadError::new(Class::Auth, "HTTP 401"));
    }
    let events: Events = Default::default();
    let r = start(&db, &t, config(1), &events);
    r.wake();
    let row = wait_for(&db, "r1", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!(row.bytes_sent, 10_000 + 400, "the cut-off 400 bytes count as re-sent");
    assert_eq!(row.attempts, 0, "a success resets the failure count");
    let ev = events.lock().unwrap().clone();
    assert_eq!(ev.iter().filter(|e| e.starts_with("failed")).count(), 3, "{ev:?}");
    assert_eq!(ev.iter().filter(|e| e.starts_with("started")).count(), 1, "started once: {ev:?}");
    // Every retry resumed at the same offset: nothing confirmed was sent again.
    let calls = t.calls.lock().unwrap().clone();
    assert_eq!(&calls[..4], &[(0, 0), (0, 0), (0, 0), (0, 0)]);
    assert_eq!(calls.len(), 4 + 10 - 1);
}

#[test]
fn a_refused_job_is_parked_with_its_reason_and_the_next_one_goes_on() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "a", 3_000);
    queue(&db, dir.path(), "b", 3_000);
    let t = Scripted::new(1, 1000);
    t.script.lock().unwrap().push_back(UploadError::new(Class::Refused, "HTTP 403: not allowed to ingest"));
    let events: Events = Default::default();
    let r = start(&db, &t, config(1), &events);
    r.wake();
    let a = wait_for(&db, "a", "parked", |r| r.state == UploadState::Parked);
    wait_for(&db, "b", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!(a.last_error.as_deref(), Some("HTTP 403: not allowed to ingest"));
    assert!(dir.path().join("a.mp4").exists(), "the media is kept");
    assert!(events.lock().unwrap().contains(&"parked a HTTP 403: not allowed to ingest".to_owned()));
}

#[test]
fn a_server_that_lost_the_upload_starts_it_again_from_empty_progress() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "r", 5_000);
    let t = Scripted::new(1, 1000);
    // Two pieces, then the server says the upload is gone.
    t.at.lock().unwrap().push((2000, Inject::Fail(UploadError::new(Class::Restart, "NoSuchUpload"))));
    let events: Events = Default::default();
    let calls = t.calls.clone();
    let r = start(&db, &t, config(1), &events);
    let row = wait_for(&db, "r", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    let calls = calls.lock().unwrap().clone();
    assert_eq!(&calls[..4], &[(0, 0), (0, 1000), (0, 2000), (0, 0)], "after the restart, from offset 0");
    assert_eq!(row.bytes_sent, 2000 + 5300, "the two lost pieces count as re-sent");
    assert!(row.endpoint_log.iter().any(|m| m.why.contains("server lost the upload")), "{:?}", row.endpoint_log);
}

#[test]
fn failover_moves_a_job_to_the_standby_after_abandoning_it_on_the_primary() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "r", 10_000);
    let t = Scripted::new(2, 1000);
    // Three pieces on the primary, then it goes down.
    t.at.lock().unwrap().push((3000, Inject::Down(0)));
    let events: Events = Default::default();
    let calls = t.calls.clone();
    let r = start(&db, &t, config(1), &events);
    let row = wait_for(&db, "r", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!(row.endpoint.as_deref(), Some("http://endpoint-1"));
    assert_eq!(row.remote_ref.as_deref(), Some("r@1"));
    assert_eq!(t.abandoned.lock().unwrap().clone(), [0], "the primary's partial upload was abandoned");
    let log: Vec<&str> = row.endpoint_log.iter().map(|m| m.endpoint.as_str()).collect();
    assert_eq!(log, ["http://endpoint-1"], "{:?}", row.endpoint_log);
    let calls = calls.lock().unwrap().clone();
    assert!(calls.contains(&(1, 0)), "the standby started from scratch: {calls:?}");
}

#[test]
fn a_job_that_already_arrived_on_the_old_endpoint_is_done_there_and_not_moved() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "r", 10_000);
    let mut t = Scripted::new(2, 1000);
    t.already_there = Some("mp-from-a-lost-reply".into());
    t.at.lock().unwrap().push((2000, Inject::Down(0)));
    let events: Events = Default::default();
    let r = start(&db, &t, config(1), &events);
    let row = wait_for(&db, "r", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!((row.endpoint.as_deref(), row.remote_ref.as_deref()), (Some("http://endpoint-0"), Some("mp-from-a-lost-reply")));
    assert!(t.calls.lock().unwrap().iter().all(|&(i, _)| i == 0), "nothing was sent to the standby");
}

#[test]
fn a_stopped_runner_leaves_progress_that_the_next_one_resumes() {
    let (dir, db) = journal();
    queue(&db, dir.path(), "r", 50_000);
    let t = Scripted::new(1, 1000);
    // The link dies at 5,000 bytes: the runner retries until it is stopped.
    t.at.lock().unwrap().push((5000, Inject::Down(0)));
    let events: Events = Default::default();
    let r = start(&db, &t, config(1), &events);
    wait_for(&db, "r", "a failure at 5000", |r| r.attempts >= 1);
    r.shutdown(Duration::from_secs(5));
    let after_stop = UploadStore::open(&db).unwrap().get("r").unwrap().unwrap();
    assert_eq!((after_stop.bytes_confirmed, after_stop.state), (5000, UploadState::Active));
    t.down.lock().unwrap().clear();
    let calls_before = t.calls.lock().unwrap().len();
    let r = start(&db, &t, config(1), &events);
    let row = wait_for(&db, "r", "done", |r| r.state == UploadState::Done);
    r.shutdown(Duration::from_secs(5));
    let calls = t.calls.lock().unwrap().clone();
    assert_eq!(calls[calls_before].1, after_stop.bytes_confirmed, "resumed where the journal said");
    assert_eq!(row.bytes_sent, 50_300, "no piece sent twice across the restart");
}

#[test]
fn workers_run_jobs_concurrently_up_to_the_cap() {
    let (dir, db) = journal();
    for id in ["a", "b", "c", "d"] {
        queue(&db, dir.path(), id, 20_000);
    }
    let t = Scripted::new(1, 1000);
    let events: Events = Default::default();
    let r = start(&db, &t, config(2), &events);
    let mut most = 0;
    let start_t = Instant::now();
    loop {
        most = most.max(r.view().live.len());
        let done = UploadStore::open(&db).unwrap().counts().unwrap().done;
        if done == 4 {
            break;
        }
        assert!(start_t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(1));
    }
    r.shutdown(Duration::from_secs(5));
    assert!(most <= 2, "at most two at once, saw {most}");
}

#[test]
fn enqueue_spreads_start_times_over_the_delay_window() {
    let (dir, db) = journal();
    let mut store = UploadStore::open(&db).unwrap();
    let mut rng = Rng::new(42);
    let mut starts = Vec::new();
    for n in 0..20 {
        let id = format!("r{n}");
        enqueue(&mut store, "t", &spec(dir.path(), &id, 10), 1_000, Duration::from_secs(300), &mut rng).unwrap();
        starts.push(store.get(&id).unwrap().unwrap().not_before_ms);
    }
    assert!(starts.iter().all(|&t| (1_000..=301_000).contains(&t)));
    let spread = starts.iter().max().unwrap() - starts.iter().min().unwrap();
    assert!(spread > 150_000, "spread over the window, not all at 10:00: {spread} ms");
}
