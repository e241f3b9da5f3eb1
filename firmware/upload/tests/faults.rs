//! Issue 9 §5's network scenarios, end to end: the real runner (real journal `UploadStore` in a
//! temporary directory, real targets) uploads to the Opencast double and to moto's S3 server
//! through `lectern-faultproxy`, and the promises are checked on the server, in the job
//! row, in the runner's events and view, and against the proxy's own counters.
//!
//! | scenario | Opencast | S3 |
//! |---|---|---|
//! | cuts every 1.5 MiB of upload | ≤ one chunk re-sent per cut, one ingest | ≤ one part per cut, one object |
//! | a stall longer than the read timeout | timeout, retry, one ingest | same, one object |
//! | server restart mid-upload (state lost) | Restart from empty progress, one ingest | same |
//! | credentials rotated | Auth alarm; new credentials resume, not from zero | same (moto IAM) |
//! | primary down for an hour (accelerated) | failover, once on the standby, fail-back | — |
//! | a reply lost after the server committed | chunk and ingest reply: one ingest | CompleteMultipartUpload reply: one object |
//! | a seeded random plan | the same seed cuts at the same bytes | — |
//!
//! Scaled: a 6 MiB recording in 256 KiB chunks/parts, 1 s client timeouts, retries in
//! milliseconds, an hour on a clock running 1200 times faster; see `faults_common`. Each
//! scenario prints its numbers (`cargo test -p lectern-upload --test faults -- --nocapture`).
//! S3 scenarios skip loudly without python3-venv, except under `CI=true` (`lectern-moto`).

mod faults_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faults_common::*;
use lectern_faultproxy::{Clock as PlanClock, Dir, Plan, Proxy, Stats, MIB, SEED_ENV};
use lectern_journal::{UploadRow, UploadState};
use lectern_moto::MotoServer;
use lectern_opencast_double::{Double, Faults};
use lectern_upload::runner::{Clock, TargetFactory};
use lectern_upload::s3::{Progress, S3Target};
use lectern_upload::{Class, Step, StepIo, Target, UploadError, UploadSpec};
use serde_json::Value;

/// Where `cut_every` cuts the upload direction (the 16 MiB, scaled).
const CUT: u64 = 3 * MIB / 2;
/// A link slow enough that a test can act in the middle of an upload.
const SLOW_LINK: u64 = 4 * MIB;
/// Request headers and the extra requests a cut causes (the job asked, ListParts, auth): the
/// slack when the proxy's byte counts are compared with a clean run's.
const OVERHEAD_PER_CUT: u64 = 16 * 1024;

fn done(r: &UploadRow) -> bool {
    r.state == UploadState::Done
}

/// One finished upload: the job row, what the proxy saw, the events.
struct Run {
    row: UploadRow,
    stats: Stats,
    spec: UploadSpec,
    events: Events,
    took: Duration,
}

/// Uploads recording `id` to a fresh double through a proxy running `plan`.
fn oc_upload(id: &str, plan: Plan, len: u64) -> (Run, Double) {
    let j = journal();
    let d = start_double(&[("agent", "secret")], 0);
    let proxy = OcFront::start(d.addr(), plan);
    let spec = spec(j.dir.path(), id, len);
    queue(&j.db, "oc", &spec, system_clock()());
    let events = Events::default();
    let t0 = Instant::now();
    let r = spawn(&j.db, runner_config(), "oc", oc_factory(vec![proxy.url()], "agent", "secret"), system_clock(), &events);
    let row = wait_row(&j.db, id, "the upload done", done);
    let took = t0.elapsed();
    r.shutdown(Duration::from_secs(5));
    (Run { row, stats: proxy.stats(), spec, events, took }, d)
}

/// Uploads recording `id` to `moto` through a proxy running `plan`.
fn s3_upload(moto: &MotoServer, id: &str, plan: Plan) -> Run {
    let j = journal();
    let proxy = Proxy::start(addr_of(&moto.endpoint()), plan).expect("proxy");
    let spec = spec(j.dir.path(), id, MEDIA_BYTES);
    queue(&j.db, "s3", &spec, system_clock()());
    let events = Events::default();
    let t0 = Instant::now();
    let r = spawn(&j.db, runner_config(), "s3", s3_factory(s3_options(vec![proxy.url()], "lectern", "secret")), system_clock(), &events);
    let row = wait_row(&j.db, id, "the upload done", done);
    let took = t0.elapsed();
    r.shutdown(Duration::from_secs(5));
    Run { row, stats: proxy.stats(), spec, events, took }
}

/// Scenario 1's checks shared by both targets: the cuts fell where the plan put them, and each
/// cost at most one chunk/part — by the job row's count and by the proxy's (the faulty run's
/// upstream bytes beyond a clean run's).
fn check_cuts(what: &str, clean: &Run, cut: &Run) -> u64 {
    assert_eq!(resent(&clean.row), 0, "{what}: a clean link re-sends nothing");
    let cuts = cut.stats.cuts;
    assert!(cuts >= 3, "{what}: the plan cut only {cuts} times");
    let want: Vec<u64> = (1..=cuts).map(|k| k * CUT).collect();
    assert_eq!(cut.stats.cut_points(Dir::Up), want, "{what}: cuts at every {CUT} bytes");
    assert!(!cut.events.failures().is_empty(), "{what}: the cuts were failures the runner retried");
    let row_resent = resent(&cut.row);
    assert!(row_resent <= cuts * CHUNK, "{what}: re-sent {row_resent} bytes for {cuts} cuts, more than one {CHUNK}-byte chunk each");
    let wire = cut.stats.up.read.saturating_sub(clean.stats.up.read);
    assert!(wire <= cuts * (CHUNK + OVERHEAD_PER_CUT), "{what}: the proxy carried {wire} bytes more than on a clean link for {cuts} cuts");
    eprintln!(
        "[{what}] {cuts} cuts: re-sent {row_resent} B by the job row ({} B per cut, chunk {CHUNK}); proxy: {wire} B more upstream than a clean run ({} B per cut); {} retried failures; {:?} vs {:?} clean",
        row_resent / cuts,
        wire / cuts,
        cut.events.failures().len(),
        cut.took,
        clean.took
    );
    row_resent
}

#[test]
fn opencast_cuts_every_1_5_mib_cost_at_most_one_chunk_each() {
    let (clean, _) = oc_upload("oc-cuts", Plan::seeded(11), MEDIA_BYTES);
    let (cut, d) = oc_upload("oc-cuts", Plan::seeded(11).cut_every(Dir::Up, CUT), MEDIA_BYTES);
    let snap = d.snapshot();
    assert_ingested_once(&snap, &cut.spec, "cuts");
    let row_resent = check_cuts("opencast cuts", &clean, &cut);
    // The double counts every chunk byte it read: what reached it twice is part of what the
    // box counted as re-sent.
    let (received, accepted) = snap.chunk_bytes();
    assert_eq!(accepted, MEDIA_BYTES);
    assert!(received - accepted <= row_resent, "the server got {} bytes twice, the job row says {row_resent}", received - accepted);
    report("opencast cuts", &cut.row, &cut.stats, &format!("server got {} B twice", received - accepted));
}

#[test]
fn s3_cuts_every_1_5_mib_cost_at_most_one_part_each() {
    let Some(moto) = moto() else { return };
    let clean = s3_upload(&moto, "s3-cuts-a", Plan::seeded(12));
    let cut = s3_upload(&moto, "s3-cuts-b", Plan::seeded(12).cut_every(Dir::Up, CUT));
    assert_object(&moto, &cut.spec, "cuts");
    check_cuts("s3 cuts", &clean, &cut);
    assert_eq!(cut.row.remote_ref.as_deref(), Some(s3_key("s3-cuts-b").as_str()));
    report("s3 cuts", &cut.row, &cut.stats, "");
}

/// Scenario 2: the attempt in the stall times out (1 s silence), the job retries and completes.
fn check_stall(what: &str, run: &Run) {
    assert_eq!(run.stats.stalls, 1, "{what}: the plan stalled once");
    let failures = run.events.failures();
    assert!(
        failures.iter().any(|(c, e)| matches!(c, Class::Transient { .. }) && e.to_lowercase().contains("time")),
        "{what}: no attempt timed out: {failures:?}"
    );
    assert!(run.took >= Duration::from_secs(1), "{what}: done in {:?}, inside the stall", run.took);
    report(what, &run.row, &run.stats, &format!("{} failures in {:?}: {failures:?}", failures.len(), run.took));
}

#[test]
fn opencast_a_stall_longer_than_the_read_timeout_times_out_and_the_job_completes_once() {
    let plan = Plan::seeded(21).stall_after(Dir::Up, 2 * MIB, Duration::from_millis(2500));
    let (run, d) = oc_upload("oc-stall", plan, MEDIA_BYTES);
    assert_ingested_once(&d.snapshot(), &run.spec, "stall");
    check_stall("opencast stall", &run);
}

#[test]
fn s3_a_stall_longer_than_the_read_timeout_times_out_and_the_job_completes_once() {
    let Some(moto) = moto() else { return };
    let run = s3_upload(&moto, "s3-stall", Plan::seeded(22).stall_after(Dir::Up, 2 * MIB, Duration::from_millis(2500)));
    assert_object(&moto, &run.spec, "stall");
    check_stall("s3 stall", &run);
}

#[test]
fn opencast_a_restarted_server_that_lost_its_jobs_gets_the_recording_once() {
    let j = journal();
    let users = [("agent", "secret")];
    let d = start_double(&users, 0);
    let port = d.addr().port();
    let proxy = OcFront::start(d.addr(), Plan::seeded(31).throttle(Dir::Up, SLOW_LINK));
    let spec = spec(j.dir.path(), "oc-restart", MEDIA_BYTES);
    queue(&j.db, "oc", &spec, system_clock()());
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "oc", oc_factory(vec![proxy.url()], "agent", "secret"), system_clock(), &events);
    let at_crash = wait_row(&j.db, "oc-restart", "2 MiB confirmed", |r| r.bytes_confirmed >= 2 * MIB);
    // The server crashes (its connections die with it) and comes back on the same port
    // without its upload jobs.
    proxy.set_plan(Plan::seeded(31).down());
    let before = d.snapshot();
    drop(d);
    let d = start_double(&users, port);
    proxy.set_plan(Plan::seeded(31).throttle(Dir::Up, SLOW_LINK));
    let row = wait_row(&j.db, "oc-restart", "the upload done", done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!(before.ingest_count(), 0);
    // A `newjob` answered after the read timeout (CPU load) leaves an empty job beside the used one.
    assert!(before.upload_jobs.iter().any(|job| job.chunks_received >= 8), "{:?}", before.upload_jobs);
    assert_ingested_once(&d.snapshot(), &spec, "after the restart");
    assert!(row.endpoint_log.iter().any(|m| m.why.contains("server lost the upload")), "a clean Restart: {:?}", row.endpoint_log);
    // What the lost server held is sent again, and at most one chunk more.
    assert!(resent(&row) <= at_crash.bytes_confirmed + 2 * CHUNK, "re-sent {} with {} confirmed at the crash", resent(&row), at_crash.bytes_confirmed);
    report("opencast restart", &row, &proxy.stats(), &format!("{} B confirmed when the server lost them", at_crash.bytes_confirmed));
}

#[test]
fn s3_a_restarted_server_that_lost_the_multipart_upload_gets_one_object() {
    let Some(mut moto) = moto() else { return };
    let j = journal();
    let proxy = Proxy::start(addr_of(&moto.endpoint()), Plan::seeded(32).throttle(Dir::Up, SLOW_LINK)).expect("proxy");
    let spec = spec(j.dir.path(), "s3-restart", MEDIA_BYTES);
    queue(&j.db, "s3", &spec, system_clock()());
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "s3", s3_factory(s3_options(vec![proxy.url()], "lectern", "secret")), system_clock(), &events);
    let at_crash = wait_row(&j.db, "s3-restart", "2 MiB confirmed", |r| r.bytes_confirmed >= 2 * MIB);
    // Down while it restarts: `MotoServer::restart` re-creates the bucket only after the new
    // server already answers, and a request in that window would see NoSuchBucket (refused,
    // parked), which a real server's restart never shows.
    proxy.set_plan(Plan::seeded(32).down());
    moto.restart().expect("moto restart");
    proxy.set_plan(Plan::seeded(32).throttle(Dir::Up, SLOW_LINK));
    let row = wait_row(&j.db, "s3-restart", "the upload done", done);
    r.shutdown(Duration::from_secs(5));
    assert_object(&moto, &spec, "after the restart");
    assert!(row.endpoint_log.iter().any(|m| m.why.contains("server lost the upload")), "a clean Restart: {:?}", row.endpoint_log);
    assert!(resent(&row) <= at_crash.bytes_confirmed + 2 * CHUNK, "re-sent {} with {} confirmed at the crash", resent(&row), at_crash.bytes_confirmed);
    report("s3 restart", &row, &proxy.stats(), &format!("{} B confirmed when the server lost them", at_crash.bytes_confirmed));
}

/// Scenario 4's end: the job resumed where it was when the credentials stopped working.
fn check_resumed(what: &str, at_rotation: &UploadRow, row: &UploadRow) {
    let after = row.bytes_sent - at_rotation.bytes_sent;
    let left = row.bytes_total - at_rotation.bytes_confirmed;
    assert!(at_rotation.bytes_confirmed >= 2 * MIB, "{what}: {at_rotation:?}");
    assert!(after <= left + CHUNK, "{what}: sent {after} bytes after the rotation, {left} were left: not resumed");
    eprintln!("[{what}] {} B confirmed at the rotation; {after} B sent with the new credentials ({left} B were left)", at_rotation.bytes_confirmed);
}

fn wait_auth_alarm(r: &lectern_upload::Runner, target: &str) -> String {
    let mut alarm = String::new();
    wait_until("the auth alarm", || match r.view().auth_alarms.iter().find(|(t, _)| t == target) {
        Some((_, a)) => {
            alarm = a.clone();
            true
        }
        None => false,
    });
    alarm
}

#[test]
fn opencast_rotated_credentials_raise_the_auth_alarm_and_new_ones_resume_the_upload() {
    let j = journal();
    let d = start_double(&[("agent", "secret"), ("agent2", "secret2")], 0);
    let proxy = OcFront::start(d.addr(), Plan::seeded(41).throttle(Dir::Up, SLOW_LINK));
    let spec = spec(j.dir.path(), "oc-creds", MEDIA_BYTES);
    queue(&j.db, "oc", &spec, system_clock()());
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "oc", oc_factory(vec![proxy.url()], "agent", "secret"), system_clock(), &events);
    wait_row(&j.db, "oc-creds", "2 MiB confirmed", |r| r.bytes_confirmed >= 2 * MIB);
    // The server stops taking the box's password. (The double's users are fixed at start, so
    // the rotation is its 401 switch; the new credentials are another user of it.)
    d.set_faults(Faults { status: Some(401), ..Faults::default() });
    let alarm = wait_auth_alarm(&r, "oc");
    r.shutdown(Duration::from_secs(5));
    assert!(events.failures().iter().any(|(c, _)| *c == Class::Auth), "{:?}", events.failures());
    let at_rotation = wait_row(&j.db, "oc-creds", "the row", |_| true);
    assert_ne!(at_rotation.state, UploadState::Parked, "an auth failure never parks the job");
    let rotated = d.snapshot();
    let seen = rotated.requests.len();
    // The job the chunks went to. A `newjob` whose answer came after the client's read timeout
    // (seen under CPU load: two `newjob` 200s in a row) leaves an empty job behind, as it would on
    // Opencast (its cleaner removes it after 6 h); what matters is that one job got every chunk.
    let used = |s: &lectern_opencast_double::Snapshot| s.upload_jobs.iter().filter(|j| j.chunks_received > 0).cloned().collect::<Vec<_>>();
    let before = used(&rotated);
    assert_eq!(before.len(), 1, "one job had chunks at the rotation");
    let chunks_before = before[0].chunks_received;
    // The operator enters the new password; the daemon restarts the uploader with it.
    d.set_faults(Faults::default());
    let r = spawn(&j.db, runner_config(), "oc", oc_factory(vec![proxy.url()], "agent2", "secret2"), system_clock(), &events);
    let row = wait_row(&j.db, "oc-creds", "the upload done", done);
    assert!(r.view().auth_alarms.is_empty(), "the alarm clears with a success");
    r.shutdown(Duration::from_secs(5));
    let s = d.snapshot();
    assert_ingested_once(&s, &spec, "after the rotation");
    let after = used(&s);
    assert_eq!(after.len(), 1, "the same upload job went on; requests:\n{}", s.requests.iter().map(|q| format!("{} {} {} {:?}", q.method, q.target, q.status, q.user)).collect::<Vec<_>>().join("\n"));
    assert_eq!(after[0].id, before[0].id, "the same upload job went on");
    let later = &s.requests[seen..];
    assert!(later.iter().all(|q| q.user.as_deref() != Some("agent")) && later.iter().any(|q| q.user.as_deref() == Some("agent2")), "new credentials only");
    let chunk_posts = later.iter().filter(|q| q.method == "POST" && q.target.starts_with("/upload/job/") && q.status == 200).count() as u64;
    assert_eq!(chunk_posts, after[0].chunks_total - chunks_before, "only the chunks the server did not have");
    check_resumed("opencast credentials", &at_rotation, &row);
    report("opencast credentials", &row, &proxy.stats(), &format!("alarm: {alarm}"));
}

#[test]
fn s3_rotated_keys_raise_the_auth_alarm_and_new_ones_resume_the_upload() {
    let Some(mut moto) = moto() else { return };
    let j = journal();
    let proxy = Proxy::start(addr_of(&moto.endpoint()), Plan::seeded(42).throttle(Dir::Up, SLOW_LINK)).expect("proxy");
    let spec = spec(j.dir.path(), "s3-creds", MEDIA_BYTES);
    queue(&j.db, "s3", &spec, system_clock()());
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "s3", s3_factory(s3_options(vec![proxy.url()], "lectern", "secret")), system_clock(), &events);
    wait_row(&j.db, "s3-creds", "2 MiB confirmed", |r| r.bytes_confirmed >= 2 * MIB);
    // The link drops while the server's keys are rotated (moto's IAM turned on takes a second
    // or two); when it is back, the old keys are refused.
    proxy.set_plan(Plan::seeded(42).down());
    let (access_key, secret_key) = moto.enable_auth().expect("moto IAM");
    proxy.set_plan(Plan::seeded(42).throttle(Dir::Up, SLOW_LINK));
    let alarm = wait_auth_alarm(&r, "s3");
    r.shutdown(Duration::from_secs(5));
    assert!(events.failures().iter().any(|(c, _)| *c == Class::Auth), "{:?}", events.failures());
    let at_rotation = wait_row(&j.db, "s3-creds", "the row", |_| true);
    assert_ne!(at_rotation.state, UploadState::Parked, "an auth failure never parks the job");
    let r = spawn(&j.db, runner_config(), "s3", s3_factory(s3_options(vec![proxy.url()], &access_key, &secret_key)), system_clock(), &events);
    let row = wait_row(&j.db, "s3-creds", "the upload done", done);
    assert!(r.view().auth_alarms.is_empty(), "the alarm clears with a success");
    r.shutdown(Duration::from_secs(5));
    let body = s3_get(&moto.endpoint(), &s3_key("s3-creds"), Some((&access_key, &secret_key))).expect("the object");
    assert_eq!(sha256_hex(&body), spec.media.sha256);
    check_resumed("s3 credentials", &at_rotation, &row);
    report("s3 credentials", &row, &proxy.stats(), &format!("alarm: {alarm}"));
}

/// How much faster than real time the failover scenario's clocks run: an hour in three seconds.
const FAST: f64 = 1200.0;

#[test]
fn opencast_a_primary_down_for_an_hour_fails_over_once_and_new_jobs_fail_back() {
    let j = journal();
    let (a, b) = (start_double(&[("agent", "secret")], 0), start_double(&[("agent", "secret")], 0));
    let pa = OcFront::start(a.addr(), Plan::seeded(51).throttle(Dir::Up, SLOW_LINK));
    let pb = OcFront::start(b.addr(), Plan::seeded(52));
    let (t0, base) = (Instant::now(), system_clock()());
    let clock: Clock = Arc::new(move || base + (t0.elapsed().as_secs_f64() * FAST * 1000.0) as i64);
    let cfg = lectern_upload::RunnerConfig {
        failover_after: 3,
        failback_after: Duration::from_secs(600),
        health_interval: Duration::from_millis(20),
        retry: lectern_upload::RetryPolicy { initial: Duration::from_secs(2), max: Duration::from_secs(30) },
        ..runner_config()
    };
    let first = spec(j.dir.path(), "oc-failover-1", MEDIA_BYTES);
    queue(&j.db, "oc", &first, clock());
    let events = Events::default();
    let r = spawn(&j.db, cfg, "oc", oc_factory(vec![pa.url(), pb.url()], "agent", "secret"), clock.clone(), &events);
    wait_row(&j.db, "oc-failover-1", "1 MiB on the primary", |r| r.bytes_confirmed >= MIB && r.endpoint.as_deref() == Some(pa.url().as_str()));

    // The primary goes away for an hour of the accelerated clock.
    pa.set_plan(Plan::seeded(51).clock(PlanClock::accelerated(FAST)).down_for(Duration::from_secs(3600)));
    let (down_at, down_clock) = (Instant::now(), clock());
    let current = |r: &lectern_upload::Runner| r.view().endpoints.iter().find(|e| e.target == "oc").map(|e| e.current);
    wait_until("the failover", || current(&r) == Some(1));
    let (failover_real, failover_clock) = (down_at.elapsed(), clock() - down_clock);
    let failures_before = events.failures().len();
    let row = wait_row(&j.db, "oc-failover-1", "the upload done", done);
    assert_eq!(row.endpoint.as_deref(), Some(pb.url().as_str()), "done on the standby");
    assert_eq!(a.snapshot().ingest_count(), 0, "the primary never got the recording");
    assert_ingested_once(&b.snapshot(), &first, "on the standby");
    let moves: Vec<(&str, &str)> = row.endpoint_log.iter().map(|m| (m.endpoint.as_str(), m.why.as_str())).collect();
    assert_eq!(moves.len(), 1, "{moves:?}");
    assert_eq!(moves[0].0, pb.url());
    assert!(moves[0].1.contains(&pa.url()), "the move names where it came from: {moves:?}");

    // The primary is back after the hour; after ten healthy minutes new jobs use it again.
    wait_until("the fail-back", || current(&r) == Some(0));
    let back_after = clock() - down_clock;
    assert!(back_after >= (3600 + 600 - 60) * 1000, "failed back {} s after the outage began: before the hour and the healthy ten minutes", back_after / 1000);
    let second = spec(j.dir.path(), "oc-failover-2", MIB);
    queue(&j.db, "oc", &second, clock());
    r.wake();
    let row2 = wait_row(&j.db, "oc-failover-2", "the second upload done", done);
    r.shutdown(Duration::from_secs(5));
    assert_eq!(row2.endpoint.as_deref(), Some(pa.url().as_str()), "the new job went to the primary");
    assert!(row2.endpoint_log.is_empty(), "{:?}", row2.endpoint_log);
    assert_eq!((a.snapshot().ingest_count(), b.snapshot().ingest_count()), (1, 1));
    eprintln!(
        "[opencast failover] failed over {:?} real ({} s on the accelerated clock) after the primary went down, {failures_before} retried failures; fail-back {} s after the outage began; standby got 1 ingest, primary 0 of the first recording",
        failover_real,
        failover_clock / 1000,
        back_after / 1000
    );
    report("opencast failover", &row, &pa.stats(), "");
}

#[test]
fn opencast_lost_chunk_and_ingest_replies_end_in_one_ingest_with_nothing_sent_twice() {
    let j = journal();
    let d = start_double(&[("agent", "secret")], 0);
    let proxy = OcFront::start(d.addr(), Plan::seeded(61));
    // The server commits chunk 0 and the ingest, then closes without an answer.
    d.lose_replies("/upload/job/", 1);
    d.lose_replies("/ingest/ingest", 1);
    let spec = spec(j.dir.path(), "oc-lost", MEDIA_BYTES);
    queue(&j.db, "oc", &spec, system_clock()());
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "oc", oc_factory(vec![proxy.url()], "agent", "secret"), system_clock(), &events);
    let row = wait_row(&j.db, "oc-lost", "the upload done", done);
    r.shutdown(Duration::from_secs(5));
    let s = d.snapshot();
    assert_ingested_once(&s, &spec, "lost replies");
    let lost: Vec<&str> = s.requests.iter().filter(|q| q.fault.as_deref() == Some("lost")).map(|q| q.target.as_str()).collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost[1].starts_with("/ingest/ingest"), "{lost:?}");
    let (received, accepted) = s.chunk_bytes();
    assert_eq!((received, accepted), (MEDIA_BYTES, MEDIA_BYTES), "no chunk reached the server twice");
    // Each lost reply costs one failure. A 1 s read timeout on a loaded machine (CI at load 10)
    // may add a timeout of its own, which is retried like any other and proves nothing here.
    let failures = events.failures();
    let planned: Vec<_> = failures.iter().filter(|(_, m)| !m.contains("timeout")).collect();
    assert_eq!(planned.len(), 2, "{failures:?}");
    report("opencast lost replies", &row, &proxy.stats(), "");
}

/// The S3 target, except that the CompleteMultipartUpload step runs with the proxy cutting the
/// reply at its first byte: the server completes the object, the box never hears so.
struct LoseCompleteReply {
    inner: S3Target,
    proxy: Arc<Proxy>,
    fired: Arc<AtomicBool>,
    /// The previous step succeeded, so the target trusts its progress and the next request
    /// with every part confirmed is the Complete itself (not ListParts).
    trusted: bool,
}

impl Target for LoseCompleteReply {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn endpoints(&self) -> &[String] {
        self.inner.endpoints()
    }
    fn health(&mut self, i: usize) -> Result<(), UploadError> {
        self.inner.health(i)
    }
    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo) -> Result<Step, UploadError> {
        let parts = spec.media.bytes.div_ceil(CHUNK) as usize;
        let completing = matches!(serde_json::from_value(progress.clone()), Ok(Progress::Upload { etags, .. }) if etags.len() == parts);
        let result = if completing && self.trusted && !self.fired.swap(true, Ordering::SeqCst) {
            self.proxy.set_plan(Plan::seeded(62).cut_after(Dir::Down, 0));
            let result = self.inner.step(i, spec, progress, io);
            self.proxy.set_plan(Plan::seeded(62));
            result
        } else {
            self.inner.step(i, spec, progress, io)
        };
        self.trusted = result.is_ok();
        result
    }
    fn abandon(&mut self, i: usize, spec: &UploadSpec, progress: &Value) -> Result<Option<String>, UploadError> {
        self.inner.abandon(i, spec, progress)
    }
}

#[test]
fn s3_a_lost_complete_multipart_upload_reply_ends_in_one_object() {
    let Some(moto) = moto() else { return };
    let j = journal();
    let proxy = Arc::new(Proxy::start(addr_of(&moto.endpoint()), Plan::seeded(62)).expect("proxy"));
    let spec = spec(j.dir.path(), "s3-lost", MEDIA_BYTES);
    queue(&j.db, "s3", &spec, system_clock()());
    let fired = Arc::new(AtomicBool::new(false));
    let opts = s3_options(vec![proxy.url()], "lectern", "secret");
    let (p, f) = (proxy.clone(), fired.clone());
    let factory: TargetFactory = Arc::new(move |name: &str| {
        (name == "s3").then(|| {
            let inner = S3Target::with_min_part_bytes(opts.clone(), CHUNK).expect("S3 options");
            Box::new(LoseCompleteReply { inner, proxy: p.clone(), fired: f.clone(), trusted: false }) as Box<dyn Target>
        })
    });
    let events = Events::default();
    let r = spawn(&j.db, runner_config(), "s3", factory, system_clock(), &events);
    let row = wait_row(&j.db, "s3-lost", "the upload done", done);
    r.shutdown(Duration::from_secs(5));
    assert!(fired.load(Ordering::SeqCst), "the Complete step never ran through the cut");
    let stats = proxy.stats();
    assert_eq!(stats.cut_points(Dir::Down), [0], "the reply was cut at its first byte");
    let failures = events.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].1.starts_with("POST ") && failures[0].1.contains("uploadId="), "the lost reply was the Complete's: {failures:?}");
    assert_object(&moto, &spec, "lost Complete reply");
    assert_eq!(row.remote_ref.as_deref(), Some(s3_key("s3-lost").as_str()));
    assert_eq!(resent(&row), 0, "nothing sent again");
    report("s3 lost complete reply", &row, &stats, "");
}

#[test]
fn a_seeded_random_plan_replays_the_same_cut_points() {
    let seed = lectern_faultproxy::env_seed().unwrap_or(20_260_105);
    eprintln!("[seeded] seed {seed}; {SEED_ENV}={seed} replays it");
    let plan = || Plan::seeded(seed).cut_random(Dir::Up, 256 * 1024, MIB);
    let (a, da) = oc_upload("oc-seeded", plan(), 3 * MIB);
    let (b, db) = oc_upload("oc-seeded", plan(), 3 * MIB);
    let (sa, sb) = (da.snapshot(), db.snapshot());
    for (run, snap) in [(&a, &sa), (&b, &sb)] {
        assert_eq!(run.stats.seed, seed);
        assert_ingested_once(snap, &run.spec, &format!("seed {seed}"));
        assert!(resent(&run.row) <= run.stats.cuts * CHUNK, "seed {seed}: re-sent {} for {} cuts", resent(&run.row), run.stats.cuts);
    }
    let (pa, pb) = (a.stats.cut_points(Dir::Up), b.stats.cut_points(Dir::Up));
    // Both runs carry nearly the same bytes; where both reached, they were cut at the same bytes.
    let n = pa.len().min(pb.len());
    assert!(n >= 3, "seed {seed}: only {n} cuts");
    assert_eq!(pa[..n], pb[..n], "seed {seed}: the same seed cut at other bytes");
    eprintln!("[seeded] seed {seed}: cut points {pa:?} / {pb:?}; re-sent {} / {} B", resent(&a.row), resent(&b.row));
}
