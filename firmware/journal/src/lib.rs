//! The journal: the only crate that writes under the media directory. It
//! stores each recording as MPEG-TS segment files (about two seconds each,
//! cut on keyframes) plus a SQLite index, and it guarantees that after any
//! power cut the index and the files agree again once [`Journal::open`] has
//! run.
//!
//! **Architecture Invariant:** nothing else writes under the media
//! directory, and nothing here knows about GStreamer: the capture pipeline
//! hands in muxed bytes with a PTS and a keyframe flag.
//!
//! # Layout
//!
//! ```text
//! MEDIA/lectern.db                                   SQLite index (WAL)
//! MEDIA/recordings/<recording_id>/part-0001/seg-000001.ts
//! MEDIA/recordings/<recording_id>/part-0002/seg-000042.ts
//! MEDIA/recordings/<recording_id>/<recording_id>.mp4            stitched (stitch_store.rs)
//! MEDIA/recordings/<recording_id>/<recording_id>.manifest.json
//! ```
//!
//! Once the upload target has confirmed a recording, the retention policy may evict its part
//! directories and stitched file; the manifest stays (see *Retention* below).
//!
//! Recording ids are validated ([`validate_recording_id`]) because they
//! become directory names. A *part* is one continuous run of one encoder;
//! its number counts within the recording. The segment number in a file
//! name is the recording-wide sequence, continuous across parts.
//!
//! # Schema (version 1, in `PRAGMA user_version`)
//!
//! The database runs with `journal_mode=WAL`, `synchronous=FULL`,
//! `foreign_keys=ON` and a 5 s busy timeout (the main-thread [`Journal`] and
//! each writer-thread [`PartWriter`] have their own connection).
//!
//! - `recordings(id TEXT PK, title, kind 'adhoc'|'scheduled', event_uid NULL,
//!   state 'recording'|'completed'|'interrupted'|'failed', started_at_ms,
//!   ended_at_ms NULL, end_reason NULL)`
//! - `parts(id PK, recording_id, seq 1.., started_at_ms, ended_at_ms NULL,
//!   state 'open'|'closed'|'interrupted'|'failed', end_reason NULL, encoder)`,
//!   unique `(recording_id, seq)`
//! - `segments(id PK, recording_id, part_id, seq, path UNIQUE (relative to
//!   MEDIA), bytes, duration_ns, first_pts_ns, last_pts_ns, sha256 (hex),
//!   audio_peak_db, audio_rms_db, state 'open'|'committed', recovered 0/1,
//!   opened_at_ms, committed_at_ms)`, unique `(recording_id, seq)`; `seq`
//!   counts per recording across parts, and committed segments have no holes
//!   because only the newest segment of a recording can ever be open or
//!   dropped
//! - `state_log(id PK, at_ms, recording_id NULL, state, detail)`: recording
//!   and part transitions and every recovery action, pruned on insert to the
//!   newest 10 000 rows with one primary-key range delete
//!
//! Tables added after v1 are created by their owning module (`ADDITIVE_SCHEMA` in `db.rs`) and
//! documented there: `outbox*` (`outbox.rs`), `stitches` (`stitch_store.rs`), the schedule
//! cache (`schedule_cache.rs`), `uploads` (`upload_store.rs`) and `evictions(recording_id PK,
//! why, started_at_ms, done_at_ms NULL, segments, bytes, duration_ns, bytes_freed)`
//! (`retention.rs`): one row per recording whose media was evicted, holding the totals of the
//! `segments` rows that eviction deletes.
//!
//! # Commit protocol
//!
//! **Architecture Invariant:** a segment is `committed` only after its data
//! is fsynced, its directory is fsynced, and the row update is committed —
//! in that order. A committed row therefore always describes bytes that are
//! on the card.
//!
//! 1. *Open*: insert the row with `state='open'` (committed; at a cut in the
//!    same transaction that commits the previous segment's row), then
//!    create the file, then fsync the part directory. A crash can leave a row
//!    without a file, never a file without a row. Opening a part fsyncs the
//!    new part directory's ancestors (recording dir, `recordings/`, MEDIA).
//! 2. *Write*: bytes go through a 16 KiB buffer into the file and into a
//!    running SHA-256; the buffer hands the kernel whole 4 KiB pages only.
//!    At least every `fsync_interval` (measured on the `Instant` the caller
//!    passes in) the buffer is written out and `sync_data` called, bounding
//!    what a power cut can take. A partial last page younger than
//!    `fsync_interval / 20` stays in the buffer until the next sync: syncing
//!    it would clean a page the next write dirties again (write
//!    amplification), and holding it keeps the loss bound at 1.05 ×
//!    `fsync_interval`. A writer dropped without `finish` writes its buffer
//!    out (like a crashed process whose last write reached the page cache).
//! 3. *Cut*: when a keyframe chunk arrives and the open segment spans at
//!    least ¾ of `segment_target` of media time (this chunk's PTS minus the
//!    segment's first PTS; encoders place keyframes only approximately), the
//!    open segment is flushed, `sync_all`ed, its
//!    directory fsynced, and its row updated to `committed` with bytes,
//!    SHA-256, PTS range, duration and audio levels; the next segment's open
//!    row is inserted in the same transaction (one WAL commit per cut, for
//!    write amplification), then the keyframe chunk opens its file.
//!    *Storage-full guard*: each cut first reads the free space under the
//!    media directory (one `statvfs`, [`FreeSpace`]); below `min_free_bytes`
//!    the open segment is committed alone, no next one opens, and the push
//!    (and every later one) returns [`JournalError::StorageFull`]. Opening a
//!    part below the reserve is refused the same way before anything exists.
//! 4. *Finish*: the open segment is committed the same way (or, if it holds
//!    no bytes, its file and then its row are removed) and the part is
//!    marked closed, interrupted or failed.
//!
//! SQLite pages are 512 bytes, its smallest (set when the database is created), also for
//! write amplification: each cut rewrites a few B-tree pages into the WAL and again at
//! checkpoint.
//!
//! Durations: a cut segment lasts until the next segment's first PTS, so
//! consecutive segments tile the timeline. A part's final segment lasts
//! `last PTS − first PTS` plus the mean positive step between successive
//! chunk PTS values, as an estimate of its last frame (rough when audio and
//! video interleave). A recovered segment gets the PTS span found in the
//! file, a lower bound short of one frame. Audio levels: peak is the
//! maximum, RMS is the power mean of the level messages pushed during the
//! segment.
//!
//! # Recovery
//!
//! [`Journal::open`] repairs whatever a crash left (see [`recovery`] for
//! the steps): open segments are truncated to whole 188-byte packets,
//! re-checksummed and committed with `recovered=1` (or dropped if nothing
//! usable remains), open parts and active recordings become `interrupted`
//! with reason `crash`, the newest committed segment of each crashed
//! recording is verified against its row, and segment files without a row
//! are removed from known part directories; an eviction a crash cut short is
//! finished. Every action is logged, stored in
//! `state_log` and returned in a [`RecoveryReport`]. Running it twice changes
//! nothing the second time.
//!
//! A [`PartWriter`] dropped without [`PartWriter::finish`] (say, its thread
//! panicked) commits nothing; its part is recovered in place, with reason
//! "writer lost", by the next [`Journal::open_part`] or
//! [`Journal::finish_recording`] for that recording.
//!
//! # Retention
//!
//! [`Journal::enforce_retention`] deletes media that is safe on the server (see `retention.rs`
//! for the rules and the crash-safe order). **Invariant:** a recording's media is evicted only
//! when its upload job is `done` (confirmed no earlier than its latest stitch), it is not
//! recording, has no open part and its stitch is not pending; first when the
//! [`RetentionPolicy`] window after the confirmation has passed, then, while free space is below
//! the low water mark, oldest recording first. A recording with no upload job, or one queued,
//! active or parked, is never evicted, however full the card. Eviction removes the segment
//! files, part directories and stitched file and the `segments` rows; it keeps the manifest,
//! the `recordings`/`parts`/`stitches`/`uploads` rows, and the totals (in `evictions`, which
//! [`RecordingSummary`] reports with `evicted_at_ms`). The `evictions` row is committed before
//! the first file is deleted, so an eviction cut short is finished, never undone, by the next
//! [`Journal::open`] or [`Journal::enforce_retention`]; the same makes eviction divisible into
//! slices of a bounded number of files ([`Journal::enforce_retention_bounded`]). An evicted
//! recording cannot be resumed.
//!
//! # State transitions
//!
//! ```text
//! recording:  (new) -> recording -> completed | failed        (final)
//!                               \-> interrupted -> recording  (resume, new part)
//! part:       open -> closed | interrupted | failed
//! segment:    open -> committed          (or row deleted if it held no media;
//!                                         rows of an evicted recording are deleted)
//! media:      on card -> evicting (evictions row, done_at_ms NULL) -> evicted   (final)
//! ```
//!
//! Threads: the [`Journal`] lives on the main thread; each [`PartWriter`] is
//! `Send` and owns its own connection. There are no locks between them other
//! than SQLite's write lock (waited for up to 5 s) and the tiny set of live
//! part ids, which is never held across I/O.

mod db;
mod error;
mod fault;
mod fsio;
mod journal;
mod levels;
mod model;
mod outbox;
pub mod recovery;
mod retention;
mod schedule_cache;
mod signal_report;
mod space;
mod stitch_store;
mod ts;
mod upload_store;
mod writer;

pub use db::{SCHEMA_VERSION, STATE_LOG_KEEP};
pub use error::{JournalError, Result};
pub use fault::{Fault, FAULT_ENV};
pub use fsio::{DB_FILE, RECORDINGS_DIR};
pub use journal::Journal;
pub use levels::LevelAccumulator;
pub use model::{
    validate_recording_id, CommittedSegment, JournalOptions, NewRecording, Outcome, PartEnd,
    PartState, PartSummary, RecordingKind, RecordingState, RecordingSummary, SegmentRow,
    SegmentState, StateLogRow, MAX_RECORDING_ID_LEN,
};
pub use outbox::{Enqueued, NewEntry, Outbox, OutboxEntry, OUTBOX_CAPACITY, OUTBOX_DONE_KEEP};
pub use recovery::{RecoveryAction, RecoveryReport};
pub use retention::{EvictReason, Evicted, RetentionPolicy, RetentionReport};
pub use signal_report::{quality_json, SignalStretch};
pub use space::{statvfs_free, FreeSpace};
pub use schedule_cache::{ReplyOutcome, ScheduleMeta, SCHEDULE_RETENTION_MS};
pub use ts::{
    encode_pts, pes_pts, pts90k_to_ns, sha256_file, verify_ts_file, TsScan, TsScanner,
    TS_PACKET_LEN, TS_SYNC_BYTE,
};
pub use stitch_store::{
    gap_cause, manifest, manifest_rel, stitched_rel, StitchJob, StitchPart, StitchRow,
    StitchedInfo, MAX_STITCH_ATTEMPTS,
};
pub use upload_store::{Created, EndpointMove, NewUpload, UploadCounts, UploadRow, UploadState, UploadStore};
pub use writer::{cut_due, PartWriter};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod schedule_cache_tests;
#[cfg(test)]
mod stitch_tests;
#[cfg(test)]
mod upload_tests;
#[cfg(test)]
mod retention_tests;
