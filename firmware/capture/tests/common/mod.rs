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

/// Writes an ALSA configuration into `dir` that defines `pcm.NAME` as alsa-lib's `file` plugin
/// over the `null` PCM, reading capture data from `infile` (`snd_pcm_open` opens it), and returns
/// its path for `ALSA_CONFIG_PATH`. `None` (after saying so) when alsa-lib's data is missing.
pub fn file_pcm_config(test: &str, dir: &std::path::Path, name: &str, infile: &std::path::Path) -> Option<std::path::PathBuf> {
    let base = std::path::Path::new("/usr/share/alsa/alsa.conf");
    if !base.exists() {
        eprintln!("SKIPPED {test}: {} missing (alsa-lib data not installed)", base.display());
        return None;
    }
    let conf = dir.join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "<{}>\npcm.{name} {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
            base.display(),
            infile.display()
        ),
    )
    .expect("write the ALSA config");
    Some(conf)
}
