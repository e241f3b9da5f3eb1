//! The stitch worker: one thread that turns a final recording's parts into one MP4 with the
//! index at the front, plus its manifest. The main loop decides *when* (only while nothing is
//! being recorded: remuxing an hour is ~1.8 GB of SD-card traffic that would compete with the
//! capture's fsyncs) and hands over a [`lectern_journal::StitchJob`]; the journal decides *where*
//! and commits the result; `lectern-stitch` does the remuxing. The worker reports back through
//! the main loop's event channel, so the main loop always knows whether a stitch is running.

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use lectern_journal::{StitchJob, StitchedInfo};
use serde_json::Value;

use crate::clock::Clock;

/// How a stitch ended, for the main loop.
#[derive(Debug)]
pub struct StitchDone {
    pub recording_id: String,
    /// The stitched file's SHA-256 on success, the error otherwise.
    pub result: Result<String, String>,
}

/// The worker thread's handle: jobs go in, [`StitchDone`] comes back through `report`.
pub struct Stitcher {
    jobs: Sender<StitchJob>,
}

impl Stitcher {
    /// Starts the worker. `device` goes into every manifest.
    pub fn spawn(device: Value, clock: Arc<dyn Clock>, report: impl Fn(StitchDone) + Send + 'static) -> std::io::Result<Stitcher> {
        let (jobs, rx) = channel::<StitchJob>();
        std::thread::Builder::new().name("stitcher".into()).spawn(move || {
            for job in rx {
                let recording_id = job.recording.id.clone();
                let result = run(job, &device, &*clock);
                report(StitchDone { recording_id, result });
            }
        })?;
        Ok(Stitcher { jobs })
    }

    /// Hands a job to the worker.
    pub fn submit(&self, job: StitchJob) {
        if let Err(e) = self.jobs.send(job) {
            log::error!(target: "lecternd", "stitch worker is gone; recording {} stays pending", e.0.recording.id);
        }
    }
}

/// Stitches one recording and commits (or fails) its job.
fn run(mut job: StitchJob, device: &Value, clock: &dyn Clock) -> Result<String, String> {
    let id = job.recording.id.clone();
    let parts: Vec<lectern_stitch::Part> = job
        .parts
        .iter()
        .map(|p| lectern_stitch::Part {
            segments: p.segments.iter().map(|s| s.abs_path.clone()).collect(),
            may_be_torn: p.ended_abruptly(),
        })
        .collect();
    let seqs: Vec<u32> = job.parts.iter().map(|p| p.seq).collect();
    let started = std::time::Instant::now();
    let report = match lectern_stitch::stitch(&parts, job.file()) {
        Ok(r) => r,
        // The card filled up while writing (not the recording's fault): try again later, when
        // uploads and retention have freed space; the attempt does not count.
        Err(lectern_stitch::StitchError::Write(e)) if e.raw_os_error() == Some(libc::ENOSPC) => {
            let msg = format!("write output: {e}");
            if let Err(e) = job.postpone(&msg) {
                log::error!(target: "lecternd", "recording {id}: cannot postpone the stitch: {e}");
            }
            return Err(msg);
        }
        Err(e) => {
            let msg = e.to_string();
            log::error!(target: "lecternd", "recording {id}: cannot stitch: {msg}");
            if let Err(e) = job.fail(&msg, clock.now_ms()) {
                log::error!(target: "lecternd", "recording {id}: cannot record the stitch failure: {e}");
            }
            return Err(msg);
        }
    };
    let info = StitchedInfo {
        bytes: report.bytes_written,
        sha256: report.sha256.clone(),
        duration_ns: report.duration_ns,
        video_frames: report.video_samples,
        audio_frames: report.audio_samples,
        part_spans_ns: seqs.iter().zip(&report.parts).map(|(&seq, p)| (seq, p.start_ns, p.end_ns)).collect(),
    };
    let elapsed = started.elapsed();
    match job.commit(&info, device.clone(), clock.now_ms()) {
        Ok(row) => {
            log::info!(
                target: "lecternd",
                "recording {id}: stitched {} parts into {} ({:.1} s of media in {:.2} s)",
                parts.len(),
                row.path.as_deref().unwrap_or("?"),
                report.duration_ns as f64 / 1e9,
                elapsed.as_secs_f64()
            );
            Ok(report.sha256)
        }
        Err(e) => {
            log::error!(target: "lecternd", "recording {id}: stitch not committed: {e}");
            Err(e.to_string())
        }
    }
}
