//! Failsafe scenarios on the sim board: the power-fail line makes everything durable at once, and
//! a recording interrupted by power resumes as a new part when power stays up.

use std::time::{Duration, Instant};

use lectern_control::Request;
use lectern_hil_tests::{concat, decode_errors, discover, segments, sha256_file, wait_until, Daemon, SMALL};

#[test]
fn power_fail_edge_commits_everything_and_power_back_resumes_as_a_new_part() {
    // x264 without a tune holds ~17 frames (B-frames, lookahead, frame threads; the daemon's
    // default, zerolatency, holds none): the drain of phase 2 is what saves them, so this test
    // pins it (a hardware encoder or `x264_tune = "none"` box depends on it).
    let mut d = Daemon::start(&format!("{SMALL}[capture]\nx264_tune = \"none\"\n[power]\nhold_ms = 500\n")).unwrap();
    let id = d.ctl(Request::RecordStart { title: None }).unwrap()["recording"]["id"].as_str().unwrap().to_owned();
    wait_until("the first segment", Duration::from_secs(10), || d.segment_rows(1) > 0).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(3_300));
    // Frames that have entered the encoder before the edge: all of them must end up in part 1
    // (phase 2 of the power cut drains the encoder's ~17 frames instead of dropping them).
    let frames_before_edge = d.status()["capture"]["frames_in"].as_u64().unwrap();
    d.cli(&["sim", "powerfail", "on"]).unwrap();
    let warned_after = t0.elapsed();
    wait_until("power_lost", Duration::from_secs(5), || d.status()["state"] == "power_lost").unwrap();
    let status = d.status();
    assert_eq!(status["led"], "error", "{status}");
    let flush_ms = status["power"]["last_flush_ms"].as_f64().unwrap();
    assert!(flush_ms < 1_000.0, "edge to durable took {flush_ms} ms");

    // Everything is committed; the part and the recording say why they ended.
    let db = d.db().unwrap();
    let (state, reason): (String, String) =
        db.query_row("SELECT state, end_reason FROM recordings WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!((state.as_str(), reason.as_str()), ("interrupted", "power"));
    let (pstate, preason): (String, String) = db
        .query_row("SELECT state, end_reason FROM parts WHERE recording_id = ?1 AND seq = 1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!((pstate.as_str(), preason.as_str()), ("interrupted", "power"));
    let open: i64 = db.query_row("SELECT count(*) FROM segments WHERE state != 'committed'", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0);
    let segs = segments(&db, &d.media(), &id).unwrap();
    for s in &segs {
        assert_eq!(sha256_file(&s.path).unwrap(), s.sha256, "{s:?}");
    }
    let part1 = d.dir.path().join("part1.ts");
    concat(&segs, &part1).unwrap();
    let kept = discover(&part1).unwrap().duration;
    assert!(kept + Duration::from_millis(1_000) >= warned_after, "warned after {warned_after:?}, kept {kept:?}");
    // Nothing captured before the edge is lost (30 fps; one frame of tolerance for the estimate
    // of the last frame's duration). With `power.drain_ms = 0` this fails by ~0.6 s: x264's frames.
    let before_edge = Duration::from_secs_f64(frames_before_edge as f64 / 30.0);
    assert!(kept + Duration::from_millis(34) >= before_edge, "{frames_before_edge} frames had entered the encoder ({before_edge:?}), part 1 holds {kept:?}");
    assert!(status["power"]["last_drain_ms"].as_f64().is_some(), "the encoder was not drained: {status}");

    // Power comes back and stays: the same recording continues as part 2.
    d.cli(&["sim", "powerfail", "off"]).unwrap();
    wait_until("resumed", Duration::from_secs(10), || d.status()["state"] == "recording").unwrap();
    assert_eq!(d.status()["recording"]["id"], id.as_str());
    std::thread::sleep(Duration::from_secs(3));
    let stopped = d.ctl(Request::RecordStop).unwrap();
    assert_eq!(stopped["stopped"]["state"], "completed", "{stopped}");
    assert_eq!(stopped["stopped"]["parts"], 2, "{stopped}");
    let all = segments(&d.db().unwrap(), &d.media(), &id).unwrap();
    assert!(all.len() > segs.len());
    for (i, s) in all.iter().enumerate() {
        assert_eq!(s.seq, i as i64 + 1, "sequence has a hole: {all:?}");
        assert_eq!(sha256_file(&s.path).unwrap(), s.sha256, "{s:?}");
    }

    // The recording is final: both parts are stitched into one MP4 with a manifest.
    let stitch = wait_stitched(&d, &id);
    assert_eq!(stitch["state"], "done", "{stitch}");
    let mp4 = d.media().join(stitch["path"].as_str().unwrap());
    assert_eq!(sha256_file(&mp4).unwrap(), stitch["sha256"].as_str().unwrap());
    assert_decodes_cleanly(&mp4);
    let part2 = d.dir.path().join("part2.ts");
    concat(&all[segs.len()..], &part2).unwrap();
    let parts_total = kept + discover(&part2).unwrap().duration;
    let stitched = discover(&mp4).unwrap();
    assert!(stitched.has_video && stitched.has_audio, "{stitched:?}");
    let diff = stitched.duration.as_secs_f64() - parts_total.as_secs_f64();
    assert!(diff.abs() < 0.2, "stitched {:?} vs parts {parts_total:?}: the outage must be cut out, nothing else", stitched.duration);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.media().join(stitch["manifest"].as_str().unwrap())).unwrap()).unwrap();
    assert_eq!(manifest["recording"]["id"], id.as_str());
    assert_eq!(manifest["parts"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["gaps"][0]["cause"], "power", "{manifest}");
    assert_eq!(manifest["stitched"]["sha256"], stitch["sha256"]);
    let listed = manifest["parts"].as_array().unwrap().iter().flat_map(|p| p["segments"].as_array().unwrap().clone()).count();
    assert_eq!(listed, all.len());
    assert!(d.terminate().unwrap().success());
}

/// Waits for the recording's stitch to finish and returns its `stitch` object from `recordings`.
fn wait_stitched(d: &Daemon, id: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = wait_until("the stitch", Duration::from_secs(30), || {
        let list = d.ctl(Request::Recordings).unwrap();
        last = list["recordings"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["stitch"].clone();
        matches!(last["state"].as_str(), Some("done" | "failed"))
    });
    found.unwrap_or_else(|e| panic!("{e}: last {last}\n{}", d.log_text()));
    last
}

/// ffmpeg decodes every frame of `path` without a single error message.
fn assert_decodes_cleanly(path: &std::path::Path) {
    let errors = decode_errors(path).unwrap();
    assert!(errors.is_empty(), "{} does not decode cleanly:\n{}", path.display(), errors.join("\n"));
}
