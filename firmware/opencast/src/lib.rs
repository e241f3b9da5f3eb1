//! The Opencast capture-agent client: service discovery, agent and recording states, the
//! calendar, the calls of a resumable upload, and offline operation through a persistent outbox.
//!
//! # Pieces
//!
//! - [`auth`]: Digest (MD5, `qop=auth`) and Basic, sans-IO.
//! - [`discovery`]: the service registry's JSON → endpoint URLs, sans-IO.
//! - [`client`]: the HTTP shell over `ureq`; one call each, every request with connect, read
//!   and overall timeouts, Digest with `X-Requested-Auth: Digest`, streamed multipart uploads.
//! - [`ops`]: the operations owed to the server, and the agent state rule (`offline` is never
//!   sent).
//! - [`fileupload`]: the calls of a resumable upload — Opencast's chunked upload service, a
//!   media package with our id, attachments, the ingest of a finished package, and the lookup
//!   that tells whether a package was already ingested (driven by `lectern-upload`).
//! - [`ingest`]: what an ingest needs: ad-hoc jobs, and the ingests earlier firmware queued.
//! - [`uplink`]: the outbox (in the journal database) filled through a [`Queue`] and replayed in
//!   order through the client by the states [`Uplink`], with back-off on an injected clock.
//!
//! Calendar *parsing* is not here: [`Client::fetch_calendar`] returns the bytes of a complete
//! VCALENDAR (or "not modified") for `lectern-schedule`.
//!
//! # Offline operation
//!
//! Recording never waits for the server: the daemon records from its cached calendar, and every
//! state change goes into the outbox in one SQLite transaction. While the server is unreachable
//! the uplink retries with exponential back-off; when it answers again, the queue is replayed in
//! the order it was written (recording states are never merged, so Opencast gets the whole
//! history it would otherwise lose — opencast issue #1335), and the current agent state is sent
//! last. Recordings themselves are `lectern-upload`'s jobs, exactly once each.

pub mod auth;
pub mod client;
pub mod discovery;
mod error;
pub mod fileupload;
pub mod ingest;
pub mod ops;
pub mod uplink;

pub use client::{CalendarFetch, Client};
pub use discovery::{Endpoints, Service};
pub use error::{OpencastError, Result};
pub use fileupload::{ChunkReply, IngestLookup, JobState, UploadJob, UploadServices};
pub use ingest::{IngestJob, Track};
pub use ops::{AgentState, Operation, RecordingState};
pub use uplink::{spawn, Backoff, Lane, LaneThread, PumpReport, Queue, Uplink};
