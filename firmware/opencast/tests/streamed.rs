//! A streamed track upload (`addTrack`, the fallback without the chunked upload service) is not
//! read into memory: measured alone in its own test binary, because peak RSS (`VmHWM`) is per
//! process and the other client tests running in parallel threads would inflate it (that made
//! this check flaky while it shared `tests/double.rs`).

use std::io::Read;

use lectern_opencast::Client;
use lectern_opencast_double::{Config as DoubleConfig, Double};

mod with_double;
use with_double::{config, AGENT};

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
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.mp4");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let mut c = Client::new(&config(&d.url(), "digest"), AGENT);
    let mp = c.create_media_package_with_id("lectern-adhoc-big").unwrap();
    let open = || std::fs::File::open(&path).map(|f| Box::new(f) as Box<dyn Read + Send>);
    let before = vm_hwm_kib();
    let mp = c.add_track_stream(&mp, "presenter/source", "big.mp4", 64 << 20, &open).unwrap();
    let grew = vm_hwm_kib().saturating_sub(before);
    c.ingest_media_package(&mp, None, "lectern-adhoc-big", &[]).unwrap();
    eprintln!("64 MiB upload: peak RSS grew by {grew} KiB");
    assert!(grew < 16 << 10, "peak RSS grew by {grew} KiB for a 64 MiB track");
    let s = d.snapshot();
    assert_eq!(s.ingested().next().unwrap().tracks[0].bytes, 64 << 20);
}
