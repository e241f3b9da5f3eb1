//! The GStreamer plugins the daemon may load: every element this crate may create, on any board,
//! and the plugin that provides it. This table is the one place that knows it. From it come the
//! daemon's plugin allow-list (`GST_PLUGIN_LOADING_WHITELIST`, set by [`crate::set_process_env`])
//! and, in hil-tests/tests/yocto.rs, the image's GStreamer `RDEPENDS` (plugin → Yocto package).
//!
//! Why an allow-list: GStreamer's registry describes every plugin installed on the machine, and
//! the daemon keeps it in its heap for its whole life. On a desktop-class install (260 plugins)
//! that is about 2 MiB of a 43 MiB daemon (docs/benchmarks.md, runs H and I); with the
//! allow-list the registry holds these plugins in full and every other one as a short
//! "not loaded" entry, and no other plugin can ever be loaded into the process. An operator who
//! needs another plugin sets the variable himself (the daemon leaves a value it finds alone;
//! an empty value allows every plugin): docs/systemd.md.
//!
//! The tests below check the table against the pipelines [`crate::capture`] describes (every
//! element of every variant is here) and against this machine's registry (each installed element
//! comes from the plugin named here).

/// Every element the capture crate may create (pipelines, probes, fallbacks, test sources) and
/// the plugin that provides it (`gst-inspect-1.0 ELEMENT` → "Plugin Details: Name").
pub const ELEMENTS: &[(&str, &str)] = &[
    // Sources: the camera, the mic, and the sim board's test sources.
    ("v4l2src", "video4linux2"),
    ("alsasrc", "alsa"),
    ("videotestsrc", "videotestsrc"),
    ("audiotestsrc", "audiotestsrc"),
    // A camera that offers 720p30 only as MJPEG: decodebin picks jpegdec, or the Pi's
    // v4l2jpegdec.
    ("capsfilter", "coreelements"),
    ("decodebin", "playback"),
    ("jpegdec", "jpeg"),
    ("v4l2jpegdec", "video4linux2"),
    // H.264 encoders in the probe's order (encoder.rs), and the parser after them.
    ("v4l2h264enc", "video4linux2"),
    ("vaapih264enc", "vaapi"),
    ("x264enc", "x264"),
    ("openh264enc", "openh264"),
    ("h264parse", "videoparsersbad"),
    // Audio: conversion, level metering, the encoders in the probe's order but avenc_aac (below,
    // NOT_ALLOWED), the AAC parser.
    ("audioconvert", "audioconvert"),
    ("audioresample", "audioresample"),
    ("level", "level"),
    ("voaacenc", "voaacenc"),
    ("opusenc", "opus"),
    ("aacparse", "audioparsers"),
    // Video conversion, the analysis and preview branches (tee, leaky queues, the preview's
    // valve and rate, scaler, JPEG), the mux and the appsinks.
    ("videoconvert", "videoconvertscale"),
    ("videoscale", "videoconvertscale"),
    ("videorate", "videorate"),
    ("tee", "coreelements"),
    ("queue", "coreelements"),
    ("valve", "coreelements"),
    ("jpegenc", "jpeg"),
    ("mpegtsmux", "mpegtsmux"),
    ("appsink", "app"),
];

/// Plugins the daemon needs that provide no element it names: `decodebin` typefinds the
/// camera's stream with them.
pub const ALSO_LOADED: &[&str] = &["typefindfunctions"];

/// Elements the encoder probe knows but the allow-list leaves out, with why. `avenc_aac` is a
/// fallback for a box without `voaacenc` (which the image and the .deb both install): its plugin,
/// gst-libav, describes about 690 features (FFmpeg's every codec), which would put 0.58 MB of
/// registry back into the daemon for an element it does not reach (docs/decisions.md D15, D26).
pub const NOT_ALLOWED: &[(&str, &str)] = &[("avenc_aac", "libav")];

/// The plugins of [`ELEMENTS`] and [`ALSO_LOADED`], each once, in the table's order.
pub fn plugins() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for p in ELEMENTS.iter().map(|(_, p)| *p).chain(ALSO_LOADED.iter().copied()) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The value of `GST_PLUGIN_LOADING_WHITELIST` that allows exactly [`plugins`]: one entry of
/// comma-separated plugin names (GStreamer matches a single name against the source package
/// too, a list only against plugin names).
pub fn allow_list() -> String {
    plugins().join(",")
}

/// The plugin [`ELEMENTS`] or [`NOT_ALLOWED`] says provides `element`.
pub fn plugin_of(element: &str) -> Option<&'static str> {
    ELEMENTS.iter().chain(NOT_ALLOWED).find(|(e, _)| *e == element).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{describe, needed_elements};
    use crate::encoder::{AudioEncoder, AUDIO_ENCODERS, VIDEO_ENCODERS};
    use crate::settings::{AudioSource, CaptureSettings, VideoSource};
    use gst::prelude::*;
    use gstreamer as gst;

    /// The element factory names of a `gst-launch` description: the first word of each stage
    /// that is neither caps (`video/x-raw,...`) nor a reference to a named element (`vtee.`).
    fn elements_of(description: &str) -> Vec<String> {
        description
            .split(" ! ")
            .flat_map(|stage| stage.split("  "))
            .filter_map(|stage| stage.split_whitespace().next())
            .filter(|w| !w.contains('/') && !w.ends_with('.'))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn elements_of_cases() {
        assert_eq!(elements_of("a name=x ! video/x-raw,width=1 ! b  vtee. ! c ! mux."), ["a", "b", "c"]);
    }

    /// Every pipeline variant (each source, each encoder, each branch) names only listed
    /// elements, and so does everything the crate looks up by name.
    #[test]
    fn every_element_the_pipelines_create_is_on_the_list() {
        let videos = [VideoSource::Test { pattern: "ball".into() }, VideoSource::V4l2 { device: "/dev/video0".into() }];
        let audios = [AudioSource::None, AudioSource::Test { freq_hz: 440.0 }, AudioSource::Alsa { device: "default".into() }];
        let mut named: Vec<String> = Vec::new();
        for video in &videos {
            for audio in &audios {
                for (venc, _) in VIDEO_ENCODERS {
                    for (aenc, parser) in AUDIO_ENCODERS {
                        for (analysis_fps, preview_width) in [(0, 0), (5, 320)] {
                            let s = CaptureSettings { video: video.clone(), audio: audio.clone(), analysis_fps, preview_width, ..CaptureSettings::default() };
                            let a = AudioEncoder { element: aenc, parser: *parser };
                            named.extend(elements_of(&describe(&s, venc, Some(&a))));
                            named.extend(needed_elements(&s).iter().map(|(e, _)| e.to_string()));
                        }
                    }
                }
            }
        }
        // What decodebin picks for an MJPEG camera (capture.rs, camera_formats).
        named.extend(["jpegdec", "v4l2jpegdec"].map(String::from));
        named.sort();
        named.dedup();
        let missing: Vec<&String> = named.iter().filter(|e| plugin_of(e).is_none()).collect();
        assert!(missing.is_empty(), "elements the capture crate creates but plugins.rs does not list: {missing:?}");
        // And the table lists nothing the crate does not create (a stale entry widens the list).
        let unused: Vec<&str> = ELEMENTS.iter().map(|(e, _)| *e).filter(|e| !named.iter().any(|n| n == e)).collect();
        assert!(unused.is_empty(), "plugins.rs lists elements no pipeline creates: {unused:?}");
    }

    /// Each listed element that is installed here comes from the plugin the table names, so the
    /// allow-list really lets it load.
    #[test]
    fn each_installed_element_comes_from_its_listed_plugin() {
        if gst::init().is_err() {
            eprintln!("SKIPPED each_installed_element_comes_from_its_listed_plugin: no GStreamer");
            return;
        }
        let mut checked = 0;
        for (element, plugin) in ELEMENTS.iter().chain(NOT_ALLOWED) {
            let Some(factory) = gst::ElementFactory::find(element) else {
                eprintln!("(not installed here: {element})");
                continue;
            };
            assert_eq!(factory.plugin_name().as_deref(), Some(*plugin), "{element}");
            checked += 1;
        }
        for plugin in ALSO_LOADED {
            assert!(gst::Registry::get().find_plugin(plugin).is_some(), "plugin {plugin} is not installed");
        }
        assert!(checked >= 20, "only {checked} of the listed elements are installed: is GStreamer complete here?");
    }

    #[test]
    fn allow_list_names_each_plugin_once() {
        let list = allow_list();
        assert!(!list.contains(':'), "one entry: GStreamer splits entries at ':'");
        let names: Vec<&str> = list.split(',').collect();
        for p in ["coreelements", "app", "x264", "voaacenc", "typefindfunctions", "videotestsrc"] {
            assert_eq!(names.iter().filter(|n| **n == p).count(), 1, "{p} in {list}");
        }
        assert!(!names.contains(&"libav"), "{list}");
    }
}
