//! Zero-touch enrolment (issue 10, docs/provisioning.md): a box whose image carries an
//! enrolment file (`lecternd --enrol /etc/lectern/enrol.toml`) fetches its signed bundle from a
//! static URL (any HTTPS host or S3 bucket the campus has), applies it when idle, and re-checks on
//! a jittered interval with `If-None-Match`, so a fleet follows a new bundle version within about
//! one interval without a server of ours.
//!
//! A fetch thread does the HTTP and nothing else; the main loop keeps the newest fetched bundle as
//! *pending* and applies it through the same path as `lectern provision`
//! ([`crate::provision::Provisioner::apply_bytes`]) on a turn where the box is idle, so a
//! recording is never cut. The bundle's signature is what is trusted; TLS (always verified,
//! `ca_file` to name a campus CA) and the optional bearer token only keep its secrets from other
//! readers. A re-fetch of the version the box already runs is "up to date", not a rejection.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read as _;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use lectern_provision::remote::{jittered, shown_url, Enrolment};
use lectern_provision::MAX_BUNDLE_BYTES;
use serde_json::{json, Value};

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// A bundle (200), with the ETag to send next time.
    Bundle { bytes: Vec<u8>, etag: Option<String> },
    /// 304: the bundle did not change since the last fetch.
    NotModified,
    /// Connection, TLS, HTTP status or size: what went wrong, without the URL's query or token.
    Failed(String),
}

fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// The first check: soon after start (a box just powered up in its room should enrol at once),
/// but spread over a few seconds so a building's boxes do not ask in the same instant.
fn first_delay(interval: Duration) -> Duration {
    jittered(interval.min(Duration::from_secs(10)), random()) / 3
}

/// One GET with `If-None-Match`; bodies over [`MAX_BUNDLE_BYTES`] are refused unread.
pub fn check(agent: &ureq::Agent, url: &str, token: Option<&str>, etag: Option<&str>) -> Fetch {
    let shown = shown_url(url);
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(e) = etag {
        req = req.header("If-None-Match", e);
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(e) => return Fetch::Failed(format!("GET {shown}: {e}")),
    };
    match resp.status().as_u16() {
        304 => Fetch::NotModified,
        200 => {
            let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let mut bytes = Vec::new();
            let read = resp.body_mut().as_reader().take(MAX_BUNDLE_BYTES as u64 + 1).read_to_end(&mut bytes);
            match read {
                Err(e) => Fetch::Failed(format!("GET {shown}: reading the body: {e}")),
                Ok(_) if bytes.len() > MAX_BUNDLE_BYTES => Fetch::Failed(format!("GET {shown}: larger than a bundle may be ({MAX_BUNDLE_BYTES} bytes)")),
                Ok(_) => Fetch::Bundle { bytes, etag },
            }
        }
        s => Fetch::Failed(format!("GET {shown}: HTTP {s}")),
    }
}

/// Starts the fetch thread for this box's URL; dropping the returned sender stops it at its next
/// wake-up. `report` gets every check's result.
pub fn spawn(enrolment: &Enrolment, device_id: &str, report: impl Fn(Fetch) + Send + 'static) -> std::io::Result<Sender<()>> {
    let s = Duration::from_secs(30);
    let agent = lectern_opencast::client::agent(Duration::from_secs(10), s, Duration::from_secs(60), enrolment.ca_pem.as_deref());
    let url = enrolment.url_for(device_id);
    let token = enrolment.token.clone();
    let interval = enrolment.check_interval;
    let (stop, stopped) = channel::<()>();
    std::thread::Builder::new().name("enrol-fetch".into()).spawn(move || {
        let mut etag: Option<String> = None;
        let mut wait = first_delay(interval);
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
            let got = check(&agent, &url, token.as_deref(), etag.as_deref());
            if let Fetch::Bundle { etag: e, .. } = &got {
                etag.clone_from(e);
            }
            report(got);
            wait = jittered(interval, random());
        }
    })?;
    Ok(stop)
}

/// The main loop's side: the last check and the bundle waiting for an idle turn.
#[derive(Debug, Default)]
pub struct EnrolState {
    pub url: String,
    pub last_check_ms: Option<i64>,
    pub last_result: Option<String>,
    pub pending: Option<Vec<u8>>,
    /// The last outcome of applying a fetched bundle (applied, up to date, or the rejection).
    pub last_apply: Option<String>,
}

impl EnrolState {
    /// Takes in one check's result.
    pub fn on_fetch(&mut self, fetch: Fetch, now_ms: i64) {
        self.last_check_ms = Some(now_ms);
        match fetch {
            Fetch::Bundle { bytes, .. } => {
                self.last_result = Some(format!("fetched {} bytes", bytes.len()));
                self.pending = Some(bytes);
            }
            Fetch::NotModified => self.last_result = Some("not modified".into()),
            Fetch::Failed(e) => {
                if self.last_result.as_deref() != Some(&e) {
                    log::warn!(target: "lecternd", "enrolment: {e}");
                }
                self.last_result = Some(e);
            }
        }
    }

    /// `status.provision.remote`.
    pub fn status_json(&self) -> Value {
        json!({
            "url": self.url,
            "last_check": self.last_check_ms.map_or(Value::Null, crate::rfc3339),
            "last_result": self.last_result,
            "pending": self.pending.is_some(),
            "last_apply": self.last_apply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A static file host over loopback: serves `body` at any path with `etag`, answers 304 to a
    /// matching `If-None-Match`, and records each request's headers.
    struct Host {
        port: u16,
        file: Arc<Mutex<(Vec<u8>, String)>>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    fn host() -> Host {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let file = Arc::new(Mutex::new((b"v1".to_vec(), "\"e1\"".to_owned())));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (f, s) = (file.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                        break;
                    }
                    head.push_str(&l);
                }
                s.lock().unwrap().push(head.clone());
                let (body, etag) = f.lock().unwrap().clone();
                let mut w = conn;
                if head.lines().any(|l| l.eq_ignore_ascii_case(&format!("if-none-match: {etag}"))) {
                    let _ = write!(w, "HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\nContent-Length: 0\r\n\r\n");
                } else if head.starts_with("GET /missing") {
                    let _ = write!(w, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                } else {
                    let _ = write!(w, "HTTP/1.1 200 OK\r\nETag: {etag}\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = w.write_all(&body);
                }
            }
        });
        Host { port, file, seen }
    }

    #[test]
    fn checks_send_the_token_and_the_etag_and_follow_changes() {
        let h = host();
        let s = Duration::from_secs(5);
        let agent = lectern_opencast::client::agent(s, s, s, None);
        let url = format!("http://127.0.0.1:{}/b/box.bundle", h.port);
        let got = check(&agent, &url, Some("t0k"), None);
        assert_eq!(got, Fetch::Bundle { bytes: b"v1".to_vec(), etag: Some("\"e1\"".into()) });
        assert_eq!(check(&agent, &url, Some("t0k"), Some("\"e1\"")), Fetch::NotModified);
        *h.file.lock().unwrap() = (b"v2".to_vec(), "\"e2\"".into());
        assert_eq!(check(&agent, &url, Some("t0k"), Some("\"e1\"")), Fetch::Bundle { bytes: b"v2".to_vec(), etag: Some("\"e2\"".into()) });
        let seen = h.seen.lock().unwrap().clone();
        assert!(seen.iter().all(|r| r.to_lowercase().contains("authorization: bearer t0k")), "{seen:?}");
        assert!(seen[1].to_lowercase().contains("if-none-match: \"e1\""), "{seen:?}");
        let e = check(&agent, &format!("http://127.0.0.1:{}/missing?sig=secret", h.port), None, None);
        assert!(matches!(&e, Fetch::Failed(m) if m.contains("HTTP 404") && !m.contains("secret")), "{e:?}");
        *h.file.lock().unwrap() = (vec![b'x'; MAX_BUNDLE_BYTES + 1], "\"big\"".into());
        assert!(matches!(check(&agent, &url, None, None), Fetch::Failed(m) if m.contains("larger than a bundle")));
    }

    #[test]
    fn the_fetch_thread_checks_at_once_then_on_its_interval() {
        let h = host();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("enrol.toml");
        std::fs::write(&file, format!("url = \"http://127.0.0.1:{}/b/{{device}}.bundle\"\ncheck_interval_s = 5\n", h.port)).unwrap();
        let enrolment = Enrolment::load(&file).unwrap();
        let (tx, rx) = channel();
        let stop = spawn(&enrolment, "0123abcd", move |f| {
            let _ = tx.send(f);
        })
        .unwrap();
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("a first check within seconds of start");
        assert_eq!(first, Fetch::Bundle { bytes: b"v1".to_vec(), etag: Some("\"e1\"".into()) });
        let second = rx.recv_timeout(Duration::from_secs(10)).expect("a re-check within 1.5 intervals");
        assert_eq!(second, Fetch::NotModified);
        assert!(h.seen.lock().unwrap()[0].starts_with("GET /b/0123abcd.bundle "), "{:?}", h.seen.lock().unwrap());
        drop(stop);
    }

    #[test]
    fn state_keeps_the_newest_bundle_pending_and_logs_a_failure_once() {
        let mut st = EnrolState { url: "https://x/b".into(), ..EnrolState::default() };
        st.on_fetch(Fetch::Bundle { bytes: b"one".to_vec(), etag: None }, 1);
        st.on_fetch(Fetch::Failed("GET https://x/b: timeout".into()), 2);
        assert_eq!(st.pending.as_deref(), Some(&b"one"[..]), "a failed re-check keeps what is pending");
        st.on_fetch(Fetch::Bundle { bytes: b"two".to_vec(), etag: None }, 3);
        assert_eq!(st.pending.as_deref(), Some(&b"two"[..]));
        let v = st.status_json();
        assert_eq!((v["pending"].as_bool(), v["last_result"].as_str()), (Some(true), Some("fetched 3 bytes")));
    }
}
