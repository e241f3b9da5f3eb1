//! Uploads: every final recording (the stitched MP4 and its manifest) reaches exactly one
//! configured target exactly once, whatever the network does, resuming from what the server
//! confirmed after any interruption.
//!
//! # Pieces
//!
//! - [`target`]: the `Target` seam — a step function over persisted progress — and the values
//!   that cross it ([`UploadSpec`], [`Step`], [`UploadError`] with its [`Class`]).
//! - [`throttle`]: the shared bandwidth cap (token bucket), lower while a recording runs.
//! - [`policy`]: sans-IO rules — full-jitter back-off, what each error class leads to, the
//!   random start delay's generator, endpoint failover and fail-back.
//! - [`runner`]: worker threads (the concurrency cap) that replay due jobs step by step,
//!   committing progress between steps, and the health thread.
//! - [`folder`], [`s3`], [`opencast`]: the three targets; [`configured`] makes them from
//!   `[[upload.target]]`.
//!
//! The job store is `lectern_journal::UploadStore` (the `uploads` table beside the outbox).
//!
//! **Architecture Invariant:** nothing reaches a server except by replaying a job persisted in
//! the journal, and a step's progress is durable before the next step relies on it.

pub mod configured;
pub mod folder;
pub mod opencast;
pub mod policy;
pub mod runner;
pub mod s3;
pub mod target;
pub mod throttle;

pub use target::{Class, EventMeta, FileRef, Step, StepIo, Target, UploadError, UploadSpec};
pub use policy::{Failover, RetryPolicy, Rng};
pub use runner::{enqueue, Runner, RunnerConfig, RunnerView, UploadEvent};
pub use throttle::{Throttle, Throttled, TokenBucket};
