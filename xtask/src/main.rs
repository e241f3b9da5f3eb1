//! `cargo xtask`: developer commands that are not part of the firmware (the alias lives in
//! .cargo/config.toml). This file only dispatches; each command has its own module.
//!
//! - `bench-record`: the recording benchmark of issue 2 against the pyca + ffmpeg anchor
//!   (bench_record.rs, anchor.rs; results in docs/benchmarks.md).
//! - `bench-stitch`: the stitching benchmark of issue 4 against `ffmpeg -f concat -c copy`
//!   (bench_stitch.rs; results in docs/benchmarks.md).
//! - `bench-kill`: what survives a kill or a power cut, Lectern against pyca 4.4's default and
//!   Raspberry Pi capture commands (issue 4; bench_kill.rs; results in docs/benchmarks.md).
//! - `bench-upload`: uploads over a flaky link to the Opencast double and moto's S3 server, pyca
//!   4.4 beside them, and the end of a lecture to the acknowledged ingest (issue 9;
//!   bench_upload.rs; results in docs/benchmarks.md).

mod anchor;
mod bench_kill;
mod bench_record;
mod bench_stitch;
mod bench_upload;
mod child;
mod procfs;

use std::path::{Path, PathBuf};

const USAGE: &str = "usage: cargo xtask bench-record [--minutes N] [--out DIR] [--no-anchor] [--interval SECONDS] [--pattern P] [--preview]
       cargo xtask bench-stitch [--minutes N] [--out DIR] [--clip-seconds S]
       cargo xtask bench-kill [--seconds 20] [--trials N] [--out DIR]
       cargo xtask bench-upload [--size 1GiB] [--cut-every 16MiB] [--rate 12.5MB] [--seed N] [--minutes 60]
                                [--lecture-rate RATE] [--legs opencast,s3,pyca,lecture] [--pyca-cap DUR] [--out DIR]

  bench-record   record N minutes (default 10) of 720p30 x264 veryfast 4000 kbit/s with the release
                 lecternd on the sim board and, unless --no-anchor, pyca 4.4 + ffmpeg side by side;
                 prints a markdown table (also OUT/report.md; samples in OUT/samples.csv).
                 OUT defaults to target/bench-record; PSS is sampled every --interval s (default 5);
                 Lectern's sim camera shows videotestsrc pattern P (default smpte, see bench_record.rs);
                 --preview keeps the confidence preview open (`lectern preview` every 5 s).

  bench-stitch   build a synthetic N-minute recording (default 60) in 3 parts of 2 s segments from a
                 repeated S-second clip (default 60) of 720p30 4000 kbit/s, then time the release
                 stitcher against ffmpeg -f concat -c copy (with and without +faststart), twice each;
                 prints a markdown table (also OUT/report.md). OUT defaults to target/bench-stitch and
                 caches the clip and segments.

  bench-kill     record with the release lecternd (720p30 x264 4000 kbit/s, sim board) and, at the
                 same time, pyca 4.4 with its default and its Raspberry Pi capture commands; kill
                 each S seconds (default 20) into its capture: SIGKILL of the process group, then
                 SIGKILL + power cut on cutfs, then (Lectern) cut after the GPIO warning; measure
                 the decodable media left. N trials (default 1); prints a markdown table (also
                 OUT/report.md). OUT defaults to target/bench-kill (pyca venv, camera streams).

  bench-upload   a SIZE file of random bytes uploaded by the real upload runner (release upload-bench)
                 to the Opencast double and to moto's S3 server through the release faultproxy
                 (--throttle-up RATE), on a clean link and with a cut every CUT bytes; pyca 4.4 with
                 a file of the same size through the same link (flaky, then clean); and an N-minute
                 lecture stitched and uploaded to the acknowledged ingest over a link of
                 --lecture-rate (default: the stitched size / 45 s). Prints a markdown table (also
                 OUT/report.md, every number in OUT/results.json, logs under OUT/runs). OUT defaults
                 to <target dir>/bench-upload (the random file, the pyca venv, the stitch inputs).";

fn main() -> anyhow::Result<()> {
    // xtask/ sits directly in the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench-record") => {
            bench_record::run(bench_record::Options::parse(&args[1..], &root)?, &root)
        }
        Some("bench-stitch") => {
            bench_stitch::run(bench_stitch::Options::parse(&args[1..], &root)?, &root)
        }
        Some("bench-kill") => {
            bench_kill::run(bench_kill::Options::parse(&args[1..], &root)?, &root)
        }
        Some("bench-upload") => {
            bench_upload::run(bench_upload::Options::parse(&args[1..], &root)?, &root)
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}

/// The Cargo target directory: `$CARGO_TARGET_DIR` or `target/` in the workspace. The benchmarks
/// run the binaries they just built from here, not from `target/` whatever the build used.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => root.join(d),
        None => root.join("target"),
    }
}

/// `cargo build --release ARGS` in the workspace root (the cargo that runs xtask, if known),
/// announced on stderr; an error if the build fails. The benchmarks build only what they run.
pub(crate) fn cargo_build_release(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("xtask: cargo build --release {}", args.join(" "));
    let st = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release"])
        .args(args)
        .current_dir(root)
        .status()?;
    anyhow::ensure!(st.success(), "cargo build --release {} failed", args.join(" "));
    Ok(())
}
