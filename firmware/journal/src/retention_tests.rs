//! Tests of the retention policy (`retention.rs`): which recordings are evicted and why (one
//! table of cases through [`check`]), what an eviction deletes and keeps, the summaries of an
//! evicted recording, idempotence, evictions cut short at each step and finished by the next run
//! or by recovery, and an ignored bench that evicts a lecture hour of segments. Free space comes
//! from a simulated card: a capacity minus the bytes under `recordings/`, so deleting files frees
//! space exactly as on a real volume. Time is injected; stitched files are faked bytes.

use std::cell::Cell;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::*;
use crate::retention::{self, EvictReason::*};
use crate::tests::{feed, key_every, stream, Psi, T0_MS};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Size of the fake stitched file: with ~58 KB of segments, a recording frees ~258 KB.
const MP4_BYTES: usize = 200_000;

thread_local! {
    /// The simulated card's capacity; each test drives it on its own thread.
    static CAPACITY: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Bytes of all files under `path` (0 if it does not exist).
fn du(path: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(path) else { return 0 };
    entries
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { du(&e.path()) } else { e.metadata().unwrap().len() })
        .sum()
}

/// The simulated card: what `recordings/` does not use of the capacity. The database is left
/// out so its WAL growing does not move the numbers.
fn sim_free(media_dir: &Path) -> std::io::Result<Option<u64>> {
    Ok(Some(CAPACITY.with(Cell::get).saturating_sub(du(&media_dir.join(RECORDINGS_DIR)))))
}

fn options() -> JournalOptions {
    JournalOptions { free_space: FreeSpace(sim_free), ..JournalOptions::default() }
}

fn new_journal() -> (tempfile::TempDir, Journal) {
    CAPACITY.with(|c| c.set(u64::MAX));
    let dir = tempfile::tempdir().unwrap();
    let (journal, report) = Journal::open(dir.path(), options(), T0_MS).unwrap();
    assert!(report.is_empty(), "{report}");
    (dir, journal)
}

fn reopen(dir: &Path, now_ms: i64) -> (Journal, RecoveryReport) {
    Journal::open(dir, options(), now_ms).unwrap()
}

/// Where a test recording's upload stands.
#[derive(Clone, Copy, Debug)]
enum Up {
    NoJob,
    Queued,
    Active,
    Parked,
    /// Confirmed this long after T0.
    Done(i64),
}

/// Where a test recording itself stands.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rec {
    /// Completed and stitched (at its start + 30 s).
    Stitched,
    /// Completed, stitch pending.
    StitchPending,
    /// Interrupted and not declared final: it may still be resumed.
    NotFinal,
    /// Still recording, its part open.
    Recording,
}

struct R {
    id: &'static str,
    /// Start, this long after T0; the eviction order under pressure.
    start: i64,
    rec: Rec,
    up: Up,
}

/// Records 4 s (two segments) and brings the recording and its upload into the given states.
fn make(journal: &mut Journal, r: &R) {
    let t = T0_MS + r.start;
    let new = NewRecording { id: r.id.into(), title: format!("Lecture {}", r.id), kind: RecordingKind::Adhoc, event_uid: None };
    journal.start_recording(&new, t).unwrap();
    let mut w = journal.open_part(r.id, "x264enc", t).unwrap();
    feed(&mut w, &stream(0, 4000, Psi::Stamped, key_every(1000)), Instant::now());
    if r.rec == Rec::Recording {
        // The writer goes, the part stays open in the index: as the daemon sees it mid-lecture.
        drop(w);
    } else {
        w.finish(PartEnd::Closed, t + 4_000).unwrap();
        let outcome = if r.rec == Rec::NotFinal { Outcome::Interrupted("power".into()) } else { Outcome::Completed };
        journal.finish_recording(r.id, outcome, t + 4_000).unwrap();
    }
    if matches!(r.rec, Rec::Stitched | Rec::StitchPending) {
        journal.request_stitch(r.id, t + 5_000).unwrap();
    }
    if r.rec == Rec::Stitched {
        stitch(journal, r.id, t + 30_000);
    }
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    if !matches!(r.up, Up::NoJob) {
        let job = NewUpload { recording_id: r.id, target: "s3", spec: "{}", bytes_total: MP4_BYTES as u64, not_before_ms: t };
        s.create(&job, t + 31_000).unwrap();
    }
    match r.up {
        Up::NoJob | Up::Queued => {}
        Up::Active => assert!(s.save_progress(r.id, "http://s3", "{}", 1, 1, t + 32_000).unwrap()),
        Up::Parked => s.park(r.id, "HTTP 403").unwrap(),
        Up::Done(at) => assert!(s.complete(r.id, "http://s3", "{}", "etag", 1, T0_MS + at).unwrap()),
    }
}

fn stitch(journal: &mut Journal, id: &str, at_ms: i64) {
    let mut job = journal.stitch_job(id, at_ms).unwrap();
    job.file().write_all(&vec![0x5a; MP4_BYTES]).unwrap();
    let info = StitchedInfo {
        bytes: MP4_BYTES as u64,
        sha256: "ab".repeat(32),
        duration_ns: 4_000_000_000,
        video_frames: 100,
        audio_frames: 0,
        part_spans_ns: vec![(1, 0, 4_000_000_000)],
    };
    job.commit(&info, json!({"agent": "room-101"}), at_ms).unwrap();
}

/// Bytes one eviction of a [`make`] recording frees: its segments and its stitched file.
fn freed_per_recording(journal: &Journal, id: &str) -> u64 {
    journal.recording(id).unwrap().unwrap().bytes + MP4_BYTES as u64
}

/// Makes `recs`, sets the card so `free` recordings' worth of space is free (`None`: plenty),
/// runs the policy with a one-day window and a low water mark of `low_water` recordings'
/// worth at `now`, and compares what was evicted, in order, and whether space stayed low.
fn check(recs: &[R], now: i64, space: Option<(f64, f64)>, expect: &[(&str, EvictReason)], expect_still_low: bool) {
    let (dir, mut journal) = new_journal();
    for r in recs {
        make(&mut journal, r);
    }
    let unit = freed_per_recording(&journal, recs[0].id) as f64;
    let low_water_bytes = match space {
        None => 0,
        Some((free, low_water)) => {
            CAPACITY.with(|c| c.set(du(&dir.path().join(RECORDINGS_DIR)) + (free * unit) as u64));
            (low_water * unit) as u64
        }
    };
    let policy = RetentionPolicy { window_ms: DAY, low_water_bytes };
    let report = journal.enforce_retention(policy, T0_MS + now).unwrap();
    let got: Vec<(&str, EvictReason)> = report.evicted.iter().map(|e| (e.recording_id.as_str(), e.why)).collect();
    assert_eq!(got, expect);
    assert_eq!(report.still_low, expect_still_low, "{report:?}");
    for r in recs {
        let evicted = expect.iter().any(|(id, _)| *id == r.id);
        let rec = journal.recording(r.id).unwrap().unwrap();
        assert_eq!(rec.evicted_at_ms.is_some(), evicted, "{}", r.id);
        assert_eq!(dir.path().join(RECORDINGS_DIR).join(r.id).join("part-0001").exists(), !evicted, "{}", r.id);
        assert_eq!(journal.segments(r.id).unwrap().is_empty(), evicted, "{}", r.id);
    }
    // Whatever was evicted, a second run in the same conditions has nothing left to do.
    let again = journal.enforce_retention(policy, T0_MS + now).unwrap();
    assert!(again.evicted.is_empty(), "{again:?}");
}

fn done(id: &'static str, start: i64, uploaded: i64) -> R {
    R { id, start, rec: Rec::Stitched, up: Up::Done(uploaded) }
}

#[test]
fn the_window_counts_from_the_upload_confirmation() {
    let recs = [done("a", 0, HOUR)];
    check(&recs, HOUR + DAY - 1, None, &[], false);
    check(&recs, HOUR + DAY, None, &[("a", RetentionWindow)], false);
    check(&recs, 30 * DAY, None, &[("a", RetentionWindow)], false);
}

#[test]
fn only_passed_windows_are_evicted_when_space_is_plenty() {
    let recs = [done("a", 0, 2 * HOUR), done("b", HOUR, DAY), done("c", 2 * HOUR, 3 * HOUR)];
    check(&recs, DAY + 3 * HOUR, Some((10.0, 2.0)), &[("a", RetentionWindow), ("c", RetentionWindow)], false);
}

#[test]
fn nothing_un_uploaded_is_evicted_however_full_the_card() {
    let recs = [
        R { id: "nojob", start: 0, rec: Rec::Stitched, up: Up::NoJob },
        R { id: "queued", start: HOUR, rec: Rec::Stitched, up: Up::Queued },
        R { id: "active", start: 2 * HOUR, rec: Rec::Stitched, up: Up::Active },
        R { id: "parked", start: 3 * HOUR, rec: Rec::Stitched, up: Up::Parked },
    ];
    check(&recs, 365 * DAY, Some((0.0, 100.0)), &[], true);
}

#[test]
fn unfinished_recordings_are_never_evicted_even_with_a_done_upload() {
    // Artificial states (an upload is only ever made of a final, stitched recording), but the
    // rule must not depend on the upload worker being right.
    let recs = [
        R { id: "pending", start: 0, rec: Rec::StitchPending, up: Up::Done(HOUR) },
        R { id: "notfinal", start: HOUR, rec: Rec::NotFinal, up: Up::Done(2 * HOUR) },
        R { id: "live", start: 2 * HOUR, rec: Rec::Recording, up: Up::Done(3 * HOUR) },
        // Uploaded before its (latest) stitch: the target has an older state of it.
        R { id: "stale", start: 3 * HOUR, rec: Rec::Stitched, up: Up::Done(3 * HOUR + 10_000) },
    ];
    check(&recs, 365 * DAY, Some((0.0, 100.0)), &[], true);
}

#[test]
fn under_low_space_the_oldest_uploaded_go_first_until_the_low_water_mark() {
    // Uploaded in the reverse order of recording: the order is by recording start.
    let recs = [done("a", 0, 5 * HOUR), done("b", HOUR, 4 * HOUR), done("c", 2 * HOUR, 3 * HOUR)];
    let now = 6 * HOUR;
    check(&recs, now, Some((0.5, 1.2)), &[("a", StorageLow)], false);
    check(&recs, now, Some((0.5, 2.2)), &[("a", StorageLow), ("b", StorageLow)], false);
    check(&recs, now, Some((0.5, 1.5)), &[("a", StorageLow)], false);
    check(&recs, now, Some((1.2, 1.2)), &[], false);
    check(&recs, now, Some((0.0, 5.0)), &[("a", StorageLow), ("b", StorageLow), ("c", StorageLow)], true);
}

#[test]
fn under_low_space_un_uploaded_recordings_are_skipped_not_counted() {
    let recs = [
        R { id: "old", start: 0, rec: Rec::Stitched, up: Up::Queued },
        done("b", HOUR, 3 * HOUR),
        R { id: "parked", start: 2 * HOUR, rec: Rec::Stitched, up: Up::Parked },
        done("d", 3 * HOUR, 4 * HOUR),
        done("e", 4 * HOUR, 5 * HOUR),
    ];
    check(&recs, 6 * HOUR, Some((0.0, 1.5)), &[("b", StorageLow), ("d", StorageLow)], false);
    // The window pass runs first; pressure then takes the oldest of what is left.
    check(&recs, 3 * HOUR + DAY, Some((0.0, 1.5)), &[("b", RetentionWindow), ("d", StorageLow)], false);
}

#[test]
fn eviction_deletes_segments_and_the_stitched_file_and_keeps_manifest_rows_and_totals() {
    let (dir, mut journal) = new_journal();
    make(&mut journal, &done("lec", 0, HOUR));
    let before = journal.recording("lec").unwrap().unwrap();
    assert_eq!((before.parts, before.segments, before.evicted_at_ms), (1, 2, None));
    let rec_dir = dir.path().join(RECORDINGS_DIR).join("lec");
    // A leftover partial from a stitch that was reopened is the journal's too.
    fs::write(rec_dir.join("stitched.mp4.partial"), b"old").unwrap();
    let seg_bytes = before.bytes;

    let report = journal.enforce_retention(RetentionPolicy { window_ms: DAY, low_water_bytes: 0 }, T0_MS + HOUR + DAY).unwrap();
    let e = &report.evicted[0];
    assert_eq!((e.segments, e.files_removed, e.bytes_freed, e.fsyncs, e.resumed), (2, 4, seg_bytes + MP4_BYTES as u64 + 3, 1, false));

    let mut left: Vec<String> = fs::read_dir(&rec_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["lec.manifest.json"], "only the manifest stays");
    let after = journal.recording("lec").unwrap().unwrap();
    assert_eq!(after.evicted_at_ms, Some(T0_MS + HOUR + DAY));
    assert_eq!(RecordingSummary { evicted_at_ms: None, ..after.clone() }, before, "the totals are those from before");
    assert!(journal.segments("lec").unwrap().is_empty(), "the segment rows are gone");
    assert_eq!(journal.stitch_status("lec").unwrap().unwrap().state, "done", "the stitch row stays");
    assert_eq!(UploadStore::open(&journal.db_path()).unwrap().get("lec").unwrap().unwrap().state, UploadState::Done);
    let v = serde_json::to_value(&after).unwrap();
    assert_eq!((v["segments"].as_u64(), v["evicted_at_ms"].as_i64()), (Some(2), Some(T0_MS + HOUR + DAY)));
    assert!(journal.interrupted_not_final().unwrap().is_empty());

    let log = journal.state_log(1).unwrap();
    assert_eq!((log[0].recording_id.as_deref(), log[0].state.as_str()), (Some("lec"), "evicted"));
    assert!(log[0].detail.starts_with("retention window: 2 segments, 4 files"), "{}", log[0].detail);

    // Recovery finds nothing to repair in an evicted recording, and nothing left to finish.
    drop(journal);
    let (journal, report) = reopen(dir.path(), T0_MS + 2 * DAY);
    assert!(report.is_empty(), "{report}");
    assert_eq!(journal.recordings().unwrap(), [after]);
}

#[test]
fn an_evicted_recording_cannot_be_resumed_or_stitched_again() {
    let (_dir, mut journal) = new_journal();
    make(&mut journal, &R { id: "lec", start: 0, rec: Rec::Stitched, up: Up::NoJob });
    // Interrupted and final: resumable until its media leaves.
    journal.conn().execute("UPDATE recordings SET state = 'interrupted' WHERE id = 'lec'", []).unwrap();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    s.create(&NewUpload { recording_id: "lec", target: "s3", spec: "{}", bytes_total: 1, not_before_ms: 0 }, T0_MS).unwrap();
    s.complete("lec", "http://s3", "{}", "etag", 1, T0_MS + HOUR).unwrap();
    journal.enforce_retention(RetentionPolicy { window_ms: 0, low_water_bytes: 0 }, T0_MS + HOUR).unwrap();
    let new = NewRecording { id: "lec".into(), title: "again".into(), kind: RecordingKind::Adhoc, event_uid: None };
    let err = journal.start_recording(&new, T0_MS + 2 * HOUR).unwrap_err();
    assert!(matches!(err, JournalError::RecordingEnded { .. }), "{err:?}");
    assert!(err.to_string().contains("evicted"), "{err}");
    assert!(!journal.request_stitch("lec", T0_MS + 2 * HOUR).unwrap(), "its stitch row stays done");
}

#[test]
fn a_file_the_journal_did_not_name_keeps_its_part_directory() {
    let (dir, mut journal) = new_journal();
    make(&mut journal, &done("lec", 0, HOUR));
    let part = dir.path().join(RECORDINGS_DIR).join("lec/part-0001");
    fs::write(part.join("notes.txt"), b"operator's").unwrap();
    let report = journal.enforce_retention(RetentionPolicy { window_ms: 0, low_water_bytes: 0 }, T0_MS + HOUR).unwrap();
    assert_eq!((report.evicted[0].files_removed, report.evicted[0].fsyncs), (3, 2));
    let left: Vec<_> = fs::read_dir(&part).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["notes.txt"]);
}

#[test]
fn a_file_budget_evicts_in_slices_that_end_where_one_run_ends() {
    // Two recordings of 2 segments + a stitched file each (3 files), under pressure for both.
    for budget in [1, 2, 3, 4, 5, 6, 100] {
        let (dir, mut journal) = new_journal();
        make(&mut journal, &done("a", 0, HOUR));
        make(&mut journal, &done("b", HOUR, 2 * HOUR));
        let unit = freed_per_recording(&journal, "a");
        CAPACITY.with(|c| c.set(du(&dir.path().join(RECORDINGS_DIR))));
        let policy = RetentionPolicy { window_ms: DAY, low_water_bytes: 2 * unit - 1 };
        let mut evicted = Vec::new();
        let mut calls = 0;
        loop {
            calls += 1;
            let report = journal.enforce_retention_bounded(policy, T0_MS + 3 * HOUR, budget).unwrap();
            assert!(report.evicted.iter().map(|e| e.files_removed as usize).sum::<usize>() <= budget, "budget {budget}: {report:?}");
            evicted.extend(report.evicted.into_iter().map(|e| (e.recording_id, e.why, e.resumed)));
            if !report.unfinished {
                assert!(!report.still_low, "budget {budget}");
                break;
            }
            // Whatever the slice left, the summaries report what was recorded.
            assert!(journal.recordings().unwrap().iter().all(|r| r.segments == 2), "budget {budget}");
        }
        assert_eq!(calls, 6usize.div_ceil(budget).max(1), "budget {budget}");
        let resumed = |id: &str| budget < 3 || (budget < 6 && id == "b" && budget != 3);
        assert_eq!(evicted, [("a".to_string(), StorageLow, resumed("a")), ("b".to_string(), StorageLow, resumed("b"))], "budget {budget}");
        let log: Vec<String> = journal.state_log(10).unwrap().into_iter().filter(|l| l.state == "evicted").map(|l| l.detail).collect();
        assert_eq!(log.len(), 2, "budget {budget}: one line per eviction, however many slices");
        let rows: Vec<(String, i64)> = journal
            .conn()
            .prepare("SELECT recording_id, bytes_freed FROM evictions ORDER BY recording_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, [("a".into(), unit as i64), ("b".into(), unit as i64)], "budget {budget}: the slices add up");
    }
}

/// Where a cut stops an eviction.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// After step 1: the row is in, every file still there.
    AfterDecision,
    /// In step 2: the stitched file and one segment gone, not yet durable.
    MidDelete,
    /// After step 2: every file gone, the segment rows and the unfinished row still there.
    AfterDelete,
}

/// Who finishes it.
#[derive(Clone, Copy, Debug)]
enum Next {
    Enforce,
    Recovery,
}

#[test]
fn an_eviction_cut_short_is_finished_by_the_next_run_or_by_recovery() {
    for cut in [Cut::AfterDecision, Cut::MidDelete, Cut::AfterDelete] {
        for next in [Next::Enforce, Next::Recovery] {
            check_cut(cut, next);
        }
    }
}

fn check_cut(cut: Cut, next: Next) {
    let ctx = format!("{cut:?} then {next:?}");
    let (dir, mut journal) = new_journal();
    make(&mut journal, &done("lec", 0, HOUR));
    make(&mut journal, &R { id: "keep", start: HOUR, rec: Rec::Stitched, up: Up::Parked });
    let before = journal.recording("lec").unwrap().unwrap();
    let segs = journal.segments("lec").unwrap();
    let at = T0_MS + 2 * HOUR;
    retention::begin(&journal.conn, &journal.ctx, "lec", StorageLow, at).unwrap();
    match cut {
        Cut::AfterDecision => {}
        Cut::MidDelete => {
            fs::remove_file(dir.path().join(stitched_rel("lec"))).unwrap();
            fs::remove_file(&segs[0].abs_path).unwrap();
        }
        Cut::AfterDelete => {
            assert!(retention::remove_files(&journal.ctx, "lec", &mut { usize::MAX }).unwrap().complete);
        }
    }
    // Half evicted already counts as evicted, with the totals from before.
    let mid = journal.recording("lec").unwrap().unwrap();
    assert_eq!(RecordingSummary { evicted_at_ms: None, ..mid.clone() }, before, "{ctx}");
    assert_eq!(mid.evicted_at_ms, Some(at), "{ctx}");

    let later = at + HOUR;
    let journal = match next {
        Next::Enforce => {
            // The window is far off and there is no pressure: only the unfinished eviction runs.
            let report = journal.enforce_retention(RetentionPolicy { window_ms: 365 * DAY, low_water_bytes: 0 }, later).unwrap();
            assert_eq!(report.evicted.len(), 1, "{ctx}: {report:?}");
            let e = &report.evicted[0];
            assert_eq!((e.recording_id.as_str(), e.why, e.resumed, e.segments), ("lec", StorageLow, true, 2), "{ctx}");
            journal
        }
        Next::Recovery => {
            drop(journal);
            let (journal, report) = reopen(dir.path(), later);
            let kinds: Vec<&str> = report.actions.iter().map(RecoveryAction::kind).collect();
            assert_eq!(kinds, ["recovery-eviction-finished"], "{ctx}: {report}");
            journal
        }
    };
    let rec_dir = dir.path().join(RECORDINGS_DIR).join("lec");
    let left: Vec<_> = fs::read_dir(&rec_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["lec.manifest.json"], "{ctx}");
    assert!(journal.segments("lec").unwrap().is_empty(), "{ctx}");
    let after = journal.recording("lec").unwrap().unwrap();
    assert_eq!(after, mid, "{ctx}: the summary does not change when the eviction finishes");
    let log = journal.state_log(1).unwrap();
    assert_eq!(log[0].state, "evicted", "{ctx}");
    assert!(log[0].detail.starts_with("storage low: 2 segments") && log[0].detail.ends_with("(continued from an earlier run)"), "{ctx}: {}", log[0].detail);
    // The other recording was not touched, and everything is settled.
    assert_eq!(journal.segments("keep").unwrap().len(), 2, "{ctx}");
    drop(journal);
    let (mut journal, report) = reopen(dir.path(), later + 1);
    assert!(report.is_empty(), "{ctx}: {report}");
    assert!(journal.enforce_retention(RetentionPolicy { window_ms: 0, low_water_bytes: 0 }, later + 2).unwrap().evicted.is_empty(), "{ctx}");
}

/// Evicts one lecture hour of segments (1,800 files) and prints what it cost. Files go to
/// `LECTERN_BENCH_DIR` (default: a temp dir), `LECTERN_BENCH_SEG_BYTES` each (default 1 MiB),
/// plus a stitched file of their total size. Count the real fsyncs by running it under
/// `strace -f -e trace=fsync,fdatasync,newfstatat,statx` and counting those between the
/// `/lectern-bench-evict-begin` and `-end` lookups.
///
/// `cargo test -p lectern-journal --release -- --ignored --nocapture bench_evict`
#[test]
#[ignore = "bench: writes 1,800 files; run by hand"]
fn bench_evict_one_lecture_hour() {
    let seg_bytes: usize = std::env::var("LECTERN_BENCH_SEG_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
    let count: u32 = 1800;
    let base = std::env::var_os("LECTERN_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let (mut journal, _) = Journal::open(dir.path(), JournalOptions::default(), T0_MS).unwrap();
    let new = NewRecording { id: "hour".into(), title: "An hour".into(), kind: RecordingKind::Adhoc, event_uid: None };
    journal.start_recording(&new, T0_MS).unwrap();
    journal.open_part("hour", "x264enc", T0_MS).unwrap().finish(PartEnd::Closed, T0_MS).unwrap();
    // The segments as the writer leaves them, without paying its fsyncs here.
    let part_id: i64 = journal.conn().query_row("SELECT id FROM parts WHERE recording_id = 'hour'", [], |r| r.get(0)).unwrap();
    let data = vec![0x47u8; seg_bytes];
    {
        let tx = journal.conn().unchecked_transaction().unwrap();
        for seq in 1..=count {
            let rel = format!("recordings/hour/part-0001/seg-{seq:06}.ts");
            fs::write(dir.path().join(&rel), &data).unwrap();
            tx.execute(
                "INSERT INTO segments (recording_id, part_id, seq, path, bytes, duration_ns, state, opened_at_ms, committed_at_ms)
                 VALUES ('hour', ?1, ?2, ?3, ?4, 2000000000, 'committed', ?5, ?5)",
                rusqlite::params![part_id, seq, rel, seg_bytes as i64, T0_MS + i64::from(seq) * 2000],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    journal.finish_recording("hour", Outcome::Completed, T0_MS + HOUR).unwrap();
    journal.request_stitch("hour", T0_MS + HOUR).unwrap();
    let mut job = journal.stitch_job("hour", T0_MS + HOUR).unwrap();
    for _ in 0..count {
        job.file().write_all(&data).unwrap();
    }
    let info = StitchedInfo { bytes: u64::from(count) * seg_bytes as u64, sha256: "ab".repeat(32), duration_ns: 3_600_000_000_000, video_frames: 0, audio_frames: 0, part_spans_ns: vec![] };
    job.commit(&info, json!({}), T0_MS + HOUR).unwrap();
    let mut s = UploadStore::open(&journal.db_path()).unwrap();
    s.create(&NewUpload { recording_id: "hour", target: "s3", spec: "{}", bytes_total: 1, not_before_ms: 0 }, T0_MS + HOUR).unwrap();
    s.complete("hour", "http://s3", "{}", "etag", 1, T0_MS + HOUR).unwrap();
    // Everything written back, so the eviction pays for freeing blocks, not for dropping dirty pages.
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };

    // Markers for `strace`: the eviction's syscalls are the ones between the two lookups.
    let _ = fs::metadata("/lectern-bench-evict-begin");
    let t = Instant::now();
    retention::begin(&journal.conn, &journal.ctx, "hour", RetentionWindow, T0_MS + 2 * HOUR).unwrap();
    let decided = t.elapsed();
    let removed = retention::remove_files(&journal.ctx, "hour", &mut { usize::MAX }).unwrap();
    let deleted = t.elapsed();
    let e = retention::mark_done(&journal.conn, &journal.ctx, "hour", RetentionWindow, false, &removed, T0_MS + 2 * HOUR).unwrap();
    let total = t.elapsed();
    let _ = fs::metadata("/lectern-bench-evict-end");
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("evict one lecture hour: {count} segments of {seg_bytes} bytes + stitched file, in {}", dir.path().display());
    println!("| step | ms |");
    println!("|---|---|");
    println!("| 1 decide (insert evictions row, commit) | {:.1} |", ms(decided));
    println!("| 2 unlink {} files, rmdir, dir fsyncs ({}) | {:.1} |", e.files_removed, e.fsyncs, ms(deleted - decided));
    println!("| 3 delete {} segment rows + done + state_log (one commit) | {:.1} |", e.segments, ms(total - deleted));
    println!("| total ({:.0} MB freed) | {:.1} |", e.bytes_freed as f64 / 1e6, ms(total));
    assert_eq!(e.files_removed, count + 1);
}
