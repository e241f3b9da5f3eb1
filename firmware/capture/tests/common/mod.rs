//! Helpers shared by the capture integration tests: collecting events and skipping loudly.

#![allow(dead_code)]

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use lectern_capture::{CaptureStatus, MediaEvent};

/// Returns false (after saying so on stderr) if any element is missing, so the test can skip.
pub fn have_elements(test: &str, elements: &[&str]) -> bool {
    lectern_capture::init().expect("GStreamer init");
    let missing: Vec<&str> = elements
        .iter()
        .copied()
        .filter(|e| gstreamer::ElementFactory::find(e).is_none())
        .collect();
    if missing.is_empty() {
        true
    } else {
        eprintln!("SKIPPED {test}: GStreamer element(s) {missing:?} not installed");
        false
    }
}

/// A channel whose receiver is drained on a thread, recording arrival times.
pub struct Collector {
    pub handle: JoinHandle<Vec<(Instant, MediaEvent)>>,
}

pub fn collect(capacity: usize) -> (std::sync::mpsc::SyncSender<MediaEvent>, Collector) {
    let (tx, rx): (_, Receiver<MediaEvent>) = sync_channel(capacity);
    let handle =
        std::thread::spawn(move || rx.into_iter().map(|ev| (Instant::now(), ev)).collect());
    (tx, Collector { handle })
}

/// The callback type `Capture::start` takes.
pub type StatusFn = Box<dyn Fn(CaptureStatus) + Send + Sync>;

/// A status callback that records every report.
pub fn status_log() -> (Arc<Mutex<Vec<CaptureStatus>>>, StatusFn) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = Arc::clone(&log);
    (log, Box::new(move |s| l.lock().unwrap().push(s)))
}

/// (peak, rms) of every Level event.
pub fn levels(events: &[(Instant, MediaEvent)]) -> Vec<(f64, f64)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Level {
                peak_db, rms_db, ..
            } => Some((*peak_db, *rms_db)),
            _ => None,
        })
        .collect()
}
