//! Each protocol call against the small scripted loopback server: what goes over the wire
//! (headers, forms, the streamed multipart body) and how each kind of answer is classified.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{config, reply, Scripted};
use lectern_opencast::fileupload::bytes_body;
use lectern_opencast::{AgentState, CalendarFetch, Client, OpencastError, RecordingState};
use md5::{Digest, Md5};

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Pulls `key=value` or `key="value"` out of an Authorization header.
fn param(h: &str, key: &str) -> String {
    let i = h.find(&format!("{key}=")).unwrap_or_else(|| panic!("{key} in {h}")) + key.len() + 1;
    let rest = &h[i..];
    match rest.strip_prefix('"') {
        Some(q) => q[..q.find('"').unwrap()].to_owned(),
        None => rest.split(',').next().unwrap().trim().to_owned(),
    }
}

/// Checks a Digest Authorization header the way a server would, independently of the client code.
fn verify_digest(req: &common::Req, password: &str) -> String {
    let h = req.header("authorization").expect("Authorization");
    let (user, realm, nonce, uri, nc, cnonce) =
        (param(h, "username"), param(h, "realm"), param(h, "nonce"), param(h, "uri"), param(h, "nc"), param(h, "cnonce"));
    assert_eq!(uri, req.target, "the signed uri is the request target");
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{}:{uri}", req.method));
    assert_eq!(param(h, "response"), md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")), "{h}");
    nc
}

const CHALLENGE: &str = r#"Digest realm="Opencast", qop="auth", nonce="n1""#;

#[test]
fn digest_challenge_is_answered_then_reused_with_counting_nc_and_renewed_when_stale() {
    let s = Scripted::start(vec![
        reply(401, &[("WWW-Authenticate", CHALLENGE)], b""),
        reply(200, &[], b""),
        reply(200, &[], b""),
        reply(401, &[("WWW-Authenticate", r#"Digest realm="Opencast", qop="auth", nonce="n2", stale=true"#)], b""),
        reply(200, &[], b""),
    ]);
    let mut c = Client::new(&config(&s.url, "digest"), "room-1");
    c.set_agent_state(AgentState::Idle).unwrap();
    c.set_recording_state("ev 1", RecordingState::Capturing).unwrap();
    c.set_recording_state("ev-1", RecordingState::CaptureFinished).unwrap();
    let r = s.requests();
    assert_eq!(r.len(), 5);
    assert!(r.iter().all(|q| q.header("x-requested-auth") == Some("Digest")), "every request asks for Digest");
    assert!(r[0].header("authorization").is_none());
    assert_eq!((r[1].method.as_str(), r[1].target.as_str()), ("POST", "/capture-admin/agents/room-1"));
    assert_eq!(r[1].body_text(), "state=idle&address=http%3A%2F%2Fbox");
    assert_eq!(verify_digest(&r[1], "secret"), "00000001");
    assert_eq!(r[2].target, "/capture-admin/recordings/ev%201");
    assert_eq!(r[2].body_text(), "state=capturing");
    assert_eq!(verify_digest(&r[2], "secret"), "00000002", "the cached nonce is reused, no extra round trip");
    assert_eq!(param(r[3].header("authorization").unwrap(), "nonce"), "n1");
    assert_eq!(param(r[4].header("authorization").unwrap(), "nonce"), "n2", "a stale nonce is replaced");
    assert_eq!(verify_digest(&r[4], "secret"), "00000001");
    assert_eq!(r[4].body_text(), "state=capture_finished");
}

#[test]
fn auth_failures_name_the_config_keys() {
    // Wrong password: the fresh challenge is refused again.
    let s = Scripted::start(vec![
        reply(401, &[("WWW-Authenticate", CHALLENGE)], b""),
        reply(401, &[("WWW-Authenticate", CHALLENGE)], b""),
    ]);
    let e = Client::new(&config(&s.url, "digest"), "a").set_agent_state(AgentState::Idle).unwrap_err();
    assert!(matches!(e, OpencastError::Auth { .. }) && e.to_string().contains("opencast.password"), "{e}");
    assert!(e.is_transient(), "queued states wait for the operator to fix the password");

    // Basic against a Digest-only Opencast: a 302 to the login page.
    let s = Scripted::start(vec![reply(302, &[("Location", "/admin-ng/login.html")], b"")]);
    let e = Client::new(&config(&s.url, "basic"), "a").set_agent_state(AgentState::Idle).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("redirected to the login page /admin-ng/login.html") && text.contains("opencast.auth"), "{text}");
    let r = s.requests();
    assert_eq!(r[0].header("authorization"), Some("Basic YWdlbnQ6c2VjcmV0"));
    assert!(r[0].header("x-requested-auth").is_none());
}

#[test]
fn calendar_etag_304_and_incomplete_answers() {
    let ics = b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:e1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
    let s = Scripted::start(vec![
        reply(200, &[("Content-Type", "text/calendar; charset=utf-8"), ("ETag", "\"v1\"")], ics),
        reply(304, &[("ETag", "\"v1\"")], b""),
        reply(200, &[("Content-Type", "text/calendar")], &ics[..40]),
        reply(200, &[("Content-Type", "text/html")], b"<html>login</html>"),
        reply(500, &[], b"boom"),
        reply(404, &[], b"no such agent"),
    ]);
    let mut c = Client::new(&config(&s.url, "basic"), "room 1");
    let now = 1_800_000_000_000;
    let CalendarFetch::Calendar { etag, bytes } = c.fetch_calendar(None, now).unwrap() else { panic!("200") };
    assert_eq!((etag.as_deref(), bytes.as_slice()), (Some("\"v1\""), &ics[..]));
    assert_eq!(c.fetch_calendar(etag.as_deref(), now).unwrap(), CalendarFetch::NotModified);
    let e = c.fetch_calendar(None, now).unwrap_err().to_string();
    assert!(e.contains("without BEGIN:VCALENDAR ... END:VCALENDAR"), "{e}");
    let e = c.fetch_calendar(None, now).unwrap_err().to_string();
    assert!(e.contains("content type \"text/html\""), "{e}");
    let e = c.fetch_calendar(None, now).unwrap_err();
    assert!(matches!(e, OpencastError::Status { status: 500, .. }) && e.is_transient(), "{e}");
    let e = c.fetch_calendar(None, now).unwrap_err();
    assert!(matches!(e, OpencastError::Status { status: 404, .. }) && !e.is_transient(), "{e}");
    let r = s.requests();
    let cutoff = now + 14 * 86_400_000;
    assert_eq!(r[0].target, format!("/recordings/calendars?agentid=room%201&cutoff={cutoff}"));
    assert!(r[0].header("if-none-match").is_none());
    assert_eq!(r[1].header("if-none-match"), Some("\"v1\""));
}

#[test]
fn a_server_that_never_answers_hits_the_read_timeout() {
    let s = Scripted::start(vec![None]);
    let t = Instant::now();
    let e = Client::new(&config(&s.url, "basic"), "a").set_agent_state(AgentState::Idle).unwrap_err();
    assert!(matches!(e, OpencastError::Transport { .. }) && e.is_transient(), "{e}");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "read timeout is 1 s, took {took:?}");
}

/// The answers of the two optional-service lookups `upload_services` makes (ingest is
/// configured): no fileupload and no workflow service registered.
fn no_optional_services() -> Vec<common::Reply> {
    vec![reply(200, &[("Content-Type", "application/json")], br#"{"services":{}}"#); 2]
}

#[test]
fn a_streamed_track_is_multipart_and_the_ingest_carries_the_event_and_its_workflow() {
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mp = |n: usize| format!("<mediapackage id=\"mp1\" step=\"{n}\"/>").into_bytes();
    let mut replies = no_optional_services();
    replies.extend((1..3).map(|n| reply(200, &[("Content-Type", "text/xml")], &mp(n))));
    let s = Scripted::start(replies);
    let mut c = Client::new(&config(&s.url, "basic"), "a");
    let mp0 = String::from_utf8(mp(0)).unwrap();
    let out = c.add_track_stream(&mp0, "presenter/source", "presenter.mp4", content.len() as u64, &bytes_body(content.clone())).unwrap();
    assert!(out.contains("step=\"1\""));
    let out = c.ingest_media_package(&out, Some("fast"), "event-uid-1", &[("straightToPublishing", "true")]).unwrap();
    assert!(out.contains("step=\"2\""));
    let r = s.requests();
    let targets: Vec<&str> = r.iter().map(|q| q.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/services/available.json?serviceType=org.opencastproject.fileupload",
            "/services/available.json?serviceType=org.opencastproject.workflow",
            "/ingest/addTrack",
            "/ingest/ingest/fast"
        ]
    );
    // The multipart body: announced length, fields, then the file byte for byte.
    let up = &r[2];
    let ct = up.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/form-data; boundary=").expect(ct);
    assert_eq!(up.header("content-length").unwrap().parse::<usize>().unwrap(), up.body.len());
    assert!(up.header("transfer-encoding").is_none());
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"mediaPackage\"\r\n\r\n<mediapackage id=\"mp1\" step=\"0\"/>\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"flavor\"\r\n\r\npresenter/source\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"BODY\"; filename=\"presenter.mp4\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    assert!(up.body.starts_with(head.as_bytes()), "{}", String::from_utf8_lossy(&up.body[..300]));
    assert_eq!(&up.body[head.len()..up.body.len() - tail.len()], &content[..]);
    assert!(up.body.ends_with(tail.as_bytes()));
    let fin = r[3].body_text();
    assert!(fin.starts_with("mediaPackage=") && fin.contains("&workflowInstanceId=event-uid-1&straightToPublishing=true"), "{fin}");
}

#[test]
fn a_body_that_cannot_be_opened_is_an_io_error_naming_the_file() {
    let s = Scripted::start(no_optional_services());
    let mut c = Client::new(&config(&s.url, "basic"), "a");
    let open = || -> std::io::Result<Box<dyn std::io::Read + Send + 'static>> { Err(std::io::Error::from(std::io::ErrorKind::NotFound)) };
    let e = c.add_track_stream("<mediapackage id=\"x\"/>", "presenter/source", "t.mp4", 10, &open).unwrap_err();
    assert!(matches!(e, OpencastError::Io { .. }) && e.to_string().contains("t.mp4"), "{e}");
    assert_eq!(s.requests().len(), 2, "nothing was sent but the service lookups");
}

#[test]
fn agent_configuration_is_java_properties_xml() {
    let s = Scripted::start(vec![reply(200, &[], b"")]);
    let mut c = Client::new(&config(&s.url, "basic"), "a");
    c.set_agent_configuration(&BTreeMap::from([("capture.device.names".into(), "presenter".into())])).unwrap();
    let body = s.requests()[0].body_text();
    assert!(body.starts_with("configuration=%3C%3Fxml") && body.contains("capture.device.names%22%3Epresenter%3C%2Fentry%3E"), "{body}");
}

#[test]
fn discovery_over_http_and_overrides() {
    let one = br#"{"services":{"service":{"host":"http://oc:8080","path":"/capture-admin","online":true,"active":true,"maintenance":false}}}"#;
    let s = Scripted::start(vec![reply(200, &[("Content-Type", "application/json")], one), reply(200, &[], b"garbage")]);
    let mut cfg = config(&s.url, "basic");
    cfg.capture_admin_url = None;
    let mut c = Client::new(&cfg, "a");
    let e = c.endpoints().unwrap();
    assert_eq!(e.capture_admin, "http://oc:8080/capture-admin");
    assert_eq!(e.ingest, format!("{}/ingest", s.url), "a config override wins without asking");
    assert_eq!(s.requests()[0].target, "/services/available.json?serviceType=org.opencastproject.capture.admin");
    c.forget_endpoints();
    let err = c.endpoints().unwrap_err().to_string();
    assert!(err.contains("service discovery") && err.contains("not JSON"), "{err}");
}

/// Regression: a 2xx final ingest whose body lacks a media package was reported as a refusal
/// (and the recording as `upload_error`) although the server had accepted it.
#[test]
fn regression_a_2xx_final_ingest_without_a_mediapackage_is_success() {
    let mut replies = no_optional_services();
    replies.push(reply(200, &[("Content-Type", "text/plain")], b"OK"));
    let s = Scripted::start(replies);
    let mut c = Client::new(&config(&s.url, "basic"), "a");
    assert_eq!(c.ingest_media_package(r#"<mediapackage id="mp1"/>"#, None, "uid-1", &[]).unwrap(), "OK");
}

#[test]
fn status_errors_carry_retry_after() {
    let s = Scripted::start(vec![reply(503, &[("Retry-After", "7")], b"busy"), reply(429, &[], b"")]);
    let mut c = Client::new(&config(&s.url, "basic"), "a");
    let e = c.whoami().unwrap_err();
    assert_eq!((e.status(), e.retry_after()), (Some(503), Some("7")), "{e}");
    let e = c.whoami().unwrap_err();
    assert_eq!((e.status(), e.retry_after()), (Some(429), None), "{e}");
}
