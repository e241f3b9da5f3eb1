//! Tracks are streamed to disk: uploading 128 MiB must not grow the double's memory by more than
//! a few buffers. Alone in its test binary, so that no other test's allocations blur the
//! process's high-water mark.

mod common;

use common::curl;
use lectern_opencast_double::{Config, Double};

/// The process's peak resident set (VmHWM), in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_128_mib_track_costs_no_more_than_a_few_buffers() {
    const SIZE: u64 = 128 << 20;
    let d = Double::start(Config::basic("agent", "pw")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let track = dir.path().join("big.ts");
    // Sparse: reads as zeros without costing the disk anything on the sending side.
    std::fs::File::create(&track).unwrap().set_len(SIZE).unwrap();
    let mp = curl(&["-u", "agent:pw"], &format!("{}/ingest/createMediaPackage", d.url())).text();
    let before = vm_hwm_kib();
    let (mp_field, file_field) = (format!("mediaPackage={mp}"), format!("BODY=@{}", track.display()));
    let r = curl(&["-u", "agent:pw", "--form-string", &mp_field, "--form-string", "flavor=presenter/source", "-F", &file_field], &format!("{}/ingest/addTrack", d.url()));
    assert_eq!(r.status, 200, "{} {}", r.text(), r.stderr);
    let grown = vm_hwm_kib().saturating_sub(before);
    let s = d.snapshot();
    let t = &s.mediapackages[0].tracks[0];
    assert_eq!(t.bytes, SIZE);
    assert_eq!(std::fs::metadata(&t.path).unwrap().len(), SIZE);
    eprintln!("peak RSS grew by {grown} KiB for a {} MiB upload", SIZE >> 20);
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB while receiving {} MiB", SIZE >> 20);
}
