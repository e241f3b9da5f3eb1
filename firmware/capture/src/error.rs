//! The crate's one error type. Every variant carries the element, device or setting it is about,
//! so a log line or a status report is actionable without a debugger.

use std::time::Duration;

use crate::stats::CaptureStats;

/// Everything that can go wrong while probing, starting or stopping a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// `gst::init` failed (no GStreamer runtime, broken registry).
    #[error("GStreamer initialisation failed: {0}")]
    Init(String),

    /// A setting would produce an invalid or unsafe pipeline description.
    #[error("invalid capture setting {field}: {reason}")]
    InvalidSettings { field: &'static str, reason: String },

    /// `EncoderChoice::Named` asked for an encoder that cannot be used here.
    #[error("video encoder {name:?} was requested but is not usable: {reason}")]
    EncoderUnavailable { name: String, reason: String },

    /// `EncoderChoice::Auto` found no usable H.264 encoder at all.
    #[error("no usable H.264 encoder: {tried}")]
    NoVideoEncoder { tried: String },

    /// No AAC (or Opus) encoder is installed.
    #[error("no usable audio encoder: {tried}")]
    NoAudioEncoder { tried: String },

    /// An element the pipeline needs is not in the GStreamer registry.
    #[error("GStreamer element {element:?} (needed for {purpose}) is not installed")]
    MissingElement {
        element: String,
        purpose: &'static str,
    },

    /// `gst::parse::launch` rejected the description or a named element was not found in it.
    #[error("building the capture pipeline failed: {message}; pipeline: {description}")]
    Build {
        description: String,
        message: String,
    },

    /// The pipeline refused to go to PLAYING synchronously, e.g. a camera node that does not exist.
    /// `element` is the GStreamer object path, `source` says which configured input it is.
    #[error("starting capture failed in {element} ({source_desc}): {message} [{debug}]")]
    Start {
        element: String,
        source_desc: String,
        message: String,
        debug: String,
    },

    /// The pipeline had failed (and reported it via the status callback) before or during stop,
    /// so the tail of the recording may be missing.
    #[error("capture pipeline failed in {element}: {message}; stats at stop: {stats}")]
    Failed {
        element: String,
        message: String,
        stats: Box<CaptureStats>,
    },

    /// EOS did not reach the appsink within the stop timeout; the pipeline was torn down anyway
    /// and anything still in flight inside it was lost.
    #[error("EOS did not reach the sink within {timeout:?}; stats at stop: {stats}")]
    StopTimeout {
        timeout: Duration,
        stats: Box<CaptureStats>,
    },

    /// The media consumer neither took `MediaEvent::End` nor hung up before the deadline.
    #[error("media consumer stalled: MediaEvent::End could not be queued within {waited:?}")]
    ConsumerStalled { waited: Duration },

    /// The device probe could not open a configured input (`input` is `camera` or `mic`).
    #[error("{input} {device} cannot be opened: {message}")]
    DeviceUnavailable {
        input: &'static str,
        device: String,
        message: String,
    },

    /// The bus-watch thread could not be spawned.
    #[error("spawning the capture bus thread: {0}")]
    Thread(#[source] std::io::Error),
}
