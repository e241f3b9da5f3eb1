//! What the double remembers: every request, agent states, recording states, agent
//! configurations, calendar fetches, mediapackages with their catalogs, tracks and attachments,
//! and chunked upload jobs with what they received. Tests read
//! a [`Snapshot`]; the binary serves it as JSON at `GET /__double/state` and writes it on exit.
//!
//! Memory is bounded: the request log keeps the last [`MAX_REQUESTS`] entries, catalogs are a few
//! KiB each, and tracks are only described here (their bytes are files in the double's directory).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// The request log's length limit (oldest entries are dropped first).
pub const MAX_REQUESTS: usize = 10_000;

/// One HTTP exchange.
#[derive(Debug, Clone, Serialize)]
pub struct RequestEntry {
    /// Unix milliseconds when the request head had been read.
    pub at_ms: u64,
    pub method: String,
    pub target: String,
    pub status: u16,
    /// The authenticated user, if authentication passed.
    pub user: Option<String>,
    /// Which fault, if any, shaped the reply (`down`, `slow`, `status`, `garbage`, `truncated`).
    pub fault: Option<String>,
    /// Why the request was refused, for 4xx replies.
    pub error: Option<String>,
}

/// `POST /capture-admin/agents/{name}`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentState {
    pub at_ms: u64,
    pub agent: String,
    pub state: String,
    pub address: Option<String>,
}

/// `POST /capture-admin/recordings/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingState {
    pub at_ms: u64,
    pub id: String,
    pub state: String,
}

/// `POST /capture-admin/agents/{name}/configuration`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    pub at_ms: u64,
    pub agent: String,
    pub properties: BTreeMap<String, String>,
}

/// `GET /recordings/calendars`.
#[derive(Debug, Clone, Serialize)]
pub struct CalendarFetch {
    pub at_ms: u64,
    pub agent: Option<String>,
    /// The `cutoff` parameter, Unix milliseconds.
    pub cutoff_ms: Option<i64>,
    pub if_none_match: Option<String>,
    /// 200 or 304.
    pub status: u16,
    pub etag: String,
}

/// A Dublin Core catalog added with `addDCCatalog`.
#[derive(Debug, Clone, Serialize)]
pub struct Catalog {
    pub id: String,
    pub flavor: String,
    pub content: String,
}

/// A track added with `addTrack` (or by the last chunk of an upload job), or an attachment;
/// its bytes are in `path`.
#[derive(Debug, Clone, Serialize)]
pub struct Track {
    pub id: String,
    pub flavor: String,
    pub filename: String,
    pub bytes: u64,
    pub sha256: String,
    pub path: PathBuf,
}

/// An attachment added with `addAttachment`: a file element like a track.
pub type Attachment = Track;

/// A chunked upload job (`POST /upload/newjob` on).
#[derive(Debug, Clone, Serialize)]
pub struct UploadJob {
    pub id: String,
    pub created_ms: u64,
    pub filename: String,
    /// As announced at `newjob` (−1: unknown).
    pub filesize: i64,
    /// As announced at `newjob` (−1: one ordinary upload).
    pub chunksize: i64,
    pub chunks_total: u64,
    pub flavor: Option<String>,
    /// The media package the track goes into.
    pub mediapackage_id: Option<String>,
    /// The last chunk accepted; −1 before the first.
    pub current_chunk: i64,
    /// `READY`, `INPROGRESS`, `FINALIZING` or `COMPLETE` (as last stored; a held lock shows in
    /// the JSON only).
    pub state: String,
    /// Bytes of the file accepted (appended).
    pub current_size: u64,
    /// Chunks accepted.
    pub chunks_received: u64,
    /// Every chunk request that reached the handler, accepted or not.
    pub chunk_attempts: u64,
    /// File bytes that arrived in chunk requests, accepted, refused or cut (of a cut request: the
    /// body bytes read before the cut): minus `current_size`,
    /// what the client sent again.
    pub bytes_received: u64,
    /// Why chunks were refused, in order ("Wrong chunk number…", "Job is locked…", "cut").
    pub refusals: Vec<String>,
    /// The track's URL once the job is complete.
    pub url: Option<String>,
}

/// What `ingest` started.
#[derive(Debug, Clone, Serialize)]
pub struct Ingested {
    pub at_ms: u64,
    /// From the path (`/ingest/ingest/{wd}`) or the `workflowDefinitionId` field.
    pub workflow_definition_id: Option<String>,
    pub workflow_instance_id: Option<String>,
    /// Every other field, in order (the workflow configuration).
    pub params: Vec<(String, String)>,
    /// The element ids the final mediapackage XML referenced: an element the agent added but
    /// then dropped from the XML it sent back would not be in Opencast's ingest either.
    pub elements: Vec<String>,
    /// The workflow instance id the double assigned.
    pub workflow_id: u64,
}

/// A mediapackage from `createMediaPackage` on.
#[derive(Debug, Clone, Serialize)]
pub struct MediaPackage {
    pub id: String,
    pub created_ms: u64,
    /// How often `createMediaPackage(WithID)` produced this id (a client that retries with the
    /// same id shows here; >1 after an ingest means it created the package again after the
    /// ingest happened).
    pub creations: u32,
    pub catalogs: Vec<Catalog>,
    pub tracks: Vec<Track>,
    pub attachments: Vec<Attachment>,
    pub ingested: Option<Ingested>,
}

impl MediaPackage {
    /// The catalogs that made it into the ingest (all, if not ingested yet).
    pub fn ingested_catalogs(&self) -> impl Iterator<Item = &Catalog> {
        self.catalogs.iter().filter(|c| self.ingested.as_ref().is_none_or(|i| i.elements.contains(&c.id)))
    }

    /// The tracks that made it into the ingest (all, if not ingested yet).
    pub fn ingested_tracks(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| self.ingested.as_ref().is_none_or(|i| i.elements.contains(&t.id)))
    }
}

/// Everything the double has seen, in arrival order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub requests: Vec<RequestEntry>,
    pub agent_states: Vec<AgentState>,
    pub recording_states: Vec<RecordingState>,
    pub agent_configs: Vec<AgentConfig>,
    pub calendar_fetches: Vec<CalendarFetch>,
    pub mediapackages: Vec<MediaPackage>,
    pub upload_jobs: Vec<UploadJob>,
}

impl Snapshot {
    /// The states posted for recording `id`, in order.
    pub fn recording_states_of(&self, id: &str) -> Vec<&str> {
        self.recording_states.iter().filter(|r| r.id == id).map(|r| r.state.as_str()).collect()
    }

    /// The states posted by agent `name`, in order.
    pub fn agent_states_of(&self, name: &str) -> Vec<&str> {
        self.agent_states.iter().filter(|a| a.agent == name).map(|a| a.state.as_str()).collect()
    }

    /// Mediapackages that were ingested.
    pub fn ingested(&self) -> impl Iterator<Item = &MediaPackage> {
        self.mediapackages.iter().filter(|m| m.ingested.is_some())
    }

    /// Ingest calls the double accepted (each one starts a workflow).
    pub fn ingest_count(&self) -> usize {
        self.ingested().count()
    }

    /// Chunk file bytes received over all upload jobs, and of them accepted: the difference
    /// is what clients sent again.
    pub fn chunk_bytes(&self) -> (u64, u64) {
        self.upload_jobs.iter().fold((0, 0), |(r, a), j| (r + j.bytes_received, a + j.current_size))
    }

    /// Chunks accepted over all upload jobs.
    pub fn chunks_received(&self) -> u64 {
        self.upload_jobs.iter().map(|j| j.chunks_received).sum()
    }
}
