//! The operations the agent owes the server, as values: agent states, recording states and
//! ingests. [`Operation`] is what goes into the outbox (as JSON, with a kind) and what the
//! [`crate::uplink`] replays.
//!
//! **Agent state rule.** `offline` is what Opencast shows when an agent has stopped talking; it is
//! not something an agent says. [`AgentState`] therefore has no `Offline` variant: the type cannot
//! send it. While the server is unreachable the state changes queue up (consecutive ones coalesce
//! to the newest, since the server keeps only the current agent state); when it returns they are
//! replayed in order among the recording states, and after the queue has drained the uplink sends
//! the *current* state once more, so the last word the server hears is the truth.

use serde::{Deserialize, Serialize};

use crate::error::{OpencastError, Result};
use crate::ingest::IngestJob;

/// What the agent tells capture-admin about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    Idle,
    Capturing,
    Uploading,
    Error,
    ShuttingDown,
}

impl AgentState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Idle => "idle",
            AgentState::Capturing => "capturing",
            AgentState::Uploading => "uploading",
            AgentState::Error => "error",
            AgentState::ShuttingDown => "shutting_down",
        }
    }
}

/// What the agent tells capture-admin about one scheduled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingState {
    Capturing,
    CaptureFinished,
    CaptureError,
    Uploading,
    UploadFinished,
    UploadError,
}

impl RecordingState {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingState::Capturing => "capturing",
            RecordingState::CaptureFinished => "capture_finished",
            RecordingState::CaptureError => "capture_error",
            RecordingState::Uploading => "uploading",
            RecordingState::UploadFinished => "upload_finished",
            RecordingState::UploadError => "upload_error",
        }
    }
}

/// One queued operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// `POST {capture-admin}/agents/{name}`.
    AgentState(AgentState),
    /// `POST {capture-admin}/recordings/{event_uid}`.
    RecordingState { event_uid: String, state: RecordingState },
    /// The ingest sequence for one recording, delivered at most once per recording id.
    Ingest(IngestJob),
}

impl Operation {
    /// The outbox kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::AgentState(_) => "agent_state",
            Operation::RecordingState { .. } => "recording_state",
            Operation::Ingest(_) => "ingest",
        }
    }

    /// Whether a queued tail entry of the same kind may be replaced by this one: agent states
    /// only (recording states are history the server keeps; ingests are deduplicated by key).
    pub fn coalesces(&self) -> bool {
        matches!(self, Operation::AgentState(_))
    }

    /// The exactly-once key: `ingest:<recording id>` for ingests.
    pub fn once_key(&self) -> Option<String> {
        match self {
            Operation::Ingest(job) => Some(format!("ingest:{}", job.recording_id)),
            _ => None,
        }
    }

    /// The outbox payload.
    pub fn to_payload(&self) -> String {
        serde_json::to_string(self).expect("operations always serialise")
    }

    /// Decodes an outbox entry.
    pub fn from_entry(e: &lectern_journal::OutboxEntry) -> Result<Operation> {
        let op: Operation = serde_json::from_str(&e.payload)
            .map_err(|err| OpencastError::BadEntry { id: e.id, kind: e.kind.clone(), detail: err.to_string() })?;
        if op.kind() != e.kind {
            return Err(OpencastError::BadEntry { id: e.id, kind: e.kind.clone(), detail: format!("payload is a {}", op.kind()) });
        }
        Ok(op)
    }
}
