//! The guest workload: drives the real journal the way `lecternd` does for one recording with a
//! power cut in the middle, and announces every promise the journal makes.
//!
//! The sequence (recording [`RECORDING_ID`]): open the journal; start an ad-hoc recording; part 1
//! records about 6.8 s of synthetic MPEG-TS (25 frames/s, a keyframe every second, so segments are
//! cut every 2 s), with the writer's periodic syncs driven by the media clock; then the power-fail
//! path of `Session::power_cut` — `sync_now`, a short drain, the part finished `interrupted:
//! power`, the recording finished `interrupted: power`; then the resume — the recording started
//! again, part 2 records about 5.2 s and closes, the recording completes; then the stitch store
//! — the stitch is requested, a job writes a stand-in stitched file (the segments concatenated:
//! the journal never looks inside it) and commits it.
//!
//! After each call that returns, [`Workload::promise`] prints the promise and marks the write log
//! (`dmsetup message DEV 0 mark p<n>`), so the mark lands after every write the call made durable.
//! Time is synthetic: the writer's `Instant` is the workload's start plus media time, so the
//! fsync schedule is the same on a fast host and in a slow emulator.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lectern_journal::{
    encode_pts, CommittedSegment, Journal, JournalOptions, NewRecording, Outcome, PartEnd, PartWriter, RecordingKind,
    StitchedInfo, TS_PACKET_LEN, TS_SYNC_BYTE,
};

use crate::hex_sha;
use crate::promise::{Promise, RECORDING_ID};

/// Media time between frames (25 frames/s).
const FRAME: Duration = Duration::from_millis(40);
/// A keyframe every this many frames (1 s).
const GOP: u64 = 25;
/// Packets per frame: about 1.5 KB, so a segment spans many pages and several periodic syncs.
const PACKETS_PER_FRAME: usize = 8;
/// Wall-clock base for the journal's millisecond timestamps.
const EPOCH_MS: i64 = 1_767_225_600_000;

/// One synthetic video frame as a muxer would hand it over: the first packet starts a PES packet
/// with this frame's PTS, the rest carry payload that differs per frame.
pub fn frame_chunk(frame: u64) -> Vec<u8> {
    let pid: u16 = 0x100;
    let pts = frame * 90_000 * FRAME.as_millis() as u64 / 1000;
    let mut out = Vec::with_capacity(PACKETS_PER_FRAME * TS_PACKET_LEN);
    for i in 0..PACKETS_PER_FRAME {
        let mut p = vec![0u8; TS_PACKET_LEN];
        p[0] = TS_SYNC_BYTE;
        p[1] = (if i == 0 { 0x40 } else { 0 }) | (pid >> 8) as u8;
        p[2] = pid as u8;
        p[3] = 0x10 | ((frame as usize * PACKETS_PER_FRAME + i) & 0x0f) as u8;
        let mut at = 4;
        if i == 0 {
            // PES start code, video stream 0xE0, unbounded length, PTS only.
            p[4..13].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5]);
            p[13..18].copy_from_slice(&encode_pts(pts));
            at = 18;
        }
        for (k, b) in p[at..].iter_mut().enumerate() {
            *b = (frame as usize).wrapping_mul(31).wrapping_add(i * 7 + k) as u8;
        }
        out.extend_from_slice(&p);
    }
    out
}

/// The workload's state: the journal, the promise counter and the media clock.
pub struct Workload {
    journal: Journal,
    mark_dev: Option<String>,
    promises: usize,
    base: Instant,
    frame: u64,
    /// Bytes of the segment the writer has open, as fed in (to state what `sync_now` promised).
    open_segment: Vec<u8>,
    /// The newest committed segment's sequence number (recording-wide, continuous).
    last_seq: u32,
}

impl Workload {
    fn now(&self) -> Instant {
        self.base + FRAME * self.frame as u32
    }

    fn now_ms(&self) -> i64 {
        EPOCH_MS + (FRAME * self.frame as u32).as_millis() as i64
    }

    /// Announces promise `p`: one console line, then the mark in the write log.
    fn promise(&mut self, p: Promise) -> Result<()> {
        let n = self.promises;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", p.line(n))?;
        out.flush()?;
        if let Some(dev) = &self.mark_dev {
            let status = Command::new("dmsetup")
                .args(["message", dev, "0", "mark", &format!("p{n}")])
                .status()
                .context("run dmsetup (apt: dmsetup)")?;
            ensure!(status.success(), "dmsetup message {dev} 0 mark p{n}: {status}");
        }
        self.promises += 1;
        Ok(())
    }

    fn segment_promise(&mut self, c: &CommittedSegment) -> Result<()> {
        ensure!(c.seq == self.last_seq + 1, "segment {} committed after segment {}", c.seq, self.last_seq);
        self.last_seq = c.seq;
        self.promise(Promise::SegmentCommitted { id: c.recording_id.clone(), part: c.part_seq, seq: c.seq, bytes: c.bytes, sha256: c.sha256.clone() })
    }

    /// Feeds `frames` frames into the writer, promising every segment it commits.
    fn record(&mut self, w: &mut PartWriter, frames: u64, keyframes: bool) -> Result<()> {
        for _ in 0..frames {
            let chunk = frame_chunk(self.frame);
            let keyframe = keyframes && self.frame.is_multiple_of(GOP);
            let pts_ns = self.frame * FRAME.as_nanos() as u64;
            let committed = w.push_data(&chunk, Some(pts_ns), keyframe, self.now(), self.now_ms())?;
            if let Some(c) = committed {
                ensure!(c.sha256 == hex_sha(&self.open_segment), "segment {}: the journal's checksum differs from the bytes fed in", c.seq);
                self.open_segment.clear();
                self.segment_promise(&c)?;
            }
            self.open_segment.extend_from_slice(&chunk);
            self.frame += 1;
            w.tick(self.now())?;
        }
        Ok(())
    }

    /// Finishes a part and promises its last segment and its end state.
    fn finish_part(&mut self, w: PartWriter, end: PartEnd, state: &str) -> Result<()> {
        let summary = w.finish(end, self.now_ms())?;
        if let Some(c) = &summary.last_segment {
            ensure!(c.sha256 == hex_sha(&self.open_segment), "segment {}: the journal's checksum differs from the bytes fed in", c.seq);
            self.segment_promise(c)?;
        }
        self.open_segment.clear();
        ensure!(summary.state.as_str() == state, "part {} ended {}, expected {state}", summary.part_seq, summary.state.as_str());
        self.promise(Promise::PartEnded { id: summary.recording_id.clone(), part: summary.part_seq, state: state.into() })
    }

    fn start(&mut self) -> Result<PartWriter> {
        let rec = NewRecording { id: RECORDING_ID.into(), title: "log-writes".into(), kind: RecordingKind::Adhoc, event_uid: None };
        self.journal.start_recording(&rec, self.now_ms())?;
        self.promise(Promise::RecordingStarted { id: RECORDING_ID.into() })?;
        let w = self.journal.open_part(RECORDING_ID, "synthetic", self.now_ms())?;
        self.promise(Promise::PartOpened { id: RECORDING_ID.into(), part: w.part_seq() })?;
        Ok(w)
    }

    fn finish_recording(&mut self, outcome: Outcome, state: &str) -> Result<()> {
        self.journal.finish_recording(RECORDING_ID, outcome, self.now_ms())?;
        self.promise(Promise::RecordingEnded { id: RECORDING_ID.into(), state: state.into() })
    }

    /// The stitch store's commit: request, job, stand-in file, commit.
    fn stitch(&mut self) -> Result<()> {
        ensure!(self.journal.request_stitch(RECORDING_ID, self.now_ms())?, "request_stitch found a stitch row already");
        self.promise(Promise::StitchRequested { id: RECORDING_ID.into() })?;
        let mut job = self.journal.stitch_job(RECORDING_ID, self.now_ms())?;
        let mut body = Vec::new();
        for seg in job.parts.iter().flat_map(|p| &p.segments) {
            let path = job.media_dir().join(&seg.path);
            body.extend(std::fs::read(&path).with_context(|| format!("read {}", path.display()))?);
        }
        job.file().write_all(&body).context("write the stand-in stitched file")?;
        let info = StitchedInfo {
            bytes: body.len() as u64,
            sha256: hex_sha(&body),
            duration_ns: self.frame * FRAME.as_nanos() as u64,
            video_frames: self.frame,
            audio_frames: 0,
            part_spans_ns: Vec::new(),
        };
        let row = job.commit(&info, serde_json::json!({ "agent": "logwrites" }), self.now_ms())?;
        let path = row.path.context("a done stitch row has a path")?;
        self.promise(Promise::StitchDone { id: RECORDING_ID.into(), path, bytes: info.bytes, sha256: info.sha256 })
    }
}

/// Runs the whole sequence on `media` (which must exist). With `mark_dev`, every promise is also
/// a mark on that log-writes device. Returns the number of promises made.
pub fn run(media: &Path, mark_dev: Option<&str>) -> Result<usize> {
    let opts = JournalOptions::default();
    let (journal, report) = Journal::open(media, opts, EPOCH_MS)?;
    if !report.is_empty() {
        bail!("the workload needs a fresh media directory, recovery found: {report}");
    }
    let mut wl = Workload { journal, mark_dev: mark_dev.map(str::to_owned), promises: 0, base: Instant::now(), frame: 0, open_segment: Vec::new(), last_seq: 0 };
    wl.promise(Promise::JournalOpen)?;

    // Part 1: three cut segments, then the power-fail edge.
    let mut w = wl.start()?;
    wl.record(&mut w, 170, true)?;
    w.sync_now(wl.now())?;
    let seq = wl.last_seq + 1;
    let (bytes, sha256) = (wl.open_segment.len() as u64, hex_sha(&wl.open_segment));
    wl.promise(Promise::SegmentSynced { id: RECORDING_ID.into(), seq, bytes, sha256 })?;
    // Frames still inside the encoder drain into the part (no keyframe: the segment is not cut).
    wl.record(&mut w, 5, false)?;
    wl.finish_part(w, PartEnd::Interrupted("power".into()), "interrupted")?;
    wl.finish_recording(Outcome::Interrupted("power".into()), "interrupted")?;

    // Power back: resumed as part 2, which closes normally.
    wl.frame = wl.frame.div_ceil(GOP) * GOP;
    let mut w = wl.start()?;
    wl.record(&mut w, 130, true)?;
    wl.finish_part(w, PartEnd::Closed, "closed")?;
    wl.finish_recording(Outcome::Completed, "completed")?;

    wl.stitch()?;
    Ok(wl.promises)
}
