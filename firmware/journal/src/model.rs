//! The journal's public value types: options, the small string-backed state
//! enums stored in SQLite, the inputs callers hand in (`NewRecording`,
//! `Outcome`, `PartEnd`) and the rows and summaries handed back out. It also
//! owns recording-id validation, because ids become directory names and must
//! be checked before any path is built from them.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::Serialize;

use crate::error::{JournalError, Result};
use crate::space::FreeSpace;

/// Tunables of the journal. Both durations are compared against the
/// [`std::time::Instant`] / PTS values the caller passes in, never against a
/// clock read inside the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// Minimum media time of a segment before it is cut at the next keyframe.
    pub segment_target: Duration,
    /// Maximum time unsynced data may sit in the page cache while a segment
    /// is open; this bounds what a power cut can take.
    pub fsync_interval: Duration,
    /// Bytes kept free on the media volume (`journal.min_free_mb`): no part opens below it, and
    /// a recording part ends at the segment cut that finds less. Zero turns the guard off.
    pub min_free_bytes: u64,
    /// How free space is read; [`FreeSpace::STATVFS`] except in tests.
    pub free_space: FreeSpace,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_target: Duration::from_secs(2),
            fsync_interval: Duration::from_millis(800),
            // Off in the library: the reserve is a deployment decision the daemon takes from
            // `journal.min_free_mb` (default 256 MB there).
            min_free_bytes: 0,
            free_space: FreeSpace::STATVFS,
        }
    }
}

/// Generates a fieldless enum that is stored in SQLite as a lowercase string
/// and serialised the same way, so the database, the JSON API and the logs
/// all spell states identically.
macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The spelling used in the database, JSON and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the database spelling.
            pub fn parse(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!(
                        concat!("unknown ", stringify!($name), " {:?} in database"),
                        text
                    ).into())
                })
            }
        }
    };
}

str_enum!(
    /// How a recording was started.
    RecordingKind {
        /// Started by a button press or the control API.
        Adhoc => "adhoc",
        /// Started by the schedule.
        Scheduled => "scheduled",
    }
);

str_enum!(
    /// Lifecycle of a recording. `completed` and `failed` are final;
    /// `interrupted` may be resumed back to `recording`.
    RecordingState {
        /// Media is (or was, until a crash) being written.
        Recording => "recording",
        /// Ended normally with at least one committed segment.
        Completed => "completed",
        /// Ended by a crash, power cut or operator stop before its end.
        Interrupted => "interrupted",
        /// Ended by an error, or ended with no media at all.
        Failed => "failed",
    }
);

str_enum!(
    /// Lifecycle of a part (one continuous run of one encoder).
    PartState {
        /// A writer owns it (or owned it until a crash).
        Open => "open",
        /// Finished normally.
        Closed => "closed",
        /// Ended by a crash or an interruption.
        Interrupted => "interrupted",
        /// Ended by an error.
        Failed => "failed",
    }
);

str_enum!(
    /// Lifecycle of a segment file.
    SegmentState {
        /// Being written; its bytes and checksum are not final.
        Open => "open",
        /// Data fsynced, directory fsynced and row committed.
        Committed => "committed",
    }
);

/// What the caller wants recorded when starting a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecording {
    /// Filesystem-safe id, see [`validate_recording_id`].
    pub id: String,
    /// Human-readable title.
    pub title: String,
    /// Ad-hoc or scheduled.
    pub kind: RecordingKind,
    /// The calendar event this recording belongs to, if scheduled.
    pub event_uid: Option<String>,
}

/// How the recorder wants a recording to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Normal end. Becomes `failed` with reason "no media" if nothing was
    /// committed.
    Completed,
    /// Stopped early, with a reason.
    Interrupted(String),
    /// Ended by an error, with a reason.
    Failed(String),
}

/// How a writer wants its part to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartEnd {
    /// Normal end of stream.
    Closed,
    /// Stopped early, with a reason.
    Interrupted(String),
    /// Ended by an error, with a reason.
    Failed(String),
}

/// One recording with its aggregate media statistics (committed segments
/// only; for an evicted recording, the totals from before its eviction).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingSummary {
    /// Recording id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Ad-hoc or scheduled.
    pub kind: RecordingKind,
    /// Current state.
    pub state: RecordingState,
    /// Calendar event, if any.
    pub event_uid: Option<String>,
    /// Wall-clock start, ms since the Unix epoch.
    pub started_at_ms: i64,
    /// Wall-clock end, if ended.
    pub ended_at_ms: Option<i64>,
    /// Why it ended, if not completed normally.
    pub end_reason: Option<String>,
    /// Number of parts.
    pub parts: u32,
    /// Number of committed segments.
    pub segments: u32,
    /// Total bytes of committed segments.
    pub bytes: u64,
    /// Sum of committed segment durations.
    pub media_duration_ns: u64,
    /// When the retention policy began evicting its media (segments and stitched file; the
    /// manifest stays), ms since the epoch; `None` while the media is on the card. `segments`,
    /// `bytes` and `media_duration_ns` keep reporting what was recorded.
    pub evicted_at_ms: Option<i64>,
}

/// One segment row, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentRow {
    /// Row id.
    pub id: i64,
    /// Owning recording.
    pub recording_id: String,
    /// Sequence number of the owning part (1-based).
    pub part_seq: u32,
    /// Sequence number within the recording (1-based, continuous across
    /// parts).
    pub seq: u32,
    /// Path relative to the media directory, `/`-separated.
    pub path: String,
    /// Absolute path on this box.
    pub abs_path: PathBuf,
    /// Size in bytes (0 while open).
    pub bytes: u64,
    /// Media duration, once known.
    pub duration_ns: Option<u64>,
    /// First PTS, in the capture pipeline's time base.
    pub first_pts_ns: Option<u64>,
    /// Last (largest) PTS seen.
    pub last_pts_ns: Option<u64>,
    /// Lowercase hex SHA-256 of the file, once committed.
    pub sha256: Option<String>,
    /// Loudest audio peak in the segment, dBFS.
    pub audio_peak_db: Option<f64>,
    /// Power-mean audio RMS in the segment, dBFS.
    pub audio_rms_db: Option<f64>,
    /// Open or committed.
    pub state: SegmentState,
    /// True if committed by crash recovery rather than by its writer.
    pub recovered: bool,
    /// When it was committed, ms since the epoch.
    pub committed_at_ms: Option<i64>,
}

/// One row of the state-transition log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateLogRow {
    /// Row id, increasing.
    pub id: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The recording concerned, if any.
    pub recording_id: Option<String>,
    /// Short machine-readable state or event name.
    pub state: String,
    /// Human-readable detail.
    pub detail: String,
}

/// A segment that has just been committed by a writer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CommittedSegment {
    /// Owning recording.
    pub recording_id: String,
    /// Sequence number of the owning part.
    pub part_seq: u32,
    /// Sequence number within the recording.
    pub seq: u32,
    /// Path relative to the media directory.
    pub path: String,
    /// Absolute path.
    pub abs_path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Media duration, if any PTS was seen.
    pub duration_ns: Option<u64>,
    /// First PTS.
    pub first_pts_ns: Option<u64>,
    /// Last (largest) PTS.
    pub last_pts_ns: Option<u64>,
    /// Loudest audio peak, dBFS.
    pub audio_peak_db: Option<f64>,
    /// Power-mean RMS, dBFS.
    pub audio_rms_db: Option<f64>,
}

/// What [`crate::PartWriter::finish`] reports about the part it closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartSummary {
    /// Owning recording.
    pub recording_id: String,
    /// Sequence number of the part.
    pub part_seq: u32,
    /// Final state of the part.
    pub state: PartState,
    /// Why it ended, if not closed normally.
    pub end_reason: Option<String>,
    /// Segments committed by this part.
    pub segments: u32,
    /// Bytes committed by this part.
    pub bytes: u64,
    /// The last segment committed, if any.
    pub last_segment: Option<CommittedSegment>,
}

/// Longest accepted recording id.
pub const MAX_RECORDING_ID_LEN: usize = 128;

/// Checks that `id` is safe to use as a single directory name on any
/// filesystem the media volume might use: 1..=128 characters from
/// `[A-Za-z0-9._-]`, not starting with `.` (which rules out `.`, `..` and
/// hidden directories).
pub fn validate_recording_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("must not be empty")
    } else if id.len() > MAX_RECORDING_ID_LEN {
        Some("must be at most 128 characters")
    } else if id.starts_with('.') {
        Some("must not start with '.'")
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(JournalError::InvalidRecordingId {
            id: id.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}
