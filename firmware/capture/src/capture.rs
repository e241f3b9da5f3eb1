//! The running capture: builds the pipeline, delivers media through the caller's bounded
//! channel, and tears it down so that `MediaEvent::End` is sent exactly once.
//!
//! # State transitions
//!
//! `Shared::phase` goes `Running → SinkEos` when the appsink's EOS callback has delivered the
//! last chunk and `End`, or `Running → Failed` when the bus reports an error or the media
//! receiver hangs up. Both targets are final; `stop` waits for either (bounded by its timeout).
//! Independently, `abort` goes false → true once teardown starts: from then on nothing waits on
//! a full media channel, so `set_state(NULL)` can never deadlock on a streaming thread that is
//! stuck delivering to a consumer that stopped reading.
//!
//! # Lock order
//!
//! `phase` and `end_sent` are never held together. `end_sent` is held while `End` is being
//! queued, which may wait on the channel; that is what makes `End` exactly-once when the
//! streaming thread (normal EOS) and `stop`/`Drop` (timeout, error) race. The chunker mutex is
//! only taken on the streaming thread, so it is uncontended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use log::{debug, error, info, warn};

use crate::bus::{self, StatusFn};
use crate::chunker::{Chunk, Chunker};
use crate::encoder::{self, AudioEncoder, EncoderInfo};
use crate::error::CaptureError;
use crate::settings::{quote, AudioSource, CaptureSettings, VideoSource};
use crate::stats::{self, CaptureStats};

/// The name given to the pipeline; the bus thread uses it to spot the pipeline's own
/// state changes among those of its children.
const PIPELINE_NAME: &str = "lectern-capture";

/// However the stop timeout was spent, `End` gets at least this long to be queued.
const END_GRACE: Duration = Duration::from_millis(500);
/// How long [`Capture::stop`] lets the rest of a pipeline drain after one element failed (a
/// camera or mic gone): EOS from the sources still running, and the failed source's own EOS,
/// carry what the encoder and the muxer hold into the journal. For an unplugged camera that takes
/// a few tens of milliseconds; a pipeline that cannot drain (the encoder or the muxer failed)
/// costs this much more before the retry.
const FAILED_DRAIN: Duration = Duration::from_millis(1500);

/// How long a streaming thread sleeps between attempts on a full media channel. std's
/// `SyncSender` has no stable `send_timeout`, and a plain `send` could block forever, which
/// would make `set_state(NULL)` hang; short polls let it notice `abort`.
const FULL_POLL: Duration = Duration::from_millis(2);

/// What the capture delivers to its consumer, in order for `Data`; `Level` readings interleave.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// MPEG-TS bytes. A chunk with `keyframe` starts with PAT/PMT and a video IDR carrying
    /// SPS/PPS, so a file starting there decodes on its own.
    Data {
        bytes: Vec<u8>,
        pts_ns: Option<u64>,
        keyframe: bool,
    },
    /// Audio level over the last `level_interval`, channels combined (see [`crate::level`]).
    Level {
        pts_ns: Option<u64>,
        peak_db: f64,
        rms_db: f64,
    },
    /// One analysed video frame: its luma plane downscaled to `width`×`height` (GRAY8, rows
    /// packed), a few a second (`CaptureSettings::analysis_fps`). Never blocks the pipeline: when
    /// the channel is full the frame is counted in `CaptureStats::analysis_dropped` instead.
    Luma {
        pts_ns: Option<u64>,
        width: u32,
        height: u32,
        luma: Vec<u8>,
    },
    /// Sent exactly once, after the last `Data`.
    End,
}

/// Size of the analysis branch's frames: enough for a mean, a variance and a fingerprint (a
/// 20×20 block of a 720p frame per sample), small enough that copying one costs nothing.
pub const ANALYSIS_WIDTH: u32 = 64;
pub const ANALYSIS_HEIGHT: u32 = 36;

/// Reports from the bus thread to the owner of the capture.
#[derive(Debug, Clone, PartialEq)]
pub enum CaptureStatus {
    /// The pipeline reached PLAYING.
    Running,
    /// The first error of this pipeline; `retry` is the retry-or-forward decision
    /// (see [`crate::bus::should_retry`]).
    Error {
        element: String,
        message: String,
        debug: String,
        retry: bool,
    },
    /// EOS reached the end of the pipeline. Informational: when `stop` tears down right after
    /// EOS the bus is flushed and this may not be reported; `stop`'s result is authoritative.
    Eos,
}

/// Where the data flow is (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    Running,
    SinkEos,
    Failed { element: String, message: String },
}

/// State shared between the caller's thread, the streaming threads and the bus thread.
pub(crate) struct Shared {
    pub media: SyncSender<MediaEvent>,
    pub abort: AtomicBool,
    pub shutdown: AtomicBool,
    pub consumer_gone: AtomicBool,
    phase: Mutex<Phase>,
    phase_cv: Condvar,
    /// EOS reached the sink (whatever the phase: also after a failure). Set and waited for
    /// under `phase`'s lock, with `phase_cv`.
    sink_eos: AtomicBool,
    end_sent: Mutex<bool>,
    /// Its own `Arc` so a [`FrameCounter`] can outlive nothing else (it must not hold the
    /// media sender, or the consumer would never see the channel close).
    pub frames_in: Arc<AtomicU64>,
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
    pub keyframes: AtomicU64,
    pub chunks_dropped: AtomicU64,
    pub levels_dropped: AtomicU64,
    pub analysed: AtomicU64,
    pub analysis_dropped: AtomicU64,
    /// The newest preview JPEG and when it arrived.
    pub preview: Mutex<Option<(Vec<u8>, std::time::Instant)>>,
}

/// Why an event could not be queued.
#[derive(Debug, PartialEq)]
enum SendFail {
    /// The receiver was dropped.
    Gone,
    /// Teardown started (or the deadline passed) while the channel was full.
    GaveUp,
}

impl Shared {
    fn new(media: SyncSender<MediaEvent>) -> Self {
        Shared {
            media,
            abort: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            consumer_gone: AtomicBool::new(false),
            phase: Mutex::new(Phase::Running),
            phase_cv: Condvar::new(),
            sink_eos: AtomicBool::new(false),
            end_sent: Mutex::new(false),
            frames_in: Arc::new(AtomicU64::new(0)),
            chunks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            chunks_dropped: AtomicU64::new(0),
            levels_dropped: AtomicU64::new(0),
            analysed: AtomicU64::new(0),
            analysis_dropped: AtomicU64::new(0),
            preview: Mutex::new(None),
        }
    }

    fn set_phase(&self, to: Phase) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *p == Phase::Running {
            *p = to;
            self.phase_cv.notify_all();
        }
    }

    pub(crate) fn fail(&self, element: &str, message: &str) {
        self.set_phase(Phase::Failed {
            element: element.into(),
            message: message.into(),
        });
    }

    fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// EOS reached the sink and `End` was queued: the phase becomes `SinkEos` unless it failed
    /// before, and [`Shared::wait_sink_eos`] returns either way.
    fn reached_sink_eos(&self) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        if *p == Phase::Running {
            *p = Phase::SinkEos;
        }
        self.sink_eos.store(true, Ordering::SeqCst);
        self.phase_cv.notify_all();
    }

    /// Waits until EOS reached the sink or `deadline` passes; true if it did.
    fn wait_sink_eos(&self, deadline: Instant) -> bool {
        let p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _p = self
            .phase_cv
            .wait_timeout_while(p, timeout, |_| !self.sink_eos.load(Ordering::SeqCst))
            .unwrap_or_else(|e| e.into_inner());
        self.sink_eos.load(Ordering::SeqCst)
    }

    /// Waits until the phase leaves `Running` or `deadline` passes.
    fn wait_phase(&self, deadline: Instant) -> Phase {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        while *p == Phase::Running {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            p = self
                .phase_cv
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        p.clone()
    }

    /// Queues `ev`, waiting while the channel is full: that wait is the back-pressure the
    /// consumer applies. Gives up when `abort` is set or `deadline` passes.
    fn send(
        &self,
        mut ev: MediaEvent,
        deadline: Option<Instant>,
        honour_abort: bool,
    ) -> Result<(), SendFail> {
        loop {
            match self.media.try_send(ev) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => {
                    self.consumer_gone.store(true, Ordering::SeqCst);
                    return Err(SendFail::Gone);
                }
                Err(TrySendError::Full(back)) => {
                    if (honour_abort && self.abort.load(Ordering::SeqCst))
                        || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        return Err(SendFail::GaveUp);
                    }
                    ev = back;
                    std::thread::sleep(FULL_POLL);
                }
            }
        }
    }

    /// Delivers one chunk from a streaming thread.
    fn send_chunk(&self, c: Chunk) -> Result<(), SendFail> {
        let len = c.bytes.len() as u64;
        let key = c.keyframe;
        match self.send(
            MediaEvent::Data {
                bytes: c.bytes,
                pts_ns: c.pts_ns,
                keyframe: c.keyframe,
            },
            None,
            true,
        ) {
            Ok(()) => {
                self.chunks.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(len, Ordering::Relaxed);
                if key {
                    self.keyframes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                if e == SendFail::GaveUp {
                    let n = self.chunks_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    error!(target: "capture", "media consumer stalled during teardown: dropped a {len}-byte chunk ({n} so far)");
                }
                Err(e)
            }
        }
    }

    /// Queues `End` unless it already was. `Ok` also when the receiver is gone (nobody to tell).
    fn send_end(&self, deadline: Option<Instant>, honour_abort: bool) -> Result<(), SendFail> {
        let mut sent = self.end_sent.lock().unwrap_or_else(|e| e.into_inner());
        if *sent {
            return Ok(());
        }
        match self.send(MediaEvent::End, deadline, honour_abort) {
            Ok(()) => {
                *sent = true;
                debug!(target: "capture", "MediaEvent::End sent");
                Ok(())
            }
            Err(SendFail::Gone) => {
                // Marked sent so Drop does not try again; there is no receiver to be told twice.
                *sent = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Video frames that reached the encoder so far; cheap to clone and to read from any thread.
#[derive(Debug, Clone)]
pub struct FrameCounter(Arc<AtomicU64>);

impl FrameCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running capture pipeline. Dropping it without `stop` tears it down without waiting for
/// EOS (in-flight media is lost) but still sends `End`.
pub struct Capture {
    pipeline: gst::Pipeline,
    shared: Arc<Shared>,
    chunker: Arc<Mutex<Chunker>>,
    bus_thread: Option<JoinHandle<()>>,
    encoder: EncoderInfo,
    description: String,
    framerate: u32,
    torn_down: bool,
}

impl Capture {
    /// Builds the pipeline and sets it PLAYING. Media goes to `media`: a full channel blocks
    /// the pipeline (back-pressure), it never drops silently. Errors after this returns are
    /// reported through `status`, which is called from the crate's bus thread and must not
    /// block. A synchronous failure to start (e.g. a missing /dev/video9) is returned as
    /// [`CaptureError::Start`] naming the element and the configured device.
    pub fn start(
        settings: &CaptureSettings,
        media: SyncSender<MediaEvent>,
        status: Box<dyn Fn(CaptureStatus) + Send + Sync>,
    ) -> Result<Capture, CaptureError> {
        settings.validate()?;
        crate::init()?;
        // The preview is a convenience: a box without jpegenc records without it.
        let without_preview;
        let settings = if settings.preview_width > 0 && ["valve", "jpegenc"].iter().any(|e| gst::ElementFactory::find(e).is_none()) {
            warn!(target: "capture", "no valve or jpegenc element: recording without the confidence preview");
            without_preview = CaptureSettings { preview_width: 0, ..settings.clone() };
            &without_preview
        } else {
            settings
        };
        let encoder = encoder::probe_encoder(&settings.encoder)?;
        let audio_encoder = match settings.audio {
            AudioSource::None => None,
            _ => Some(encoder::probe_audio_encoder()?),
        };
        require_elements(settings)?;
        let description = describe(settings, &encoder.element, audio_encoder.as_ref());
        info!(target: "capture", "starting pipeline: {description}");

        let build_err = |message: String| CaptureError::Build {
            description: description.clone(),
            message,
        };
        let pipeline = gst::parse::launch(&description)
            .map_err(|e| build_err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| build_err("description did not produce a pipeline".into()))?;
        pipeline.set_property("name", PIPELINE_NAME);

        let shared = Arc::new(Shared::new(media));
        let by_name = |name: &str| {
            pipeline
                .by_name(name)
                .ok_or_else(|| build_err(format!("element {name:?} missing")))
        };

        // Frames are counted where they enter the encoder: past any source-side drops, before
        // the encoder's own buffering, so `dropped` measures what the camera path lost.
        let venc_sink = by_name("venc")?
            .static_pad("sink")
            .ok_or_else(|| build_err("encoder has no sink pad".into()))?;
        let probe_shared = Arc::clone(&shared);
        venc_sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            probe_shared.frames_in.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });

        let appsink = by_name("sink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| build_err("element \"sink\" is not an appsink".into()))?;
        let chunker = Arc::new(Mutex::new(Chunker::new(settings.chunk_bytes)));
        install_sink_callbacks(&appsink, &shared, &chunker);
        if settings.analysis_fps > 0 {
            let analysis = by_name("analysis")?
                .downcast::<gst_app::AppSink>()
                .map_err(|_| build_err("element \"analysis\" is not an appsink".into()))?;
            install_analysis_callbacks(&analysis, &shared);
            let queue = by_name("analysis_queue")?;
            let pad = queue.static_pad("sink").ok_or_else(|| build_err("the analysis queue has no sink pad".into()))?;
            install_analysis_rate(&pad, settings.analysis_fps);
        }
        if settings.preview_width > 0 {
            let preview = by_name("preview")?
                .downcast::<gst_app::AppSink>()
                .map_err(|_| build_err("element \"preview\" is not an appsink".into()))?;
            install_preview_callbacks(&preview, &shared);
        }

        let bus = pipeline
            .bus()
            .ok_or_else(|| build_err("pipeline has no bus".into()))?;
        if pipeline.set_state(gst::State::Playing).is_err() {
            let err = start_error(&bus, settings);
            let _ = pipeline.set_state(gst::State::Null);
            error!(target: "capture", "{err}");
            return Err(err);
        }

        let status: StatusFn = Arc::from(status);
        let bus_thread = match bus::spawn(bus, Arc::clone(&shared), status, PIPELINE_NAME.into()) {
            Ok(t) => t,
            Err(e) => {
                let _ = pipeline.set_state(gst::State::Null);
                return Err(CaptureError::Thread(e));
            }
        };
        Ok(Capture {
            pipeline,
            shared,
            chunker,
            bus_thread: Some(bus_thread),
            encoder,
            description,
            framerate: settings.framerate,
            torn_down: false,
        })
    }

    /// Sends EOS and waits (at most `timeout`) until it reached the appsink, i.e. every buffered
    /// byte was delivered, then sets the pipeline to NULL. After an element failed, the rest of
    /// the pipeline gets the same EOS, for at most [`FAILED_DRAIN`], and the result is still the
    /// failure. On every path, `End` has been sent
    /// exactly once when this returns (unless the consumer stalled, which is reported as
    /// [`CaptureError::ConsumerStalled`], or hung up, when there is nobody to send it to).
    pub fn stop(mut self, timeout: Duration) -> Result<CaptureStats, CaptureError> {
        let started = Instant::now();
        let deadline = started + timeout;
        // The drop arithmetic uses the moment EOS is sent: after it the sources stop producing
        // while the clock keeps running.
        let mut stats = self.stats();
        let phase = match self.shared.phase() {
            Phase::Running => {
                info!(target: "capture", "stopping: sending EOS (timeout {timeout:?})");
                if !self.pipeline.send_event(gst::event::Eos::new()) {
                    warn!(target: "capture", "the pipeline did not accept EOS; tearing down without it");
                }
                self.shared.wait_phase(deadline)
            }
            failed @ Phase::Failed { .. } if !self.shared.consumer_gone.load(Ordering::SeqCst) => {
                // One element failed (a camera or mic gone); the rest still runs. Without a
                // drain, NULL would cut the muxer's output mid-frame and lose what the encoder
                // holds; with it the part ends on a whole frame.
                let until = deadline.min(Instant::now() + FAILED_DRAIN);
                // Not every source takes it (the failed one may not), but EOS reaches the sink
                // once each branch has one: the failed source sent its own downstream.
                let accepted = self.pipeline.send_event(gst::event::Eos::new());
                let drained = self.shared.wait_sink_eos(until);
                info!(target: "capture", "a pipeline element failed: {} the rest before tearing down (EOS accepted by every source: {accepted})", if drained { "drained" } else { "could not drain" });
                failed
            }
            other => other,
        };
        let end = self.teardown(deadline.max(Instant::now() + END_GRACE));
        let after = self.stats();
        stats.chunks = after.chunks;
        stats.bytes = after.bytes;
        stats.keyframes = after.keyframes;
        stats.chunks_dropped = after.chunks_dropped;
        stats.levels_dropped = after.levels_dropped;
        stats.analysed = after.analysed;
        stats.analysis_dropped = after.analysis_dropped;
        stats.leading_bytes_discarded = after.leading_bytes_discarded;
        stats.psi_injected = after.psi_injected;
        info!(target: "capture", "stopped after {:?}: {stats}", started.elapsed());
        end?;
        match phase {
            Phase::SinkEos => Ok(stats),
            Phase::Failed { element, message } => Err(CaptureError::Failed {
                element,
                message,
                stats: Box::new(stats),
            }),
            Phase::Running => {
                error!(target: "capture", "EOS did not reach the sink within {timeout:?}");
                Err(CaptureError::StopTimeout {
                    timeout,
                    stats: Box::new(stats),
                })
            }
        }
    }

    /// A handle on the count of video frames that reached the encoder, for a consumer that
    /// wants to know the camera still delivers (the signal monitor's `no_video`).
    pub fn frame_counter(&self) -> FrameCounter {
        FrameCounter(Arc::clone(&self.shared.frames_in))
    }

    /// The H.264 encoder in use and why it was chosen.
    pub fn encoder(&self) -> &EncoderInfo {
        &self.encoder
    }

    /// Opens (or closes) the confidence preview: while open, about one JPEG a second comes out
    /// of the preview branch. Closed, its valve drops every frame before it is scaled or encoded.
    /// A no-op without a preview branch.
    pub fn want_preview(&self, open: bool) {
        if let Some(valve) = self.pipeline.by_name("preview_valve") {
            valve.set_property("drop", !open);
        }
    }

    /// The newest preview JPEG and its age, if one came since the capture started.
    pub fn preview(&self) -> Option<(Vec<u8>, Duration)> {
        let p = self.shared.preview.lock().unwrap_or_else(|e| e.into_inner());
        p.as_ref().map(|(jpeg, at)| (jpeg.clone(), at.elapsed()))
    }

    /// Current counters; cheap enough to poll.
    pub fn stats(&self) -> CaptureStats {
        let running_time = self
            .pipeline
            .current_running_time()
            .map(|t| Duration::from_nanos(t.nseconds()))
            .unwrap_or_default();
        let frames_in = self.shared.frames_in.load(Ordering::Relaxed);
        let frames_expected = stats::frames_expected(running_time, self.framerate);
        let (leading_bytes_discarded, psi_injected) = {
            let c = self.chunker.lock().unwrap_or_else(|e| e.into_inner());
            (c.leading_bytes_discarded, c.psi_injected)
        };
        CaptureStats {
            frames_in,
            frames_expected,
            dropped: stats::dropped(frames_expected, frames_in),
            running_time,
            chunks: self.shared.chunks.load(Ordering::Relaxed),
            bytes: self.shared.bytes.load(Ordering::Relaxed),
            keyframes: self.shared.keyframes.load(Ordering::Relaxed),
            chunks_dropped: self.shared.chunks_dropped.load(Ordering::Relaxed),
            levels_dropped: self.shared.levels_dropped.load(Ordering::Relaxed),
            analysed: self.shared.analysed.load(Ordering::Relaxed),
            analysis_dropped: self.shared.analysis_dropped.load(Ordering::Relaxed),
            leading_bytes_discarded,
            psi_injected,
        }
    }

    /// The `gst-launch-1.0` description the pipeline was built from (paste it into
    /// `gst-launch-1.0` to reproduce a problem by hand).
    pub fn pipeline_description(&self) -> String {
        self.description.clone()
    }

    /// NULL state, bus thread joined, `End` sent. Idempotent.
    fn teardown(&mut self, end_deadline: Instant) -> Result<(), CaptureError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        // From here nothing may wait on the consumer, or NULL could deadlock (module doc).
        self.shared.abort.store(true, Ordering::SeqCst);
        if self.pipeline.set_state(gst::State::Null).is_err() {
            error!(target: "capture", "setting the pipeline to NULL failed");
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(t) = self.bus_thread.take() {
            if t.join().is_err() {
                error!(target: "capture", "the bus thread panicked");
            }
        }
        let waited_from = Instant::now();
        self.shared
            .send_end(Some(end_deadline), false)
            .map_err(|_| {
                let waited = waited_from.elapsed();
                error!(target: "capture", "media consumer did not take End within {waited:?}");
                CaptureError::ConsumerStalled { waited }
            })
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if !self.torn_down {
            warn!(target: "capture", "capture dropped without stop(); in-flight media is discarded");
            let _ = self.teardown(Instant::now() + END_GRACE);
        }
    }
}

/// The appsinks' shared new-sample prologue: pull the sample, map its buffer readable, and hand
/// the buffer (flags, PTS) and its bytes to `f`. A sample without a buffer is skipped.
fn each_buffer<F>(f: F) -> impl FnMut(&gst_app::AppSink) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static
where
    F: Fn(&gst::BufferRef, &[u8]) -> Result<gst::FlowSuccess, gst::FlowError> + Send + 'static,
{
    move |sink| {
        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
        let Some(buffer) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        f(buffer, map.as_slice())
    }
}

/// Wires the appsink: chunks go out on the streaming thread (which is what makes a full channel
/// back-pressure), EOS flushes the last partial chunk and sends `End`.
fn install_sink_callbacks(
    appsink: &gst_app::AppSink,
    shared: &Arc<Shared>,
    chunker: &Arc<Mutex<Chunker>>,
) {
    let (s_sample, c_sample) = (Arc::clone(shared), Arc::clone(chunker));
    let (s_eos, c_eos) = (Arc::clone(shared), Arc::clone(chunker));
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(each_buffer(move |buffer, data| {
                let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                let pts = buffer.pts().map(|t| t.nseconds());
                let done = c_sample.lock().unwrap_or_else(|e| e.into_inner()).push(data, pts, keyframe);
                for chunk in done {
                    if s_sample.send_chunk(chunk).is_err() {
                        // EOS (not Error) upstream: the sources wind down quietly instead of
                        // posting "Internal data stream error" for a consumer that hung up.
                        return Err(gst::FlowError::Eos);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            }))
            .eos(move |_| {
                let last = c_eos.lock().unwrap_or_else(|e| e.into_inner()).flush();
                if let Some(chunk) = last {
                    let _ = s_eos.send_chunk(chunk);
                }
                match s_eos.send_end(None, true) {
                    Ok(()) => s_eos.reached_sink_eos(),
                    Err(_) => warn!(target: "capture", "EOS reached the sink but End could not be queued before teardown"),
                }
            })
            .build(),
    );
}

/// Lets `fps` frames a second through `pad` (the analysis queue's sink) and drops the rest there,
/// in the tee's thread, by their timestamps: frame `n` passes once its PTS reaches the slot after
/// the previous one's (half a frame's jitter forgiven); after a gap the slots start again from
/// the next frame. A frame without a PTS passes.
fn install_analysis_rate(pad: &gst::Pad, fps: u32) {
    let slot = gst::ClockTime::SECOND / u64::from(fps.max(1));
    let jitter = gst::ClockTime::from_mseconds(5);
    let next: Mutex<Option<gst::ClockTime>> = Mutex::new(None);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let mut next = next.lock().unwrap_or_else(|e| e.into_inner());
        match *next {
            Some(due) if pts + jitter < due => {
                // Taken and dropped here, then `Handled`: with `Drop` GStreamer 1.22 and the
                // bindings both unref the buffer (a GStreamer-CRITICAL per dropped frame).
                drop(info.data.take());
                gst::PadProbeReturn::Handled
            }
            due => {
                *next = Some(match due {
                    Some(due) if pts < due + slot => due + slot,
                    _ => pts + slot,
                });
                gst::PadProbeReturn::Ok
            }
        }
    });
}

/// Wires the analysis branch's appsink: each frame's luma rows are copied out packed and offered
/// to the media channel with `try_send`. The branch sits behind a leaky queue, so nothing here can
/// hold up the encoder; a full channel costs an analysed frame, never a recorded one.
fn install_analysis_callbacks(appsink: &gst_app::AppSink, shared: &Arc<Shared>) {
    let s = Arc::clone(shared);
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(each_buffer(move |buffer, data| {
                let Some(luma) = pack_rows(data, ANALYSIS_WIDTH as usize, ANALYSIS_HEIGHT as usize) else {
                    debug!(target: "capture", "analysis frame of {} bytes is not {ANALYSIS_WIDTH}x{ANALYSIS_HEIGHT} GRAY8", data.len());
                    return Ok(gst::FlowSuccess::Ok);
                };
                let ev = MediaEvent::Luma { pts_ns: buffer.pts().map(|t| t.nseconds()), width: ANALYSIS_WIDTH, height: ANALYSIS_HEIGHT, luma };
                match s.media.try_send(ev) {
                    Ok(()) => {
                        s.analysed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(_)) => {
                        s.analysis_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => s.consumer_gone.store(true, Ordering::SeqCst),
                }
                Ok(gst::FlowSuccess::Ok)
            }))
            .build(),
    );
}

/// Wires the preview branch's appsink: the newest JPEG replaces the last one in [`Shared`]. The
/// branch sits behind a leaky queue and a valve, so it never holds up the encoder.
fn install_preview_callbacks(appsink: &gst_app::AppSink, shared: &Arc<Shared>) {
    let s = Arc::clone(shared);
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(each_buffer(move |_, jpeg| {
                *s.preview.lock().unwrap_or_else(|e| e.into_inner()) = Some((jpeg.to_vec(), std::time::Instant::now()));
                Ok(gst::FlowSuccess::Ok)
            }))
            .build(),
    );
}

/// GStreamer pads GRAY8 rows to a multiple of 4 bytes; returns the rows packed (`width` bytes
/// each), or `None` when `data` is too short for `height` such rows.
pub(crate) fn pack_rows(data: &[u8], width: usize, height: usize) -> Option<Vec<u8>> {
    let stride = width.div_ceil(4) * 4;
    if height == 0 || data.len() < stride * (height - 1) + width {
        return None;
    }
    Some((0..height).flat_map(|r| &data[r * stride..r * stride + width]).copied().collect())
}

/// Fails early, with the element's purpose, if something the description needs is missing;
/// `parse::launch` would only say "no element". An element whose plugin is installed but not on
/// the daemon's allow-list (plugins.rs) is missing too: the registry only describes allowed ones.
fn require_elements(s: &CaptureSettings) -> Result<(), CaptureError> {
    for (element, purpose) in needed_elements(s) {
        if gst::ElementFactory::find(element).is_none() {
            return Err(CaptureError::MissingElement {
                element: element.into(),
                purpose,
            });
        }
    }
    Ok(())
}

/// The elements the description of `s` needs besides its encoders, each with its purpose.
pub(crate) fn needed_elements(s: &CaptureSettings) -> Vec<(&'static str, &'static str)> {
    let mut needed: Vec<(&'static str, &'static str)> = vec![
        ("videoconvert", "video conversion"),
        ("queue", "thread decoupling"),
        ("h264parse", "H.264 parsing"),
        ("mpegtsmux", "MPEG-TS muxing"),
        ("appsink", "handing media to the journal"),
    ];
    needed.push(match s.video {
        VideoSource::Test { .. } => ("videotestsrc", "the simulated camera"),
        VideoSource::V4l2 { .. } => ("v4l2src", "the V4L2 camera"),
    });
    match s.audio {
        AudioSource::None => {}
        AudioSource::Test { .. } => needed.push(("audiotestsrc", "the simulated microphone")),
        AudioSource::Alsa { .. } => needed.push(("alsasrc", "the ALSA microphone")),
    }
    if s.preview_width > 0 {
        needed.extend([("tee", "the confidence preview branch"), ("videorate", "the preview rate"), ("videoscale", "downscaling preview frames")]);
    }
    if s.analysis_fps > 0 {
        needed.extend([
            ("tee", "the video analysis branch"),
            ("videoscale", "downscaling analysed frames"),
        ]);
    }
    if s.audio != AudioSource::None {
        needed.extend([
            ("audioconvert", "audio conversion"),
            ("audioresample", "audio resampling"),
            ("level", "audio level metering"),
        ]);
    }
    needed
}

/// What a V4L2 camera may deliver at the configured size and rate, raw first, then MJPEG
/// (decoded by whatever `decodebin` ranks best: `jpegdec`, or the Pi's `v4l2jpegdec`). Many UVC
/// webcams offer 1280x720@30 only as MJPEG, because raw YUYV at that size does not fit USB 2.0;
/// with raw caps alone such a camera would never negotiate and the box would sit in its retry
/// loop. A camera that offers both gets raw (the first structure wins), and `decodebin` passes
/// raw video straight through.
pub(crate) fn camera_formats(s: &CaptureSettings) -> String {
    let (w, h, f) = (s.width, s.height, s.framerate);
    format!("capsfilter caps=\"video/x-raw,width={w},height={h},framerate={f}/1;image/jpeg,width={w},height={h},framerate={f}/1\" ! decodebin name=vdec")
}

/// The whole pipeline as a `gst-launch` description. Raw video is pinned to I420 before the
/// encoder: left free, x264enc negotiates Y444 from videotestsrc and writes High 4:4:4 Profile,
/// which hardware decoders and browsers cannot play.
pub(crate) fn describe(
    s: &CaptureSettings,
    video_encoder: &str,
    audio_encoder: Option<&AudioEncoder>,
) -> String {
    let vsrc = match &s.video {
        VideoSource::Test { pattern } => {
            // Scrolling keeps every pattern moving, so a frozen output is detectable; with
            // `smpte` it fills a 4 Mbit/s budget like a camera does (at about one core of x264
            // veryfast at 720p30 here, which is why the cheap `ball` is the default).
            format!("videotestsrc name=vsrc is-live=true pattern={pattern} horizontal-speed=4")
        }
        VideoSource::V4l2 { device } => format!(
            "v4l2src name=vsrc device={} ! {}",
            quote(&device.to_string_lossy()),
            camera_formats(s)
        ),
    };
    // The analysis branch leaves the recording branch through a tee and a leaky one-buffer
    // queue: when it falls behind it loses analysed frames, never recorded ones. A probe on the
    // queue's sink pad (`install_analysis_rate`) lets only `analysis_fps` frames a second in, so
    // the cost is the scaling of a few frames a second, and no element of the branch keeps a
    // full-size frame between them (a rate element would hold its previous frame, one more raw
    // frame in the camera's buffer pool for the whole recording).
    let mut analysis = if s.analysis_fps > 0 {
        format!(
            "  vtee. ! queue name=analysis_queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 ! videoscale ! video/x-raw,width={ANALYSIS_WIDTH},height={ANALYSIS_HEIGHT} ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=analysis sync=false async=false max-buffers=1 drop=true emit-signals=false"
        )
    } else {
        String::new()
    };
    // The confidence preview: the same kind of branch, closed by a valve until someone looks
    // (`Capture::want_preview`), then about one JPEG a second.
    if s.preview_width > 0 {
        analysis.push_str(&format!(
            "  vtee. ! queue name=preview_queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 ! valve name=preview_valve drop=true ! videorate drop-only=true max-rate=1 ! videoscale ! video/x-raw,width={},height={},pixel-aspect-ratio=1/1 ! jpegenc quality=75 ! appsink name=preview sync=false async=false max-buffers=1 drop=true emit-signals=false",
            s.preview_width,
            // The picture's aspect, rounded to an even height (I420).
            ((u64::from(s.preview_width) * u64::from(s.height) / u64::from(s.width.max(1))).max(2) / 2 * 2)
        ));
    }
    let tee = if analysis.is_empty() { "" } else { "tee name=vtee ! " };
    let mut d = format!(
        "{vsrc} ! video/x-raw,width={},height={},framerate={}/1 ! videoconvert ! video/x-raw,format=I420 ! {tee}queue name=venc_queue ! {} ! h264parse config-interval=-1 ! queue name=vmux_queue ! mpegtsmux name=mux ! appsink name=sink sync=false emit-signals=false{analysis}",
        s.width,
        s.height,
        s.framerate,
        encoder::video_encoder_fragment(video_encoder, s)
    );
    let asrc = match &s.audio {
        AudioSource::None => None,
        AudioSource::Test { freq_hz } => Some(format!(
            "audiotestsrc name=asrc is-live=true wave=sine freq={freq_hz}"
        )),
        AudioSource::Alsa { device } => Some(format!("alsasrc name=asrc device={}", quote(device))),
    };
    if let (Some(asrc), Some(aenc)) = (asrc, audio_encoder) {
        d.push_str(&format!(
            "  {asrc} ! audioconvert ! audioresample ! audio/x-raw,rate=48000 ! level name=level interval={} post-messages=true ! {} ! queue name=amux_queue ! mux.",
            s.level_interval.as_nanos(),
            encoder::audio_encoder_fragment(aenc, s)
        ));
    }
    d
}

/// Turns a synchronous PLAYING failure into an error that names the element and the device.
fn start_error(bus: &gst::Bus, s: &CaptureSettings) -> CaptureError {
    let source_desc = |element: &str| -> String {
        if element.ends_with(":vsrc") {
            match &s.video {
                VideoSource::V4l2 { device } => {
                    format!("video source v4l2src device={}", device.display())
                }
                VideoSource::Test { pattern } => {
                    format!("video source videotestsrc pattern={pattern}")
                }
            }
        } else if element.ends_with(":asrc") {
            match &s.audio {
                AudioSource::Alsa { device } => format!("audio source alsasrc device={device}"),
                other => format!("audio source {other:?}"),
            }
        } else {
            "pipeline element".into()
        }
    };
    match bus
        .pop_filtered(&[gst::MessageType::Error])
        .as_ref()
        .map(|m| (m, m.view()))
    {
        Some((msg, gst::MessageView::Error(e))) => {
            let element = msg
                .src()
                .map(|o| o.path_string().to_string())
                .unwrap_or_else(|| "<unknown>".into());
            CaptureError::Start {
                source_desc: source_desc(&element),
                element,
                message: e.error().to_string(),
                debug: e.debug().map(|d| d.to_string()).unwrap_or_default(),
            }
        }
        _ => CaptureError::Start {
            element: PIPELINE_NAME.into(),
            source_desc: format!("{:?} / {:?}", s.video, s.audio),
            message: "state change to PLAYING failed without an error message".into(),
            debug: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_for_sim_defaults() {
        let s = CaptureSettings {
            width: 320,
            height: 240,
            ..Default::default()
        };
        let aac = AudioEncoder {
            element: "avenc_aac",
            parser: Some("aacparse"),
        };
        assert_eq!(
            describe(&s, "x264enc", Some(&aac)),
            "videotestsrc name=vsrc is-live=true pattern=ball horizontal-speed=4 ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! video/x-raw,format=I420 ! queue name=venc_queue ! x264enc name=venc bitrate=4000 speed-preset=veryfast key-int-max=60 tune=zerolatency ! h264parse config-interval=-1 ! queue name=vmux_queue ! mpegtsmux name=mux ! appsink name=sink sync=false emit-signals=false  audiotestsrc name=asrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! audio/x-raw,rate=48000 ! level name=level interval=100000000 post-messages=true ! avenc_aac name=aenc bitrate=128000 ! aacparse ! queue name=amux_queue ! mux."
        );
    }

    #[test]
    fn description_quotes_devices_and_omits_audio() {
        let s = CaptureSettings {
            video: VideoSource::V4l2 {
                device: "/dev/v4l/by-id/usb-Cam \"X\"".into(),
            },
            audio: AudioSource::None,
            ..Default::default()
        };
        let d = describe(&s, "openh264enc", None);
        assert!(
            d.starts_with(r#"v4l2src name=vsrc device="/dev/v4l/by-id/usb-Cam \"X\"" ! capsfilter caps="video/x-raw,width=1280,height=720,framerate=30/1;image/jpeg,width=1280,height=720,framerate=30/1" ! decodebin name=vdec ! video/x-raw,"#),
            "{d}"
        );
        assert!(!d.contains("asrc"), "{d}");
    }

    #[test]
    fn description_with_the_analysis_branch() {
        let s = CaptureSettings { width: 320, height: 240, audio: AudioSource::None, analysis_fps: 5, ..Default::default() };
        let d = describe(&s, "x264enc", None);
        assert!(d.contains("video/x-raw,format=I420 ! tee name=vtee ! queue name=venc_queue ! x264enc"), "{d}");
        assert!(
            d.ends_with("  vtee. ! queue name=analysis_queue leaky=downstream max-size-buffers=1 max-size-bytes=0 max-size-time=0 ! videoscale ! video/x-raw,width=64,height=36 ! videoconvert ! video/x-raw,format=GRAY8 ! appsink name=analysis sync=false async=false max-buffers=1 drop=true emit-signals=false"),
            "{d}"
        );
    }

    #[test]
    fn pack_rows_drops_the_row_padding() {
        // Width 6 pads rows to 8 bytes.
        let padded: Vec<u8> = (0..8u8).chain(10..18).collect();
        assert_eq!(pack_rows(&padded, 6, 2), Some(vec![0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]));
        // The last row needs only its own width.
        assert_eq!(pack_rows(&padded[..14], 6, 2), Some(vec![0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]));
        assert_eq!(pack_rows(&padded[..13], 6, 2), None);
        assert_eq!(pack_rows(&[1, 2, 3, 4], 4, 1), Some(vec![1, 2, 3, 4]));
    }

    /// The camera branch with stand-ins for the two kinds of UVC camera (no V4L2 device here):
    /// one that sends raw video and one that sends only MJPEG. Both must come out as I420 frames
    /// of the configured size, every frame.
    #[test]
    fn camera_branch_takes_raw_and_mjpeg_cameras() {
        if gst::init().is_err() || ["jpegenc", "jpegdec", "decodebin"].iter().any(|e| gst::ElementFactory::find(e).is_none()) {
            eprintln!("SKIPPED camera_branch_takes_raw_and_mjpeg_cameras: needs jpegenc, jpegdec, decodebin (gst-plugins-good, base)");
            return;
        }
        let s = CaptureSettings { width: 320, height: 240, framerate: 30, ..Default::default() };
        for (camera, encode) in [("raw", ""), ("mjpeg", " ! jpegenc")] {
            let desc = format!(
                "videotestsrc num-buffers=15 pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1{encode} ! {} ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink sync=false",
                camera_formats(&s)
            );
            let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
            let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
            pipeline.set_state(gst::State::Playing).unwrap();
            let mut frames = 0;
            while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
                let caps = sample.caps().unwrap().structure(0).unwrap().to_owned();
                assert_eq!((caps.get::<i32>("width").unwrap(), caps.get::<i32>("height").unwrap()), (320, 240), "{camera}: {caps}");
                assert_eq!(caps.get::<&str>("format").unwrap(), "I420", "{camera}: {caps}");
                frames += 1;
            }
            pipeline.set_state(gst::State::Null).unwrap();
            assert_eq!(frames, 15, "{camera} camera: {frames} of 15 frames came through");
        }
    }
}
