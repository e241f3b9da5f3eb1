//! The track upload is streamed: measured alone in its own test binary, because peak RSS
//! (`VmHWM`) is per process and the other client tests running in parallel threads would inflate
//! it (that made this check flaky while it shared `tests/double.rs`).

use chrono::{TimeZone, Utc};
use lectern_opencast::{Client, Track};
use lectern_opencast_double::{Config as DoubleConfig, Double, Event};

mod with_double;
use with_double::{config, job_for, AGENT};

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The track is streamed: uploading 64 MiB raises the process's peak RSS (client and double
/// together) by far less than the file's size.
#[test]
fn a_track_upload_is_streamed_not_read_into_memory() {
    let d = Double::start(DoubleConfig::digest("agent", "secret")).unwrap();
    let start = Utc.timestamp_millis_opt(1_800_000_000_000).unwrap();
    let ev = Event::new("ev-big", AGENT, start, start + chrono::Duration::minutes(60), "ev-big");
    d.set_events(vec![ev.clone()]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.ts");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let mut c = Client::new(&config(&d.url(), "digest"), AGENT);
    c.endpoints().unwrap();
    let before = vm_hwm_kib();
    c.ingest(&job_for(&ev, Track { path, flavor: "presenter/source".into() })).unwrap();
    let grew = vm_hwm_kib().saturating_sub(before);
    eprintln!("64 MiB upload: peak RSS grew by {grew} KiB");
    assert!(grew < 16 << 10, "peak RSS grew by {grew} KiB for a 64 MiB track");
    let s = d.snapshot();
    assert_eq!(s.ingested().next().unwrap().tracks[0].bytes, 64 << 20);
}
