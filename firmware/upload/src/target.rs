//! The `Target` seam: what every place a recording can be uploaded to (Opencast, S3-compatible
//! storage, a folder) implements, and the values that cross it.
//!
//! A target is a *step function*: given the job's persisted progress it does one bounded piece
//! of work against one endpoint (create the server-side job, send one chunk or part, finish)
//! and returns the new progress, which the runner commits to the journal before it asks for the
//! next step. So a crash, a power cut or a dead link costs at most the step in flight, and the
//! next step starts from what is durable. Progress is the target's own JSON; nothing outside
//! the target reads it.
//!
//! **Resume rule:** a target never trusts its progress alone when it resumes after an error or
//! a restart: it asks the server where the upload stands (Opencast's job state, S3's
//! ListParts, the folder's partial file) and continues from there. Progress only says *which*
//! server-side upload to ask about.
//!
//! Errors are classified ([`Class`]) so the runner's policy can decide retry, back-off, park or
//! failover without knowing the protocol.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::throttle::{Throttle, Throttled};

/// A local file that is part of an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Absolute path on the box.
    pub path: PathBuf,
    /// Size in bytes when the job was created (the file never changes afterwards).
    pub bytes: u64,
    /// Lowercase hex SHA-256, from the stitch.
    pub sha256: String,
}

/// What Opencast needs to know about a scheduled event (absent for ad-hoc recordings, for
/// which the Opencast target generates the metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    pub uid: String,
    pub episode_dc: Option<String>,
    pub series_dc: Option<String>,
    pub workflow: Option<String>,
    #[serde(default)]
    pub workflow_config: std::collections::BTreeMap<String, String>,
}

/// Everything one upload job is about, serialised into the job's `spec` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSpec {
    pub recording_id: String,
    pub title: String,
    /// When the recording began (Unix ms): ad-hoc titles, object keys, folder names.
    pub started_at_ms: i64,
    /// The stitched MP4.
    pub media: FileRef,
    /// The manifest JSON beside it (gaps, segments, device).
    pub manifest: Option<FileRef>,
    /// The scheduled event, when there is one.
    pub event: Option<EventMeta>,
}

impl UploadSpec {
    /// Bytes this job puts on the wire at least once (media and manifest).
    pub fn bytes_total(&self) -> u64 {
        self.media.bytes + self.manifest.as_ref().map_or(0, |m| m.bytes)
    }
}

/// How a failed step should be treated; the runner's policy decides what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// No answer, a timeout, a reset, 408, 429, 5xx, a garbled reply: try again after a
    /// back-off (at least `retry_after` when the server said so).
    Transient { retry_after: Option<Duration> },
    /// 401 after the target re-authenticated once: the credentials are wrong or were rotated.
    /// Retried with back-off (an operator fixes it) and raised as an alarm.
    Auth,
    /// Any other 4xx, or a reply that says the request can never succeed: the job is parked
    /// with this reason and its media kept.
    Refused,
    /// The server lost the upload this progress refers to (an expired job, `NoSuchUpload`):
    /// start again from empty progress on the same endpoint.
    Restart,
    /// A local file cannot be read (gone, unreadable): parked, nothing on the server changed.
    Local,
}

/// A failed step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    pub class: Class,
    /// Names the URL or file and what went wrong, for `status` and the log.
    pub message: String,
    /// Bytes the failed step had put on the wire (they count as re-sent).
    pub sent: u64,
}

impl UploadError {
    pub fn transient(message: impl Into<String>) -> UploadError {
        UploadError { class: Class::Transient { retry_after: None }, message: message.into(), sent: 0 }
    }

    pub fn new(class: Class, message: impl Into<String>) -> UploadError {
        UploadError { class, message: message.into(), sent: 0 }
    }

    /// The same error, counting `sent` bytes that went out before it happened.
    pub fn with_sent(mut self, sent: u64) -> UploadError {
        self.sent = sent;
        self
    }

    /// Classifies an HTTP status that is not a success: 408/429/5xx transient (honouring
    /// `Retry-After` in seconds), 401 auth, other 4xx refused.
    pub fn from_status(status: u16, retry_after: Option<&str>, message: impl Into<String>) -> UploadError {
        let class = match status {
            401 => Class::Auth,
            408 | 429 | 500..=599 => Class::Transient { retry_after: retry_after.and_then(parse_retry_after) },
            400..=499 => Class::Refused,
            // 1xx/3xx where a final 2xx was expected: a proxy or a misconfiguration; retry.
            _ => Class::Transient { retry_after: None },
        };
        UploadError { class, message: message.into(), sent: 0 }
    }
}

/// `Retry-After` as delta-seconds (an HTTP date is ignored: the box's clock may be the one that
/// is wrong, and a back-off applies anyway).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(|s| Duration::from_secs(s.min(24 * 3600)))
}

/// What a successful step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// More to do: persist `progress`; the server now holds `bytes_confirmed` bytes of the job.
    Progress { progress: Value, bytes_confirmed: u64, sent: u64 },
    /// The server has the whole recording (for Opencast: ingested). `remote_ref` is the
    /// server's name for it (media package id, object key, final path).
    Done { progress: Value, remote_ref: String, sent: u64 },
}

/// What a target gets from the runner for I/O: file reads through the shared bandwidth cap.
#[derive(Clone)]
pub struct StepIo {
    throttle: Arc<Throttle>,
}

impl std::fmt::Debug for StepIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepIo").finish_non_exhaustive()
    }
}

impl StepIo {
    pub fn new(throttle: Arc<Throttle>) -> StepIo {
        StepIo { throttle }
    }

    /// No bandwidth cap (tests).
    pub fn unthrottled() -> StepIo {
        StepIo { throttle: Arc::new(Throttle::unlimited()) }
    }

    /// `len` bytes of `path` from `offset`, read through the bandwidth cap: hand it to the HTTP
    /// client as the request body. A file shorter than `offset + len` is a [`Class::Local`] error.
    pub fn read_range(&self, path: &Path, offset: u64, len: u64) -> Result<Throttled<std::io::Take<File>>, UploadError> {
        let local = |what: &str, e: std::io::Error| UploadError::new(Class::Local, format!("{what} {}: {e}", path.display()));
        let mut f = File::open(path).map_err(|e| local("open", e))?;
        let size = f.metadata().map_err(|e| local("stat", e))?.len();
        if offset.saturating_add(len) > size {
            return Err(UploadError::new(
                Class::Local,
                format!("{} holds {size} bytes, the upload needs bytes {offset}..{}", path.display(), offset + len),
            ));
        }
        f.seek(SeekFrom::Start(offset)).map_err(|e| local("seek", e))?;
        Ok(Throttled::new(f.take(len), self.throttle.clone()))
    }

    /// The shared throttle, for targets that stream from something other than a file range.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }
}

/// One place recordings are uploaded to; see the module doc.
pub trait Target: Send {
    /// `opencast`, `s3` or `folder`.
    fn kind(&self) -> &'static str;

    /// The endpoints, primary first (URLs, or the folder path). Never empty.
    fn endpoints(&self) -> &[String];

    /// A cheap check that endpoint `i` answers (failover and fail-back). Must not create
    /// anything on the server.
    fn health(&mut self, i: usize) -> Result<(), UploadError>;

    /// Does the next piece of `spec`'s upload on endpoint `i`, starting from `progress` (the
    /// value the previous step returned, `Value::Null` before the first step or after a
    /// restart). See the module doc for the resume rule.
    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo) -> Result<Step, UploadError>;

    /// Whether progress made on one endpoint can be resumed on another (true only when the
    /// endpoints front the same storage, e.g. two gateways of one S3 cluster). Default false:
    /// a job that moves starts again on the new endpoint, after [`Target::abandon`].
    fn resumable_across_endpoints(&self) -> bool {
        false
    }

    /// Before a job with `progress` on endpoint `i` moves elsewhere: make sure that endpoint will
    /// not also end up with the recording (Opencast: the ingest was never sent; S3: abort the
    /// multipart upload). `Ok(Some(remote_ref))` means the recording in fact already arrived
    /// there (a lost reply): the job is done on `i` and must not move. Best effort otherwise.
    fn abandon(&mut self, _i: usize, _spec: &UploadSpec, _progress: &Value) -> Result<Option<String>, UploadError> {
        Ok(None)
    }
}
