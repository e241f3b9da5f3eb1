//! A test double of Opencast's capture-agent REST API, serving real HTTP on loopback.
//!
//! Opencast itself cannot run in our CI, so this crate stands in for it. It is built from
//! Opencast's *published* REST API and its endpoint sources (`CaptureAgentStateRestService`,
//! `SchedulerRestService.getCalendar`, the service registry, `IngestRestService`), not from any
//! one client's expectations, and it is validated against an independent real client: the
//! `tests/pyca.rs` cross-check runs one full pyca 4.4 cycle (register, calendar, capture with
//! ffmpeg, ingest) against it. If pyca cannot complete, the double is wrong.
//!
//! What it covers:
//! * service discovery (`/services/available.json`; `services.service` as one object, or as a
//!   list with an offline and an inactive node first, [`Config::services_as_list`]);
//! * agent state, agent configuration (XML properties or JSON) and recording states, with
//!   Opencast's status codes: 400 for unknown states or blank input, 404 for a recording id that
//!   is not a scheduled event;
//! * the calendar (RFC 5545, CRLF, 75-octet folding — optionally through multi-byte characters —,
//!   base64 attachments, `cutoff`, ETag and `If-None-Match` → 304), from [`Event`]s or raw bytes;
//! * ingest: `createMediaPackage`, `createMediaPackageWithID/{id}`, `addDCCatalog`, `addTrack`
//!   and `addAttachment` (multipart, streamed to disk with SHA-256), `ingest[/{workflow}]` with
//!   `workflowInstanceId` and workflow parameters;
//! * the chunked upload service (`FileUploadRestService`, [`fileupload`]): `newjob`, chunks with
//!   Opencast's rules (numbered from 0, only the next one, exact sizes, "Job is locked" while an
//!   earlier request of the job is held, a cut chunk leaves the job where it was), the job as
//!   JSON, and the track in the job's media package after the last chunk; discovery lists it
//!   unless [`Config::fileupload`] is off;
//! * the ingest lookup `GET /workflow/mediaPackage/{id}/instances.json` (one instance per ingest)
//!   and `GET /info/me.json`;
//! * authentication: Basic, or Digest (MD5, `qop=auth`, nonce expiry) behind
//!   `X-Requested-Auth: Digest`, and the 302 to the login page without it ([`auth`]);
//! * fault switches that tests flip at any time ([`Faults`]): connections refused or dropped,
//!   slow replies, any status code, a garbage body, a calendar cut off mid-body; and counted
//!   one-shot faults: a reply lost after the request was committed
//!   ([`Double::lose_replies`]), a chunk upload cut after N body bytes ([`Double::cut_chunks`]),
//!   an upload job held locked ([`Double::lock_upload_job`]);
//! * inspection: a [`Snapshot`] of everything received, and [`Double::wait_for`].
//!
//! What it does not cover: the rest of Opencast (no workflows run, no files are served back, no
//! admin UI), session cookies, HTTPS, `addTrack` by URL, chunked ingest (`addPartialTrack`),
//! upload jobs without a media package (the "uploaded" collection), job expiry, the XML form of
//! an upload job (`/upload/job/{id}.xml`; the JSON carries the media package as an XML string),
//! ingest of zipped mediapackages, scheduling through the API (tests set the calendar directly),
//! recurring events in generated calendars (a raw calendar may contain anything), and time zones
//! other than UTC in generated calendars.

pub mod auth;
pub mod calendar;
pub mod fileupload;
pub mod form;
pub mod http;
pub mod server;
pub mod state;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use auth::AuthMode;
pub use calendar::Event;
pub use state::Snapshot;

use server::{lock, CalendarSource, Shared};

/// At most this many connections are served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;

/// The double's errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be opened.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind { port: u16, source: std::io::Error },
    /// The upload directory could not be created.
    #[error("cannot create the upload directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// An `--event` spec was malformed.
    #[error("bad event {0}")]
    BadEvent(String),
    /// The accept thread could not be started.
    #[error("cannot start the accept thread: {0}")]
    Thread(std::io::Error),
}

/// How to start a double.
#[derive(Debug, Clone)]
pub struct Config {
    pub auth: AuthMode,
    /// user → password.
    pub users: BTreeMap<String, String>,
    /// 0 picks a free port.
    pub port: u16,
    /// Where uploaded tracks are stored; a temporary directory (removed on drop) if `None`.
    pub dir: Option<PathBuf>,
    /// Answer service discovery with a list whose first entries are an offline and an inactive
    /// node (on a dead port), instead of one object.
    pub services_as_list: bool,
    /// Fold generated calendars inside multi-byte characters.
    pub fold_inside_chars: bool,
    /// Register the chunked upload service (`org.opencastproject.fileupload` at `/upload`) in
    /// discovery. Off: discovery lists none (the endpoints still answer), as on an Opencast
    /// without the module, so clients fall back to `addTrack`.
    pub fileupload: bool,
}

impl Config {
    /// Digest authentication with one user, as a production Opencast is usually set up for agents.
    pub fn digest(user: &str, password: &str) -> Config {
        Config { auth: AuthMode::Digest, users: BTreeMap::from([(user.into(), password.into())]), port: 0, dir: None, services_as_list: false, fold_inside_chars: false, fileupload: true }
    }

    /// Basic authentication with one user.
    pub fn basic(user: &str, password: &str) -> Config {
        Config { auth: AuthMode::Basic, ..Config::digest(user, password) }
    }
}

/// How the double is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// The listening socket is closed: connects are refused.
    Refuse,
    /// Connections are accepted, the request head read, then closed without a reply.
    Drop,
}

/// Fault switches; `Faults::default()` is a healthy server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub down: Option<Down>,
    /// Delay before every reply.
    pub delay: Duration,
    /// Reply with this status (e.g. 500, 503) without handling the request at all.
    pub status: Option<u16>,
    /// With `status`: send `Retry-After: N` (seconds) with it.
    pub retry_after: Option<u32>,
    /// Handle the request, then replace the reply body with bytes that are neither XML, JSON nor
    /// iCalendar (and not UTF-8).
    pub garbage_body: bool,
    /// Send calendars with their full `Content-Length` announced but only half the body, then close.
    pub truncate_calendar: bool,
    /// Apply the faults only to request paths starting with this (e.g. `/ingest/`).
    pub only_path_prefix: Option<String>,
}

/// A running double. Dropping it stops the server.
pub struct Double {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

impl Double {
    /// Starts a double on 127.0.0.1 with an empty calendar.
    pub fn start(config: Config) -> Result<Double, Error> {
        let listener = TcpListener::bind(("127.0.0.1", config.port)).map_err(|source| Error::Bind { port: config.port, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { port: config.port, source })?;
        let (tmp, dir) = match &config.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new().prefix("opencast-double-").tempdir().map_err(|source| Error::Dir { path: std::env::temp_dir(), source })?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| Error::Dir { path: dir.clone(), source })?;
        let shared = Arc::new(Shared {
            auth: auth::Authenticator::new(config.auth, config.users.clone()),
            dir,
            addr,
            services_as_list: config.services_as_list,
            fold_inside_chars: config.fold_inside_chars,
            fileupload: config.fileupload,
            jobs: Mutex::new(BTreeMap::new()),
            one_shot: Mutex::new(server::OneShot::default()),
            faults: Mutex::new(Faults::default()),
            faults_changed: Condvar::new(),
            calendar: Mutex::new(CalendarSource::Events(Vec::new())),
            state: Mutex::new(Snapshot::default()),
            state_changed: Condvar::new(),
            counter: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            refusing: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new().name("oc-double-accept".into()).spawn(move || server::accept_loop(s, Some(listener))).map_err(Error::Thread)?;
        log::info!(target: "opencast_double", "listening on {addr} ({:?} auth)", config.auth);
        Ok(Double { shared, accept: Some(accept), _tmp: tmp })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The server URL an agent is configured with (`http://127.0.0.1:PORT`, no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Where uploaded tracks are stored.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Replaces the schedule; calendars are generated per agent from these events.
    pub fn set_events(&self, events: Vec<Event>) {
        *lock(&self.shared.calendar) = CalendarSource::Events(events);
    }

    /// Serves these bytes as every agent's calendar (UIDs in it count as scheduled recordings).
    pub fn set_raw_calendar(&self, ics: Vec<u8>) {
        *lock(&self.shared.calendar) = CalendarSource::Raw(ics);
    }

    /// Sets the fault switches; they apply to every request whose head is read from now on. A
    /// change into or out of `Down::Refuse` returns once the listener is closed or open again.
    pub fn set_faults(&self, faults: Faults) {
        let refuse = matches!(faults.down, Some(Down::Refuse));
        *lock(&self.shared.faults) = faults;
        self.shared.faults_changed.notify_all();
        self.wake_accept();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut f = lock(&self.shared.faults);
        while self.shared.refusing.load(Ordering::SeqCst) != refuse {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                log::error!(target: "opencast_double", "the accept thread did not apply down={:?} within 5 s", f.down);
                break;
            };
            f = self.shared.faults_changed.wait_timeout(f, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).clone()
    }

    /// The next `times` requests whose path starts with `path_prefix` are handled completely
    /// (their effect is committed, e.g. an ingest recorded or a chunk appended), and then the
    /// connection is closed without a reply: the lost answer a client cannot tell from a request
    /// that never arrived.
    pub fn lose_replies(&self, path_prefix: &str, times: u32) {
        lock(&self.shared.one_shot).lose.push((path_prefix.to_owned(), times));
    }

    /// The next `times` chunk uploads (`POST /upload/job/{id}`) are cut: the double reads
    /// `after_bytes` of the request body and closes the connection; the job stays at its
    /// previous chunk, as in Opencast when a chunk's stream breaks.
    pub fn cut_chunks(&self, after_bytes: u64, times: u32) {
        lock(&self.shared.one_shot).cut = Some((after_bytes, times));
    }

    /// Holds upload job `id` locked for `hold`, as if another request of the job were still being
    /// handled: chunks get "Job is locked", the job's JSON says `INPROGRESS`. False if no such job.
    pub fn lock_upload_job(&self, id: &str, hold: Duration) -> bool {
        match lock(&self.shared.jobs).get_mut(id) {
            Some(j) => {
                j.locked_until = Some(Instant::now() + hold);
                true
            }
            None => false,
        }
    }

    /// A copy of everything received so far.
    pub fn snapshot(&self) -> Snapshot {
        lock(&self.shared.state).clone()
    }

    /// Waits until `pred` holds for the state, or `timeout` passes (then returns `None`). Wakes
    /// on every change rather than polling.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Snapshot) -> bool) -> Option<Snapshot> {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared.state);
        loop {
            if pred(&s) {
                return Some(s.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            s = self.shared.state_changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Unblocks the accept thread so that it re-reads the switches (a refused-connection fault
    /// has to close the listener now, not at the next client's arrival).
    fn wake_accept(&self) {
        let _ = TcpStream::connect_timeout(&self.shared.addr, Duration::from_millis(200));
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.faults_changed.notify_all();
        self.wake_accept();
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}
