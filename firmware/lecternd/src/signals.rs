//! The signal alarms of a running capture session: a `lectern_signals::Monitor` behind a mutex,
//! fed by the session's writer thread (audio levels, analysed frames, and a tick each time the
//! writer wakes, at least twice per fsync interval, so an input that goes quiet is noticed) and
//! read by the main loop for `status`. Every raise and clear is logged with the recording id.
//!
//! Times in `status` are seconds since this capture session (the recording's current part)
//! started, the monitor's own clock; the quality report of the part is logged when it ends.
//!
//! A part that ends in a capture failure (a camera unplugged) keeps its watch while the recorder
//! retries: the main loop ticks it each turn, so the inputs that stopped raise `no_video` (and
//! `no_audio`, when the part had sound) within a turn or two, in `status`, on the server and in
//! the log, until a new part captures. Nothing is recorded then, so the alarms say what the room
//! gets; the stretch is not stored (the part's report was), the manifest's gap is that hole.
//!
//! Lock order: the monitor's mutex is taken alone, for the length of one reading; the writer
//! never holds it while it holds the part.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lectern_config::SignalsConfig;
use lectern_journal::{Journal, PartSummary, SignalStretch};
use lectern_signals::{Change, FrameStats, Monitor};
use serde_json::{json, Value};

/// The alarms of one capture session; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct SignalWatch {
    inner: Option<Arc<Mutex<Inner>>>,
}

struct Inner {
    monitor: Monitor,
    started: Instant,
    /// The wall clock at `started`, for the stored report.
    started_ms: i64,
    recording_id: String,
    /// The newest audio level (peak, RMS dBFS), for the preview's meter.
    last_level: Option<(f64, f64)>,
}

impl SignalWatch {
    /// A watch for `recording_id` whose clock starts at `started` (wall clock `started_ms`);
    /// inert when the alarms are turned off (`signals.enabled = false`).
    pub fn new(cfg: &SignalsConfig, recording_id: &str, started: Instant, started_ms: i64) -> SignalWatch {
        let inner = cfg.enabled.then(|| {
            Arc::new(Mutex::new(Inner { monitor: Monitor::new(cfg), started, started_ms, recording_id: recording_id.to_owned(), last_level: None }))
        });
        SignalWatch { inner }
    }

    fn with(&self, now: Instant, f: impl FnOnce(&mut Monitor, Duration) -> Vec<Change>) {
        let Some(inner) = &self.inner else { return };
        let mut g = inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = now.saturating_duration_since(g.started);
        let changes = f(&mut g.monitor, t);
        for c in changes {
            log_change(&g.recording_id, &c);
        }
    }

    pub fn level(&self, now: Instant, peak_db: f64, rms_db: f64) {
        if let Some(inner) = &self.inner {
            inner.lock().unwrap_or_else(|e| e.into_inner()).last_level = Some((peak_db, rms_db));
        }
        self.with(now, |m, t| m.level(t, peak_db, rms_db));
    }

    /// The newest audio level (peak, RMS dBFS), when the alarms are on and a level came.
    pub fn last_level(&self) -> Option<(f64, f64)> {
        self.inner.as_ref().and_then(|i| i.lock().unwrap_or_else(|e| e.into_inner()).last_level)
    }

    pub fn luma(&self, now: Instant, luma: &[u8]) {
        if let Some(stats) = FrameStats::from_luma(luma) {
            self.with(now, |m, t| m.frame(t, stats));
        }
    }

    /// Video frames reached the encoder since the last call.
    pub fn video(&self, now: Instant) {
        self.with(now, |m, t| m.video(t));
    }

    pub fn tick(&self, now: Instant) {
        self.with(now, |m, t| m.tick(t));
    }

    /// The names of the alarms raised now, in the monitor's order.
    pub fn active_names(&self) -> Vec<&'static str> {
        let Some(inner) = &self.inner else { return Vec::new() };
        let g = inner.lock().unwrap_or_else(|e| e.into_inner());
        g.monitor.active().into_iter().map(|(a, _)| a.name()).collect()
    }

    /// `{ "alarms": [{alarm, since_s, for_s}], "report": [{alarm, from_s, to_s}] }`.
    pub fn json(&self, now: Instant) -> Value {
        let Some(inner) = &self.inner else { return json!({ "alarms": [], "report": [] }) };
        let g = inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = now.saturating_duration_since(g.started);
        let alarms: Vec<Value> = g
            .monitor
            .active()
            .into_iter()
            .map(|(a, since)| json!({ "alarm": a.name(), "since_s": secs(since), "for_s": secs(t.saturating_sub(since)) }))
            .collect();
        let report: Vec<Value> = g
            .monitor
            .report()
            .iter()
            .map(|s| json!({ "alarm": s.alarm.name(), "from_s": secs(s.from), "to_s": s.to.map(secs) }))
            .collect();
        json!({ "alarms": alarms, "report": report })
    }

    /// The part's stretches on the wall clock, for the journal (and so the manifest).
    pub fn stretches(&self, part_seq: u32) -> Vec<SignalStretch> {
        let Some(inner) = &self.inner else { return Vec::new() };
        let g = inner.lock().unwrap_or_else(|e| e.into_inner());
        let ms = |d: Duration| g.started_ms + d.as_millis() as i64;
        g.monitor
            .report()
            .iter()
            .map(|s| SignalStretch { part_seq, alarm: s.alarm.name().to_owned(), from_ms: ms(s.from), to_ms: s.to.map(ms) })
            .collect()
    }

    /// Logs the part's quality report (its alarm stretches) once the part has ended.
    pub fn log_report(&self) {
        let Some(inner) = &self.inner else { return };
        let g = inner.lock().unwrap_or_else(|e| e.into_inner());
        let report = g.monitor.report();
        if report.is_empty() {
            log::info!(target: "lecternd", "recording {}: signal report: no alarms", g.recording_id);
            return;
        }
        let parts: Vec<String> = report
            .iter()
            .map(|s| match s.to {
                Some(to) => format!("{} {:.1}-{:.1} s", s.alarm, s.from.as_secs_f64(), to.as_secs_f64()),
                None => format!("{} from {:.1} s to the end", s.alarm, s.from.as_secs_f64()),
            })
            .collect();
        log::warn!(target: "lecternd", "recording {}: signal report: {}", g.recording_id, parts.join(", "));
    }
}

/// Stores a finished part's stretches in the journal (the manifest's `quality`); a failure is
/// logged and survived: the report is worth less than the recording.
pub fn persist(journal: &mut Journal, watch: &SignalWatch, part: &PartSummary) {
    let stretches = watch.stretches(part.part_seq);
    if let Err(e) = journal.record_signal_stretches(&part.recording_id, part.part_seq, &stretches) {
        log::error!(target: "lecternd", "recording {}: cannot store the signal report of part {}: {e}", part.recording_id, part.part_seq);
    }
}

/// The `signals` object of `status`: whether the alarms are on, and the running session's.
pub fn status_json(cfg: &SignalsConfig, watch: Option<&SignalWatch>, now: Instant) -> Value {
    let mut v = watch.map_or_else(|| json!({ "alarms": [], "report": [] }), |w| w.json(now));
    v["enabled"] = json!(cfg.enabled);
    v
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn log_change(recording_id: &str, c: &Change) {
    match *c {
        Change::Raised { alarm, since } => {
            log::warn!(target: "lecternd", "recording {recording_id}: alarm {alarm} raised (since {:.1} s)", since.as_secs_f64())
        }
        Change::Cleared { alarm, since, at } => log::info!(
            target: "lecternd",
            "recording {recording_id}: alarm {alarm} cleared (lasted {:.1} s, {:.1}-{:.1} s)",
            (at - since).as_secs_f64(),
            since.as_secs_f64(),
            at.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_silence(w: &SignalWatch, t0: Instant, from_ms: u64, to_ms: u64) {
        for ms in (from_ms..to_ms).step_by(100) {
            w.level(t0 + Duration::from_millis(ms), -70.0, -75.0);
        }
    }

    #[test]
    fn status_shows_the_raised_alarm_and_the_report() {
        let t0 = Instant::now();
        let cfg = SignalsConfig::default();
        let w = SignalWatch::new(&cfg, "r1", t0, 1_000_000);
        feed_silence(&w, t0, 0, 9_000);
        let quiet = status_json(&cfg, Some(&w), t0 + Duration::from_secs(9));
        assert_eq!(quiet, json!({ "enabled": true, "alarms": [], "report": [] }));
        feed_silence(&w, t0, 9_000, 12_000);
        assert_eq!(
            status_json(&cfg, Some(&w), t0 + Duration::from_millis(12_500)),
            json!({
                "enabled": true,
                "alarms": [{ "alarm": "silent_mic", "since_s": 0.0, "for_s": 12.5 }],
                "report": [{ "alarm": "silent_mic", "from_s": 0.0, "to_s": null }],
            })
        );
        // Sound for the clear hold clears it; the report keeps the stretch.
        for ms in (12_000..15_000).step_by(100) {
            w.level(t0 + Duration::from_millis(ms), -10.0, -20.0);
        }
        assert_eq!(
            w.json(t0 + Duration::from_secs(15)),
            json!({ "alarms": [], "report": [{ "alarm": "silent_mic", "from_s": 0.0, "to_s": 12.0 }] })
        );
        // On the wall clock for the journal.
        assert_eq!(w.stretches(3), [SignalStretch { part_seq: 3, alarm: "silent_mic".into(), from_ms: 1_000_000, to_ms: Some(1_012_000) }]);
    }

    #[test]
    fn a_gone_camera_is_raised_by_ticks_alone() {
        let t0 = Instant::now();
        let w = SignalWatch::new(&SignalsConfig::default(), "r1", t0, 0);
        w.video(t0);
        w.luma(t0, &[128; 64]);
        w.tick(t0 + Duration::from_millis(400));
        assert_eq!(w.json(t0 + Duration::from_millis(400))["alarms"], json!([]));
        w.tick(t0 + Duration::from_millis(600));
        assert_eq!(w.json(t0 + Duration::from_millis(600))["alarms"], json!([{ "alarm": "no_video", "since_s": 0.0, "for_s": 0.6 }]));
    }

    #[test]
    fn disabled_alarms_stay_empty() {
        let t0 = Instant::now();
        let cfg = SignalsConfig { enabled: false, ..SignalsConfig::default() };
        let w = SignalWatch::new(&cfg, "r1", t0, 0);
        feed_silence(&w, t0, 0, 30_000);
        assert_eq!(w.stretches(1), []);
        assert_eq!(status_json(&cfg, Some(&w), t0 + Duration::from_secs(30)), json!({ "enabled": false, "alarms": [], "report": [] }));
        assert_eq!(status_json(&SignalsConfig::default(), None, t0), json!({ "enabled": true, "alarms": [], "report": [] }));
    }
}
