//! On-disk layout of the media directory and the one filesystem primitive
//! the commit protocol needs beyond `File::sync_*`: fsyncing a directory so
//! that a newly created or removed entry survives a power cut.
//!
//! Layout: `MEDIA/lectern.db` and
//! `MEDIA/recordings/<recording_id>/part-NNNN/seg-NNNNNN.ts`, where the part
//! number counts within the recording and the segment number is the
//! recording-wide segment sequence (so a plain `ls` of all parts sorts in
//! playback order).

use std::fs::File;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Name of the index database inside the media directory.
pub const DB_FILE: &str = "lectern.db";
/// Directory holding one sub-directory per recording.
pub const RECORDINGS_DIR: &str = "recordings";

/// Relative path of a part directory.
pub(crate) fn part_dir_rel(recording_id: &str, part_seq: u32) -> String {
    format!(
        "{RECORDINGS_DIR}/{recording_id}/{}",
        part_dir_name(part_seq)
    )
}

/// Directory name of a part.
pub(crate) fn part_dir_name(part_seq: u32) -> String {
    format!("part-{part_seq:04}")
}

/// Relative path of a segment file.
pub(crate) fn segment_rel(recording_id: &str, part_seq: u32, seq: u32) -> String {
    format!("{}/seg-{seq:06}.ts", part_dir_rel(recording_id, part_seq))
}

/// Parses `part-NNNN` back into a part number.
pub(crate) fn parse_part_dir_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("part-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// True for names the journal itself would give a segment file.
pub(crate) fn is_segment_file_name(name: &str) -> bool {
    name.strip_prefix("seg-")
        .and_then(|rest| rest.strip_suffix(".ts"))
        .is_some_and(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Makes the entries of `dir` durable. On Linux a created, renamed or
/// removed file is only guaranteed to survive a power cut once its parent
/// directory has been fsynced.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    if crate::fault::active() == Some(crate::fault::Fault::SkipDirFsync) {
        return Ok(());
    }
    let handle = File::open(dir).io("open directory for fsync", dir)?;
    handle.sync_all().io("fsync directory", dir)
}
