//! The `[signals]` section: when the signal monitor (`lectern-signals`) raises and clears its
//! alarms. Raw TOML here, validated into [`SignalsConfig`].
//!
//! The defaults are Extron SMP's where it has one (audio at or below −60 dBFS for 10 s; video
//! loss after 0.5 s) and conservative elsewhere: a picture is only "frozen" when its fingerprint
//! has not changed at all for 30 s, because a still HDMI slide is legitimately static.

use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, Validator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSignals {
    enabled: Option<bool>,
    silence_db: Option<f64>,
    silence_hold_s: Option<f64>,
    clip_db: Option<f64>,
    clip_hold_ms: Option<u64>,
    hysteresis_db: Option<f64>,
    black_luma: Option<f64>,
    black_hold_s: Option<f64>,
    frozen_hold_s: Option<f64>,
    video_loss_ms: Option<u64>,
    audio_loss_ms: Option<u64>,
    clear_hold_s: Option<f64>,
    analysis_fps: Option<u32>,
}

/// Validated thresholds of the signal monitor. Every hold time is how long a condition must last
/// without a break before its alarm is raised; `clear_hold` is how long it must be gone before
/// the alarm clears.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalsConfig {
    /// `false`: no alarms, and no video analysis branch in the pipeline.
    pub enabled: bool,
    /// Audio RMS at or below this (dBFS) is silence.
    pub silence_db: f64,
    pub silence_hold: Duration,
    /// Audio peak at or above this (dBFS) is clipping.
    pub clip_db: f64,
    pub clip_hold: Duration,
    /// A raised silence (clipping) alarm clears only once the level is this many dB above
    /// (below) its threshold, so a level sitting on the threshold cannot flap.
    pub hysteresis_db: f64,
    /// Mean luma (0 = black, 1 = white) at or below this, in a flat frame (luma standard
    /// deviation at most 0.03), is a black picture; it clears above `black_luma + 0.02`.
    pub black_luma: f64,
    pub black_hold: Duration,
    /// An unchanged frame fingerprint for this long is a frozen picture.
    pub frozen_hold: Duration,
    /// No video frame into the encoder for this long (after the first) is "no video signal".
    pub video_loss: Duration,
    /// No audio level reading for this long (after the first) is "no audio signal".
    pub audio_loss: Duration,
    pub clear_hold: Duration,
    /// Frames analysed per second (luma statistics and fingerprint); 0 turns the picture alarms
    /// off and takes the analysis branch out of the pipeline.
    pub analysis_fps: u32,
}

impl Default for SignalsConfig {
    fn default() -> Self {
        SignalsConfig {
            enabled: true,
            silence_db: -60.0,
            silence_hold: Duration::from_secs(10),
            clip_db: -1.0,
            clip_hold: Duration::from_millis(500),
            hysteresis_db: 3.0,
            black_luma: 0.1,
            black_hold: Duration::from_secs(2),
            frozen_hold: Duration::from_secs(30),
            video_loss: Duration::from_millis(500),
            audio_loss: Duration::from_millis(2000),
            clear_hold: Duration::from_secs(2),
            analysis_fps: 5,
        }
    }
}

impl Validator<'_> {
    fn seconds(&self, key: &str, v: Option<f64>, default: Duration, lo: f64, hi: f64) -> Result<Duration, ConfigError> {
        let s = v.unwrap_or(default.as_secs_f64());
        // `!(lo..=hi).contains` also rejects NaN.
        if !(lo..=hi).contains(&s) {
            return Err(self.invalid(key, &format!("a number of seconds from {lo} to {hi}"), s));
        }
        Ok(Duration::from_secs_f64(s))
    }

    fn decibels(&self, key: &str, v: Option<f64>, default: f64, lo: f64, hi: f64) -> Result<f64, ConfigError> {
        let db = v.unwrap_or(default);
        if !(lo..=hi).contains(&db) {
            return Err(self.invalid(key, &format!("a level in dBFS from {lo} to {hi}"), db));
        }
        Ok(db)
    }

    pub(crate) fn signals(&self, r: RawSignals) -> Result<SignalsConfig, ConfigError> {
        let d = SignalsConfig::default();
        let silence_db = self.decibels("signals.silence_db", r.silence_db, d.silence_db, -120.0, -10.0)?;
        let clip_db = self.decibels("signals.clip_db", r.clip_db, d.clip_db, -20.0, 0.0)?;
        let hysteresis_db = r.hysteresis_db.unwrap_or(d.hysteresis_db);
        if !(0.0..=20.0).contains(&hysteresis_db) {
            return Err(self.invalid("signals.hysteresis_db", "a number of dB from 0 to 20", hysteresis_db));
        }
        if silence_db + hysteresis_db >= clip_db - hysteresis_db {
            return Err(self.invalid(
                "signals.silence_db",
                &format!("a silence threshold well below signals.clip_db ({clip_db}), by more than twice signals.hysteresis_db"),
                silence_db,
            ));
        }
        let black_luma = r.black_luma.unwrap_or(d.black_luma);
        if !(0.0..=0.5).contains(&black_luma) {
            return Err(self.invalid("signals.black_luma", "a mean luma from 0 (black) to 0.5 (mid grey)", black_luma));
        }
        let analysis_fps = self.range("signals.analysis_fps", r.analysis_fps, d.analysis_fps, 0, 60)?;
        let video_loss = Duration::from_millis(self.range("signals.video_loss_ms", r.video_loss_ms, 500, 100, 60_000)?);
        Ok(SignalsConfig {
            enabled: r.enabled.unwrap_or(d.enabled),
            silence_db,
            silence_hold: self.seconds("signals.silence_hold_s", r.silence_hold_s, d.silence_hold, 0.5, 3600.0)?,
            clip_db,
            clip_hold: Duration::from_millis(self.range("signals.clip_hold_ms", r.clip_hold_ms, 500, 0, 60_000)?),
            hysteresis_db,
            black_luma,
            black_hold: self.seconds("signals.black_hold_s", r.black_hold_s, d.black_hold, 0.1, 3600.0)?,
            frozen_hold: self.seconds("signals.frozen_hold_s", r.frozen_hold_s, d.frozen_hold, 1.0, 3600.0)?,
            video_loss,
            audio_loss: Duration::from_millis(self.range("signals.audio_loss_ms", r.audio_loss_ms, 2000, 300, 60_000)?),
            clear_hold: self.seconds("signals.clear_hold_s", r.clear_hold_s, d.clear_hold, 0.0, 600.0)?,
            analysis_fps,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    use super::*;

    fn signals(text: &str) -> Result<SignalsConfig, String> {
        Config::parse(text, Some(Path::new("/etc/lectern/lectern.toml"))).map(|c| c.signals).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_extrons() {
        let s = signals("").unwrap();
        assert_eq!(s, SignalsConfig::default());
        assert_eq!((s.silence_db, s.silence_hold), (-60.0, Duration::from_secs(10)));
        assert_eq!(s.video_loss, Duration::from_millis(500));
        assert!(s.enabled);
    }

    #[test]
    fn values_are_read() {
        let s = signals("[signals]\nsilence_db = -50\nsilence_hold_s = 2.5\nanalysis_fps = 0\nenabled = false").unwrap();
        assert_eq!((s.silence_db, s.silence_hold, s.analysis_fps, s.enabled), (-50.0, Duration::from_millis(2500), 0, false));
    }

    #[test]
    fn bad_values_name_key_and_expectation() {
        for (text, want) in [
            ("[signals]\nsilence_db = 3", "key `signals.silence_db`: expected a level in dBFS from -120 to -10, found 3"),
            ("[signals]\nsilence_db = -12\nclip_db = -10", "key `signals.silence_db`: expected a silence threshold well below signals.clip_db (-10)"),
            ("[signals]\nclip_db = 1", "key `signals.clip_db`"),
            ("[signals]\nsilence_hold_s = 0", "key `signals.silence_hold_s`: expected a number of seconds from 0.5 to 3600, found 0"),
            ("[signals]\nsilence_hold_s = nan", "key `signals.silence_hold_s`"),
            ("[signals]\nhysteresis_db = -1", "key `signals.hysteresis_db`"),
            ("[signals]\nblack_luma = 0.9", "key `signals.black_luma`: expected a mean luma from 0 (black) to 0.5"),
            ("[signals]\nvideo_loss_ms = 50", "key `signals.video_loss_ms`: expected a number from 100 to 60000, found 50"),
            ("[signals]\nanalysis_fps = 61", "key `signals.analysis_fps`"),
            ("[signals]\naudio_loss_ms = 10", "key `signals.audio_loss_ms`"),
            ("[signals]\nsilence = -60", "unknown field `silence`"),
        ] {
            let e = signals(text).unwrap_err();
            assert!(e.starts_with("config /etc/lectern/lectern.toml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_slow_analysis_rate_does_not_bind_the_video_loss_time() {
        // `no_video` follows the frames into the encoder, not the analysed ones.
        let s = signals("[signals]\nanalysis_fps = 1\nvideo_loss_ms = 500").unwrap();
        assert_eq!((s.analysis_fps, s.video_loss), (1, Duration::from_millis(500)));
    }
}
