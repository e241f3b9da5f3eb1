//! The operations the agent owes the server, as values: agent states and recording states, and
//! the ingests an earlier firmware queued. [`Operation`] is what goes into the outbox (as JSON,
//! with a kind) and what the [`crate::uplink`] replays.
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
    /// An ingest of one recording, queued at most once per recording id by a firmware from
    /// before the upload room. Never sent from the outbox any more: the daemon adopts each as an
    /// upload job (`lecternd`'s `uploads.rs`), so only its decoding matters.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An ingest exactly as an earlier firmware wrote it into the outbox still decodes, so the
    /// daemon can adopt it as an upload job.
    #[test]
    fn an_ingest_queued_by_an_earlier_firmware_still_decodes() {
        let payload = r#"{"Ingest":{"recording_id":"rec-1","event_uid":"ev-1","title":"Lecture","scheduled":true,"episode_dc":"<dublincore/>","series_dc":null,"tracks":[{"path":"/var/lib/lectern/rec-1/rec-1.mp4","flavor":"presenter/source"}],"workflow":"fast","workflow_config":{"straightToPublishing":"true"}}}"#;
        let entry = |kind: &str| lectern_journal::OutboxEntry { id: 7, kind: kind.into(), payload: payload.into(), once_key: Some("ingest:rec-1".into()), enqueued_at_ms: 0, attempts: 0, last_error: None };
        let Ok(Operation::Ingest(job)) = Operation::from_entry(&entry("ingest")) else { panic!("not decoded as an ingest") };
        assert_eq!((job.recording_id.as_str(), job.event_uid.as_str(), job.scheduled, job.workflow.as_deref()), ("rec-1", "ev-1", true, Some("fast")));
        assert_eq!(job.tracks[0].path, std::path::Path::new("/var/lib/lectern/rec-1/rec-1.mp4"));
        assert_eq!(job.workflow_config.get("straightToPublishing").map(String::as_str), Some("true"));
        assert_eq!(Operation::Ingest(job.clone()).to_payload(), payload, "written as before");
        assert!(Operation::from_entry(&entry("recording_state")).is_err(), "a payload of another kind is refused");
    }
}
