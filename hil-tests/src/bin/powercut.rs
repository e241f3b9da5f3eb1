//! `powercut [--cuts N] [--seed N] [--warn-probability P] [--warn-lead-ms MS]`: the long power-cut
//! run (issue 4) on the real daemon and cutfs; prints the numbers docs/benchmarks.md records.
//! `powercut --upload [--cuts N] [--seed N] [--record-s S] [--chunk-mb N] [--rate-kbps N]`: cuts
//! during an upload to the Opencast double instead (issue 9 §1, hil-tests/src/powercut_upload.rs);
//! prints the re-sent bytes per cut. Both need `cargo build --release --workspace --bins` first
//! (they run `target/release/lecternd`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lectern_hil_tests::powercut::{run, seed_from_env, Options};
use lectern_hil_tests::powercut_upload::{self, UploadOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--upload") {
        return upload(args.into_iter().filter(|a| a != "--upload"));
    }
    let mut opts = Options::new(300, seed_from_env()?);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cuts" => opts.cuts = value()?.parse().context("--cuts: expected a count")?,
            "--seed" => opts.seed = value()?.parse().context("--seed: expected an unsigned integer")?,
            "--warn-probability" => opts.warn_probability = value()?.parse().context("--warn-probability: expected 0..1")?,
            "--warn-lead-ms" => opts.warn_lead = Duration::from_millis(value()?.parse().context("--warn-lead-ms: expected ms")?),
            other => bail!("unknown argument {other:?} (expected --upload, --cuts, --seed, --warn-probability, --warn-lead-ms)"),
        }
    }
    eprintln!("powercut: {} cuts, seed {} (replay with --seed {})", opts.cuts, opts.seed, opts.seed);
    let report = run(&opts).with_context(|| format!("seed {}", opts.seed))?;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let unwarned = report.cuts.iter().filter(|c| !c.warned).count();
    println!("cuts: {} ({} unwarned, {} warned), failures: 0", report.cuts.len(), unwarned, report.cuts.len() - unwarned);
    println!("time: {:.0} s", report.elapsed.as_secs_f64());
    for (kind, warned) in [("unwarned", false), ("warned", true)] {
        if let Some((p50, max)) = report.loss(warned) {
            println!("media lost per {kind} cut: p50 {:.0} ms, max {:.0} ms", ms(p50), ms(max));
        }
    }
    println!("captured {:.1} s, final media {:.1} s", report.captured.as_secs_f64(), report.media.as_secs_f64());
    Ok(())
}

/// The `--upload` mode. The upload must outlast the cuts: the lecture's length sets its size
/// (about 1.5 MB a second at the default 12 Mbit/s), so by default it grows with `--cuts`.
fn upload(args: impl IntoIterator<Item = String>) -> Result<()> {
    let (mut cuts, mut seed, mut record, mut chunk_mb, mut rate_kbps) = (30, seed_from_env()?, None, None, None);
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cuts" => cuts = value()?.parse().context("--cuts: expected a count")?,
            "--seed" => seed = value()?.parse().context("--seed: expected an unsigned integer")?,
            "--record-s" => record = Some(Duration::from_secs(value()?.parse().context("--record-s: expected seconds")?)),
            "--chunk-mb" => chunk_mb = Some(value()?.parse().context("--chunk-mb: expected MiB")?),
            "--rate-kbps" => rate_kbps = Some(value()?.parse().context("--rate-kbps: expected kbit/s")?),
            other => bail!("unknown argument {other:?} (expected --cuts, --seed, --record-s, --chunk-mb, --rate-kbps)"),
        }
    }
    // The defaults size the lecture for the cuts (UploadOptions::new).
    let mut opts = UploadOptions::new(cuts, seed);
    opts.record = record.unwrap_or(opts.record);
    opts.chunk_mb = chunk_mb.unwrap_or(opts.chunk_mb);
    opts.rate_kbps = rate_kbps.unwrap_or(opts.rate_kbps);
    eprintln!("powercut --upload: {} cuts + ingest-held, seed {} (replay with --seed {})", opts.cuts, opts.seed, opts.seed);
    let report = powercut_upload::run(&opts).with_context(|| format!("seed {}", opts.seed))?;
    println!("cuts: {}, failures: 0; time {:.0} s, upload {:.0} s (reboots included)", report.cuts.len(), report.elapsed.as_secs_f64(), report.upload_time.as_secs_f64());
    println!("file {} bytes, chunk {} bytes, upload jobs {}, media package creations {}", report.file_bytes, report.chunk_bytes, report.upload_jobs, report.creations);
    let n = report.cuts.len().max(1) as f64;
    println!(
        "re-sent: server {} bytes ({:.0} per cut), journal {} bytes ({:.0} per cut)",
        report.resent_server,
        report.resent_server as f64 / n,
        report.resent_journal,
        report.resent_journal as f64 / n
    );
    for (i, c) in report.cuts.iter().enumerate() {
        println!(
            "cut {:>3} {:<12} phase {:<10} server {:>3} chunks, journal {:>4}, re-sent {:>8} bytes{}",
            i + 1,
            format!("{:?}", c.kind),
            c.phase,
            c.server_chunks,
            c.journal_chunks.map_or("-".into(), |j| j.to_string()),
            c.resent_server,
            if c.server_ahead() { "  (server ahead)" } else { "" }
        );
    }
    Ok(())
}
