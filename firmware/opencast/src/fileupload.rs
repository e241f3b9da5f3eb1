//! The calls a resumable upload needs (`lectern-upload`'s Opencast target drives them one step
//! at a time): Opencast's chunked upload service (`org.opencastproject.fileupload`, usually at
//! `/upload`), building a media package with a chosen id, attachments, the final ingest of a
//! media package, and a lookup that tells whether a media package was already ingested. Retrying
//! is not done here; every failure is an [`OpencastError`] whose [`OpencastError::status`] and
//! [`OpencastError::retry_after`] let the caller classify it.
//!
//! # The chunked upload service (`FileUploadRestService`)
//!
//! - `POST {upload}/newjob` (form: `filename`, `filesize`, `chunksize`, `flavor`, `mediapackage`)
//!   → the job id as plain text. Opencast answers 204 when it could not create the job.
//! - `POST {upload}/job/{id}` (multipart: `chunknumber`, then the file part `filedata`) appends
//!   one chunk. Chunks are numbered from 0 and only `current-chunk.number + 1` is accepted
//!   (400 "Wrong chunk number. Awaiting #n but #m was offered."); every chunk but the last must
//!   be exactly `chunksize` bytes (400 "Chunk has wrong size"); while the server still holds an
//!   earlier request of the job it answers 400 "Job is locked"; a chunk whose body was cut leaves
//!   the job at the previous chunk. After the last chunk the server adds the file as a track
//!   (with `flavor`) to the media package given at `newjob` and the job is `COMPLETE`.
//! - `GET {upload}/job/{id}.json` → the job: `state` (READY, INPROGRESS, FINALIZING, COMPLETE),
//!   `chunksize`, `chunks-total`, `current-chunk.number` (−1 before the first chunk),
//!   `payload.currentsize`, `payload.url` and `payload.mediapackage`; 404 once the job is gone
//!   (Opencast deletes jobs untouched for `org.opencastproject.upload.cleaner.maxttl`, 6 h).
//!
//! `payload.mediapackage` is accepted as a string holding the XML (what the test double sends)
//! or, as Opencast's JAXB JSON writer may render it, as an object; for the latter the XML is
//! taken from `GET {upload}/job/{id}.xml` instead ([`extract_mediapackage`]).
//!
//! # Was it ingested? ([`IngestLookup`])
//!
//! `GET {workflow}/mediaPackage/{id}/instances.json` (workflow service,
//! `org.opencastproject.workflow`): every ingest starts a workflow on the media package, running
//! or finished, so one or more instances means the ingest happened. `hasActiveWorkflows` was not
//! chosen because it turns false once the workflow finished, and the external API's
//! `/api/events/{id}` because a scheduled event exists there before any ingest. A stock
//! Opencast grants `/workflow/**` to admins only: give the capture-agent role GET on
//! `/workflow/mediaPackage/**` (docs/opencast.md). Without it (401/403), without a registered
//! workflow service or with an answer that is not the instance list, the lookup says
//! [`IngestLookup::Unknown`], and the caller falls back on the media package id being
//! deterministic (a repeated ingest of the same id updates one event instead of creating two).

use std::io::Read;

use serde_json::Value;

use crate::client::{encode, excerpt, status_error, Client, OpenBody, Payload};
use crate::discovery::{self, Service};
use crate::error::{OpencastError, Result};

/// Service type of the chunked upload service.
pub const FILEUPLOAD_SERVICE: &str = "org.opencastproject.fileupload";
/// Service type of the workflow service (the ingest lookup).
pub const WORKFLOW_SERVICE: &str = "org.opencastproject.workflow";

/// Where the services of an upload live on one Opencast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadServices {
    /// Base URL of ingest (config override or discovery).
    pub ingest: String,
    /// Base URL of the chunked upload service; `None` when the registry has none (then the
    /// upload falls back to a streamed `addTrack`).
    pub fileupload: Option<String>,
    /// Base URL of the workflow service, for [`Client::ingest_lookup`].
    pub workflow: Option<String>,
}

/// An upload job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Ready,
    InProgress,
    Finalizing,
    Complete,
}

/// What `GET {upload}/job/{id}.json` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadJob {
    pub id: String,
    pub state: JobState,
    pub chunksize: i64,
    pub chunks_total: u64,
    /// The last chunk the server holds; −1 before the first.
    pub current_chunk: i64,
    /// Bytes of the file the server holds.
    pub current_size: u64,
    /// Where the finished file is (set once the job is complete).
    pub url: Option<String>,
    /// The media package XML, when the JSON carried it as a string.
    pub mediapackage: Option<String>,
}

impl UploadJob {
    /// The chunk the server accepts next.
    pub fn next_chunk(&self) -> u64 {
        (self.current_chunk + 1).max(0) as u64
    }

    /// Whether another request of this job is still being handled.
    pub fn locked(&self) -> bool {
        matches!(self.state, JobState::InProgress | JobState::Finalizing)
    }
}

/// The answer to one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkReply {
    /// 2xx: the server holds this chunk.
    Accepted,
    /// 400 "Wrong chunk number": the server is elsewhere; ask it where.
    WrongChunk(String),
    /// 400 "Job is locked": an earlier request of this job is still being handled.
    Locked(String),
    /// 404: the job is gone (expired or deleted).
    Gone,
}

/// Whether a media package was ingested; see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestLookup {
    /// At least this many workflow instances exist for the media package.
    Ingested { workflows: usize },
    NotIngested,
    /// The server could not tell (why).
    Unknown(String),
}

fn num(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses the JSON of an upload job (bare, or wrapped in `{"uploadjob": …}`), sans-IO.
pub fn parse_upload_job(url: &str, body: &[u8]) -> Result<UploadJob> {
    let err = |detail: String| OpencastError::Discovery { url: url.to_owned(), detail };
    let v: Value = serde_json::from_slice(body).map_err(|e| err(format!("upload job is not JSON: {e}")))?;
    let j = v.get("uploadjob").unwrap_or(&v);
    let id = j.get("id").and_then(Value::as_str).ok_or_else(|| err("upload job without an id".into()))?.to_owned();
    let state = match j.get("state").and_then(Value::as_str) {
        Some("READY") => JobState::Ready,
        Some("INPROGRESS") => JobState::InProgress,
        Some("FINALIZING") => JobState::Finalizing,
        Some("COMPLETE") => JobState::Complete,
        other => return Err(err(format!("upload job {id} has state {other:?}"))),
    };
    let payload = j.get("payload");
    Ok(UploadJob {
        state,
        chunksize: num(j.get("chunksize")).unwrap_or(-1),
        chunks_total: num(j.get("chunks-total")).unwrap_or(1).max(0) as u64,
        current_chunk: num(j.get("current-chunk").and_then(|c| c.get("number"))).unwrap_or(-1),
        current_size: num(payload.and_then(|p| p.get("currentsize"))).unwrap_or(0).max(0) as u64,
        url: payload.and_then(|p| p.get("url")).and_then(Value::as_str).map(str::to_owned),
        mediapackage: payload.and_then(|p| p.get("mediapackage")).and_then(Value::as_str).filter(|s| s.contains("mediapackage")).map(str::to_owned),
        id,
    })
}

/// The `<mediapackage>` element of an XML document (an upload job's XML), with a namespace
/// prefix JAXB may have put on it removed, so that it can be sent to ingest as it is.
pub fn extract_mediapackage(xml: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = xml[from..].find('<').map(|i| i + from) {
        let name: String = xml[i + 1..].chars().take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/').collect();
        from = i + 1;
        let (prefix, local) = name.rsplit_once(':').map_or(("", name.as_str()), |(p, l)| (p, l));
        if local != "mediapackage" {
            continue;
        }
        let close = format!("</{name}>");
        let end = xml[i..].find(&close)? + i + close.len();
        let element = &xml[i..end];
        return Some(if prefix.is_empty() {
            element.to_owned()
        } else {
            element.replace(&format!("<{prefix}:"), "<").replace(&format!("</{prefix}:"), "</").replace(&format!("xmlns:{prefix}="), "xmlns=")
        });
    }
    None
}

/// Counts the workflow instances in a workflow service list answer (`{"workflows":
/// {"workflow": […] | {…}}}` or a bare list), sans-IO; `None` when the shape is not that.
pub fn parse_workflow_instances(body: &[u8]) -> Option<usize> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let list = match &v {
        Value::Array(a) => return Some(a.len()),
        Value::Object(o) => o.get("workflows")?,
        _ => return None,
    };
    match list {
        Value::Array(a) => Some(a.len()),
        Value::Object(o) => match o.get("workflow") {
            None | Some(Value::Null) => Some(0),
            Some(Value::Array(a)) => Some(a.len()),
            Some(Value::Object(_)) => Some(1),
            Some(_) => None,
        },
        // Opencast renders an empty collection as an empty string.
        Value::String(s) if s.is_empty() => Some(0),
        _ => None,
    }
}

impl Client {
    /// Discovers ingest (config override first), the chunked upload service and the workflow
    /// service; cached until [`Client::forget_endpoints`]. A registry that lists no fileupload
    /// or workflow service is not an error (`None`); one that does not answer is.
    pub fn upload_services(&mut self) -> Result<UploadServices> {
        if let Some(s) = &self.upload_services {
            return Ok(s.clone());
        }
        let ingest = match self.cfg.ingest_url.clone() {
            Some(u) => u,
            None => self.discover(Service::Ingest)?,
        };
        let fileupload = self.discover_optional(FILEUPLOAD_SERVICE)?;
        let workflow = self.discover_optional(WORKFLOW_SERVICE)?;
        let s = UploadServices { ingest, fileupload, workflow };
        log::info!(target: "opencast", "{}: ingest {}, fileupload {:?}, workflow {:?}", self.cfg.url, s.ingest, s.fileupload, s.workflow);
        self.upload_services = Some(s.clone());
        Ok(s)
    }

    /// The first usable registration of `service_type`, or `None` when the registry has none.
    pub fn discover_optional(&mut self, service_type: &str) -> Result<Option<String>> {
        let url = format!("{}/services/available.json?serviceType={service_type}", self.cfg.url);
        let a = self.expect_ok("GET", &url, Payload::None, false)?;
        Ok(discovery::parse_available_or_none(&url, &a.body)?.into_iter().next())
    }

    /// `GET {url}/info/me.json`: who the server thinks we are. Creates nothing; the health
    /// check of an endpoint.
    pub fn whoami(&mut self) -> Result<String> {
        let url = format!("{}/info/me.json", self.cfg.url);
        let a = self.expect_ok("GET", &url, Payload::None, false)?;
        Ok(String::from_utf8_lossy(&a.body).into_owned())
    }

    /// `PUT {ingest}/createMediaPackageWithID/{id}`: an empty media package with our id, so a
    /// retry after a lost answer names the same package.
    pub fn create_media_package_with_id(&mut self, id: &str) -> Result<String> {
        let url = format!("{}/createMediaPackageWithID/{}", self.upload_services()?.ingest, encode(id));
        self.media_package("PUT", &url, Payload::Put, false)
    }

    /// `POST {ingest}/addDCCatalog` (form `mediaPackage`, `flavor`, `dublinCore`).
    pub fn add_dc_catalog(&mut self, mp: &str, flavor: &str, dc: &str) -> Result<String> {
        let url = format!("{}/addDCCatalog", self.upload_services()?.ingest);
        self.media_package("POST", &url, Payload::Form(&[("mediaPackage", mp), ("flavor", flavor), ("dublinCore", dc)]), false)
    }

    /// `POST {ingest}/addAttachment` (multipart `mediaPackage`, `flavor`, file part `BODY`).
    pub fn add_attachment(&mut self, mp: &str, flavor: &str, filename: &str, len: u64, open: OpenBody<'_>) -> Result<String> {
        let url = format!("{}/addAttachment", self.upload_services()?.ingest);
        let fields = [("mediaPackage", mp), ("flavor", flavor)];
        self.media_package("POST", &url, Payload::Stream { fields: &fields, file_field: "BODY", filename, len, open }, false)
    }

    /// `POST {ingest}/addTrack` with the track streamed from `open` (the fallback without the
    /// chunked upload service; not resumable).
    pub fn add_track_stream(&mut self, mp: &str, flavor: &str, filename: &str, len: u64, open: OpenBody<'_>) -> Result<String> {
        let url = format!("{}/addTrack", self.upload_services()?.ingest);
        let fields = [("mediaPackage", mp), ("flavor", flavor)];
        self.media_package("POST", &url, Payload::Stream { fields: &fields, file_field: "BODY", filename, len, open }, true)
    }

    fn fileupload_base(&mut self) -> Result<String> {
        let url = self.cfg.url.clone();
        self.upload_services()?.fileupload.ok_or(OpencastError::Discovery { url, detail: format!("no {FILEUPLOAD_SERVICE} registered") })
    }

    /// `POST {upload}/newjob` → the job id. The track goes into `mp` with `flavor` when the
    /// last chunk arrives.
    pub fn new_upload_job(&mut self, filename: &str, filesize: u64, chunksize: u64, flavor: &str, mp: &str) -> Result<String> {
        let url = format!("{}/newjob", self.fileupload_base()?);
        let (size, chunk) = (filesize.to_string(), chunksize.to_string());
        let fields = [("filename", filename), ("filesize", size.as_str()), ("chunksize", chunk.as_str()), ("flavor", flavor), ("mediapackage", mp)];
        let a = self.expect_ok("POST", &url, Payload::Form(&fields), false)?;
        let id = String::from_utf8_lossy(&a.body).trim().to_owned();
        // 204 (or an empty 200) is Opencast's "the upload service gave an error".
        if a.status == 204 || id.is_empty() || id.contains(char::is_whitespace) {
            return Err(OpencastError::Status { method: "POST", url, status: 503, body: format!("no job id in the answer (HTTP {}): {}", a.status, excerpt(&a.body)), retry_after: None });
        }
        Ok(id)
    }

    /// `POST {upload}/job/{id}`: chunk `chunk` of `len` bytes from `open`.
    pub fn upload_chunk(&mut self, job_id: &str, chunk: u64, filename: &str, len: u64, open: OpenBody<'_>) -> Result<ChunkReply> {
        let url = format!("{}/job/{}", self.fileupload_base()?, encode(job_id));
        let number = chunk.to_string();
        let fields = [("chunknumber", number.as_str())];
        let a = self.send("POST", &url, &Payload::Stream { fields: &fields, file_field: "filedata", filename, len, open }, None, true)?;
        let text = excerpt(&a.body);
        match a.status {
            200..=299 => Ok(ChunkReply::Accepted),
            404 => Ok(ChunkReply::Gone),
            400 if text.contains("Wrong chunk number") => Ok(ChunkReply::WrongChunk(text)),
            400 if text.contains("Job is locked") => Ok(ChunkReply::Locked(text)),
            _ => Err(status_error("POST", &url, &a)),
        }
    }

    /// `GET {upload}/job/{id}.json`; `None` when the job is gone (404). The media package XML
    /// comes from the job's XML form when the JSON does not carry it as a string.
    pub fn upload_job(&mut self, job_id: &str) -> Result<Option<UploadJob>> {
        let base = self.fileupload_base()?;
        let url = format!("{base}/job/{}.json", encode(job_id));
        let a = self.send("GET", &url, &Payload::None, None, false)?;
        match a.status {
            200..=299 => {}
            404 => return Ok(None),
            _ => return Err(status_error("GET", &url, &a)),
        }
        let mut job = parse_upload_job(&url, &a.body)?;
        if job.state == JobState::Complete && job.mediapackage.is_none() {
            let xml_url = format!("{base}/job/{}.xml", encode(job_id));
            let x = self.expect_ok("GET", &xml_url, Payload::None, false)?;
            job.mediapackage = extract_mediapackage(&String::from_utf8_lossy(&x.body));
        }
        Ok(Some(job))
    }

    /// `POST {ingest}/ingest[/{workflow}]` of a finished media package, with
    /// `workflowInstanceId` and the workflow configuration. Any 2xx is success, even one whose
    /// body lacks a media package (logged): retrying an accepted ingest would ingest twice.
    /// `workflow` `None` uses `opencast.workflow`.
    pub fn ingest_media_package(&mut self, mp: &str, workflow: Option<&str>, workflow_instance_id: &str, config: &[(&str, &str)]) -> Result<String> {
        let workflow = workflow.map(str::to_owned).unwrap_or_else(|| self.cfg.workflow.clone());
        let url = format!("{}/ingest/{}", self.upload_services()?.ingest, encode(&workflow));
        let mut fields: Vec<(&str, &str)> = vec![("mediaPackage", mp), ("workflowInstanceId", workflow_instance_id)];
        fields.extend_from_slice(config);
        self.final_ingest(&url, &fields)
    }

    /// Whether media package `mp_id` was ingested; see the module doc. Transport errors and
    /// 5xx are errors (ask again later); what the server cannot or will not tell is `Unknown`.
    pub fn ingest_lookup(&mut self, mp_id: &str) -> Result<IngestLookup> {
        let Some(base) = self.upload_services()?.workflow else {
            return Ok(IngestLookup::Unknown(format!("{}: no {WORKFLOW_SERVICE} registered", self.cfg.url)));
        };
        let url = format!("{base}/mediaPackage/{}/instances.json", encode(mp_id));
        let a = match self.send("GET", &url, &Payload::None, None, false) {
            Ok(a) => a,
            Err(OpencastError::Auth { detail, .. }) => return Ok(IngestLookup::Unknown(format!("GET {url}: {detail}"))),
            Err(e) => return Err(e),
        };
        match a.status {
            200..=299 => Ok(match parse_workflow_instances(&a.body) {
                Some(0) => IngestLookup::NotIngested,
                Some(n) => IngestLookup::Ingested { workflows: n },
                None => IngestLookup::Unknown(format!("GET {url}: not a workflow list: {}", excerpt(&a.body))),
            }),
            s if s >= 500 || s == 408 || s == 429 => Err(status_error("GET", &url, &a)),
            s => Ok(IngestLookup::Unknown(format!("GET {url}: HTTP {s}: {}", excerpt(&a.body)))),
        }
    }
}

/// A reader over bytes in memory, for callers that have a small body (a manifest) at hand.
pub fn bytes_body(bytes: Vec<u8>) -> impl Fn() -> std::io::Result<Box<dyn Read + Send + 'static>> {
    move || Ok(Box::new(std::io::Cursor::new(bytes.clone())) as Box<dyn Read + Send>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_jobs() {
        let j = parse_upload_job(
            "u",
            br#"{"uploadjob":{"id":"j1","state":"READY","chunksize":"65536","chunks-total":4,"current-chunk":{"number":1,"bytes-recieved":65536},"payload":{"filename":"a.mp4","totalsize":200000,"currentsize":131072}}}"#,
        )
        .unwrap();
        assert_eq!((j.id.as_str(), j.state, j.chunksize, j.chunks_total, j.current_chunk, j.current_size, j.next_chunk()), ("j1", JobState::Ready, 65536, 4, 1, 131072, 2));
        let j = parse_upload_job("u", br#"{"id":"j2","state":"COMPLETE","current-chunk":{"number":-1},"payload":{"url":"http://x/t.mp4","mediapackage":"<mediapackage id=\"m\"/>"}}"#).unwrap();
        assert_eq!((j.next_chunk(), j.url.as_deref(), j.mediapackage.as_deref()), (0, Some("http://x/t.mp4"), Some("<mediapackage id=\"m\"/>")));
        for bad in [&b"<html/>"[..], br#"{"state":"READY"}"#, br#"{"id":"x","state":"DONE"}"#] {
            assert!(parse_upload_job("http://oc/upload/job/x.json", bad).unwrap_err().to_string().contains("http://oc/upload/job/x.json"));
        }
    }

    #[test]
    fn mediapackage_from_job_xml() {
        let plain = "<?xml version=\"1.0\"?><uploadjob id=\"j\"><payload><mediapackage xmlns=\"http://mediapackage.opencastproject.org\" id=\"m\"><media/></mediapackage></payload></uploadjob>";
        assert_eq!(extract_mediapackage(plain).unwrap(), "<mediapackage xmlns=\"http://mediapackage.opencastproject.org\" id=\"m\"><media/></mediapackage>");
        let prefixed = "<ns3:uploadjob xmlns:ns3=\"f\"><payload><ns2:mediapackage xmlns:ns2=\"http://mediapackage.opencastproject.org\" id=\"m\"><ns2:media><ns2:track id=\"t\"/></ns2:media></ns2:mediapackage></payload></ns3:uploadjob>";
        assert_eq!(extract_mediapackage(prefixed).unwrap(), "<mediapackage xmlns=\"http://mediapackage.opencastproject.org\" id=\"m\"><media><track id=\"t\"/></media></mediapackage>");
        assert_eq!(extract_mediapackage("<uploadjob/>"), None);
    }

    #[test]
    fn workflow_lists() {
        for (body, want) in [
            (r#"{"workflows":{"totalCount":0}}"#, Some(0)),
            (r#"{"workflows":""}"#, Some(0)),
            (r#"{"workflows":{"workflow":{"id":1}}}"#, Some(1)),
            (r#"{"workflows":{"workflow":[{"id":1},{"id":2}]}}"#, Some(2)),
            (r#"[{"id":1}]"#, Some(1)),
            (r#"{"other":1}"#, None),
            ("<html/>", None),
        ] {
            assert_eq!(parse_workflow_instances(body.as_bytes()), want, "{body}");
        }
    }
}
