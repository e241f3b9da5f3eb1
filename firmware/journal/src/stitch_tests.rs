//! Tests of the stitch bookkeeping (`stitch_store.rs`): final recordings, the commit order of
//! stitched file and manifest, crash-restarts, the attempt limit and reopening on resume. The
//! stitcher's bytes are faked here (a few bytes written into the job's file): what is under test
//! is the journal's side.

use std::io::Write;
use std::time::Instant;

use serde_json::json;

use super::*;
use crate::tests::{feed, key_every, new_journal, reopen, start, stream, Psi, T0_MS};

/// A recording of two parts (4 s each, two segments each; the first cut by power).
fn two_part_recording(journal: &mut Journal, id: &str) {
    start(journal, id);
    let mut w = journal.open_part(id, "x264enc", T0_MS).unwrap();
    feed(&mut w, &stream(0, 4000, Psi::Stamped, key_every(1000)), Instant::now());
    w.finish(PartEnd::Interrupted("power".into()), T0_MS + 4_000).unwrap();
    journal.finish_recording(id, Outcome::Interrupted("power".into()), T0_MS + 4_000).unwrap();
    start(journal, id);
    let mut w = journal.open_part(id, "x264enc", T0_MS + 10_000).unwrap();
    feed(&mut w, &stream(0, 4000, Psi::Stamped, key_every(1000)), Instant::now());
    w.finish(PartEnd::Closed, T0_MS + 14_000).unwrap();
    journal.finish_recording(id, Outcome::Completed, T0_MS + 14_000).unwrap();
}

fn info(bytes: &[u8]) -> StitchedInfo {
    StitchedInfo {
        bytes: bytes.len() as u64,
        sha256: "ab".repeat(32),
        duration_ns: 8_000_000_000,
        video_frames: 200,
        audio_frames: 375,
        part_spans_ns: vec![(1, 0, 4_000_000_000), (2, 4_000_000_000, 8_000_000_000)],
    }
}

#[test]
fn final_recording_is_stitched_once_with_a_manifest_listing_the_gap() {
    let (dir, mut journal) = new_journal();
    two_part_recording(&mut journal, "lec");
    assert!(journal.request_stitch("lec", T0_MS + 15_000).unwrap());
    assert!(!journal.request_stitch("lec", T0_MS + 15_001).unwrap(), "a second request changes nothing");
    assert_eq!(journal.pending_stitches().unwrap(), ["lec"]);

    let mut job = journal.stitch_job("lec", T0_MS + 16_000).unwrap();
    assert_eq!(job.parts.iter().map(|p| (p.seq, p.segments.len())).collect::<Vec<_>>(), [(1, 2), (2, 2)]);
    assert!(job.parts[0].ended_abruptly() && !job.parts[1].ended_abruptly());
    job.file().write_all(b"not really an mp4").unwrap();
    let row = job.commit(&info(b"not really an mp4"), json!({"agent": "room-101"}), T0_MS + 17_000).unwrap();
    assert_eq!(row.state, "done");
    assert_eq!(row.path.as_deref(), Some("recordings/lec/lec.mp4"));
    assert!(journal.pending_stitches().unwrap().is_empty());

    let media = dir.path();
    assert_eq!(std::fs::read(media.join("recordings/lec/lec.mp4")).unwrap(), b"not really an mp4");
    assert!(!media.join("recordings/lec/stitched.mp4.partial").exists());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(media.join("recordings/lec/lec.manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["recording"]["id"], "lec");
    assert_eq!(manifest["device"]["agent"], "room-101");
    assert_eq!(manifest["parts"].as_array().unwrap().len(), 2);
    let gaps = manifest["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!((gaps[0]["cause"].as_str(), gaps[0]["duration_s"].as_f64()), (Some("power"), Some(6.0)));
    // Every segment's checksum is in the manifest and matches the journal.
    let segs = journal.segments("lec").unwrap();
    let listed: Vec<&str> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["segments"].as_array().unwrap().iter().map(|s| s["sha256"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, segs.iter().map(|s| s.sha256.as_deref().unwrap()).collect::<Vec<_>>());
    assert_eq!(manifest["stitched"]["sha256"], "ab".repeat(32));
    assert_eq!(manifest["parts"][1]["stitched_start_s"], 4.0);
}

#[test]
fn a_stitch_cut_short_restarts_and_gives_up_after_the_attempt_limit() {
    let (dir, mut journal) = new_journal();
    two_part_recording(&mut journal, "lec");
    journal.request_stitch("lec", T0_MS).unwrap();
    for attempt in 1..=MAX_STITCH_ATTEMPTS {
        let mut job = journal.stitch_job("lec", T0_MS + attempt).unwrap();
        job.file().write_all(b"half").unwrap();
        // The box dies mid-stitch: no commit. The next start finds the request still pending.
        drop(job);
        drop(journal);
        journal = reopen(dir.path(), T0_MS + attempt).0;
        assert_eq!(journal.pending_stitches().unwrap(), ["lec"], "attempt {attempt}");
        assert_eq!(journal.stitch_status("lec").unwrap().unwrap().attempts, attempt);
    }
    assert!(matches!(journal.stitch_job("lec", T0_MS + 10), Err(JournalError::StitchNotPending { .. })));
    let row = journal.stitch_status("lec").unwrap().unwrap();
    assert_eq!(row.state, "failed");
    assert!(row.error.unwrap().contains("3 attempts"));
    // The segments are untouched.
    assert_eq!(journal.segments("lec").unwrap().len(), 4);
}

#[test]
fn resuming_a_final_recording_reopens_it_and_a_running_stitch_is_discarded() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "ext");
    let mut w = journal.open_part("ext", "x264enc", T0_MS).unwrap();
    feed(&mut w, &stream(0, 3000, Psi::Stamped, key_every(1000)), Instant::now());
    w.finish(PartEnd::Interrupted("crash".into()), T0_MS + 3_000).unwrap();
    journal.finish_recording("ext", Outcome::Interrupted("crash".into()), T0_MS + 3_000).unwrap();
    assert_eq!(journal.interrupted_not_final().unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["ext"]);
    journal.request_stitch("ext", T0_MS + 4_000).unwrap();
    assert!(journal.interrupted_not_final().unwrap().is_empty());
    let job = journal.stitch_job("ext", T0_MS + 4_000).unwrap();

    // The event was extended: the recording resumes, which reopens it.
    start(&mut journal, "ext");
    assert_eq!(journal.stitch_status("ext").unwrap(), None);
    assert!(matches!(job.commit(&info(b""), json!({}), T0_MS + 5_000), Err(JournalError::StitchNotPending { .. })));
}

#[test]
fn a_recording_without_media_owes_no_stitch_and_bad_input_fails_the_stitch() {
    let (_dir, mut journal) = new_journal();
    start(&mut journal, "empty");
    journal.finish_recording("empty", Outcome::Completed, T0_MS).unwrap();
    assert!(!journal.request_stitch("empty", T0_MS).unwrap());
    assert!(matches!(journal.request_stitch("nope", T0_MS), Err(JournalError::UnknownRecording { .. })));

    two_part_recording(&mut journal, "bad");
    journal.request_stitch("bad", T0_MS).unwrap();
    let job = journal.stitch_job("bad", T0_MS).unwrap();
    job.fail("segment 3 is not MPEG-TS", T0_MS + 1).unwrap();
    let row = journal.stitch_status("bad").unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.error.as_deref()), ("failed", Some("segment 3 is not MPEG-TS")));
    assert!(journal.pending_stitches().unwrap().is_empty());
}

#[test]
fn gap_causes() {
    let part = |state, reason: Option<&str>| StitchPart {
        seq: 1,
        started_at_ms: 0,
        ended_at_ms: Some(1),
        state,
        end_reason: reason.map(str::to_string),
        encoder: "x264enc".into(),
        segments: vec![],
    };
    let cases = [
        (PartState::Interrupted, Some("power"), "power"),
        (PartState::Interrupted, Some("crash"), "crash"),
        (PartState::Interrupted, Some("writer lost"), "crash"),
        (PartState::Interrupted, Some("shutdown"), "shutdown"),
        (PartState::Failed, Some("camera unplugged"), "device error"),
        (PartState::Closed, None, "stopped"),
    ];
    for (state, reason, expect) in cases {
        assert_eq!(gap_cause(&part(state, reason)), expect, "{state:?} {reason:?}");
    }
}

#[test]
fn a_confirmed_upload_is_recorded_in_the_local_manifest() {
    let (dir, mut journal) = new_journal();
    two_part_recording(&mut journal, "lec");
    journal.request_stitch("lec", T0_MS + 15_000).unwrap();
    let mut job = journal.stitch_job("lec", T0_MS + 16_000).unwrap();
    job.file().write_all(b"mp4").unwrap();
    job.commit(&info(b"mp4"), json!({"agent": "room-101"}), T0_MS + 17_000).unwrap();
    let mut store = UploadStore::open(&journal.db_path()).unwrap();
    store.create(&NewUpload { recording_id: "lec", target: "opencast", spec: "{}", bytes_total: 3, not_before_ms: 0 }, T0_MS).unwrap();
    assert!(!journal.record_upload_in_manifest("lec").unwrap(), "not done yet: nothing written");
    store.move_endpoint("lec", "https://oc-b", "endpoint 0 failed 3 times in a row", false, T0_MS + 18_000).unwrap();
    store.complete("lec", "https://oc-b", "{}", "mp-lec", 3, T0_MS + 19_000).unwrap();
    assert!(journal.record_upload_in_manifest("lec").unwrap());
    let path = dir.path().join("recordings/lec/lec.manifest.json");
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let up = &manifest["upload"];
    assert_eq!((up["target"].as_str(), up["endpoint"].as_str(), up["remote_ref"].as_str()), (Some("opencast"), Some("https://oc-b"), Some("mp-lec")));
    assert_eq!(up["endpoint_log"][0]["why"], "endpoint 0 failed 3 times in a row");
    assert_eq!(manifest["recording"]["id"], "lec", "the rest of the manifest is kept");
    assert!(!dir.path().join("recordings/lec/lec.manifest.json.partial").exists());
    assert!(!journal.record_upload_in_manifest("nope").unwrap());
}

#[test]
fn the_manifest_carries_the_quality_report() {
    let (dir, mut journal) = new_journal();
    two_part_recording(&mut journal, "lec");
    let stretch = |part_seq, alarm: &str, from_ms, to_ms| SignalStretch { part_seq, alarm: alarm.into(), from_ms, to_ms };
    journal.record_signal_stretches("lec", 1, &[stretch(1, "black_picture", T0_MS + 500, Some(T0_MS + 2_500))]).unwrap();
    // A second report for part 2 replaces the first: the last one written is the part's.
    journal.record_signal_stretches("lec", 2, &[stretch(2, "clipping", T0_MS + 10_000, None)]).unwrap();
    journal.record_signal_stretches("lec", 2, &[stretch(2, "silent_mic", T0_MS + 11_000, None)]).unwrap();
    assert_eq!(journal.signal_stretches("lec").unwrap().len(), 2);
    journal.request_stitch("lec", T0_MS + 15_000).unwrap();
    let mut job = journal.stitch_job("lec", T0_MS + 16_000).unwrap();
    job.file().write_all(b"mp4").unwrap();
    job.commit(&info(b"mp4"), json!({}), T0_MS + 17_000).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("recordings/lec/lec.manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["quality"],
        json!({
            "verdict": "flagged",
            "stretches": [
                { "alarm": "black_picture", "part": 1, "from": "2023-11-14T22:13:20.500Z", "to": "2023-11-14T22:13:22.500Z", "duration_s": 2.0 },
                // Open at the part's end: it lasted until the part ended (T0 + 14 s).
                { "alarm": "silent_mic", "part": 2, "from": "2023-11-14T22:13:31.000Z", "to": "2023-11-14T22:13:34.000Z", "duration_s": 3.0 },
            ],
        })
    );
    let (_dir, mut clean) = new_journal();
    two_part_recording(&mut clean, "ok");
    assert_eq!(quality_json(&clean.signal_stretches("ok").unwrap(), &[], true), json!({ "verdict": "ok", "stretches": [] }));
}

#[test]
fn a_scheduled_lecture_of_silence_and_a_still_picture_is_an_empty_room_and_kept() {
    use crate::signal_report::{verdict, EMPTY_ROOM_SHARE};
    let s = |alarm: &str, from_ms, to_ms| SignalStretch { part_seq: 1, alarm: alarm.into(), from_ms, to_ms };
    let span = [(1u32, 0i64, Some(100_000i64))];
    let quiet_and_still = [s("silent_mic", 10_000, None), s("frozen_picture", 12_000, None)];
    assert_eq!(verdict(&quiet_and_still, &span, true), "empty_room");
    assert_eq!(verdict(&quiet_and_still, &span, false), "flagged", "an ad-hoc recording someone started is never an empty room");
    assert_eq!(verdict(&[s("silent_mic", 10_000, None), s("black_picture", 0, Some(90_000))], &span, true), "empty_room");
    // Silent but a moving picture (a lecture with a dead mic), or below the share: flagged.
    assert_eq!(verdict(&[s("silent_mic", 0, None)], &span, true), "flagged");
    let short = (EMPTY_ROOM_SHARE * 100_000.0) as i64 - 1_000;
    assert_eq!(verdict(&[s("silent_mic", 0, Some(short)), s("frozen_picture", 0, None)], &span, true), "flagged");
    assert_eq!(verdict(&[], &span, true), "ok");

    // Through the journal, as `lectern recordings` asks; the recording and its media stay.
    let (_dir, mut journal) = new_journal();
    two_part_recording(&mut journal, "stale");
    journal.record_signal_stretches("stale", 1, &[s("silent_mic", T0_MS, None), s("frozen_picture", T0_MS, None)]).unwrap();
    journal.record_signal_stretches("stale", 2, &[SignalStretch { part_seq: 2, ..s("silent_mic", T0_MS + 10_000, None) }, SignalStretch { part_seq: 2, ..s("frozen_picture", T0_MS + 10_000, None) }]).unwrap();
    let (v, alarms) = journal.quality("stale", true).unwrap();
    assert_eq!((v, alarms), ("empty_room", vec!["frozen_picture".to_owned(), "silent_mic".to_owned()]));
    assert_eq!(journal.segments("stale").unwrap().len(), 4, "flagged, never deleted");
}

#[test]
fn a_parts_one_frame_tail_segment_is_explained_in_the_manifest() {
    // A stop just after a keyframe (4.04 s with keyframes every 2 s) leaves a last segment of
    // one frame: it lasts one frame (not 0 s) and the manifest says why it is there. Full-length
    // segments, and a part of a single segment, carry no note.
    let (dir, mut journal) = new_journal();
    start(&mut journal, "tail");
    let mut w = journal.open_part("tail", "x264enc", T0_MS).unwrap();
    feed(&mut w, &stream(0, 4040, Psi::Stamped, key_every(2000)), Instant::now());
    w.finish(PartEnd::Closed, T0_MS + 4_040).unwrap();
    journal.finish_recording("tail", Outcome::Completed, T0_MS + 4_040).unwrap();
    start(&mut journal, "one");
    let mut w = journal.open_part("one", "x264enc", T0_MS).unwrap();
    feed(&mut w, &stream(0, 300, Psi::Stamped, key_every(2000)), Instant::now());
    w.finish(PartEnd::Closed, T0_MS + 300).unwrap();
    journal.finish_recording("one", Outcome::Completed, T0_MS + 300).unwrap();
    for id in ["tail", "one"] {
        assert!(journal.request_stitch(id, T0_MS + 5_000).unwrap());
        let mut job = journal.stitch_job(id, T0_MS + 5_000).unwrap();
        job.file().write_all(b"mp4").unwrap();
        job.commit(&info(b"mp4"), json!({}), T0_MS + 6_000).unwrap();
    }
    let read = |id: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("recordings/{id}/{id}.manifest.json"))).unwrap()).unwrap()
    };
    let m = read("tail");
    let segs = m["parts"][0]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[2]["duration_s"], 0.04);
    let note = segs[2]["note"].as_str().expect("the tail segment is explained");
    assert!(note.contains("0.040 s") && note.contains("keyframe"), "{note}");
    assert!(segs[..2].iter().all(|s| s.get("note").is_none()), "{segs:?}");
    let m = read("one");
    let segs = m["parts"][0]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 1);
    assert!(segs[0].get("note").is_none(), "a short recording's only segment is not a tail: {segs:?}");
}
