//! The HTTP shell over `ureq`: one [`Client`] per agent, doing each Opencast call once — service
//! discovery, agent state and configuration, recording state, the calendar with ETag, and (in
//! [`crate::fileupload`]) the calls of a resumable upload with streamed multipart bodies.
//! Retrying, queueing and ordering are not done here; that is [`crate::uplink`]'s job over the
//! outbox, and `lectern-upload`'s for recordings.
//!
//! Every request has a connect timeout, a per-read (and per-write) silence timeout and an overall
//! timeout from `[opencast]` (pyCA 4.4 sets none and can hang forever on a half-open
//! connection). Track uploads get the longer `upload_timeout` overall. Redirects are never
//! followed: Opencast's only redirect for an agent is to its login page, which means the
//! credentials or the auth method are wrong ([`OpencastError::Auth`]).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::time::Duration;

use lectern_config::{OpencastAuth, OpencastConfig};
use ureq::http::Response;
use ureq::{Agent, Body, SendBody};

use crate::auth::{self, Challenge};
use crate::discovery::{self, Endpoints, Service};
use crate::error::{OpencastError, Result};
use crate::ops::{AgentState, RecordingState};

/// Largest answer read into memory (a calendar of a few weeks with catalogs is well below this).
const MAX_ANSWER: u64 = 16 << 20;

/// What a calendar fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalendarFetch {
    /// 304: the calendar matching the ETag sent is still current; keep using the cached one.
    NotModified,
    /// 200 with a complete iCalendar document.
    Calendar {
        /// The answer's `ETag`, to send as `If-None-Match` next time.
        etag: Option<String>,
        /// The document, for `lectern-schedule` to parse.
        bytes: Vec<u8>,
    },
}

/// Opens the bytes of a streamed multipart file part; called once per attempt (a Digest
/// re-challenge sends the body again), so each call must start from the first byte.
pub(crate) type OpenBody<'a> = &'a dyn Fn() -> std::io::Result<Box<dyn Read + Send + 'static>>;

/// A request body, kept so the request can be sent again after a Digest challenge.
pub(crate) enum Payload<'a> {
    None,
    Form(&'a [(&'a str, &'a str)]),
    /// multipart/form-data: text fields, then one file field of exactly `len` bytes from `open`
    /// (a range of a file read through the upload bandwidth cap).
    Stream { fields: &'a [(&'a str, &'a str)], file_field: &'a str, filename: &'a str, len: u64, open: OpenBody<'a> },
    /// An empty `PUT`.
    Put,
}

/// An answer: status, `ETag`, `Retry-After`, body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    etag: Option<String>,
    content_type: String,
    retry_after: Option<String>,
    pub(crate) body: Vec<u8>,
}

/// The Opencast client of one capture agent; see the module doc.
pub struct Client {
    pub(crate) cfg: OpencastConfig,
    agent_name: String,
    http: Agent,
    upload: Agent,
    /// The last Digest challenge and how many requests used its nonce.
    digest: Option<(Challenge, u32)>,
    endpoints: Option<Endpoints>,
    /// Ingest, fileupload and workflow services ([`Client::upload_services`]).
    pub(crate) upload_services: Option<crate::fileupload::UploadServices>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.cfg.url).field("agent", &self.agent_name).finish_non_exhaustive()
    }
}

/// A ureq agent the way every Lectern HTTP client needs one: connect, per-read/write silence and
/// overall timeouts, statuses as answers (not errors), no redirects, Lectern's user agent, TLS
/// always verified: against Mozilla's roots, or only against the CA certificates in `ca_pem`
/// (a config's `ca_file`) when given. Also used by `lectern-upload`'s S3 target.
pub fn agent(connect: Duration, read: Duration, overall: Duration, ca_pem: Option<&[u8]>) -> Agent {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(pem) = ca_pem {
        // The config checked that the file holds a certificate; one that does not parse is
        // skipped, and with none left every handshake fails (never an unverified connection).
        let certs: Vec<_> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Agent::config_builder()
        .tls_config(tls.build())
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_connect(Some(connect))
        .timeout_per_read(Some(read))
        .timeout_per_write(Some(read))
        .timeout_global(Some(overall))
        .user_agent(concat!("lectern/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// The path and query of a URL, which Digest signs as `uri`.
fn request_uri(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

/// Percent-encodes a path segment or query value (RFC 3986 unreserved characters stay).
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Client {
    /// A client for `agent_name` (already validated by the config) with the `[opencast]` settings.
    pub fn new(cfg: &OpencastConfig, agent_name: &str) -> Client {
        Client {
            http: agent(cfg.connect_timeout, cfg.read_timeout, cfg.request_timeout, cfg.ca_pem.as_deref()),
            upload: agent(cfg.connect_timeout, cfg.read_timeout, cfg.upload_timeout, cfg.ca_pem.as_deref()),
            cfg: cfg.clone(),
            agent_name: agent_name.to_owned(),
            digest: None,
            endpoints: None,
            upload_services: None,
        }
    }

    /// The endpoints, discovering them on first use (and again after [`Client::forget_endpoints`]).
    pub fn endpoints(&mut self) -> Result<Endpoints> {
        if let Some(e) = &self.endpoints {
            return Ok(e.clone());
        }
        let mut found = Vec::with_capacity(3);
        for s in Service::ALL {
            let over = match s {
                Service::CaptureAdmin => &self.cfg.capture_admin_url,
                Service::Scheduler => &self.cfg.scheduler_url,
                Service::Ingest => &self.cfg.ingest_url,
            };
            found.push(match over.clone() {
                Some(url) => url,
                None => self.discover(s)?,
            });
        }
        let e = Endpoints { capture_admin: found.remove(0), scheduler: found.remove(0), ingest: found.remove(0) };
        log::info!(target: "opencast", "endpoints: capture-admin {}, scheduler {}, ingest {}", e.capture_admin, e.scheduler, e.ingest);
        self.endpoints = Some(e.clone());
        Ok(e)
    }

    /// Drops discovered endpoints so the next call asks the registry again (after a service
    /// moved: repeated failures of one endpoint while discovery itself works).
    pub fn forget_endpoints(&mut self) {
        self.endpoints = None;
        self.upload_services = None;
    }

    /// Asks the service registry for one service and returns the first usable endpoint.
    pub fn discover(&mut self, s: Service) -> Result<String> {
        let url = format!("{}/services/available.json?serviceType={}", self.cfg.url, s.service_type());
        let a = self.expect_ok("GET", &url, Payload::None, false)?;
        let mut urls = discovery::parse_available(&url, &a.body)?;
        Ok(urls.swap_remove(0))
    }

    /// `POST {capture-admin}/agents/{name}`: the agent's state and address.
    pub fn set_agent_state(&mut self, state: AgentState) -> Result<()> {
        let url = format!("{}/agents/{}", self.endpoints()?.capture_admin, encode(&self.agent_name));
        let address = self.cfg.address.clone();
        self.expect_ok("POST", &url, Payload::Form(&[("state", state.as_str()), ("address", &address)]), false)
            .map(drop)
    }

    /// `POST {capture-admin}/agents/{name}/configuration`: the capabilities as a Java properties
    /// XML document (`capture.device.names`, `capture.device.<name>.flavor`, ...).
    pub fn set_agent_configuration(&mut self, properties: &BTreeMap<String, String>) -> Result<()> {
        let url = format!("{}/agents/{}/configuration", self.endpoints()?.capture_admin, encode(&self.agent_name));
        let xml = properties_xml(properties);
        self.expect_ok("POST", &url, Payload::Form(&[("configuration", &xml)]), false).map(drop)
    }

    /// `POST {capture-admin}/recordings/{id}`: one recording state.
    pub fn set_recording_state(&mut self, event_uid: &str, state: RecordingState) -> Result<()> {
        let url = format!("{}/recordings/{}", self.endpoints()?.capture_admin, encode(event_uid));
        self.expect_ok("POST", &url, Payload::Form(&[("state", state.as_str())]), false).map(drop)
    }

    /// `GET {scheduler}/calendars?agentid=NAME&cutoff=MS` with `If-None-Match` when an ETag is
    /// known. A 200 must be `text/calendar` and hold a whole VCALENDAR (a proxy that cut the
    /// answer short must not empty the schedule); parsing it is `lectern-schedule`'s job.
    pub fn fetch_calendar(&mut self, etag: Option<&str>, now_ms: i64) -> Result<CalendarFetch> {
        let cutoff = now_ms.saturating_add(self.cfg.calendar_cutoff.as_millis() as i64);
        let url = format!(
            "{}/calendars?agentid={}&cutoff={cutoff}",
            self.endpoints()?.scheduler,
            encode(&self.agent_name)
        );
        let a = self.send("GET", &url, &Payload::None, etag, false)?;
        let err = |detail: String| OpencastError::Calendar { url: url.clone(), detail };
        match a.status {
            304 => Ok(CalendarFetch::NotModified),
            200 => {
                if !a.content_type.to_ascii_lowercase().starts_with("text/calendar") {
                    return Err(err(format!("content type {:?}, expected text/calendar", a.content_type)));
                }
                if !is_complete_vcalendar(&a.body) {
                    return Err(err(format!("{} bytes without BEGIN:VCALENDAR ... END:VCALENDAR", a.body.len())));
                }
                Ok(CalendarFetch::Calendar { etag: a.etag, bytes: a.body })
            }
            _ => Err(status_error("GET", &url, &a)),
        }
    }

    /// `POST {ingest}/ingest/{workflow}`: any 2xx is success. Opencast answers with the workflow
    /// instance it started; a 2xx whose body lacks a media package (a proxy's page, an older
    /// server) still means the server accepted the ingest, so it is logged, never reported as a
    /// refusal (retrying it would ingest a second time). Returns the answer's text.
    pub(crate) fn final_ingest(&mut self, url: &str, fields: &[(&str, &str)]) -> Result<String> {
        let a = self.expect_ok("POST", url, Payload::Form(fields), false)?;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        if !text.contains("mediapackage") {
            log::warn!(target: "opencast", "POST {url}: HTTP {} without a media package in the answer ({}); taken as accepted", a.status, excerpt(&a.body));
        }
        Ok(text)
    }

    /// A call whose answer is a media package XML document.
    pub(crate) fn media_package(&mut self, method: &'static str, url: &str, p: Payload<'_>, upload: bool) -> Result<String> {
        let a = self.expect_ok(method, url, p, upload)?;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        if !text.contains("mediapackage") {
            return Err(OpencastError::Status { method, url: url.to_owned(), status: a.status, body: excerpt(&a.body), retry_after: None });
        }
        Ok(text)
    }

    /// Sends and accepts only 2xx.
    pub(crate) fn expect_ok(&mut self, method: &'static str, url: &str, p: Payload<'_>, upload: bool) -> Result<Answer> {
        let a = self.send(method, url, &p, None, upload)?;
        if (200..300).contains(&a.status) {
            Ok(a)
        } else {
            Err(status_error(method, url, &a))
        }
    }

    /// Sends one request with authentication: in Digest mode with the cached challenge (if any)
    /// and once more with a fresh one after a 401. Redirects to a login page and a second 401 are
    /// auth errors.
    pub(crate) fn send(&mut self, method: &'static str, url: &str, p: &Payload<'_>, etag: Option<&str>, upload: bool) -> Result<Answer> {
        for attempt in 0..2 {
            let authorization = match self.cfg.auth {
                OpencastAuth::Basic => Some(auth::basic(&self.cfg.username, &self.cfg.password)),
                OpencastAuth::Digest => self.digest.as_mut().map(|(c, nc)| {
                    *nc += 1;
                    c.authorization(&self.cfg.username, &self.cfg.password, method, request_uri(url), *nc, &auth::cnonce())
                }),
            };
            let mut resp = self.send_once(method, url, p, etag, authorization.as_deref(), upload)?;
            let status = resp.status().as_u16();
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if (300..400).contains(&status) && status != 304 {
                let location = header("location").unwrap_or_default();
                let detail = if location.to_ascii_lowercase().contains("login") {
                    format!("redirected to the login page {location}; Opencast wants Digest (opencast.auth = \"digest\")")
                } else {
                    format!("unexpected redirect {status} to {location:?}")
                };
                return Err(OpencastError::Auth { url: url.to_owned(), detail });
            }
            if status == 401 {
                let challenge = resp
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
                    .map(Challenge::parse);
                match (self.cfg.auth, challenge, attempt) {
                    (OpencastAuth::Digest, Some(c), 0) => {
                        self.digest = Some((c?, 0));
                        continue;
                    }
                    (_, _, _) => {
                        self.digest = None;
                        return Err(OpencastError::Auth { url: url.to_owned(), detail: "HTTP 401 with fresh credentials".to_owned() });
                    }
                }
            }
            let etag = header("etag");
            let retry_after = header("retry-after");
            let content_type = header("content-type").unwrap_or_default();
            let body = resp
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_vec()
                .map_err(|source| OpencastError::Transport { method, url: url.to_owned(), source })?;
            return Ok(Answer { status, etag, content_type, retry_after, body });
        }
        unreachable!("the second attempt always returns")
    }

    fn send_once(
        &self,
        method: &'static str,
        url: &str,
        p: &Payload<'_>,
        etag: Option<&str>,
        authorization: Option<&str>,
        upload: bool,
    ) -> Result<Response<Body>> {
        let transport = |source| OpencastError::Transport { method, url: url.to_owned(), source };
        let http = if upload { &self.upload } else { &self.http };
        macro_rules! common {
            ($b:expr) => {{
                let mut b = $b;
                if self.cfg.auth == OpencastAuth::Digest {
                    b = b.header("X-Requested-Auth", "Digest");
                }
                if let Some(a) = authorization {
                    b = b.header("Authorization", a);
                }
                if let Some(e) = etag {
                    b = b.header("If-None-Match", e);
                }
                b
            }};
        }
        match (method, p) {
            ("GET", Payload::None) => common!(http.get(url)).call().map_err(transport),
            ("POST", Payload::None) => common!(http.post(url)).send_empty().map_err(transport),
            ("POST", Payload::Form(fields)) => common!(http.post(url)).send_form(fields.iter().copied()).map_err(transport),
            ("POST", Payload::Stream { fields, file_field, filename, len, open }) => {
                let file = open().map_err(|source| OpencastError::Io { action: "read upload", path: Path::new(filename).to_owned(), source })?;
                let (body, total, content_type) = multipart_stream(fields, file_field, filename, file, *len);
                common!(http.post(url))
                    .header("Content-Type", content_type)
                    .header("Content-Length", total.to_string())
                    .send(SendBody::from_owned_reader(body))
                    .map_err(transport)
            }
            ("PUT", Payload::Put) => common!(http.put(url)).send_empty().map_err(transport),
            _ => unreachable!("no {method} request with this body is ever made"),
        }
    }
}

/// A streamed multipart/form-data body: the text fields and the file part's header from memory,
/// then `len` bytes of `file` read as ureq sends it, then the closing boundary. Returns the
/// reader, its exact length (for `Content-Length`) and the content type with the boundary.
fn multipart_stream<R: Read>(fields: &[(&str, &str)], file_field: &str, filename: &str, file: R, len: u64) -> (impl Read + use<R>, u64, String) {
    let boundary = format!("lectern-{}{}", auth::cnonce(), auth::cnonce());
    let mut head = String::new();
    for (name, value) in fields {
        head.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"));
    }
    let filename = filename.replace('"', "_");
    head.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{file_field}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = format!("\r\n--{boundary}--\r\n");
    let total = head.len() as u64 + len + tail.len() as u64;
    // `take` pins the file part to the length announced, even if the file grew meanwhile.
    let body = Cursor::new(head.into_bytes()).chain(file.take(len)).chain(Cursor::new(tail.into_bytes()));
    (body, total, format!("multipart/form-data; boundary={boundary}"))
}

/// Whether the bytes hold a VCALENDAR from its first to its last line (whitespace around
/// allowed), i.e. the answer was not cut short.
pub fn is_complete_vcalendar(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    let t = t.strip_prefix('\u{feff}').unwrap_or(t);
    t.get(..15).is_some_and(|s| s.eq_ignore_ascii_case("BEGIN:VCALENDAR"))
        && t.len() >= 13
        && t[t.len() - 13..].eq_ignore_ascii_case("END:VCALENDAR")
}

pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) fn status_error(method: &'static str, url: &str, a: &Answer) -> OpencastError {
    OpencastError::Status { method, url: url.to_owned(), status: a.status, body: excerpt(&a.body), retry_after: a.retry_after.clone() }
}

/// A Java properties XML document (`java.util.Properties.storeToXML`), which capture-admin reads.
fn properties_xml(p: &BTreeMap<String, String>) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE properties SYSTEM \"http://java.sun.com/dtd/properties.dtd\">\n<properties>\n",
    );
    for (k, v) in p {
        x.push_str(&format!("<entry key=\"{}\">{}</entry>\n", esc(k), esc(v)));
    }
    x.push_str("</properties>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcalendar_completeness() {
        for (body, want) in [
            ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", true),
            ("\u{feff}begin:vcalendar\nend:vcalendar", true),
            ("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\n", false),
            ("<html>login</html>", false),
            ("", false),
            ("END:VCALENDAR", false),
        ] {
            assert_eq!(is_complete_vcalendar(body.as_bytes()), want, "{body:?}");
        }
    }

    #[test]
    fn uris_and_encoding() {
        assert_eq!(request_uri("https://oc.example.edu:8443/a/b?x=1"), "/a/b?x=1");
        assert_eq!(request_uri("http://oc"), "/");
        assert_eq!(encode("room 101/ä"), "room%20101%2F%C3%A4");
        assert_eq!(encode("lectern-1.a_b~"), "lectern-1.a_b~");
    }

    #[test]
    fn properties_are_escaped() {
        let p = BTreeMap::from([("capture.device.names".to_owned(), "presenter".to_owned()), ("k&".to_owned(), "<v>".to_owned())]);
        let x = properties_xml(&p);
        assert!(x.contains("<entry key=\"capture.device.names\">presenter</entry>") && x.contains("<entry key=\"k&amp;\">&lt;v&gt;</entry>"), "{x}");
    }
}
