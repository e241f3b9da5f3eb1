//! What the caller may ask of a capture: sources, size, bitrates, encoder choice. Owns the
//! validation that makes a `CaptureSettings` safe to splice into a `gst-launch` description
//! (the pipeline is built from text, so a free-form string must never smuggle in `!`).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::CaptureError;

/// Where video comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// Live `videotestsrc`; the default pattern `ball` moves, so a frozen output is detectable.
    Test { pattern: String },
    /// A V4L2 capture node such as `/dev/video0`.
    V4l2 { device: PathBuf },
}

/// Where audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioSource {
    /// Video only; the transport stream has no audio PID.
    None,
    /// Live `audiotestsrc` sine tone.
    Test { freq_hz: f64 },
    /// An ALSA PCM name such as `hw:1,0`, `default` or a name from an asoundrc.
    Alsa { device: String },
}

/// Which H.264 encoder to use.
#[derive(Debug, Clone, PartialEq)]
pub enum EncoderChoice {
    /// Probe the registry, best first (see [`crate::probe_encoder`]).
    Auto,
    /// Use exactly this element; if it is unusable that is an error, never a silent fallback.
    Named(String),
}

/// User-facing capture settings. Build with struct-update syntax from `Default`.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    pub video: VideoSource,
    pub audio: AudioSource,
    pub width: u32,
    pub height: u32,
    /// Frames per second (integer rates only; 30000/1001 cameras are asked for 30).
    pub framerate: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    pub encoder: EncoderChoice,
    /// x264enc `speed-preset` nick, e.g. `ultrafast`, `veryfast`.
    pub x264_preset: String,
    /// x264enc `tune` flags, e.g. `zerolatency` or `stillimage+fastdecode`.
    pub x264_tune: Option<String>,
    /// Maximum distance between keyframes; the journal cuts segments at keyframes, so this is
    /// also the segment length.
    pub keyframe_interval: Duration,
    /// How often the `level` element reports audio levels.
    pub level_interval: Duration,
    /// Transport-stream packets are coalesced into chunks of at least this many bytes before
    /// being sent (a chunk never spans a keyframe). 1316 = 7 × 188, the classic UDP payload.
    pub chunk_bytes: usize,
    /// Video frames a second sent down the analysis branch (a downscaled luma plane per frame as
    /// [`crate::MediaEvent::Luma`], for the signal alarms); 0: no analysis branch at all.
    pub analysis_fps: u32,
    /// Width of the confidence preview's JPEGs (height follows the picture); 0: no preview
    /// branch. The branch is closed (its valve drops everything) until [`crate::Capture::want_preview`].
    pub preview_width: u32,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings {
            video: VideoSource::Test {
                pattern: "ball".into(),
            },
            audio: AudioSource::Test { freq_hz: 440.0 },
            width: 1280,
            height: 720,
            framerate: 30,
            video_bitrate_kbps: 4000,
            audio_bitrate_kbps: 128,
            encoder: EncoderChoice::Auto,
            x264_preset: "veryfast".into(),
            // The daemon's default too (lectern-config, docs/decisions.md D13).
            x264_tune: Some("zerolatency".into()),
            keyframe_interval: Duration::from_secs(2),
            level_interval: Duration::from_millis(100),
            chunk_bytes: 7 * 188,
            analysis_fps: 0,
            preview_width: 0,
        }
    }
}

impl CaptureSettings {
    /// The camera as messages and the status name it: its V4L2 node, or `test` for the simulated one.
    pub fn camera_device(&self) -> String {
        match &self.video {
            VideoSource::Test { .. } => "test".to_owned(),
            VideoSource::V4l2 { device } => device.display().to_string(),
        }
    }

    /// The mic likewise: its ALSA PCM name, `test`, or `None` for a capture without audio.
    pub fn mic_device(&self) -> Option<String> {
        match &self.audio {
            AudioSource::None => None,
            AudioSource::Test { .. } => Some("test".to_owned()),
            AudioSource::Alsa { device } => Some(device.clone()),
        }
    }

    /// The ALSA PCM of the mic, when the mic is a real one.
    pub fn alsa_mic(&self) -> Option<&str> {
        match &self.audio {
            AudioSource::Alsa { device } => Some(device),
            _ => None,
        }
    }

    /// Keyframe interval expressed in frames, at least 1.
    pub fn keyframe_interval_frames(&self) -> u32 {
        let frames = (self.keyframe_interval.as_secs_f64() * f64::from(self.framerate)).round();
        (frames as u32).max(1)
    }

    /// Checks everything that would otherwise surface as an obscure GStreamer error later.
    pub fn validate(&self) -> Result<(), CaptureError> {
        let bad = |field: &'static str, reason: String| {
            Err(CaptureError::InvalidSettings { field, reason })
        };
        if self.width == 0
            || self.height == 0
            || !self.width.is_multiple_of(2)
            || !self.height.is_multiple_of(2)
        {
            return bad(
                "width/height",
                format!(
                    "must be non-zero and even for 4:2:0 H.264, got {}x{}",
                    self.width, self.height
                ),
            );
        }
        if self.framerate == 0 {
            return bad("framerate", "must be at least 1".into());
        }
        if self.video_bitrate_kbps == 0 || self.audio_bitrate_kbps == 0 {
            return bad(
                "bitrate",
                "video and audio bitrates must be non-zero".into(),
            );
        }
        if self.keyframe_interval.is_zero() {
            return bad("keyframe_interval", "must be non-zero".into());
        }
        if self.level_interval.is_zero() {
            return bad("level_interval", "must be non-zero".into());
        }
        if self.chunk_bytes == 0 {
            return bad("chunk_bytes", "must be non-zero".into());
        }
        if self.analysis_fps > 60 {
            return bad("analysis_fps", format!("must be 0 (off) to 60, got {}", self.analysis_fps));
        }
        if let VideoSource::Test { pattern } = &self.video {
            check_token("video.pattern", pattern)?;
        }
        if let AudioSource::Test { freq_hz } = self.audio {
            if !(freq_hz.is_finite() && freq_hz > 0.0 && freq_hz < 20_000.0) {
                return bad(
                    "audio.freq_hz",
                    format!("must be in (0, 20000), got {freq_hz}"),
                );
            }
        }
        if let EncoderChoice::Named(name) = &self.encoder {
            check_token("encoder", name)?;
        }
        check_token("x264_preset", &self.x264_preset)?;
        if let Some(tune) = &self.x264_tune {
            check_token("x264_tune", tune)?;
        }
        Ok(())
    }
}

/// Nicks, flags and element names are made of `[A-Za-z0-9_+-]`; anything else is refused rather
/// than escaped because no legitimate value needs it.
fn check_token(field: &'static str, value: &str) -> Result<(), CaptureError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(CaptureError::InvalidSettings {
            field,
            reason: format!("{value:?} is not a plain name (letters, digits, _ - +)"),
        })
    }
}

/// Quotes a free-form value (device path, ALSA PCM name) for a `gst-launch` description.
pub(crate) fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(edit: impl FnOnce(&mut CaptureSettings), expect_field: Option<&str>) {
        let mut s = CaptureSettings::default();
        edit(&mut s);
        match (s.validate(), expect_field) {
            (Ok(()), None) => {}
            (Err(CaptureError::InvalidSettings { field, .. }), Some(f)) => assert_eq!(field, f),
            (got, want) => panic!("validate gave {got:?}, wanted field {want:?}"),
        }
    }

    #[test]
    fn validation_cases() {
        check(|_| {}, None);
        check(|s| s.width = 321, Some("width/height"));
        check(|s| s.height = 0, Some("width/height"));
        check(|s| s.framerate = 0, Some("framerate"));
        check(
            |s| s.keyframe_interval = Duration::ZERO,
            Some("keyframe_interval"),
        );
        check(|s| s.x264_tune = Some("stillimage+fastdecode".into()), None);
        check(
            |s| s.x264_preset = "fast ! filesink location=/etc/x".into(),
            Some("x264_preset"),
        );
        check(
            |s| s.encoder = EncoderChoice::Named("x264enc name=y".into()),
            Some("encoder"),
        );
        check(
            |s| s.video = VideoSource::Test { pattern: "".into() },
            Some("video.pattern"),
        );
        check(
            |s| s.audio = AudioSource::Test { freq_hz: f64::NAN },
            Some("audio.freq_hz"),
        );
        check(
            |s| {
                s.video = VideoSource::V4l2 {
                    device: "/dev/video 0".into(),
                }
            },
            None,
        );
    }

    #[test]
    fn keyframe_interval_in_frames() {
        let s = CaptureSettings::default();
        assert_eq!(s.keyframe_interval_frames(), 60);
        let s = CaptureSettings {
            framerate: 25,
            keyframe_interval: Duration::from_millis(10),
            ..s
        };
        assert_eq!(s.keyframe_interval_frames(), 1);
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
