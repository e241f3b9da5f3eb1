//! `stitch OUT.mp4 PART.list [PART.list ...]`: stitches the parts listed
//! (one file per part, one segment path per line; a line `#torn` marks a part
//! whose tail may be torn) into OUT.mp4 and prints the report as JSON.
//! `cargo xtask bench-stitch` times this, built in release mode.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lectern_stitch::{stitch, Part};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: stitch OUT.mp4 PART.list [PART.list ...]");
    }
    let mut parts = Vec::new();
    for list in &args[1..] {
        let text = std::fs::read_to_string(list).with_context(|| list.clone())?;
        let mut part = Part {
            segments: Vec::new(),
            may_be_torn: false,
        };
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line {
                "#torn" => part.may_be_torn = true,
                path => part.segments.push(PathBuf::from(path)),
            }
        }
        parts.push(part);
    }
    let started = Instant::now();
    let file = std::fs::File::create(&args[0]).with_context(|| args[0].clone())?;
    let r = stitch(&parts, file)?;
    let parts: Vec<_> = r
        .parts
        .iter()
        .map(|p| {
            serde_json::json!({
                "start_ns": p.start_ns, "end_ns": p.end_ns,
                "input_start_ns": p.input_start_ns, "input_end_ns": p.input_end_ns,
                "video_samples": p.video_samples, "audio_samples": p.audio_samples,
                "dropped_tail_units": p.dropped_tail_units,
                "dropped_damaged_units": p.dropped_damaged_units,
            })
        })
        .collect();
    let report = serde_json::json!({
        "wall_s": started.elapsed().as_secs_f64(),
        "parts": parts,
        "video_samples": r.video_samples,
        "audio_samples": r.audio_samples,
        "duration_ns": r.duration_ns,
        "bytes_written": r.bytes_written,
        "sha256": r.sha256,
    });
    println!("{report}");
    Ok(())
}
