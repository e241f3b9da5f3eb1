//! `powercut [--cuts N] [--seed N] [--warn-probability P] [--warn-lead-ms MS]`: the long power-cut
//! run (issue 4) on the real daemon and cutfs; prints the numbers docs/benchmarks.md records.
//! Needs `cargo build --release --workspace --bins` first (it runs `target/release/lecternd`).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use lectern_hil_tests::powercut::{run, seed_from_env, Options};

fn main() -> Result<()> {
    let mut opts = Options::new(300, seed_from_env()?);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--cuts" => opts.cuts = value()?.parse().context("--cuts: expected a count")?,
            "--seed" => opts.seed = value()?.parse().context("--seed: expected an unsigned integer")?,
            "--warn-probability" => opts.warn_probability = value()?.parse().context("--warn-probability: expected 0..1")?,
            "--warn-lead-ms" => opts.warn_lead = Duration::from_millis(value()?.parse().context("--warn-lead-ms: expected ms")?),
            other => bail!("unknown argument {other:?} (expected --cuts, --seed, --warn-probability, --warn-lead-ms)"),
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
