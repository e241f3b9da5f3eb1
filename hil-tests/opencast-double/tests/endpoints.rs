//! The double's endpoints, authentication and fault switches, driven over loopback with curl.

mod common;

use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{curl, digest, Reply};
use sha2::Digest as _;
use lectern_opencast_double::{Config, Double, Down, Event, Faults};

const CRED: &str = "agent:pw";

fn double() -> Double {
    let d = Double::start(Config::digest("agent", "pw")).unwrap();
    let start = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    let mut ev = Event::new("ev-1", "box", start, start + chrono::Duration::hours(1), "Lecture");
    ev.series = Some("s-1".into());
    d.set_events(vec![ev]);
    d
}

/// An authenticated Digest request.
fn get(d: &Double, path: &str, extra: &[&str]) -> Reply {
    let mut args = digest(CRED);
    args.extend_from_slice(extra);
    curl(&args, &format!("{}{path}", d.url()))
}

fn post(d: &Double, path: &str, fields: &[&str]) -> Reply {
    let mut args = digest(CRED);
    // --form-string, because curl's -F reads a value starting with `<` from a file; `=@` uploads.
    for f in fields {
        args.extend([if f.contains("=@") { "-F" } else { "--form-string" }, f]);
    }
    curl(&args, &format!("{}{path}", d.url()))
}

#[test]
fn digest_login_redirect_and_wrong_password() {
    let d = double();
    let url = format!("{}/services/available.json?serviceType=org.opencastproject.scheduler", d.url());
    // Digest credentials but no X-Requested-Auth: Opencast sends the client to its login page.
    let r = curl(&["--digest", "-u", CRED], &url);
    assert_eq!(r.status, 302);
    assert!(r.header("location").unwrap().ends_with("/admin-ng/login.html"));
    // Following it gives a 200 HTML page: the trap a client must not mistake for data.
    let r = curl(&["--digest", "-u", CRED, "-L"], &url);
    assert_eq!((r.status, r.header("content-type").unwrap().starts_with("text/html")), (200, true));
    let r = curl(&digest(CRED), &url);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["services"]["service"]["host"], d.url());
    assert_eq!(v["services"]["service"]["path"], "/recordings");
    let r = curl(&digest("agent:wrong"), &url);
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Digest realm=\"Opencast\", qop=\"auth\""));
    let log = d.snapshot().requests;
    assert!(log.iter().any(|e| e.error.as_deref().is_some_and(|m| m.contains("wrong Digest response"))), "{log:#?}");
    // Missing serviceType, unknown type.
    assert_eq!(get(&d, "/services/available.json", &[]).status, 400);
    let r = get(&d, "/services/available.json?serviceType=org.opencastproject.nothing", &[]);
    assert_eq!((r.status, r.text()), (200, "{\"services\":{}}".to_string()));
}

#[test]
fn basic_mode_and_service_lists() {
    let d = Double::start(Config { services_as_list: true, ..Config::basic("agent", "pw") }).unwrap();
    let url = format!("{}/services/available.json?serviceType=org.opencastproject.ingest", d.url());
    assert_eq!(curl(&["-u", CRED], &url).status, 200);
    let r = curl(&["-u", "agent:nope"], &url);
    assert_eq!((r.status, r.header("www-authenticate")), (401, Some("Basic realm=\"Opencast\"".into())));
    let v: serde_json::Value = serde_json::from_slice(&curl(&["-u", CRED], &url).body).unwrap();
    let list = v["services"]["service"].as_array().expect("a list");
    let usable: Vec<_> = list.iter().filter(|s| s["online"] == true && s["active"] == true).collect();
    assert_eq!((list.len(), usable.len()), (3, 1));
    assert_eq!(usable[0]["host"], d.url());
}

#[test]
fn calendar_etag_cutoff_and_raw() {
    let d = double();
    let r = get(&d, "/recordings/calendars?agentid=box&cutoff=1900000000000", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("text/calendar; charset=UTF-8"));
    let etag = r.header("etag").expect("ETag");
    assert!(r.text().contains("UID:ev-1\r\n"));
    let r304 = get(&d, "/recordings/calendars?agentid=box&cutoff=1900000000000", &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!((r304.status, r304.body.len(), r304.header("etag")), (304, 0, Some(etag.clone())));
    // A cutoff before the event leaves it out; another agent gets an empty but valid calendar.
    let early = get(&d, "/recordings/calendars?agentid=box&cutoff=1899999999000", &[]).text();
    assert!(early.starts_with("BEGIN:VCALENDAR") && !early.contains("VEVENT"));
    assert!(!get(&d, "/recordings/calendars?agentid=other", &[]).text().contains("VEVENT"));
    assert_eq!(get(&d, "/recordings/calendars?agentid=box&cutoff=soon", &[]).status, 400);
    // An edit changes the ETag, so the old one gets a full calendar again.
    let start = Utc.timestamp_opt(1_900_000_600, 0).unwrap();
    d.set_events(vec![Event::new("ev-1", "box", start, start + chrono::Duration::hours(1), "Lecture (moved)")]);
    let r = get(&d, "/recordings/calendars?agentid=box", &["-H", &format!("If-None-Match: {etag}")]);
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag").unwrap(), etag);
    // Raw bytes are served verbatim, and their UIDs become known recordings.
    let raw = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:raw-7\r\nDTSTART:20300101T000000Z\r\nDTEND:20300101T010000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n".to_vec();
    d.set_raw_calendar(raw.clone());
    assert_eq!(get(&d, "/recordings/calendars?agentid=box", &[]).body, raw);
    assert_eq!(post(&d, "/capture-admin/recordings/raw-7", &["state=capturing"]).status, 200);
    let fetches = d.snapshot().calendar_fetches;
    assert_eq!(fetches[0].cutoff_ms, Some(1_900_000_000_000));
    assert_eq!(fetches.iter().filter(|f| f.status == 304).count(), 1);
}

#[test]
fn folding_through_multibyte_characters() {
    let d = Double::start(Config { fold_inside_chars: true, ..Config::digest("agent", "pw") }).unwrap();
    let start = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    d.set_events(vec![Event::new("ev-u", "box", start, start + chrono::Duration::hours(1), &"Grüße ".repeat(20))]);
    let body = get(&d, "/recordings/calendars?agentid=box", &[]).body;
    assert!(String::from_utf8(body.clone()).is_err(), "a fold must split a character");
    // Unfolding the octets (not the characters) restores valid UTF-8.
    let mut joined = Vec::new();
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(b"\r\n ") {
            i += 3;
        } else {
            joined.push(body[i]);
            i += 1;
        }
    }
    let text = String::from_utf8(joined).expect("valid UTF-8 once unfolded");
    assert!(text.contains(&format!("SUMMARY:{}", "Grüße ".repeat(20).trim_end())) || text.contains("SUMMARY:Grüße Grüße"), "{text}");
}

#[test]
fn agent_and_recording_states_with_opencast_errors() {
    let d = double();
    let r = post(&d, "/capture-admin/agents/box", &["state=idle", "address=http://box:8080"]);
    assert_eq!((r.status, r.text()), (200, "box set to idle".to_string()));
    // The same state again: an empty 200, as Opencast answers "nothing changed".
    assert_eq!(post(&d, "/capture-admin/agents/box", &["state=idle", "address=http://box:8080"]).text(), "");
    // urlencoded works as well as multipart.
    let mut args = digest(CRED);
    args.extend(["--data", "state=capturing"]);
    assert_eq!(curl(&args, &format!("{}/capture-admin/agents/box", d.url())).status, 200);
    assert_eq!(post(&d, "/capture-admin/agents/box", &["state=sleeping"]).status, 400);
    assert_eq!(post(&d, "/capture-admin/agents/box", &["address=x"]).status, 400);
    assert_eq!(post(&d, "/capture-admin/recordings/ev-1", &["state=capturing"]).text(), "ev-1 set to capturing");
    assert_eq!(post(&d, "/capture-admin/recordings/ev-1", &["state=recording"]).status, 400);
    assert_eq!(post(&d, "/capture-admin/recordings/unknown", &["state=capturing"]).status, 404);
    let xml = "configuration=<?xml version=\"1.0\"?><properties><entry key=\"capture.device.names\">presenter,presentation</entry><entry key=\"capture.device.presenter.src\">/dev/video0</entry></properties>";
    let r = post(&d, "/capture-admin/agents/box/configuration", &[xml]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<item key=\"capture.device.names\">presenter,presentation</item>"));
    let r = post(&d, "/capture-admin/agents/box/configuration", &["configuration={\"capture.device.names\":\"presenter\"}"]);
    assert_eq!((r.status, r.text()), (200, "{\"capture.device.names\":\"presenter\"}".to_string()));
    assert_eq!(post(&d, "/capture-admin/agents/box/configuration", &["configuration= "]).status, 400);
    assert_eq!(post(&d, "/capture-admin/agents/box/configuration", &["configuration={broken"]).status, 400);
    let s = d.snapshot();
    assert_eq!(s.agent_states_of("box"), ["idle", "idle", "capturing"]);
    assert_eq!(s.agent_states[0].address.as_deref(), Some("http://box:8080"));
    assert_eq!(s.recording_states_of("ev-1"), ["capturing"]);
    assert_eq!(s.agent_configs.len(), 2);
    assert_eq!(s.agent_configs[0].properties["capture.device.presenter.src"], "/dev/video0");
}

#[test]
fn ingest_flow_and_malformed_requests() {
    let d = double();
    let dir = tempfile::tempdir().unwrap();
    let track = dir.path().join("presenter.mp4");
    std::fs::write(&track, vec![7u8; 300_000]).unwrap();
    let mp = get(&d, "/ingest/createMediaPackage", &[]);
    assert_eq!(mp.status, 200);
    let mp = mp.text();
    assert!(mp.contains("<mediapackage xmlns=\"http://mediapackage.opencastproject.org\" id=\""));
    let episode = Event::new("ev-1", "box", Utc::now(), Utc::now() + chrono::Duration::hours(1), "Lecture").episode_xml();
    let with_catalog = post(&d, "/ingest/addDCCatalog", &[&format!("mediaPackage={mp}"), "flavor=dublincore/episode", &format!("dublinCore={episode}")]);
    assert_eq!(with_catalog.status, 200, "{}", with_catalog.text());
    let with_track = post(&d, "/ingest/addTrack", &[&format!("mediaPackage={}", with_catalog.text()), "flavor=presenter/source", &format!("BODY=@{}", track.display())]);
    assert_eq!(with_track.status, 200, "{} {}", with_track.text(), with_track.stderr);
    assert!(with_track.text().contains("type=\"presenter/source\"") && with_track.text().contains("type=\"dublincore/episode\""));
    let r = post(&d, "/ingest/ingest/fast", &[&format!("mediaPackage={}", with_track.text()), "workflowInstanceId=ev-1", "straightToPublishing=true"]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("<template>fast</template>"));
    // A second ingest of the same package is refused.
    assert_eq!(post(&d, "/ingest/ingest/fast", &[&format!("mediaPackage={}", with_track.text())]).status, 400);

    let s = d.snapshot();
    let m = s.ingested().next().expect("ingested");
    let ing = m.ingested.as_ref().unwrap();
    assert_eq!((ing.workflow_definition_id.as_deref(), ing.workflow_instance_id.as_deref()), (Some("fast"), Some("ev-1")));
    assert_eq!(ing.params, vec![("straightToPublishing".to_string(), "true".to_string())]);
    let t = m.ingested_tracks().next().expect("track");
    assert_eq!((t.bytes, t.filename.as_str(), t.flavor.as_str()), (300_000, "presenter.mp4", "presenter/source"));
    let want: String = sha2::Sha256::digest(vec![7u8; 300_000]).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(t.sha256, want);
    assert_eq!(std::fs::read(&t.path).unwrap(), vec![7u8; 300_000]);
    assert_eq!(m.ingested_catalogs().count(), 1);

    // Malformed requests are 400s naming the problem.
    let cases: [(&str, Vec<String>, &str); 5] = [
        ("/ingest/addTrack", vec![format!("mediaPackage={mp}"), "flavor=presenter/source".into()], "exactly one file part"),
        ("/ingest/addTrack", vec![format!("mediaPackage={mp}"), "flavor=presenter".into(), format!("BODY=@{}", track.display())], "type/subtype"),
        ("/ingest/addDCCatalog", vec!["mediaPackage=<workflow id=\"1\"/>".into(), format!("dublinCore={episode}")], "not <mediapackage>"),
        ("/ingest/addDCCatalog", vec![format!("mediaPackage={mp}"), "dublinCore=plain text".into()], "Dublin Core"),
        ("/ingest/ingest", vec!["workflowInstanceId=x".into()], "mediaPackage is required"),
    ];
    for (path, fields, why) in cases {
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let r = post(&d, path, &fields);
        assert_eq!(r.status, 400, "{path} {fields:?}: {}", r.text());
        assert!(r.text().contains(why), "{path}: {:?} should mention {why:?}", r.text());
    }
    assert_eq!(get(&d, "/ingest/nothing", &[]).status, 404);
    let r = get(&d, "/ingest/addTrack", &[]);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST".into())));
    assert_eq!(get(&d, "/elsewhere", &[]).status, 404);
}

#[test]
fn chunked_uploads_are_decoded() {
    // Basic, because curl cannot chunk a Digest request: its unauthenticated probe carries both
    // Transfer-Encoding and Content-Length: 0, which the double rejects as RFC 9112 allows.
    let d = Double::start(Config::basic("agent", "pw")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let track = dir.path().join("t.ts");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&track, &data).unwrap();
    let mp = curl(&["-u", CRED], &format!("{}/ingest/createMediaPackage", d.url())).text();
    let (mp_field, file_field) = (format!("mediaPackage={mp}"), format!("BODY=@{}", track.display()));
    let r = curl(&["-u", CRED, "-H", "Transfer-Encoding: chunked", "--form-string", &mp_field, "--form-string", "flavor=presenter/source", "-F", &file_field], &format!("{}/ingest/addTrack", d.url()));
    assert_eq!(r.status, 200, "{} {}", r.text(), r.stderr);
    let s = d.snapshot();
    let t = &s.mediapackages[0].tracks[0];
    assert_eq!(t.bytes, 1_000_000);
    assert_eq!(std::fs::read(&t.path).unwrap(), data);
    let r = curl(&["-u", CRED, "-H", "Transfer-Encoding: chunked", "-H", "Content-Length: 5", "--data", "state=idle"], &format!("{}/capture-admin/agents/box", d.url()));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("both Transfer-Encoding and Content-Length"));
}

#[test]
fn fault_switches() {
    let d = double();
    let cal = "/recordings/calendars?agentid=box";
    // Refused: curl exit 7; back up on the same port.
    d.set_faults(Faults { down: Some(Down::Refuse), ..Faults::default() });
    assert_eq!(get(&d, cal, &[]).exit, 7);
    d.set_faults(Faults::default());
    assert_eq!(get(&d, cal, &[]).status, 200);
    // Dropped after the request head: curl exit 52 (empty reply).
    d.set_faults(Faults { down: Some(Down::Drop), ..Faults::default() });
    assert_eq!(get(&d, cal, &[]).exit, 52);
    // Slow: each of the two exchanges (challenge, answer) waits 400 ms.
    d.set_faults(Faults { delay: Duration::from_millis(400), ..Faults::default() });
    let r = get(&d, cal, &[]);
    assert_eq!(r.status, 200);
    assert!(r.elapsed >= Duration::from_millis(800), "{:?}", r.elapsed);
    // 503 without touching the state.
    d.set_faults(Faults { status: Some(503), ..Faults::default() });
    let before = d.snapshot().recording_states.len();
    assert_eq!(post(&d, "/capture-admin/recordings/ev-1", &["state=capturing"]).status, 503);
    assert_eq!(d.snapshot().recording_states.len(), before);
    // Garbage: a 200 whose body is not JSON.
    d.set_faults(Faults { garbage_body: true, ..Faults::default() });
    let r = get(&d, "/services/available.json?serviceType=org.opencastproject.ingest", &[]);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    // Truncated calendar: curl exit 18 (partial file), other endpoints unaffected.
    d.set_faults(Faults { truncate_calendar: true, ..Faults::default() });
    assert_eq!(get(&d, cal, &[]).exit, 18);
    assert_eq!(post(&d, "/capture-admin/agents/box", &["state=idle"]).status, 200);
    // Scoped to a path prefix: ingest fails, the calendar still works.
    d.set_faults(Faults { status: Some(500), only_path_prefix: Some("/ingest/".into()), ..Faults::default() });
    assert_eq!(get(&d, "/ingest/createMediaPackage", &[]).status, 500);
    assert_eq!(get(&d, cal, &[]).status, 200);
    let log = d.snapshot().requests;
    for f in ["down", "slow", "status", "garbage", "truncated"] {
        assert!(log.iter().any(|e| e.fault.as_deref() == Some(f)), "no request logged with fault {f}");
    }
}
