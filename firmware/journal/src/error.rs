//! The journal's single error type, [`JournalError`], and the small context
//! helpers that attach a path and an action to every I/O and SQLite failure, so
//! that a log line on the box says *which* file or database went wrong and
//! what the journal was trying to do at the time.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the journal.
///
/// Every variant carries enough context (a path, a recording id, the action
/// being attempted) to be understood from a single log line without a
/// backtrace.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A recording id is unusable as a directory name. Ids become path
    /// components under the media directory, so they are restricted to
    /// `[A-Za-z0-9._-]`, 1..=128 characters, not starting with `.`.
    #[error("invalid recording id {id:?}: {reason}")]
    InvalidRecordingId {
        /// The rejected id, verbatim.
        id: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// The media directory does not exist. The journal refuses to create it,
    /// because a missing media directory usually means the SD card or USB
    /// disk is not mounted, and recording onto the root filesystem instead
    /// would silently fill it.
    #[error("media directory {path} does not exist (is the media volume mounted?)")]
    MediaDirMissing {
        /// The configured media directory.
        path: PathBuf,
    },

    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the journal was doing, e.g. "fsync segment".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A SQLite operation on the index failed.
    #[error("{action} in {path}: {source}")]
    Db {
        /// What the journal was doing, e.g. "commit segment".
        action: &'static str,
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },

    /// The database was written by a newer firmware with a schema this build
    /// does not understand. The journal refuses to touch it rather than
    /// guess.
    #[error(
        "database {path} has schema version {found}, this firmware supports up to {supported}"
    )]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build can read.
        supported: i64,
    },

    /// The recording id is not in the index.
    #[error("recording {id} does not exist")]
    UnknownRecording {
        /// The id asked for.
        id: String,
    },

    /// The recording has already ended as completed or failed, which are
    /// final states: it can be neither restarted nor given new parts.
    #[error("recording {id} has already ended as {state}")]
    RecordingEnded {
        /// The recording id.
        id: String,
        /// Its final state.
        state: String,
    },

    /// A part can only be opened on a recording in state `recording`; call
    /// [`crate::Journal::start_recording`] first.
    #[error("recording {id} is {state}, not recording; start it before opening a part")]
    RecordingNotActive {
        /// The recording id.
        id: String,
        /// Its current state.
        state: String,
    },

    /// The recording has no pending stitch (never requested, already done or failed, or
    /// reopened by a resume while it was being stitched).
    #[error("recording {id} has no pending stitch")]
    StitchNotPending {
        /// The recording id.
        id: String,
    },

    /// A stitch writes about as many bytes as the recording's segments hold; it waits (the row
    /// stays pending, no attempt is counted) until that much plus the reserve is free, so a full
    /// card delays a stitch instead of failing it — uploads and retention free the space.
    #[error(
        "recording {id}: stitching needs {} MB plus the {} MB reserve, but {path} has {} MB free; waiting for uploads and retention to free space",
        needed_bytes / (1024 * 1024),
        reserve_bytes / (1024 * 1024),
        free_bytes / (1024 * 1024)
    )]
    StitchNeedsSpace {
        /// The recording id.
        id: String,
        /// The media directory.
        path: PathBuf,
        /// Bytes of its committed segments (about what the stitched file needs).
        needed_bytes: u64,
        /// Bytes free for writing when it was read.
        free_bytes: u64,
        /// The reserve the journal keeps.
        reserve_bytes: u64,
    },

    /// Less than the configured reserve (`journal.min_free_mb`) is free on the media volume: no
    /// part opens, and a recording part is committed and ended at its next segment cut, long
    /// before a write would fail with ENOSPC or SQLite with SQLITE_FULL.
    #[error(
        "storage full: {path} has {} MB free, below the {} MB reserve (journal.min_free_mb)",
        free_bytes / (1024 * 1024),
        reserve_bytes / (1024 * 1024)
    )]
    StorageFull {
        /// The media directory.
        path: PathBuf,
        /// Bytes free for writing when it was read.
        free_bytes: u64,
        /// The reserve the journal keeps.
        reserve_bytes: u64,
    },

    /// A live [`crate::PartWriter`] still owns an open part of this
    /// recording; it must be finished (or dropped) first.
    #[error("recording {id} still has a live writer on part {part_seq}")]
    WriterActive {
        /// The recording id.
        id: String,
        /// The sequence number of the live part.
        part_seq: u32,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// Attaches an action and a path to an [`io::Error`].
pub(crate) trait IoContext<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| JournalError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Attaches an action and the database path to a [`rusqlite::Error`].
pub(crate) trait DbContext<T> {
    fn db(self, action: &'static str, db_path: &Path) -> Result<T>;
}

impl<T> DbContext<T> for rusqlite::Result<T> {
    fn db(self, action: &'static str, db_path: &Path) -> Result<T> {
        self.map_err(|source| JournalError::Db {
            action,
            path: db_path.to_path_buf(),
            source,
        })
    }
}
