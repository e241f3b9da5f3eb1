//! The confidence preview branch on the simulated camera: closed, it delivers nothing; opened,
//! about one JPEG a second at the configured width (height follows the picture), and the recording
//! branch loses no frame either way.

mod common;

use std::time::Duration;

use lectern_capture::{AudioSource, Capture, CaptureSettings, EncoderChoice, VideoSource};

const NEEDED: [&str; 7] = ["videotestsrc", "x264enc", "mpegtsmux", "tee", "valve", "videoscale", "jpegenc"];

/// Width and height from a baseline JPEG's SOF0 marker.
fn jpeg_size(j: &[u8]) -> Option<(u16, u16)> {
    let i = j.windows(2).position(|w| w == [0xFF, 0xC0])?;
    let h = u16::from_be_bytes([*j.get(i + 5)?, *j.get(i + 6)?]);
    let w = u16::from_be_bytes([*j.get(i + 7)?, *j.get(i + 8)?]);
    Some((w, h))
}

#[test]
fn the_preview_is_closed_until_asked_then_about_one_jpeg_a_second() {
    if !common::have_elements("the_preview_is_closed_until_asked_then_about_one_jpeg_a_second", &NEEDED) {
        return;
    }
    let settings = CaptureSettings {
        video: VideoSource::Test { pattern: "smpte".into() },
        audio: AudioSource::None,
        width: 640,
        height: 480,
        video_bitrate_kbps: 500,
        encoder: EncoderChoice::Named("x264enc".into()),
        analysis_fps: 5,
        preview_width: 320,
        ..Default::default()
    };
    let (tx, collector) = common::collect(4096);
    let (_status, status_fn) = common::status_log();
    let cap = Capture::start(&settings, tx, status_fn).expect("start");
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(cap.preview().is_none(), "closed: no JPEG is made");
    cap.want_preview(true);
    std::thread::sleep(Duration::from_millis(2_500));
    let (jpeg, age) = cap.preview().expect("open: a JPEG within 2.5 s");
    assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]), "a whole JPEG");
    assert_eq!(jpeg_size(&jpeg), Some((320, 240)), "the configured width, the picture's aspect");
    assert!(age < Duration::from_millis(1_500), "about one a second: the newest is {age:?} old");
    cap.want_preview(false);
    std::thread::sleep(Duration::from_millis(1_500));
    let (_, age) = cap.preview().unwrap();
    assert!(age >= Duration::from_millis(1_200), "closed again: no newer JPEG ({age:?})");
    let stats = cap.stop(Duration::from_secs(5)).expect("stop");
    collector.handle.join().unwrap();
    eprintln!("{stats}");
    assert_eq!(stats.dropped, 0, "the recording branch lost no frame: {stats}");
}
