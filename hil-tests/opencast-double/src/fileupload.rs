//! Opencast's chunked upload service (`FileUploadRestService` / `FileUploadServiceImpl`) as the
//! double serves it at `/upload`:
//!
//! * `POST /upload/newjob` (form: `filename`, `filesize`, `chunksize`, `flavor`, `mediapackage`)
//!   → 200 with the job id as text; `chunks-total` = ⌈filesize / chunksize⌉ (1 when either is
//!   missing, an ordinary one-chunk upload).
//! * `POST /upload/job/{id}` (multipart: `chunknumber`, then the file part `filedata`), checked in
//!   Opencast's order: unknown job → 404; complete → 400 "Job is already complete."; held by
//!   another request (or [`crate::Double::lock_upload_job`]) → 400 "Job is locked. …"; a number
//!   other than `current-chunk.number + 1` → 400 "Wrong chunk number. Awaiting #n but #m was
//!   offered."; a chunk other than the last that is not exactly `chunksize` bytes (the last:
//!   the rest) → 400 "Chunk has wrong size. …". A body that breaks off leaves the job at the
//!   previous chunk. After the last chunk the file becomes a track (with the job's flavor and a
//!   URL) of the media package given at `newjob`, and the job is `COMPLETE`.
//! * `GET /upload/job/{id}.json` → `{"uploadjob": {id, state, chunksize, chunks-total,
//!   current-chunk: {number, bytes-recieved}, payload: {filename, totalsize, currentsize, url,
//!   flavor, mediapackage}}}`; `state` is `INPROGRESS` while a request of the job is held;
//!   `payload.mediapackage` is the media package XML as a string (Opencast's JSON writer
//!   renders it as an object; clients must cope with both).
//!
//! Lock order: `jobs` before `state`; neither is held while a body is read (the job is marked
//! busy instead, which is exactly Opencast's lock).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::form::read_form;
use crate::http::{Body, Head, Response};
use crate::server::{lock, mediapackage_id, now_ms, Shared, CLOSE};
use crate::state::{Track, UploadJob};

/// What the double keeps about a job beyond the [`UploadJob`] in the snapshot.
pub(crate) struct JobInternal {
    /// The media package XML given at `newjob`.
    mp_xml: Option<String>,
    payload: PathBuf,
    sha: Sha256,
    /// A request of this job is being handled (Opencast's job cache lock).
    busy: bool,
    /// Held locked by a test until then.
    pub(crate) locked_until: Option<Instant>,
}

impl JobInternal {
    fn locked(&self) -> bool {
        self.busy || self.locked_until.is_some_and(|t| Instant::now() < t)
    }
}

fn bad(msg: impl Into<String>) -> Response {
    Response::text(400, msg)
}

fn num(v: Option<&str>) -> Result<i64, String> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(-1),
        Some(s) => s.parse::<i64>().map(|n| if n < 1 { -1 } else { n }).map_err(|_| format!("{s:?} is not a number")),
    }
}

fn with_job<R>(shared: &Shared, id: &str, f: impl FnOnce(&mut UploadJob) -> R) -> Option<R> {
    shared.update(|s| s.upload_jobs.iter_mut().find(|j| j.id == id).map(f))
}

pub(crate) fn new_job(shared: &Shared, f: &crate::form::Form) -> Response {
    let (filesize, chunksize) = match (num(f.get("filesize")), num(f.get("chunksize"))) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Response::text(500, format!("Unexpected error (java.lang.NumberFormatException): {e}")),
    };
    if chunksize > i32::MAX as i64 {
        return Response::text(500, "Unexpected error (java.lang.NumberFormatException): chunksize is an int");
    }
    let flavor = f.get("flavor").filter(|s| !s.trim().is_empty()).map(String::from);
    if let Some(fl) = &flavor {
        if fl.split('/').count() != 2 {
            return Response::text(500, format!("Unexpected error (java.lang.ArrayIndexOutOfBoundsException): flavor {fl:?}"));
        }
    }
    let mp_xml = f.get("mediapackage").filter(|s| !s.trim().is_empty()).map(String::from);
    let mediapackage_id = match mp_xml.as_deref().map(mediapackage_id) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return Response::text(500, format!("Unexpected error (MediaPackageException): {e}")),
    };
    let chunks_total = if chunksize == -1 || filesize == -1 { 1 } else { (filesize as u64).div_ceil(chunksize as u64) };
    let id = shared.uuid();
    let dir = shared.dir.join("upload-jobs");
    let payload = dir.join(format!("{id}.payload"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|_| File::create(&payload)) {
        return Response::text(204, format!("Could not create job file in {}: {e}", dir.display()));
    }
    let job = UploadJob {
        id: id.clone(),
        created_ms: now_ms(),
        filename: f.get("filename").filter(|s| !s.trim().is_empty()).unwrap_or("john.doe").to_owned(),
        filesize,
        chunksize,
        chunks_total,
        flavor,
        mediapackage_id,
        current_chunk: -1,
        state: "READY".into(),
        current_size: 0,
        chunks_received: 0,
        chunk_attempts: 0,
        bytes_received: 0,
        refusals: Vec::new(),
        url: None,
    };
    lock(&shared.jobs).insert(id.clone(), JobInternal { mp_xml, payload, sha: Sha256::new(), busy: false, locked_until: None });
    shared.update(|s| s.upload_jobs.push(job));
    Response::new(200, "text/plain", id)
}

pub(crate) fn job_json(shared: &Shared, id: &str) -> Response {
    let jobs = lock(&shared.jobs);
    let Some(internal) = jobs.get(id) else { return Response::new(404, "text/plain", "") };
    let Some(j) = lock(&shared.state).upload_jobs.iter().find(|j| j.id == id).cloned() else { return Response::new(404, "text/plain", "") };
    let state = if internal.locked() && j.state != "COMPLETE" { "INPROGRESS" } else { j.state.as_str() };
    let json = serde_json::json!({ "uploadjob": {
        "id": j.id, "state": state, "chunksize": j.chunksize, "chunks-total": j.chunks_total,
        "current-chunk": { "number": j.current_chunk, "bytes-recieved": 0 },
        "payload": { "filename": j.filename, "totalsize": j.filesize, "currentsize": j.current_size, "url": j.url, "flavor": j.flavor, "mediapackage": internal.mp_xml },
    }});
    Response::new(200, "application/json", json.to_string())
}

/// Why a chunk was refused, remembered in the job and sent as the 400 body.
fn refuse(shared: &Shared, id: &str, status: u16, msg: String) -> Response {
    with_job(shared, id, |j| j.refusals.push(msg.clone()));
    Response::text(status, msg)
}

pub(crate) fn accept_chunk(shared: &Shared, head: &Head, body: &mut Body<'_>, id: &str) -> Response {
    let is_multipart = head.header("content-type").is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_multipart {
        return bad("Request is not of type multipart/form-data");
    }
    // Opencast's checks before any byte of the chunk is taken: the job, complete, locked.
    {
        let mut jobs = lock(&shared.jobs);
        let Some(internal) = jobs.get_mut(id) else { return Response::new(404, "text/plain", "") };
        let complete = lock(&shared.state).upload_jobs.iter().any(|j| j.id == id && j.state == "COMPLETE");
        if complete {
            drop(jobs);
            return refuse(shared, id, 400, "Job is already complete.".into());
        }
        if internal.locked() {
            drop(jobs);
            with_job(shared, id, |j| j.chunk_attempts += 1);
            return refuse(shared, id, 400, "Job is locked. Seems like a concurrent upload to this job is in progress.".into());
        }
        internal.busy = true;
    }
    let resp = receive(shared, head, body, id);
    if let Some(j) = lock(&shared.jobs).get_mut(id) {
        j.busy = false;
    }
    shared.update(|_| ());
    resp
}

/// Reads and checks one chunk of a job this request holds (busy).
fn receive(shared: &Shared, head: &Head, body: &mut Body<'_>, id: &str) -> Response {
    with_job(shared, id, |j| j.chunk_attempts += 1);
    let cut = {
        let mut one = lock(&shared.one_shot);
        match one.cut {
            Some((after, n)) if n > 0 => {
                one.cut = if n > 1 { Some((after, n - 1)) } else { None };
                Some(after)
            }
            _ => None,
        }
    };
    if let Some(after) = cut {
        let got = std::io::copy(&mut body.by_ref().take(after), &mut std::io::sink()).unwrap_or(0);
        with_job(shared, id, |j| {
            j.bytes_received += got;
            j.refusals.push(format!("cut after {got} body bytes"));
        });
        return Response::text(CLOSE, "cut");
    }
    let dir = shared.dir.join("uploads");
    let form = match read_form(body, head.header("content-type"), &dir, &mut || shared.next_id()) {
        Ok(f) => f,
        Err((status, msg)) => return refuse(shared, id, status, format!("Failed to store chunk data: {msg}")),
    };
    let remove_all = || form.files.iter().for_each(|p| drop(std::fs::remove_file(&p.path)));
    let number: i64 = form.get("chunknumber").and_then(|n| n.trim().parse().ok()).unwrap_or(0);
    let Some(file) = form.files.iter().find(|p| p.name.eq_ignore_ascii_case("filedata")).cloned() else {
        remove_all();
        return refuse(shared, id, 400, "No payload!".into());
    };
    with_job(shared, id, |j| j.bytes_received += file.bytes);
    let Some(job) = lock(&shared.state).upload_jobs.iter().find(|j| j.id == id).cloned() else {
        remove_all();
        return Response::new(404, "text/plain", "");
    };
    let supposed = job.current_chunk + 1;
    if number != supposed {
        remove_all();
        return refuse(shared, id, 400, format!("Wrong chunk number. Awaiting #{supposed} but #{number} was offered."));
    }
    let last = number as u64 + 1 == job.chunks_total;
    let want = if job.chunksize == -1 {
        file.bytes
    } else if last {
        match job.filesize as u64 % job.chunksize as u64 {
            0 => job.chunksize as u64,
            rest => rest,
        }
    } else {
        job.chunksize as u64
    };
    if file.bytes != want {
        remove_all();
        return refuse(shared, id, 400, format!("Chunk has wrong size. Awaited: {want} bytes, received: {} bytes.", file.bytes));
    }
    // Append to the payload, hashing as we go.
    let appended = (|| -> std::io::Result<(PathBuf, String)> {
        let mut jobs = lock(&shared.jobs);
        let internal = jobs.get_mut(id).ok_or_else(|| std::io::Error::other("job vanished"))?;
        let mut src = File::open(&file.path)?;
        let mut dst = OpenOptions::new().append(true).open(&internal.payload)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n])?;
            internal.sha.update(&buf[..n]);
        }
        dst.sync_all()?;
        let sha: String = internal.sha.clone().finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((internal.payload.clone(), sha))
    })();
    remove_all();
    let (payload, sha) = match appended {
        Ok(p) => p,
        Err(e) => return refuse(shared, id, 400, format!("Failed to append chunk data: {e}")),
    };
    if !last {
        with_job(shared, id, |j| {
            j.current_chunk = number;
            j.current_size += file.bytes;
            j.chunks_received += 1;
            j.state = "READY".into();
        });
        return Response::new(200, "application/xml", format!("<uploadjob id=\"{id}\" state=\"READY\"/>"));
    }
    // The last chunk: the file becomes a track of the job's media package.
    let track_id = format!("track-{}", shared.next_id());
    let mp_id = job.mediapackage_id.clone();
    let url = match &mp_id {
        Some(mp) => format!("http://{}/files/mediapackage/{mp}/{track_id}/{}", shared.addr, job.filename),
        None => format!("http://{}/files/collection/uploaded/{id}.payload", shared.addr),
    };
    let size = job.current_size + file.bytes;
    if let Some(mp) = &mp_id {
        let track = Track { id: track_id, flavor: job.flavor.clone().unwrap_or_else(|| "presenter/source".into()), filename: job.filename.clone(), bytes: size, sha256: sha, path: payload };
        let xml = shared.update(|s| {
            let i = crate::server::find_or_add_mediapackage(s, mp);
            s.mediapackages[i].tracks.push(track);
            s.mediapackages[i].clone()
        });
        if let Some(j) = lock(&shared.jobs).get_mut(id) {
            j.mp_xml = Some(crate::server::mp_xml(shared, &xml));
        }
    }
    with_job(shared, id, |j| {
        j.current_chunk = number;
        j.current_size = size;
        j.chunks_received += 1;
        j.state = "COMPLETE".into();
        j.url = Some(url);
    });
    Response::new(200, "application/xml", format!("<uploadjob id=\"{id}\" state=\"COMPLETE\"/>"))
}
