//! Power cuts during an upload (issue 9 §1): the real daemon, its media on cutfs, uploading a
//! stitched lecture to the Opencast double in 1 MiB chunks at 500 kB/s, cut at seeded random
//! instants plus one cut with the server a chunk ahead of the journal and one with the ingest
//! taken but unanswered (hil-tests/src/powercut_upload.rs has the invariants).
//! `LECTERN_POWERCUT_SEED=N` replays the instants.
//!
//! The self-test runs the same scenario with the job's progress wiped from the journal after
//! every cut (what a store that did not persist it would leave) and requires a violation: a
//! harness that cannot fail proves nothing. The scenarios run one at a time (two daemons would
//! fight for the 2 CI cores and the timing the cuts rely on).

use std::sync::Mutex;

use lectern_hil_tests::powercut::{can_mount, seed_from_env};
use lectern_hil_tests::powercut_upload::{is_violation, run, CutKind, HarnessFault, UploadOptions};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn cuts_during_an_upload_leave_one_ingest_of_the_whole_file_resumed_from_the_server() {
    if !can_mount() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed_from_env().unwrap();
    eprintln!("power-cut upload seed {seed} (replay: LECTERN_POWERCUT_SEED={seed})");
    let report = run(&UploadOptions::new(6, seed)).unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    eprintln!("{report:#?}");
    assert_eq!(report.cuts.len(), 7);
    let in_flight = report.cuts.iter().filter(|c| c.phase != "done").count();
    assert_eq!(in_flight, 7, "seed {seed}: every cut must land while the upload is in flight: {:?}", report.cuts);
    assert!(report.cuts.iter().any(|c| c.kind == CutKind::ServerAhead && c.server_ahead()), "seed {seed}: the server-ahead cut did not find the server ahead");
    assert!(report.cuts.iter().any(|c| c.kind == CutKind::IngestHeld), "seed {seed}: no ingest-held cut");
    assert!(report.cuts.iter().filter(|c| c.kind == CutKind::Random).any(|c| c.server_chunks > 0), "seed {seed}: no random cut after the first chunk");
}

#[test]
fn self_test_a_store_that_forgets_the_progress_is_caught() {
    if !can_mount() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let seed = seed_from_env().unwrap();
    // Cuts late enough that a chunk is confirmed before the progress is wiped.
    let opts = UploadOptions {
        cut_after: (std::time::Duration::from_millis(2_500), std::time::Duration::from_millis(3_500)),
        server_ahead_at: None,
        ingest_cut: false,
        fault: Some(HarnessFault::ForgetProgress),
        ..UploadOptions::new(3, seed)
    };
    match run(&opts) {
        Ok(report) => panic!("the harness passed an upload that forgot its progress (seed {seed}): {report:#?}"),
        Err(e) if is_violation(&e) => eprintln!("caught: {e:#}"),
        Err(e) => panic!("the run failed, but not on an invariant (seed {seed}): {e:#}"),
    }
}
