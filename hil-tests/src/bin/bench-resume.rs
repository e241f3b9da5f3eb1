//! Benchmark: daemon start → first media of the resumed part written, on the sim board.
//!
//! `cargo build --release --workspace --bins && target/release/bench-resume [TRIALS]`
//!
//! Each trial records, SIGKILLs the daemon mid-segment, starts it again and measures from the
//! spawn of the new process to the moment the resumed part's first segment row exists (the
//! journal inserts it when the first chunk of the new part arrives). This includes process start,
//! GStreamer initialisation, the encoder probe, journal recovery and pipeline start; the board's
//! boot time comes on top and is the lab's to measure.

use std::time::{Duration, Instant};

use lectern_hil_tests::{wait_until, Daemon};

fn main() -> anyhow::Result<()> {
    let trials: i64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10);
    let mut d = Daemon::start("[capture]\nwidth = 1280\nheight = 720\n")?;
    d.ctl(lectern_control::Request::RecordStart { title: Some("resume bench".into()) })?;
    let mut samples = Vec::new();
    for part in 1..=trials {
        wait_until("media in this part", Duration::from_secs(20), || d.segment_rows(part) > 0)?;
        std::thread::sleep(Duration::from_millis(1_300));
        d.kill()?;
        let t0 = Instant::now();
        d.restart()?;
        wait_until("the resumed part's first media", Duration::from_secs(20), || d.segment_rows(part + 1) > 0)?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    d.ctl(lectern_control::Request::RecordStop)?;
    let rec = &d.ctl(lectern_control::Request::Recordings)?["recordings"][0];
    d.terminate()?;
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!("daemon start -> first media of the resumed part, sim board, 1280x720@30 x264, {trials} trials");
    println!("| min | p50 | p90 | max |");
    println!("|---|---|---|---|");
    println!("| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |", samples[0], pct(0.5), pct(0.9), samples[samples.len() - 1]);
    println!("recording: state {}, {} parts, {} segments", rec["state"], rec["parts"], rec["segments"]);
    Ok(())
}
