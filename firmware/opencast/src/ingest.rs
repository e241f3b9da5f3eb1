//! What an ingest needs ([`IngestJob`]): the recording's tracks, its Dublin Core catalogs and its
//! workflow. Two uses are left since recordings go through `lectern-upload`:
//!
//! - [`IngestJob::adhoc`]: the generated UID, title and episode catalog of an ad-hoc (button)
//!   recording, which `lectern-upload`'s Opencast target sends.
//! - The payload of an `ingest` outbox entry ([`crate::Operation::Ingest`]) that an earlier
//!   firmware queued: the daemon reads it back and adopts it as an upload job, so the fields keep
//!   their names and their serialised form.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One track to upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Track {
    /// The finished (stitched) file.
    pub path: PathBuf,
    /// Its flavor, e.g. `presenter/source`.
    pub flavor: String,
}

/// Everything one ingest needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestJob {
    /// The journal's recording id (the exactly-once key).
    pub recording_id: String,
    /// The event UID: `workflowInstanceId`, and the id of recording-state calls.
    pub event_uid: String,
    /// A human title, for logs.
    pub title: String,
    /// Whether the event is on Opencast's schedule; only then are recording states sent for it
    /// (capture-admin refuses states for ids it did not schedule).
    pub scheduled: bool,
    /// `episode.xml` of the event.
    pub episode_dc: Option<String>,
    /// `series.xml` of the event.
    pub series_dc: Option<String>,
    /// Tracks, in upload order.
    pub tracks: Vec<Track>,
    /// Workflow definition id; `None` uses `opencast.workflow`.
    pub workflow: Option<String>,
    /// Workflow configuration, keys without `org.opencastproject.workflow.config.`.
    pub workflow_config: BTreeMap<String, String>,
}

impl IngestJob {
    /// The job for an ad-hoc (button) recording: a UID derived from the recording id, a title
    /// with the room and the UTC start, and a generated episode catalog carrying them.
    pub fn adhoc(recording_id: &str, agent_name: &str, started_at_ms: i64, tracks: Vec<Track>) -> IngestJob {
        let start = chrono::DateTime::from_timestamp_millis(started_at_ms).unwrap_or_default();
        let title = format!("{agent_name} {}", start.format("%Y-%m-%d %H:%M UTC"));
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let episode = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dublincore xmlns=\"http://www.opencastproject.org/xsd/1.0/dublincore/\" xmlns:dcterms=\"http://purl.org/dc/terms/\">\n  <dcterms:title>{}</dcterms:title>\n  <dcterms:created>{}</dcterms:created>\n  <dcterms:spatial>{}</dcterms:spatial>\n</dublincore>\n",
            esc(&title),
            start.format("%Y-%m-%dT%H:%M:%SZ"),
            esc(agent_name)
        );
        IngestJob {
            recording_id: recording_id.to_owned(),
            event_uid: format!("lectern-adhoc-{recording_id}"),
            title,
            scheduled: false,
            episode_dc: Some(episode),
            series_dc: None,
            tracks,
            workflow: None,
            workflow_config: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adhoc_jobs_have_a_stable_uid_and_a_title() {
        let a = IngestJob::adhoc("20261126-101500-a1", "room<1>", 1_795_000_000_000, vec![]);
        let b = IngestJob::adhoc("20261126-101500-a1", "room<1>", 1_795_000_000_000, vec![]);
        assert_eq!(a, b, "a retry rebuilds the same job");
        assert_eq!(a.event_uid, "lectern-adhoc-20261126-101500-a1");
        assert!(a.title.starts_with("room<1> 2026-11-18"), "{}", a.title);
        let dc = a.episode_dc.unwrap();
        assert!(dc.contains("<dcterms:title>room&lt;1&gt; 2026-11-18") && dc.contains("<dcterms:spatial>room&lt;1&gt;</dcterms:spatial>"), "{dc}");
    }
}
