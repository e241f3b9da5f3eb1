//! The `[upload]` section and its `[[upload.target]]` list: where final recordings go, how fast,
//! how retries, failover and retention behave. Raw TOML here, validated into [`UploadConfig`].
//!
//! Targets are tried in the order written: each recording goes to the first target whose
//! `recordings` filter matches it (`all`, `scheduled`, `adhoc`). Each target has its own ordered
//! endpoints (primary first) for failover. With no `[[upload.target]]` and `[opencast] url`
//! set, the one target is Opencast; with neither, nothing is uploaded and nothing is ever
//! evicted.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{ConfigError, Validator};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpload {
    start_delay_max_s: Option<u64>,
    concurrency: Option<u32>,
    rate_limit_kbps: Option<u64>,
    recording_rate_limit_kbps: Option<u64>,
    chunk_mb: Option<u64>,
    retry_initial_s: Option<u64>,
    retry_max_s: Option<u64>,
    failover_after: Option<u32>,
    failback_after_s: Option<u64>,
    health_interval_s: Option<u64>,
    retention_hours: Option<u64>,
    evict_below_mb: Option<u64>,
    stuck_after_minutes: Option<u64>,
    #[serde(default)]
    target: Vec<RawTarget>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    name: Option<String>,
    kind: Option<String>,
    recordings: Option<String>,
    endpoints: Option<Vec<String>>,
    // s3
    bucket: Option<String>,
    region: Option<String>,
    prefix: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    secret_key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    path_style: Option<bool>,
    same_storage: Option<bool>,
    verify_etag: Option<bool>,
    // folder
    dirs: Option<Vec<PathBuf>>,
}

/// Which recordings a target takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingFilter {
    All,
    Scheduled,
    Adhoc,
}

impl RecordingFilter {
    /// Whether a recording (scheduled or not) goes to a target with this filter.
    pub fn matches(self, scheduled: bool) -> bool {
        match self {
            RecordingFilter::All => true,
            RecordingFilter::Scheduled => scheduled,
            RecordingFilter::Adhoc => !scheduled,
        }
    }
}

/// S3-compatible object storage.
#[derive(Clone)]
pub struct S3TargetConfig {
    pub endpoints: Vec<String>,
    pub bucket: String,
    pub region: String,
    /// Prepended to every object key (e.g. `room-101/`).
    pub prefix: String,
    pub access_key: String,
    pub secret_key: String,
    /// `ca_file`: the PEM certificates that replace the public roots (Mozilla's) as the only CAs
    /// trusted for this target's endpoints, for a campus MinIO or Ceph behind an internal CA (as
    /// `opencast.ca_file`). Never a way to turn verification off: there is none.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    /// `https://host/bucket/key` rather than `https://bucket.host/key` (most on-premise stores).
    pub path_style: bool,
    /// The endpoints are gateways of one storage cluster: an upload moves between them with its
    /// progress instead of starting again.
    pub same_storage: bool,
    /// Check each part's ETag against its MD5 (off only for AWS with SSE-KMS/SSE-C).
    pub verify_etag: bool,
}

impl std::fmt::Debug for S3TargetConfig {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3TargetConfig")
            .field("endpoints", &self.endpoints)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<hidden>")
            .field("ca_file", &self.ca_file)
            .field("path_style", &self.path_style)
            .field("same_storage", &self.same_storage)
            .field("verify_etag", &self.verify_etag)
            .finish()
    }
}

/// What kind of place a target is.
#[derive(Debug, Clone)]
pub enum TargetKind {
    /// Opencast through `[opencast]` (credentials, timeouts, workflow); `endpoints` are base URLs
    /// of Opencast admin/ingest nodes, primary first (default: `opencast.url`).
    Opencast { endpoints: Vec<String> },
    S3(S3TargetConfig),
    /// Local or mounted directories, primary first.
    Folder { dirs: Vec<PathBuf> },
}

/// One `[[upload.target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Unique name (default: the kind), stored with each job.
    pub name: String,
    pub recordings: RecordingFilter,
    pub kind: TargetKind,
}

/// The validated `[upload]` section.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// A job starts after a random delay in `[0, start_delay_max]`, so a building's rooms do not
    /// all reach the server at the same second.
    pub start_delay_max: Duration,
    /// Uploads running at once.
    pub concurrency: u32,
    /// Bytes a second while idle and while recording; 0 = no cap.
    pub rate_limit: u64,
    pub recording_rate_limit: u64,
    /// Chunk (Opencast) / part (S3) size in bytes.
    pub chunk_bytes: u64,
    /// Full-jitter back-off: a random delay up to `retry_initial × 2^failures`, at most `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Consecutive failures on an endpoint before a target moves to its next one.
    pub failover_after: u32,
    /// How long a better endpoint must have been healthy before jobs return to it.
    pub failback_after: Duration,
    /// How often endpoints are health-checked.
    pub health_interval: Duration,
    /// How long uploaded media stays on the card after the target confirmed it.
    pub retention: Duration,
    /// Below this much free space, uploaded recordings are evicted before the window ends,
    /// oldest first (never one that is not uploaded).
    pub evict_below_bytes: u64,
    /// A job not done this long after it was created is a backlog (status, LED).
    pub stuck_after: Duration,
    pub targets: Vec<TargetConfig>,
}

impl UploadConfig {
    /// The target a recording goes to: the first whose filter matches.
    pub fn target_for(&self, scheduled: bool) -> Option<&TargetConfig> {
        self.targets.iter().find(|t| t.recordings.matches(scheduled))
    }
}

fn url_ok(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://")) && !u.contains(char::is_whitespace)
}

impl Validator<'_> {
    pub(crate) fn upload(&self, u: RawUpload, opencast_url: Option<&str>, journal_reserve: u64) -> Result<UploadConfig, ConfigError> {
        let secs = |key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(self.range(key, v, default, lo, hi)?))
        };
        let retry_initial = secs("upload.retry_initial_s", u.retry_initial_s, 5, 1, 3600)?;
        let retry_max = secs("upload.retry_max_s", u.retry_max_s, 600, 1, 86_400)?;
        if retry_max < retry_initial {
            return Err(self.invalid("upload.retry_max_s", "at least upload.retry_initial_s", retry_max.as_secs()));
        }
        let evict_below_bytes = self.range("upload.evict_below_mb", u.evict_below_mb, 4096, 0, 1_048_576)? << 20;
        if evict_below_bytes > 0 && evict_below_bytes <= journal_reserve {
            return Err(self.invalid(
                "upload.evict_below_mb",
                &format!("more than journal.min_free_mb ({} MB), so eviction runs before the storage guard refuses", journal_reserve >> 20),
                evict_below_bytes >> 20,
            ));
        }
        let mut targets: Vec<TargetConfig> = Vec::with_capacity(u.target.len().max(1));
        for (n, t) in u.target.into_iter().enumerate() {
            let target = self.target(n, t, opencast_url)?;
            if targets.iter().any(|o| o.name == target.name) {
                return Err(self.invalid(&format!("upload.target[{n}].name"), "a name no other target has", format!("{:?}", target.name)));
            }
            targets.push(target);
        }
        if targets.is_empty() {
            if let Some(url) = opencast_url {
                targets.push(TargetConfig { name: "opencast".into(), recordings: RecordingFilter::All, kind: TargetKind::Opencast { endpoints: vec![url.to_owned()] } });
            }
        }
        Ok(UploadConfig {
            start_delay_max: secs("upload.start_delay_max_s", u.start_delay_max_s, 300, 0, 86_400)?,
            concurrency: self.range("upload.concurrency", u.concurrency, 1, 1, 8)?,
            rate_limit: self.range("upload.rate_limit_kbps", u.rate_limit_kbps, 0, 0, 10_000_000)? * 1000 / 8,
            recording_rate_limit: self.range("upload.recording_rate_limit_kbps", u.recording_rate_limit_kbps, 8000, 0, 10_000_000)? * 1000 / 8,
            chunk_bytes: self.range("upload.chunk_mb", u.chunk_mb, 1, 1, 1024)? << 20,
            retry_initial,
            retry_max,
            failover_after: self.range("upload.failover_after", u.failover_after, 3, 1, 1000)?,
            failback_after: secs("upload.failback_after_s", u.failback_after_s, 600, 0, 7 * 86_400)?,
            health_interval: secs("upload.health_interval_s", u.health_interval_s, 60, 1, 86_400)?,
            retention: Duration::from_secs(3600 * self.range("upload.retention_hours", u.retention_hours, 168, 0, 24 * 3650)?),
            evict_below_bytes,
            stuck_after: Duration::from_secs(60 * self.range("upload.stuck_after_minutes", u.stuck_after_minutes, 240, 1, 525_600)?),
            targets,
        })
    }

    fn target(&self, n: usize, t: RawTarget, opencast_url: Option<&str>) -> Result<TargetConfig, ConfigError> {
        let key = |k: &str| format!("upload.target[{n}].{k}");
        let kind_name = t.kind.clone().unwrap_or_default();
        let recordings = match t.recordings.as_deref().unwrap_or("all") {
            "all" => RecordingFilter::All,
            "scheduled" => RecordingFilter::Scheduled,
            "adhoc" => RecordingFilter::Adhoc,
            other => return Err(self.invalid(&key("recordings"), "\"all\", \"scheduled\" or \"adhoc\"", format!("{other:?}"))),
        };
        let urls = |v: Option<Vec<String>>, default: Option<&str>| -> Result<Vec<String>, ConfigError> {
            let v = match v {
                Some(v) => v,
                None => default.map(|d| vec![d.to_owned()]).unwrap_or_default(),
            };
            if v.is_empty() {
                return Err(self.invalid(&key("endpoints"), "one or more http:// or https:// URLs, primary first", "none"));
            }
            v.into_iter()
                .map(|u| if url_ok(&u) { Ok(u.trim_end_matches('/').to_owned()) } else { Err(self.invalid(&key("endpoints"), "http:// or https:// URLs", format!("{u:?}"))) })
                .collect()
        };
        let required = |k: &str, v: Option<String>| -> Result<String, ConfigError> {
            v.filter(|s| !s.is_empty()).ok_or_else(|| self.invalid(&key(k), &format!("a value (required for kind = \"{kind_name}\")"), "nothing"))
        };
        let kind = match kind_name.as_str() {
            "opencast" => {
                if opencast_url.is_none() {
                    return Err(self.invalid(&key("kind"), "\"opencast\" only with [opencast] url set (credentials and workflow come from there)", "no opencast.url"));
                }
                TargetKind::Opencast { endpoints: urls(t.endpoints, opencast_url)? }
            }
            "s3" => {
                let (ca_file, ca_pem) = self.ca_pem(&key("ca_file"), t.ca_file)?;
                TargetKind::S3(S3TargetConfig {
                    endpoints: urls(t.endpoints, None)?,
                    bucket: required("bucket", t.bucket)?,
                    region: t.region.filter(|r| !r.is_empty()).unwrap_or_else(|| "us-east-1".to_owned()),
                    prefix: t.prefix.unwrap_or_default(),
                    access_key: required("access_key", t.access_key)?,
                    secret_key: match (t.secret_key.filter(|s| !s.is_empty()), t.secret_key_file) {
                        (Some(_), Some(_)) => return Err(self.invalid(&key("secret_key_file"), "either secret_key or secret_key_file, not both", "both set")),
                        // What provisioning writes (docs/provisioning.md).
                        (None, Some(f)) => required("secret_key_file", Some(self.read_secret_file(&key("secret_key_file"), f, "the secret key")?))?,
                        (inline, None) => required("secret_key", inline)?,
                    },
                    ca_file,
                    ca_pem,
                    path_style: t.path_style.unwrap_or(true),
                    same_storage: t.same_storage.unwrap_or(false),
                    verify_etag: t.verify_etag.unwrap_or(true),
                })
            }
            "folder" => {
                let dirs: Vec<PathBuf> = t.dirs.unwrap_or_default().into_iter().map(|d| self.path(d)).collect();
                if dirs.is_empty() {
                    return Err(self.invalid(&key("dirs"), "one or more directories, primary first", "none"));
                }
                TargetKind::Folder { dirs }
            }
            other => return Err(self.invalid(&key("kind"), "\"opencast\", \"s3\" or \"folder\"", format!("{other:?}"))),
        };
        let name = t.name.unwrap_or_else(|| kind_name.clone());
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(self.invalid(&key("name"), "A-Z a-z 0-9 - _", format!("{name:?}")));
        }
        Ok(TargetConfig { name, recordings, kind })
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    use super::*;

    fn upload(text: &str) -> UploadConfig {
        Config::parse(text, Some(Path::new("/etc/lectern/lectern.toml"))).unwrap().upload
    }

    fn err(text: &str) -> String {
        Config::parse(text, Some(Path::new("/etc/lectern/lectern.toml"))).unwrap_err().to_string()
    }

    #[test]
    fn defaults_upload_to_opencast_when_it_is_configured_and_nowhere_otherwise() {
        assert!(upload("").targets.is_empty());
        let u = upload("[opencast]\nurl = \"https://oc.example.edu\"");
        assert_eq!(u.targets.len(), 1);
        assert!(matches!(&u.targets[0].kind, TargetKind::Opencast { endpoints } if endpoints == &["https://oc.example.edu"]));
        assert_eq!((u.concurrency, u.chunk_bytes, u.start_delay_max), (1, 1 << 20, Duration::from_secs(300)));
        assert_eq!((u.rate_limit, u.recording_rate_limit), (0, 1_000_000));
    }

    #[test]
    fn targets_in_order_with_filters() {
        let u = upload(
            "[opencast]\nurl = \"https://oc\"\n\
             [[upload.target]]\nkind = \"opencast\"\nrecordings = \"scheduled\"\nendpoints = [\"https://oc-a/\", \"https://oc-b\"]\n\
             [[upload.target]]\nkind = \"s3\"\nendpoints = [\"http://s3\"]\nbucket = \"b\"\naccess_key = \"k\"\nsecret_key = \"hush\"\n\
             [[upload.target]]\nname = \"nas\"\nkind = \"folder\"\ndirs = [\"nas\"]",
        );
        assert_eq!(u.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["opencast", "s3", "nas"]);
        assert!(matches!(&u.targets[0].kind, TargetKind::Opencast { endpoints } if endpoints == &["https://oc-a", "https://oc-b"]));
        assert_eq!(u.target_for(true).unwrap().name, "opencast");
        assert_eq!(u.target_for(false).unwrap().name, "s3");
        assert!(matches!(&u.targets[2].kind, TargetKind::Folder { dirs } if dirs == &[PathBuf::from("/etc/lectern/nas")]));
        assert!(!format!("{:?}", u.targets[1]).contains("hush"), "the secret never reaches a log");
    }

    #[test]
    fn an_s3_secret_key_can_live_in_its_own_file() {
        let dir = std::env::temp_dir().join(format!("lectern-config-s3key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s3.secret"), "hush\n").unwrap();
        let config = dir.join("lectern.toml");
        let load = |extra: &str| {
            std::fs::write(&config, format!("[[upload.target]]\nkind = \"s3\"\nendpoints = [\"http://s3\"]\nbucket = \"b\"\naccess_key = \"k\"\n{extra}")).unwrap();
            crate::Config::load(&config)
        };
        let c = load("secret_key_file = \"s3.secret\"\n").unwrap();
        assert!(matches!(&c.upload.targets[0].kind, TargetKind::S3(s) if s.secret_key == "hush"), "relative to the config, one newline stripped");
        for (extra, want) in [
            ("secret_key = \"x\"\nsecret_key_file = \"s3.secret\"\n", "not both"),
            ("secret_key_file = \"nope.secret\"\n", "nope.secret"),
            ("", "upload.target[0].secret_key"),
        ] {
            let e = load(extra).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("upload.target[0]"), "{extra:?}: {e}");
            assert!(!e.contains("hush"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_targets_name_the_key() {
        for (text, want) in [
            ("[[upload.target]]\nkind = \"ftp\"", "key `upload.target[0].kind`: expected \"opencast\", \"s3\" or \"folder\""),
            ("[[upload.target]]\nkind = \"opencast\"", "key `upload.target[0].kind`: expected \"opencast\" only with [opencast] url set"),
            ("[[upload.target]]\nkind = \"s3\"\nendpoints = [\"s3.example\"]", "key `upload.target[0].endpoints`"),
            ("[[upload.target]]\nkind = \"s3\"\nendpoints = [\"http://s3\"]", "key `upload.target[0].bucket`"),
            ("[[upload.target]]\nkind = \"folder\"", "key `upload.target[0].dirs`"),
            ("[[upload.target]]\nkind = \"folder\"\ndirs = [\"/a\"]\n[[upload.target]]\nkind = \"folder\"\ndirs = [\"/b\"]", "key `upload.target[1].name`"),
            ("[[upload.target]]\nkind = \"folder\"\ndirs = [\"/a\"]\nrecordings = \"some\"", "key `upload.target[0].recordings`"),
            ("[upload]\nretry_initial_s = 60\nretry_max_s = 10", "key `upload.retry_max_s`"),
            ("[upload]\nevict_below_mb = 100", "key `upload.evict_below_mb`: expected more than journal.min_free_mb (256 MB)"),
            ("[upload]\nconcurrency = 0", "key `upload.concurrency`"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
