//! The storage-full guard end to end: the real daemon records onto a small tmpfs standing in for
//! an SD card that fills up. A filler file sets the free space precisely, so the card crosses
//! the journal's reserve (`journal.min_free_mb`) a few segments into a recording. The part must
//! end by itself on a segment boundary with every committed segment intact, the box must say so
//! (status, error LED, the loss alarms while nothing is captured), the retries must be refused
//! without leaving empty parts behind, and once the filler is deleted the recording resumes by
//! itself; stopped, it is stitched at once (it will never resume), and a new one can start.
//!
//! Needs root for `mount -t tmpfs`; without it the test says so loudly and skips.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lectern_control::Request;
use lectern_hil_tests::{segments, sha256_file, wait_until, Daemon, SMALL};

const MB: u64 = 1024 * 1024;
/// The reserve under test. Set it to 0 to watch the daemon without the guard (see the report in
/// the commit that added this test: the card runs to ENOSPC instead).
const RESERVE_MB: u64 = 8;
/// How far above the reserve the filler leaves the card: a few 2 s segments at 4 Mbit/s.
const HEADROOM_MB: u64 = 3;

/// Unmounts the tmpfs however the test ends. Lazy (`-l`), because it runs while the daemon may
/// still hold files open on it (it is dropped before the `Daemon`).
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `path` (`stat -f`: free
/// blocks for non-root × block size, the same figure as the journal's statvfs reading).
fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(path).output().expect("stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().expect("stat -f number"));
    it.next().unwrap() * it.next().unwrap()
}

fn part_rows(d: &Daemon, id: &str) -> Vec<(i64, String, Option<String>)> {
    let db = d.db().unwrap();
    let mut st = db.prepare("SELECT seq, state, end_reason FROM parts WHERE recording_id = ?1 ORDER BY seq").unwrap();
    st.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

fn recording_row(d: &Daemon, id: &str) -> (String, Option<String>) {
    d.db().unwrap().query_row("SELECT state, end_reason FROM recordings WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
}

fn committed_in_part(d: &Daemon, id: &str, part: i64) -> usize {
    segments(&d.db().unwrap(), &d.media(), id).unwrap().iter().filter(|s| s.part_seq == part && s.state == "committed").count()
}

#[test]
fn a_full_card_ends_the_part_cleanly_and_recording_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir_all(&media).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&media).status();
    if !mounted.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: cannot mount a tmpfs on {} (needs root): {mounted:?}", media.display());
        return;
    }
    let extra = format!(
        "{SMALL}[capture]\nvideo_bitrate_kbps = 4000\nvideo_pattern = \"smpte\"\nretry_initial_s = 1\nretry_max_s = 2\n\
         [journal]\nmin_free_mb = {RESERVE_MB}\n"
    );
    let d = Daemon::start_in(dir, &extra).unwrap();
    // Declared after the daemon so it drops first: the card is gone before the tempdir is removed.
    let _mount = Mount(media.clone());

    // The database exists now; the filler leaves exactly HEADROOM_MB above the reserve.
    let filler = media.join("filler.bin");
    let fill = free_bytes(&media).saturating_sub((RESERVE_MB + HEADROOM_MB) * MB);
    std::fs::write(&filler, vec![0x5a; fill as usize]).unwrap();
    let free_at_start = free_bytes(&media);
    assert!(free_at_start > RESERVE_MB * MB, "filler left {free_at_start} bytes");

    let started = std::time::Instant::now();
    let id = d.ctl(Request::RecordStart { title: Some("Full card".into()) }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    let mut status = d.status();
    wait_until("the storage-full error in status", Duration::from_secs(60), || {
        status = d.status();
        status["recording"]["last_error"].as_str().is_some_and(|e| e.contains("storage full"))
    })
    .unwrap_or_else(|e| panic!("{e}; status {status:#}\nfree {} bytes\nlog:\n{}", free_bytes(&media), d.log_text()));
    let full_after = started.elapsed();
    let err = status["recording"]["last_error"].as_str().unwrap().to_owned();
    assert!(err.contains(&media.display().to_string()) && err.contains("reserve"), "{err}");
    assert_eq!(status["led"], "error", "{status:#}");
    assert_eq!(status["storage"]["reserve_mb"], RESERVE_MB, "{status:#}");
    assert_eq!(status["storage"]["full"], true, "{status:#}");
    assert_ne!(status["state"], "recording", "{status:#}");

    // Part 1 ended by itself on a segment boundary: every segment committed and intact, none
    // open, nothing written into the reserve.
    wait_until("part 1 closed", Duration::from_secs(15), || part_rows(&d, &id).first().is_some_and(|p| p.1 != "open")).unwrap();
    let parts = part_rows(&d, &id);
    assert_eq!(parts[0].1, "failed", "{parts:?}");
    assert!(parts[0].2.as_deref().is_some_and(|r| r.contains("storage full")), "{parts:?}");
    let segs = segments(&d.db().unwrap(), &d.media(), &id).unwrap();
    assert!(!segs.is_empty(), "the part committed nothing before the card filled");
    for s in &segs {
        assert_eq!(s.state, "committed", "{}", s.path.display());
        assert_eq!(std::fs::metadata(&s.path).unwrap().len() as i64, s.bytes, "{}", s.path.display());
        assert_eq!(sha256_file(&s.path).unwrap(), s.sha256, "{}", s.path.display());
    }
    let free_after = free_bytes(&media);
    assert!(free_after > RESERVE_MB * MB / 2, "the journal wrote deep into the reserve: {free_after} bytes free");
    let ok: String = d.db().unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");

    // Retries keep being refused at the open: no empty parts pile up, and logging stays bounded.
    std::thread::sleep(Duration::from_secs(5));
    // Nothing is captured meanwhile, and the failed part's signal monitor, still ticked, says so
    // (as for an unplugged camera: the systemd guest). Regression: the alarms went quiet.
    let status = d.status();
    let alarms: Vec<&str> = status["signals"]["alarms"].as_array().unwrap().iter().filter_map(|a| a["alarm"].as_str()).collect();
    assert!(alarms.contains(&"no_video") && alarms.contains(&"no_audio"), "{status:#}");
    assert_eq!(part_rows(&d, &id).len(), 1, "a refused retry left a part behind: {:?}", part_rows(&d, &id));
    let log = d.log_text();
    let lines = log.lines().filter(|l| l.contains("storage full")).count();
    assert!((1..=12).contains(&lines), "{lines} storage-full log lines in ~5 s:\n{log}");

    eprintln!(
        "storage full after {full_after:.1?}: {} segments ({} bytes) committed; free {} -> {} bytes (reserve {} bytes); {lines} storage-full log lines in ~5 s of retries",
        segs.len(),
        segs.iter().map(|s| s.bytes).sum::<i64>(),
        free_at_start,
        free_after,
        RESERVE_MB * MB,
    );

    // The operator frees space: the recording resumes by itself as a new part.
    std::fs::remove_file(&filler).unwrap();
    wait_until("the recording resumed as part 2", Duration::from_secs(30), || committed_in_part(&d, &id, 2) >= 1)
        .unwrap_or_else(|e| panic!("{e}; status {:#}\nlog:\n{}", d.status(), d.log_text()));
    assert_eq!(d.status()["storage"]["full"], false);

    // Stopped, it ends interrupted (it has media, and a part failed), never completed.
    d.ctl(Request::RecordStop).unwrap();
    wait_until("the recording ended", Duration::from_secs(15), || recording_row(&d, &id).0 != "recording").unwrap();
    let (state, reason) = recording_row(&d, &id);
    assert_eq!(state, "interrupted", "{reason:?}");
    assert!(reason.as_deref().is_some_and(|r| r.contains("storage full")), "{reason:?}");
    // Ended by a capture failure, it never resumes, so it is final at once and stitched while the
    // box is idle. Regression: it waited out recorder.resume_adhoc_window_minutes (30) first, as
    // if a start-up could resume it (only crash, shutdown and power ends do).
    let stitched = || d.db().unwrap().query_row("SELECT state FROM stitches WHERE recording_id = ?1", [&id], |r| r.get::<_, String>(0)).ok();
    wait_until("the interrupted recording stitched", Duration::from_secs(30), || stitched().as_deref() == Some("done"))
        .unwrap_or_else(|e| panic!("{e}; stitch {:?}\nlog:\n{}", stitched(), d.log_text()));

    // The daemon did not crash, and a new recording starts and commits media.
    let next = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("a new recording's first segment", Duration::from_secs(30), || committed_in_part(&d, &next, 1) >= 1).unwrap();
    d.ctl(Request::RecordStop).unwrap();
    wait_until("the new recording completed", Duration::from_secs(15), || recording_row(&d, &next).0 == "completed").unwrap();
    let ok: String = d.db().unwrap().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(ok, "ok");
}
