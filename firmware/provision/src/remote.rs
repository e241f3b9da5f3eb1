//! Zero-touch enrolment's settings: where a box fetches its bundle (docs/provisioning.md).
//!
//! The *enrolment file* comes with the image (`/etc/lectern/enrol.toml`, the same for every box
//! of a fleet, so an image can be flashed onto a hundred cards unchanged):
//!
//! ```toml
//! url = "https://files.example.edu/lectern/{device}.bundle"   # {device}: this box's id
//! token = "…"                 # optional: sent as `Authorization: Bearer …`
//! ca_file = "campus-ca.pem"   # optional: trust only these CAs for the URL (relative to this file)
//! check_interval_s = 3600     # re-check about this often (jittered ±50 %)
//! ```
//!
//! The URL must be `https://` (a plain `http://` URL is accepted only for a loopback host, which
//! is what the tests serve). The bundle itself is what is trusted, by its signature; TLS and the
//! token only keep other people's boxes from reading a bundle's secrets. Fetching is lecternd's
//! (`enrol.rs`); this module only reads and checks the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Re-check interval when the file names none.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// What an enrolment file says.
#[derive(Clone, PartialEq)]
pub struct Enrolment {
    /// The URL with `{device}` still in it.
    pub url: String,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    pub check_interval: Duration,
}

impl fmt::Debug for Enrolment {
    // The token is a secret: never in a log. The URL's query may hold one too (a presigned URL).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolment")
            .field("url", &shown_url(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("ca_file", &self.ca_file)
            .field("check_interval", &self.check_interval)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    check_interval_s: Option<u64>,
}

impl Enrolment {
    /// Reads and checks an enrolment file; every error names the file and, where it is one key's
    /// fault, the key and what it should be.
    pub fn load(path: &Path) -> Result<Enrolment, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("enrolment file {}: {e}", path.display()))?;
        let raw: Raw = toml::from_str(&text).map_err(|e| format!("enrolment file {}: {}", path.display(), e.message()))?;
        let bad = |key: &str, want: &str, got: String| format!("enrolment file {}: key `{key}`: expected {want}, got {got}", path.display());
        if !(raw.url.starts_with("https://") || is_loopback_http(&raw.url)) {
            return Err(bad("url", "an https:// URL (http:// only for a loopback host)", format!("{:?}", shown_url(&raw.url))));
        }
        let interval = raw.check_interval_s.unwrap_or(DEFAULT_CHECK_INTERVAL.as_secs());
        if !(5..=7 * 86_400).contains(&interval) {
            return Err(bad("check_interval_s", "5 to 604800 seconds", interval.to_string()));
        }
        if raw.token.as_deref().is_some_and(|t| t.is_empty() || t.chars().any(|c| c.is_control() || c == ' ')) {
            return Err(bad("token", "a non-empty token without spaces or control characters", "another value".into()));
        }
        let (ca_file, ca_pem) = match raw.ca_file {
            None => (None, None),
            Some(f) => {
                let f = if f.is_absolute() { f } else { path.parent().unwrap_or(Path::new(".")).join(f) };
                let pem = lectern_config::read_ca_pem(&f).map_err(|got| bad("ca_file", "a readable PEM file of CA certificates", got))?;
                (Some(f), Some(pem))
            }
        };
        Ok(Enrolment { url: raw.url, token: raw.token, ca_file, ca_pem, check_interval: Duration::from_secs(interval) })
    }

    /// This box's URL: `{device}` replaced by its id (percent-encoded; ids are hex anyway).
    pub fn url_for(&self, device_id: &str) -> String {
        let enc: String = device_id
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        self.url.replace("{device}", &enc)
    }
}

fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').filter(|(h, p)| !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// A URL as it may be shown (`status`, logs): without its query, which may carry a token.
pub fn shown_url(url: &str) -> String {
    url.split_once('?').map_or(url, |(u, _)| u).to_owned()
}

/// The wait before the next check: `interval` × a factor in [0.5, 1.5) taken from `random`, so a
/// fleet that booted together does not fetch together.
pub fn jittered(interval: Duration, random: u64) -> Duration {
    let factor = 0.5 + (random >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Enrolment, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").unwrap();
        let p = dir.path().join("enrol.toml");
        std::fs::write(&p, text).unwrap();
        Enrolment::load(&p).map(|e| Enrolment { ca_file: e.ca_file.map(|f| PathBuf::from(f.file_name().unwrap())), ..e })
    }

    #[test]
    fn a_good_file_and_every_bad_key_named() {
        let e = load("url = \"https://files.example.edu/b/{device}.bundle?sig=abc\"\ntoken = \"t0k3n\"\nca_file = \"ca.pem\"\ncheck_interval_s = 600\n").unwrap();
        assert_eq!(e.url_for("0123abcd"), "https://files.example.edu/b/0123abcd.bundle?sig=abc");
        assert_eq!((e.check_interval, e.ca_file.as_deref()), (Duration::from_secs(600), Some(Path::new("ca.pem"))));
        let shown = format!("{e:?}");
        assert!(!shown.contains("t0k3n") && !shown.contains("sig=abc"), "{shown}");
        assert_eq!(load("url = \"http://127.0.0.1:8080/b.bundle\"").unwrap().check_interval, DEFAULT_CHECK_INTERVAL);
        for (text, want) in [
            ("url = \"http://files.example.edu/b\"", "key `url`: expected an https:// URL"),
            ("url = \"http://127.0.0.1.evil.example/b\"", "key `url`"),
            ("url = \"https://x/b\"\ncheck_interval_s = 1", "key `check_interval_s`"),
            ("url = \"https://x/b\"\ntoken = \"a b\"", "key `token`"),
            ("url = \"https://x/b\"\nca_file = \"nope.pem\"", "nope.pem"),
            ("url = \"https://x/b\"\nurls = 1", "unknown field `urls`"),
            ("token = \"x\"", "missing field `url`"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(want) && err.contains("enrol.toml"), "{text:?}: {err}");
        }
        assert!(load("url = \"https://x/b\"\ntoken = \"a b\"").unwrap_err().contains("another value"), "a bad token is never echoed");
    }

    #[test]
    fn jitter_spreads_checks_over_half_to_one_and_a_half_intervals() {
        let i = Duration::from_secs(3600);
        assert_eq!(jittered(i, 0), Duration::from_secs(1800));
        assert!(jittered(i, u64::MAX) <= Duration::from_secs(5400) && jittered(i, u64::MAX) > Duration::from_secs(5399));
        assert_eq!(jittered(i, 1 << 63), i);
    }
}
