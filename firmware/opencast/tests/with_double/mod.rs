//! What the test binaries that run the real client against the Opencast test double
//! (`tests/double.rs`, `tests/streamed.rs`) share: the agent name, an `[opencast]` config with
//! short timeouts, and the ingest job for a double's event.

#![allow(dead_code)]

use lectern_opencast::{IngestJob, Track};
use lectern_opencast_double::Event;

pub const AGENT: &str = "room-101";

/// `[opencast]` for the double: discovery (no overrides), short timeouts, `auth` as given.
pub fn config(url: &str, auth: &str) -> lectern_config::OpencastConfig {
    let text = format!(
        "[opencast]\nurl = \"{url}\"\nusername = \"agent\"\npassword = \"secret\"\nauth = \"{auth}\"\naddress = \"http://box\"\n\
         connect_timeout_s = 1\nread_timeout_s = 2\nrequest_timeout_s = 5\nretry_initial_s = 5\nretry_max_s = 300\nworkflow = \"fast\"\n"
    );
    lectern_config::Config::parse(&text, None).unwrap().opencast.unwrap()
}

/// The ingest job the daemon would queue for `ev` with one track.
pub fn job_for(ev: &Event, track: Track) -> IngestJob {
    IngestJob::scheduled(&format!("rec-{}", ev.uid), &ev.uid, &ev.title, Some(ev.episode_xml()), ev.series_xml(), &ev.agent_properties(), vec![track])
}
