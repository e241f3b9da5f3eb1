//! The stitcher's single error type, [`StitchError`]. Every variant about bad
//! input names the file and the byte offset in it, so one log line says which
//! segment to look at.

use std::io;
use std::path::PathBuf;

/// Where in the input something was found: a segment file and a byte offset
/// in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    /// The segment file.
    pub file: PathBuf,
    /// Byte offset of the TS packet (or PES start) in that file.
    pub offset: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.file.display(), self.offset)
    }
}

/// Everything that can go wrong while stitching.
#[derive(Debug, thiserror::Error)]
pub enum StitchError {
    /// Reading a segment file failed.
    #[error("read {path}: {source}")]
    Read {
        /// The segment file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Writing the output failed.
    #[error("write output: {0}")]
    Write(#[source] io::Error),

    /// A packet does not start with the MPEG-TS sync byte 0x47: the file is
    /// not a transport stream (or is damaged in the middle, which crash
    /// recovery never produces).
    #[error("{pos}: not an MPEG-TS packet (sync byte 0x{found:02x}, expected 0x47)")]
    NotTs {
        /// Where the packet should have started.
        pos: Pos,
        /// The byte found instead of 0x47.
        found: u8,
    },

    /// The transport stream is structurally wrong (a PAT, PMT or PES header
    /// that cannot be parsed, H.264 or ADTS data that is not what the PMT
    /// says).
    #[error("{pos}: {what}")]
    Malformed {
        /// Where the bad structure starts.
        pos: Pos,
        /// What was wrong.
        what: String,
    },

    /// A part's PMT announces no H.264 video stream (stream type 0x1b), or
    /// the part has no PMT at all.
    #[error("part {part} ({first_file}): no H.264 video stream")]
    NoVideo {
        /// Index of the part in the input (0-based).
        part: usize,
        /// The part's first segment file.
        first_file: PathBuf,
    },

    /// A part contains no complete video access unit, so there is nothing to
    /// stitch for it.
    #[error("part {part} ({first_file}): no complete video frame")]
    EmptyPart {
        /// Index of the part in the input (0-based).
        part: usize,
        /// The part's first segment file.
        first_file: PathBuf,
    },

    /// A later part's stream differs in a way one MP4 track cannot hold (a
    /// different SPS/PPS, sample rate or channel layout).
    #[error("{pos}: {what} differs from the first part's; one MP4 track cannot hold both")]
    Incompatible {
        /// Where the different configuration was found.
        pos: Pos,
        /// What differs, e.g. "H.264 SPS".
        what: &'static str,
    },

    /// The input changed between the two passes (a segment was rewritten
    /// while stitching). The output is incomplete and must be discarded.
    #[error("{pos}: input changed between the two passes ({what})")]
    Changed {
        /// Where the second pass disagreed with the first.
        pos: Pos,
        /// What disagreed.
        what: String,
    },

    /// No parts, or a part without segment files.
    #[error("nothing to stitch: {0}")]
    NoInput(String),

    /// [`crate::verify`] found an MP4 that is not what the stitcher writes.
    #[error("verify {path}: {what}")]
    Verify {
        /// The MP4 file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = StitchError> = std::result::Result<T, E>;

/// Builds a [`StitchError::Malformed`].
pub(crate) fn malformed(pos: &Pos, what: impl Into<String>) -> StitchError {
    StitchError::Malformed {
        pos: pos.clone(),
        what: what.into(),
    }
}
