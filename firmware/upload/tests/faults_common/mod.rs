//! The fixtures of `tests/faults.rs`: a journal in a temporary directory, recordings of
//! pseudo-random bytes, the real runner with millisecond back-off, the Opencast double and moto's
//! S3 server each behind a `lectern-faultproxy`, and the measurements the scenarios print.
//!
//! Sizes are scaled down from the issue's (a lecture hour, cuts every 16 MiB, 5-minute stalls) so
//! the whole file runs in well under a minute on a shared two-core machine: a 6 MiB recording,
//! 256 KiB Opencast chunks and S3 parts, 1–2 s client timeouts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_faultproxy::{Plan, Proxy, Stats};
use lectern_journal::{Journal, JournalOptions, UploadRow, UploadStore};
use lectern_moto::{MotoServer, Options as MotoOptions};
use lectern_opencast_double::{Config as DoubleConfig, Double, Snapshot};
use lectern_upload::opencast::OpencastTarget;
use lectern_upload::runner::{Clock, TargetFactory};
use lectern_upload::s3::{sigv4, S3Options, S3Target, Timeouts};
use lectern_upload::{enqueue, Class, FileRef, RetryPolicy, Rng, Runner, RunnerConfig, Target, Throttle, UploadEvent, UploadSpec};
use sha2::{Digest, Sha256};

/// The recording's size: a few dozen chunks, not a whole number of them.
pub const MEDIA_BYTES: u64 = 6 * 1024 * 1024 + 12_345;
/// Opencast chunk size and S3 part size (moto's lowered minimum).
pub const CHUNK: u64 = 256 * 1024;
pub const AGENT: &str = "room-101";
pub const BUCKET: &str = "lectern-media";
/// The longest any scenario waits for one condition.
pub const WAIT: Duration = Duration::from_secs(60);

/// A journal database in a temporary directory, which also holds the recordings.
pub struct TempJournal {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
}

pub fn journal() -> TempJournal {
    let dir = tempfile::Builder::new().prefix("lectern-faults-").tempdir().expect("tempdir");
    let (j, _) = Journal::open(dir.path(), JournalOptions::default(), 0).expect("journal");
    let db = j.db_path();
    drop(j);
    TempJournal { dir, db }
}

/// Deterministic bytes (xorshift), different for every seed.
pub fn media(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn file_ref(path: &Path, bytes: &[u8]) -> FileRef {
    std::fs::write(path, bytes).expect("write recording");
    FileRef { path: path.to_owned(), bytes: bytes.len() as u64, sha256: sha256_hex(bytes) }
}

/// An ad-hoc recording `id` of `len` bytes with a manifest, written under `dir`.
pub fn spec(dir: &Path, id: &str, len: u64) -> UploadSpec {
    let seed = id.bytes().fold(0x9e37_79b9u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    UploadSpec {
        recording_id: id.into(),
        title: format!("Lecture {id}"),
        started_at_ms: 1_795_000_000_000,
        media: file_ref(&dir.join(format!("{id}.mp4")), &media(len, seed)),
        manifest: Some(file_ref(&dir.join(format!("{id}.manifest.json")), format!(r#"{{"recording":"{id}","gaps":[]}}"#).as_bytes())),
        event: None,
    }
}

/// Puts `spec` in the journal as a job for `target`, due at `now_ms`.
pub fn queue(db: &Path, target: &str, spec: &UploadSpec, now_ms: i64) {
    let mut store = UploadStore::open(db).expect("upload store");
    enqueue(&mut store, target, spec, now_ms, Duration::ZERO, &mut Rng::new(1)).expect("enqueue");
}

/// One worker, back-off in milliseconds, failover after three failures.
pub fn runner_config() -> RunnerConfig {
    RunnerConfig {
        workers: 1,
        retry: RetryPolicy { initial: Duration::from_millis(20), max: Duration::from_millis(200) },
        failover_after: 3,
        failback_after: Duration::from_secs(3600),
        health_interval: Duration::from_millis(50),
        poll: Duration::from_millis(50),
    }
}

pub fn system_clock() -> Clock {
    Arc::new(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_millis() as i64)
}

/// Every event the runner reported, in order.
#[derive(Clone, Default)]
pub struct Events(pub Arc<Mutex<Vec<UploadEvent>>>);

impl Events {
    pub fn sink(&self) -> Arc<dyn Fn(&UploadEvent) + Send + Sync> {
        let all = self.0.clone();
        Arc::new(move |e: &UploadEvent| all.lock().expect("events").push(e.clone()))
    }

    /// `(class, error)` of every retried failure.
    pub fn failures(&self) -> Vec<(Class, String)> {
        self.0
            .lock()
            .expect("events")
            .iter()
            .filter_map(|e| match e {
                UploadEvent::Failed { class, error, .. } => Some((class.clone(), error.clone())),
                _ => None,
            })
            .collect()
    }
}

pub fn spawn(db: &Path, cfg: RunnerConfig, name: &str, factory: TargetFactory, clock: Clock, events: &Events) -> Runner {
    let runner = Runner::spawn(cfg, db, &[name.to_owned()], factory, clock, Arc::new(Throttle::unlimited()), events.sink()).expect("runner");
    runner.wake();
    runner
}

/// Polls the job row until `ok` holds; fails after [`WAIT`] with the row.
pub fn wait_row(db: &Path, id: &str, what: &str, mut ok: impl FnMut(&UploadRow) -> bool) -> UploadRow {
    let start = Instant::now();
    let store = UploadStore::open(db).expect("upload store");
    loop {
        if let Some(r) = store.get(id).expect("get") {
            if ok(&r) {
                return r;
            }
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}: {r:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `ok` holds, polling; panics with `what` after [`WAIT`].
pub fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes the job sent more than once (the row's own count).
pub fn resent(row: &UploadRow) -> u64 {
    row.bytes_sent.saturating_sub(row.bytes_total)
}

/// Prints one scenario's numbers.
pub fn report(scenario: &str, row: &UploadRow, stats: &Stats, extra: &str) {
    let cuts = stats.cuts.max(1);
    eprintln!(
        "[{scenario}] {} bytes: sent {} (re-sent {}), attempts {}, proxy cuts {} (re-sent per cut {}), stalls {}, up read {} B, seed {}{}{extra}",
        row.bytes_total,
        row.bytes_sent,
        resent(row),
        row.attempts,
        stats.cuts,
        resent(row) / cuts,
        stats.stalls,
        stats.up.read,
        stats.seed,
        if extra.is_empty() { "" } else { "; " },
    );
}

// ---- Opencast -------------------------------------------------------------------------------

/// `[opencast]` with short timeouts (1 s connect and silence; the upload's overall timeout has
/// a 60 s floor in the config, which no scenario reaches).
pub fn oc_config(url: &str, user: &str, password: &str) -> lectern_config::OpencastConfig {
    let text = format!(
        "[opencast]\nurl = \"{url}\"\nusername = \"{user}\"\npassword = \"{password}\"\nauth = \"digest\"\naddress = \"http://box\"\n\
         connect_timeout_s = 1\nread_timeout_s = 1\nrequest_timeout_s = 5\nupload_timeout_s = 60\nworkflow = \"fast\"\n"
    );
    lectern_config::Config::parse(&text, None).expect("opencast config").opencast.expect("[opencast]")
}

/// A double with Digest users `users`, on `port` (0: any). A port just freed by a stopped
/// double may take a moment to bind again.
pub fn start_double(users: &[(&str, &str)], port: u16) -> Double {
    let users: BTreeMap<String, String> = users.iter().map(|(u, p)| ((*u).to_owned(), (*p).to_owned())).collect();
    let mut tries = 0;
    loop {
        match Double::start(DoubleConfig { users: users.clone(), port, ..DoubleConfig::digest("agent", "secret") }) {
            Ok(d) => return d,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("opencast double on port {port}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("opencast double: {e}"),
        }
    }
}

/// The factory of target `oc`: an Opencast target over `endpoints` with these credentials.
pub fn oc_factory(endpoints: Vec<String>, user: &str, password: &str) -> TargetFactory {
    let cfg = oc_config(&endpoints[0], user, password);
    Arc::new(move |name: &str| (name == "oc").then(|| Box::new(OpencastTarget::new(&cfg, AGENT, endpoints.clone(), CHUNK)) as Box<dyn Target>))
}

/// The media package id the Opencast target gives an ad-hoc recording.
pub fn adhoc_mp(id: &str) -> String {
    format!("lectern-adhoc-{id}")
}

/// Exactly one ingest of `spec` on the double: one media package, created once, whose one
/// ingested track is the file (bytes and SHA-256). Returns the track's bytes on the server.
pub fn assert_ingested_once(s: &Snapshot, spec: &UploadSpec, ctx: &str) {
    assert_eq!(s.ingest_count(), 1, "{ctx}: exactly one ingest");
    let mp_id = adhoc_mp(&spec.recording_id);
    let mps: Vec<_> = s.mediapackages.iter().filter(|m| m.id == mp_id).collect();
    assert_eq!(mps.len(), 1, "{ctx}: one media package");
    assert_eq!(mps[0].creations, 1, "{ctx}: the media package was created once");
    let tracks: Vec<_> = mps[0].ingested_tracks().collect();
    assert_eq!(tracks.len(), 1, "{ctx}: one track: {:?}", mps[0].tracks);
    assert_eq!((tracks[0].bytes, tracks[0].sha256.as_str()), (spec.media.bytes, spec.media.sha256.as_str()), "{ctx}: the track is the file");
    let on_server = std::fs::read(&tracks[0].path).expect("the double's track file");
    assert_eq!(sha256_hex(&on_server), spec.media.sha256, "{ctx}: the bytes on the server");
}

// ---- S3 -------------------------------------------------------------------------------------

/// moto with 256 KiB parts and the bucket; `None` (after a loud message) without python3-venv
/// outside CI.
pub fn moto() -> Option<MotoServer> {
    let mut m = MotoServer::start_or_skip(MotoOptions { min_part_bytes: Some(CHUNK), ..MotoOptions::default() }).expect("moto")?;
    m.create_bucket(BUCKET).expect("bucket");
    Some(m)
}

pub fn s3_options(endpoints: Vec<String>, access_key: &str, secret_key: &str) -> S3Options {
    S3Options {
        endpoints,
        bucket: BUCKET.into(),
        region: "us-east-1".into(),
        access_key: access_key.into(),
        secret_key: secret_key.into(),
        prefix: "rooms/hs1/".into(),
        path_style: true,
        part_bytes: CHUNK,
        timeouts: Timeouts { connect: Duration::from_secs(1), read: Duration::from_secs(1), request: Duration::from_secs(5), part: Duration::from_secs(10) },
        same_storage: false,
        verify_etag: true,
        ca_pem: None,
    }
}

/// The factory of target `s3`.
pub fn s3_factory(opts: S3Options) -> TargetFactory {
    Arc::new(move |name: &str| (name == "s3").then(|| Box::new(S3Target::with_min_part_bytes(opts.clone(), CHUNK).expect("S3 options")) as Box<dyn Target>))
}

pub fn s3_key(id: &str) -> String {
    format!("rooms/hs1/{id}/{id}.mp4")
}

/// GetObject straight from the server (not through any proxy), signed with `keys` when moto's
/// authentication is on. `None` for 404.
pub fn s3_get(endpoint: &str, key: &str, keys: Option<(&str, &str)>) -> Option<Vec<u8>> {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let path = format!("/{BUCKET}/{}", sigv4::uri_encode(key, true));
    let empty = sha256_hex(b"");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.get(format!("{endpoint}{path}"));
    match keys {
        Some((access_key, secret_key)) => {
            let amz_date = sigv4::amz_date(std::time::SystemTime::now());
            let headers = vec![("host".to_owned(), host), ("x-amz-content-sha256".to_owned(), empty.clone()), ("x-amz-date".to_owned(), amz_date.clone())];
            let auth = sigv4::authorization(&sigv4::Signing { access_key, secret_key, region: "us-east-1", amz_date: &amz_date }, "GET", &path, "", &headers, &empty);
            req = req.header("x-amz-content-sha256", &empty).header("x-amz-date", &amz_date).header("authorization", auth);
        }
        None => req = req.header("authorization", lectern_moto::ANY_SIGNATURE),
    }
    let mut r = req.call().expect("GetObject");
    match r.status().as_u16() {
        404 => None,
        200 => Some(r.body_mut().with_config().limit(u64::MAX).read_to_vec().expect("GetObject body")),
        s => panic!("GetObject {key}: HTTP {s}: {}", r.body_mut().read_to_string().unwrap_or_default()),
    }
}

/// The MP4 is on the server byte for byte and no multipart upload of it is left (moto's
/// authentication off).
pub fn assert_object(moto: &MotoServer, spec: &UploadSpec, ctx: &str) {
    let key = s3_key(&spec.recording_id);
    let body = s3_get(&moto.endpoint(), &key, None).unwrap_or_else(|| panic!("{ctx}: {key} is not on the server"));
    assert_eq!(sha256_hex(&body), spec.media.sha256, "{ctx}: the object is the file");
    let left = moto.multipart_uploads(BUCKET, &key).expect("ListMultipartUploads");
    assert!(left.is_empty(), "{ctx}: multipart uploads left behind: {left:?}");
}

/// The address a proxy forwards to.
pub fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").trim_end_matches('/').parse().expect("a loopback URL")
}

// ---- Discovery through the proxy --------------------------------------------------------------

/// A relay between the fault proxy and the Opencast double that makes the double's service
/// registry name the proxy: the double advertises its own listening address for every service
/// (`/services/available.json`), so without this the Opencast client would send the chunks and
/// the ingest around the proxy, straight to the double. In the server → client direction it
/// replaces `127.0.0.1:{double port}` with `127.0.0.1:{proxy port}` (same length: both ports are
/// ephemeral, five digits, so no `Content-Length` changes); client → server bytes pass as they
/// are. This stands in for a double option to advertise the URL its clients use.
pub struct Advertise {
    addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    public: Arc<Mutex<Option<SocketAddr>>>,
}

impl Advertise {
    /// Listens on a free loopback port, forwarding to `double` (which may be down for a while:
    /// a connection is then closed at once, like a refused one).
    pub fn start(double: SocketAddr) -> Advertise {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let addr = listener.local_addr().expect("relay addr");
        let stop = Arc::new(AtomicBool::new(false));
        let public: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (s, p) = (stop.clone(), public.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(double) else { continue };
                let swap = p.lock().expect("public").map(|proxy| (double.to_string().into_bytes(), proxy.to_string().into_bytes()));
                let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
                std::thread::spawn(move || pump(c2, s2, None));
                std::thread::spawn(move || pump(server, client, swap));
            }
        });
        Advertise { addr, stop, public }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on the registry names `proxy` (same length as the double's address).
    pub fn name(&self, proxy: SocketAddr) {
        *self.public.lock().expect("public") = Some(proxy);
    }
}

impl Drop for Advertise {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// The fault proxy in front of an Opencast double, with the [`Advertise`] relay between them.
pub struct OcFront {
    pub proxy: Proxy,
    _relay: Advertise,
}

impl OcFront {
    pub fn start(double: SocketAddr, plan: Plan) -> OcFront {
        let relay = Advertise::start(double);
        let proxy = Proxy::start(relay.addr(), plan).expect("proxy");
        assert_eq!(proxy.addr().to_string().len(), double.to_string().len(), "ports of different lengths: {} and {double}", proxy.addr());
        relay.name(proxy.addr());
        OcFront { proxy, _relay: relay }
    }
}

impl std::ops::Deref for OcFront {
    type Target = Proxy;
    fn deref(&self) -> &Proxy {
        &self.proxy
    }
}

/// Copies `from` to `to`, replacing `swap.0` with `swap.1`; ends both when either side ends.
fn pump(mut from: std::net::TcpStream, mut to: std::net::TcpStream, swap: Option<(Vec<u8>, Vec<u8>)>) {
    use std::io::{Read, Write};
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let keep = match &swap {
            None => 0,
            Some((a, b)) => {
                let mut i = 0;
                while i + a.len() <= pending.len() {
                    if pending[i..i + a.len()] == a[..] {
                        pending[i..i + a.len()].copy_from_slice(b);
                        i += a.len();
                    } else {
                        i += 1;
                    }
                }
                // Hold back only a tail that may be the start of the address.
                (1..a.len().min(pending.len() + 1)).rev().find(|&k| pending[pending.len() - k..] == a[..k]).unwrap_or(0)
            }
        };
        let out = pending.len() - keep;
        if to.write_all(&pending[..out]).is_err() {
            break;
        }
        pending.drain(..out);
    }
    let _ = to.write_all(&pending);
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}
