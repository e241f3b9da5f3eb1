//! The bus-watch thread: turns GStreamer bus messages into `CaptureStatus` reports and
//! `MediaEvent::Level` readings, and owns the retry-or-forward decision for pipeline errors.
//!
//! This crate never restarts a pipeline itself. Every error is *forwarded* through the status
//! callback with `retry` set by [`should_retry`]: `true` means "the same settings may work after
//! a back-off" (a camera unplugged, a device busy, a read failure), `false` means "retrying
//! cannot help, this is a configuration or installation fault" (missing plugin, caps the device
//! cannot do). The supervisor in `lecternd` owns the back-off, as it owns every other policy.
//!
//! Only the first error is reported: one failure typically makes several elements post errors
//! ("Internal data stream error" from every source behind a failed sink), and reporting those
//! would make the supervisor restart once per echo. The echoes are logged.

use std::sync::mpsc::TrySendError;
use std::sync::Arc;
use std::thread::JoinHandle;

use gst::glib;
use gst::prelude::*;
use gstreamer as gst;
use log::{debug, error, info, warn};

use crate::capture::Shared;
use crate::level;
use crate::{CaptureStatus, MediaEvent};

/// The callback type the owner of a capture passes in; it must not block.
pub(crate) type StatusFn = Arc<dyn Fn(CaptureStatus) + Send + Sync>;

/// Whether an error is worth retrying with the same settings (see the module doc).
pub fn should_retry(err: &glib::Error, debug: &str) -> bool {
    if let Some(e) = err.kind::<gst::ResourceError>() {
        // Devices come and go; only "the device can't do what we asked" and "we may not use it"
        // are permanent. NotFound is retryable: a USB camera may be plugged in later.
        return !matches!(
            e,
            gst::ResourceError::Settings | gst::ResourceError::NotAuthorized
        );
    }
    if let Some(e) = err.kind::<gst::CoreError>() {
        return !matches!(
            e,
            gst::CoreError::MissingPlugin
                | gst::CoreError::Negotiation
                | gst::CoreError::NotImplemented
                | gst::CoreError::Caps
                | gst::CoreError::Pad
        );
    }
    if let Some(e) = err.kind::<gst::StreamError>() {
        return match e {
            // Flow errors surface as "Internal data stream error"; the reason is only in the
            // debug string. not-negotiated means the caps can never work with these settings.
            gst::StreamError::Failed => !debug.contains("not-negotiated"),
            gst::StreamError::Format
            | gst::StreamError::WrongType
            | gst::StreamError::CodecNotFound
            | gst::StreamError::NotImplemented
            | gst::StreamError::TypeNotFound => false,
            _ => true,
        };
    }
    if let Some(e) = err.kind::<gst::LibraryError>() {
        return !matches!(e, gst::LibraryError::Init | gst::LibraryError::Settings);
    }
    // Unknown domains (plugin-specific) are forwarded as retryable; the supervisor's back-off
    // bounds the cost of being wrong.
    true
}

/// Per-thread state: what has already been reported.
struct Watch {
    shared: Arc<Shared>,
    status: StatusFn,
    pipeline_name: String,
    reported_running: bool,
    reported_error: bool,
}

pub(crate) fn spawn(
    bus: gst::Bus,
    shared: Arc<Shared>,
    status: StatusFn,
    pipeline_name: String,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("capture-bus".into())
        .spawn(move || {
            let mut w = Watch {
                shared,
                status,
                pipeline_name,
                reported_running: false,
                reported_error: false,
            };
            // A timed pop rather than a blocking one, so shutdown and a vanished consumer are
            // noticed within 50 ms without needing a wake-up message.
            while !w.shared.shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                w.check_consumer();
                if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(50)) {
                    w.handle(&msg);
                }
            }
            // No final drain: teardown has already set NULL, which flushes the bus, so anything
            // still queued (a late EOS message, the last levels) is gone. `stop`'s return value,
            // not `CaptureStatus::Eos`, is the authoritative end of a capture.
        })
}

impl Watch {
    fn check_consumer(&mut self) {
        if self
            .shared
            .consumer_gone
            .load(std::sync::atomic::Ordering::SeqCst)
            && !self.reported_error
        {
            self.reported_error = true;
            warn!(target: "capture", "media receiver hung up; stopping the data flow");
            self.shared
                .fail("media receiver", "the MediaEvent receiver was dropped");
            (self.status)(CaptureStatus::Error {
                element: "media receiver".into(),
                message: "the MediaEvent receiver was dropped; capture stopped delivering".into(),
                debug: String::new(),
                retry: false,
            });
        }
    }

    fn handle(&mut self, msg: &gst::Message) {
        use gst::MessageView;
        match msg.view() {
            MessageView::Error(e) => {
                let element = msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_else(|| "<unknown>".into());
                let message = e.error().to_string();
                let debug = e.debug().map(|d| d.to_string()).unwrap_or_default();
                if self.reported_error {
                    info!(target: "capture", "further error (consequence of the first, not reported) from {element}: {message}");
                    return;
                }
                self.reported_error = true;
                let retry = should_retry(&e.error(), &debug);
                error!(target: "capture", "pipeline error from {element}: {message} (retry: {retry}) [{debug}]");
                self.shared.fail(&element, &message);
                (self.status)(CaptureStatus::Error {
                    element,
                    message,
                    debug,
                    retry,
                });
            }
            MessageView::Warning(w) => {
                let element = msg
                    .src()
                    .map(|s| s.path_string().to_string())
                    .unwrap_or_default();
                warn!(target: "capture", "pipeline warning from {element}: {} [{}]", w.error(), w.debug().map(|d| d.to_string()).unwrap_or_default());
            }
            MessageView::Eos(_) => {
                info!(target: "capture", "pipeline reached EOS");
                (self.status)(CaptureStatus::Eos);
            }
            MessageView::StateChanged(sc) => {
                let from_pipeline = msg
                    .src()
                    .map(|s| s.name() == self.pipeline_name.as_str())
                    .unwrap_or(false);
                if from_pipeline && sc.current() == gst::State::Playing && !self.reported_running {
                    self.reported_running = true;
                    info!(target: "capture", "pipeline PLAYING");
                    (self.status)(CaptureStatus::Running);
                }
            }
            MessageView::Element(_) => self.handle_element(msg),
            _ => {}
        }
    }

    fn handle_element(&mut self, msg: &gst::Message) {
        let Some(s) = msg.structure() else { return };
        if s.name() != "level" {
            return;
        }
        let db = |field: &str| -> Vec<f64> {
            s.get::<glib::ValueArray>(field)
                .map(|a| a.iter().filter_map(|v| v.get::<f64>().ok()).collect())
                .unwrap_or_default()
        };
        let Some((peak_db, rms_db)) = level::combine(&db("peak"), &db("rms")) else {
            debug!(target: "capture", "level message without peak/rms arrays: {s}");
            return;
        };
        let pts_ns = s
            .get::<u64>("running-time")
            .or_else(|_| s.get::<u64>("timestamp"))
            .ok();
        // try_send: a meter reading is not worth blocking the thread that reports errors, and a
        // blocked bus thread would deadlock a consumer that calls stop() while the channel is full.
        match self.shared.media.try_send(MediaEvent::Level {
            pts_ns,
            peak_db,
            rms_db,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self
                    .shared
                    .levels_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1;
                if n.is_power_of_two() {
                    debug!(target: "capture", "media channel full; {n} level readings dropped so far");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared
                    .consumer_gone
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(err: glib::Error, debug: &str, expect: bool) {
        assert_eq!(should_retry(&err, debug), expect, "{err:?} / {debug:?}");
    }

    #[test]
    fn retry_decisions() {
        check(
            glib::Error::new(
                gst::ResourceError::NotFound,
                "Cannot identify device '/dev/video9'",
            ),
            "",
            true,
        );
        check(glib::Error::new(gst::ResourceError::Busy, "busy"), "", true);
        check(
            glib::Error::new(gst::ResourceError::Read, "Could not read from resource"),
            "",
            true,
        );
        check(
            glib::Error::new(gst::ResourceError::Settings, "Device can't do 4K"),
            "",
            false,
        );
        check(
            glib::Error::new(gst::ResourceError::NotAuthorized, "Permission denied"),
            "",
            false,
        );
        check(
            glib::Error::new(gst::CoreError::MissingPlugin, "no x264enc"),
            "",
            false,
        );
        check(
            glib::Error::new(gst::StreamError::Failed, "Internal data stream error."),
            "reason not-negotiated (-4)",
            false,
        );
        check(
            glib::Error::new(gst::StreamError::Failed, "Internal data stream error."),
            "reason error (-5)",
            true,
        );
        check(
            glib::Error::new(gst::StreamError::Encode, "encoder hiccup"),
            "",
            true,
        );
        check(
            glib::Error::new(gst::LibraryError::Init, "x264 init failed"),
            "",
            false,
        );
    }
}
