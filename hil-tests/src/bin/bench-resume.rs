//! Benchmark: daemon start → first media of the resumed part written, on the sim board.
//!
//! `cargo build --release --workspace --bins && target/release/bench-resume [TRIALS] [RESTART_DELAY_MS]`
//!
//! Each trial records, SIGKILLs the daemon mid-segment, starts it again and measures from the
//! spawn of the new process to the moment the resumed part's first segment row exists (the
//! journal inserts it when the first chunk of the new part arrives). This includes process start,
//! GStreamer initialisation, the encoder probe, journal recovery and pipeline start; the board's
//! boot time comes on top and is the lab's to measure.
//!
//! Then it stops the recording, waits for the stitch and reads the manifest's gaps: the hole
//! each SIGKILL left in the stitched file, as an AV team sees it (issue 13: goal ≤ 1 s).
//! `RESTART_DELAY_MS` (default 100, the unit's `RestartSec`) is waited between the kill and the
//! new start, as systemd would.

use std::time::{Duration, Instant};

use lectern_control::Request;
use lectern_hil_tests::{wait_until, Daemon};

fn main() -> anyhow::Result<()> {
    let trials: i64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(10);
    let delay = Duration::from_millis(std::env::args().nth(2).map(|a| a.parse()).transpose()?.unwrap_or(100));
    let mut d = Daemon::start("[capture]\nwidth = 1280\nheight = 720\n")?;
    let id = d.ctl(Request::RecordStart { title: Some("resume bench".into()) })?["recording"]["id"].as_str().unwrap_or_default().to_owned();
    let mut samples = Vec::new();
    for part in 1..=trials {
        wait_until("media in this part", Duration::from_secs(20), || d.segment_rows(part) > 0)?;
        std::thread::sleep(Duration::from_millis(1_300));
        d.kill()?;
        std::thread::sleep(delay);
        let t0 = Instant::now();
        d.restart()?;
        wait_until("the resumed part's first media", Duration::from_secs(20), || d.segment_rows(part + 1) > 0)?;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    std::thread::sleep(Duration::from_millis(1_000));
    d.ctl(Request::RecordStop)?;
    let mut stitch = serde_json::Value::Null;
    wait_until("the stitch", Duration::from_secs(120), || {
        let list = d.ctl(Request::Recordings).unwrap_or_default();
        stitch = list["recordings"].as_array().and_then(|r| r.iter().find(|r| r["id"] == id.as_str())).map_or(serde_json::Value::Null, |r| r["stitch"].clone());
        matches!(stitch["state"].as_str(), Some("done" | "failed"))
    })?;
    anyhow::ensure!(stitch["state"] == "done", "stitch failed: {stitch}");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(d.media().join(stitch["manifest"].as_str().unwrap_or_default()))?)?;
    let mut gaps: Vec<f64> = manifest["gaps"].as_array().map(|g| g.iter().filter_map(|g| g["duration_s"].as_f64()).collect()).unwrap_or_default();
    let causes: Vec<&str> = manifest["gaps"].as_array().map(|g| g.iter().filter_map(|g| g["cause"].as_str()).collect()).unwrap_or_default();
    let rec = &d.ctl(Request::Recordings)?["recordings"][0];
    d.terminate()?;
    samples.sort_by(f64::total_cmp);
    gaps.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    println!("daemon start -> first media of the resumed part, sim board, 1280x720@30 x264, {trials} trials");
    println!("| min | p50 | p90 | max |");
    println!("|---|---|---|---|");
    println!("| {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |", samples[0], pct(&samples, 0.5), pct(&samples, 0.9), samples[samples.len() - 1]);
    println!();
    println!("hole each SIGKILL left in the stitched file (manifest gaps, restart {} ms after the kill), {} gaps, causes {:?}", delay.as_millis(), gaps.len(), causes.iter().collect::<std::collections::BTreeSet<_>>());
    println!("| min | p50 | p90 | max |");
    println!("|---|---|---|---|");
    if !gaps.is_empty() {
        println!("| {:.2} s | {:.2} s | {:.2} s | {:.2} s |", gaps[0], pct(&gaps, 0.5), pct(&gaps, 0.9), gaps[gaps.len() - 1]);
    }
    println!("recording: state {}, {} parts, {} segments", rec["state"], rec["parts"], rec["segments"]);
    Ok(())
}
