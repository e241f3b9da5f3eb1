//! Failure paths: a missing camera, a forced encoder that is not there, and the encoder probe.

mod common;

use std::time::Duration;

use lectern_capture::{
    probe_encoder, AudioSource, Capture, CaptureError, CaptureSettings, CaptureStatus,
    EncoderChoice, MediaEvent, VideoSource,
};

#[test]
fn missing_camera_is_a_clear_error_naming_the_device() {
    if !common::have_elements("missing_camera", &["v4l2src", "x264enc"]) {
        return;
    }
    let settings = CaptureSettings {
        video: VideoSource::V4l2 {
            device: "/dev/video-missing".into(),
        },
        audio: AudioSource::None,
        width: 320,
        height: 240,
        ..Default::default()
    };
    let (tx, collector) = common::collect(16);
    let (status, status_fn) = common::status_log();
    match Capture::start(&settings, tx, status_fn) {
        Err(e @ CaptureError::Start { .. }) => {
            let text = e.to_string();
            eprintln!("missing camera: {text}");
            assert!(
                text.contains("/dev/video-missing"),
                "error does not name the device: {text}"
            );
        }
        Err(other) => panic!("expected a start error, got {other}"),
        Ok(cap) => {
            // Some GStreamer versions only fail once streaming starts; then it must be reported.
            std::thread::sleep(Duration::from_secs(1));
            let statuses = status.lock().unwrap().clone();
            let _ = cap.stop(Duration::from_secs(2));
            let err = statuses.iter().find_map(|s| match s {
                CaptureStatus::Error { message, debug, .. } => Some(format!("{message} {debug}")),
                _ => None,
            });
            let err = err.expect("no error status for a missing camera");
            assert!(err.contains("/dev/video-missing"), "{err}");
        }
    }
    // A failed start never produced a Capture, so nothing must have been sent, End included.
    let events = collector.handle.join().unwrap();
    assert!(
        events
            .iter()
            .all(|(_, e)| !matches!(e, MediaEvent::Data { .. })),
        "{events:?}"
    );
}

#[test]
fn forced_unknown_encoder_is_a_clear_error() {
    lectern_capture::init().unwrap();
    let err = probe_encoder(&EncoderChoice::Named("nvh264enc".into())).unwrap_err();
    eprintln!("unknown encoder: {err}");
    assert!(
        matches!(&err, CaptureError::EncoderUnavailable { name, .. } if name == "nvh264enc"),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a supported encoder"), "{err}");

    // Known to us but not installed here (no VA-API in CI containers).
    if gstreamer::ElementFactory::find("vaapih264enc").is_none() {
        let err = probe_encoder(&EncoderChoice::Named("vaapih264enc".into())).unwrap_err();
        eprintln!("missing encoder: {err}");
        assert!(err.to_string().contains("not in registry"), "{err}");
    }

    // And through start(): the same error, before any pipeline exists.
    let settings = CaptureSettings {
        encoder: EncoderChoice::Named("nvh264enc".into()),
        ..Default::default()
    };
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let err = Capture::start(&settings, tx, Box::new(|_| {}))
        .err()
        .expect("start must fail");
    assert!(
        matches!(err, CaptureError::EncoderUnavailable { .. }),
        "{err:?}"
    );
}

#[test]
fn auto_probe_picks_x264enc_here() {
    if !common::have_elements("encoder probe", &["x264enc"]) {
        return;
    }
    let info = probe_encoder(&EncoderChoice::Auto).unwrap();
    eprintln!("auto probe: {} ({})", info.element, info.reason);
    if gstreamer::ElementFactory::find("v4l2h264enc").is_none()
        && gstreamer::ElementFactory::find("vaapih264enc").is_none()
    {
        assert_eq!(info.element, "x264enc");
        assert!(
            info.reason.contains("v4l2h264enc: not in registry"),
            "{}",
            info.reason
        );
    }
}

#[test]
fn dropping_without_stop_still_sends_end_once() {
    if !common::have_elements("drop", &["videotestsrc", "x264enc"]) {
        return;
    }
    let settings = CaptureSettings {
        width: 160,
        height: 120,
        audio: AudioSource::None,
        encoder: EncoderChoice::Named("x264enc".into()),
        ..Default::default()
    };
    let (tx, collector) = common::collect(64);
    let cap = Capture::start(&settings, tx, Box::new(|_| {})).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cap);
    let events = collector.handle.join().unwrap();
    assert_eq!(
        events.iter().filter(|(_, e)| *e == MediaEvent::End).count(),
        1
    );
    assert_eq!(events.last().map(|(_, e)| e), Some(&MediaEvent::End));
}

#[test]
fn a_consumer_that_stops_reading_cannot_wedge_stop() {
    if !common::have_elements("stalled consumer", &["videotestsrc", "x264enc"]) {
        return;
    }
    let settings = CaptureSettings {
        width: 160,
        height: 120,
        audio: AudioSource::None,
        encoder: EncoderChoice::Named("x264enc".into()),
        ..Default::default()
    };
    // Capacity 2 and nobody reading: the streaming thread blocks on the full channel.
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    let cap = Capture::start(&settings, tx, Box::new(|_| {})).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    let result = cap.stop(Duration::from_millis(500));
    eprintln!(
        "stop with a stalled consumer: {:?} after {:?}",
        result.as_ref().map(|s| s.to_string()),
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stop hung for {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(result, Err(CaptureError::ConsumerStalled { .. })),
        "{result:?}"
    );
    drop(rx);
}
