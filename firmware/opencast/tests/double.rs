//! The client and the uplink against `lectern-opencast-double`, the Opencast test double built
//! from the published REST API (real HTTP on loopback): discovery, Digest, ETag/304, ingest,
//! faults, and offline operation — three simulated days without a server, ten lectures.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lectern_journal::{Enqueued, Outbox};
use lectern_opencast::{
    spawn, AgentState, Backoff, CalendarFetch, Client, Lane, OpencastError, Queue, RecordingState, Track, Uplink,
};
use lectern_opencast_double::{Config as DoubleConfig, Double, Down, Event, Faults};
use sha2::{Digest, Sha256};

mod with_double;
use with_double::{config, job_for, AGENT};

fn double(list: bool) -> Double {
    Double::start(DoubleConfig { services_as_list: list, ..DoubleConfig::digest("agent", "secret") }).unwrap()
}

fn event(uid: &str, start_ms: i64, minutes: i64) -> Event {
    let start = Utc.timestamp_millis_opt(start_ms).unwrap();
    Event { series: Some("series-1".into()), config: vec![("straightToPublishing".into(), "true".into())], ..Event::new(uid, AGENT, start, start + chrono::Duration::minutes(minutes), uid) }
}

/// A recorded track: `len` bytes derived from the uid.
fn record(dir: &Path, uid: &str, len: usize) -> (Track, String) {
    let bytes: Vec<u8> = uid.bytes().cycle().take(len).enumerate().map(|(i, b)| b ^ (i as u8)).collect();
    let path = dir.join(format!("{uid}.ts"));
    std::fs::write(&path, &bytes).unwrap();
    (Track { path, flavor: "presenter/source".into() }, format!("{:x}", Sha256::digest(&bytes)))
}

/// A producer queue and both lanes on one database, as the daemon wires them.
fn lanes(cfg: &lectern_config::OpencastConfig, db: &Path) -> (Queue, Uplink, Uplink, Arc<AtomicBool>) {
    let uploading = Arc::new(AtomicBool::new(false));
    let lane = |l| {
        let backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
        Uplink::new(l, Client::new(cfg, AGENT), Outbox::open(db).unwrap(), backoff, Duration::from_secs(600), uploading.clone())
    };
    let (states, ingests) = (lane(Lane::States), lane(Lane::Ingests));
    (Queue::new(Outbox::open(db).unwrap()), states, ingests, uploading)
}

#[test]
fn full_cycle_with_digest_and_discovery_from_a_list() {
    let d = double(true);
    let now = Utc::now().timestamp_millis();
    let ev = event("ev-1", now + 3_600_000, 60);
    d.set_events(vec![ev.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Client::new(&config(&d.url(), "digest"), AGENT);

    let e = c.endpoints().unwrap();
    assert_eq!(e.capture_admin, format!("{}/capture-admin", d.url()), "the offline and inactive nodes are skipped");
    c.set_agent_state(AgentState::Idle).unwrap();
    c.set_agent_configuration(&BTreeMap::from([("capture.device.names".into(), "presenter".into())])).unwrap();
    let CalendarFetch::Calendar { etag, bytes } = c.fetch_calendar(None, now).unwrap() else { panic!("first fetch is a 200") };
    assert!(String::from_utf8_lossy(&bytes).contains("UID:ev-1"));
    assert_eq!(c.fetch_calendar(etag.as_deref(), now).unwrap(), CalendarFetch::NotModified);
    c.set_recording_state("ev-1", RecordingState::Capturing).unwrap();
    c.set_recording_state("ev-1", RecordingState::CaptureFinished).unwrap();
    let (track, sha) = record(tmp.path(), "ev-1", 300_000);
    c.ingest(&job_for(&ev, track)).unwrap();

    let s = d.snapshot();
    assert_eq!(s.agent_states_of(AGENT), ["idle"]);
    assert_eq!(s.agent_configs[0].properties.get("capture.device.names").map(String::as_str), Some("presenter"));
    assert_eq!(s.recording_states_of("ev-1"), ["capturing", "capture_finished"]);
    assert_eq!((s.calendar_fetches[0].status, s.calendar_fetches[1].status), (200, 304));
    let mps: Vec<_> = s.ingested().collect();
    assert_eq!(mps.len(), 1);
    let i = mps[0].ingested.as_ref().unwrap();
    assert_eq!((i.workflow_instance_id.as_deref(), i.workflow_definition_id.as_deref()), (Some("ev-1"), Some("schedule-and-upload")));
    assert_eq!(i.params, [("straightToPublishing".to_owned(), "true".to_owned())]);
    let tracks: Vec<_> = mps[0].ingested_tracks().collect();
    assert_eq!((tracks.len(), tracks[0].sha256.as_str(), tracks[0].flavor.as_str()), (1, sha.as_str(), "presenter/source"));
    let flavors: Vec<_> = mps[0].ingested_catalogs().map(|c| c.flavor.as_str()).collect();
    assert_eq!(flavors, ["dublincore/episode", "dublincore/series"]);
    assert!(s.requests.iter().all(|r| r.status != 302), "Digest mode never meets the login redirect");
}

#[test]
fn basic_auth_against_a_digest_opencast_is_a_login_redirect() {
    let d = double(false);
    let e = Client::new(&config(&d.url(), "basic"), AGENT).set_agent_state(AgentState::Idle).unwrap_err();
    assert!(matches!(e, OpencastError::Auth { .. }) && e.to_string().contains("login page"), "{e}");
    let mut cfg = config(&d.url(), "digest");
    cfg.password = "wrong".into();
    let e = Client::new(&cfg, AGENT).set_agent_state(AgentState::Idle).unwrap_err();
    assert!(matches!(e, OpencastError::Auth { .. }), "{e}");
}

#[test]
fn faults_are_classified() {
    let d = double(false);
    let mut c = Client::new(&config(&d.url(), "digest"), AGENT);
    c.endpoints().unwrap();
    let check = |c: &mut Client, f: Faults, transient: bool, want: &str| {
        d.set_faults(f);
        let e = c.fetch_calendar(None, 0).unwrap_err();
        assert_eq!(e.is_transient(), transient, "{e}");
        assert!(e.to_string().contains(want), "{want:?} in {e}");
    };
    check(&mut c, Faults { status: Some(503), ..Faults::default() }, true, "HTTP 503");
    check(&mut c, Faults { garbage_body: true, ..Faults::default() }, true, "without BEGIN:VCALENDAR");
    check(&mut c, Faults { truncate_calendar: true, ..Faults::default() }, true, "/recordings/calendars");
    check(&mut c, Faults { down: Some(Down::Drop), ..Faults::default() }, true, "GET");
    check(&mut c, Faults { down: Some(Down::Refuse), ..Faults::default() }, true, "GET");
    check(&mut c, Faults { delay: Duration::from_secs(4), ..Faults::default() }, true, "GET");
    d.set_faults(Faults { garbage_body: true, ..Faults::default() });
    c.forget_endpoints();
    let e = c.endpoints().unwrap_err().to_string();
    assert!(e.contains("service discovery") && e.contains("not JSON"), "{e}");
}

/// An ingest that fails at the final `ingest/` call is redone from `createMediaPackage` and
/// acked once: two media packages were created, exactly one was ingested.
#[test]
fn an_ingest_interrupted_before_the_final_call_is_redone_and_ingested_once() {
    let d = double(false);
    let ev = event("ev-x", 1_800_000_000_000, 30);
    d.set_events(vec![ev.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut q, mut states, mut up, _) = lanes(&config(&d.url(), "digest"), &tmp.path().join("lectern.db"));
    let (track, _) = record(tmp.path(), "ev-x", 10_000);
    let mut t = 1_800_000_000_000i64;
    assert!(matches!(q.ingest(job_for(&ev, track.clone()), t).unwrap(), Enqueued::Added(_)));
    d.set_faults(Faults { status: Some(503), only_path_prefix: Some("/ingest/ingest".into()), ..Faults::default() });
    let r = up.pump(&mut || t).unwrap();
    assert!(r.delivered.is_empty() && r.failed.as_deref().is_some_and(|f| f.contains("503")), "{r:?}");
    assert!(up.pump(&mut || t).unwrap().backing_off, "the back-off holds the next attempt");
    d.set_faults(Faults::default());
    t += 5_000;
    let r = up.pump(&mut || t).unwrap();
    assert_eq!(r.delivered.len(), 1, "{r:?}");
    let s = d.snapshot();
    assert_eq!(s.mediapackages.len(), 2, "the retry started from createMediaPackage");
    assert_eq!(s.ingested().count(), 1);
    // `upload_finished` was queued in the ingest's ack transaction; the states lane sends it.
    assert_eq!(s.recording_states_of("ev-x"), ["uploading", "uploading"]);
    assert_eq!(states.pump(&mut || t).unwrap().delivered.len(), 1);
    assert_eq!(d.snapshot().recording_states_of("ev-x"), ["uploading", "uploading", "upload_finished"]);
    assert_eq!(q.ingest(job_for(&ev, track), t).unwrap(), Enqueued::AlreadyDone);
}

/// A long upload runs on the ingest lane while the states lane goes on: the agent shows
/// `uploading` meanwhile, a state queued during the upload is delivered before it ends, and the
/// agent is `idle` again afterwards.
#[test]
fn states_are_not_held_up_by_a_long_upload() {
    let d = double(false);
    let now = 1_800_000_000_000i64;
    let (ev1, ev2) = (event("ev-1", now - 7_200_000, 60), event("ev-2", now + 60_000, 60));
    d.set_events(vec![ev1.clone(), ev2.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut q, mut states, mut ingests, uploading) = lanes(&config(&d.url(), "digest"), &tmp.path().join("lectern.db"));
    q.agent_state(AgentState::Idle, now).unwrap();
    assert_eq!(states.pump(&mut || now).unwrap().delivered.len(), 1);
    let (track, _) = record(tmp.path(), "ev-1", 100_000);
    q.ingest(job_for(&ev1, track), now).unwrap();
    d.set_faults(Faults { delay: Duration::from_millis(1500), only_path_prefix: Some("/ingest/addTrack".into()), ..Faults::default() });
    let upload = std::thread::spawn(move || ingests.pump(&mut || now).unwrap());
    while !uploading.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    q.agent_state(AgentState::Capturing, now).unwrap();
    q.recording_state("ev-2", RecordingState::Capturing, now).unwrap();
    q.agent_state(AgentState::Idle, now).unwrap();
    let r = states.pump(&mut || now).unwrap();
    assert_eq!(r.delivered.len(), 3, "{r:?}");
    assert!(uploading.load(Ordering::SeqCst), "delivered while the upload still runs");
    assert!(d.snapshot().ingested().next().is_none());
    assert_eq!(upload.join().unwrap().delivered.len(), 1);
    states.pump(&mut || now).unwrap();
    let s = d.snapshot();
    assert_eq!(s.agent_states_of(AGENT), ["idle", "capturing", "uploading", "idle"]);
    assert_eq!(s.recording_states_of("ev-2"), ["capturing"]);
    assert_eq!(s.recording_states_of("ev-1"), ["uploading", "upload_finished"]);
}

/// Issue 3, offline operation: the server is down for three simulated days with ten scheduled
/// lectures. All ten are recorded from the cached calendar; when the server returns the states
/// are replayed in the order they happened and each lecture is ingested exactly once.
#[test]
fn three_days_down_ten_lectures_replayed_in_order_and_ingested_once() {
    let d = double(false);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("lectern.db");
    let t0 = 1_800_000_000_000i64;
    let hour = 3_600_000i64;
    let events: Vec<Event> = (0..10).map(|i| event(&format!("lecture-{i:02}"), t0 + 2 * hour + i * 7 * hour, 90)).collect();
    d.set_events(events.clone());
    let cfg = config(&d.url(), "digest");
    let (mut q, mut up, mut ingests, _) = lanes(&cfg, &db);

    // Online at t0: register and cache the calendar.
    let mut now = t0;
    q.agent_state(AgentState::Idle, now).unwrap();
    assert_eq!(up.pump(&mut || now).unwrap().delivered.len(), 1);
    let CalendarFetch::Calendar { etag, bytes: cached } = up.client().fetch_calendar(None, now).unwrap() else { panic!() };
    for ev in &events {
        assert!(String::from_utf8_lossy(&cached).contains(&format!("UID:{}", ev.uid)), "the cache holds {}", ev.uid);
    }

    // Down for three days, stepped a minute at a time. The double's `Refuse` closes its listener
    // but keeps serving connections already open (the client pools one), so the outage starts by
    // dropping those, as a server that goes away does, then refuses new ones.
    d.set_faults(Faults { down: Some(Down::Drop), ..Faults::default() });
    assert!(up.client().fetch_calendar(etag.as_deref(), now).is_err());
    d.set_faults(Faults { down: Some(Down::Refuse), ..Faults::default() });
    let (mut attempts, mut fetch_failures) = (0, 0);
    let mut shas = BTreeMap::new();
    let end = t0 + 72 * hour;
    while now < end {
        now += 60_000;
        for ev in &events {
            if ev.start.timestamp_millis() == now {
                q.agent_state(AgentState::Capturing, now).unwrap();
                q.recording_state(&ev.uid, RecordingState::Capturing, now).unwrap();
            }
            if ev.end.timestamp_millis() == now {
                let (track, sha) = record(tmp.path(), &ev.uid, 50_000);
                shas.insert(ev.uid.clone(), sha);
                q.recording_state(&ev.uid, RecordingState::CaptureFinished, now).unwrap();
                q.agent_state(AgentState::Idle, now).unwrap();
                q.ingest(job_for(ev, track), now).unwrap();
            }
        }
        if now % (10 * 60_000) == 0 {
            assert!(up.client().fetch_calendar(etag.as_deref(), now).is_err(), "the server is down");
            fetch_failures += 1;
        }
        for lane in [&mut up, &mut ingests] {
            let r = lane.pump(&mut || now).unwrap();
            assert!(r.delivered.is_empty() && r.parked == 0, "nothing reaches a server that is down: {r:?}");
            attempts += usize::from(r.failed.is_some());
        }
    }
    assert!(!up.online());
    eprintln!("3 days offline: {attempts} delivery attempts, {fetch_failures} failed calendar fetches");
    assert_eq!(shas.len(), 10, "all ten lectures were recorded while offline");
    assert!(attempts < 72 * 60 / 4, "the back-off spaces the failed attempts ({attempts} in 3 days)");
    assert!(fetch_failures > 400);
    assert_eq!(up.outbox().len().unwrap(), 10 * 5, "per lecture: agent capturing, capturing, capture_finished, agent idle, ingest");
    assert!(d.snapshot().recording_states.is_empty());

    // A reboot while offline loses nothing: the queue is in the journal database. The agent's
    // state after the reboot is queued again by the daemon, as at any start.
    drop((q, up, ingests));
    let (mut q, mut up, mut ingests, _) = lanes(&cfg, &db);
    assert_eq!(up.outbox().len().unwrap(), 50);

    // The server returns.
    d.set_faults(Faults::default());
    let mut delivered = Vec::new();
    for _ in 0..20 {
        now += 300_000;
        delivered.extend(up.pump(&mut || now).unwrap().delivered);
        delivered.extend(ingests.pump(&mut || now).unwrap().delivered);
        if up.outbox().is_empty().unwrap() {
            break;
        }
    }
    up.pump(&mut || now).unwrap();
    assert!(up.outbox().is_empty().unwrap() && up.online());
    // The 50 queued operations plus one `upload_finished` per ingest, queued at its ack.
    assert_eq!(delivered.len(), 60);

    let s = d.snapshot();
    let queued: Vec<(String, &str)> = events
        .iter()
        .flat_map(|ev| ["capturing", "capture_finished"].map(|st| (ev.uid.clone(), st)))
        .collect();
    let got: Vec<(String, &str)> = s
        .recording_states
        .iter()
        .filter(|r| ["capturing", "capture_finished"].contains(&r.state.as_str()))
        .map(|r| (r.id.clone(), r.state.as_str()))
        .collect();
    assert_eq!(got, queued, "the queued recording states replayed in the order they happened");
    for ev in &events {
        assert_eq!(s.recording_states_of(&ev.uid), ["capturing", "capture_finished", "uploading", "upload_finished"], "{}", ev.uid);
    }
    let ingested: Vec<_> = s.ingested().collect();
    assert_eq!(ingested.len(), 10, "each lecture ingested once");
    assert_eq!(s.mediapackages.len(), 10, "no ingest had to be retried");
    for (mp, ev) in ingested.iter().zip(&events) {
        assert_eq!(mp.ingested.as_ref().unwrap().workflow_instance_id.as_deref(), Some(ev.uid.as_str()));
        let t: Vec<_> = mp.ingested_tracks().collect();
        assert_eq!(t[0].sha256, shas[&ev.uid], "{}", ev.uid);
    }
    let agent = s.agent_states_of(AGENT);
    assert!(!agent.contains(&"offline"), "offline is never sent: {agent:?}");
    assert_eq!(agent.last(), Some(&"idle"), "the last word is the current state: {agent:?}");
    assert_eq!(agent.iter().filter(|a| **a == "capturing").count(), 10, "{agent:?}");

    // Replaying again or re-queueing a finished recording delivers nothing more.
    let before = d.snapshot().requests.len();
    now += 60_000;
    assert!(up.pump(&mut || now).unwrap().delivered.is_empty());
    assert!(ingests.pump(&mut || now).unwrap().delivered.is_empty());
    for ev in &events {
        let (track, _) = record(tmp.path(), &ev.uid, 10);
        assert_eq!(q.ingest(job_for(ev, track), now).unwrap(), Enqueued::AlreadyDone);
    }
    assert!(d.snapshot().requests.len() <= before + 1, "at most a heartbeat");
    assert_eq!(d.snapshot().ingested().count(), 10);
}

/// The lanes on their own threads with the real clock, as the daemon runs them: a wake-up after
/// queueing delivers at once; a server that is down is retried after the back-off without one.
#[test]
fn lane_threads_deliver_on_wake_and_retry_by_themselves() {
    let d = double(false);
    let now = Utc::now().timestamp_millis();
    let ev = event("ev-t", now - 3_600_000, 30);
    d.set_events(vec![ev.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&d.url(), "digest");
    cfg.retry_initial = Duration::from_millis(200);
    let (mut q, states, ingests, _) = lanes(&cfg, &tmp.path().join("lectern.db"));
    let clock: Arc<dyn Fn() -> i64 + Send + Sync> = Arc::new(|| Utc::now().timestamp_millis());
    let poll = Duration::from_secs(3600);
    let states = spawn(states, clock.clone(), poll).unwrap();
    let ingests = spawn(ingests.with_follow_up_waker(states.waker()), clock, poll).unwrap();

    q.agent_state(AgentState::Idle, now).unwrap();
    states.wake();
    assert!(d.wait_for(Duration::from_secs(5), |s| s.agent_states_of(AGENT) == ["idle"]).is_some());

    d.set_faults(Faults { status: Some(503), ..Faults::default() });
    let (track, _) = record(tmp.path(), "ev-t", 1000);
    q.recording_state("ev-t", RecordingState::CaptureFinished, now).unwrap();
    q.ingest(job_for(&ev, track), now).unwrap();
    states.wake();
    ingests.wake();
    assert!(d.wait_for(Duration::from_secs(5), |s| s.requests.iter().any(|r| r.status == 503)).is_some());
    d.set_faults(Faults::default());
    // No wake-up: the back-off timer alone brings the queue through.
    let s = d
        .wait_for(Duration::from_secs(10), |s| s.ingested().count() == 1 && s.recording_states_of("ev-t").len() == 3)
        .expect("ingested after the back-off");
    assert_eq!(s.recording_states_of("ev-t"), ["capture_finished", "uploading", "upload_finished"]);
    drop((states, ingests));
    assert!(q.outbox().is_empty().unwrap());
}

