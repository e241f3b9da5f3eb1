//! One capture session: a GStreamer pipeline feeding one journal part through a writer thread.
//!
//! The pipeline's streaming thread must never wait on an fsync, so media goes through a bounded
//! channel to a writer thread that owns the [`PartWriter`]. The channel is the only buffer between
//! the camera and the SD card: when the card stalls longer than the channel holds, the pipeline's
//! queues take the back-pressure rather than the daemon's memory growing without bound.
//!
//! Lock order / ownership: the main loop owns the `Session`; the writer thread owns the part until
//! `stop` joins it and hands the part back, so exactly one place finishes a part.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lectern_capture::{Capture, CaptureSettings, CaptureStats, CaptureStatus, EncoderInfo, FrameCounter, MediaEvent};
use lectern_journal::{Journal, PartEnd, PartSummary, PartWriter};

use std::sync::Arc;

use crate::clock::Clock;
use crate::signals::SignalWatch;

/// Chunks are ~188–1316 bytes; 4096 of them is a few seconds of 4 Mbit/s media.
const CHANNEL_CHUNKS: usize = 4096;

/// The part, shared between the writer thread (which appends to it) and the main loop (which
/// takes it to close it at once on a power cut). `None` once taken: the writer then discards.
type SharedPart = Arc<Mutex<Option<PartWriter>>>;

/// What the writer thread hands back: the first journal error, if writing failed.
type WriterResult = Option<String>;

pub struct Session {
    pub recording_id: String,
    pub generation: u64,
    capture: Capture,
    part: SharedPart,
    writer: JoinHandle<WriterResult>,
    /// This part's signal alarms, fed by the writer thread.
    signals: SignalWatch,
}

/// Something the session reports to the main loop from another thread.
pub trait Reporter: Fn(u64, String) + Send + Sync + 'static {}
impl<T: Fn(u64, String) + Send + Sync + 'static> Reporter for T {}

impl Session {
    /// Opens a new part and starts the pipeline into it. On failure the part is finished as
    /// failed (an empty part leaves no segment behind) and the error is returned.
    // Each argument is one thing the session needs from the main loop; a struct bundling them
    // would be built at the one call site only to be taken apart here.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        journal: &mut Journal,
        recording_id: &str,
        settings: &CaptureSettings,
        encoder: &EncoderInfo,
        generation: u64,
        clock: &Arc<dyn Clock>,
        signals: &lectern_config::SignalsConfig,
        report: impl Reporter + Clone,
    ) -> Result<Session, String> {
        let fsync_interval = journal.options().fsync_interval;
        let part = journal.open_part(recording_id, &encoder.element, clock.now_ms()).map_err(|e| format!("journal: {e}"))?;
        let part: SharedPart = Arc::new(Mutex::new(Some(part)));
        let (tx, rx) = sync_channel(CHANNEL_CHUNKS);
        let report_w = report.clone();
        let clock_w = clock.clone();
        let part_w = part.clone();
        let watch = SignalWatch::new(signals, recording_id, Instant::now(), clock.now_ms());
        let watch_w = watch.clone();
        // The capture starts after the writer (it needs the channel's sender), so the writer
        // finds the frame counter here once there is one.
        let frames: Arc<OnceLock<FrameCounter>> = Arc::new(OnceLock::new());
        let frames_w = frames.clone();
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || write_loop(part_w, rx, fsync_interval, generation, clock_w, (watch_w, frames_w), report_w))
            .map_err(|e| format!("cannot start writer thread: {e}"))?;
        let status = move |s: CaptureStatus| match s {
            CaptureStatus::Error { element, message, debug, .. } => {
                log::debug!(target: "lecternd", "pipeline error detail: {debug}");
                report(generation, format!("{element}: {message}"));
            }
            CaptureStatus::Running | CaptureStatus::Eos => {}
        };
        match Capture::start(settings, tx, Box::new(status)) {
            Ok(capture) => {
                let _ = frames.set(capture.frame_counter());
                Ok(Session { recording_id: recording_id.to_owned(), generation, capture, part, writer, signals: watch })
            }
            Err(e) => {
                // The sender is gone with the failed capture, so the writer ends by itself.
                let msg = e.to_string();
                let _ = writer.join();
                if let Some(part) = take(&part) {
                    if let Err(e) = part.finish(PartEnd::Failed(msg.clone()), clock.now_ms()) {
                        log::error!(target: "lecternd", "recording {recording_id}: cannot close failed part: {e}");
                    }
                }
                Err(msg)
            }
        }
    }

    pub fn stats(&self) -> CaptureStats {
        self.capture.stats()
    }

    pub fn encoder(&self) -> &EncoderInfo {
        self.capture.encoder()
    }

    /// This part's signal alarms (`status`).
    pub fn signals(&self) -> &SignalWatch {
        &self.signals
    }

    /// Opens or closes the confidence preview branch (`lectern_capture::Capture::want_preview`).
    pub fn want_preview(&self, open: bool) {
        self.capture.want_preview(open);
    }

    /// The newest preview JPEG and its age.
    pub fn preview(&self) -> Option<(Vec<u8>, Duration)> {
        self.capture.preview()
    }

    /// Stops the pipeline (EOS, so every buffered byte reaches the journal), joins the writer and
    /// finishes the part. A journal error seen while writing turns `end` into a failure.
    pub fn stop(self, end: PartEnd, clock: &dyn Clock) -> Result<(PartSummary, CaptureStats), String> {
        let id = self.recording_id.clone();
        let stats = match self.capture.stop(Duration::from_secs(5)) {
            Ok(stats) => stats,
            Err(e) => {
                log::warn!(target: "lecternd", "recording {id}: pipeline did not stop cleanly: {e}");
                CaptureStats::default()
            }
        };
        let write_error = self.writer.join().map_err(|_| format!("recording {id}: writer thread panicked"))?;
        self.signals.log_report();
        let end = match write_error {
            Some(e) => PartEnd::Failed(e),
            None => end,
        };
        let part = take(&self.part).ok_or_else(|| format!("recording {id}: part already closed"))?;
        let summary = part.finish(end, clock.now_ms()).map_err(|e| format!("recording {id}: cannot close part: {e}"))?;
        Ok((summary, stats))
    }

    /// Power is failing. Two phases, so the edge → durable time stays a few milliseconds and
    /// yet nothing captured before the edge is lost when the hold-up supply lasts:
    /// 1. everything that reached the journal is written and fsynced at once (the open segment's
    ///    row stays open; if the rail dies now, recovery commits those bytes at the next start);
    /// 2. EOS stops the sources — nothing captured after the edge is accepted — and the frames
    ///    still inside the encoder (x264 veryfast holds ~17, over half a second) drain into the
    ///    part for at most `drain`; then the part is committed and closed "interrupted: power".
    ///    With `drain` zero, or past it, the pipeline is dropped undrained.
    ///
    /// Returns the part summary and the times of phase 1 (see [`PowerCutTimes`]).
    pub fn power_cut(self, clock: &dyn Clock, drain: Duration) -> Result<(PartSummary, PowerCutTimes), String> {
        let id = self.recording_id.clone();
        let began = Instant::now();
        let locked_at;
        {
            let mut guard = self.part.lock().unwrap_or_else(|e| e.into_inner());
            locked_at = Instant::now();
            let part = guard.as_mut().ok_or_else(|| format!("recording {id}: part already closed"))?;
            part.sync_now(locked_at).map_err(|e| format!("recording {id}: cannot make the part durable on power-fail: {e}"))?;
        }
        let durable_at = Instant::now();
        let drained = if drain.is_zero() {
            drop(self.capture);
            None
        } else {
            let started = Instant::now();
            match self.capture.stop(drain) {
                Ok(_) => Some(started.elapsed()),
                Err(e) => {
                    log::warn!(target: "lecternd", "recording {id}: encoder not drained within {drain:?} after the power-fail edge: {e}");
                    None
                }
            }
        };
        // The writer has seen the end of the stream (or the dropped pipeline) and exits.
        let write_error = self.writer.join().map_err(|_| format!("recording {id}: writer thread panicked"))?;
        if let Some(e) = write_error {
            log::error!(target: "lecternd", "recording {id}: journal error while draining: {e}");
        }
        let part = take(&self.part).ok_or_else(|| format!("recording {id}: part already closed"))?;
        let summary = part.finish(PartEnd::Interrupted("power".into()), clock.now_ms());
        let times = PowerCutTimes { began, locked_at, durable_at, drained };
        summary.map(|s| (s, times)).map_err(|e| format!("recording {id}: cannot close part on power-fail: {e}"))
    }
}

/// When phase 1 of a power cut got where: where an edge → durable time went (`status` shows
/// the split, so a slow edge can be traced to the main loop, the writer or the card).
#[derive(Debug, Clone, Copy)]
pub struct PowerCutTimes {
    /// The main loop started the cut.
    pub began: Instant,
    /// The writer thread's hold on the part was released (it may be inside a periodic fsync).
    pub locked_at: Instant,
    /// The open segment's bytes were durable.
    pub durable_at: Instant,
    /// How long the encoder took to drain (None when there was none or it ran out of time).
    pub drained: Option<Duration>,
}

fn take(part: &SharedPart) -> Option<PartWriter> {
    part.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// The writer thread: media events into the part until the capture says `End`, or until the
/// main loop has taken the part away (power cut), after which chunks are discarded.
fn write_loop(
    part: SharedPart,
    rx: Receiver<MediaEvent>,
    fsync_interval: Duration,
    generation: u64,
    clock: Arc<dyn Clock>,
    (signals, frames): (SignalWatch, Arc<OnceLock<FrameCounter>>),
    report: impl Reporter,
) -> WriterResult {
    let mut error: Option<String> = None;
    let mut frames_seen = 0u64;
    // Wake at least twice per fsync interval so a stalled source still gets its data made durable.
    let wake = fsync_interval / 2;
    loop {
        let ev = match rx.recv_timeout(wake) {
            Ok(MediaEvent::End) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(ev) => Some(ev),
            Err(RecvTimeoutError::Timeout) => None,
        };
        // The alarms see every reading, also after a write error; `Data` does not tick them (a
        // few hundred chunks a second), the readings and the wake-ups do. Video counts as
        // present while the encoder's frame counter moves.
        if let Some(n) = frames.get().map(FrameCounter::get).filter(|&n| n != frames_seen) {
            frames_seen = n;
            signals.video(Instant::now());
        }
        match &ev {
            Some(MediaEvent::Level { peak_db, rms_db, .. }) => signals.level(Instant::now(), *peak_db, *rms_db),
            Some(MediaEvent::Luma { luma, .. }) => signals.luma(Instant::now(), luma),
            None => signals.tick(Instant::now()),
            Some(_) => {}
        }
        // After a write error keep draining, so the pipeline is never blocked on a full channel
        // while the main loop stops it.
        if error.is_some() {
            continue;
        }
        let mut guard = part.lock().unwrap_or_else(|e| e.into_inner());
        let Some(part) = guard.as_mut() else { continue };
        let result = match ev {
            None => part.tick(Instant::now()),
            Some(MediaEvent::Data { bytes, pts_ns, keyframe }) => {
                part.push_data(&bytes, pts_ns, keyframe, Instant::now(), clock.now_ms()).map(|committed| {
                    if let Some(seg) = committed {
                        log::debug!(target: "lecternd", "recording {}: committed segment {} ({} bytes)", part.recording_id(), seg.seq, seg.bytes);
                    }
                })
            }
            Some(MediaEvent::Level { peak_db, rms_db, .. }) => {
                part.push_level(peak_db, rms_db);
                Ok(())
            }
            // Analysed frames are for the signal monitor (above), not the journal.
            Some(MediaEvent::Luma { .. }) => Ok(()),
            // `End` ended the loop above.
            Some(MediaEvent::End) => Ok(()),
        };
        if let Err(e) = result {
            let msg = format!("journal: {e}");
            log::error!(target: "lecternd", "recording {}: {msg}", part.recording_id());
            report(generation, msg.clone());
            error = Some(msg);
        }
    }
    error
}
