//! The Opencast target against the Opencast test double over loopback: a resumable upload in
//! small chunks, resume after a cut chunk and after a "crash" (a new target built from the last
//! persisted progress), "Wrong chunk number" and "Job is locked", a lost ingest answer, the
//! `addTrack` fallback, and how refusals are classified. The runner is simulated by [`drive`]:
//! it calls `step`, keeps the returned progress (as the journal would) and retries transient
//! errors after their `Retry-After` (capped, so no test sleeps long).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lectern_opencast_double::{Config as DoubleConfig, Double, Down, Faults, Snapshot};
use lectern_upload::opencast::{OpencastTarget, MANIFEST_FLAVOR};
use lectern_upload::{Class, EventMeta, FileRef, Step, StepIo, Target, UploadError, UploadSpec};
use serde_json::Value;
use sha2::{Digest, Sha256};

const AGENT: &str = "room-101";
const CHUNK: u64 = 64 * 1024;

fn config(url: &str, password: &str) -> lectern_config::OpencastConfig {
    let text = format!(
        "[opencast]\nurl = \"{url}\"\nusername = \"agent\"\npassword = \"{password}\"\nauth = \"digest\"\naddress = \"http://box\"\n\
         connect_timeout_s = 1\nread_timeout_s = 2\nrequest_timeout_s = 5\nupload_timeout_s = 60\nworkflow = \"fast\"\n"
    );
    lectern_config::Config::parse(&text, None).unwrap().opencast.unwrap()
}

fn double(fileupload: bool) -> Double {
    Double::start(DoubleConfig { fileupload, ..DoubleConfig::digest("agent", "secret") }).unwrap()
}

fn file_ref(path: &Path, bytes: &[u8]) -> FileRef {
    std::fs::write(path, bytes).unwrap();
    let sha = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    FileRef { path: path.to_owned(), bytes: bytes.len() as u64, sha256: sha }
}

const EPISODE: &str = "<?xml version=\"1.0\"?><dublincore xmlns=\"http://www.opencastproject.org/xsd/1.0/dublincore/\" xmlns:dcterms=\"http://purl.org/dc/terms/\"><dcterms:title>Lecture</dcterms:title></dublincore>";
const SERIES: &str = "<?xml version=\"1.0\"?><dublincore xmlns=\"http://www.opencastproject.org/xsd/1.0/dublincore/\" xmlns:dcterms=\"http://purl.org/dc/terms/\"><dcterms:title>Course</dcterms:title></dublincore>";

/// A recording of `size` pseudo-random bytes with a manifest; scheduled (with catalogs and a
/// workflow configuration) or ad-hoc.
fn spec(dir: &Path, size: usize, scheduled: bool) -> UploadSpec {
    let mut x = 0x2545f491u32;
    let media: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let event = scheduled.then(|| EventMeta {
        uid: "3f1c2a9e-event-1".into(),
        episode_dc: Some(EPISODE.into()),
        series_dc: Some(SERIES.into()),
        workflow: Some("schedule-and-upload".into()),
        workflow_config: BTreeMap::from([("straightToPublishing".into(), "true".into())]),
    });
    UploadSpec {
        recording_id: "20261126-101500-a1".into(),
        title: "Lecture".into(),
        started_at_ms: 1_795_000_000_000,
        media: file_ref(&dir.join("20261126-101500-a1.mp4"), &media),
        manifest: Some(file_ref(&dir.join("20261126-101500-a1.manifest.json"), br#"{"recording":"20261126-101500-a1","gaps":[]}"#)),
        event,
    }
}

/// What one simulated runner loop saw.
#[derive(Debug, Default)]
struct Run {
    remote_ref: Option<String>,
    progress: Value,
    steps: usize,
    sent: u64,
    errors: Vec<UploadError>,
}

/// Steps until done, an error that is not transient, or `max_steps`; transient errors are
/// retried after their `Retry-After` (at most 1.1 s).
fn drive(t: &mut OpencastTarget, spec: &UploadSpec, progress: Value, max_steps: usize) -> Run {
    let io = StepIo::unthrottled();
    let mut run = Run { progress, ..Run::default() };
    while run.steps < max_steps {
        run.steps += 1;
        match t.step(0, spec, &run.progress, &io) {
            Ok(Step::Progress { progress, sent, .. }) => {
                run.progress = progress;
                run.sent += sent;
            }
            Ok(Step::Done { progress, remote_ref, sent }) => {
                run.progress = progress;
                run.sent += sent;
                run.remote_ref = Some(remote_ref);
                return run;
            }
            Err(e) => {
                run.sent += e.sent;
                let wait = match &e.class {
                    Class::Transient { retry_after } => retry_after.unwrap_or(Duration::from_millis(20)).min(Duration::from_millis(1100)),
                    _ => {
                        run.errors.push(e);
                        return run;
                    }
                };
                run.errors.push(e);
                std::thread::sleep(wait);
            }
        }
    }
    run
}

fn target(d: &Double) -> OpencastTarget {
    OpencastTarget::new(&config(&d.url(), "secret"), AGENT, vec![d.url()], CHUNK)
}

fn phase(p: &Value) -> &str {
    p.get("phase").and_then(Value::as_str).unwrap_or("start")
}

/// Steps until the progress is in `want` phase (and `until` holds), without errors.
fn drive_until(t: &mut OpencastTarget, spec: &UploadSpec, mut progress: Value, until: impl Fn(&Value) -> bool) -> Value {
    let io = StepIo::unthrottled();
    for _ in 0..1000 {
        if until(&progress) {
            return progress;
        }
        match t.step(0, spec, &progress, &io).unwrap() {
            Step::Progress { progress: p, .. } => progress = p,
            Step::Done { .. } => panic!("done before the condition held"),
        }
    }
    panic!("condition never held");
}

/// Everything a finished upload must leave on the server: one media package, created once,
/// ingested once, with the track (bytes and SHA-256 of the file), the manifest attachment and
/// the catalogs.
fn assert_one_complete_ingest(s: &Snapshot, spec: &UploadSpec, mp_id: &str) {
    assert_eq!(s.ingest_count(), 1, "exactly one ingest");
    let mps: Vec<_> = s.mediapackages.iter().filter(|m| m.id == mp_id).collect();
    assert_eq!(mps.len(), 1);
    let mp = mps[0];
    assert_eq!(mp.creations, 1, "the media package was created once");
    let tracks: Vec<_> = mp.ingested_tracks().collect();
    assert_eq!(tracks.len(), 1, "{:?}", mp.tracks);
    assert_eq!((tracks[0].bytes, tracks[0].sha256.as_str(), tracks[0].flavor.as_str()), (spec.media.bytes, spec.media.sha256.as_str(), "presenter/source"));
    assert_eq!(std::fs::read(&tracks[0].path).unwrap(), std::fs::read(&spec.media.path).unwrap());
    let m = spec.manifest.as_ref().unwrap();
    assert!(mp.attachments.iter().any(|a| a.flavor == MANIFEST_FLAVOR && a.bytes == m.bytes && a.sha256 == m.sha256), "{:?}", mp.attachments);
    let ing = mp.ingested.as_ref().unwrap();
    assert!(mp.attachments.iter().all(|a| ing.elements.contains(&a.id)), "the attachment is in the ingested package");
    assert_eq!(ing.workflow_instance_id.as_deref(), Some(mp_id));
    let flavors: Vec<&str> = mp.ingested_catalogs().map(|c| c.flavor.as_str()).collect();
    if spec.event.is_some() {
        assert_eq!(flavors, ["dublincore/episode", "dublincore/series"]);
        assert_eq!(ing.workflow_definition_id.as_deref(), Some("schedule-and-upload"));
        assert!(ing.params.contains(&("straightToPublishing".into(), "true".into())), "{:?}", ing.params);
    } else {
        assert_eq!(flavors, ["dublincore/episode"]);
        assert_eq!(ing.workflow_definition_id.as_deref(), Some("fast"));
    }
}

#[test]
fn a_recording_goes_up_in_chunks_and_is_ingested_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    let spec = spec(dir.path(), 3 * 1024 * 1024 + 12_345, true);
    let chunks = spec.media.bytes.div_ceil(CHUNK);
    let t0 = Instant::now();
    let run = drive(&mut target(&d), &spec, Value::Null, 1000);
    let took = t0.elapsed();
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.remote_ref.as_deref(), Some("3f1c2a9e-event-1"));
    // start, package, one step per chunk, uploaded → ingesting, ingest.
    assert_eq!(run.steps as u64, 2 + chunks + 2);
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "3f1c2a9e-event-1");
    assert_eq!(s.upload_jobs.len(), 1);
    assert_eq!((s.chunks_received(), s.chunk_bytes()), (chunks, (spec.media.bytes, spec.media.bytes)), "nothing sent twice");
    assert_eq!(run.sent, spec.bytes_total());
    let challenges = s.requests.iter().filter(|r| r.status == 401).count();
    assert_eq!(challenges, 1, "one Digest challenge, then its nonce is reused");
    eprintln!("{} bytes in {chunks} chunks of {CHUNK}: {took:?} ({:.1} MB/s over loopback)", spec.media.bytes, spec.media.bytes as f64 / took.as_secs_f64() / 1e6);
}

#[test]
fn a_cut_chunk_and_a_crash_resume_from_the_servers_position() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    let spec = spec(dir.path(), 1024 * 1024 + 777, false);
    let mut t = target(&d);
    let p = drive_until(&mut t, &spec, Value::Null, |p| phase(p) == "chunks" && p["next"] == 5);
    // The connection drops 20 000 bytes into chunk 5: the job stays at chunk 4.
    d.cut_chunks(20_000, 1);
    let io = StepIo::unthrottled();
    let e = t.step(0, &spec, &p, &io).unwrap_err();
    assert!(matches!(e.class, Class::Transient { .. }), "{e}");
    assert!(e.sent > 0 && e.sent <= CHUNK, "the failed step counts what went out: {}", e.sent);
    // "Crash": the target is gone; a new one starts from the last persisted progress.
    drop(t);
    let mut t = target(&d);
    let p = drive_until(&mut t, &spec, p, |p| phase(p) == "chunks" && p["next"] == 9);
    // The answer to chunk 9 is lost after the server appended it; the next step asks and goes on
    // with chunk 10, sending nothing again.
    d.lose_replies("/upload/job/", 1);
    let run = drive(&mut t, &spec, p, 1000);
    assert_eq!(run.errors.len(), 1, "{:?}", run.errors);
    assert!(run.remote_ref.is_some());
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "lectern-adhoc-20261126-101500-a1");
    let (received, accepted) = s.chunk_bytes();
    assert_eq!(accepted, spec.media.bytes);
    let resent = received - accepted;
    assert!(resent <= CHUNK, "at most one chunk re-sent per interruption, got {resent}");
    let job = s.upload_jobs.iter().find(|j| j.chunks_received > 0).expect("a job got the chunks");
    assert_eq!(job.chunks_received, job.chunks_total);
    assert!(job.refusals.iter().any(|r| r.starts_with("cut after")), "{:?}", job.refusals);
    eprintln!("re-sent {resent} bytes after a cut chunk and a lost chunk answer (chunk {CHUNK})");
}

#[test]
fn wrong_chunk_number_and_job_is_locked_are_answered_by_asking_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    let spec = spec(dir.path(), 600_000, false);
    let mut t = target(&d);
    let p = drive_until(&mut t, &spec, Value::Null, |p| phase(p) == "chunks" && p["next"] == 3);
    let job = p["job"].as_str().unwrap().to_owned();
    // Someone else sends chunk 3 (the right bytes): the target's own idea of the next chunk is
    // now wrong, and it only learns so from the server.
    let mut other = lectern_opencast::Client::new(&config(&d.url(), "secret"), AGENT);
    let bytes = std::fs::read(&spec.media.path).unwrap()[3 * CHUNK as usize..4 * CHUNK as usize].to_vec();
    let open = lectern_opencast::fileupload::bytes_body(bytes);
    assert_eq!(other.upload_chunk(&job, 3, "x.mp4", CHUNK, &open).unwrap(), lectern_opencast::ChunkReply::Accepted);
    let io = StepIo::unthrottled();
    let p = match t.step(0, &spec, &p, &io).unwrap() {
        Step::Progress { progress, .. } => progress,
        other => panic!("{other:?}"),
    };
    assert_eq!(p["next"], 4, "continues where the server is");
    // The job is held by another request: "Job is locked", transient with a short Retry-After;
    // the target asks until the job is free again.
    assert!(d.lock_upload_job(&job, Duration::from_millis(1500)));
    let e = t.step(0, &spec, &p, &io).unwrap_err();
    assert_eq!(e.class, Class::Transient { retry_after: Some(Duration::from_secs(1)) }, "{e}");
    let run = drive(&mut t, &spec, p, 1000);
    assert!(run.remote_ref.is_some(), "{:?}", run.errors);
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "lectern-adhoc-20261126-101500-a1");
    let refusals = &s.upload_jobs.iter().find(|j| j.chunks_received > 0).expect("a job got the chunks").refusals;
    assert!(refusals.iter().any(|r| r.starts_with("Wrong chunk number. Awaiting #4 but #3")), "{refusals:?}");
    assert!(refusals.iter().any(|r| r.starts_with("Job is locked")), "{refusals:?}");
}

#[test]
fn a_lost_ingest_answer_ends_in_exactly_one_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    let spec = spec(dir.path(), 200_000, true);
    let mut t = target(&d);
    let p = drive_until(&mut t, &spec, Value::Null, |p| phase(p) == "ingesting");
    // The server ingests, then the connection closes without an answer.
    d.lose_replies("/ingest/ingest", 1);
    let io = StepIo::unthrottled();
    let e = t.step(0, &spec, &p, &io).unwrap_err();
    assert!(matches!(e.class, Class::Transient { .. }), "{e}");
    assert_eq!(d.snapshot().ingest_count(), 1);
    // A crash on top: a new target from the persisted "ingesting" asks before sending.
    drop(t);
    let mut t = target(&d);
    let run = drive(&mut t, &spec, p.clone(), 10);
    assert_eq!((run.remote_ref.as_deref(), run.steps), (Some("3f1c2a9e-event-1"), 1), "{:?}", run.errors);
    // abandon() reports the recording as arrived.
    assert_eq!(t.abandon(0, &spec, &p).unwrap().as_deref(), Some("3f1c2a9e-event-1"));
    // Even a runner that starts over from empty progress (Restart) finds the ingest first and
    // creates no second media package.
    let run = drive(&mut target(&d), &spec, Value::Null, 10);
    assert_eq!((run.remote_ref.as_deref(), run.steps), (Some("3f1c2a9e-event-1"), 1));
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "3f1c2a9e-event-1");
    assert!(s.requests.iter().any(|r| r.fault.as_deref() == Some("lost")));
}

#[test]
fn without_a_fileupload_service_the_track_goes_up_with_add_track() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(false);
    let spec = spec(dir.path(), 300_000, false);
    let run = drive(&mut target(&d), &spec, Value::Null, 100);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.steps, 4, "start, addTrack, uploaded, ingest");
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "lectern-adhoc-20261126-101500-a1");
    assert!(s.upload_jobs.is_empty());
    assert!(s.requests.iter().any(|r| r.target == "/ingest/addTrack" && r.status == 200));
    assert!(!s.requests.iter().any(|r| r.target.starts_with("/upload/")));
}

#[test]
fn a_chunked_upload_the_account_may_not_use_falls_back_to_add_track() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    d.set_faults(Faults { status: Some(403), only_path_prefix: Some("/upload/".into()), ..Faults::default() });
    let spec = spec(dir.path(), 300_000, false);
    let run = drive(&mut target(&d), &spec, Value::Null, 100);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    let s = d.snapshot();
    assert_one_complete_ingest(&s, &spec, "lectern-adhoc-20261126-101500-a1");
    assert!(s.requests.iter().any(|r| r.target.starts_with("/upload/newjob") && r.status == 403));
    assert!(s.requests.iter().any(|r| r.target == "/ingest/addTrack" && r.status == 200));
}

#[test]
fn refusals_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let d = double(true);
    let spec = spec(dir.path(), 100_000, false);
    let io = StepIo::unthrottled();
    let check = |t: &mut OpencastTarget, faults: Faults, want: Class| {
        d.set_faults(faults);
        let e = t.step(0, &spec, &Value::Null, &io).unwrap_err();
        assert_eq!(e.class, want, "{e}");
        d.set_faults(Faults::default());
        e
    };
    let mut t = target(&d);
    check(&mut t, Faults { status: Some(503), ..Faults::default() }, Class::Transient { retry_after: None });
    check(&mut t, Faults { status: Some(429), retry_after: Some(30), ..Faults::default() }, Class::Transient { retry_after: Some(Duration::from_secs(30)) });
    check(&mut t, Faults { status: Some(503), retry_after: Some(5), ..Faults::default() }, Class::Transient { retry_after: Some(Duration::from_secs(5)) });
    let e = check(&mut t, Faults { status: Some(403), ..Faults::default() }, Class::Refused);
    assert!(e.message.contains("403"), "{e}");
    check(&mut t, Faults { down: Some(Down::Drop), ..Faults::default() }, Class::Transient { retry_after: None });
    // 401 after the client re-authenticated once: the password is wrong.
    let mut wrong = OpencastTarget::new(&config(&d.url(), "wrong"), AGENT, vec![d.url()], CHUNK);
    let e = wrong.step(0, &spec, &Value::Null, &io).unwrap_err();
    assert_eq!(e.class, Class::Auth, "{e}");
    assert_eq!(wrong.health(0).unwrap_err().class, Class::Auth);
    // health creates nothing.
    t.health(0).unwrap();
    assert!(d.snapshot().mediapackages.is_empty() && d.snapshot().upload_jobs.is_empty());
}
