//! Benchmark: power-fail edge → everything durable, on the sim board.
//!
//! `cargo build --release --workspace --bins && target/release/bench-powerfail [TRIALS]`
//!
//! Each trial lets a recording run for a random 0.5–2.5 s into a part (so the open segment holds
//! a varying amount of data), asserts the sim power-fail line, and reads the daemon's own
//! measurement: from the instant its power-fail monitor saw the edge to the instant the open
//! segment was fsynced, its directory fsynced and the journal row committed. Then it clears the
//! line and waits for the recording to resume as a new part. Prints a table of percentiles.

use std::time::Duration;

use lectern_hil_tests::{wait_until, Daemon};

fn main() -> anyhow::Result<()> {
    let trials: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(50);
    let mut d = Daemon::start("[capture]\nwidth = 1280\nheight = 720\n[power]\nhold_ms = 200\n")?;
    d.ctl(lectern_control::Request::RecordStart { title: Some("power-fail bench".into()) })?;
    // A small deterministic generator: the bench must be repeatable, not random.
    let mut seed: u64 = 0x5eed;
    let mut samples = Vec::with_capacity(trials);
    for i in 0..trials {
        wait_until("recording", Duration::from_secs(20), || d.status()["state"] == "recording")?;
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let run_ms = 500 + (seed >> 33) % 2000;
        // The first trial waits for the pipeline's first segment too.
        std::thread::sleep(Duration::from_millis(run_ms + if i == 0 { 1500 } else { 800 }));
        let before = d.status()["power"]["last_flush_ms"].clone();
        d.cli(&["sim", "powerfail", "on"])?;
        wait_until("power_lost", Duration::from_secs(10), || d.status()["state"] == "power_lost")?;
        let st = d.status();
        let ms = st["power"]["last_flush_ms"].as_f64().ok_or_else(|| anyhow::anyhow!("no measurement: {st}"))?;
        anyhow::ensure!(st["power"]["last_flush_ms"] != before || i == 0, "measurement did not change");
        samples.push(ms);
        d.cli(&["sim", "powerfail", "off"])?;
    }
    d.ctl(lectern_control::Request::RecordStop)?;
    let rec = &d.ctl(lectern_control::Request::Recordings)?["recordings"][0];
    d.terminate()?;
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!("power-fail edge -> durable, sim board, 1280x720@30 x264, {trials} trials");
    println!("| min | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!("| {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |", samples[0], pct(0.5), pct(0.9), pct(0.99), samples[samples.len() - 1]);
    println!("recording: {} parts, {} segments, all committed", rec["parts"], rec["segments"]);
    Ok(())
}
