//! The checker for one crash state: opens the media directory with the real journal (running
//! its start-up recovery) and holds it to every promise made before the crash point.
//!
//! Invariants, beyond the per-promise ones in [`check_promise`]: the journal opens; the index
//! passes `PRAGMA integrity_check`; committed sequence numbers have no holes, every committed
//! row's file has its length and checksum, and every promised segment is still committed with
//! the promised length and checksum (`lectern_hil_tests::powercut::check_committed`, shared with
//! the cutfs power-cut runner); after recovery no part is open and no recording is `recording`
//! (`check_nothing_open`); recovery found no damaged committed segment (a committed row must
//! always describe bytes on the disk, whether or not its promise was announced yet); and a
//! second open has nothing left to repair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use lectern_hil_tests::powercut::{check_committed, check_nothing_open, Violation};
use lectern_hil_tests::{sha256_file, Seg};
use lectern_journal::{Journal, JournalOptions, DB_FILE};

use crate::promise::Promise;

fn violation(msg: String) -> anyhow::Error {
    Violation(msg).into()
}

/// What recovery did in one crash state, by action kind.
pub type Repairs = BTreeMap<&'static str, usize>;

/// Checks the media directory `media` of a mounted crash state against `promises` (those made
/// before the crash point). `Err` is a [`Violation`] (downcast to tell) or a failure to check.
pub fn check_state(media: &Path, promises: &[Promise], now_ms: i64) -> Result<Repairs> {
    let db_path = media.join(DB_FILE);
    if !db_path.exists() {
        if promises.contains(&Promise::JournalOpen) {
            return Err(violation(format!("{} is gone although Journal::open had returned", db_path.display())));
        }
        // The journal had not been opened yet: nothing was promised, and opening it now would
        // only create a fresh index.
        return Ok(Repairs::new());
    }
    let (journal, report) = Journal::open(media, JournalOptions::default(), now_ms).map_err(|e| violation(format!("the journal does not open: {e}")))?;
    drop(journal);
    let mut repairs = Repairs::new();
    for action in &report.actions {
        *repairs.entry(action.kind()).or_default() += 1;
    }
    if let Some(damage) = report.actions.iter().find(|a| a.is_damage()) {
        return Err(violation(format!("recovery found committed media damaged: {damage}")));
    }
    let db = rusqlite::Connection::open(&db_path).with_context(|| format!("open {}", db_path.display()))?;
    let integrity: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        return Err(violation(format!("integrity_check: {integrity}")));
    }
    for id in recordings(promises) {
        let exists: bool = db.query_row("SELECT EXISTS (SELECT 1 FROM recordings WHERE id = ?1)", [&id], |r| r.get(0))?;
        if !exists {
            return Err(violation(format!("recording {id} was started and has no row")));
        }
        let snapshot: Vec<Seg> = promises
            .iter()
            .filter_map(|p| match p {
                Promise::SegmentCommitted { id: pid, part, seq, bytes, sha256 } if *pid == id => Some(Seg {
                    part_seq: i64::from(*part),
                    seq: i64::from(*seq),
                    path: PathBuf::new(),
                    bytes: *bytes as i64,
                    sha256: sha256.clone(),
                    duration_ns: 0,
                    recovered: false,
                    state: "committed".into(),
                }),
                _ => None,
            })
            .collect();
        let committed = check_committed(&db, media, &id, &snapshot)?;
        check_nothing_open(&db, &id, None)?;
        for p in promises {
            check_promise(&db, media, &committed, p)?;
        }
        check_recording_state(&db, &id, promises)?;
    }
    drop(db);
    let (_, again) = Journal::open(media, JournalOptions::default(), now_ms).map_err(|e| violation(format!("the journal does not open a second time: {e}")))?;
    if !again.is_empty() {
        return Err(violation(format!("recovery is not idempotent: the second open did {again}")));
    }
    Ok(repairs)
}

/// The recordings the promises mention, in first-mention order.
fn recordings(promises: &[Promise]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for p in promises {
        if let Promise::RecordingStarted { id } = p {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    ids
}

/// One promise about parts, synced bytes or the stitch (segments and recordings are checked
/// as a whole by the caller).
fn check_promise(db: &rusqlite::Connection, media: &Path, committed: &[Seg], p: &Promise) -> Result<()> {
    match p {
        Promise::PartOpened { id, part } => {
            let n: i64 = db.query_row("SELECT count(*) FROM parts WHERE recording_id = ?1 AND seq = ?2", rusqlite::params![id, part], |r| r.get(0))?;
            if n != 1 {
                return Err(violation(format!("part {part} of {id} was opened and has no row")));
            }
        }
        Promise::PartEnded { id, part, state } => {
            let got: Option<String> = db
                .query_row("SELECT state FROM parts WHERE recording_id = ?1 AND seq = ?2", rusqlite::params![id, part], |r| r.get(0))
                .ok();
            if got.as_deref() != Some(state.as_str()) {
                return Err(violation(format!("part {part} of {id} ended {state} and is now {got:?}")));
            }
        }
        Promise::SegmentSynced { id, seq, bytes, sha256 } => {
            let Some(seg) = committed.iter().find(|s| s.seq == i64::from(*seq)) else {
                return Err(violation(format!("segment {seq} of {id} had {bytes} bytes synced and is not committed after recovery")));
            };
            if seg.bytes < *bytes as i64 {
                return Err(violation(format!("segment {seq} of {id} had {bytes} bytes synced and kept {}", seg.bytes)));
            }
            let data = std::fs::read(&seg.path).with_context(|| format!("read {}", seg.path.display()))?;
            if crate::hex_sha(&data[..*bytes as usize]) != *sha256 {
                return Err(violation(format!("segment {seq} of {id}: the {bytes} synced bytes changed")));
            }
        }
        Promise::StitchRequested { id } => {
            let state: Option<String> = db.query_row("SELECT state FROM stitches WHERE recording_id = ?1", [id], |r| r.get(0)).ok();
            if !matches!(state.as_deref(), Some("pending" | "done")) {
                return Err(violation(format!("the stitch of {id} was requested and its row is {state:?}")));
            }
        }
        Promise::StitchDone { id, path, bytes, sha256 } => {
            let row: Option<(String, Option<String>, Option<String>)> = db
                .query_row("SELECT state, sha256, manifest_path FROM stitches WHERE recording_id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .ok();
            let Some((state, row_sha, manifest)) = row else {
                return Err(violation(format!("the stitch of {id} was committed and has no row")));
            };
            if state != "done" || row_sha.as_deref() != Some(sha256.as_str()) {
                return Err(violation(format!("the stitch of {id} was committed and its row says {state} {row_sha:?}")));
            }
            let file = media.join(path);
            let len = std::fs::metadata(&file).map(|m| m.len()).map_err(|e| violation(format!("stitched file {}: {e}", file.display())))?;
            if len != *bytes || sha256_file(&file)? != *sha256 {
                return Err(violation(format!("stitched file {} has {len} bytes or a checksum other than its commit's ({bytes})", file.display())));
            }
            let manifest = media.join(manifest.ok_or_else(|| anyhow!("a done stitch row without a manifest path"))?);
            let text = std::fs::read(&manifest).map_err(|e| violation(format!("manifest {}: {e}", manifest.display())))?;
            serde_json::from_slice::<serde_json::Value>(&text).map_err(|e| violation(format!("manifest {} is not JSON: {e}", manifest.display())))?;
        }
        Promise::JournalOpen | Promise::RecordingStarted { .. } | Promise::SegmentCommitted { .. } | Promise::RecordingEnded { .. } => {}
    }
    Ok(())
}

/// The recording is at least as far as its latest promise: `completed` stays completed; an
/// `interrupted` one may since have been resumed and completed (recovery turns a resumed one that
/// crashed back into interrupted).
fn check_recording_state(db: &rusqlite::Connection, id: &str, promises: &[Promise]) -> Result<()> {
    let promised = promises.iter().rev().find_map(|p| match p {
        Promise::RecordingEnded { id: pid, state } if pid == id => Some(state.as_str()),
        Promise::RecordingStarted { id: pid } if pid == id => Some("started"),
        _ => None,
    });
    let state: String = db.query_row("SELECT state FROM recordings WHERE id = ?1", [id], |r| r.get(0))?;
    let allowed: &[&str] = match promised {
        Some("completed") => &["completed"],
        Some("interrupted") => &["interrupted", "completed"],
        _ => &["interrupted", "completed", "failed"],
    };
    if !allowed.contains(&state.as_str()) {
        return Err(violation(format!("recording {id} is {state} after recovery; its latest promise ({promised:?}) allows {allowed:?}")));
    }
    Ok(())
}
