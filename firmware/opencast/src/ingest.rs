//! What an ingest needs ([`IngestJob`]): the recording's tracks, its Dublin Core catalogs and its
//! workflow, taken from the scheduled event's attachments or generated for an ad-hoc recording.
//!
//! **Duplicates.** An ingest is several calls (`createMediaPackage`, `addDCCatalog`, `addTrack`,
//! `ingest/{workflow}`) and is acked in the outbox only after the final `ingest/` call returned a
//! media package. A crash, timeout or power cut anywhere before that restarts the whole sequence
//! from `createMediaPackage`. Abandoned media packages from earlier attempts are never ingested,
//! so Opencast only accumulates unused files in its ingest working area (cleaned by its own
//! housekeeping). The dangerous window is the last call: if the server processed `ingest/` but the
//! answer was lost, the retry ingests a second media package. Both carry `workflowInstanceId` =
//! the event UID; for a scheduled event Opencast resolves that to the scheduled event, so the
//! second ingest updates the same event instead of creating a new one. Ad-hoc recordings get a
//! UID derived from the recording id (stable across retries) for the same reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The prefix of workflow configuration keys in a scheduled event's agent properties.
pub const WORKFLOW_CONFIG_PREFIX: &str = "org.opencastproject.workflow.config.";
/// The key naming the workflow definition in the agent properties.
pub const WORKFLOW_DEFINITION_KEY: &str = "org.opencastproject.workflow.definition";

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
    /// Workflow configuration, keys without [`WORKFLOW_CONFIG_PREFIX`].
    pub workflow_config: BTreeMap<String, String>,
}

/// Splits an event's agent properties (`org.opencastproject.capture.agent.properties`, Java
/// properties text) into the workflow definition and its configuration, the keys stripped of
/// their prefix. Unlike pyCA (which keeps only the last dot-separated word), a key like
/// `...config.a.b` becomes `a.b`.
pub fn workflow_from_properties(text: &str) -> (Option<String>, BTreeMap<String, String>) {
    let mut workflow = None;
    let mut config = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let (k, v) = (k.trim(), v.trim());
        if k == WORKFLOW_DEFINITION_KEY {
            workflow = Some(v.to_owned()).filter(|v| !v.is_empty());
        } else if let Some(key) = k.strip_prefix(WORKFLOW_CONFIG_PREFIX) {
            config.insert(key.to_owned(), v.to_owned());
        }
    }
    (workflow, config)
}

impl IngestJob {
    /// The job for a scheduled event: its catalogs and its agent properties (the
    /// `org.opencastproject.capture.agent.properties` attachment) as the calendar delivered them.
    pub fn scheduled(
        recording_id: &str,
        event_uid: &str,
        title: &str,
        episode_dc: Option<String>,
        series_dc: Option<String>,
        agent_properties: &str,
        tracks: Vec<Track>,
    ) -> IngestJob {
        let (workflow, workflow_config) = workflow_from_properties(agent_properties);
        IngestJob {
            recording_id: recording_id.to_owned(),
            event_uid: event_uid.to_owned(),
            title: title.to_owned(),
            scheduled: true,
            episode_dc,
            series_dc,
            tracks,
            workflow,
            workflow_config,
        }
    }

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
    fn workflow_properties() {
        let (wf, cfg) = workflow_from_properties(
            "event.title=Lecture\norg.opencastproject.workflow.definition=fast\n# comment\norg.opencastproject.workflow.config.straightToPublishing=true\norg.opencastproject.workflow.config.a.b = x=y\ncapture.device.names=presenter\n",
        );
        assert_eq!(wf.as_deref(), Some("fast"));
        assert_eq!(cfg, BTreeMap::from([("straightToPublishing".to_owned(), "true".to_owned()), ("a.b".to_owned(), "x=y".to_owned())]));
        assert_eq!(workflow_from_properties(""), (None, BTreeMap::new()));
    }

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
