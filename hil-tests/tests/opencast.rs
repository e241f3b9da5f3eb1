//! The daemon as an Opencast capture agent, against the Opencast test double
//! (`lectern-opencast-double`, a faithful stand-in built from Opencast's published REST API and
//! validated with real pyca in its own tests): it fetches the calendar with Digest auth, records
//! the scheduled lectures, stitches them and ingests each exactly once — also when the server is
//! down at boot and comes back later (the offline queue replays in order).

use std::time::Duration;

use chrono::Utc;
use lectern_control::Request;
use lectern_hil_tests::{sha256_file, wait_until, Daemon, SMALL};
use lectern_opencast_double::{Config, Double, Down, Event, Faults};
use serde_json::Value;

const AGENT: &str = "room-101";

fn config(url: &str) -> String {
    format!(
        "{SMALL}[agent]\nname = \"{AGENT}\"\n\
         [opencast]\nurl = \"{url}\"\nusername = \"opencast_system_account\"\npassword = \"CHANGE_ME\"\nauth = \"digest\"\n\
         calendar_poll_s = 5\nretry_initial_s = 1\nretry_max_s = 2\n\
         [upload]\nstart_delay_max_s = 0\nretry_initial_s = 1\nretry_max_s = 2\nchunk_mb = 1\n"
    )
}

fn stitch_of(d: &Daemon, id: &str) -> Value {
    let list = d.ctl(Request::Recordings).unwrap();
    list["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id).map_or(Value::Null, |r| r["stitch"].clone())
}

#[test]
fn scheduled_lectures_are_recorded_stitched_and_ingested_once_even_when_the_server_is_down_at_boot() {
    let double = Double::start(Config::digest("opencast_system_account", "CHANGE_ME")).unwrap();
    let now = Utc::now();
    let secs = |s: i64| now + chrono::Duration::seconds(s);
    let mut first = Event::new("lecture-a", AGENT, secs(3), secs(9), "Thermodynamics 1");
    first.series = Some("thermo-2026".into());
    let second = Event::new("lecture-b", AGENT, secs(30), secs(36), "Thermodynamics 2");
    double.set_events(vec![first, second]);

    // Online: the first lecture is recorded from the calendar and ingested.
    let mut d = Daemon::start(&config(&double.url())).unwrap();
    let ingested_a = double
        .wait_for(Duration::from_secs(40), |s| s.recording_states_of("lecture-a").contains(&"upload_finished"))
        .unwrap_or_else(|| panic!("lecture-a not ingested: {:#?}\n{}", double.snapshot().recording_states, d.log_text()));
    let snap = ingested_a;
    assert_eq!(snap.recording_states_of("lecture-a"), ["capturing", "capture_finished", "uploading", "upload_finished"]);
    assert!(snap.agent_states_of(AGENT).contains(&"capturing"), "{:?}", snap.agent_states_of(AGENT));
    assert!(!snap.agent_configs.is_empty(), "capabilities were never posted");
    let mp = snap.ingested().find(|m| m.ingested.as_ref().unwrap().workflow_instance_id.as_deref() == Some("lecture-a")).unwrap();
    let stitch = stitch_of(&d, "lecture-a");
    assert_eq!(stitch["state"], "done", "{stitch}");
    let track = mp.ingested_tracks().next().expect("a track");
    assert_eq!(track.flavor, "presenter/source");
    assert_eq!(track.sha256, stitch["sha256"].as_str().unwrap(), "the ingested track is the stitched file");
    assert_eq!(track.sha256, sha256_file(&d.media().join(stitch["path"].as_str().unwrap())).unwrap());
    assert!(mp.ingested_catalogs().any(|c| c.flavor == "dublincore/episode"), "{:?}", mp.catalogs);

    // The server goes down, and the box reboots while it is down (SIGKILL: a crash).
    double.set_faults(Faults { down: Some(Down::Drop), ..Faults::default() });
    double.set_faults(Faults { down: Some(Down::Refuse), ..Faults::default() });
    d.kill().unwrap();
    d.restart().unwrap();
    let status = d.status();
    assert_eq!(status["opencast"]["calendar"]["cached_events"], 2, "{status}");
    // The second lecture is recorded from the cached calendar and stitched while offline.
    wait_until("lecture-b recorded and stitched offline", Duration::from_secs(50), || stitch_of(&d, "lecture-b")["state"] == "done")
        .unwrap_or_else(|e| panic!("{e}\nstatus: {:#}\nrecordings: {:#}\n{}", d.status(), d.ctl(Request::Recordings).unwrap(), d.log_text()));
    let status = d.status();
    assert_eq!(status["opencast"]["calendar"]["reachable"], false, "{status}");
    assert!(status["opencast"]["outbox_pending"].as_i64().unwrap() > 0, "{status}");
    assert!(!double.snapshot().recording_states_of("lecture-b").contains(&"capturing"));

    // The server returns: the queued states are replayed in order and the lecture ingested once.
    double.set_faults(Faults::default());
    let snap = double
        .wait_for(Duration::from_secs(30), |s| s.recording_states_of("lecture-b").contains(&"upload_finished"))
        .unwrap_or_else(|| panic!("lecture-b not ingested after the server returned: {:#?}\n{}", double.snapshot().recording_states, d.log_text()));
    assert_eq!(snap.recording_states_of("lecture-b"), ["capturing", "capture_finished", "uploading", "upload_finished"]);
    for uid in ["lecture-a", "lecture-b"] {
        let n = snap.ingested().filter(|m| m.ingested.as_ref().unwrap().workflow_instance_id.as_deref() == Some(uid)).count();
        assert_eq!(n, 1, "{uid} ingested {n} times");
    }
    // Once the upload is over, the agent says it is idle again.
    let snap = double
        .wait_for(Duration::from_secs(10), |s| s.agent_states_of(AGENT).last() == Some(&"idle"))
        .unwrap_or_else(|| panic!("agent not back to idle: {:?}\n{}\n{}", double.snapshot().agent_states_of(AGENT), d.status()["uploads"], d.log_text()));
    assert!(snap.agent_states_of(AGENT).contains(&"uploading"), "{:?}", snap.agent_states_of(AGENT));
    assert!(d.terminate().unwrap().success());
}
