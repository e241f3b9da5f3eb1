//! Encoder selection: which H.264 and audio encoders this machine can actually use, and how each
//! one is configured. The probe is ordered best-first and records why every better candidate
//! was skipped, because "why is the Pi 4 encoding in software?" must be answerable from the log.
//!
//! `encoder = "auto"` follows the board when the caller knows it: an [`EncoderHint`] narrows
//! and orders the candidates ([`auto_candidates`]), so a Pi 4 / CM4 tries its `v4l2h264enc`
//! block first and never loads VA-API, and a Pi 5 (no H.264 block) goes straight to software.
//! This crate does not depend on `lectern-board`: `lecternd` maps the detected board to a hint
//! (`firmware/lecternd/src/board_encoder.rs`).

use gst::prelude::*;
use gstreamer as gst;
use log::{info, warn};

use crate::error::CaptureError;
use crate::settings::{CaptureSettings, EncoderChoice};

/// The H.264 encoders we know how to configure, best first, with why each is where it is.
pub(crate) const VIDEO_ENCODERS: &[(&str, &str)] = &[
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
pub(crate) const AUDIO_ENCODERS: &[(&str, Option<&str>)] = &[
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

/// What the board says about H.264 encoding hardware, for `encoder = "auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderHint {
    /// Nothing known (an x86_64 machine, a board the detection table does not name): probe
    /// every encoder we know, best first.
    Unknown,
    /// A Raspberry Pi with the VideoCore H.264 encoder behind `bcm2835-codec` (Pi 4, Pi 400,
    /// CM4): `v4l2h264enc` first, then software. VA-API never exists on a Pi, so it is not tried.
    PiH264Block,
    /// A Raspberry Pi 5 / Pi 500 / CM5: the SoC has no H.264 encoder at all, so software only.
    PiNoH264Block,
}

impl EncoderHint {
    /// Why this hint orders the candidates as it does, for the probe's reason and the log.
    fn describe(self) -> &'static str {
        match self {
            EncoderHint::Unknown => "board unknown: every encoder probed",
            EncoderHint::PiH264Block => "board Raspberry Pi 4 family: H.264 block first, no VA-API",
            EncoderHint::PiNoH264Block => {
                "board Raspberry Pi 5 family: no H.264 block, software only"
            }
        }
    }
}

/// The encoders `encoder = "auto"` tries on a board, best first.
pub fn auto_candidates(hint: EncoderHint) -> Vec<&'static str> {
    let skip: &[&str] = match hint {
        EncoderHint::Unknown => &[],
        EncoderHint::PiH264Block => &["vaapih264enc"],
        EncoderHint::PiNoH264Block => &["v4l2h264enc", "vaapih264enc"],
    };
    VIDEO_ENCODERS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !skip.contains(n))
        .collect()
}

/// Picks the H.264 encoder: the forced one, or the best usable one, with no board knowledge.
pub fn probe_encoder(choice: &EncoderChoice) -> Result<EncoderInfo, CaptureError> {
    probe_encoder_for(choice, EncoderHint::Unknown)
}

/// Picks the H.264 encoder: the forced one (the hint is ignored: a named encoder is used or is
/// an error, never a silent fallback), or the best usable one of [`auto_candidates`].
pub fn probe_encoder_for(
    choice: &EncoderChoice,
    hint: EncoderHint,
) -> Result<EncoderInfo, CaptureError> {
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
            let info = choose_auto(hint, usable)?;
            info!(target: "capture", "video encoder {}: {}", info.element, info.reason);
            Ok(info)
        }
    }
}

/// The `auto` decision without GStreamer: the first candidate `usable` accepts. Pure apart from
/// the log lines, so the board → encoder table is tested with a fake registry.
fn choose_auto(
    hint: EncoderHint,
    mut usable: impl FnMut(&str) -> Result<(), String>,
) -> Result<EncoderInfo, CaptureError> {
    let mut skipped = Vec::new();
    for name in auto_candidates(hint) {
        match usable(name) {
            Ok(()) => {
                let why = VIDEO_ENCODERS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("", |(_, why)| *why);
                let mut reason = format!("{why}; {}", hint.describe());
                if !skipped.is_empty() {
                    reason.push_str(&format!("; skipped {}", skipped.join("; ")));
                }
                if hint == EncoderHint::PiH264Block && name != "v4l2h264enc" {
                    // The box works, but at several times the CPU: say so loudly, with the cause.
                    warn!(target: "capture", "this board has an H.264 block but v4l2h264enc is unusable ({}); encoding with {name} in software (is /dev/video11 present and readable by the daemon's user?)", skipped.join("; "));
                }
                return Ok(EncoderInfo {
                    element: name.to_owned(),
                    reason,
                });
            }
            Err(e) => {
                info!(target: "capture", "video encoder candidate {name}: {e}");
                skipped.push(format!("{name}: {e}"));
            }
        }
    }
    Err(CaptureError::NoVideoEncoder {
        tried: format!("{} ({})", skipped.join("; "), hint.describe()),
    })
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

    /// A fake registry: every name in `present` is usable, everything else is missing.
    fn fake(present: &'static [&'static str]) -> impl FnMut(&str) -> Result<(), String> {
        move |name| {
            if present.contains(&name) {
                Ok(())
            } else {
                Err("not in registry".into())
            }
        }
    }

    /// `(hint, encoders present, expected element or None for "no encoder")`.
    fn check_auto(hint: EncoderHint, present: &'static [&'static str], expect: Option<&str>) {
        let got = choose_auto(hint, fake(present));
        match (got, expect) {
            (Ok(info), Some(e)) => {
                assert_eq!(info.element, e, "{hint:?} with {present:?}: {info:?}")
            }
            (Err(err), None) => {
                let msg = err.to_string();
                assert!(
                    msg.contains("board"),
                    "{hint:?}: the error should say what the board allowed: {msg}"
                );
            }
            (got, expect) => panic!("{hint:?} with {present:?}: got {got:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn auto_follows_the_board() {
        use EncoderHint::*;
        const ALL: &[&str] = &["v4l2h264enc", "vaapih264enc", "x264enc", "openh264enc"];
        let cases: &[(EncoderHint, &'static [&'static str], Option<&str>)] = &[
            (Unknown, ALL, Some("v4l2h264enc")),
            (Unknown, &["vaapih264enc", "x264enc"], Some("vaapih264enc")),
            (PiH264Block, ALL, Some("v4l2h264enc")),
            // A Pi 4 whose codec device is missing falls back to software, never to VA-API.
            (PiH264Block, &["vaapih264enc", "x264enc"], Some("x264enc")),
            (PiH264Block, &["openh264enc"], Some("openh264enc")),
            // A Pi 5 never uses a v4l2h264enc even if one is registered (a USB encoder stick,
            // a stale registry): its SoC has no H.264 block.
            (PiNoH264Block, ALL, Some("x264enc")),
            (
                PiNoH264Block,
                &["v4l2h264enc", "openh264enc"],
                Some("openh264enc"),
            ),
            (PiNoH264Block, &["v4l2h264enc", "vaapih264enc"], None),
            (Unknown, &[], None),
        ];
        for &(hint, present, expect) in cases {
            check_auto(hint, present, expect);
        }
    }

    #[test]
    fn auto_reason_names_the_board_and_what_was_skipped() {
        let info = choose_auto(EncoderHint::PiH264Block, fake(&["x264enc"])).unwrap();
        assert!(info.reason.contains("Raspberry Pi 4"), "{}", info.reason);
        assert!(
            info.reason.contains("skipped v4l2h264enc: not in registry"),
            "{}",
            info.reason
        );
        let info = choose_auto(EncoderHint::PiNoH264Block, fake(&["x264enc"])).unwrap();
        assert!(info.reason.contains("no H.264 block"), "{}", info.reason);
        assert!(!info.reason.contains("skipped"), "{}", info.reason);
    }

    #[test]
    fn candidates_are_known_encoders_in_probe_order() {
        for hint in [
            EncoderHint::Unknown,
            EncoderHint::PiH264Block,
            EncoderHint::PiNoH264Block,
        ] {
            let c = auto_candidates(hint);
            let order: Vec<usize> = c
                .iter()
                .map(|n| VIDEO_ENCODERS.iter().position(|(k, _)| k == n).unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{hint:?}: {c:?}");
            assert!(
                c.contains(&"x264enc"),
                "{hint:?} must keep the software encoder: {c:?}"
            );
        }
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
