//! What the video analysis branch costs a recording: the sim board's pipeline (720p30
//! `videotestsrc` ball + sine, x264enc veryfast zerolatency 4 Mbit/s, AAC, MPEG-TS) run with the
//! branch off, at the daemon's 5 analysed frames a second, and at every frame (30), in turns, and
//! a table of this process's CPU (utime + stime from /proc/self/stat over wall time), its PSS at
//! the end of each run, frames dropped on the way to the encoder, and analysed frames delivered
//! and dropped. The consumer only drains the channel, so the numbers are the pipeline's.
//!
//! Then the confidence preview (320 px wide JPEGs) with analysis at 5 fps: the branch built but
//! closed (what every recording carries), and open for the whole run (someone watching).
//!
//! `cargo run --release -p lectern-capture --example bench-analysis -- [SECONDS] [ROUNDS] [PATTERN]`
//! (defaults 30, 2 and `ball`, the daemon's default; `smpte` loads x264 like a camera). Run it
//! on an otherwise quiet machine: it prints the load average.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use lectern_capture::{AudioSource, Capture, CaptureSettings, EncoderChoice, MediaEvent, VideoSource};

/// utime + stime of this process in clock ticks (fields 14 and 15 of /proc/self/stat).
fn cpu_ticks() -> u64 {
    let text = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &text[text.rfind(')').expect("comm") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn pss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

#[derive(Clone, Copy, PartialEq)]
enum Preview {
    None,
    Closed,
    Open,
}

struct Run {
    fps: u32,
    jpegs: u64,
    cpu_pct: f64,
    pss_kib: u64,
    frames_in: u64,
    dropped: u64,
    analysed: u64,
    analysis_dropped: u64,
}

fn run(pattern: &str, fps: u32, preview: Preview, secs: u64, hz: f64) -> Run {
    let settings = CaptureSettings {
        video: VideoSource::Test { pattern: pattern.into() },
        audio: AudioSource::Test { freq_hz: 440.0 },
        encoder: EncoderChoice::Named("x264enc".into()),
        analysis_fps: fps,
        preview_width: if preview == Preview::None { 0 } else { 320 },
        ..Default::default()
    };
    let (tx, rx) = sync_channel(4096);
    let drain = std::thread::spawn(move || rx.into_iter().filter(|e| matches!(e, MediaEvent::Luma { .. })).count());
    let cap = Capture::start(&settings, tx, Box::new(|_| {})).expect("start");
    cap.want_preview(preview == Preview::Open);
    // The first second (encoder start, preroll) is left out of the CPU figure.
    std::thread::sleep(Duration::from_secs(1));
    let (t0, c0) = (Instant::now(), cpu_ticks());
    // Count the JPEGs as a viewer would see them: a new one each time the newest changes age.
    let mut jpegs = 0;
    let mut last: Option<Duration> = None;
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        if let Some((_, age)) = cap.preview() {
            if last.is_none_or(|l| age < l) {
                jpegs += 1;
            }
            last = Some(age);
        }
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_ticks() - c0);
    let pss = pss_kib();
    let stats = cap.stop(Duration::from_secs(5)).expect("stop");
    let received = drain.join().unwrap() as u64;
    assert_eq!(received, stats.analysed);
    Run {
        fps,
        jpegs,
        cpu_pct: 100.0 * cpu as f64 / hz / wall,
        pss_kib: pss,
        frames_in: stats.frames_in,
        dropped: stats.dropped,
        analysed: stats.analysed,
        analysis_dropped: stats.analysis_dropped,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().expect("SECONDS ROUNDS PATTERN"));
    let (secs, rounds) = (number(0, 30), number(1, 2));
    let pattern = args.get(2).map_or("ball", String::as_str);
    let hz = ticks_per_second();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!("pattern {pattern}, load average before: {}", load());
    println!("| analysis | preview | run | CPU % of one core | PSS MiB | frames in | frames dropped | analysed | analysis dropped | JPEGs |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for round in 1..=rounds {
        for (fps, preview) in [(0, Preview::None), (5, Preview::None), (30, Preview::None), (5, Preview::Closed), (5, Preview::Open)] {
            let r = run(pattern, fps, preview, secs, hz);
            let name = if r.fps == 0 { "off".to_owned() } else { format!("{} fps", r.fps) };
            let p = match preview {
                Preview::None => "none",
                Preview::Closed => "closed",
                Preview::Open => "open",
            };
            println!(
                "| {name} | {p} | {round} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                r.cpu_pct,
                r.pss_kib as f64 / 1024.0,
                r.frames_in,
                r.dropped,
                r.analysed,
                r.analysis_dropped,
                r.jpegs
            );
        }
    }
    println!("load average after: {}", load());
}
