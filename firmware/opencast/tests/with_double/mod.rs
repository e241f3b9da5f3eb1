//! What the test binaries that run the real client against the Opencast test double
//! (`tests/double.rs`, `tests/streamed.rs`) share: the agent name and an `[opencast]` config with
//! short timeouts.

#![allow(dead_code)]

pub const AGENT: &str = "room-101";

/// `[opencast]` for the double: discovery (no overrides), short timeouts, `auth` as given.
pub fn config(url: &str, auth: &str) -> lectern_config::OpencastConfig {
    let text = format!(
        "[opencast]\nurl = \"{url}\"\nusername = \"agent\"\npassword = \"secret\"\nauth = \"{auth}\"\naddress = \"http://box\"\n\
         connect_timeout_s = 1\nread_timeout_s = 2\nrequest_timeout_s = 5\nretry_initial_s = 5\nretry_max_s = 300\nworkflow = \"fast\"\n"
    );
    lectern_config::Config::parse(&text, None).unwrap().opencast.unwrap()
}
