//! End-to-end capture on the simulated sources: live `videotestsrc` + `audiotestsrc` through
//! x264enc, AAC and mpegtsmux into the channel, then a segment cut at keyframes must decode.

mod common;

use std::process::Command;
use std::time::Duration;

use lectern_capture::{
    AudioSource, Capture, CaptureSettings, CaptureStatus, EncoderChoice, MediaEvent,
};

#[test]
fn sim_capture_delivers_keyframe_aligned_decodable_segments() {
    let needed = [
        "videotestsrc",
        "audiotestsrc",
        "x264enc",
        "h264parse",
        "mpegtsmux",
        "level",
        "aacparse",
    ];
    if !common::have_elements("sim_capture", &needed) {
        return;
    }
    let settings = CaptureSettings {
        width: 320,
        height: 240,
        video_bitrate_kbps: 500,
        encoder: EncoderChoice::Named("x264enc".into()),
        audio: AudioSource::Test { freq_hz: 440.0 },
        ..Default::default()
    };
    let (tx, collector) = common::collect(256);
    let (status, status_fn) = common::status_log();
    let cap = Capture::start(&settings, tx, status_fn).expect("start");
    assert_eq!(cap.encoder().element, "x264enc");
    eprintln!("pipeline: {}", cap.pipeline_description());
    std::thread::sleep(Duration::from_secs(6));
    let mid = cap.stats();
    let stats = cap.stop(Duration::from_secs(5)).expect("stop");
    let events = collector.handle.join().unwrap();
    eprintln!("stats before stop: {mid}\nstats at stop: {stats}");

    // End exactly once, and last: nothing may follow it.
    let ends: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, (_, e))| *e == MediaEvent::End)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        ends,
        vec![events.len() - 1],
        "End must be sent exactly once, as the last event"
    );

    let data: Vec<(&Vec<u8>, Option<u64>, bool)> = events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Data {
                bytes,
                pts_ns,
                keyframe,
            } => Some((bytes, *pts_ns, *keyframe)),
            _ => None,
        })
        .collect();
    assert!(data.len() > 50, "only {} chunks", data.len());
    assert!(data[0].2, "the first chunk must start at a keyframe");
    let sizes: Vec<usize> = data.iter().map(|d| d.0.len()).collect();
    let total: usize = sizes.iter().sum();
    eprintln!(
        "{} chunks, {} bytes, sizes min {} max {} mean {}",
        data.len(),
        total,
        sizes.iter().min().unwrap(),
        sizes.iter().max().unwrap(),
        total / data.len()
    );
    assert!(
        sizes.iter().all(|s| s % 188 == 0),
        "chunks must be whole TS packets"
    );
    assert!(
        data.iter().all(|d| d.0[0] == 0x47),
        "every chunk starts with a TS sync byte"
    );

    // PTS: present and monotonic-ish (audio and video packets interleave, so allow a little).
    let pts: Vec<u64> = data
        .iter()
        .map(|d| d.1.expect("every chunk has a PTS"))
        .collect();
    let worst_back = pts
        .windows(2)
        .map(|w| w[0].saturating_sub(w[1]))
        .max()
        .unwrap();
    eprintln!(
        "largest PTS step backwards: {:.3} s",
        worst_back as f64 / 1e9
    );
    assert!(worst_back < 500_000_000, "PTS went back by {worst_back} ns");

    // Keyframes about every 2 s.
    let key_idx: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, d)| d.2)
        .map(|(i, _)| i)
        .collect();
    let key_pts: Vec<f64> = key_idx.iter().map(|&i| pts[i] as f64 / 1e9).collect();
    eprintln!("keyframe chunk PTS (s): {key_pts:.3?}");
    assert!(
        key_pts.len() >= 3,
        "expected ≥3 keyframes in 6 s, got {key_pts:?}"
    );
    for w in key_pts.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            (1.5..=2.5).contains(&gap),
            "keyframe spacing {gap:.3} s not ≈2 s: {key_pts:?}"
        );
    }

    // Levels: a 0.8-volume sine peaks near −2 dB with RMS 3 dB lower.
    let levels = common::levels(&events);
    eprintln!(
        "{} level readings, first {:?}",
        levels.len(),
        levels.first()
    );
    assert!(
        levels.len() >= 30,
        "only {} level readings in 6 s",
        levels.len()
    );
    for (peak, rms) in &levels[2..] {
        assert!((-20.0..=0.0).contains(peak), "peak {peak} dB");
        assert!(
            (-25.0..=0.0).contains(rms) && rms < peak,
            "rms {rms} dB vs peak {peak}"
        );
    }

    let statuses = status.lock().unwrap().clone();
    assert_eq!(
        statuses.first(),
        Some(&CaptureStatus::Running),
        "{statuses:?}"
    );
    assert!(
        !statuses
            .iter()
            .any(|s| matches!(s, CaptureStatus::Error { .. })),
        "{statuses:?}"
    );
    assert!(stats.frames_in >= 150, "{stats}");
    assert!(stats.dropped <= 3, "frame drops in the simulator: {stats}");

    // One segment, keyframe to keyframe, must decode on its own.
    let segment: Vec<u8> = data[key_idx[1]..key_idx[2]]
        .iter()
        .flat_map(|d| d.0.iter().copied())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let ts = dir.path().join("segment.ts");
    std::fs::write(&ts, &segment).unwrap();
    let Ok(out) = Command::new("gst-discoverer-1.0").arg(&ts).output() else {
        eprintln!("SKIPPED segment decode check: gst-discoverer-1.0 not installed (package gstreamer1.0-plugins-base-apps)");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "gst-discoverer-1.0 on a {}-byte segment:\n{text}",
        segment.len()
    );
    assert!(
        out.status.success(),
        "discoverer failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l.contains("video #") && l.contains("H.264 (High Profile)")),
        "no H.264 High Profile video in segment: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("audio #") && l.contains("MPEG-4 AAC")),
        "no AAC audio in segment: {text}"
    );
    let duration = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .and_then(|d| {
            let p: Vec<f64> = d.split(':').filter_map(|x| x.parse().ok()).collect();
            (p.len() == 3).then(|| p[0] * 3600.0 + p[1] * 60.0 + p[2])
        })
        .expect("discoverer printed no duration");
    assert!(
        (1.5..=2.6).contains(&duration),
        "segment duration {duration} s"
    );

    // Duration alone comes from timestamps; count decoded frames to prove the segment decodes
    // from its first frame. Without the PAT/PMT copies at its head this decodes 0 frames
    // (measured: discoverer says "No valid frames found before end of stream").
    if !common::have_elements("segment frame count", &["tsdemux", "avdec_h264"]) {
        return;
    }
    let out = Command::new("gst-launch-1.0")
        .args([
            "-v",
            "filesrc",
            &format!("location={}", ts.display()),
            "!",
            "tsdemux",
            "!",
            "h264parse",
            "!",
            "avdec_h264",
            "!",
            "fakesink",
            "silent=false",
        ])
        .output()
        .expect("gst-launch-1.0 runs");
    let frames = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("fakesink0") && l.contains("chain"))
        .count();
    eprintln!("decoded {frames} frames from the segment");
    assert!(frames >= 55, "segment decoded only {frames} frames");
}
