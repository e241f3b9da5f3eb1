//! The video analysis branch on the simulated camera: a few downscaled luma frames a second reach
//! the channel as `MediaEvent::Luma`, they show what the camera shows (a black pattern is video
//! black, Y = 16, and every frame of it is the same; the moving ball is not), and with the branch
//! off none arrive.

mod common;

use std::time::Duration;

use lectern_capture::{AudioSource, Capture, CaptureSettings, EncoderChoice, MediaEvent, VideoSource, ANALYSIS_HEIGHT, ANALYSIS_WIDTH};

const NEEDED: [&str; 6] = ["videotestsrc", "x264enc", "mpegtsmux", "tee", "videoscale", "videoconvert"];

/// Runs the camera `pattern` for `secs` with the branch at `fps` and returns the luma planes.
fn run(pattern: &str, fps: u32, secs: u64) -> Vec<Vec<u8>> {
    let settings = CaptureSettings {
        video: VideoSource::Test { pattern: pattern.into() },
        audio: AudioSource::None,
        width: 320,
        height: 240,
        video_bitrate_kbps: 300,
        encoder: EncoderChoice::Named("x264enc".into()),
        analysis_fps: fps,
        ..Default::default()
    };
    // A GLib critical (GStreamer's complaint about a wrong unref, say) aborts the test: the
    // branch's rate probe drops 25 frames a second, and once logged a critical for each.
    gstreamer::glib::log_set_always_fatal(gstreamer::glib::LogLevels::LEVEL_CRITICAL | gstreamer::glib::LogLevels::LEVEL_ERROR);
    let (tx, collector) = common::collect(1024);
    let (_status, status_fn) = common::status_log();
    let cap = Capture::start(&settings, tx, status_fn).expect("start");
    std::thread::sleep(Duration::from_secs(secs));
    let stats = cap.stop(Duration::from_secs(5)).expect("stop");
    let events = collector.handle.join().unwrap();
    eprintln!("{pattern} at {fps} fps: {stats}");
    let frames: Vec<Vec<u8>> = events
        .into_iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Luma { width, height, luma, .. } => {
                assert_eq!((width, height), (ANALYSIS_WIDTH, ANALYSIS_HEIGHT));
                Some(luma)
            }
            _ => None,
        })
        .collect();
    assert_eq!(stats.analysed, frames.len() as u64, "stats count what was delivered");
    assert_eq!(stats.analysis_dropped, 0, "a drained channel never drops an analysed frame");
    frames
}

fn mean(luma: &[u8]) -> f64 {
    luma.iter().map(|&y| f64::from(y)).sum::<f64>() / luma.len() as f64
}

#[test]
fn analysis_branch_delivers_downscaled_luma_at_its_rate() {
    if !common::have_elements("analysis_branch_delivers_downscaled_luma_at_its_rate", &NEEDED) {
        return;
    }
    let ball = run("ball", 5, 3);
    // 5 a second for 3 s, give or take the start and the last one.
    assert!((12..=17).contains(&ball.len()), "{} frames", ball.len());
    assert!(ball.iter().all(|f| f.len() == (ANALYSIS_WIDTH * ANALYSIS_HEIGHT) as usize));
    assert!(ball.windows(2).all(|w| w[0] != w[1]), "the moving ball changes every analysed frame");

    let black = run("black", 5, 2);
    assert!(black.len() >= 8, "{} frames", black.len());
    assert!(black.iter().all(|f| f == &black[0]), "a black picture is the same every frame");
    assert!((mean(&black[0]) - 16.0).abs() < 1.0, "video black is Y=16, got {}", mean(&black[0]));

    let white = run("white", 5, 1);
    assert!(white.iter().all(|f| mean(f) > 200.0), "white is bright");
}

#[test]
fn analysis_off_sends_no_frames() {
    if !common::have_elements("analysis_off_sends_no_frames", &NEEDED) {
        return;
    }
    assert!(run("ball", 0, 1).is_empty());
}
