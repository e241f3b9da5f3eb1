//! `crash-states`: every crash state of the journal's commit protocol under dm-log-writes
//! (see `lectern_logwrites`). Prints the number of crash states, how many were checked, the
//! failures and the wall time; exits 1 if any state failed, 2 if the run itself could not be
//! done.
//!
//! Usage: `crash-states [--fault skip-dir-fsync|row-before-data-fsync] [--keep DIR] [--cache DIR]`
//! (as root; `cargo run --release -p lectern-logwrites --bin crash-states -- ...`). `--keep DIR`
//! leaves the images, the write log and the guest console there; `--replay DIR` checks such a kept
//! run again without booting the guest (the fault it ran with is not recorded, so it prints none).
//! `--reorder N` adds the reorder variant: per flush interval, N states in which a random subset
//! (seeded by `--seed`, default 1) of the interval's writes reached the disk.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

fn main() {
    match main_inner() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("crash-states: {e:#}");
            std::process::exit(2);
        }
    }
}

fn main_inner() -> Result<bool> {
    let exe = std::env::current_exe().context("locate the crash-states executable")?;
    let mut opts = lectern_logwrites::Options::new(exe.with_file_name("logwrites-workload"));
    opts.reorder.seed = 1;
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--fault" => opts.fault = Some(value()?),
            "--keep" => opts.keep = Some(PathBuf::from(value()?)),
            "--cache" => opts.cache = PathBuf::from(value()?),
            "--workload" => opts.workload = PathBuf::from(value()?),
            "--replay" => replay = Some(PathBuf::from(value()?)),
            "--reorder" => opts.reorder.per_interval = value()?.parse().context("--reorder takes a count of states per flush interval")?,
            "--seed" => opts.reorder.seed = value()?.parse().context("--seed takes an unsigned integer")?,
            other => bail!("unknown argument {other:?}; usage: crash-states [--fault skip-dir-fsync|row-before-data-fsync] [--keep DIR] [--cache DIR] [--workload PATH] [--replay KEPT_DIR] [--reorder N [--seed S]]"),
        }
    }
    if let Some(why) = lectern_logwrites::missing_prerequisite() {
        bail!("cannot run: {why}");
    }
    if let Some(dir) = replay {
        let report = lectern_logwrites::replay(&dir, opts.reorder)?;
        print!("{}", report.summary(None));
        return Ok(report.failures.is_empty());
    }
    if !opts.workload.is_file() {
        bail!("{} not found: build it with `cargo build --release -p lectern-logwrites --bins`", opts.workload.display());
    }
    let report = lectern_logwrites::run(&opts)?;
    print!("{}", report.summary(opts.fault.as_deref()));
    Ok(report.failures.is_empty())
}
