//! Table-driven tests of the monitor on an injected clock: each case is a script of readings at
//! given times and the alarm changes it must produce, rendered as one line each.

use super::*;

#[derive(Clone, Copy)]
enum Ev {
    /// peak dBFS, RMS dBFS
    Level(f64, f64),
    /// mean luma, fingerprint
    Frame(f64, u64),
    /// Frames reached the encoder (no analysis).
    Video,
    Tick,
}

/// `(from_ms, to_ms)` exclusive of `to`, every `step_ms`.
fn every(from_ms: u64, to_ms: u64, step_ms: u64, ev: Ev) -> Vec<(u64, Ev)> {
    (from_ms..to_ms).step_by(step_ms as usize).map(|t| (t, ev)).collect()
}

/// Frames every 200 ms (5 fps) with a fresh fingerprint each, so only `mean` matters.
fn moving(from_ms: u64, to_ms: u64, mean: f64) -> Vec<(u64, Ev)> {
    (from_ms..to_ms).step_by(200).map(|t| (t, Ev::Frame(mean, t + 1))).collect()
}

fn secs(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64())
}

fn render(now_ms: u64, c: &Change) -> String {
    match *c {
        Change::Raised { alarm, since } => format!("{:.1} raised {alarm} since {}", now_ms as f64 / 1000.0, secs(since)),
        Change::Cleared { alarm, since, at } => {
            format!("{:.1} cleared {alarm} since {} at {}", now_ms as f64 / 1000.0, secs(since), secs(at))
        }
    }
}

fn run(cfg: &SignalsConfig, script: &[Vec<(u64, Ev)>]) -> (Monitor, Vec<String>) {
    let mut events: Vec<(u64, Ev)> = script.concat();
    events.sort_by_key(|(t, _)| *t);
    let mut m = Monitor::new(cfg);
    let mut out = Vec::new();
    for (t, ev) in events {
        let now = Duration::from_millis(t);
        let changes = match ev {
            Ev::Level(peak, rms) => m.level(now, peak, rms),
            // An analysed frame also went to the encoder, as in the capture.
            Ev::Frame(mean, fp) => {
                let mut c = m.video(now);
                c.extend(m.frame(now, FrameStats { luma_mean: mean, luma_var: 0.0, fingerprint: fp }));
                c
            }
            Ev::Video => m.video(now),
            Ev::Tick => m.tick(now),
        };
        out.extend(changes.iter().map(|c| render(t, c)));
    }
    (m, out)
}

fn check(script: &[Vec<(u64, Ev)>], expect: &[&str]) {
    let (_, got) = run(&SignalsConfig::default(), script);
    assert_eq!(got, expect);
}

const SPEECH: Ev = Ev::Level(-12.0, -25.0);
const SILENCE: Ev = Ev::Level(-66.0, -70.0);

#[test]
fn silent_mic_raises_after_ten_seconds_and_clears_two_seconds_after_sound_returns() {
    check(
        &[every(0, 20_000, 100, SILENCE), every(20_000, 30_000, 100, SPEECH)],
        &["10.0 raised silent_mic since 0.0", "22.0 cleared silent_mic since 0.0 at 20.0"],
    );
}

#[test]
fn silence_must_last_without_a_break() {
    // One spoken word at 9.9 s restarts the hold: the alarm comes 10 s after the word.
    check(
        &[every(0, 9_900, 100, SILENCE), vec![(9_900, SPEECH)], every(10_000, 25_000, 100, SILENCE)],
        &["20.0 raised silent_mic since 10.0"],
    );
    // Exactly at the threshold counts as silent (Extron: "at or below").
    check(&[every(0, 10_100, 100, Ev::Level(-50.0, -60.0))], &["10.0 raised silent_mic since 0.0"]);
    check(&[every(0, 20_000, 100, Ev::Level(-50.0, -59.9))], &[]);
}

#[test]
fn a_level_hovering_on_the_threshold_never_flaps() {
    // -58.5 is above the threshold but inside the 3 dB hysteresis band: it neither raises
    // (not silent) nor clears a raised alarm.
    let hover: Vec<(u64, Ev)> = (10_000..70_000)
        .step_by(100)
        .map(|t| (t, if (t / 100) % 2 == 0 { Ev::Level(-50.0, -61.0) } else { Ev::Level(-50.0, -58.5) }))
        .collect();
    check(&[every(0, 10_000, 100, SILENCE), hover.clone()], &["10.0 raised silent_mic since 0.0"]);
    // A pseudo-random walk across the threshold: one raise, nothing else.
    let mut x = 12345u64;
    let walk: Vec<(u64, Ev)> = (0..60_000)
        .step_by(100)
        .map(|t| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let rms = -62.0 + 4.0 * ((x >> 33) as f64 / (1u64 << 31) as f64);
            (t, Ev::Level(-40.0, rms))
        })
        .collect();
    let (_, got) = run(&SignalsConfig::default(), &[every(0, 10_000, 100, SILENCE), walk.iter().map(|&(t, e)| (t + 10_000, e)).collect()]);
    assert_eq!(got, ["10.0 raised silent_mic since 0.0"]);
    // Clearly above the band (> -57 dBFS) for the clear hold clears it.
    check(
        &[every(0, 10_000, 100, SILENCE), every(10_000, 15_000, 100, Ev::Level(-50.0, -56.0))],
        &["10.0 raised silent_mic since 0.0", "12.0 cleared silent_mic since 0.0 at 10.0"],
    );
}

#[test]
fn sound_shorter_than_the_clear_hold_keeps_the_alarm() {
    check(
        &[every(0, 12_000, 100, SILENCE), every(12_000, 13_900, 100, SPEECH), every(13_900, 30_000, 100, SILENCE)],
        &["10.0 raised silent_mic since 0.0"],
    );
}

#[test]
fn clipping_needs_its_hold_and_clears_below_the_band() {
    let hot = Ev::Level(-0.5, -6.0);
    check(&[every(0, 400, 100, hot), every(400, 5_000, 100, SPEECH)], &[]);
    check(
        &[every(0, 600, 100, hot), every(600, 1_000, 100, Ev::Level(-2.0, -8.0)), every(1_000, 5_000, 100, SPEECH)],
        // -2 dBFS is inside the band (clears below -4): the clear starts at 1.0.
        &["0.5 raised clipping since 0.0", "3.0 cleared clipping since 0.0 at 1.0"],
    );
    let cfg = SignalsConfig { clip_hold: Duration::ZERO, ..SignalsConfig::default() };
    let (_, got) = run(&cfg, &[vec![(0, SPEECH), (100, hot)], every(200, 3_000, 100, SPEECH)]);
    assert_eq!(got, ["0.1 raised clipping since 0.1", "2.2 cleared clipping since 0.1 at 0.2"]);
}

#[test]
fn black_picture() {
    check(
        &[moving(0, 4_000, 16.0 / 255.0), moving(4_000, 8_000, 0.11), moving(8_000, 12_000, 0.3)],
        // Video black (Y=16) is black; 0.11 is above 0.1 but inside the 0.02 band: no clear
        // until 0.3 arrives at 8.0.
        &["2.0 raised black_picture since 0.0", "10.0 cleared black_picture since 0.0 at 8.0"],
    );
    check(&[moving(0, 1_800, 0.01), moving(1_800, 10_000, 0.5)], &[]);
}

/// Regression: the sim camera's default `ball` pattern (a white ball on video black, mean luma
/// about 0.07) raised black_picture in every recording before the flatness rule.
#[test]
fn a_dark_picture_with_something_lit_in_it_is_not_black() {
    let cfg = SignalsConfig::default();
    let mut m = Monitor::new(&cfg);
    let frame = |i: u64, var: f64| FrameStats { luma_mean: 0.07, luma_var: var, fingerprint: i };
    let mut changes = Vec::new();
    for i in 0..50 {
        changes.extend(m.frame(Duration::from_millis(200 * i), frame(i, 0.0145)));
    }
    assert_eq!(changes, []);
    // The same mean with only noise in it (sd 0.01) is black.
    for i in 50..70 {
        changes.extend(m.frame(Duration::from_millis(200 * i), frame(i, 0.0001)));
    }
    assert_eq!(changes, [Change::Raised { alarm: Alarm::BlackPicture, since: Duration::from_secs(10) }]);
    // sd 0.04 is past the threshold but inside the band: it stays raised; 0.06 clears it.
    for i in 70..90 {
        changes.extend(m.frame(Duration::from_millis(200 * i), frame(i, 0.0016)));
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    for i in 90..110 {
        changes.extend(m.frame(Duration::from_millis(200 * i), frame(i, 0.0036)));
    }
    assert_eq!(changes[1], Change::Cleared { alarm: Alarm::BlackPicture, since: Duration::from_secs(10), at: Duration::from_secs(18) });
}

#[test]
fn frozen_picture_is_dated_from_the_first_identical_frame() {
    let frozen = every(1_000, 40_000, 200, Ev::Frame(0.5, 7));
    check(
        &[moving(0, 1_000, 0.5), frozen, moving(40_000, 45_000, 0.5)],
        &["31.0 raised frozen_picture since 1.0", "42.0 cleared frozen_picture since 1.0 at 40.0"],
    );
    // A still picture shorter than the hold raises nothing.
    check(&[moving(0, 1_000, 0.5), every(1_000, 30_000, 200, Ev::Frame(0.5, 7)), moving(30_000, 40_000, 0.5)], &[]);
}

#[test]
fn camera_gone_and_back() {
    check(
        &[moving(0, 1_000, 0.5), every(1_000, 3_000, 100, Ev::Tick), moving(3_000, 6_000, 0.5)],
        // Last frame at 0.8 s: lost once 0.5 s passed without one, dated from that frame.
        &["1.3 raised no_video since 0.8", "5.0 cleared no_video since 0.8 at 3.0"],
    );
    // A frame every 400 ms is late but not lost.
    check(&[every(0, 10_000, 400, Ev::Frame(0.5, 1)).into_iter().enumerate().map(|(i, (t, _))| (t, Ev::Frame(0.5, i as u64))).collect(), every(0, 10_000, 100, Ev::Tick)], &[]);
}

/// Regression: with the analysis branch starved (no analysed frame for 1.8 s on a loaded
/// machine) while the encoder still got every frame, no_video was raised.
#[test]
fn a_starved_analysis_branch_is_not_a_lost_camera() {
    check(&[moving(0, 1_000, 0.5), every(1_000, 3_000, 33, Ev::Video), moving(3_000, 4_000, 0.5)], &[]);
}

#[test]
fn mic_gone_and_back() {
    check(
        &[every(0, 1_000, 100, SPEECH), every(1_000, 6_000, 100, Ev::Tick), every(6_000, 9_000, 100, SPEECH)],
        &["2.9 raised no_audio since 0.9", "8.0 cleared no_audio since 0.9 at 6.0"],
    );
}

#[test]
fn loss_alarms_wait_for_the_first_reading() {
    // A pipeline still starting (or a box recording without audio) raises nothing.
    check(&[every(0, 60_000, 100, Ev::Tick)], &[]);
    check(&[moving(0, 60_000, 0.5), every(0, 60_000, 100, Ev::Tick)], &[]);
}

#[test]
fn clears_complete_on_ticks_without_readings() {
    // Sound comes back at 10 s and the next readings are late: a tick finishes the clear.
    check(
        &[every(0, 10_000, 100, SILENCE), vec![(10_000, SPEECH), (11_000, SPEECH)], vec![(12_000, Ev::Tick)]],
        &["10.0 raised silent_mic since 0.0", "12.0 cleared silent_mic since 0.0 at 10.0"],
    );
}

#[test]
fn report_and_active() {
    let (m, got) = run(
        &SignalsConfig::default(),
        &[
            every(0, 15_000, 100, SILENCE),
            every(15_000, 40_000, 100, SPEECH),
            moving(0, 20_000, 0.5),
            moving(20_000, 40_000, 0.0),
            every(40_000, 52_000, 100, SILENCE),
        ],
    );
    assert_eq!(
        got,
        [
            "10.0 raised silent_mic since 0.0",
            "17.0 cleared silent_mic since 0.0 at 15.0",
            "22.0 raised black_picture since 20.0",
            "40.3 raised no_video since 39.8",
            "50.0 raised silent_mic since 40.0",
        ]
    );
    assert_eq!(
        m.report(),
        [
            Stretch { alarm: Alarm::SilentMic, from: Duration::ZERO, to: Some(Duration::from_secs(15)) },
            Stretch { alarm: Alarm::BlackPicture, from: Duration::from_secs(20), to: None },
            Stretch { alarm: Alarm::NoVideo, from: Duration::from_millis(39_800), to: None },
            Stretch { alarm: Alarm::SilentMic, from: Duration::from_secs(40), to: None },
        ]
    );
    assert_eq!(
        m.active(),
        [(Alarm::SilentMic, Duration::from_secs(40)), (Alarm::BlackPicture, Duration::from_secs(20)), (Alarm::NoVideo, Duration::from_millis(39_800))]
    );
}

#[test]
fn alarm_names_are_stable() {
    let names: Vec<&str> = Alarm::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["silent_mic", "clipping", "black_picture", "frozen_picture", "no_video", "no_audio"]);
}

#[test]
fn frame_stats_from_luma() {
    assert_eq!(FrameStats::from_luma(&[]), None);
    let black = FrameStats::from_luma(&[0; 64]).unwrap();
    assert_eq!((black.luma_mean, black.luma_var), (0.0, 0.0));
    let half: Vec<u8> = (0..64).map(|i| if i % 2 == 0 { 0 } else { 255 }).collect();
    let h = FrameStats::from_luma(&half).unwrap();
    assert!((h.luma_mean - 0.5).abs() < 1e-12 && (h.luma_var - 0.25).abs() < 1e-12, "{h:?}");
    // One pixel one step brighter is another picture; the same bytes are the same picture.
    let mut other = half.clone();
    other[10] += 1;
    assert_ne!(FrameStats::from_luma(&other).unwrap().fingerprint, h.fingerprint);
    assert_eq!(FrameStats::from_luma(&half).unwrap().fingerprint, h.fingerprint);
}
