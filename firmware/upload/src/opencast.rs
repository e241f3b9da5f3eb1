//! The Opencast target: a recording goes to Opencast through its chunked upload service
//! (`org.opencastproject.fileupload`), resumable chunk by chunk, and is ingested exactly once.
//! The protocol calls are `lectern_opencast::fileupload`'s; this module only decides which one
//! comes next from the persisted progress.
//!
//! # Steps (each one's progress is persisted by the runner before the next)
//!
//! 1. *start* (progress `null`): ask whether media package `mp_id` was already ingested (the
//!    lookup; an answer lost after an ingest must not lead to a second package), then
//!    `createMediaPackageWithID/{mp_id}`, `addDCCatalog` (episode; series if the event has one;
//!    for an ad-hoc recording the generated episode of `IngestJob::adhoc`) and `addAttachment`
//!    of the manifest JSON with flavor `lectern/manifest` → `package`.
//! 2. *package*: `newjob` (filename, size, chunk size, `opencast.flavor`, the media package) →
//!    `chunks` at chunk 0. Without a fileupload service (discovery lists none) the track goes up
//!    in one streamed `addTrack` instead — **not resumable**: an interruption sends the whole
//!    file again (from this step, not from the media package) → `uploaded`.
//! 3. *chunks*: one chunk per step. The chunk number is trusted only when this very target
//!    returned it from the immediately preceding successful step; after an error, a restart or a
//!    crash the job is asked first (`GET /upload/job/{id}.json`) and the upload continues where
//!    the server says (never guessed; at most the interrupted chunk is sent again). "Wrong chunk
//!    number" → ask and continue from the server's chunk; "Job is locked" or a job in progress →
//!    transient, asked again after a second; a job that is gone → [`Class::Restart`]. After the
//!    last chunk the job's media package (now with the track) → `uploaded`.
//! 4. *uploaded* → `ingesting`: nothing is sent; the mark that the ingest may go out is durable
//!    before it does.
//! 5. *ingesting*: after an error or a restart the lookup first (ingested → done); then
//!    `ingest/{workflow}` with `workflowInstanceId` = `mp_id` → `Done{remote_ref: mp_id}`.
//!
//! # Exactly once
//!
//! `mp_id` is deterministic: the event UID of a scheduled recording (Opencast keys a scheduled
//! event by it), `lectern-adhoc-{recording id}` for an ad-hoc one. A restart from empty progress
//! therefore names the same package, and starts with the lookup; a lost ingest answer is
//! followed by the lookup before anything is sent again. When the server cannot tell (the
//! account may not read the workflow service), the ingest is repeated with the same `mp_id`, so
//! Opencast updates one event rather than creating a second; the log says so.
//!
//! Known limit: for a scheduled event the lookup key is the event UID (Opencast files a
//! scheduled ingest under it), so a *second box* that recorded another part of the same event
//! (docs/opencast.md, "A box replaced mid-lecture") finds the first box's ingest and reports its
//! own upload as done without sending it. Telling the two apart needs a per-box discriminator
//! in `UploadSpec` (the manifest's device) and a lookup that compares the ingested track's
//! checksum; until then that scenario must use the outbox ingest.
//!
//! `health` is `GET /info/me.json` (creates nothing). `abandon` looks the package up when the
//! ingest may have been sent and then reports it as arrived. Upload jobs left behind are removed
//! by Opencast's own cleaner (6 h). Each endpoint is its own Opencast base URL with its own
//! discovery; `opencast.*_url` overrides apply to `opencast.url` only.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lectern_config::OpencastConfig;
use lectern_opencast::fileupload::bytes_body;
use lectern_opencast::{ChunkReply, Client, IngestJob, IngestLookup, JobState, OpencastError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::target::{Class, Step, StepIo, Target, UploadError, UploadSpec};

/// The flavor of the manifest attachment.
pub const MANIFEST_FLAVOR: &str = "lectern/manifest";
/// How long to wait before asking a locked job again.
const LOCKED_RETRY: Duration = Duration::from_secs(1);

/// The persisted progress (the job's JSON); see the module doc.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Progress {
    Package { mp_id: String, mp: String, chunked: bool },
    Chunks { mp_id: String, job: String, chunk_bytes: u64, chunks: u64, next: u64 },
    Uploaded { mp_id: String, mp: String },
    Ingesting { mp_id: String, mp: String },
    Ingested { mp_id: String },
}

/// The Opencast target; see the module doc.
pub struct OpencastTarget {
    cfg: OpencastConfig,
    agent_name: String,
    endpoints: Vec<String>,
    chunk_bytes: u64,
    clients: Vec<Option<Client>>,
    /// The endpoint and progress the last successful step returned: the only progress trusted
    /// without asking the server.
    last: Option<(usize, Progress)>,
}

impl std::fmt::Debug for OpencastTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpencastTarget").field("endpoints", &self.endpoints).field("chunk_bytes", &self.chunk_bytes).finish_non_exhaustive()
    }
}

/// A reader that counts what it hands on into a shared counter (the bytes a failed request put
/// on the wire).
struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.n.fetch_add(got as u64, Ordering::Relaxed);
        Ok(got)
    }
}

/// Maps a client error to the runner's classes (the client already re-authenticated once).
fn classify(e: OpencastError) -> UploadError {
    let message = e.to_string();
    match &e {
        OpencastError::Auth { .. } | OpencastError::Challenge(_) => UploadError::new(Class::Auth, message),
        OpencastError::Status { status, retry_after, .. } => UploadError::from_status(*status, retry_after.as_deref(), message),
        OpencastError::Io { .. } => UploadError::new(Class::Local, message),
        _ => UploadError::transient(message),
    }
}

fn transient_locked(message: String) -> UploadError {
    UploadError::new(Class::Transient { retry_after: Some(LOCKED_RETRY) }, message)
}

impl OpencastTarget {
    /// `endpoints` are Opencast base URLs, primary first (usually `cfg.url` first);
    /// `chunk_bytes` is the chunk size of the upload service (at most 2 GiB − 1, Opencast
    /// keeps it in an `int`).
    pub fn new(cfg: &OpencastConfig, agent_name: &str, endpoints: Vec<String>, chunk_bytes: u64) -> OpencastTarget {
        let endpoints = if endpoints.is_empty() { vec![cfg.url.clone()] } else { endpoints };
        OpencastTarget {
            cfg: cfg.clone(),
            agent_name: agent_name.to_owned(),
            clients: endpoints.iter().map(|_| None).collect(),
            endpoints,
            chunk_bytes: chunk_bytes.clamp(1, i32::MAX as u64),
            last: None,
        }
    }

    fn client(&mut self, i: usize) -> Result<&mut Client, UploadError> {
        let url = self.endpoints.get(i).ok_or_else(|| UploadError::new(Class::Refused, format!("no Opencast endpoint {i}")))?.clone();
        let slot = &mut self.clients[i];
        if slot.is_none() {
            let mut cfg = self.cfg.clone();
            if url != cfg.url {
                // Overrides name services of the configured server, not of a standby.
                cfg.capture_admin_url = None;
                cfg.scheduler_url = None;
                cfg.ingest_url = None;
            }
            cfg.url = url;
            *slot = Some(Client::new(&cfg, &self.agent_name));
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// The media package id, workflow instance id and generated metadata of a recording.
    fn identity(&self, spec: &UploadSpec) -> (String, Option<String>, Option<String>) {
        match &spec.event {
            Some(ev) => (ev.uid.clone(), ev.episode_dc.clone(), ev.series_dc.clone()),
            None => {
                let job = IngestJob::adhoc(&spec.recording_id, &self.agent_name, spec.started_at_ms, Vec::new());
                (job.event_uid, job.episode_dc, job.series_dc)
            }
        }
    }

    fn filename(spec: &UploadSpec) -> String {
        spec.media.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("{}.mp4", spec.recording_id))
    }

    fn manifest_bytes(spec: &UploadSpec) -> u64 {
        spec.manifest.as_ref().map_or(0, |m| m.bytes)
    }

    fn start(&mut self, i: usize, spec: &UploadSpec, io: &StepIo) -> Result<(Progress, u64), UploadError> {
        let (mp_id, episode, series) = self.identity(spec);
        let rid = spec.recording_id.clone();
        let manifest = match &spec.manifest {
            Some(m) => {
                let mut bytes = Vec::with_capacity(m.bytes as usize);
                io.read_range(&m.path, 0, m.bytes)?.read_to_end(&mut bytes).map_err(|e| UploadError::new(Class::Local, format!("read {}: {e}", m.path.display())))?;
                Some((m.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "manifest.json".into()), bytes))
            }
            None => None,
        };
        let c = self.client(i)?;
        let services = c.upload_services().map_err(classify)?;
        match c.ingest_lookup(&mp_id).map_err(classify)? {
            IngestLookup::Ingested { workflows } => {
                log::info!(target: "upload", "recording {rid}: media package {mp_id} was already ingested ({workflows} workflow(s)); nothing to send");
                return Ok((Progress::Ingested { mp_id }, 0));
            }
            IngestLookup::NotIngested => {}
            IngestLookup::Unknown(why) => log::info!(target: "upload", "recording {rid}: cannot tell whether {mp_id} was ingested ({why}); its id is fixed, so a repeat updates one event"),
        }
        let mut mp = c.create_media_package_with_id(&mp_id).map_err(classify)?;
        for (flavor, dc) in [("dublincore/episode", episode), ("dublincore/series", series)] {
            if let Some(dc) = dc {
                mp = c.add_dc_catalog(&mp, flavor, &dc).map_err(classify)?;
            }
        }
        let mut sent = 0;
        if let Some((name, bytes)) = manifest {
            let len = bytes.len() as u64;
            let open = bytes_body(bytes);
            mp = c.add_attachment(&mp, MANIFEST_FLAVOR, &name, len, &open).map_err(|e| classify(e).with_sent(len))?;
            sent = len;
        }
        log::info!(target: "upload", "recording {rid}: media package {mp_id} created on {} ({})", self.endpoints[i], if services.fileupload.is_some() { "chunked upload" } else { "no fileupload service: one streamed addTrack" });
        Ok((Progress::Package { mp_id, mp, chunked: services.fileupload.is_some() }, sent))
    }

    fn package(&mut self, i: usize, spec: &UploadSpec, io: &StepIo, mp_id: String, mp: String, chunked: bool) -> Result<(Progress, u64), UploadError> {
        let (size, filename, flavor, chunk_bytes) = (spec.media.bytes, Self::filename(spec), self.cfg.flavor.clone(), self.chunk_bytes);
        if size == 0 {
            return Err(UploadError::new(Class::Local, format!("{} is empty", spec.media.path.display())));
        }
        let c = self.client(i)?;
        if chunked {
            match c.new_upload_job(&filename, size, chunk_bytes, &flavor, &mp) {
                Ok(job) => {
                    log::info!(target: "upload", "recording {}: upload job {job} for {size} bytes in chunks of {chunk_bytes}", spec.recording_id);
                    return Ok((Progress::Chunks { mp_id, job, chunk_bytes, chunks: size.div_ceil(chunk_bytes), next: 0 }, 0));
                }
                // The service is registered but this account may not use it (a stock
                // capture-agent role has no `/upload/**`): the recording still goes up, whole.
                Err(e @ OpencastError::Status { status: 403..=405, .. }) => log::warn!(
                    target: "upload",
                    "recording {}: chunked upload refused ({e}); sending the file in one streamed addTrack, which is not resumable — grant the account /upload/** (docs/opencast.md)",
                    spec.recording_id
                ),
                Err(e) => return Err(classify(e)),
            }
        }
        let counter = Arc::new(AtomicU64::new(0));
        let open = counting_range(io, &spec.media.path, 0, size, &counter);
        let mp = c.add_track_stream(&mp, &flavor, &filename, size, &open).map_err(|e| classify(e).with_sent(counter.load(Ordering::Relaxed)))?;
        Ok((Progress::Uploaded { mp_id, mp }, counter.load(Ordering::Relaxed)))
    }

    /// Asks the job where it stands: the chunk to send next, or the finished media package.
    fn ask(c: &mut Client, rid: &str, job: &str, chunks: u64) -> Result<Result<u64, String>, UploadError> {
        let j = c.upload_job(job).map_err(classify)?.ok_or_else(|| UploadError::new(Class::Restart, format!("recording {rid}: upload job {job} is gone on the server")))?;
        match j.state {
            JobState::Complete => j.mediapackage.map(Err).ok_or_else(|| UploadError::transient(format!("recording {rid}: upload job {job} is complete without a media package"))),
            _ if j.locked() => Err(transient_locked(format!("recording {rid}: upload job {job} is {:?} (an earlier request is still held)", j.state))),
            _ if j.next_chunk() >= chunks => Err(UploadError::transient(format!("recording {rid}: upload job {job} holds all {chunks} chunks but is not complete"))),
            _ => Ok(Ok(j.next_chunk())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn chunk(&mut self, i: usize, spec: &UploadSpec, io: &StepIo, trusted: bool, mp_id: String, job: String, chunk_bytes: u64, chunks: u64, next: u64) -> Result<(Progress, u64, u64), UploadError> {
        let rid = spec.recording_id.clone();
        let (size, filename) = (spec.media.bytes, Self::filename(spec));
        let c = self.client(i)?;
        let confirmed = |n: u64| (n * chunk_bytes).min(size);
        let next = if trusted && next < chunks {
            next
        } else {
            match Self::ask(c, &rid, &job, chunks)? {
                Err(mp) => return Ok((Progress::Uploaded { mp_id, mp }, size, 0)),
                Ok(n) => {
                    if n != next {
                        log::info!(target: "upload", "recording {rid}: job {job} continues at chunk {n} of {chunks} (the server's position; progress said {next})");
                    }
                    n
                }
            }
        };
        let offset = next * chunk_bytes;
        let len = chunk_bytes.min(size - offset);
        let counter = Arc::new(AtomicU64::new(0));
        let open = counting_range(io, &spec.media.path, offset, len, &counter);
        let sent = || counter.load(Ordering::Relaxed);
        let reply = c.upload_chunk(&job, next, &filename, len, &open).map_err(|e| classify(e).with_sent(sent()))?;
        match reply {
            ChunkReply::Accepted if next + 1 < chunks => Ok((Progress::Chunks { mp_id, job, chunk_bytes, chunks, next: next + 1 }, confirmed(next + 1), sent())),
            ChunkReply::Accepted => match Self::ask(c, &rid, &job, chunks) {
                Ok(Err(mp)) => Ok((Progress::Uploaded { mp_id, mp }, size, sent())),
                // Not complete yet (finalizing): the next step asks again.
                Ok(Ok(_)) | Err(_) => Ok((Progress::Chunks { mp_id, job, chunk_bytes, chunks, next: chunks }, size, sent())),
            },
            ChunkReply::WrongChunk(why) => {
                log::info!(target: "upload", "recording {rid}: job {job} refused chunk {next}: {why}; asking where it stands");
                match Self::ask(c, &rid, &job, chunks).map_err(|e| e.with_sent(sent()))? {
                    Err(mp) => Ok((Progress::Uploaded { mp_id, mp }, size, sent())),
                    Ok(n) => Ok((Progress::Chunks { mp_id, job, chunk_bytes, chunks, next: n }, confirmed(n), sent())),
                }
            }
            ChunkReply::Locked(why) => Err(transient_locked(format!("recording {rid}: job {job} chunk {next}: {why}")).with_sent(sent())),
            ChunkReply::Gone => Err(UploadError::new(Class::Restart, format!("recording {rid}: upload job {job} is gone on the server")).with_sent(sent())),
        }
    }

    fn lookup_says_ingested(&mut self, i: usize, rid: &str, mp_id: &str) -> Result<bool, UploadError> {
        match self.client(i)?.ingest_lookup(mp_id).map_err(classify)? {
            IngestLookup::Ingested { workflows } => {
                log::info!(target: "upload", "recording {rid}: media package {mp_id} was ingested ({workflows} workflow(s)); the answer had been lost");
                Ok(true)
            }
            IngestLookup::NotIngested => Ok(false),
            IngestLookup::Unknown(why) => {
                log::warn!(target: "upload", "recording {rid}: cannot tell whether {mp_id} was ingested ({why}); sending the ingest of the same package again");
                Ok(false)
            }
        }
    }

    fn ingest(&mut self, i: usize, spec: &UploadSpec, mp_id: &str, mp: &str) -> Result<(), UploadError> {
        let workflow = spec.event.as_ref().and_then(|e| e.workflow.clone());
        let config: Vec<(String, String)> = spec.event.as_ref().map(|e| e.workflow_config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        let config: Vec<(&str, &str)> = config.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.client(i)?.ingest_media_package(mp, workflow.as_deref(), mp_id, &config).map_err(classify)?;
        log::info!(target: "upload", "recording {}: media package {mp_id} ingested on {}", spec.recording_id, self.endpoints[i]);
        Ok(())
    }

    fn step_inner(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo, trusted: bool) -> Result<Step, UploadError> {
        let p: Option<Progress> = match progress {
            Value::Null => None,
            v => Some(serde_json::from_value(v.clone()).map_err(|e| UploadError::new(Class::Restart, format!("recording {}: unreadable Opencast progress ({e}): {v}", spec.recording_id)))?),
        };
        let manifest = Self::manifest_bytes(spec);
        let (next, confirmed, sent) = match p {
            None => {
                let (p, sent) = self.start(i, spec, io)?;
                (p, sent, sent)
            }
            Some(Progress::Package { mp_id, mp, chunked }) => {
                let (p, sent) = self.package(i, spec, io, mp_id, mp, chunked)?;
                let confirmed = if matches!(p, Progress::Uploaded { .. }) { spec.media.bytes } else { 0 };
                (p, manifest + confirmed, sent)
            }
            Some(Progress::Chunks { mp_id, job, chunk_bytes, chunks, next }) => {
                let (p, confirmed, sent) = self.chunk(i, spec, io, trusted, mp_id, job, chunk_bytes, chunks, next)?;
                (p, manifest + confirmed, sent)
            }
            Some(Progress::Uploaded { mp_id, mp }) => (Progress::Ingesting { mp_id, mp }, manifest + spec.media.bytes, 0),
            Some(Progress::Ingesting { mp_id, mp }) => {
                if !trusted && self.lookup_says_ingested(i, &spec.recording_id, &mp_id)? {
                    (Progress::Ingested { mp_id }, spec.bytes_total(), 0)
                } else {
                    self.ingest(i, spec, &mp_id, &mp)?;
                    (Progress::Ingested { mp_id }, spec.bytes_total(), 0)
                }
            }
            Some(p @ Progress::Ingested { .. }) => (p, spec.bytes_total(), 0),
        };
        let value = serde_json::to_value(&next).expect("progress serialises");
        if let Progress::Ingested { mp_id } = next {
            return Ok(Step::Done { progress: value, remote_ref: mp_id, sent });
        }
        self.last = Some((i, next));
        Ok(Step::Progress { progress: value, bytes_confirmed: confirmed, sent })
    }
}

/// Opens `len` bytes of `path` from `offset` through the bandwidth cap, counting what is read.
fn counting_range<'a>(io: &'a StepIo, path: &'a std::path::Path, offset: u64, len: u64, counter: &'a Arc<AtomicU64>) -> impl Fn() -> std::io::Result<Box<dyn Read + Send + 'static>> + 'a {
    move || {
        let r = io.read_range(path, offset, len).map_err(|e| std::io::Error::other(e.message))?;
        Ok(Box::new(Counting { inner: r, n: counter.clone() }) as Box<dyn Read + Send>)
    }
}

impl Target for OpencastTarget {
    fn kind(&self) -> &'static str {
        "opencast"
    }

    fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn health(&mut self, i: usize) -> Result<(), UploadError> {
        self.client(i)?.whoami().map(drop).map_err(classify)
    }

    fn step(&mut self, i: usize, spec: &UploadSpec, progress: &Value, io: &StepIo) -> Result<Step, UploadError> {
        // Trust the progress only if this target produced it in the step just before.
        let last = self.last.take();
        let trusted = match (&last, progress) {
            (Some((li, lp)), v) if *li == i => serde_json::to_value(lp).ok().as_ref() == Some(v),
            _ => false,
        };
        self.step_inner(i, spec, progress, io, trusted)
    }

    fn abandon(&mut self, i: usize, spec: &UploadSpec, progress: &Value) -> Result<Option<String>, UploadError> {
        self.last = None;
        match serde_json::from_value::<Progress>(progress.clone()) {
            Ok(Progress::Ingested { mp_id }) => Ok(Some(mp_id)),
            Ok(Progress::Ingesting { mp_id, .. }) => Ok(self.lookup_says_ingested(i, &spec.recording_id, &mp_id)?.then_some(mp_id)),
            _ => Ok(None),
        }
    }
}
