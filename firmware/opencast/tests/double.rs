//! The client and the uplink against `lectern-opencast-double`, the Opencast test double built
//! from the published REST API (real HTTP on loopback): discovery, Digest, ETag/304, faults, and
//! offline operation — three simulated days without a server, ten lectures. (Recordings reach
//! Opencast through `lectern-upload`, tested there.)

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lectern_journal::Outbox;
use lectern_opencast::{
    spawn, AgentState, Backoff, CalendarFetch, Client, IngestJob, Lane, OpencastError, Operation, Queue, RecordingState, Track, Uplink,
};
use lectern_opencast_double::{Config as DoubleConfig, Double, Down, Event, Faults};

mod with_double;
use with_double::{config, AGENT};

fn double(list: bool) -> Double {
    Double::start(DoubleConfig { services_as_list: list, ..DoubleConfig::digest("agent", "secret") }).unwrap()
}

fn event(uid: &str, start_ms: i64, minutes: i64) -> Event {
    let start = Utc.timestamp_millis_opt(start_ms).unwrap();
    Event { series: Some("series-1".into()), config: vec![("straightToPublishing".into(), "true".into())], ..Event::new(uid, AGENT, start, start + chrono::Duration::minutes(minutes), uid) }
}

/// A producer queue and the states lane on one database, as the daemon wires them; the flag is
/// the one the upload room raises while a job runs.
fn lane(cfg: &lectern_config::OpencastConfig, db: &Path) -> (Queue, Uplink, Arc<AtomicBool>) {
    let uploading = Arc::new(AtomicBool::new(false));
    let backoff = Backoff::new(cfg.retry_initial, cfg.retry_max);
    let states = Uplink::new(Lane::States, Client::new(cfg, AGENT), Outbox::open(db).unwrap(), backoff, Duration::from_secs(600), uploading.clone());
    (Queue::new(Outbox::open(db).unwrap()), states, uploading)
}

/// An ingest as a firmware from before the upload room queued it for `ev`.
fn legacy_ingest(ev: &Event, dir: &Path) -> Operation {
    Operation::Ingest(IngestJob {
        recording_id: format!("rec-{}", ev.uid),
        event_uid: ev.uid.clone(),
        title: ev.title.clone(),
        scheduled: true,
        episode_dc: Some(ev.episode_xml()),
        series_dc: ev.series_xml(),
        tracks: vec![Track { path: dir.join(format!("{}.mp4", ev.uid)), flavor: "presenter/source".into() }],
        workflow: None,
        workflow_config: BTreeMap::new(),
    })
}

#[test]
fn full_cycle_with_digest_and_discovery_from_a_list() {
    let d = double(true);
    let now = Utc::now().timestamp_millis();
    let ev = event("ev-1", now + 3_600_000, 60);
    d.set_events(vec![ev]);
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

    let s = d.snapshot();
    assert_eq!(s.agent_states_of(AGENT), ["idle"]);
    assert_eq!(s.agent_configs[0].properties.get("capture.device.names").map(String::as_str), Some("presenter"));
    assert_eq!(s.recording_states_of("ev-1"), ["capturing", "capture_finished"]);
    assert_eq!((s.calendar_fetches[0].status, s.calendar_fetches[1].status), (200, 304));
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

/// While the upload room runs a job it raises the shared flag, and the states lane reports `idle`
/// as `uploading`; states queued meanwhile are delivered at once, and the agent is `idle` again
/// once the flag drops, without anything new queued.
#[test]
fn idle_is_reported_as_uploading_while_an_upload_runs() {
    let d = double(false);
    let now = 1_800_000_000_000i64;
    let ev2 = event("ev-2", now + 60_000, 60);
    d.set_events(vec![ev2]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut q, mut states, uploading) = lane(&config(&d.url(), "digest"), &tmp.path().join("lectern.db"));
    q.agent_state(AgentState::Idle, now).unwrap();
    assert_eq!(states.pump(&mut || now).unwrap().delivered.len(), 1);
    uploading.store(true, Ordering::SeqCst);
    q.agent_state(AgentState::Capturing, now).unwrap();
    q.recording_state("ev-2", RecordingState::Capturing, now).unwrap();
    q.agent_state(AgentState::Idle, now).unwrap();
    let r = states.pump(&mut || now).unwrap();
    assert_eq!(r.delivered.len(), 3, "{r:?}");
    uploading.store(false, Ordering::SeqCst);
    assert!(states.pump(&mut || now).unwrap().delivered.is_empty());
    let s = d.snapshot();
    assert_eq!(s.agent_states_of(AGENT), ["idle", "capturing", "uploading", "idle"]);
    assert_eq!(s.recording_states_of("ev-2"), ["capturing"]);
}

/// An ingest an earlier firmware queued is never sent by the lane: the states around it are
/// delivered in order and the ingest stays pending in the outbox, for the daemon to adopt as an
/// upload job.
#[test]
fn an_ingest_queued_by_an_earlier_firmware_is_left_for_the_daemon() {
    let d = double(false);
    let now = 1_800_000_000_000i64;
    let ev = event("ev-old", now - 7_200_000, 60);
    d.set_events(vec![ev.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let (mut q, mut states, _) = lane(&config(&d.url(), "digest"), &tmp.path().join("lectern.db"));
    q.recording_state(&ev.uid, RecordingState::CaptureFinished, now).unwrap();
    q.push(&legacy_ingest(&ev, tmp.path()), now).unwrap();
    q.agent_state(AgentState::Idle, now).unwrap();
    let r = states.pump(&mut || now).unwrap();
    assert_eq!((r.delivered.len(), r.parked, r.failed.as_deref()), (2, 0, None), "{r:?}");
    let pending = states.outbox().pending(10).unwrap();
    assert_eq!(pending.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), ["ingest"]);
    assert_eq!(Operation::from_entry(&pending[0]).unwrap(), legacy_ingest(&ev, tmp.path()));
    let s = d.snapshot();
    assert_eq!(s.recording_states_of(&ev.uid), ["capture_finished"]);
    assert!(s.mediapackages.is_empty() && !s.requests.iter().any(|r| r.target.starts_with("/ingest")), "nothing ingested");
}

/// Issue 3, offline operation: the server is down for three simulated days with ten scheduled
/// lectures. All ten are recorded from the cached calendar; when the server returns the states
/// are replayed in the order they happened, and the agent's last word is its current state.
#[test]
fn three_days_down_ten_lectures_replayed_in_order() {
    let d = double(false);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("lectern.db");
    let t0 = 1_800_000_000_000i64;
    let hour = 3_600_000i64;
    let events: Vec<Event> = (0..10).map(|i| event(&format!("lecture-{i:02}"), t0 + 2 * hour + i * 7 * hour, 90)).collect();
    d.set_events(events.clone());
    let cfg = config(&d.url(), "digest");
    let (mut q, mut up, _) = lane(&cfg, &db);

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
    let (mut attempts, mut fetch_failures, mut recorded) = (0, 0, 0);
    let end = t0 + 72 * hour;
    while now < end {
        now += 60_000;
        for ev in &events {
            if ev.start.timestamp_millis() == now {
                q.agent_state(AgentState::Capturing, now).unwrap();
                q.recording_state(&ev.uid, RecordingState::Capturing, now).unwrap();
            }
            if ev.end.timestamp_millis() == now {
                recorded += 1;
                q.recording_state(&ev.uid, RecordingState::CaptureFinished, now).unwrap();
                q.agent_state(AgentState::Idle, now).unwrap();
            }
        }
        if now % (10 * 60_000) == 0 {
            assert!(up.client().fetch_calendar(etag.as_deref(), now).is_err(), "the server is down");
            fetch_failures += 1;
        }
        let r = up.pump(&mut || now).unwrap();
        assert!(r.delivered.is_empty() && r.parked == 0, "nothing reaches a server that is down: {r:?}");
        attempts += usize::from(r.failed.is_some());
    }
    assert!(!up.online());
    eprintln!("3 days offline: {attempts} delivery attempts, {fetch_failures} failed calendar fetches");
    assert_eq!(recorded, 10, "all ten lectures were recorded while offline");
    assert!(attempts < 72 * 60 / 4, "the back-off spaces the failed attempts ({attempts} in 3 days)");
    assert!(fetch_failures > 400);
    // Per lecture: agent capturing, capturing, capture_finished, agent idle; agent states coalesce
    // at the tail, so each lecture's agent `capturing` replaced the previous one's `idle`.
    let queued_ops = 10 * 4 - 9;
    assert_eq!(up.outbox().len().unwrap(), queued_ops);
    assert!(d.snapshot().recording_states.is_empty());

    // A reboot while offline loses nothing: the queue is in the journal database. The agent's
    // state after the reboot is queued again by the daemon, as at any start.
    drop((q, up));
    let (_q, mut up, _) = lane(&cfg, &db);
    assert_eq!(up.outbox().len().unwrap(), queued_ops);

    // The server returns.
    d.set_faults(Faults::default());
    let mut delivered = Vec::new();
    for _ in 0..20 {
        now += 300_000;
        delivered.extend(up.pump(&mut || now).unwrap().delivered);
        if up.outbox().is_empty().unwrap() {
            break;
        }
    }
    up.pump(&mut || now).unwrap();
    assert!(up.outbox().is_empty().unwrap() && up.online());
    assert_eq!(delivered.len() as i64, queued_ops);

    let s = d.snapshot();
    let queued: Vec<(String, &str)> = events
        .iter()
        .flat_map(|ev| ["capturing", "capture_finished"].map(|st| (ev.uid.clone(), st)))
        .collect();
    let got: Vec<(String, &str)> = s.recording_states.iter().map(|r| (r.id.clone(), r.state.as_str())).collect();
    assert_eq!(got, queued, "the queued recording states replayed in the order they happened");
    let agent = s.agent_states_of(AGENT);
    assert!(!agent.contains(&"offline"), "offline is never sent: {agent:?}");
    assert_eq!(agent.last(), Some(&"idle"), "the last word is the current state: {agent:?}");
    assert_eq!(agent.iter().filter(|a| **a == "capturing").count(), 10, "{agent:?}");

    // Replaying again delivers nothing more.
    let before = d.snapshot().requests.len();
    now += 60_000;
    assert!(up.pump(&mut || now).unwrap().delivered.is_empty());
    assert!(d.snapshot().requests.len() <= before + 1, "at most a heartbeat");
}

/// The lane on its own thread with the real clock, as the daemon runs it: a wake-up after
/// queueing delivers at once; a server that is down is retried after the back-off without one.
#[test]
fn the_lane_thread_delivers_on_wake_and_retries_by_itself() {
    let d = double(false);
    let now = Utc::now().timestamp_millis();
    let ev = event("ev-t", now - 3_600_000, 30);
    d.set_events(vec![ev]);
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(&d.url(), "digest");
    cfg.retry_initial = Duration::from_millis(200);
    let (mut q, states, _) = lane(&cfg, &tmp.path().join("lectern.db"));
    let clock: Arc<dyn Fn() -> i64 + Send + Sync> = Arc::new(|| Utc::now().timestamp_millis());
    let states = spawn(states, clock, Duration::from_secs(3600)).unwrap();

    q.agent_state(AgentState::Idle, now).unwrap();
    states.wake();
    assert!(d.wait_for(Duration::from_secs(5), |s| s.agent_states_of(AGENT) == ["idle"]).is_some());

    d.set_faults(Faults { status: Some(503), ..Faults::default() });
    q.recording_state("ev-t", RecordingState::CaptureFinished, now).unwrap();
    states.wake();
    assert!(d.wait_for(Duration::from_secs(5), |s| s.requests.iter().any(|r| r.status == 503)).is_some());
    d.set_faults(Faults::default());
    // No wake-up: the back-off timer alone brings the queue through.
    let s = d.wait_for(Duration::from_secs(10), |s| !s.recording_states_of("ev-t").is_empty()).expect("delivered after the back-off");
    assert_eq!(s.recording_states_of("ev-t"), ["capture_finished"]);
    drop(states);
    assert!(q.outbox().is_empty().unwrap());
}
