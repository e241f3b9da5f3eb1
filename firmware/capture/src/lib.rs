//! Media capture for Lectern: the only crate that links GStreamer.
//!
//! [`Capture::start`] builds one live pipeline — camera (or `videotestsrc`) → H.264 →
//! `mpegtsmux`, microphone (or `audiotestsrc`) → `level` → AAC → the same mux — and hands the
//! transport stream to the caller as [`MediaEvent::Data`] chunks through a bounded channel,
//! keyframe-aligned so the journal can cut segments that decode on their own. Audio levels
//! arrive on the same channel as [`MediaEvent::Level`]; pipeline health arrives through the
//! status callback as [`CaptureStatus`], each error carrying a retry-or-forward decision.
//! With `analysis_fps` set, a leaky branch off the raw video delivers a downscaled luma plane a
//! few times a second as [`MediaEvent::Luma`] for the signal alarms (`lectern-signals` computes
//! mean, variance and a fingerprint from it). GStreamer's `videoanalyse` would post the mean and
//! variance as bus messages, but the frozen-picture fingerprint needs the pixels anyway, and the
//! statistics of the same 64×36 plane cost nothing more, so the branch hands over pixels only.
//!
//! Module map: `settings` (what may be asked, validated), `encoder` (registry probe and
//! per-encoder configuration), `capture` (pipeline lifecycle and delivery), `bus` (bus thread,
//! retry decision), `probe` (can the camera and mic be opened now, checked while idle),
//! `plugins` (every element the crate may create and its plugin: the daemon's plugin
//! allow-list), `chunker` and `level` (pure helpers), `stats`, `error`.

mod bus;
mod capture;
mod chunker;
mod encoder;
mod error;
pub mod level;
pub mod mixer;
pub mod plugins;
pub mod v4l2;
mod probe;
mod settings;
mod stats;

pub use bus::should_retry;
pub use capture::{Capture, CaptureStatus, FrameCounter, MediaEvent, ANALYSIS_HEIGHT, ANALYSIS_WIDTH};
pub use chunker::{Chunk, Chunker};
pub use encoder::{auto_candidates, probe_encoder, probe_encoder_for, EncoderHint, EncoderInfo};
pub use error::CaptureError;
pub use probe::{probe_inputs, DeviceReport, Input, InputCheck};
pub use settings::{AudioSource, CaptureSettings, EncoderChoice, VideoSource};
pub use stats::CaptureStats;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use gstreamer as gst;

/// The environment GStreamer must see in this process, as (name, value) pairs; a daemon sets them
/// with [`set_process_env`] first thing in `main`.
///
/// `GST_V4L2_FORCE_DRAIN`: when a V4L2 camera goes away mid-capture (a USB camera unplugged),
/// GStreamer 1.22's `v4l2src` stops its buffer pool by "orphaning" it, whose `VIDIOC_REQBUFS`
/// fails with ENODEV on the dead device; the pool and its duplicate of the device's file
/// descriptor are then never freed. The process keeps the dead device open: each unplug leaks an
/// fd and the device's buffers, a camera plugged in again gets another node number (the old one
/// stays taken until its last fd closes, so a configured `/dev/video0` would not record again),
/// and vivid cannot reconnect. Seen in the systemd guest (hil-tests/guest/tests/systemd.rs: one `/dev/video0`
/// fd left after the failed pipeline was set to NULL and dropped, even for `v4l2src ! fakesink`).
/// With the variable set the pool is drained and freed instead, which is all a capture source
/// needs when it stops.
///
/// `GST_PLUGIN_LOADING_WHITELIST`: only the plugins of [`plugins::ELEMENTS`] are loaded or
/// described in the registry ([`plugins`] says why; docs/decisions.md D26).
///
/// `GST_REGISTRY`: the registry of an allow-listed process differs from everyone else's, so it
/// gets a file of its own: the systemd unit names one under the daemon's cache directory, and
/// elsewhere it is `lectern/gstreamer-registry.bin` in the user's cache directory
/// (`$XDG_CACHE_HOME`, else `~/.cache`). Sharing GStreamer's default file would make the daemon
/// and every other GStreamer program rescan all plugins each time the other one ran. Without
/// either variable (no home) GStreamer's default stays.
pub fn process_env() -> Vec<(&'static str, OsString)> {
    let mut env = vec![
        ("GST_V4L2_FORCE_DRAIN", OsString::from("1")),
        ("GST_PLUGIN_LOADING_WHITELIST", OsString::from(plugins::allow_list())),
    ];
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| Path::new(&h).join(".cache")));
    if let Some(cache) = cache {
        env.push(("GST_REGISTRY", cache.join("lectern").join("gstreamer-registry.bin").into_os_string()));
    }
    env
}

/// Sets [`process_env`] where the environment does not already name it: a value the environment
/// gives wins (an operator's wider plugin list, an empty one for every plugin, the unit's
/// registry file). Call it while the process has one thread (the start of `main`): changing the
/// environment races with any other thread reading it.
pub fn set_process_env() {
    for (name, value) in process_env() {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
}

/// Initialises GStreamer; cheap and idempotent, and called by [`Capture::start`] anyway.
/// Call it early to fail fast on a broken installation.
pub fn init() -> Result<(), CaptureError> {
    gst::init().map_err(|e| CaptureError::Init(e.to_string()))?;
    log::debug!(target: "capture", "GStreamer {}", gst::version_string());
    Ok(())
}
