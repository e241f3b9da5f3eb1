//! The idle-time device probe: can the configured camera and microphone be opened right now?
//!
//! A missing camera or a mic on the wrong USB port used to be noticed only when a lecture
//! started recording. The daemon calls [`probe_inputs`] while it is idle so the AV team sees the
//! problem (status, LED, log) before the lecture. The check is the cheapest one GStreamer offers
//! that actually opens the device: the source element alone, taken NULL → READY. `v4l2src` opens
//! the node and queries its capabilities on that transition (a node that exists but is not a
//! capture device fails there too); `alsasrc` opens the PCM (`snd_pcm_open`). No buffer is
//! produced and the element goes back to NULL at once, which closes the device again.
//!
//! The caller must make sure no recording holds or is about to open the same devices: an ALSA
//! `hw:` PCM is exclusive, so a probe racing a starting recording could make the recording fail.
//! `lecternd` orders the two with a gate (see its `prober.rs`). Test sources are always present
//! and are not opened at all.

use gst::prelude::*;
use gstreamer as gst;

use crate::error::CaptureError;
use crate::settings::{AudioSource, CaptureSettings, VideoSource};

/// Which configured input a check is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Camera,
    Mic,
}

impl Input {
    /// The word used in messages and the status JSON.
    pub fn name(self) -> &'static str {
        match self {
            Input::Camera => "camera",
            Input::Mic => "mic",
        }
    }
}

/// The outcome of one input's check.
#[derive(Debug)]
pub struct InputCheck {
    pub input: Input,
    /// The device as configured: a V4L2 node path, an ALSA PCM name, or `test` for a simulated one.
    pub device: String,
    /// `Err` is [`CaptureError::DeviceUnavailable`] (or `MissingElement`) naming the device.
    pub result: Result<(), CaptureError>,
}

/// Both inputs' checks; `mic` is `None` when the capture has no audio.
#[derive(Debug)]
pub struct DeviceReport {
    pub camera: InputCheck,
    pub mic: Option<InputCheck>,
}

/// Checks that the camera and the microphone of `settings` can be opened now. Blocks for as
/// long as the drivers take to open and close the devices (milliseconds for V4L2 and ALSA).
pub fn probe_inputs(settings: &CaptureSettings) -> DeviceReport {
    let shown = settings.camera_device();
    let result = match &settings.video {
        VideoSource::Test { .. } => Ok(()),
        // A node that is not there at all gets the plainest message: "no such device node".
        VideoSource::V4l2 { device } => match std::fs::metadata(device) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unavailable(Input::Camera, &shown, "no such device node".into())),
            Err(e) => Err(unavailable(Input::Camera, &shown, format!("cannot look at the device node: {e}"))),
            Ok(_) => open_source(Input::Camera, "v4l2src", &shown),
        },
    };
    let camera = InputCheck { input: Input::Camera, device: shown, result };
    let mic = settings.mic_device().map(|device| {
        let result = match &settings.audio {
            AudioSource::Alsa { .. } => open_source(Input::Mic, "alsasrc", &device),
            AudioSource::Test { .. } | AudioSource::None => Ok(()),
        };
        InputCheck { input: Input::Mic, device, result }
    });
    DeviceReport { camera, mic }
}

fn unavailable(input: Input, device: &str, message: String) -> CaptureError {
    CaptureError::DeviceUnavailable { input: input.name(), device: device.to_owned(), message }
}

/// Creates `factory` with its `device` property set (both `v4l2src` and `alsasrc` call it that),
/// takes it NULL → READY inside a pipeline (for the bus that carries the element's error
/// message) and back to NULL.
fn open_source(input: Input, factory: &str, device: &str) -> Result<(), CaptureError> {
    crate::init()?;
    let purpose = match input {
        Input::Camera => "the V4L2 camera",
        Input::Mic => "the ALSA microphone",
    };
    let Some(found) = gst::ElementFactory::find(factory) else {
        return Err(CaptureError::MissingElement { element: factory.into(), purpose });
    };
    let element = found
        .create()
        .name("probe")
        .property("device", device)
        .build()
        .map_err(|e| unavailable(input, device, format!("{factory} cannot be instantiated: {e}")))?;
    let pipeline = gst::Pipeline::with_name("lectern-device-probe");
    pipeline
        .add(&element)
        .map_err(|e| unavailable(input, device, format!("cannot add {factory} to the probe pipeline: {e}")))?;
    let result = match pipeline.set_state(gst::State::Ready) {
        Ok(_) => Ok(()),
        Err(_) => Err(unavailable(input, device, ready_error(&pipeline, factory))),
    };
    // Back to NULL closes the device; failing to get there is not the problem the caller asked
    // about, and the READY result above is the useful one.
    let _ = pipeline.set_state(gst::State::Null);
    result
}

/// The element's own words for a failed NULL → READY: the error message and its debug detail,
/// which for ALSA holds the real reason ("Recording open error on device 'x': No such file...").
fn ready_error(pipeline: &gst::Pipeline, factory: &str) -> String {
    let msg = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => match e.debug() {
            Some(debug) => format!("{} ({})", e.error(), last_line(debug.as_str())),
            None => e.error().to_string(),
        },
        _ => format!("{factory} failed to open it (NULL→READY) without an error message"),
    }
}

/// GStreamer's debug strings start with the source file and function; the last line is the
/// human-readable part.
fn last_line(debug: &str) -> &str {
    debug.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or(debug)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_sources_are_always_present_and_no_audio_means_no_mic() {
        let s = CaptureSettings { audio: AudioSource::None, ..Default::default() };
        let r = probe_inputs(&s);
        assert!(r.camera.result.is_ok());
        assert_eq!(r.camera.device, "test");
        assert!(r.mic.is_none());
        let r = probe_inputs(&CaptureSettings::default());
        assert!(r.mic.as_ref().is_some_and(|m| m.result.is_ok() && m.device == "test"), "{r:?}");
    }

    #[test]
    fn a_camera_node_that_does_not_exist_is_named_in_the_error() {
        let s = CaptureSettings { video: VideoSource::V4l2 { device: "/dev/video-lectern-probe-missing".into() }, ..Default::default() };
        let r = probe_inputs(&s);
        let err = r.camera.result.unwrap_err().to_string();
        assert!(err.contains("camera /dev/video-lectern-probe-missing") && err.contains("no such device node"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_v4l2_device_fails_in_v4l2src() {
        if gst::init().is_err() || gst::ElementFactory::find("v4l2src").is_none() {
            eprintln!("SKIPPED a_file_that_is_not_a_v4l2_device_fails_in_v4l2src: v4l2src not installed");
            return;
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        let s = CaptureSettings { video: VideoSource::V4l2 { device: file.path().to_owned() }, ..Default::default() };
        let err = probe_inputs(&s).camera.result.unwrap_err();
        eprintln!("not a device: {err}");
        assert!(matches!(err, CaptureError::DeviceUnavailable { input: "camera", .. }), "{err:?}");
        assert!(err.to_string().contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn debug_detail_keeps_its_last_line() {
        assert_eq!(last_line("../sys/alsa.c(123): open (): /GstPipeline:p/GstAlsaSrc:probe:\nRecording open error on device 'x': No such file or directory\n"), "Recording open error on device 'x': No such file or directory");
        assert_eq!(last_line("one line"), "one line");
    }
}
