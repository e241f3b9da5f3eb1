//! The server: an accept thread, one thread per connection (at most [`MAX_CONNECTIONS`]), the
//! fault switches, authentication, and the routes of the Opencast endpoints a capture agent uses.
//!
//! Routes (service paths as a stock Opencast announces them in its service registry):
//! * `GET  /services/available.json?serviceType=org.opencastproject.{capture.admin,scheduler,ingest}`
//! * `POST /capture-admin/agents/{name}` (`state`, `address`)
//! * `POST /capture-admin/agents/{name}/configuration` (`configuration`: XML properties or JSON)
//! * `POST /capture-admin/recordings/{id}` (`state`)
//! * `GET  /recordings/calendars?agentid=…&cutoff=…` (ETag / `If-None-Match` → 304)
//! * `GET  /ingest/createMediaPackage`, `PUT /ingest/createMediaPackageWithID/{id}`,
//!   `POST /ingest/addDCCatalog`, `POST /ingest/addTrack`, `POST /ingest/addAttachment`,
//!   `POST /ingest/ingest[/{workflowDefinitionId}]`
//! * `POST /upload/newjob`, `POST /upload/job/{id}`, `GET /upload/job/{id}.json` ([`crate::fileupload`])
//! * `GET  /workflow/mediaPackage/{id}/instances.json`: one instance per ingest of that package
//! * `GET  /info/me.json`: the authenticated user
//! * `GET  /admin-ng/login.html` (where the 302 of an unauthenticated request points)
//! * `GET  /__double/state`: the [`Snapshot`] as JSON; not Opencast, never faulted, no auth.
//!
//! Lock order: `faults`, `calendar` and `one_shot` are each taken alone; `jobs` before `state`;
//! `state` is taken last and never held across I/O, so a slow client can never stall another
//! connection's bookkeeping.

use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::auth::{Authenticator, Verdict, LOGIN_PATH};
use crate::calendar::{self, xml_escape, Event};
use crate::form::{read_form, Form};
use crate::http::{percent_decode, read_head, write_response, Body, Head, HeadError, Response};
use crate::state::*;
use crate::{Down, Faults, MAX_CONNECTIONS};

/// Agent states Opencast's capture-admin accepts (`AgentState.KNOWN_STATES`).
pub const AGENT_STATES: &[&str] = &["idle", "shutting_down", "capturing", "uploading", "unknown", "offline", "error"];
/// Recording states Opencast accepts (`RecordingState.KNOWN_STATES`).
pub const RECORDING_STATES: &[&str] = &[
    "unknown", "capturing", "capture_finished", "capture_error", "manifest", "manifest_error", "manifest_finished", "compressing", "compressing_error", "uploading", "upload_finished", "upload_error",
];
/// Service type → path, as in a stock all-in-one Opencast (`fileupload` only with
/// [`crate::Config::fileupload`]).
const SERVICES: &[(&str, &str)] = &[
    ("capture.admin", "/capture-admin"),
    ("scheduler", "/recordings"),
    ("ingest", "/ingest"),
    ("fileupload", "/upload"),
    ("workflow", "/workflow"),
];
/// A handler's status that means: close the connection without any reply.
pub(crate) const CLOSE: u16 = 0;
/// How much of an unread request body is drained before replying; larger ones close the connection.
const DRAIN_LIMIT: u64 = 64 << 20;

pub(crate) enum CalendarSource {
    Events(Vec<Event>),
    Raw(Vec<u8>),
}

/// Counted faults, used up as requests meet them ([`crate::Double::lose_replies`],
/// [`crate::Double::cut_chunks`]).
#[derive(Default)]
pub(crate) struct OneShot {
    pub lose: Vec<(String, u32)>,
    pub cut: Option<(u64, u32)>,
}

impl OneShot {
    /// Whether the reply to a request for `path` is to be lost (using one up).
    fn take_lose(&mut self, path: &str) -> bool {
        let Some(i) = self.lose.iter().position(|(p, n)| *n > 0 && path.starts_with(p.as_str())) else { return false };
        self.lose[i].1 -= 1;
        if self.lose[i].1 == 0 {
            self.lose.remove(i);
        }
        true
    }
}

pub(crate) struct Shared {
    pub auth: Authenticator,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub services_as_list: bool,
    pub fold_inside_chars: bool,
    pub fileupload: bool,
    pub jobs: Mutex<std::collections::BTreeMap<String, crate::fileupload::JobInternal>>,
    pub one_shot: Mutex<OneShot>,
    pub faults: Mutex<Faults>,
    pub faults_changed: Condvar,
    pub calendar: Mutex<CalendarSource>,
    pub state: Mutex<Snapshot>,
    pub state_changed: Condvar,
    pub counter: AtomicU64,
    pub stop: AtomicBool,
    /// The listener is closed because of `Down::Refuse`.
    pub refusing: AtomicBool,
    pub connections: AtomicUsize,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Locks a mutex, ignoring poisoning: a panicking connection thread must not take the double down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let r = f(&mut lock(&self.state));
        self.state_changed.notify_all();
        r
    }

    /// A UUID-shaped id, as Opencast gives mediapackages.
    pub(crate) fn uuid(&self) -> String {
        let h = Sha256::digest(format!("{}:{}:{:?}", self.next_id(), now_ms(), self.addr));
        let x: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
    }
}

/// The accept loop; returns when `stop` is set (and a connection wakes it).
pub(crate) fn accept_loop(shared: Arc<Shared>, mut listener: Option<TcpListener>) {
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let refuse = matches!(lock(&shared.faults).down, Some(Down::Refuse));
        if refuse {
            // Close the listening socket so that connects are refused, until the fault clears;
            // `refusing` tells `Double::set_faults` that the switch has taken effect.
            listener = None;
            let mut f = lock(&shared.faults);
            shared.refusing.store(true, Ordering::SeqCst);
            shared.faults_changed.notify_all();
            while matches!(f.down, Some(Down::Refuse)) && !shared.stop.load(Ordering::SeqCst) {
                f = shared.faults_changed.wait(f).unwrap_or_else(|e| e.into_inner());
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => match TcpListener::bind(shared.addr) {
                Ok(l) => {
                    let _f = lock(&shared.faults);
                    shared.refusing.store(false, Ordering::SeqCst);
                    shared.faults_changed.notify_all();
                    listener.insert(l)
                }
                Err(e) => {
                    log::error!(target: "opencast_double", "cannot listen on {} again: {e}", shared.addr);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        match l.accept() {
            Ok((stream, _)) => {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                    log::warn!(target: "opencast_double", "more than {MAX_CONNECTIONS} connections: closing a new one");
                    continue;
                }
                let s = shared.clone();
                let spawned = std::thread::Builder::new().name("oc-double-conn".into()).spawn(move || {
                    serve_connection(&s, stream);
                    s.connections.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) => log::warn!(target: "opencast_double", "accept: {e}"),
        }
    }
}

/// Serves requests on one connection until it closes or a reply requires closing it.
fn serve_connection(shared: &Shared, stream: TcpStream) {
    // A client that goes silent mid-request must not pin a thread forever.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    // A reply is written as head and body: without NODELAY the body waits for the client's
    // delayed ACK of the head (tens of milliseconds per request).
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else { return };
    let mut r = BufReader::with_capacity(64 * 1024, read_half);
    let mut w = stream;
    while !shared.stop.load(Ordering::SeqCst) {
        let head = match read_head(&mut r) {
            Ok(h) => h,
            Err(HeadError::Closed) | Err(HeadError::Io(_)) => return,
            Err(HeadError::Bad(status, msg)) => {
                let _ = write_response(&mut w, &Response::text(status, msg.clone()), true, false, None);
                shared.update(|s| push_request(s, RequestEntry { at_ms: now_ms(), method: "?".into(), target: "?".into(), status, user: None, fault: None, error: Some(msg) }));
                return;
            }
        };
        if !serve_request(shared, head, &mut r, &mut w) {
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn push_request(s: &mut Snapshot, e: RequestEntry) {
    if s.requests.len() >= MAX_REQUESTS {
        s.requests.remove(0);
    }
    s.requests.push(e);
}

/// Serves one request; false if the connection must be closed afterwards.
fn serve_request(shared: &Shared, head: Head, r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> bool {
    let at_ms = now_ms();
    let debug = head.path.starts_with("/__double/");
    let faults = {
        let f = lock(&shared.faults).clone();
        let applies = !debug && f.only_path_prefix.as_deref().is_none_or(|p| head.path.starts_with(p));
        if applies { f } else { Faults::default() }
    };
    let log = |status: u16, user: Option<String>, fault: Option<&str>, error: Option<String>| {
        shared.update(|s| push_request(s, RequestEntry { at_ms, method: head.method.clone(), target: head.target.clone(), status, user, fault: fault.map(String::from), error }));
    };
    if matches!(faults.down, Some(Down::Drop)) {
        log(0, None, Some("down"), None);
        return false;
    }
    let mut body = match Body::new(r, &head) {
        Ok(b) => b,
        Err((status, msg)) => {
            let _ = write_response(w, &Response::text(status, msg.clone()), true, false, None);
            log(status, None, None, Some(msg));
            return false;
        }
    };
    let mut close = head.wants_close();
    let mut fault = None;
    let (mut resp, user) = if let Some(status) = faults.status {
        fault = Some("status");
        let r = Response::new(status, "text/html;charset=ISO-8859-1", format!("<html><body><h2>HTTP ERROR {status}</h2><p>injected by the Opencast double</p></body></html>"));
        (match faults.retry_after { Some(n) => r.with_header("Retry-After", n.to_string()), None => r }, None)
    } else {
        let (resp, user) = authenticate_and_route(shared, &head, &mut body, w);
        (resp, user)
    };
    // Whatever the handler left unread is drained, so that the reply reaches the client.
    let expect_continue = head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if !body.finished() {
        let drained = if expect_continue && body.read == 0 { false } else { body.drain(DRAIN_LIMIT).unwrap_or(false) };
        close |= !drained;
    }
    if !faults.delay.is_zero() {
        fault = Some("slow");
        std::thread::sleep(faults.delay);
    }
    if faults.garbage_body && (resp.status == 200 || !resp.body.is_empty()) {
        fault = Some("garbage");
        resp.body = b"\xff\xfe\x00<<<<not what you asked for\x00\x80\x81 {\"services\": [".repeat(7);
    }
    let mut truncate = None;
    if faults.truncate_calendar && resp.status == 200 && head.path == "/recordings/calendars" {
        fault = Some("truncated");
        truncate = Some(resp.body.len() / 2);
        close = true;
    }
    if resp.status == CLOSE {
        log(0, user, Some("cut"), None);
        return false;
    }
    if lock(&shared.one_shot).take_lose(&head.path) {
        // The request was handled and its effect committed; the answer never leaves.
        log(resp.status, user, Some("lost"), None);
        return false;
    }
    let error = (resp.status >= 400).then(|| String::from_utf8_lossy(&resp.body).into_owned());
    if let Some(e) = &error {
        log::info!(target: "opencast_double", "{} {} -> {}: {e}", head.method, head.target, resp.status);
    }
    let ok = write_response(w, &resp, close, head.method == "HEAD", truncate).is_ok();
    log(resp.status, user, fault, error);
    ok && !close
}

fn authenticate_and_route(shared: &Shared, head: &Head, body: &mut Body<'_>, w: &mut TcpStream) -> (Response, Option<String>) {
    if head.path == "/__double/state" {
        let json = serde_json::to_vec_pretty(&*lock(&shared.state)).unwrap_or_default();
        return (Response::new(200, "application/json", json), None);
    }
    if head.path == LOGIN_PATH {
        return (Response::new(200, "text/html;charset=UTF-8", "<html><head><title>Opencast – Login</title></head><body><form method=\"post\" action=\"/j_spring_security_check\"></form></body></html>"), None);
    }
    let verdict = shared.auth.check(&head.method, &head.target, head.header("authorization"), head.header("x-requested-auth"));
    let user = match verdict {
        Verdict::User(u) => u,
        Verdict::Challenge(challenge, why) => {
            return (Response::text(401, format!("authentication required: {why}")).with_header("WWW-Authenticate", challenge), None);
        }
        Verdict::Login => {
            let host = head.header("host").map(String::from).unwrap_or_else(|| shared.addr.to_string());
            return (Response::new(302, "text/html", "").with_header("Location", format!("http://{host}{LOGIN_PATH}")), None);
        }
    };
    if head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").and_then(|_| w.flush());
    }
    (route(shared, head, body, &user), Some(user))
}

/// The path's segments, each percent-decoded on its own (so `%2F` inside a name stays in it).
fn segments(head: &Head) -> Option<Vec<String>> {
    let raw = head.target.split('?').next().unwrap_or("");
    raw.split('/').skip(1).map(percent_decode).collect()
}

fn bad(msg: impl Into<String>) -> Response {
    Response::text(400, msg)
}

fn route(shared: &Shared, head: &Head, body: &mut Body<'_>, user: &str) -> Response {
    let Some(seg) = segments(head) else { return bad("bad percent-encoding in the path") };
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let method = head.method.as_str();
    let mut form = || -> Result<Form, Response> {
        let dir = shared.dir.join("uploads");
        read_form(body, head.header("content-type"), &dir, &mut || shared.next_id()).map_err(|(s, m)| Response::text(s, m))
    };
    let result = match (method, seg.as_slice()) {
        ("GET", ["services", "available.json"]) => Ok(services(shared, head)),
        ("POST", ["capture-admin", "agents", name]) => form().map(|f| agent_state(shared, name, &f)),
        ("POST", ["capture-admin", "agents", name, "configuration"]) => form().map(|f| agent_configuration(shared, name, &f)),
        ("POST", ["capture-admin", "recordings", id]) => form().map(|f| recording_state(shared, id, &f)),
        ("GET", ["recordings", "calendars"]) => Ok(calendar(shared, head)),
        ("GET", ["ingest", "createMediaPackage"]) => Ok(create_mediapackage(shared)),
        ("POST", ["ingest", "addDCCatalog"]) => form().map(|f| add_catalog(shared, &f)),
        ("POST", ["ingest", "addTrack"]) => form().map(|f| add_file_element(shared, f, FileElement::Track)),
        ("PUT", ["ingest", "createMediaPackageWithID", id]) => Ok(create_mediapackage_with_id(shared, id)),
        ("POST", ["ingest", "addAttachment"]) => form().map(|f| add_file_element(shared, f, FileElement::Attachment)),
        ("POST", ["upload", "newjob"]) => form().map(|f| crate::fileupload::new_job(shared, &f)),
        ("POST", ["upload", "job", id]) => Ok(crate::fileupload::accept_chunk(shared, head, body, id)),
        ("GET", ["upload", "job", file]) if file.ends_with(".json") => Ok(crate::fileupload::job_json(shared, file.trim_end_matches(".json"))),
        ("GET", ["workflow", "mediaPackage", id, "instances.json"]) => Ok(workflow_instances(shared, id)),
        ("GET", ["info", "me.json"]) => Ok(Response::new(200, "application/json", serde_json::json!({ "user": { "username": user }, "roles": ["ROLE_CAPTURE_AGENT"], "org": { "id": "mh_default_org" } }).to_string())),
        ("POST", ["ingest", "ingest"]) => form().map(|f| ingest(shared, None, &f)),
        ("POST", ["ingest", "ingest", wd]) => form().map(|f| ingest(shared, Some(wd), &f)),
        _ => Ok(match allowed_method(&seg) {
            Some(m) => Response::text(405, format!("{} takes {m}, not {method}", head.path)).with_header("Allow", m),
            None => Response::text(404, format!("{} is not served by the Opencast double", head.path)),
        }),
    };
    result.unwrap_or_else(|r| r)
}

/// The method a known endpoint takes (JAX-RS answers a known path with the wrong method with a 405).
fn allowed_method(seg: &[&str]) -> Option<&'static str> {
    match seg {
        ["services", "available.json"] | ["recordings", "calendars"] | ["ingest", "createMediaPackage"] | ["info", "me.json"] => Some("GET"),
        ["workflow", "mediaPackage", _, "instances.json"] => Some("GET"),
        ["ingest", "createMediaPackageWithID", _] => Some("PUT"),
        ["upload", "newjob"] | ["ingest", "addAttachment"] => Some("POST"),
        ["upload", "job", f] if f.ends_with(".json") => Some("GET"),
        ["upload", "job", _] => Some("POST"),
        ["capture-admin", "agents", _] | ["capture-admin", "agents", _, "configuration"] | ["capture-admin", "recordings", _] => Some("POST"),
        ["ingest", "addDCCatalog" | "addTrack" | "ingest"] | ["ingest", "ingest", _] => Some("POST"),
        _ => None,
    }
}

fn services(shared: &Shared, head: &Head) -> Response {
    let Some(ty) = head.query("serviceType").filter(|t| !t.trim().is_empty()) else {
        return bad("serviceType is required");
    };
    let base = format!("http://{}", shared.addr);
    let entry = |host: &str, path: &str, online: bool, active: bool| {
        serde_json::json!({
            "type": ty, "host": host, "path": path, "active": active, "online": online, "maintenance": false,
            "jobproducer": ty.ends_with("ingest"), "onlinefrom": "2026-01-01T00:00:00Z", "service_state": "NORMAL",
            "state_changed": "2026-01-01T00:00:00Z", "error_state_trigger": 0, "warning_state_trigger": 0,
        })
    };
    let found = SERVICES.iter().filter(|(k, _)| shared.fileupload || *k != "fileupload").find(|(k, _)| ty.strip_prefix("org.opencastproject.") == Some(k));
    let services = match found {
        None => serde_json::json!({}),
        Some((_, path)) if shared.services_as_list => {
            // An offline node and an inactive one first, as on a cluster with a node down: a client
            // that ignores `online`/`active` picks a dead host.
            serde_json::json!({ "service": [entry("http://127.0.0.1:9", path, false, true), entry("http://127.0.0.1:9", path, true, false), entry(&base, path, true, true)] })
        }
        Some((_, path)) => serde_json::json!({ "service": entry(&base, path, true, true) }),
    };
    Response::new(200, "application/json", serde_json::json!({ "services": services }).to_string())
}

fn agent_state(shared: &Shared, name: &str, f: &Form) -> Response {
    let state = f.get("state").unwrap_or("");
    if name.trim().is_empty() {
        return bad("the agent name is empty");
    }
    if !AGENT_STATES.contains(&state) {
        return bad(format!("{state:?} is not a known agent state (known: {})", AGENT_STATES.join(", ")));
    }
    let address = f.get("address").map(String::from);
    let changed = shared.update(|s| {
        let last = s.agent_states.iter().rev().find(|a| a.agent == name);
        let changed = last.is_none_or(|l| l.state != state || l.address != address);
        s.agent_states.push(AgentState { at_ms: now_ms(), agent: name.into(), state: state.into(), address });
        changed
    });
    // Opencast answers an unchanged state with an empty 200.
    Response::new(200, "text/html", if changed { format!("{name} set to {state}") } else { String::new() })
}

fn agent_configuration(shared: &Shared, name: &str, f: &Form) -> Response {
    let Some(conf) = f.get("configuration").filter(|c| !c.trim().is_empty()) else {
        return bad("the configuration is blank");
    };
    let conf = conf.trim();
    let (props, json) = if conf.starts_with('{') {
        match serde_json::from_str::<std::collections::BTreeMap<String, String>>(conf) {
            Ok(p) => (p, true),
            Err(e) => return bad(format!("configuration is not a JSON object of strings: {e}")),
        }
    } else {
        match parse_xml_properties(conf) {
            Ok(p) => (p, false),
            Err(e) => return bad(format!("configuration is not Java XML properties: {e}")),
        }
    };
    shared.update(|s| s.agent_configs.push(AgentConfig { at_ms: now_ms(), agent: name.into(), properties: props.clone() }));
    if json {
        Response::new(200, "application/json", serde_json::to_string(&props).unwrap_or_default())
    } else {
        let items: String = props.iter().map(|(k, v)| format!("<item key=\"{}\">{}</item>", xml_escape(k), xml_escape(v))).collect();
        Response::new(200, "text/xml", format!("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><properties-response><properties>{items}</properties></properties-response>"))
    }
}

/// Parses `<properties><entry key="k">v</entry>…</properties>` (java.util.Properties XML).
pub fn parse_xml_properties(xml: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let start = xml.find("<properties").ok_or("no <properties> element")?;
    let end = xml.rfind("</properties>").ok_or("no </properties> end tag")?;
    let mut out = std::collections::BTreeMap::new();
    let mut rest = &xml[start..end];
    while let Some(i) = rest.find("<entry") {
        rest = &rest[i + 6..];
        let tag_end = rest.find('>').ok_or("unterminated <entry> tag")?;
        let attrs = &rest[..tag_end];
        let key = attrs.split("key=\"").nth(1).and_then(|k| k.split('"').next()).ok_or("an <entry> without key=\"…\"")?;
        let (value, after) = if attrs.ends_with('/') {
            (String::new(), &rest[tag_end + 1..])
        } else {
            let body = &rest[tag_end + 1..];
            let close = body.find("</entry>").ok_or(format!("entry {key:?} has no </entry>"))?;
            (xml_unescape(&body[..close]), &body[close + 8..])
        };
        out.insert(xml_unescape(key), value);
        rest = after;
    }
    Ok(out)
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn known_uids(shared: &Shared) -> Vec<String> {
    match &*lock(&shared.calendar) {
        CalendarSource::Events(evs) => evs.iter().map(|e| e.uid.clone()).collect(),
        CalendarSource::Raw(raw) => calendar::uids(raw),
    }
}

fn recording_state(shared: &Shared, id: &str, f: &Form) -> Response {
    let state = f.get("state").unwrap_or("");
    if id.is_empty() || state.is_empty() {
        return bad("recording id and state are required");
    }
    if !known_uids(shared).iter().any(|u| u == id) {
        return Response::text(404, format!("recording {id:?} is not a scheduled event"));
    }
    if !RECORDING_STATES.contains(&state) {
        return bad(format!("{state:?} is not a known recording state (known: {})", RECORDING_STATES.join(", ")));
    }
    shared.update(|s| s.recording_states.push(RecordingState { at_ms: now_ms(), id: id.into(), state: state.into() }));
    Response::new(200, "text/plain", format!("{id} set to {state}"))
}

fn calendar(shared: &Shared, head: &Head) -> Response {
    let agent = head.query("agentid").filter(|a| !a.trim().is_empty());
    let cutoff_ms = match head.query("cutoff").map(|c| c.parse::<i64>()) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return bad(format!("cutoff {:?} is not Unix milliseconds", head.query("cutoff").unwrap_or(""))),
    };
    let cutoff = match cutoff_ms.map(|c| Utc.timestamp_millis_opt(c).single()) {
        Some(None) => return bad("cutoff is out of range"),
        Some(Some(t)) => Some(t),
        None => None,
    };
    let body = match &*lock(&shared.calendar) {
        CalendarSource::Raw(raw) => raw.clone(),
        CalendarSource::Events(evs) => match agent {
            Some(a) => calendar::render(evs, a, cutoff, shared.fold_inside_chars),
            None => {
                // Without agentid Opencast returns every agent's events.
                let all: Vec<Event> = evs.iter().map(|e| Event { agent: String::new(), ..e.clone() }).collect();
                calendar::render(&all, "", cutoff, shared.fold_inside_chars)
            }
        },
    };
    let etag = calendar::etag(&body);
    let inm = head.header("if-none-match").map(String::from);
    // Opencast compares If-None-Match verbatim with the agent's last-modified hash, and only when
    // an agent id is given.
    let status = if agent.is_some() && inm.as_deref() == Some(etag.as_str()) { 304 } else { 200 };
    shared.update(|s| s.calendar_fetches.push(CalendarFetch { at_ms: now_ms(), agent: agent.map(String::from), cutoff_ms, if_none_match: inm, status, etag: etag.clone() }));
    if status == 304 {
        return Response { status, headers: vec![("ETag".into(), etag)], body: Vec::new() };
    }
    let resp = Response::new(200, "text/calendar; charset=UTF-8", body);
    if agent.is_some() { resp.with_header("ETag", etag) } else { resp }
}

pub(crate) fn mp_xml(shared: &Shared, mp: &MediaPackage) -> String {
    let start = Utc.timestamp_millis_opt(mp.created_ms as i64).single().map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
    let base = format!("http://{}/files/mediapackage/{}", shared.addr, mp.id);
    let tracks: String = mp
        .tracks
        .iter()
        .map(|t| format!("<track id=\"{}\" type=\"{}\"><mimetype>{}</mimetype><tags/><url>{base}/{}/{}</url><checksum type=\"sha256\">{}</checksum><live>false</live></track>", t.id, xml_escape(&t.flavor), mime_of(&t.filename), t.id, xml_escape(&t.filename), t.sha256))
        .collect();
    let catalogs: String = mp
        .catalogs
        .iter()
        .map(|c| format!("<catalog id=\"{}\" type=\"{}\"><mimetype>text/xml</mimetype><tags/><url>{base}/{}/dublincore.xml</url></catalog>", c.id, xml_escape(&c.flavor), c.id))
        .collect();
    let attachments: String = mp
        .attachments
        .iter()
        .map(|a| format!("<attachment id=\"{}\" type=\"{}\"><mimetype>{}</mimetype><tags/><url>{base}/{}/{}</url><checksum type=\"sha256\">{}</checksum></attachment>", a.id, xml_escape(&a.flavor), mime_of(&a.filename), a.id, xml_escape(&a.filename), a.sha256))
        .collect();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><mediapackage xmlns=\"http://mediapackage.opencastproject.org\" id=\"{}\" start=\"{start}\"><media>{tracks}</media><metadata>{catalogs}</metadata><attachments>{attachments}</attachments><publications/></mediapackage>", mp.id)
}

fn mime_of(filename: &str) -> &'static str {
    match filename.rsplit('.').next().map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("mp4") | Some("m4v") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mp3") => "audio/mpeg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn new_mediapackage(id: &str) -> MediaPackage {
    MediaPackage { id: id.to_owned(), created_ms: now_ms(), creations: 1, catalogs: Vec::new(), tracks: Vec::new(), attachments: Vec::new(), ingested: None }
}

/// The index of media package `id`, added (as Opencast accepts any well-formed package) if new.
pub(crate) fn find_or_add_mediapackage(s: &mut Snapshot, id: &str) -> usize {
    match s.mediapackages.iter().position(|m| m.id == id) {
        Some(i) => i,
        None => {
            s.mediapackages.push(MediaPackage { creations: 0, ..new_mediapackage(id) });
            s.mediapackages.len() - 1
        }
    }
}

/// `createMediaPackageWithID/{id}` "overrides an existing media package": its elements are
/// dropped, unless it was ingested (the double keeps what was ingested; the count of creations
/// shows the client made it again).
fn create_mediapackage_with_id(shared: &Shared, id: &str) -> Response {
    if id.trim().is_empty() {
        return bad("the media package id is empty");
    }
    let mp = shared.update(|s| {
        let i = find_or_add_mediapackage(s, id);
        let mp = &mut s.mediapackages[i];
        mp.creations += 1;
        if mp.ingested.is_none() {
            *mp = MediaPackage { creations: mp.creations, ..new_mediapackage(id) };
        }
        mp.clone()
    });
    Response::new(200, "text/xml", mp_xml(shared, &MediaPackage { catalogs: Vec::new(), tracks: Vec::new(), attachments: Vec::new(), ..mp }))
}

fn workflow_instances(shared: &Shared, id: &str) -> Response {
    let s = lock(&shared.state);
    let wf: Vec<serde_json::Value> = s
        .mediapackages
        .iter()
        .filter(|m| m.id == id)
        .filter_map(|m| m.ingested.as_ref())
        .map(|i| serde_json::json!({ "id": i.workflow_id, "state": "RUNNING", "template": i.workflow_definition_id, "mediapackage": { "id": id } }))
        .collect();
    let body = if wf.is_empty() { serde_json::json!({ "workflows": { "totalCount": 0 } }) } else { serde_json::json!({ "workflows": { "totalCount": wf.len(), "workflow": wf } }) };
    Response::new(200, "application/json", body.to_string())
}

fn create_mediapackage(shared: &Shared) -> Response {
    let mp = new_mediapackage(&shared.uuid());
    let xml = mp_xml(shared, &mp);
    shared.update(|s| s.mediapackages.push(mp));
    Response::new(200, "text/xml", xml)
}

/// The id of a mediapackage XML's root element, or why it is not one.
pub fn mediapackage_id(xml: &str) -> Result<String, String> {
    let mut rest = xml.trim_start();
    // Skip the XML declaration, comments and processing instructions before the root element.
    while rest.starts_with("<?") || rest.starts_with("<!") {
        let end = rest.find('>').ok_or("unterminated XML prolog")?;
        rest = rest[end + 1..].trim_start();
    }
    let tag = rest.strip_prefix('<').ok_or("mediaPackage is not XML")?;
    let tag = &tag[..tag.find('>').ok_or("unterminated root element")?];
    let name = tag.split_whitespace().next().unwrap_or("");
    if name.rsplit(':').next() != Some("mediapackage") {
        return Err(format!("root element is <{name}>, not <mediapackage>"));
    }
    tag.split(" id=\"").nth(1).and_then(|s| s.split('"').next()).map(String::from).filter(|s| !s.is_empty()).ok_or("mediapackage has no id attribute".into())
}

/// Finds (or, as Opencast would accept any well-formed mediapackage, creates) the package.
fn with_mediapackage(shared: &Shared, f: &Form, change: impl FnOnce(&mut MediaPackage) -> Result<(), String>) -> Response {
    let Some(xml) = f.get("mediaPackage") else { return bad("mediaPackage is required") };
    let id = match mediapackage_id(xml) {
        Ok(id) => id,
        Err(e) => return bad(format!("mediaPackage is not a valid media package: {e}")),
    };
    let res = shared.update(|s| {
        let i = find_or_add_mediapackage(s, &id);
        change(&mut s.mediapackages[i]).map(|_| s.mediapackages[i].clone())
    });
    match res {
        Ok(mp) => Response::new(200, "text/xml", mp_xml(shared, &mp)),
        Err(e) => bad(e),
    }
}

fn valid_flavor(f: &str) -> bool {
    let mut p = f.split('/');
    matches!((p.next(), p.next(), p.next()), (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() && !f.contains(char::is_whitespace))
}

fn add_catalog(shared: &Shared, f: &Form) -> Response {
    let flavor = f.get("flavor").unwrap_or("dublincore/episode").to_owned();
    if !valid_flavor(&flavor) {
        return bad(format!("flavor {flavor:?} is not type/subtype"));
    }
    let Some(dc) = f.get("dublinCore") else { return bad("dublinCore is required") };
    if !dc.trim_start().starts_with('<') || !dc.contains("http://www.opencastproject.org/xsd/1.0/dublincore/") {
        return bad("dublinCore is not a Dublin Core catalog in Opencast's namespace");
    }
    let id = format!("catalog-{}", shared.next_id());
    with_mediapackage(shared, f, |mp| {
        mp.catalogs.push(Catalog { id, flavor, content: dc.to_owned() });
        Ok(())
    })
}

/// The kinds of file element `addTrack` and `addAttachment` add.
#[derive(Clone, Copy)]
enum FileElement {
    Track,
    Attachment,
}

/// `addTrack` / `addAttachment`: one file part (already on disk) and a flavor, added to the
/// media package; the file is removed again if the request is refused.
fn add_file_element(shared: &Shared, f: Form, kind: FileElement) -> Response {
    let (call, prefix) = match kind {
        FileElement::Track => ("addTrack", "track"),
        FileElement::Attachment => ("addAttachment", "attachment"),
    };
    let flavor = f.get("flavor").unwrap_or("").to_owned();
    let remove_all = |f: &Form| f.files.iter().for_each(|p| drop(std::fs::remove_file(&p.path)));
    if !valid_flavor(&flavor) {
        remove_all(&f);
        return bad(format!("flavor {flavor:?} is not type/subtype"));
    }
    let [file] = f.files.as_slice() else {
        remove_all(&f);
        return bad(format!("{call} needs exactly one file part, got {}", f.files.len()));
    };
    let element = Track { id: format!("{prefix}-{}", shared.next_id()), flavor, filename: file.filename.clone(), bytes: file.bytes, sha256: file.sha256.clone(), path: file.path.clone() };
    let resp = with_mediapackage(shared, &f, |mp| {
        match kind {
            FileElement::Track => mp.tracks.push(element),
            FileElement::Attachment => mp.attachments.push(element),
        }
        Ok(())
    });
    if resp.status != 200 {
        remove_all(&f);
    }
    resp
}

fn ingest(shared: &Shared, wd: Option<&str>, f: &Form) -> Response {
    let Some(xml) = f.get("mediaPackage") else { return bad("mediaPackage is required") };
    let elements: Vec<String> = xml.split(" id=\"").skip(1).filter_map(|s| s.split('"').next()).map(String::from).collect();
    let workflow_definition_id = wd.map(String::from).or_else(|| f.get("workflowDefinitionId").map(String::from));
    let workflow_id = shared.next_id();
    let params: Vec<(String, String)> = f.fields.iter().filter(|(k, _)| !["mediaPackage", "workflowDefinitionId", "workflowInstanceId"].contains(&k.as_str())).cloned().collect();
    let info = Ingested { at_ms: now_ms(), workflow_definition_id: workflow_definition_id.clone(), workflow_instance_id: f.get("workflowInstanceId").map(String::from), params, elements, workflow_id };
    let resp = with_mediapackage(shared, f, |mp| match mp.ingested {
        Some(_) => Err(format!("mediapackage {} was already ingested", mp.id)),
        None => {
            mp.ingested = Some(info);
            Ok(())
        }
    });
    if resp.status != 200 {
        return resp;
    }
    // Opencast answers with the workflow instance it started, the mediapackage inside.
    let mp = String::from_utf8_lossy(&resp.body).replace("<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>", "");
    Response::new(
        200,
        "text/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><workflow xmlns=\"http://workflow.opencastproject.org\" id=\"{workflow_id}\" state=\"RUNNING\"><template>{}</template>{mp}</workflow>",
            xml_escape(workflow_definition_id.as_deref().unwrap_or("default"))
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mediapackage_ids() {
        let fixture = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/fixtures/opencast/manifest.xml")).ok();
        if let Some(x) = fixture {
            assert_eq!(mediapackage_id(&x).unwrap(), "00000/1");
        }
        assert_eq!(mediapackage_id("<?xml version=\"1.0\"?>\n<mediapackage xmlns=\"x\" id=\"abc\" start=\"s\"><media/></mediapackage>").unwrap(), "abc");
        for (bad, why) in [("hello", "not XML"), ("<workflow id=\"1\"/>", "not <mediapackage>"), ("<mediapackage start=\"x\">", "no id")] {
            let e = mediapackage_id(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn xml_properties() {
        let p = parse_xml_properties("<?xml version=\"1.0\"?><!DOCTYPE properties SYSTEM \"http://java.sun.com/dtd/properties.dtd\"><properties><entry key=\"capture.device.names\">presenter,presentation</entry><entry key=\"a&amp;b\">x &lt; y</entry><entry key=\"empty\"/></properties>").unwrap();
        assert_eq!(p["capture.device.names"], "presenter,presentation");
        assert_eq!(p["a&b"], "x < y");
        assert_eq!(p["empty"], "");
        assert!(parse_xml_properties("key=value").unwrap_err().contains("<properties>"));
        assert!(parse_xml_properties("<properties><entry>v</entry></properties>").unwrap_err().contains("key"));
    }

    #[test]
    fn flavors() {
        for (f, ok) in [("presenter/source", true), ("dublincore/episode", true), ("presenter", false), ("a/b/c", false), ("/x", false), ("a /b", false)] {
            assert_eq!(valid_flavor(f), ok, "{f}");
        }
    }
}
