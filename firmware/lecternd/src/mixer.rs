//! The mic's capture mixer before each recording (issue 11): `lectern_capture::mixer` has the
//! rule and the alsa-lib mixer; this room decides when (just before a capture opens the mic,
//! after the device probe let go of it), logs what was fixed, and keeps the last report and the
//! card list for `status.devices`.

use lectern_capture::mixer::{card_of, cards, check_and_fix, AlsaMixer, MixerPolicy, MixerReport};
use lectern_capture::CaptureSettings;
use lectern_config::CaptureConfig;
use serde_json::{json, Value};

#[derive(Debug, Default)]
pub(crate) struct MixerState {
    /// The sound cards alsa-lib saw at start (`hw:N name`).
    pub cards: Vec<String>,
    /// The last check: before the last recording.
    pub last: Option<Value>,
}

impl MixerState {
    pub fn new() -> MixerState {
        MixerState { cards: cards(), last: None }
    }

    /// Checks and fixes the capture mixer of the configured ALSA mic's card, if there is one.
    pub fn before_recording(&mut self, cfg: &CaptureConfig, settings: &CaptureSettings, recording_id: &str) {
        if !cfg.mixer_fix {
            return;
        }
        let Some(pcm) = settings.alsa_mic() else { return };
        let Some(card) = card_of(pcm) else {
            log::debug!(target: "lecternd", "recording {recording_id}: mic {pcm:?} names no one card; its mixer is not checked");
            return;
        };
        let policy = MixerPolicy { element: cfg.mixer_element.clone(), gain_db: cfg.mic_gain_db, ..MixerPolicy::default() };
        let report = match AlsaMixer::open(&card) {
            Ok(mut m) => check_and_fix(&card, &mut m, &policy),
            Err(e) => MixerReport { card: card.clone(), element: None, fixed: Vec::new(), error: Some(e) },
        };
        for fix in &report.fixed {
            log::warn!(target: "lecternd", "recording {recording_id}: mixer {card}: {fix}");
        }
        if let Some(e) = &report.error {
            log::error!(target: "lecternd", "recording {recording_id}: mixer {card}: {e}");
        }
        self.last = Some(report_json(&report, recording_id));
    }
}

/// `status.devices.mixer`.
pub(crate) fn report_json(r: &MixerReport, recording_id: &str) -> Value {
    json!({
        "card": r.card,
        "recording_id": recording_id,
        "element": r.element.as_ref().map(|e| e.name.clone()),
        "switch_was_on": r.element.as_ref().and_then(|e| e.switch),
        "volume_db_was": r.element.as_ref().and_then(|e| e.volume_db()),
        "fixed": r.fixed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "error": r.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lectern_capture::mixer::{Element, Fix};

    #[test]
    fn the_report_says_what_was_found_and_fixed() {
        let r = MixerReport {
            card: "hw:1".into(),
            element: Some(Element { name: "Capture".into(), index: 0, switch: Some(false), volumes_db: vec![-6.0], range_db: Some((-12.0, 30.0)) }),
            fixed: vec![Fix::Unmute { element: "Capture".into() }],
            error: None,
        };
        assert_eq!(
            report_json(&r, "lec-1"),
            json!({"card": "hw:1", "recording_id": "lec-1", "element": "Capture", "switch_was_on": false, "volume_db_was": -6.0,
                   "fixed": ["Capture: capture switch was off, turned on"], "error": null})
        );
    }
}
