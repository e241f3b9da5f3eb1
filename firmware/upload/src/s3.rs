//! The S3-compatible target: the stitched MP4 as one multipart upload, the manifest as a small
//! object beside it, on any server that speaks the S3 API (AWS, MinIO, Ceph RGW, Garage, a
//! campus archive's gateway). Requests are signed with AWS Signature Version 4 in the
//! `Authorization` header ([`sigv4`], sans-IO) and sent with `ureq`; every request has connect,
//! read and overall timeouts, and the part bodies go through the shared bandwidth cap.
//!
//! # Keys
//!
//! `{prefix}{recording_id}/{recording_id}.mp4` and `….manifest.json` beside it. The manifest is
//! written *first*, so the MP4's presence means the whole job is there: a consumer watching the
//! bucket can key on the media file, and so does this target.
//!
//! # Steps and progress
//!
//! Progress is [`Progress`] as JSON. One step is one of:
//!
//! 1. `null` → HeadObject of the MP4's key, exactly once per job (and again after a `Restart`).
//!    An object carrying our SHA-256 in `x-amz-meta-sha256` is Done — that is how a job whose
//!    CompleteMultipartUpload reply was lost ends when it starts over; one with another SHA-256
//!    is refused (never silently overwritten). Absent → `Manifest` (or `Create` without one).
//! 2. `Manifest` → PutObject of the manifest JSON (`Content-MD5`) → `Create`.
//! 3. `Create` → ListMultipartUploads with the key as prefix; every upload of exactly this key
//!    is a stale one of ours (a crash between Create and the journal commit, an abandoned
//!    endpoint move) and is aborted; then CreateMultipartUpload (`x-amz-meta-sha256`,
//!    `video/mp4`) → `Upload` with the server's upload id and the part size, fixed for the job.
//! 4. `Upload` → one UploadPart per step (`Content-MD5` and the payload's SHA-256 in
//!    `x-amz-content-sha256`, both verified by S3; the returned ETag is checked against the
//!    part's MD5, which catches a server or proxy that verified nothing), then, with every part
//!    confirmed, CompleteMultipartUpload → Done with the key as `remote_ref`.
//!
//! **Resume rule:** only the progress this very target returned from its last successful step
//! is trusted as it is. Any other `Upload` progress (a new target after a crash, or a retry after
//! an error) is first reconciled with ListParts: the parts the server lists, in order and of the
//! right size, are confirmed and never re-sent (a part the server has but the progress does not
//! know — its reply was lost — is checked against the local MD5 first). `NoSuchUpload` means the
//! server lost or finished the upload: HeadObject decides between Done (our object is there: the
//! Complete reply was lost) and [`Class::Restart`].
//!
//! # Errors
//!
//! Transport errors, 408, 429, 5xx and the S3 codes that mean "try again" (`SlowDown`,
//! `InternalError`, `RequestTimeout` — a 400 —, `BadDigest`, …) are transient, honouring
//! `Retry-After`; `SignatureDoesNotMatch`, `InvalidAccessKeyId`, `AccessDenied` and their kin,
//! 401, and a 403 without a body (HEAD) are [`Class::Auth`]; any other 4xx is refused with the
//! server's code and message.

use std::fmt::Write as _;
use std::io::Read;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use ureq::http::{Request, Uri};
use ureq::{Agent, SendBody};

use crate::target::{parse_retry_after, Class, FileRef, Step, StepIo, Target, UploadError, UploadSpec};

/// S3's smallest part but the last: 5 MiB.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest part: 5 GiB.
pub const MAX_PART_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// Largest XML reply read (a ListParts page of 1000 parts is about 250 kB).
const MAX_REPLY_BYTES: u64 = 8 * 1024 * 1024;
/// What `x-amz-content-sha256` says for a body that is not hashed (none of ours).
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Timeouts of every request; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP and TLS connect.
    pub connect: Duration,
    /// Silence while reading or writing.
    pub read: Duration,
    /// Whole request, for everything but UploadPart.
    pub request: Duration,
    /// Whole request, for UploadPart (one part through the bandwidth cap).
    pub part: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(30), request: Duration::from_secs(60), part: Duration::from_secs(15 * 60) }
    }
}

/// The S3 target's settings (mapped from the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Base URLs (`https://s3.example.org`, may carry a path), primary first. Never empty.
    pub endpoints: Vec<String>,
    pub bucket: String,
    /// Signing region (`us-east-1` for most non-AWS servers).
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Prepended to every key as it is (`lectern/room-12/`).
    pub prefix: String,
    /// `https://host/bucket/key` (MinIO, Ceph, moto) instead of `https://bucket.host/key`.
    pub path_style: bool,
    /// Part size; raised for files that would need more than 10 000 parts.
    pub part_bytes: u64,
    pub timeouts: Timeouts,
    /// The endpoints front one storage (gateways of one cluster), so an upload started on one
    /// continues on another.
    pub same_storage: bool,
    /// Check every part's ETag against its MD5. Off only for servers whose ETags are not MD5s
    /// (AWS with SSE-KMS or SSE-C).
    pub verify_etag: bool,
    /// PEM CA certificates that replace the public roots for the endpoints (the target's
    /// `ca_file`, read and checked by the config); `None`: Mozilla's roots. TLS is always verified.
    pub ca_pem: Option<Vec<u8>>,
}

/// The job's progress as this target persists it; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Progress {
    /// The MP4 is not on the server; the manifest goes next.
    Manifest,
    /// The manifest is there (or there is none); our multipart upload is created next.
    Create,
    /// Our multipart upload: `etags[i]` is part `i + 1`'s ETag, confirmed by the server.
    Upload { upload_id: String, part_bytes: u64, etags: Vec<String> },
    /// The MP4 (and the manifest) are on the server under `key`.
    Done { key: String },
}

/// A parsed endpoint: where requests go and what is signed.
#[derive(Debug, Clone)]
struct Endpoint {
    scheme: String,
    /// `host[:port]`, the `Host` header.
    host: String,
    /// The path before the key, `/` terminated (the bucket for path style).
    base: String,
}

/// The S3-compatible target; see the module doc.
pub struct S3Target {
    opts: S3Options,
    parsed: Vec<Endpoint>,
    http: Agent,
    upload: Agent,
    min_part_bytes: u64,
    /// The progress the last successful step returned: the only progress used without asking
    /// the server (the resume rule).
    trusted: Option<Value>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target").field("endpoints", &self.opts.endpoints).field("bucket", &self.opts.bucket).finish_non_exhaustive()
    }
}

use lectern_opencast::client::agent;

fn parse_endpoint(url: &str, bucket: &str, path_style: bool) -> Result<Endpoint, String> {
    let uri: Uri = url.parse().map_err(|e| format!("S3 endpoint {url:?} is not a URL: {e}"))?;
    let scheme = uri.scheme_str().filter(|s| *s == "http" || *s == "https").ok_or_else(|| format!("S3 endpoint {url:?} must be http:// or https://"))?;
    let auth = uri.authority().ok_or_else(|| format!("S3 endpoint {url:?} has no host"))?;
    // The Host header is signed: write it as HTTP clients do, without the scheme's own port.
    let host = match auth.port_u16() {
        Some(443) if scheme == "https" => auth.host().to_owned(),
        Some(80) if scheme == "http" => auth.host().to_owned(),
        _ => auth.as_str().to_owned(),
    };
    let mut base = uri.path().trim_end_matches('/').to_owned();
    base.push('/');
    let host = if path_style {
        write!(base, "{}/", sigv4::uri_encode(bucket, false)).expect("String");
        host
    } else {
        format!("{bucket}.{host}")
    };
    Ok(Endpoint { scheme: scheme.to_owned(), host, base })
}

/// A request body.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A part: the reader (through the bandwidth cap) and its length.
    Part(&'a mut crate::throttle::Throttled<std::io::Take<std::fs::File>>, u64),
}

/// A reply: status, the headers we use, the body (empty for HEAD and parts).
#[derive(Debug)]
struct Reply {
    status: u16,
    etag: Option<String>,
    sha256_meta: Option<String>,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One S3 request, before signing.
struct Req<'a> {
    method: &'static str,
    /// The key (empty for bucket requests).
    key: &'a str,
    /// Query parameters, unencoded.
    query: Vec<(&'a str, String)>,
    /// Extra headers, lowercase names (signed).
    headers: Vec<(&'static str, String)>,
    /// Hex SHA-256 of the body.
    payload_sha256: String,
}

impl<'a> Req<'a> {
    fn new(method: &'static str, key: &'a str) -> Req<'a> {
        Req { method, key, query: Vec::new(), headers: Vec::new(), payload_sha256: EMPTY_SHA256.to_owned() }
    }

    fn query(mut self, k: &'a str, v: impl Into<String>) -> Req<'a> {
        self.query.push((k, v.into()));
        self
    }

    fn header(mut self, k: &'static str, v: impl Into<String>) -> Req<'a> {
        self.headers.push((k, v.into()));
        self
    }
}

/// Sends one built request; a transport error (refused, reset, timeout) is transient.
fn run(agent: &Agent, builder: ureq::http::request::Builder, body: SendBody<'_>, what: &str) -> Result<ureq::http::Response<ureq::Body>, UploadError> {
    let request = builder.body(body).map_err(|e| UploadError::new(Class::Refused, format!("{what}: cannot build the request: {e}")))?;
    agent.run(request).map_err(|e| UploadError::transient(format!("{what}: {e}")))
}

/// Hex of bytes, lowercase.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        write!(s, "{b:02x}").expect("String");
        s
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An ETag without its quotes.
fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}

/// MD5 and SHA-256 of `len` bytes of `path` from `offset`, read locally (not through the
/// bandwidth cap: nothing goes on the wire).
fn hash_range(file: &FileRef, offset: u64, len: u64) -> Result<([u8; 16], [u8; 32]), UploadError> {
    use std::io::{Seek, SeekFrom};
    let local = |what: &str, e: std::io::Error| UploadError::new(Class::Local, format!("{what} {}: {e}", file.path.display()));
    let mut f = std::fs::File::open(&file.path).map_err(|e| local("open", e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| local("seek", e))?;
    let mut f = f.take(len);
    let (mut md5, mut sha) = (Md5::new(), Sha256::new());
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| local("read", e))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        sha.update(&buf[..n]);
        got += n as u64;
    }
    if got != len {
        return Err(UploadError::new(Class::Local, format!("{} ends at byte {}, the upload needs bytes {offset}..{}", file.path.display(), offset + got, offset + len)));
    }
    Ok((md5.finalize().into(), sha.finalize().into()))
}

/// The S3 error codes that are worth retrying whatever their status (S3 sends `RequestTimeout`
/// and `BadDigest` as 400).
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    "OperationAborted",
    "IncompleteBody",
];

/// The S3 error codes that mean the credentials (or their permissions) are wrong.
const AUTH_CODES: &[&str] = &["SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken", "AccessDenied", "InvalidSecurity", "TokenRefreshRequired"];

/// Classifies a reply that is not a success; `what` names the request.
fn classify(reply: &Reply, what: &str) -> UploadError {
    let (code, message) = xml::error(&reply.body).unwrap_or_default();
    let text = if code.is_empty() { format!("{what}: HTTP {}", reply.status) } else { format!("{what}: HTTP {} {code}: {message}", reply.status) };
    let retry_after = reply.retry_after.as_deref().and_then(parse_retry_after);
    let class = if TRANSIENT_CODES.contains(&code.as_str()) {
        Class::Transient { retry_after }
    } else if AUTH_CODES.contains(&code.as_str()) || (reply.status == 403 && code.is_empty()) {
        Class::Auth
    } else if code == "NoSuchUpload" {
        Class::Restart
    } else {
        UploadError::from_status(reply.status, reply.retry_after.as_deref(), "").class
    };
    UploadError::new(class, text)
}

impl S3Target {
    /// A target with S3's part-size rules (parts of 5 MiB to 5 GiB); an error names the setting.
    pub fn new(opts: S3Options) -> Result<S3Target, String> {
        S3Target::build(opts, MIN_PART_BYTES)
    }

    /// Like [`S3Target::new`] but with parts as small as `min_part_bytes`: only for test servers
    /// that accept them (moto with `S3_UPLOAD_PART_MIN_SIZE`), never from the config.
    pub fn with_min_part_bytes(opts: S3Options, min_part_bytes: u64) -> Result<S3Target, String> {
        S3Target::build(opts, min_part_bytes.max(1))
    }

    fn build(opts: S3Options, min_part_bytes: u64) -> Result<S3Target, String> {
        if opts.endpoints.is_empty() {
            return Err("S3 target: no endpoints".into());
        }
        if !(min_part_bytes..=MAX_PART_BYTES).contains(&opts.part_bytes) {
            return Err(format!("S3 target: part size {} bytes is outside {min_part_bytes}..={MAX_PART_BYTES}", opts.part_bytes));
        }
        let parsed = opts.endpoints.iter().map(|e| parse_endpoint(e, &opts.bucket, opts.path_style)).collect::<Result<Vec<_>, _>>()?;
        let (t, ca) = (opts.timeouts, opts.ca_pem.as_deref());
        let (http, upload) = (agent(t.connect, t.read, t.request, ca), agent(t.connect, t.read, t.part, ca));
        Ok(S3Target { http, upload, parsed, opts, min_part_bytes, trusted: None })
    }

    /// The MP4's key for `spec`.
    pub fn media_key(&self, spec: &UploadSpec) -> String {
        format!("{}{id}/{id}.mp4", self.opts.prefix, id = spec.recording_id)
    }

    /// The manifest's key for `spec`.
    pub fn manifest_key(&self, spec: &UploadSpec) -> String {
        format!("{}{id}/{id}.manifest.json", self.opts.prefix, id = spec.recording_id)
    }

    /// The part size of a job: the configured one, raised so the file fits in 10 000 parts.
    fn part_bytes_for(&self, bytes: u64) -> u64 {
        self.opts.part_bytes.max(bytes.div_ceil(MAX_PARTS)).max(self.min_part_bytes)
    }

    /// Signs and sends one request to endpoint `i`.
    fn send(&self, i: usize, req: Req<'_>, body: Body<'_>) -> Result<Reply, UploadError> {
        let ep = &self.parsed[i];
        let path = format!("{}{}", ep.base, sigv4::uri_encode(req.key, true));
        let mut query: Vec<(String, String)> = req.query.iter().map(|(k, v)| (sigv4::uri_encode(k, false), sigv4::uri_encode(v, false))).collect();
        query.sort();
        let query_string = query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let url = if query_string.is_empty() { format!("{}://{}{path}", ep.scheme, ep.host) } else { format!("{}://{}{path}?{query_string}", ep.scheme, ep.host) };
        let what = format!("{} {url}", req.method);

        let amz_date = sigv4::amz_date(SystemTime::now());
        let mut headers: Vec<(String, String)> = req.headers.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        headers.push(("host".into(), ep.host.clone()));
        headers.push(("x-amz-content-sha256".into(), req.payload_sha256.clone()));
        headers.push(("x-amz-date".into(), amz_date.clone()));
        headers.sort();
        let authorization = sigv4::authorization(
            &sigv4::Signing { access_key: &self.opts.access_key, secret_key: &self.opts.secret_key, region: &self.opts.region, amz_date: &amz_date },
            req.method,
            &path,
            &query_string,
            &headers,
            &req.payload_sha256,
        );

        let mut builder = Request::builder().method(req.method).uri(&url);
        for (k, v) in &headers {
            builder = builder.header(k, v);
        }
        builder = builder.header("authorization", authorization);
        // `SendBody` is invariant in its lifetime, so each kind of body is sent on its own.
        let mut resp = match body {
            Body::Empty => run(&self.http, builder, SendBody::none(), &what)?,
            Body::Bytes(mut b) => {
                let builder = builder.header("content-length", b.len().to_string());
                run(&self.http, builder, SendBody::from_reader(&mut b), &what)?
            }
            Body::Part(r, len) => {
                let builder = builder.header("content-length", len.to_string());
                run(&self.upload, builder, SendBody::from_reader(r), &what)?
            }
        };
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (etag, sha256_meta, retry_after) = (header("etag"), header("x-amz-meta-sha256"), header("retry-after"));
        let status = resp.status().as_u16();
        let body = if req.method == "HEAD" {
            String::new()
        } else {
            resp.body_mut().with_config().limit(MAX_REPLY_BYTES).read_to_string().map_err(|e| UploadError::transient(format!("{what}: reading the reply: {e}")))?
        };
        log::debug!(target: "lectern_upload", "{what} → {status}");
        Ok(Reply { status, etag, sha256_meta, retry_after, body })
    }

    /// HeadObject of the MP4: `Some` when our object (same SHA-256) is there, `None` when no
    /// object is; another object under the key is refused.
    fn head_media(&self, i: usize, spec: &UploadSpec) -> Result<Option<String>, UploadError> {
        let key = self.media_key(spec);
        let reply = self.send(i, Req::new("HEAD", &key), Body::Empty)?;
        match reply.status {
            200 => match reply.sha256_meta.as_deref() {
                Some(sha) if sha.eq_ignore_ascii_case(&spec.media.sha256) => Ok(Some(key)),
                other => Err(UploadError::new(
                    Class::Refused,
                    format!("{} has {key} already, with sha256 {other:?}, not {}: not overwriting it", self.opts.endpoints[i], spec.media.sha256),
                )),
            },
            404 => Ok(None),
            _ => Err(classify(&reply, &format!("HEAD {key}"))),
        }
    }

    fn step_fresh(&self, i: usize, spec: &UploadSpec) -> Result<Step, UploadError> {
        if let Some(key) = self.head_media(i, spec)? {
            log::info!(target: "lectern_upload", "recording {}: {key} is already on {}", spec.recording_id, self.opts.endpoints[i]);
            return Ok(Step::Done { progress: to_value(&Progress::Done { key: key.clone() }), remote_ref: key, sent: 0 });
        }
        let next = if spec.manifest.is_some() { Progress::Manifest } else { Progress::Create };
        Ok(Step::Progress { progress: to_value(&next), bytes_confirmed: 0, sent: 0 })
    }

    fn step_manifest(&self, i: usize, spec: &UploadSpec, io: &StepIo) -> Result<Step, UploadError> {
        let Some(manifest) = &spec.manifest else {
            return Ok(Step::Progress { progress: to_value(&Progress::Create), bytes_confirmed: 0, sent: 0 });
        };
        let mut bytes = Vec::with_capacity(manifest.bytes as usize);
        io.read_range(&manifest.path, 0, manifest.bytes)?
            .read_to_end(&mut bytes)
            .map_err(|e| UploadError::new(Class::Local, format!("read {}: {e}", manifest.path.display())))?;
        let md5: [u8; 16] = Md5::digest(&bytes).into();
        let key = self.manifest_key(spec);
        let mut req = Req::new("PUT", &key).header("content-md5", b64(&md5)).header("content-type", "application/json");
        req.payload_sha256 = hex(&Sha256::digest(&bytes));
        let sent = bytes.len() as u64;
        let reply = self.send(i, req, Body::Bytes(&bytes)).map_err(|e| e.with_sent(sent))?;
        if !reply.ok() {
            return Err(classify(&reply, &format!("PUT {key}")).with_sent(sent));
        }
        self.check_etag(reply.etag.as_deref(), &md5, &key)?;
        Ok(Step::Progress { progress: to_value(&Progress::Create), bytes_confirmed: manifest.bytes, sent })
    }

    /// A part's (or the manifest's) ETag against its MD5.
    fn check_etag(&self, etag: Option<&str>, md5: &[u8; 16], what: &str) -> Result<(), UploadError> {
        if !self.opts.verify_etag {
            return Ok(());
        }
        match etag.map(unquote) {
            Some(e) if e.eq_ignore_ascii_case(&hex(md5)) => Ok(()),
            other => Err(UploadError::transient(format!("{what}: the server stored it with ETag {other:?}, but its MD5 is {}: sending it again", hex(md5)))),
        }
    }

    /// Aborts every multipart upload of exactly `key` on endpoint `i`, but `keep`.
    fn abort_stale(&self, i: usize, key: &str, keep: Option<&str>) -> Result<usize, UploadError> {
        let mut aborted = 0;
        let mut marker: Option<(String, String)> = None;
        // A bounded number of pages: a key has a handful of stale uploads at most.
        for _ in 0..20 {
            let mut req = Req::new("GET", "").query("uploads", "").query("prefix", key);
            if let Some((k, u)) = &marker {
                req = req.query("key-marker", k.clone()).query("upload-id-marker", u.clone());
            }
            let reply = self.send(i, req, Body::Empty)?;
            if !reply.ok() {
                return Err(classify(&reply, &format!("ListMultipartUploads {key}")));
            }
            let page = xml::uploads(&reply.body).map_err(|e| UploadError::transient(format!("ListMultipartUploads {key}: {e}")))?;
            for (k, upload_id) in page.uploads.iter().filter(|(k, u)| k == key && Some(u.as_str()) != keep) {
                self.abort(i, k, upload_id)?;
                log::info!(target: "lectern_upload", "{}: aborted stale multipart upload {upload_id} of {k}", self.opts.endpoints[i]);
                aborted += 1;
            }
            match page.next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        Ok(aborted)
    }

    fn abort(&self, i: usize, key: &str, upload_id: &str) -> Result<(), UploadError> {
        let reply = self.send(i, Req::new("DELETE", key).query("uploadId", upload_id), Body::Empty)?;
        if reply.ok() || reply.status == 404 {
            Ok(())
        } else {
            Err(classify(&reply, &format!("AbortMultipartUpload {key} {upload_id}")))
        }
    }

    fn step_create(&self, i: usize, spec: &UploadSpec) -> Result<Step, UploadError> {
        let key = self.media_key(spec);
        self.abort_stale(i, &key, None)?;
        let req = Req::new("POST", &key)
            .query("uploads", "")
            .header("content-type", "video/mp4")
            .header("x-amz-meta-recording-id", spec.recording_id.clone())
            .header("x-amz-meta-sha256", spec.media.sha256.clone());
        let reply = self.send(i, req, Body::Empty)?;
        if !reply.ok() {
            return Err(classify(&reply, &format!("CreateMultipartUpload {key}")));
        }
        let upload_id = xml::upload_id(&reply.body).map_err(|e| UploadError::transient(format!("CreateMultipartUpload {key}: {e}")))?;
        log::info!(target: "lectern_upload", "recording {}: multipart upload {upload_id} of {key} on {}", spec.recording_id, self.opts.endpoints[i]);
        let progress = Progress::Upload { upload_id, part_bytes: self.part_bytes_for(spec.media.bytes), etags: Vec::new() };
        Ok(Step::Progress { progress: to_value(&progress), bytes_confirmed: manifest_bytes(spec), sent: 0 })
    }

    /// ListParts: the confirmed prefix of parts, with ETags, as the server has them. A part the
    /// progress did not know (its reply was lost) is checked against the local file first.
    fn reconcile(&self, i: usize, spec: &UploadSpec, upload_id: &str, part_bytes: u64, known: &[String]) -> Result<Option<Vec<String>>, UploadError> {
        let key = self.media_key(spec);
        let mut listed: Vec<(u32, String, u64)> = Vec::new();
        let mut marker = None;
        for _ in 0..=(MAX_PARTS / 1000) {
            let mut req = Req::new("GET", &key).query("uploadId", upload_id);
            if let Some(m) = marker {
                req = req.query("part-number-marker", format!("{m}"));
            }
            let reply = self.send(i, req, Body::Empty)?;
            if reply.status == 404 && xml::error(&reply.body).is_some_and(|(c, _)| c == "NoSuchUpload") {
                return Ok(None);
            }
            if !reply.ok() {
                return Err(classify(&reply, &format!("ListParts {key} {upload_id}")));
            }
            let page = xml::parts(&reply.body).map_err(|e| UploadError::transient(format!("ListParts {key}: {e}")))?;
            listed.extend(page.parts);
            match page.next {
                Some(m) => marker = Some(m),
                None => break,
            }
        }
        listed.sort_by_key(|p| p.0);
        let mut etags = Vec::new();
        for (number, etag, size) in listed {
            let n = etags.len() as u64;
            let offset = n * part_bytes;
            if u64::from(number) != n + 1 || offset >= spec.media.bytes.max(1) || size != part_bytes.min(spec.media.bytes - offset) {
                break;
            }
            let etag = unquote(&etag).to_owned();
            if known.get(n as usize).is_none_or(|k| !k.eq_ignore_ascii_case(&etag)) && self.opts.verify_etag {
                let (md5, _) = hash_range(&spec.media, offset, size)?;
                if !etag.eq_ignore_ascii_case(&hex(&md5)) {
                    log::warn!(target: "lectern_upload", "recording {}: part {number} on the server has ETag {etag}, the file's MD5 is {}: sending it again", spec.recording_id, hex(&md5));
                    break;
                }
            }
            etags.push(etag);
        }
        if etags.len() < known.len() {
            log::warn!(target: "lectern_upload", "recording {}: the server confirms {} parts of {key}, the progress said {}", spec.recording_id, etags.len(), known.len());
        }
        Ok(Some(etags))
    }

    /// The server lost our upload or finished it: HeadObject decides.
    fn upload_gone(&self, i: usize, spec: &UploadSpec, upload_id: &str) -> Result<Step, UploadError> {
        if let Some(key) = self.head_media(i, spec)? {
            log::info!(target: "lectern_upload", "recording {}: upload {upload_id} is gone and {key} is complete (a lost CompleteMultipartUpload reply)", spec.recording_id);
            return Ok(Step::Done { progress: to_value(&Progress::Done { key: key.clone() }), remote_ref: key, sent: 0 });
        }
        Err(UploadError::new(Class::Restart, format!("{}: multipart upload {upload_id} of {} is gone (NoSuchUpload): starting again", self.opts.endpoints[i], self.media_key(spec))))
    }

    /// Sends the next part, or completes; `etags` are confirmed (trusted or reconciled).
    fn step_upload(&self, i: usize, spec: &UploadSpec, io: &StepIo, upload_id: &str, part_bytes: u64, mut etags: Vec<String>) -> Result<Step, UploadError> {
        let bytes = spec.media.bytes;
        let parts = bytes.div_ceil(part_bytes).max(1);
        let done = etags.len() as u64;
        let key = self.media_key(spec);
        if done < parts {
            let number = done + 1;
            let offset = done * part_bytes;
            let len = part_bytes.min(bytes - offset);
            let (md5, sha) = hash_range(&spec.media, offset, len)?;
            let mut req = Req::new("PUT", &key).query("partNumber", number.to_string()).query("uploadId", upload_id).header("content-md5", b64(&md5));
            req.payload_sha256 = hex(&sha);
            let mut reader = io.read_range(&spec.media.path, offset, len)?;
            let result = self.send(i, req, Body::Part(&mut reader, len));
            let sent = reader.bytes_read();
            let reply = result.map_err(|e| e.with_sent(sent))?;
            if reply.status == 404 && xml::error(&reply.body).is_some_and(|(c, _)| c == "NoSuchUpload") {
                return self.upload_gone(i, spec, upload_id).map_err(|e| e.with_sent(sent));
            }
            if !reply.ok() {
                return Err(classify(&reply, &format!("UploadPart {number} of {key}")).with_sent(sent));
            }
            self.check_etag(reply.etag.as_deref(), &md5, &format!("part {number} of {key}")).map_err(|e| e.with_sent(sent))?;
            etags.push(hex(&md5));
            let progress = Progress::Upload { upload_id: upload_id.to_owned(), part_bytes, etags };
            return Ok(Step::Progress { progress: to_value(&progress), bytes_confirmed: manifest_bytes(spec) + offset + len, sent });
        }
        self.complete(i, spec, upload_id, &etags)
    }

    fn complete(&self, i: usize, spec: &UploadSpec, upload_id: &str, etags: &[String]) -> Result<Step, UploadError> {
        let key = self.media_key(spec);
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in etags.iter().enumerate() {
            write!(body, "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag></Part>", n + 1, xml::escape(etag)).expect("String");
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut req = Req::new("POST", &key).query("uploadId", upload_id).header("content-type", "application/xml");
        req.payload_sha256 = hex(&Sha256::digest(body.as_bytes()));
        let reply = self.send(i, req, Body::Bytes(body.as_bytes()))?;
        // S3 may answer 200 and report the failure in the body.
        let error = xml::error(&reply.body);
        if error.as_ref().is_some_and(|(c, _)| c == "NoSuchUpload") {
            return self.upload_gone(i, spec, upload_id);
        }
        if !reply.ok() || error.is_some() {
            return Err(classify(&Reply { status: if reply.ok() { 500 } else { reply.status }, ..reply }, &format!("CompleteMultipartUpload {key}")));
        }
        if self.opts.verify_etag {
            // The object's ETag is the MD5 of the parts' MD5s, "-N": one more check that the
            // server assembled the parts we sent.
            let mut all = Md5::new();
            for e in etags {
                let mut raw = [0u8; 16];
                for (j, b) in raw.iter_mut().enumerate() {
                    *b = e.get(2 * j..2 * j + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(0);
                }
                all.update(raw);
            }
            let expected = format!("{}-{}", hex(&all.finalize()), etags.len());
            match xml::complete_etag(&reply.body) {
                Some(e) if unquote(&e).eq_ignore_ascii_case(&expected) => {}
                other => log::warn!(target: "lectern_upload", "recording {}: {key} completed with ETag {other:?}, expected {expected}", spec.recording_id),
            }
        }
        log::info!(target: "lectern_upload", "recording {}: {key} complete on {} ({} parts)", spec.recording_id, self.opts.endpoints[i], etags.len());
        Ok(Step::Done { progress: to_value(&Progress::Done { key: key.clone() }), remote_ref: key, sent: 0 })
    }
}

fn manifest_bytes(spec: &UploadSpec) -> u64 {
    spec.manifest.as_ref().map_or(0, |m| m.bytes)
}

fn to_value(p: &Progress) -> Value {
    serde_json::to_value(p).expect("progress serialises")
}

fn parse_progress(progress: &Value) -> Result<Option<Progress>, UploadError> {
    if progress.is_null() {
        return Ok(None);
    }
    serde_json::from_value(progress.clone())
        .map(Some)
        .map_err(|e| UploadError::new(Class::Restart, format!("S3 progress {progress} is not ours ({e}): starting again")))
}

impl Target for S3Target {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn endpoints(&self) -> &[String] {
        &self.opts.endpoints
    }

    fn health(&mut self, i: usize) -> Result<(), UploadError> {
        let reply = self.send(i, Req::new("HEAD", ""), Body::Empty)?;
        match reply.status {
            200 => Ok(()),
            404 => Err(UploadError::new(Class::Refused, format!("{}: bucket {} does not exist", self.opts.endpoints[i], self.opts.bucket))),
            _ => Err(classify(&reply, &format!("HeadBucket {} on {}", self.opts.bucket, self.opts.endpoints[i]))),
        }
    }

    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo) -> Result<Step, UploadError> {
        let trusted = self.trusted.take().is_some_and(|t| &t == progress);
        let result = match parse_progress(progress)? {
            None => self.step_fresh(i, spec),
            Some(Progress::Manifest) => self.step_manifest(i, spec, io),
            Some(Progress::Create) => self.step_create(i, spec),
            Some(Progress::Upload { upload_id, part_bytes, etags }) => {
                let confirmed = if trusted { Ok(Some(etags)) } else { self.reconcile(i, spec, &upload_id, part_bytes, &etags) };
                match confirmed {
                    Ok(Some(etags)) => self.step_upload(i, spec, io, &upload_id, part_bytes, etags),
                    Ok(None) => self.upload_gone(i, spec, &upload_id),
                    Err(e) => Err(e),
                }
            }
            Some(Progress::Done { key }) => Ok(Step::Done { progress: progress.clone(), remote_ref: key, sent: 0 }),
        };
        if let Ok(Step::Progress { progress, .. } | Step::Done { progress, .. }) = &result {
            self.trusted = Some(progress.clone());
        }
        result
    }

    fn resumable_across_endpoints(&self) -> bool {
        self.opts.same_storage
    }

    fn abandon(&mut self, i: usize, spec: &UploadSpec, progress: &Value) -> Result<Option<String>, UploadError> {
        self.trusted = None;
        let progress = match parse_progress(progress) {
            Ok(Some(p)) => p,
            // Nothing was created from this progress.
            Ok(None) | Err(_) => return Ok(None),
        };
        if let Some(key) = self.head_media(i, spec)? {
            return Ok(Some(key));
        }
        if let Progress::Upload { upload_id, .. } = &progress {
            self.abort(i, &self.media_key(spec), upload_id)?;
        }
        if matches!(progress, Progress::Create | Progress::Upload { .. }) {
            // The manifest alone would be a recording announced on a server that never gets it.
            let key = self.manifest_key(spec);
            let reply = self.send(i, Req::new("DELETE", &key), Body::Empty)?;
            if !reply.ok() && reply.status != 404 {
                return Err(classify(&reply, &format!("DeleteObject {key}")));
            }
        }
        Ok(None)
    }
}

/// AWS Signature Version 4 in the `Authorization` header, sans-IO: the time comes in as
/// `amz_date`. Payloads are always hashed (`x-amz-content-sha256` carries the hex SHA-256), so
/// S3 verifies every body it receives.
pub mod sigv4 {
    use std::fmt::Write as _;
    use std::time::SystemTime;

    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};

    /// Who signs, where, when.
    #[derive(Debug, Clone, Copy)]
    pub struct Signing<'a> {
        pub access_key: &'a str,
        pub secret_key: &'a str,
        pub region: &'a str,
        /// `YYYYMMDDTHHMMSSZ`.
        pub amz_date: &'a str,
    }

    /// `YYYYMMDDTHHMMSSZ` for `t` (UTC).
    pub fn amz_date(t: SystemTime) -> String {
        let t: chrono::DateTime<chrono::Utc> = t.into();
        t.format("%Y%m%dT%H%M%SZ").to_string()
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` when
    /// `keep_slash`, for object keys in paths), as SigV4 requires.
    pub fn uri_encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
                b'/' if keep_slash => out.push('/'),
                _ => write!(out, "%{b:02X}").expect("String"),
            }
        }
        out
    }

    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// The `Authorization` header. `path` is already encoded; `query` is the encoded query
    /// string with its pairs sorted; `headers` are every signed header, lowercase names, sorted.
    pub fn authorization(s: &Signing<'_>, method: &str, path: &str, query: &str, headers: &[(String, String)], payload_sha256: &str) -> String {
        let mut canonical = format!("{method}\n{path}\n{query}\n");
        for (k, v) in headers {
            writeln!(canonical, "{k}:{}", v.trim()).expect("String");
        }
        let signed = headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
        write!(canonical, "\n{signed}\n{payload_sha256}").expect("String");
        let date = &s.amz_date[..8.min(s.amz_date.len())];
        let scope = format!("{date}/{}/s3/aws4_request", s.region);
        let to_sign = format!("AWS4-HMAC-SHA256\n{}\n{scope}\n{}", s.amz_date, super::hex(&Sha256::digest(canonical.as_bytes())));
        let mut key = hmac(format!("AWS4{}", s.secret_key).as_bytes(), date.as_bytes());
        for part in [s.region, "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        let signature = super::hex(&hmac(&key, to_sign.as_bytes()));
        format!("AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}", s.access_key)
    }
}

/// The few S3 XML replies this target reads.
mod xml {
    use roxmltree::{Document, Node};

    fn child<'a>(n: Node<'a, 'a>, name: &str) -> Option<Node<'a, 'a>> {
        n.children().find(|c| c.is_element() && c.tag_name().name() == name)
    }

    fn text(n: Node<'_, '_>, name: &str) -> Option<String> {
        child(n, name).map(|c| c.text().unwrap_or("").to_owned())
    }

    fn doc(body: &str) -> Result<Document<'_>, String> {
        Document::parse(body).map_err(|e| format!("unreadable XML reply ({e})"))
    }

    /// `<Error><Code>…</Code><Message>…</Message></Error>`: the code and message.
    pub(super) fn error(body: &str) -> Option<(String, String)> {
        let d = Document::parse(body).ok()?;
        let root = d.root_element();
        (root.tag_name().name() == "Error").then(|| (text(root, "Code").unwrap_or_default(), text(root, "Message").unwrap_or_default()))
    }

    /// CreateMultipartUpload's upload id.
    pub(super) fn upload_id(body: &str) -> Result<String, String> {
        let d = doc(body)?;
        text(d.root_element(), "UploadId").filter(|u| !u.is_empty()).ok_or_else(|| format!("no UploadId in {body:?}"))
    }

    /// CompleteMultipartUpload's ETag.
    pub(super) fn complete_etag(body: &str) -> Option<String> {
        let d = Document::parse(body).ok()?;
        text(d.root_element(), "ETag")
    }

    pub(super) struct Parts {
        /// Number, ETag, size.
        pub(super) parts: Vec<(u32, String, u64)>,
        /// The part-number marker of the next page.
        pub(super) next: Option<u32>,
    }

    pub(super) fn parts(body: &str) -> Result<Parts, String> {
        let d = doc(body)?;
        let root = d.root_element();
        let mut parts = Vec::new();
        for p in root.children().filter(|c| c.tag_name().name() == "Part") {
            let num = text(p, "PartNumber").and_then(|n| n.parse().ok()).ok_or("a Part without PartNumber")?;
            let size = text(p, "Size").and_then(|n| n.parse().ok()).ok_or("a Part without Size")?;
            parts.push((num, text(p, "ETag").unwrap_or_default(), size));
        }
        let next = if text(root, "IsTruncated").as_deref() == Some("true") {
            Some(text(root, "NextPartNumberMarker").and_then(|n| n.parse().ok()).filter(|n| *n > 0).ok_or("truncated without NextPartNumberMarker")?)
        } else {
            None
        };
        Ok(Parts { parts, next })
    }

    pub(super) struct Uploads {
        /// Key, upload id.
        pub(super) uploads: Vec<(String, String)>,
        /// The key and upload-id markers of the next page.
        pub(super) next: Option<(String, String)>,
    }

    pub(super) fn uploads(body: &str) -> Result<Uploads, String> {
        let d = doc(body)?;
        let root = d.root_element();
        let uploads = root
            .children()
            .filter(|c| c.tag_name().name() == "Upload")
            .filter_map(|u| Some((text(u, "Key")?, text(u, "UploadId")?)))
            .collect();
        let next = (text(root, "IsTruncated").as_deref() == Some("true"))
            .then(|| Some((text(root, "NextKeyMarker")?, text(root, "NextUploadIdMarker")?)))
            .flatten();
        Ok(Uploads { uploads, next })
    }

    /// Text for an XML element.
    pub(super) fn escape(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_sig(method: &str, path: &str, query: &str, extra: &[(&str, &str)], payload: &str, expect: &str) {
        let mut headers: Vec<(String, String)> = extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        headers.push(("host".into(), "examplebucket.s3.amazonaws.com".into()));
        headers.push(("x-amz-content-sha256".into(), payload.into()));
        headers.push(("x-amz-date".into(), "20130524T000000Z".into()));
        headers.sort();
        let s = sigv4::Signing { access_key: "AKIAIOSFODNN7EXAMPLE", secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1", amz_date: "20130524T000000Z" };
        let auth = sigv4::authorization(&s, method, path, query, &headers, payload);
        assert!(auth.ends_with(&format!("Signature={expect}")), "{auth}");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders="));
    }

    /// The examples of AWS's "Signature Calculations for the Authorization Header" page.
    #[test]
    fn sigv4_matches_the_aws_examples() {
        check_sig("GET", "/test.txt", "", &[("range", "bytes=0-9")], EMPTY_SHA256, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        check_sig("GET", "/", "max-keys=2&prefix=J", &[], EMPTY_SHA256, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
        check_sig("GET", "/", "lifecycle=", &[], EMPTY_SHA256, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    }

    #[test]
    fn uri_encoding_keeps_slashes_in_keys_only() {
        assert_eq!(sigv4::uri_encode("a b/c$d~", true), "a%20b/c%24d~");
        assert_eq!(sigv4::uri_encode("a/b", false), "a%2Fb");
    }

    fn check_class(status: u16, body: &str, expect: Class) {
        let reply = Reply { status, etag: None, sha256_meta: None, retry_after: Some("7".into()), body: body.into() };
        assert_eq!(classify(&reply, "PUT x").class, expect, "{status} {body}");
    }

    fn err(code: &str) -> String {
        format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m</Message></Error>")
    }

    #[test]
    fn replies_are_classified() {
        let t = Class::Transient { retry_after: Some(Duration::from_secs(7)) };
        check_class(403, &err("SignatureDoesNotMatch"), Class::Auth);
        check_class(403, &err("InvalidAccessKeyId"), Class::Auth);
        check_class(403, "", Class::Auth);
        check_class(401, "", Class::Auth);
        check_class(503, &err("SlowDown"), t.clone());
        check_class(500, "", t.clone());
        check_class(429, "", t.clone());
        check_class(408, "", t.clone());
        check_class(400, &err("RequestTimeout"), t.clone());
        check_class(400, &err("BadDigest"), t);
        check_class(404, &err("NoSuchBucket"), Class::Refused);
        check_class(400, &err("EntityTooSmall"), Class::Refused);
        check_class(404, &err("NoSuchUpload"), Class::Restart);
    }

    #[test]
    fn endpoints_sign_the_host_clients_send() {
        let e = parse_endpoint("https://s3.example.org:443/gw/", "media", true).unwrap();
        assert_eq!((e.host.as_str(), e.base.as_str()), ("s3.example.org", "/gw/media/"));
        let e = parse_endpoint("http://127.0.0.1:9000", "media", true).unwrap();
        assert_eq!((e.host.as_str(), e.base.as_str()), ("127.0.0.1:9000", "/media/"));
        let e = parse_endpoint("https://s3.example.org", "media", false).unwrap();
        assert_eq!((e.host.as_str(), e.base.as_str()), ("media.s3.example.org", "/"));
        assert!(parse_endpoint("ftp://x", "b", true).is_err());
    }

    #[test]
    fn progress_round_trips_as_tagged_json() {
        let p = Progress::Upload { upload_id: "u".into(), part_bytes: 5, etags: vec!["e".into()] };
        let v = to_value(&p);
        assert_eq!(v["stage"], "upload");
        assert_eq!(parse_progress(&v).unwrap(), Some(p));
        assert_eq!(parse_progress(&serde_json::json!({"stage": "nonsense"})).unwrap_err().class, Class::Restart);
    }

    #[test]
    fn xml_replies_parse() {
        let body = r#"<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><IsTruncated>true</IsTruncated><NextPartNumberMarker>2</NextPartNumberMarker>
            <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag><Size>5</Size></Part><Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><Size>3</Size></Part></ListPartsResult>"#;
        let p = xml::parts(body).unwrap();
        assert_eq!(p.parts, vec![(1, "\"aa\"".into(), 5), (2, "\"bb\"".into(), 3)]);
        assert_eq!(p.next, Some(2));
        assert_eq!(xml::error(&err("SlowDown")), Some(("SlowDown".into(), "m".into())));
        assert_eq!(xml::error("<CompleteMultipartUploadResult/>"), None);
    }
}
