//! Encoder selection: which H.264 and audio encoders this machine can actually use, and how each
//! one is configured. The probe is ordered best-first and records why every better candidate
//! was skipped, because "why is the Pi 4 encoding in software?" must be answerable from the log.

use gst::prelude::*;
use gstreamer as gst;
use log::{info, warn};

use crate::error::CaptureError;
use crate::settings::{CaptureSettings, EncoderChoice};

/// The H.264 encoders we know how to configure, best first, with why each is where it is.
const VIDEO_ENCODERS: &[(&str, &str)] = &[
    ("v4l2h264enc", "hardware H.264 block (Raspberry Pi 4)"),
    ("vaapih264enc", "VA-API hardware encoder"),
    (
        "x264enc",
        "software encoder (Raspberry Pi 5 has no H.264 block)",
    ),
    ("openh264enc", "software fallback"),
];

/// AAC first because every player handles AAC in MPEG-TS; Opus-in-TS is a late addition to
/// the spec (mpegtsmux takes `audio/x-opus` with channel-mapping-family 0/1) and some players
/// still cannot play it, so it is the last resort. Of the two AAC-LC encoders `voaacenc`
/// (gst-plugins-bad, libvo-aacenc) comes first: `avenc_aac` lives in gst-libav, and loading it
/// maps all of FFmpeg's libraries and their dependencies (about 160 shared objects, ≈ 24 MB of
/// PSS for a recording daemon that uses one AAC encoder from them; docs/decisions.md D15).
const AUDIO_ENCODERS: &[(&str, Option<&str>)] = &[
    ("voaacenc", Some("aacparse")),
    ("avenc_aac", Some("aacparse")),
    ("opusenc", None),
];

/// The outcome of the encoder probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderInfo {
    /// Element factory name, e.g. `x264enc`.
    pub element: String,
    /// Human-readable reason, including why better candidates were skipped.
    pub reason: String,
}

/// The audio encoder and the parser that must follow it (Opus needs none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioEncoder {
    pub element: &'static str,
    pub parser: Option<&'static str>,
}

/// Whether `name` can be used here; `Err` says why not. Hardware encoders open their device on
/// NULL→READY, so we go that far: a registered `v4l2h264enc` whose /dev/video11 is gone should
/// be a probe miss, not a recording that fails at PLAYING.
fn usable(name: &str) -> Result<(), String> {
    let Some(factory) = gst::ElementFactory::find(name) else {
        return Err("not in registry".into());
    };
    let element = factory
        .create()
        .build()
        .map_err(|e| format!("cannot be instantiated: {e}"))?;
    let result = match element.set_state(gst::State::Ready) {
        Ok(_) => Ok(()),
        Err(_) => Err("registered but failed to open (NULL→READY)".into()),
    };
    // Returning to NULL cannot meaningfully fail for an element with no pads linked; ignoring
    // the result keeps a broken driver from masking the more useful READY error above.
    let _ = element.set_state(gst::State::Null);
    result
}

/// Picks the H.264 encoder: the forced one, or the best usable one.
pub fn probe_encoder(choice: &EncoderChoice) -> Result<EncoderInfo, CaptureError> {
    match choice {
        EncoderChoice::Named(name) => {
            let Some((_, why)) = VIDEO_ENCODERS.iter().find(|(n, _)| n == name) else {
                let known: Vec<&str> = VIDEO_ENCODERS.iter().map(|(n, _)| *n).collect();
                return Err(CaptureError::EncoderUnavailable {
                    name: name.clone(),
                    reason: format!("not a supported encoder (supported: {})", known.join(", ")),
                });
            };
            usable(name).map_err(|reason| CaptureError::EncoderUnavailable {
                name: name.clone(),
                reason,
            })?;
            let info = EncoderInfo {
                element: name.clone(),
                reason: format!("forced by settings; {why}"),
            };
            info!(target: "capture", "video encoder {}: {}", info.element, info.reason);
            Ok(info)
        }
        EncoderChoice::Auto => {
            let mut skipped = Vec::new();
            for (name, why) in VIDEO_ENCODERS {
                match usable(name) {
                    Ok(()) => {
                        let mut reason = why.to_string();
                        if !skipped.is_empty() {
                            reason.push_str(&format!("; skipped {}", skipped.join("; ")));
                        }
                        let info = EncoderInfo {
                            element: name.to_string(),
                            reason,
                        };
                        info!(target: "capture", "video encoder {}: {}", info.element, info.reason);
                        return Ok(info);
                    }
                    Err(e) => {
                        info!(target: "capture", "video encoder candidate {name}: {e}");
                        skipped.push(format!("{name}: {e}"));
                    }
                }
            }
            Err(CaptureError::NoVideoEncoder {
                tried: skipped.join("; "),
            })
        }
    }
}

/// Picks the audio encoder, AAC first.
pub(crate) fn probe_audio_encoder() -> Result<AudioEncoder, CaptureError> {
    let mut skipped = Vec::new();
    for (name, parser) in AUDIO_ENCODERS {
        match usable(name) {
            Ok(()) => {
                if *name == "opusenc" {
                    warn!(target: "capture", "no AAC encoder ({}); falling back to Opus in MPEG-TS, which some players cannot play", skipped.join("; "));
                } else {
                    info!(target: "capture", "audio encoder {name}");
                }
                return Ok(AudioEncoder {
                    element: name,
                    parser: *parser,
                });
            }
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    Err(CaptureError::NoAudioEncoder {
        tried: skipped.join("; "),
    })
}

/// The `gst-launch` fragment for the video encoder (and, for v4l2h264enc, its level caps),
/// named `venc` so the frame-counting probe can find it.
pub(crate) fn video_encoder_fragment(element: &str, s: &CaptureSettings) -> String {
    let gop = s.keyframe_interval_frames();
    let kbps = s.video_bitrate_kbps;
    match element {
        // The Pi's bcm2835 codec takes bitrate and GOP only as V4L2 controls, and refuses to
        // negotiate unless downstream caps pin an H.264 level. repeat_sequence_header puts
        // SPS/PPS before every IDR so a segment decodes on its own even before h264parse.
        "v4l2h264enc" => format!(
            "v4l2h264enc name=venc extra-controls=\"controls,video_bitrate={},h264_i_frame_period={gop},repeat_sequence_header=1\" ! video/x-h264,level=(string){}",
            u64::from(kbps) * 1000,
            h264_level(s)
        ),
        "vaapih264enc" => format!("vaapih264enc name=venc rate-control=cbr bitrate={kbps} keyframe-period={gop}"),
        "x264enc" => {
            let mut f = format!("x264enc name=venc bitrate={kbps} speed-preset={} key-int-max={gop}", s.x264_preset);
            if let Some(tune) = &s.x264_tune {
                f.push_str(&format!(" tune={tune}"));
            }
            f
        }
        "openh264enc" => format!("openh264enc name=venc rate-control=bitrate bitrate={} gop-size={gop}", u64::from(kbps) * 1000),
        // probe_encoder only ever returns names from VIDEO_ENCODERS.
        other => format!("{other} name=venc"),
    }
}

/// Level 4 covers 1080p30; anything with a higher macroblock rate needs 4.2 (the Pi 4 maximum).
fn h264_level(s: &CaptureSettings) -> &'static str {
    let mb_per_s =
        u64::from(s.width.div_ceil(16)) * u64::from(s.height.div_ceil(16)) * u64::from(s.framerate);
    if mb_per_s <= 245_760 {
        "4"
    } else {
        "4.2"
    }
}

/// The `gst-launch` fragment for the audio encoder and its parser.
pub(crate) fn audio_encoder_fragment(enc: &AudioEncoder, s: &CaptureSettings) -> String {
    let bps = u64::from(s.audio_bitrate_kbps) * 1000;
    let mut f = format!("{} name=aenc bitrate={bps}", enc.element);
    if let Some(parser) = enc.parser {
        f.push_str(&format!(" ! {parser}"));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(element: &str, edit: impl FnOnce(&mut CaptureSettings), expect: &str) {
        let mut s = CaptureSettings::default();
        edit(&mut s);
        assert_eq!(video_encoder_fragment(element, &s), expect);
    }

    #[test]
    fn video_fragments() {
        check(
            "x264enc",
            |_| {},
            "x264enc name=venc bitrate=4000 speed-preset=veryfast key-int-max=60 tune=zerolatency",
        );
        check(
            "x264enc",
            |s| {
                s.x264_tune = None;
                s.framerate = 25;
            },
            "x264enc name=venc bitrate=4000 speed-preset=veryfast key-int-max=50",
        );
        check(
            "v4l2h264enc",
            |s| (s.width, s.height) = (1920, 1080),
            "v4l2h264enc name=venc extra-controls=\"controls,video_bitrate=4000000,h264_i_frame_period=60,repeat_sequence_header=1\" ! video/x-h264,level=(string)4",
        );
        check(
            "v4l2h264enc",
            |s| (s.width, s.height, s.framerate) = (1920, 1080, 60),
            "v4l2h264enc name=venc extra-controls=\"controls,video_bitrate=4000000,h264_i_frame_period=120,repeat_sequence_header=1\" ! video/x-h264,level=(string)4.2",
        );
        check(
            "openh264enc",
            |_| {},
            "openh264enc name=venc rate-control=bitrate bitrate=4000000 gop-size=60",
        );
        check(
            "vaapih264enc",
            |_| {},
            "vaapih264enc name=venc rate-control=cbr bitrate=4000 keyframe-period=60",
        );
    }

    #[test]
    fn audio_fragments() {
        let s = CaptureSettings::default();
        let aac = AudioEncoder {
            element: "avenc_aac",
            parser: Some("aacparse"),
        };
        assert_eq!(
            audio_encoder_fragment(&aac, &s),
            "avenc_aac name=aenc bitrate=128000 ! aacparse"
        );
        let opus = AudioEncoder {
            element: "opusenc",
            parser: None,
        };
        assert_eq!(
            audio_encoder_fragment(&opus, &s),
            "opusenc name=aenc bitrate=128000"
        );
    }
}
