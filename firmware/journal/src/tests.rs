//! Tests of the journal: segment cutting, the commit protocol's on-disk
//! results, crash recovery and its idempotence, lifecycle rules, and the
//! pure helpers (TS scanning, level aggregation, id validation). Streams are
//! synthesised as valid-looking MPEG-TS (188-byte packets, PAT/PMT before
//! keyframes, PES headers carrying a 90 kHz PTS with a muxer-style offset) so
//! recovery's parser is exercised on realistic input. Time is injected: no
//! test sleeps.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------
// Stream synthesis
// ---------------------------------------------------------------------------

/// mpegtsmux-like offset between pipeline time and TS PTS, so tests notice
/// if the two time bases get mixed up.
const TS_PTS_OFFSET_90K: u64 = 3600 * 90_000;
const VIDEO_PID: u16 = 0x100;
const FRAME_MS: u64 = 40;
const MS: u64 = 1_000_000;

fn ts_header(pid: u16, pusi: bool) -> [u8; 4] {
    [
        TS_SYNC_BYTE,
        (u8::from(pusi) << 6) | ((pid >> 8) as u8 & 0x1f),
        pid as u8,
        0x10,
    ]
}

/// One packet; with `pts_90k` it starts a PES packet carrying that PTS.
fn pes_packet(pid: u16, pts_90k: Option<u64>) -> Vec<u8> {
    let mut p = ts_header(pid, pts_90k.is_some()).to_vec();
    if let Some(pts) = pts_90k {
        p.extend_from_slice(&[0x00, 0x00, 0x01, 0xE0, 0x00, 0x00, 0x80, 0x80, 0x05]);
        p.extend_from_slice(&encode_pts(pts));
    }
    p.resize(TS_PACKET_LEN, 0xAB);
    p
}

/// PAT + PMT, as mpegtsmux emits before each keyframe. Their payload starts
/// with a pointer field, which the PTS parser must not mistake for PES.
fn psi_chunk() -> Vec<u8> {
    let mut pat = ts_header(0x0000, true).to_vec();
    pat.extend_from_slice(&[
        0x00, 0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00,
    ]);
    pat.resize(TS_PACKET_LEN, 0xFF);
    let mut pmt = ts_header(0x1000, true).to_vec();
    pmt.extend_from_slice(&[
        0x00, 0x02, 0xB0, 0x12, 0x00, 0x01, 0xC1, 0x00, 0x00, 0xE1, 0x00,
    ]);
    pmt.resize(TS_PACKET_LEN, 0xFF);
    [pat, pmt].concat()
}

/// One video frame: a PES start packet plus two continuation packets.
fn frame_chunk(pts_ns: u64) -> Vec<u8> {
    let pts_90k = pts_ns * 9 / 100_000 + TS_PTS_OFFSET_90K;
    [
        pes_packet(VIDEO_PID, Some(pts_90k)),
        pes_packet(VIDEO_PID, None),
        pes_packet(VIDEO_PID, None),
    ]
    .concat()
}

/// How the keyframe's PAT/PMT chunk is stamped.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Psi {
    /// Carries the keyframe's PTS (what mpegtsmux does).
    Stamped,
    /// Carries no PTS.
    Unstamped,
}

/// One chunk handed to the writer.
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    pts_ns: Option<u64>,
    keyframe: bool,
}

/// A 25 fps stream of `total_ms`, keyframes where `is_key(pts_ms)`.
pub(crate) fn stream(start_ms: u64, total_ms: u64, psi: Psi, is_key: impl Fn(u64) -> bool) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut pts_ms = start_ms;
    while pts_ms < start_ms + total_ms {
        let key = is_key(pts_ms);
        if key {
            let pts_ns = (psi == Psi::Stamped).then_some(pts_ms * MS);
            chunks.push(Chunk {
                bytes: psi_chunk(),
                pts_ns,
                keyframe: true,
            });
        }
        chunks.push(Chunk {
            bytes: frame_chunk(pts_ms * MS),
            pts_ns: Some(pts_ms * MS),
            keyframe: key,
        });
        pts_ms += FRAME_MS;
    }
    chunks
}

pub(crate) fn key_every(period_ms: u64) -> impl Fn(u64) -> bool {
    move |pts_ms| pts_ms.is_multiple_of(period_ms)
}

/// Pushes chunks with the injected clock following media time.
pub(crate) fn feed(w: &mut PartWriter, chunks: &[Chunk], t0: Instant) -> Vec<CommittedSegment> {
    let mut committed = Vec::new();
    for c in chunks {
        let at_ms = c.pts_ns.unwrap_or(0) / MS;
        let now = t0 + Duration::from_millis(at_ms);
        if let Some(seg) = w
            .push_data(&c.bytes, c.pts_ns, c.keyframe, now, T0_MS + at_ms as i64)
            .unwrap()
        {
            committed.push(seg);
        }
    }
    committed
}

// ---------------------------------------------------------------------------
// Journal fixtures
// ---------------------------------------------------------------------------

pub(crate) const T0_MS: i64 = 1_700_000_000_000;

/// The timing scripts of the sync tests below are written for a 950 ms interval, whatever the
/// default is.
fn test_options() -> JournalOptions {
    JournalOptions { fsync_interval: Duration::from_millis(950), ..JournalOptions::default() }
}

pub(crate) fn new_journal() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let (journal, report) = Journal::open(dir.path(), test_options(), T0_MS).unwrap();
    assert!(
        report.is_empty(),
        "fresh media dir needs no recovery: {report}"
    );
    (dir, journal)
}

pub(crate) fn reopen(dir: &Path, now_ms: i64) -> (Journal, RecoveryReport) {
    Journal::open(dir, JournalOptions::default(), now_ms).unwrap()
}

fn adhoc(id: &str) -> NewRecording {
    NewRecording {
        id: id.to_string(),
        title: format!("Lecture {id}"),
        kind: RecordingKind::Adhoc,
        event_uid: None,
    }
}

pub(crate) fn start(journal: &mut Journal, id: &str) {
    journal.start_recording(&adhoc(id), T0_MS).unwrap();
}

pub(crate) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// Every committed row must describe exactly the bytes on disk.
fn assert_rows_match_files(journal: &Journal, recording_id: &str) {
    for seg in journal.segments(recording_id).unwrap() {
        assert_eq!(seg.state, SegmentState::Committed, "{}", seg.path);
        assert_eq!(seg.abs_path, journal.media_dir().join(&seg.path));
        assert_eq!(seg.bytes, file_len(&seg.abs_path), "{}", seg.path);
        assert_eq!(
            seg.sha256.as_deref(),
            Some(sha256_file(&seg.abs_path).unwrap().as_str()),
            "{}",
            seg.path
        );
        assert!(
            verify_ts_file(&seg.abs_path).unwrap().is_complete(),
            "{}",
            seg.path
        );
    }
}

// ---------------------------------------------------------------------------
// Cutting
// ---------------------------------------------------------------------------

/// Runs `chunks` through one part and checks each committed segment's
/// (first PTS ms, duration ms).
fn check_cuts(chunks: Vec<Chunk>, target_ms: u64, expect: &[(u64, u64)]) {
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions {
        segment_target: Duration::from_millis(target_ms),
        ..JournalOptions::default()
    };
    let (mut journal, _) = Journal::open(dir.path(), opts, T0_MS).unwrap();
    start(&mut journal, "cuts");
    let mut w = journal.open_part("cuts", "test", T0_MS).unwrap();
    feed(&mut w, &chunks, Instant::now());
    w.finish(PartEnd::Closed, T0_MS + 10_000).unwrap();
    let got: Vec<(u64, u64)> = journal
        .segments("cuts")
        .unwrap()
        .iter()
        .map(|s| (s.first_pts_ns.unwrap() / MS, s.duration_ns.unwrap() / MS))
        .collect();
    assert_eq!(got, expect);
    assert_rows_match_files(&journal, "cuts");
}

#[test]
fn cuts_only_at_keyframes_at_or_after_target() {
    // Keyframe every second: cut exactly at 2 s; the last segment's duration
    // adds one frame step (40 ms) to its PTS span.
    check_cuts(
        stream(0, 5000, Psi::Stamped, key_every(1000)),
        2000,
        &[(0, 2000), (2000, 2000), (4000, 1000)],
    );
    // Keyframe every 1.5 s: 1.5 s is too short, the cut waits for 3 s.
    check_cuts(
        stream(0, 5000, Psi::Stamped, key_every(1500)),
        2000,
        &[(0, 3000), (3000, 2000)],
    );
    // A single keyframe: one segment for the whole part.
    check_cuts(
        stream(0, 5000, Psi::Stamped, |pts| pts == 0),
        2000,
        &[(0, 5000)],
    );
    // Shorter target.
    check_cuts(
        stream(0, 3000, Psi::Stamped, key_every(500)),
        1000,
        &[(0, 1000), (1000, 1000), (2000, 1000)],
    );
    // The part's last frame is a keyframe (a 4.04 s stop with keyframes every 2 s): the final
    // segment holds that one frame and lasts one frame step, borrowed from the part, not 0 s.
    check_cuts(
        stream(0, 4040, Psi::Stamped, key_every(2000)),
        2000,
        &[(0, 2000), (2000, 2000), (4000, 40)],
    );
    // Timestamps need not start at zero.
    check_cuts(
        stream(7000, 4000, Psi::Stamped, key_every(1000)),
        2000,
        &[(7000, 2000), (9000, 2000)],
    );
}

#[test]
fn data_before_first_keyframe_starts_the_first_segment() {
    let key = |pts: u64| pts >= 520 && (pts - 520).is_multiple_of(1000);
    check_cuts(
        stream(0, 5000, Psi::Stamped, key),
        2000,
        &[(0, 1520), (1520, 2000), (3520, 1480)],
    );
}

#[test]
fn unstamped_keyframe_chunk_cuts_on_the_last_pts_and_loses_nothing() {
    // The PAT/PMT chunk has no PTS and the video keyframe is not flagged, so
    // the cut at 2 s is measured against the last PTS seen (1.96 s); that is
    // within the cut tolerance, and no byte is lost either way.
    let chunks: Vec<Chunk> = stream(0, 5000, Psi::Unstamped, key_every(1000))
        .into_iter()
        .map(|c| Chunk {
            keyframe: c.keyframe && c.pts_ns.is_none(),
            ..c
        })
        .collect();
    check_cuts(chunks, 2000, &[(0, 2000), (2000, 2000), (4000, 1000)]);
}

#[test]
fn cut_due_rule() {
    let check = |first: Option<u64>, at: Option<u64>, target_ms: u64, expect: bool| {
        assert_eq!(
            cut_due(first, at, Duration::from_millis(target_ms)),
            expect,
            "{first:?} {at:?} {target_ms}"
        );
    };
    check(Some(0), Some(2000 * MS), 2000, true);
    check(Some(0), Some(1933 * MS), 2000, true);
    check(Some(0), Some(1500 * MS), 2000, true);
    check(Some(0), Some(1499 * MS), 2000, false);
    check(Some(5000 * MS), Some(7500 * MS), 2000, true);
    check(Some(5000 * MS), Some(4000 * MS), 2000, false);
    check(None, Some(9000 * MS), 2000, false);
    check(Some(0), None, 2000, false);
}

// ---------------------------------------------------------------------------
// Commit protocol results
// ---------------------------------------------------------------------------

#[test]
fn segment_seq_is_continuous_across_parts_and_checksums_match_files() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "lecture-1");

    let mut w = journal.open_part("lecture-1", "x264", T0_MS).unwrap();
    assert_eq!((w.recording_id(), w.part_seq()), ("lecture-1", 1));
    let t0 = Instant::now();
    let returned = feed(&mut w, &stream(0, 5000, Psi::Stamped, key_every(1000)), t0);
    let part1 = w.finish(PartEnd::Closed, T0_MS + 5000).unwrap();
    assert_eq!((part1.state, part1.segments), (PartState::Closed, 3));

    let mut w = journal
        .open_part("lecture-1", "v4l2h264enc", T0_MS + 6000)
        .unwrap();
    assert_eq!(w.part_seq(), 2);
    feed(&mut w, &stream(0, 3000, Psi::Stamped, key_every(1000)), t0);
    let part2 = w
        .finish(PartEnd::Interrupted("operator paused".into()), T0_MS + 9000)
        .unwrap();
    assert_eq!((part2.state, part2.segments), (PartState::Interrupted, 2));
    journal
        .finish_recording("lecture-1", Outcome::Completed, T0_MS + 10_000)
        .unwrap();

    let segs = journal.segments("lecture-1").unwrap();
    let layout: Vec<(u32, u32, &str)> = segs
        .iter()
        .map(|s| (s.part_seq, s.seq, s.path.as_str()))
        .collect();
    assert_eq!(
        layout,
        [
            (1, 1, "recordings/lecture-1/part-0001/seg-000001.ts"),
            (1, 2, "recordings/lecture-1/part-0001/seg-000002.ts"),
            (1, 3, "recordings/lecture-1/part-0001/seg-000003.ts"),
            (2, 4, "recordings/lecture-1/part-0002/seg-000004.ts"),
            (2, 5, "recordings/lecture-1/part-0002/seg-000005.ts"),
        ]
    );
    assert!(segs.iter().all(|s| !s.recovered));
    assert_rows_match_files(&journal, "lecture-1");

    // What push_data returned is what the index holds.
    assert_eq!(
        returned.len(),
        2,
        "two cuts in part 1; the third segment is committed by finish"
    );
    for (ret, row) in returned.iter().zip(&segs) {
        assert_eq!(
            (
                ret.seq,
                &ret.path,
                ret.bytes,
                Some(&ret.sha256),
                ret.duration_ns
            ),
            (
                row.seq,
                &row.path,
                row.bytes,
                row.sha256.as_ref(),
                row.duration_ns
            )
        );
    }
    assert_eq!(part1.last_segment.as_ref().map(|s| s.seq), Some(3));

    let summary = journal.recording("lecture-1").unwrap().unwrap();
    assert_eq!(summary.state, RecordingState::Completed);
    assert_eq!((summary.parts, summary.segments), (2, 5));
    assert_eq!(summary.bytes, segs.iter().map(|s| s.bytes).sum::<u64>());
    assert_eq!(summary.media_duration_ns, 8000 * MS);
    assert_eq!(part1.bytes + part2.bytes, summary.bytes);
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(
        (json["kind"].as_str(), json["state"].as_str()),
        (Some("adhoc"), Some("completed"))
    );
}

#[test]
fn data_is_fsynced_at_the_interval_and_on_tick() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "sync");
    let mut w = journal.open_part("sync", "test", T0_MS).unwrap();
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let push = |w: &mut PartWriter, ms: u64| {
        w.push_data(&frame_chunk(ms * MS), Some(ms * MS), false, at(ms), T0_MS)
            .unwrap();
        w.open_segment_syncs().unwrap()
    };
    assert_eq!(push(&mut w, 0), 0);
    assert_eq!(push(&mut w, 500), 0);
    assert_eq!(push(&mut w, 1000), 1);
    w.tick(at(2500)).unwrap();
    assert_eq!(
        w.open_segment_syncs(),
        Some(1),
        "nothing unsynced, tick must not sync"
    );
    assert_eq!(push(&mut w, 2600), 2);
    assert_eq!(push(&mut w, 2700), 2);
    w.tick(at(3000)).unwrap();
    assert_eq!(w.open_segment_syncs(), Some(2), "interval not yet elapsed");
    w.tick(at(3600)).unwrap();
    assert_eq!(
        w.open_segment_syncs(),
        Some(3),
        "a stalled stream still gets synced by tick"
    );
}

#[test]
fn periodic_sync_holds_back_only_a_young_partial_page() {
    let (dir, mut journal) = new_journal();
    start(&mut journal, "pages");
    let mut w = journal.open_part("pages", "test", T0_MS).unwrap();
    let path = dir.path().join("recordings/pages/part-0001/seg-000001.ts");
    let t0 = Instant::now();
    // 564 bytes a millisecond (~4.5 Mbit/s): a page fills in about 7 ms.
    let mut pushed = 0u64;
    for ms in 0..=950u64 {
        let chunk = frame_chunk(ms * MS);
        pushed += chunk.len() as u64;
        w.push_data(&chunk, Some(ms * MS), false, t0 + Duration::from_millis(ms), T0_MS)
            .unwrap();
    }
    assert_eq!(w.open_segment_syncs(), Some(1));
    let synced = file_len(&path);
    assert_eq!(synced % 4096, 0, "the sync wrote only whole pages");
    assert!(pushed - synced < 4096, "held back {} bytes, more than the partial page", pushed - synced);
    // The stream stalls: the next sync (a tick one interval later) writes the held tail too.
    w.tick(t0 + Duration::from_millis(2000)).unwrap();
    assert_eq!(w.open_segment_syncs(), Some(2));
    assert_eq!(file_len(&path), pushed);

    // A slow stream (one chunk every 100 ms): the partial page is older than the hold bound
    // (fsync_interval / 20), so the sync writes it at once.
    let (dir, mut journal) = new_journal();
    start(&mut journal, "slow");
    let mut w = journal.open_part("slow", "test", T0_MS).unwrap();
    let path = dir.path().join("recordings/slow/part-0001/seg-000001.ts");
    let mut pushed = 0u64;
    for i in 0..=10u64 {
        let chunk = frame_chunk(i * 100 * MS);
        pushed += chunk.len() as u64;
        w.push_data(&chunk, Some(i * 100 * MS), false, t0 + Duration::from_millis(i * 100), T0_MS)
            .unwrap();
    }
    assert_eq!(w.open_segment_syncs(), Some(1));
    assert_eq!(file_len(&path), pushed, "a partial page older than the bound is synced");
}

#[test]
fn audio_levels_are_aggregated_per_segment() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "levels");
    let mut w = journal.open_part("levels", "test", T0_MS).unwrap();
    let chunks = stream(0, 3000, Psi::Stamped, key_every(1000));
    let t0 = Instant::now();
    // Levels pushed during segment 1, then during segment 2.
    w.push_level(-6.0, -10.0);
    feed(&mut w, &chunks[..10], t0);
    w.push_level(-3.0, f64::NEG_INFINITY);
    let cut_at = chunks
        .iter()
        .position(|c| c.keyframe && c.pts_ns == Some(2000 * MS))
        .unwrap();
    feed(&mut w, &chunks[10..=cut_at], t0);
    w.push_level(-20.0, -20.0);
    feed(&mut w, &chunks[cut_at + 1..], t0);
    w.finish(PartEnd::Closed, T0_MS).unwrap();
    let segs = journal.segments("levels").unwrap();
    let levels: Vec<(Option<f64>, Option<f64>)> = segs
        .iter()
        .map(|s| {
            (
                s.audio_peak_db,
                s.audio_rms_db.map(|r| (r * 1000.0).round() / 1000.0),
            )
        })
        .collect();
    // Power mean of -10 dB and silence: 10*log10(0.1 / 2) = -13.010 dB.
    assert_eq!(
        levels,
        [(Some(-3.0), Some(-13.01)), (Some(-20.0), Some(-20.0))]
    );
}

#[test]
fn level_accumulator_cases() {
    let check = |pushes: &[(f64, f64)], expect: (Option<f64>, Option<f64>)| {
        let mut acc = LevelAccumulator::default();
        for &(peak, rms) in pushes {
            acc.push(peak, rms);
        }
        let round = |v: Option<f64>| v.map(|v| (v * 1000.0).round() / 1000.0);
        assert_eq!(
            (round(acc.peak_db()), round(acc.rms_db())),
            expect,
            "{pushes:?}"
        );
    };
    check(&[], (None, None));
    check(&[(-6.0, -20.0)], (Some(-6.0), Some(-20.0)));
    check(&[(-6.0, -20.0), (-3.0, -20.0)], (Some(-3.0), Some(-20.0)));
    check(
        &[(0.0, -10.0), (0.0, f64::NEG_INFINITY)],
        (Some(0.0), Some(-13.01)),
    );
    // Power mean of -10 and -30 dB is dominated by the loud one.
    check(&[(-1.0, -10.0), (-1.0, -30.0)], (Some(-1.0), Some(-12.967)));
    check(
        &[(f64::NAN, f64::NAN), (-4.0, -8.0)],
        (Some(-4.0), Some(-8.0)),
    );
    check(
        &[(f64::NEG_INFINITY, f64::NEG_INFINITY)],
        (Some(-150.0), Some(-150.0)),
    );
}

// ---------------------------------------------------------------------------
// Lifecycle rules
// ---------------------------------------------------------------------------

#[test]
fn recording_without_media_fails_instead_of_completing() {
    let (_dir, mut journal) = new_journal();
    // No part at all.
    start(&mut journal, "empty-a");
    journal
        .finish_recording("empty-a", Outcome::Completed, T0_MS + 1)
        .unwrap();
    // A part that received no data.
    start(&mut journal, "empty-b");
    let w = journal.open_part("empty-b", "test", T0_MS).unwrap();
    let part = w.finish(PartEnd::Closed, T0_MS + 1).unwrap();
    assert_eq!((part.segments, part.bytes), (0, 0));
    journal
        .finish_recording("empty-b", Outcome::Completed, T0_MS + 2)
        .unwrap();

    // Interrupted (a camera that never came up) with nothing recorded.
    start(&mut journal, "empty-c");
    journal
        .finish_recording(
            "empty-c",
            Outcome::Interrupted("device error: no camera".into()),
            T0_MS + 2,
        )
        .unwrap();

    for (id, reason) in [
        ("empty-a", "no media"),
        ("empty-b", "no media"),
        ("empty-c", "no media: device error: no camera"),
    ] {
        let r = journal.recording(id).unwrap().unwrap();
        assert_eq!(
            (r.state, r.end_reason.as_deref(), r.segments),
            (RecordingState::Failed, Some(reason), 0),
            "{id}"
        );
    }
    // Final states are final.
    let err = journal
        .start_recording(&adhoc("empty-a"), T0_MS + 3)
        .unwrap_err();
    assert!(matches!(err, JournalError::RecordingEnded { .. }), "{err}");
    let err = journal
        .finish_recording("empty-a", Outcome::Completed, T0_MS + 3)
        .unwrap_err();
    assert!(matches!(err, JournalError::RecordingEnded { .. }), "{err}");
}

#[test]
fn recording_id_validation() {
    let check = |id: &str, ok: bool| {
        assert_eq!(validate_recording_id(id).is_ok(), ok, "{id:?}");
    };
    check("lecture-2024-10-01_0900", true);
    check("a", true);
    check("v1.2", true);
    check(&"x".repeat(128), true);
    check("", false);
    check(&"x".repeat(129), false);
    check(".hidden", false);
    check("..", false);
    check("a/b", false);
    check("a\\b", false);
    check("with space", false);
    check("ümlaut", false);
    check("nul\0byte", false);

    let (_dir, mut journal) = new_journal();
    let err = journal
        .start_recording(&adhoc("x/../escape"), T0_MS)
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, JournalError::InvalidRecordingId { .. }));
    assert!(
        msg.contains("\"x/../escape\"") && msg.contains("may only contain"),
        "{msg}"
    );
    assert!(journal.open_part("x/../escape", "test", T0_MS).is_err());
    assert!(journal.recordings().unwrap().is_empty());
}

#[test]
fn open_part_requires_an_active_recording() {
    let (_dir, mut journal) = new_journal();
    let err = journal.open_part("nope", "test", T0_MS).unwrap_err();
    assert!(
        matches!(err, JournalError::UnknownRecording { .. }),
        "{err}"
    );
    start(&mut journal, "done");
    journal
        .finish_recording("done", Outcome::Failed("encoder died".into()), T0_MS)
        .unwrap();
    let err = journal.open_part("done", "test", T0_MS).unwrap_err();
    assert!(
        matches!(err, JournalError::RecordingNotActive { .. }),
        "{err}"
    );
}

#[test]
fn live_writer_blocks_new_part_and_finish() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "busy");
    let w = journal.open_part("busy", "test", T0_MS).unwrap();
    let err = journal.open_part("busy", "test", T0_MS).unwrap_err();
    assert!(
        matches!(err, JournalError::WriterActive { part_seq: 1, .. }),
        "{err}"
    );
    let err = journal
        .finish_recording("busy", Outcome::Completed, T0_MS)
        .unwrap_err();
    assert!(matches!(err, JournalError::WriterActive { .. }), "{err}");
    // The writer can run on another thread.
    let handle = std::thread::spawn(move || {
        let mut w = w;
        feed(
            &mut w,
            &stream(0, 1000, Psi::Stamped, key_every(1000)),
            Instant::now(),
        );
        w.finish(PartEnd::Closed, T0_MS + 1000).unwrap()
    });
    assert_eq!(handle.join().unwrap().segments, 1);
    journal
        .finish_recording("busy", Outcome::Completed, T0_MS + 2000)
        .unwrap();
    assert_eq!(
        journal.recording("busy").unwrap().unwrap().state,
        RecordingState::Completed
    );
}

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

#[test]
fn torn_tail_is_truncated_rechecksummed_and_committed_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), JournalOptions::default(), T0_MS).unwrap();

    // Recording A: one committed segment, then a second one torn mid-packet.
    start(&mut journal, "torn");
    let mut w = journal.open_part("torn", "test", T0_MS).unwrap();
    let committed = feed(
        &mut w,
        &stream(0, 3000, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    assert_eq!(committed.len(), 1);
    // Dropping without finish must commit nothing (the BufWriter does flush
    // its bytes to the file, like a crash after a write).
    drop(w);
    let open_path = journal
        .media_dir()
        .join("recordings/torn/part-0001/seg-000002.ts");
    let whole = file_len(&open_path);
    assert_eq!(whole % TS_PACKET_LEN as u64, 0);
    OpenOptions::new()
        .append(true)
        .open(&open_path)
        .unwrap()
        .write_all(&[TS_SYNC_BYTE; 94])
        .unwrap();
    {
        let segs = journal.segments("torn").unwrap();
        assert_eq!(segs[1].state, SegmentState::Open, "drop must not commit");
    }

    // Recording B: its open segment's data never reached the file (the
    // writer is forgotten, so its buffer is never flushed).
    start(&mut journal, "lost");
    let mut w = journal.open_part("lost", "test", T0_MS).unwrap();
    feed(
        &mut w,
        &stream(0, 200, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    let empty_path = journal
        .media_dir()
        .join("recordings/lost/part-0001/seg-000001.ts");
    assert_eq!(file_len(&empty_path), 0);
    std::mem::forget(w);
    drop(journal);

    let (journal, report) = reopen(dir.path(), T0_MS + 60_000);
    let text = report.to_string();
    // The torn part ends where the media recovery kept in its open segment (opened at
    // T0 + 2 s) ends, not at that segment's opening: the stitched file's gap starts there.
    let held_ms = journal.segments("torn").unwrap()[1].duration_ns.expect("recovered duration") as i64 / 1_000_000;
    assert!(held_ms > 500, "{held_ms} ms recovered");
    assert_eq!(
        report.actions,
        [
            RecoveryAction::SegmentRecovered {
                recording_id: "torn".into(),
                path: "recordings/torn/part-0001/seg-000002.ts".into(),
                bytes_before: whole + 94,
                bytes_after: whole,
            },
            RecoveryAction::PartInterrupted {
                recording_id: "torn".into(),
                part_seq: 1,
                reason: "crash".into(),
                ended_at_ms: T0_MS + 2000 + held_ms,
            },
            RecoveryAction::SegmentDropped {
                recording_id: "lost".into(),
                path: "recordings/lost/part-0001/seg-000001.ts".into(),
                bytes_before: 0,
                reason: "file empty".into(),
            },
            RecoveryAction::PartInterrupted {
                recording_id: "lost".into(),
                part_seq: 1,
                reason: "crash".into(),
                ended_at_ms: T0_MS,
            },
            // Recordings in start order, then id.
            RecoveryAction::RecordingInterrupted {
                recording_id: "lost".into(),
                ended_at_ms: T0_MS
            },
            RecoveryAction::RecordingInterrupted {
                recording_id: "torn".into(),
                ended_at_ms: T0_MS + 2000 + held_ms
            },
        ],
        "{text}"
    );
    assert!(
        text.contains("recording torn")
            && text.contains("seg-000002.ts")
            && text.contains(&format!("{} -> {whole}", whole + 94)),
        "{text}"
    );

    let segs = journal.segments("torn").unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!((segs[0].recovered, segs[1].recovered), (false, true));
    assert_eq!(segs[1].bytes, whole);
    // The recovered duration is the PTS span found in the file: 2.0 s..2.96 s.
    assert_eq!(
        (segs[1].first_pts_ns, segs[1].duration_ns),
        (Some(2000 * MS), Some(960 * MS))
    );
    assert_eq!(segs[1].last_pts_ns, Some(2960 * MS));
    assert_rows_match_files(&journal, "torn");

    assert!(journal.segments("lost").unwrap().is_empty());
    assert!(!empty_path.exists());
    for id in ["torn", "lost"] {
        let r = journal.recording(id).unwrap().unwrap();
        assert_eq!(
            (r.state, r.end_reason.as_deref()),
            (RecordingState::Interrupted, Some("crash")),
            "{id}"
        );
    }
    let log = journal.state_log(100).unwrap();
    assert_eq!(
        log.iter()
            .filter(|r| r.state.starts_with("recovery-"))
            .count(),
        report.actions.len()
    );
    drop(journal);

    // Idempotent: a second open finds nothing to do.
    let (_journal, again) = reopen(dir.path(), T0_MS + 120_000);
    assert!(again.is_empty(), "{again}");
}

#[test]
fn open_segment_with_missing_file_or_garbage_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), JournalOptions::default(), T0_MS).unwrap();
    for (id, damage) in [
        ("gone", None),
        ("junk", Some(vec![0u8; 500])),
        ("half", Some(vec![TS_SYNC_BYTE; 100])),
    ] {
        start(&mut journal, id);
        let mut w = journal.open_part(id, "test", T0_MS).unwrap();
        feed(
            &mut w,
            &stream(0, 200, Psi::Stamped, key_every(1000)),
            Instant::now(),
        );
        std::mem::forget(w);
        let path = journal
            .media_dir()
            .join(format!("recordings/{id}/part-0001/seg-000001.ts"));
        match damage {
            None => fs::remove_file(&path).unwrap(),
            Some(bytes) => fs::write(&path, bytes).unwrap(),
        }
    }
    drop(journal);
    let (journal, report) = reopen(dir.path(), T0_MS + 1);
    let dropped: Vec<(&str, &str)> = report
        .actions
        .iter()
        .filter_map(|a| match a {
            RecoveryAction::SegmentDropped {
                recording_id,
                reason,
                ..
            } => Some((recording_id.as_str(), reason.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        dropped,
        [
            ("gone", "file missing"),
            ("junk", "no complete packet"),
            ("half", "no complete packet")
        ]
    );
    for id in ["gone", "junk", "half"] {
        assert!(journal.segments(id).unwrap().is_empty(), "{id}");
        assert!(
            !journal
                .media_dir()
                .join(format!("recordings/{id}/part-0001/seg-000001.ts"))
                .exists(),
            "{id}"
        );
    }
}

#[test]
fn dropped_writer_is_recovered_in_place_and_recording_resumes() {
    let (dir, mut journal) = new_journal();
    start(&mut journal, "panicky");
    let mut w = journal.open_part("panicky", "test", T0_MS).unwrap();
    feed(
        &mut w,
        &stream(0, 3000, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    drop(w); // as if the writer thread panicked

    let mut w = journal.open_part("panicky", "test", T0_MS + 5000).unwrap();
    assert_eq!(w.part_seq(), 2);
    feed(
        &mut w,
        &stream(0, 1000, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    w.finish(PartEnd::Closed, T0_MS + 6000).unwrap();
    journal
        .finish_recording("panicky", Outcome::Completed, T0_MS + 7000)
        .unwrap();

    let segs = journal.segments("panicky").unwrap();
    let shape: Vec<(u32, u32, bool)> = segs
        .iter()
        .map(|s| (s.part_seq, s.seq, s.recovered))
        .collect();
    assert_eq!(shape, [(1, 1, false), (1, 2, true), (2, 3, false)]);
    assert_rows_match_files(&journal, "panicky");
    assert!(journal
        .state_log(20)
        .unwrap()
        .iter()
        .any(|r| r.detail.contains("part 1 marked interrupted (writer lost)")));

    // Resuming an interrupted recording after a crash: state goes back to
    // recording and the next part continues the numbering.
    start(&mut journal, "resumed");
    let mut w = journal.open_part("resumed", "test", T0_MS).unwrap();
    feed(
        &mut w,
        &stream(0, 1000, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    std::mem::forget(w);
    drop(journal);
    let (mut journal, _) = reopen(dir.path(), T0_MS + 10_000);
    assert_eq!(
        journal.recording("resumed").unwrap().unwrap().state,
        RecordingState::Interrupted
    );
    start(&mut journal, "resumed");
    let r = journal.recording("resumed").unwrap().unwrap();
    assert_eq!(
        (r.state, r.end_reason, r.ended_at_ms),
        (RecordingState::Recording, None, None)
    );
    let w = journal
        .open_part("resumed", "test", T0_MS + 11_000)
        .unwrap();
    assert_eq!(w.part_seq(), 2);
}

#[test]
fn damaged_last_committed_segment_is_repaired_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) = Journal::open(dir.path(), JournalOptions::default(), T0_MS).unwrap();
    for id in ["appended", "missing", "zeroed"] {
        start(&mut journal, id);
        let mut w = journal.open_part(id, "test", T0_MS).unwrap();
        feed(
            &mut w,
            &stream(0, 3000, Psi::Stamped, key_every(1000)),
            Instant::now(),
        );
        w.finish(PartEnd::Closed, T0_MS + 3000).unwrap();
        // The recording itself is left 'recording', as at a crash.
    }
    let media = dir.path().to_path_buf();
    let last = |id: &str| media.join(format!("recordings/{id}/part-0001/seg-000002.ts"));
    let appended = last("appended");
    let good_len = file_len(&appended);
    OpenOptions::new()
        .append(true)
        .open(&appended)
        .unwrap()
        .write_all(&[TS_SYNC_BYTE; 50])
        .unwrap();
    fs::remove_file(last("missing")).unwrap();
    fs::write(last("zeroed"), vec![0u8; good_len as usize]).unwrap();
    drop(journal);

    let (journal, report) = reopen(dir.path(), T0_MS + 10_000);
    assert!(report
        .actions
        .contains(&RecoveryAction::CommittedSegmentRepaired {
            recording_id: "appended".into(),
            path: "recordings/appended/part-0001/seg-000002.ts".into(),
            bytes_before: good_len,
            file_bytes: good_len + 50,
            bytes_after: good_len,
        }));
    assert!(report
        .actions
        .contains(&RecoveryAction::CommittedSegmentMissing {
            recording_id: "missing".into(),
            path: "recordings/missing/part-0001/seg-000002.ts".into(),
            bytes: good_len,
        }));
    assert!(report
        .actions
        .contains(&RecoveryAction::CommittedSegmentDropped {
            recording_id: "zeroed".into(),
            path: "recordings/zeroed/part-0001/seg-000002.ts".into(),
            bytes_before: good_len,
            file_bytes: good_len,
        }));
    assert_eq!(
        report.actions.iter().filter(|a| a.is_damage()).count(),
        3,
        "{report}"
    );
    assert!(
        report.to_string().contains("MISSING") && report.to_string().contains("CORRUPT"),
        "{report}"
    );
    let zeroed: Vec<u32> = journal
        .segments("zeroed")
        .unwrap()
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(zeroed, [1]);
    assert!(!last("zeroed").exists());
    assert_rows_match_files(&journal, "appended");
    assert!(journal.segments("appended").unwrap()[1].recovered);
    drop(journal);
    let (_journal, again) = reopen(dir.path(), T0_MS + 20_000);
    assert!(again.is_empty(), "{again}");
}

#[test]
fn orphan_files_are_removed_only_from_known_part_dirs() {
    let (dir, mut journal) = new_journal();
    start(&mut journal, "known");
    let mut w = journal.open_part("known", "test", T0_MS).unwrap();
    feed(
        &mut w,
        &stream(0, 1000, Psi::Stamped, key_every(1000)),
        Instant::now(),
    );
    w.finish(PartEnd::Closed, T0_MS).unwrap();
    journal
        .finish_recording("known", Outcome::Completed, T0_MS)
        .unwrap();
    drop(journal);

    let media = dir.path();
    let orphan = media.join("recordings/known/part-0001/seg-000099.ts");
    fs::write(&orphan, vec![TS_SYNC_BYTE; 188]).unwrap();
    let notes = media.join("recordings/known/part-0001/notes.txt");
    fs::write(&notes, b"left by a human").unwrap();
    let foreign = media.join("recordings/restored-from-backup/part-0001/seg-000001.ts");
    fs::create_dir_all(foreign.parent().unwrap()).unwrap();
    fs::write(&foreign, vec![TS_SYNC_BYTE; 188]).unwrap();

    let (journal, report) = reopen(media, T0_MS + 1);
    assert_eq!(
        report.actions,
        [RecoveryAction::OrphanFileRemoved {
            recording_id: "known".into(),
            path: "recordings/known/part-0001/seg-000099.ts".into(),
            bytes: 188,
        }]
    );
    assert!(!orphan.exists());
    assert!(
        notes.exists() && foreign.exists(),
        "unknown files and directories are never deleted"
    );
    assert_rows_match_files(&journal, "known");
}

// ---------------------------------------------------------------------------
// Database housekeeping
// ---------------------------------------------------------------------------

#[test]
fn state_log_is_pruned_to_the_newest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _) =
        Journal::open_with_log_keep(dir.path(), JournalOptions::default(), T0_MS, 50).unwrap();
    for i in 0..120 {
        journal
            .log_state(None, "tick", &format!("event {i}"), T0_MS + i)
            .unwrap();
    }
    let rows = journal.state_log(1000).unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(
        (rows[0].detail.as_str(), rows[49].detail.as_str()),
        ("event 70", "event 119")
    );
    let newest = journal.state_log(3).unwrap();
    let details: Vec<&str> = newest.iter().map(|r| r.detail.as_str()).collect();
    assert_eq!(details, ["event 117", "event 118", "event 119"]);
}

#[test]
fn state_log_default_bound_is_ten_thousand() {
    let (_dir, journal) = new_journal();
    let conn = journal.conn();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..(STATE_LOG_KEEP + 25) {
        db::log_state(
            &tx,
            &journal.db_path(),
            STATE_LOG_KEEP,
            T0_MS + i,
            Some("r"),
            "tick",
            "x",
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let count: i64 = conn
        .query_row("SELECT COUNT(*) FROM state_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, STATE_LOG_KEEP);
}

#[test]
fn database_uses_wal_full_sync_and_a_schema_version() {
    let (_dir, journal) = new_journal();
    let conn = journal.conn();
    let get = |pragma: &str| -> String {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .unwrap()
    };
    assert_eq!(get("journal_mode"), "wal");
    assert_eq!(get("synchronous"), "2"); // FULL
    // Small pages keep the per-segment commit cheap in bytes (write amplification).
    assert_eq!(get("page_size"), "512");
    assert_eq!(get("user_version"), SCHEMA_VERSION.to_string());
    assert_eq!(get("busy_timeout"), "5000");
    assert_eq!(journal.db_path(), journal.media_dir().join(DB_FILE));
}

#[test]
fn newer_schema_is_refused() {
    let (dir, journal) = new_journal();
    journal
        .conn()
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(journal);
    let err = Journal::open(dir.path(), JournalOptions::default(), T0_MS).unwrap_err();
    assert!(
        matches!(err, JournalError::UnsupportedSchema { .. }),
        "{err}"
    );
}

#[test]
fn missing_media_dir_is_an_error_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("not-mounted");
    let err = Journal::open(&media, JournalOptions::default(), T0_MS).unwrap_err();
    assert!(matches!(err, JournalError::MediaDirMissing { .. }), "{err}");
    assert!(err.to_string().contains("not-mounted"));
    assert!(!media.exists());
}

#[test]
fn part_writer_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<PartWriter>();
}

// ---------------------------------------------------------------------------
// TS parsing
// ---------------------------------------------------------------------------

fn check_scan(data: &[u8], expect_valid: u64, expect_packets: u64) {
    let mut whole = TsScanner::new();
    whole.feed(data);
    let whole = whole.finish();
    assert_eq!(
        (whole.valid_bytes, whole.packets, whole.total_bytes),
        (expect_valid, expect_packets, data.len() as u64)
    );
    // Any slicing gives the same answer.
    for step in [1, 7, 187, 188, 189, 1000] {
        let mut sliced = TsScanner::new();
        data.chunks(step).for_each(|c| sliced.feed(c));
        assert_eq!(sliced.finish(), whole, "slicing by {step}");
    }
}

#[test]
fn ts_valid_prefix_cases() {
    let good = pes_packet(VIDEO_PID, None);
    let mut bad = good.clone();
    bad[0] = 0x00;
    check_scan(&[], 0, 0);
    check_scan(&good, 188, 1);
    check_scan(&[good.clone(), good.clone(), good.clone()].concat(), 564, 3);
    check_scan(
        &[good.clone(), good.clone(), good[..100].to_vec()].concat(),
        376,
        2,
    );
    check_scan(&[good.clone(), bad.clone(), good.clone()].concat(), 188, 1);
    check_scan(&[bad, good.clone()].concat(), 0, 0);
    check_scan(&good[..187], 0, 0);
}

#[test]
fn pts_parsing_cases() {
    for pts in [0, 1, 90_000, TS_PTS_OFFSET_90K, (1 << 33) - 1] {
        assert_eq!(
            pes_pts(&pes_packet(VIDEO_PID, Some(pts))),
            Some(pts),
            "{pts}"
        );
    }
    // Not a PES start, or PSI.
    assert_eq!(pes_pts(&pes_packet(VIDEO_PID, None)), None);
    assert_eq!(pes_pts(&psi_chunk()[..188]), None);
    assert_eq!(pes_pts(&psi_chunk()[188..]), None);
    // PES start behind an adaptation field (as before a keyframe with PCR).
    let mut p = ts_header(VIDEO_PID, true).to_vec();
    p[3] = 0x30;
    p.extend_from_slice(&[7, 0x50, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(&[0x00, 0x00, 0x01, 0xC0, 0x00, 0x00, 0x80, 0x80, 0x05]);
    p.extend_from_slice(&encode_pts(123_456));
    p.resize(188, 0xFF);
    assert_eq!(pes_pts(&p), Some(123_456));
    // Padding stream has no PES header.
    let mut pad = pes_packet(VIDEO_PID, Some(5));
    pad[7] = 0xBE;
    assert_eq!(pes_pts(&pad), None);
}

#[test]
fn pts_span_handles_reordering_and_wraparound() {
    let check = |pts: &[u64], first: u64, span_ms: u64| {
        let mut scanner = TsScanner::new();
        for &p in pts {
            scanner.feed(&pes_packet(VIDEO_PID, Some(p)));
        }
        let scan = scanner.finish();
        assert_eq!(
            (scan.first_pts_90k, scan.pts_span_ns),
            (Some(first), Some(span_ms * MS)),
            "{pts:?}"
        );
    };
    check(&[9000], 9000, 0);
    check(&[9000, 18000, 27000], 9000, 200);
    // B-frame order: the earliest PTS is not the first one seen.
    check(&[18000, 9000, 27000], 9000, 200);
    // Wraparound of the 33-bit counter.
    let top = 1u64 << 33;
    check(&[top - 90_000, top - 45_000, 45_000], top - 90_000, 1500);
}

/// Regression: a muxer under CPU starvation once emitted a PTS above i64::MAX; SQLite refused the
/// segment row and the whole recording failed. Such a PTS is treated as absent.
#[test]
fn regression_wrapped_pts_does_not_fail_the_commit() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "wrapped");
    let mut w = journal.open_part("wrapped", "test", T0_MS).unwrap();
    let now = std::time::Instant::now();
    let packet = |pid_byte: u8| {
        let mut p = vec![0u8; 188];
        p[0] = 0x47;
        p[2] = pid_byte;
        p
    };
    w.push_data(&packet(0), Some(0), true, now, T0_MS).unwrap();
    w.push_data(&packet(0x41), Some(u64::MAX - 5), false, now, T0_MS).unwrap();
    w.push_data(&packet(0x41), Some(1_000 * MS), false, now, T0_MS).unwrap();
    let cut = w.push_data(&packet(0), Some(2_000 * MS), true, now, T0_MS).unwrap().expect("cut at 2 s");
    assert_eq!(cut.duration_ns, Some(2_000 * MS));
    let part = w.finish(PartEnd::Closed, T0_MS + 1).unwrap();
    assert_eq!(part.segments, 2);
}

// ---------------------------------------------------------------------------
// Storage-full guard
// ---------------------------------------------------------------------------

thread_local! {
    /// The simulated card's free bytes; each test drives it on its own thread.
    static SIM_FREE: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

fn sim_free(_: &Path) -> std::io::Result<Option<u64>> {
    Ok(SIM_FREE.with(|f| f.get()))
}

const RESERVE: u64 = 64 * 1024 * 1024;

fn reserve_journal(free: Option<u64>) -> (tempfile::TempDir, Journal) {
    SIM_FREE.with(|f| f.set(free));
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { min_free_bytes: RESERVE, free_space: FreeSpace(sim_free), ..test_options() };
    let (journal, _) = Journal::open(dir.path(), opts, T0_MS).unwrap();
    (dir, journal)
}

#[test]
fn open_part_below_the_reserve_is_refused_and_leaves_nothing() {
    let (dir, mut journal) = reserve_journal(Some(RESERVE - 1));
    start(&mut journal, "full");
    let err = journal.open_part("full", "test", T0_MS).unwrap_err();
    assert!(matches!(err, JournalError::StorageFull { free_bytes, reserve_bytes, .. }
        if free_bytes == RESERVE - 1 && reserve_bytes == RESERVE), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()) && msg.contains("63 MB free") && msg.contains("64 MB reserve"), "{msg}");
    // No part row and no part directory: the refusal happened before anything was created.
    assert!(!dir.path().join(RECORDINGS_DIR).join("full").exists());
    // Space freed: the same recording opens its part.
    SIM_FREE.with(|f| f.set(Some(RESERVE)));
    let w = journal.open_part("full", "test", T0_MS).unwrap();
    assert_eq!(w.part_seq(), 1);
}

#[test]
fn a_filesystem_that_reports_no_size_and_a_zero_reserve_never_refuse() {
    let (_dir, mut journal) = reserve_journal(None);
    start(&mut journal, "nosize");
    journal.open_part("nosize", "test", T0_MS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = JournalOptions { min_free_bytes: 0, free_space: FreeSpace(|_| panic!("a zero reserve reads nothing")), ..test_options() };
    let (mut journal, _) = Journal::open(dir.path(), opts, T0_MS).unwrap();
    start(&mut journal, "off");
    journal.open_part("off", "test", T0_MS).unwrap();
}

#[test]
fn the_real_statvfs_reading_sees_free_space_on_the_test_volume() {
    let dir = tempfile::tempdir().unwrap();
    let free = statvfs_free(dir.path()).unwrap().expect("the temp volume reports its size");
    assert!(free > 0);
    let err = statvfs_free(&dir.path().join("missing")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[test]
fn a_card_filling_mid_part_ends_the_part_at_the_next_cut_with_committed_segments_intact() {
    let (_dir, mut journal) = reserve_journal(Some(RESERVE * 2));
    start(&mut journal, "filling");
    let mut w = journal.open_part("filling", "test", T0_MS).unwrap();
    let t0 = Instant::now();
    let chunks = stream(0, 10_000, Psi::Stamped, key_every(1000));
    let mut refused = None;
    for c in &chunks {
        let at_ms = c.pts_ns.unwrap_or(0) / MS;
        // The card drops below the reserve 4.5 s in: the cut at 6 s is the first to see it.
        if at_ms >= 4500 {
            SIM_FREE.with(|f| f.set(Some(RESERVE / 2)));
        }
        match w.push_data(&c.bytes, c.pts_ns, c.keyframe, t0 + Duration::from_millis(at_ms), T0_MS + at_ms as i64) {
            Ok(_) => assert!(refused.is_none(), "data accepted after the storage-full stop at {at_ms} ms"),
            Err(e) => {
                assert!(matches!(e, JournalError::StorageFull { .. }), "{e:?}");
                refused.get_or_insert(at_ms);
            }
        }
    }
    assert_eq!(refused, Some(6000), "the part stops at the first cut below the reserve");
    assert_eq!(w.open_segment_syncs(), None, "no segment is open after the stop");
    let summary = w.finish(PartEnd::Failed("journal: storage full".into()), T0_MS + 10_000).unwrap();
    assert_eq!((summary.segments, summary.state), (3, PartState::Failed));
    assert_eq!(summary.end_reason.as_deref(), Some("journal: storage full"));
    let got: Vec<(u64, u64)> = journal.segments("filling").unwrap().iter()
        .map(|s| (s.first_pts_ns.unwrap() / MS, s.duration_ns.unwrap() / MS)).collect();
    assert_eq!(got, [(0, 2000), (2000, 2000), (4000, 2000)], "whole segments up to the cut, nothing after");
    assert_rows_match_files(&journal, "filling");
    journal.finish_recording("filling", Outcome::Interrupted("storage full".into()), T0_MS + 11_000).unwrap();
    assert_eq!(journal.recording("filling").unwrap().unwrap().state, RecordingState::Interrupted);
}

#[test]
fn newest_recordings_are_the_last_started_with_the_total() {
    let (_dir, mut journal) = new_journal();
    // Started out of id order, so the start time (not the id) must decide.
    for (i, id) in ["c", "a", "d", "b", "e"].iter().enumerate() {
        journal.start_recording(&adhoc(id), T0_MS + i as i64 * 1000).unwrap();
        journal.finish_recording(id, Outcome::Completed, T0_MS + i as i64 * 1000 + 500).unwrap();
    }
    let ids = |v: &[RecordingSummary]| v.iter().map(|r| r.id.clone()).collect::<Vec<_>>();
    let (newest, total) = journal.newest_recordings(2).unwrap();
    assert_eq!((ids(&newest), total), (vec!["b".to_owned(), "e".to_owned()], 5));
    let (all, total) = journal.newest_recordings(50).unwrap();
    assert_eq!((ids(&all), total), (ids(&journal.recordings().unwrap()), 5));
    assert_eq!(journal.newest_recordings(0).unwrap(), (vec![], 5));
}
