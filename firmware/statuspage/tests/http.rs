//! The page server over real loopback HTTP, with a scripted source in place of the daemon: the
//! routes, the read-only rule, the Host check against DNS rebinding, the security headers, and
//! what a refusal or a pending picture looks like. The page itself in a real browser, against
//! the real daemon: hil-tests/tests/statuspage.rs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use lectern_control::Request;
use lectern_statuspage::StatusPage;
use serde_json::{json, Value};

/// A JPEG's first and last bytes are enough for the route that decodes it.
const JPEG: &[u8] = &[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 0xFF, 0xD9];

fn page(preview: Value, asked: Arc<Mutex<Vec<Request>>>) -> StatusPage {
    StatusPage::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Box::new(move |req| {
            asked.lock().unwrap().push(req.clone());
            match req {
                Request::Status => Ok(json!({ "state": "recording" })),
                // The newest n of 25, oldest of them first, as the journal answers.
                Request::NewestRecordings { n } => Ok(json!({ "recordings": (25 - n..25).map(|i| json!({ "id": format!("r{i}"), "started_at_ms": i })).collect::<Vec<_>>(), "total": 25 })),
                Request::Preview if preview.is_null() => Err("not recording: the preview comes from a running capture".into()),
                Request::Preview => Ok(preview.clone()),
                other => panic!("the page asked a request it must never ask: {other:?}"),
            }
        }),
    )
    .unwrap()
}

/// One raw request, so the test controls the `Host` header; the status, headers and body.
fn raw(p: &StatusPage, method: &str, path: &str, host: Option<&str>) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\n{host}Connection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head");
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, out[split + 4..].to_vec())
}

fn get(p: &StatusPage, path: &str) -> (u16, String, Vec<u8>) {
    raw(p, "GET", path, Some(&format!("127.0.0.1:{}", p.addr().port())))
}

#[test]
fn serves_the_page_and_the_read_only_api() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let jpeg_b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
    let p = page(json!({ "pending": false, "age_ms": 100, "jpeg_base64": jpeg_b64, "meter": null }), asked.clone());

    let (status, head, body) = get(&p, "/");
    assert_eq!(status, 200, "{head}");
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("<script src=\"/page.js\" defer></script>") && html.contains("id=\"picture\""), "{html}");
    for want in ["Content-Type: text/html", "Cache-Control: no-store", "X-Content-Type-Options: nosniff", "Content-Security-Policy: default-src 'none'; script-src 'self'"] {
        assert!(head.contains(want), "{want} in {head}");
    }
    // Nothing inline for the CSP to forbid, and nothing from another origin.
    assert!(!html.contains("<script>") && !html.contains(" style=") && !html.contains("http://") && !html.contains("https://"), "{html}");
    assert!(get(&p, "/page.js").1.contains("Content-Type: text/javascript"));
    assert!(get(&p, "/page.css").1.contains("Content-Type: text/css"));

    let (status, _, body) = get(&p, "/api/status?t=1");
    assert_eq!((status, serde_json::from_slice::<Value>(&body).unwrap()), (200, json!({ "state": "recording" })));
    let (_, _, body) = get(&p, "/api/recordings");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((v["total"].as_u64(), v["recordings"].as_array().unwrap().len(), v["recordings"][0]["id"].as_str()), (Some(25), 20, Some("r24")));
    let (status, head, body) = get(&p, "/preview.jpg");
    assert_eq!((status, body.as_slice()), (200, JPEG), "{head}");
    assert!(head.contains("Content-Type: image/jpeg"), "{head}");
    assert_eq!(get(&p, "/api/preview").0, 200);
    assert_eq!(get(&p, "/etc/passwd").0, 404);
    assert_eq!(*asked.lock().unwrap(), [Request::Status, Request::NewestRecordings { n: 20 }, Request::Preview, Request::Preview]);
}

#[test]
fn refuses_writes_and_foreign_hosts_without_asking_the_daemon() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let p = page(Value::Null, asked.clone());
    let port = p.addr().port();
    for method in ["POST", "PUT", "DELETE"] {
        let (status, head, _) = raw(&p, method, "/api/status", Some(&format!("localhost:{port}")));
        assert_eq!(status, 405, "{method}: {head}");
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
    }
    // A name that a rebinding DNS server points at 127.0.0.1, and no Host at all.
    for host in [Some(format!("attacker.example:{port}")), Some(format!("10.0.0.1:{port}")), None] {
        let (status, _, body) = raw(&p, "GET", "/api/status", host.as_deref());
        assert_eq!(status, 421, "{host:?}");
        assert!(String::from_utf8_lossy(&body).contains("answers only to localhost"), "{host:?}");
    }
    // An SSH tunnel's near end may use any local port.
    assert_eq!(raw(&p, "GET", "/api/status", Some("localhost:9999")).0, 200);
    assert_eq!(raw(&p, "GET", "/api/status", Some("[::1]:8480")).0, 200);
    assert_eq!(*asked.lock().unwrap(), [Request::Status, Request::Status], "only the two allowed requests reached the daemon");
}

#[test]
fn a_refusal_and_a_pending_picture_say_so() {
    let p = page(Value::Null, Arc::default());
    let (status, _, body) = get(&p, "/api/preview");
    assert_eq!(status, 409);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["error"], "not recording: the preview comes from a running capture");
    assert_eq!(get(&p, "/preview.jpg").0, 409);

    let p = page(json!({ "pending": true, "meter": null }), Arc::default());
    let (status, head, _) = get(&p, "/preview.jpg");
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After: 1"), "{head}");
}

#[test]
fn listens_on_loopback_only_and_says_why_not() {
    let e = StatusPage::spawn("0.0.0.0:0".parse().unwrap(), Box::new(|_| Ok(Value::Null))).err().unwrap().to_string();
    assert!(e.contains("0.0.0.0:0") && e.contains("not a loopback address"), "{e}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = StatusPage::spawn(addr, Box::new(|_| Ok(Value::Null))).err().unwrap().to_string();
    assert!(e.contains(&format!("cannot listen on {addr}")), "{e}");
}

#[test]
fn stops_when_dropped() {
    let p = page(Value::Null, Arc::default());
    let addr = p.addr();
    drop(p);
    // tiny_http's accept thread closes the socket once it wakes, just after the drop.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < until, "still listening on {addr} 5 s after the drop");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
