//! Daemon configuration: the TOML file an AV team edits, parsed into a raw struct and validated
//! once into [`Config`], a type that cannot hold a wrong value.
//!
//! Every field has an embedded default, so an empty file (or `--config` omitted) runs the daemon on
//! the simulated board. Errors name the file, the key and what was expected, because the person
//! reading them is usually on a ladder in a lecture hall with a laptop, not a developer.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod signals;
mod upload;

pub use signals::SignalsConfig;
pub use upload::{RecordingFilter, S3TargetConfig, TargetConfig, TargetKind, UploadConfig};

/// What went wrong while loading the configuration; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML itself is malformed or a key has the wrong type or is unknown.
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key parsed but its value is out of range or inconsistent.
    #[error("config {path}: key `{key}`: expected {expected}, found {found}")]
    Invalid { path: PathBuf, key: String, expected: String, found: String },
}

// ---------------------------------------------------------------------------------------------
// Raw config: mirrors the TOML, every field optional, unknown keys rejected.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    board: RawBoard,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    journal: RawJournal,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    recorder: RawRecorder,
    #[serde(default)]
    power: RawPower,
    #[serde(default)]
    clock: RawClock,
    #[serde(default)]
    opencast: RawOpencast,
    #[serde(default)]
    upload: upload::RawUpload,
    #[serde(default)]
    signals: signals::RawSignals,
    #[serde(default)]
    status_page: RawStatusPage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusPage {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpencast {
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    auth: Option<String>,
    address: Option<String>,
    capture_admin_url: Option<String>,
    scheduler_url: Option<String>,
    ingest_url: Option<String>,
    connect_timeout_s: Option<u64>,
    read_timeout_s: Option<u64>,
    request_timeout_s: Option<u64>,
    upload_timeout_s: Option<u64>,
    calendar_poll_s: Option<u64>,
    calendar_cutoff_days: Option<u64>,
    workflow: Option<String>,
    flavor: Option<String>,
    retry_initial_s: Option<u64>,
    retry_max_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    hold_ms: Option<u64>,
    poweroff_after_ms: Option<u64>,
    drain_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoard {
    backend: Option<String>,
    pinmap: Option<String>,
    sim_socket: Option<PathBuf>,
    debounce_ms: Option<u64>,
    long_press_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    video: Option<String>,
    video_device: Option<PathBuf>,
    video_pattern: Option<String>,
    audio: Option<String>,
    audio_device: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    framerate: Option<u32>,
    video_bitrate_kbps: Option<u32>,
    audio_bitrate_kbps: Option<u32>,
    encoder: Option<String>,
    x264_preset: Option<String>,
    x264_tune: Option<String>,
    retry_initial_s: Option<u64>,
    retry_max_s: Option<u64>,
    probe_interval_s: Option<u64>,
    mixer_fix: Option<bool>,
    mixer_element: Option<String>,
    mic_gain_db: Option<f64>,
    power_line_hz: Option<u32>,
    preview_width: Option<u32>,
    camera_controls: Option<std::collections::BTreeMap<String, i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    media_dir: Option<PathBuf>,
    segment_seconds: Option<f64>,
    fsync_interval_ms: Option<u64>,
    min_free_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    ics: Option<PathBuf>,
    ics_url: Option<String>,
    reload_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    trust: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecorder {
    adhoc_max_minutes: Option<u64>,
    resume_adhoc_window_minutes: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Validated config.
// ---------------------------------------------------------------------------------------------

/// Which GPIO backend drives the button, LED and power-fail line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoardBackend {
    Sim,
    Rppal,
    Gpiocdev,
    Auto,
}

/// Where video comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoInput {
    /// Live `videotestsrc` with a moving pattern.
    Test { pattern: String },
    /// A V4L2 camera.
    V4l2 { device: PathBuf },
}

/// Where audio comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioInput {
    None,
    /// Live `audiotestsrc` sine tone.
    Test,
    /// An ALSA capture device name such as `hw:1,0` or `default`.
    Alsa { device: String },
}

#[derive(Debug, Clone)]
pub struct BoardConfig {
    pub backend: BoardBackend,
    pub pinmap: String,
    pub sim_socket: PathBuf,
    pub debounce: Duration,
    pub long_press: Duration,
}

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub video: VideoInput,
    pub audio: AudioInput,
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    /// `None` probes the registry for the best encoder.
    pub encoder: Option<String>,
    pub x264_preset: String,
    pub x264_tune: Option<String>,
    /// First delay before retrying a failed capture device; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often the idle daemon checks that the camera and mic can be opened; `None`: never
    /// (`probe_interval_s = 0`).
    pub probe_interval: Option<Duration>,
    /// Before each recording, check the ALSA mic's card mixer: turn a muted capture switch on
    /// and, with `mic_gain_db`, set a capture volume more than 3 dB off back to it.
    pub mixer_fix: bool,
    /// The mixer control to look after (`None`: the usual capture names, `lectern_capture::mixer`).
    pub mixer_element: Option<String>,
    pub mic_gain_db: Option<f64>,
    /// A V4L2 camera's controls set at the start of each recording, by key (the control's name
    /// as v4l2-ctl writes it: `power_line_frequency`, `brightness`, …). `power_line_hz` (50, 60,
    /// or 0 to turn the filter off) is folded in as `power_line_frequency`.
    pub camera_controls: std::collections::BTreeMap<String, i64>,
    /// Width of the confidence preview's JPEGs (`lectern preview`); 0 = no preview branch.
    pub preview_width: u32,
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub media_dir: PathBuf,
    pub segment: Duration,
    pub fsync_interval: Duration,
    /// Free space the journal keeps on the media volume: no part opens and a recording part
    /// ends at its next segment cut below it. Zero turns the guard off.
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub ics: Option<PathBuf>,
    /// A plain `.ics` timetable fetched over HTTP(S) every `reload` (campuses without Opencast).
    pub ics_url: Option<String>,
    pub reload: Duration,
}

/// When the wall clock may drive scheduled recordings (`[clock] trust`). These boards have no
/// RTC: before NTP the clock can be years off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockTrust {
    /// Trusted once systemd-timesyncd or the kernel's NTP status says synchronised, or an RTC exists.
    Auto,
    /// Always trusted (the simulated board on a development machine; a box with a GPS clock).
    Always,
    /// Never trusted: scheduled recordings never start (a test setting).
    Never,
}

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// An ad-hoc recording nobody stops ends by itself after this long (a forgotten button press
    /// must not fill the SD card).
    pub adhoc_max: Duration,
    /// An ad-hoc recording interrupted (crash, shutdown, power) less than this long before the
    /// daemon starts again is resumed as a new part; an older one stays interrupted.
    pub resume_adhoc_window: Duration,
}

#[derive(Debug, Clone)]
pub struct PowerConfig {
    /// After a power-fail edge, power must stay restored this long before recording resumes
    /// (a flapping supervisor line must not start and cut parts in a loop).
    pub hold: Duration,
    /// Power off (`systemctl poweroff`) when the power-fail line stays asserted this long;
    /// `None` (0 in the file) never does.
    pub poweroff_after: Option<Duration>,
    /// After the edge has made everything durable, how long the encoder may drain the frames it
    /// still holds into the part (0: drop them). Bounded by what the hold-up supply lasts.
    pub drain: Duration,
}

/// How requests to Opencast authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpencastAuth {
    /// HTTP Digest with `X-Requested-Auth: Digest` (Opencast's capture-agent account).
    Digest,
    /// HTTP Basic (Opencast with basic auth enabled, or behind a proxy that does it).
    Basic,
}

/// Reads a file of CA certificates and checks it holds a PEM certificate, so a wrong path or file
/// fails where it is configured, not at the first TLS handshake. The error names the file and
/// what is wrong with it (for a config key's "got"). Shared by `opencast.ca_file` and the
/// provisioning enrolment file's `ca_file`.
pub fn read_ca_pem(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&pem);
    if !(text.contains("-----BEGIN CERTIFICATE-----") && text.contains("-----END CERTIFICATE-----")) {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(pem)
}

/// The `[opencast]` section: the server this box is a capture agent of.
#[derive(Clone)]
pub struct OpencastConfig {
    /// Base URL of the admin node, e.g. `https://opencast.example.edu`, no trailing `/`.
    pub url: String,
    pub username: String,
    pub password: String,
    pub auth: OpencastAuth,
    /// What Opencast shows as the agent's address (the URL of its status page); may be empty.
    pub address: String,
    /// `ca_file`: the PEM certificates that replace the public roots (Mozilla's) as the only
    /// CAs trusted for this server, for a campus Opencast behind an internal CA. Never a way to
    /// turn verification off: there is none.
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<Vec<u8>>,
    /// Base URLs that replace service discovery for one service each.
    pub capture_admin_url: Option<String>,
    pub scheduler_url: Option<String>,
    pub ingest_url: Option<String>,
    /// TCP + TLS connect timeout of every request.
    pub connect_timeout: Duration,
    /// Longest silence while waiting for or reading an answer.
    pub read_timeout: Duration,
    /// Overall limit of one request other than a track upload.
    pub request_timeout: Duration,
    /// Overall limit of one track upload (large files on a slow uplink take long).
    pub upload_timeout: Duration,
    /// How often the calendar is fetched.
    pub calendar_poll: Duration,
    /// How far ahead the calendar reaches (`cutoff`).
    pub calendar_cutoff: Duration,
    /// Workflow definition for ingests whose event names none (ad-hoc recordings).
    pub workflow: String,
    /// Flavor of the recorded track.
    pub flavor: String,
    /// First delay before a failed call is retried; doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl fmt::Debug for OpencastConfig {
    // The password stays out of logs and `--print-config` style dumps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpencastConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .field("auth", &self.auth)
            .field("address", &self.address)
            .field("ca_file", &self.ca_file)
            .field("capture_admin_url", &self.capture_admin_url)
            .field("scheduler_url", &self.scheduler_url)
            .field("ingest_url", &self.ingest_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("upload_timeout", &self.upload_timeout)
            .field("calendar_poll", &self.calendar_poll)
            .field("calendar_cutoff", &self.calendar_cutoff)
            .field("workflow", &self.workflow)
            .field("flavor", &self.flavor)
            .field("retry_initial", &self.retry_initial)
            .field("retry_max", &self.retry_max)
            .finish()
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, `None` for embedded defaults.
    pub source: Option<PathBuf>,
    pub agent_name: String,
    pub board: BoardConfig,
    pub capture: CaptureConfig,
    pub journal: JournalConfig,
    pub schedule: ScheduleConfig,
    pub control_socket: PathBuf,
    pub recorder: RecorderConfig,
    pub clock_trust: ClockTrust,
    pub power: PowerConfig,
    /// `None` when `opencast.url` is not set: the box records from its local schedule only.
    pub opencast: Option<OpencastConfig>,
    /// Where final recordings are uploaded, and how (`[upload]`).
    pub upload: UploadConfig,
    /// Signal alarms: silent mic, clipping, black or frozen picture, lost inputs (`[signals]`).
    pub signals: SignalsConfig,
    /// Where the local status page listens (`[status_page] listen`): `None` (the default) runs no
    /// page; otherwise always a loopback address, because the page has no login.
    pub status_page: Option<std::net::SocketAddr>,
}

/// The embedded defaults, as a TOML document; `lecternd --print-default-config` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The x264 tune used when `capture.x264_tune` is absent (docs/decisions.md D13).
pub const DEFAULT_X264_TUNE: &str = "zerolatency";

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, Some(path))
    }

    /// The embedded defaults: the simulated board, media under `/var/lib/lectern`.
    pub fn defaults() -> Config {
        Self::parse("", None).expect("the empty config is valid")
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::parse_with(text, path, None)
    }

    /// Every problem of a config file, for `lectern config check`: empty exactly when
    /// [`Config::load`] accepts the file. Out-of-range numbers are all reported; any other problem
    /// (a TOML syntax error, an unknown key, a bad choice or an inconsistency) ends the list, as it
    /// ends the daemon's validation.
    pub fn check(path: &Path) -> Vec<ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::check_text(&text, Some(path)),
            Err(source) => vec![ConfigError::Read { path: path.to_owned(), source }],
        }
    }

    /// [`Config::check`] on TOML text; `path` is only used in messages.
    pub fn check_text(text: &str, path: Option<&Path>) -> Vec<ConfigError> {
        let problems = RefCell::new(Vec::new());
        let last = Self::parse_with(text, path, Some(&problems)).err();
        let mut problems = problems.into_inner();
        problems.extend(last);
        problems
    }

    /// Parses and validates; with `problems`, a number out of range is recorded there and
    /// validation goes on with an in-range value, so one run reports them all. The daemon passes
    /// `None`: the first problem is the error.
    fn parse_with(text: &str, path: Option<&Path>, problems: Option<&RefCell<Vec<ConfigError>>>) -> Result<Config, ConfigError> {
        let shown = path.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("<embedded>"));
        let raw: Raw = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: shown.clone(), message: e.to_string().trim_end().to_owned() })?;
        let v = Validator { path: &shown, base: path.and_then(Path::parent), problems };
        v.validate(raw, path.map(Path::to_owned))
    }
}

struct Validator<'a> {
    path: &'a Path,
    /// Relative paths in the file are taken relative to the file's directory, so a bundled config
    /// works from any working directory.
    base: Option<&'a Path>,
    /// `lectern config check` collects out-of-range numbers here instead of stopping at the first.
    problems: Option<&'a RefCell<Vec<ConfigError>>>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, expected: &str, found: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            key: key.to_owned(),
            expected: expected.to_owned(),
            found: found.to_string(),
        }
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        match self.base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        }
    }

    fn range<T: PartialOrd + fmt::Display + Copy>(&self, key: &str, v: Option<T>, default: T, lo: T, hi: T) -> Result<T, ConfigError> {
        let v = v.unwrap_or(default);
        if v < lo || v > hi {
            let e = self.invalid(key, &format!("a number from {lo} to {hi}"), v);
            let Some(problems) = self.problems else { return Err(e) };
            problems.borrow_mut().push(e);
            // Go on with a value the rest of the validation can use; the config is already invalid.
            return Ok(if default < lo || default > hi { lo } else { default });
        }
        Ok(v)
    }

    fn opencast_url(&self, key: &str, url: Option<String>) -> Result<Option<String>, ConfigError> {
        match url.filter(|u| !u.is_empty()) {
            None => Ok(None),
            Some(u) if (u.starts_with("http://") || u.starts_with("https://")) && !u.contains(char::is_whitespace) => {
                Ok(Some(u.trim_end_matches('/').to_owned()))
            }
            Some(u) => Err(self.invalid(key, "an http:// or https:// URL", format!("{u:?}"))),
        }
    }

    /// The password inline, or read from `password_file` ([`Validator::read_secret_file`]).
    fn opencast_password(&self, inline: Option<String>, file: Option<PathBuf>) -> Result<String, ConfigError> {
        match (inline, file) {
            (Some(p), Some(_)) if !p.is_empty() => Err(self.invalid("opencast.password_file", "either opencast.password or opencast.password_file, not both", "both set")),
            (Some(p), None) => Ok(p),
            (None, None) => Ok(String::new()),
            (_, Some(f)) => self.read_secret_file("opencast.password_file", f, "the password"),
        }
    }

    /// The secret in `key`'s file (relative to the config's directory): where provisioning keeps
    /// secrets apart from the config, one 0600 file each (docs/provisioning.md). One trailing
    /// newline is not part of it (`echo secret > file`). An unreadable file is an error of `key`
    /// naming the file; the error never holds the file's contents. Shared by
    /// `opencast.password_file` and an S3 target's `secret_key_file`.
    fn read_secret_file(&self, key: &str, file: PathBuf, holding: &str) -> Result<String, ConfigError> {
        let f = self.path(file);
        let mut text = std::fs::read_to_string(&f).map_err(|e| self.invalid(key, &format!("a readable file holding {holding}"), format!("{}: {e}", f.display())))?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }

    /// `key`'s file of CA certificates (relative to the config's directory): read and checked to
    /// hold at least one PEM certificate, so a wrong path or file fails at load, not at the
    /// first TLS handshake.
    fn ca_pem(&self, key: &str, file: Option<PathBuf>) -> Result<(Option<PathBuf>, Option<Vec<u8>>), ConfigError> {
        let Some(f) = file.map(|f| self.path(f)) else { return Ok((None, None)) };
        let pem = read_ca_pem(&f).map_err(|got| self.invalid(key, "a readable PEM file of CA certificates (-----BEGIN CERTIFICATE-----)", got))?;
        Ok((Some(f), Some(pem)))
    }

    fn opencast(&self, o: RawOpencast) -> Result<Option<OpencastConfig>, ConfigError> {
        let Some(url) = self.opencast_url("opencast.url", o.url)? else { return Ok(None) };
        let auth = match o.auth.as_deref().unwrap_or("digest") {
            "digest" => OpencastAuth::Digest,
            "basic" => OpencastAuth::Basic,
            other => return Err(self.invalid("opencast.auth", "\"digest\" or \"basic\"", format!("{other:?}"))),
        };
        let secs = |key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(self.range(key, v, default, lo, hi)?))
        };
        let retry_initial = secs("opencast.retry_initial_s", o.retry_initial_s, 5, 1, 3600)?;
        let retry_max = secs("opencast.retry_max_s", o.retry_max_s, 300, 1, 86_400)?;
        if retry_max < retry_initial {
            return Err(self.invalid("opencast.retry_max_s", "at least opencast.retry_initial_s", retry_max.as_secs()));
        }
        let (ca_file, ca_pem) = self.ca_pem("opencast.ca_file", o.ca_file)?;
        let flavor = o.flavor.unwrap_or_else(|| "presenter/source".to_owned());
        if flavor.split('/').count() != 2 || flavor.split('/').any(str::is_empty) {
            return Err(self.invalid("opencast.flavor", "TYPE/SUBTYPE such as \"presenter/source\"", format!("{flavor:?}")));
        }
        Ok(Some(OpencastConfig {
            url,
            username: o.username.unwrap_or_else(|| "opencast_system_account".to_owned()),
            password: self.opencast_password(o.password, o.password_file)?,
            ca_file,
            ca_pem,
            auth,
            address: o.address.unwrap_or_default(),
            capture_admin_url: self.opencast_url("opencast.capture_admin_url", o.capture_admin_url)?,
            scheduler_url: self.opencast_url("opencast.scheduler_url", o.scheduler_url)?,
            ingest_url: self.opencast_url("opencast.ingest_url", o.ingest_url)?,
            connect_timeout: secs("opencast.connect_timeout_s", o.connect_timeout_s, 10, 1, 300)?,
            read_timeout: secs("opencast.read_timeout_s", o.read_timeout_s, 30, 1, 3600)?,
            request_timeout: secs("opencast.request_timeout_s", o.request_timeout_s, 60, 1, 3600)?,
            upload_timeout: secs("opencast.upload_timeout_s", o.upload_timeout_s, 4 * 3600, 60, 48 * 3600)?,
            calendar_poll: secs("opencast.calendar_poll_s", o.calendar_poll_s, 60, 5, 86_400)?,
            calendar_cutoff: Duration::from_secs(86_400 * self.range("opencast.calendar_cutoff_days", o.calendar_cutoff_days, 14, 1, 366)?),
            workflow: o.workflow.unwrap_or_else(|| "schedule-and-upload".to_owned()),
            flavor,
            retry_initial,
            retry_max,
        }))
    }

    /// `status_page.listen`: empty or absent is off; otherwise IP:PORT on loopback only. The page
    /// shows the picture and has no login, so it is never offered to the network: from another
    /// machine it is reached through an SSH tunnel (docs/status-page.md).
    fn status_page(&self, listen: Option<String>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        let Some(listen) = listen.filter(|l| !l.trim().is_empty()) else { return Ok(None) };
        let addr: std::net::SocketAddr = listen
            .trim()
            .parse()
            .map_err(|_| self.invalid("status_page.listen", "IP:PORT such as \"127.0.0.1:8480\" (empty = no page)", format!("{listen:?}")))?;
        if !addr.ip().is_loopback() {
            return Err(self.invalid(
                "status_page.listen",
                "a loopback address such as \"127.0.0.1:8480\" or \"[::1]:8480\" (the page has no login; reach it through an SSH tunnel)",
                format!("{listen:?}"),
            ));
        }
        Ok(Some(addr))
    }

    fn validate(&self, raw: Raw, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let agent_name = raw.agent.name.unwrap_or_else(|| "lectern".to_owned());
        if agent_name.is_empty()
            || agent_name.len() > 64
            || !agent_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(self.invalid("agent.name", "1-64 characters of A-Z a-z 0-9 . _ -", format!("{agent_name:?}")));
        }

        let b = raw.board;
        let backend = match b.backend.as_deref().unwrap_or("sim") {
            "sim" => BoardBackend::Sim,
            "rppal" => BoardBackend::Rppal,
            "gpiocdev" => BoardBackend::Gpiocdev,
            "auto" => BoardBackend::Auto,
            other => return Err(self.invalid("board.backend", "one of \"sim\", \"rppal\", \"gpiocdev\", \"auto\"", format!("{other:?}"))),
        };
        let board = BoardConfig {
            backend,
            pinmap: b.pinmap.unwrap_or_else(|| "rpi4".to_owned()),
            sim_socket: self.path(b.sim_socket.unwrap_or_else(|| PathBuf::from("/run/lectern/sim.sock"))),
            debounce: Duration::from_millis(self.range("board.debounce_ms", b.debounce_ms, 30, 1, 1000)?),
            long_press: Duration::from_millis(self.range("board.long_press_ms", b.long_press_ms, 2000, 200, 30_000)?),
        };

        let c = raw.capture;
        let video = match c.video.as_deref().unwrap_or("test") {
            "test" => VideoInput::Test { pattern: c.video_pattern.unwrap_or_else(|| "ball".to_owned()) },
            "v4l2" => VideoInput::V4l2 { device: c.video_device.unwrap_or_else(|| PathBuf::from("/dev/video0")) },
            other => return Err(self.invalid("capture.video", "\"test\" or \"v4l2\"", format!("{other:?}"))),
        };
        let audio = match c.audio.as_deref().unwrap_or("test") {
            "none" => AudioInput::None,
            "test" => AudioInput::Test,
            "alsa" => AudioInput::Alsa { device: c.audio_device.unwrap_or_else(|| "default".to_owned()) },
            other => return Err(self.invalid("capture.audio", "\"none\", \"test\" or \"alsa\"", format!("{other:?}"))),
        };
        let width = self.range("capture.width", c.width, 1280, 160, 3840)?;
        let height = self.range("capture.height", c.height, 720, 120, 2160)?;
        if width % 2 != 0 || height % 2 != 0 {
            return Err(self.invalid("capture.width/height", "even numbers (H.264 4:2:0)", format!("{width}x{height}")));
        }
        let retry_initial_s = self.range("capture.retry_initial_s", c.retry_initial_s, 2, 1, 3600)?;
        let retry_max_s = self.range("capture.retry_max_s", c.retry_max_s, 60, 1, 3600)?;
        if retry_max_s < retry_initial_s {
            return Err(self.invalid("capture.retry_max_s", &format!("at least capture.retry_initial_s ({retry_initial_s})"), retry_max_s));
        }
        let capture = CaptureConfig {
            video,
            audio,
            width,
            height,
            framerate: self.range("capture.framerate", c.framerate, 30, 1, 120)?,
            video_bitrate_kbps: self.range("capture.video_bitrate_kbps", c.video_bitrate_kbps, 4000, 100, 50_000)?,
            audio_bitrate_kbps: self.range("capture.audio_bitrate_kbps", c.audio_bitrate_kbps, 128, 16, 512)?,
            encoder: c.encoder.filter(|e| e != "auto"),
            x264_preset: c.x264_preset.unwrap_or_else(|| "veryfast".to_owned()),
            // Absent: zerolatency (docs/decisions.md D13: x264 then holds no frames back, which the
            // "≤ 1 s lost on an unwarned cut" promise needs, and ~100 MB less memory). "" or "none":
            // x264's own defaults (B-frames, lookahead, frame threads).
            x264_tune: match c.x264_tune {
                None => Some(DEFAULT_X264_TUNE.to_owned()),
                Some(t) if t.is_empty() || t == "none" => None,
                Some(t) => Some(t),
            },
            retry_initial: Duration::from_secs(retry_initial_s),
            retry_max: Duration::from_secs(retry_max_s),
            probe_interval: Some(self.range("capture.probe_interval_s", c.probe_interval_s, 60, 0, 86_400)?)
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            camera_controls: {
                let mut controls = c.camera_controls.unwrap_or_default();
                match c.power_line_hz {
                    None => {}
                    // V4L2_CID_POWER_LINE_FREQUENCY's menu: 0 disabled, 1 50 Hz, 2 60 Hz.
                    Some(hz @ (0 | 50 | 60)) => {
                        controls.insert("power_line_frequency".into(), match hz { 50 => 1, 60 => 2, _ => 0 });
                    }
                    Some(other) => return Err(self.invalid("capture.power_line_hz", "50, 60, or 0 (anti-flicker off)", other)),
                }
                controls
            },
            mixer_fix: c.mixer_fix.unwrap_or(true),
            preview_width: match self.range("capture.preview_width", c.preview_width, 320, 0, 1920)? {
                w if w % 2 == 1 => return Err(self.invalid("capture.preview_width", "an even number of pixels (0 = off)", w)),
                w => w,
            },
            mixer_element: c.mixer_element.filter(|e| !e.is_empty()),
            mic_gain_db: match c.mic_gain_db {
                None => None,
                Some(g) => Some(self.range("capture.mic_gain_db", Some(g), 0.0, -100.0, 100.0)?),
            },
        };

        let j = raw.journal;
        let segment_seconds = j.segment_seconds.unwrap_or(2.0);
        if !(0.5..=60.0).contains(&segment_seconds) {
            return Err(self.invalid("journal.segment_seconds", "a number of seconds from 0.5 to 60", segment_seconds));
        }
        let journal = JournalConfig {
            media_dir: self.path(j.media_dir.unwrap_or_else(|| PathBuf::from("/var/lib/lectern"))),
            segment: Duration::from_secs_f64(segment_seconds),
            fsync_interval: Duration::from_millis(self.range("journal.fsync_interval_ms", j.fsync_interval_ms, 800, 50, 10_000)?),
            min_free_bytes: self.range("journal.min_free_mb", j.min_free_mb, 256, 0, 1_048_576)? * 1024 * 1024,
        };

        let schedule = ScheduleConfig {
            ics: raw.schedule.ics.map(|p| self.path(p)),
            ics_url: self.opencast_url("schedule.ics_url", raw.schedule.ics_url)?,
            reload: Duration::from_secs(self.range("schedule.reload_s", raw.schedule.reload_s, 60, 1, 86_400)?),
        };
        if schedule.ics.is_some() && schedule.ics_url.is_some() {
            return Err(self.invalid("schedule.ics_url", "either schedule.ics or schedule.ics_url, not both", "both set"));
        }
        let recorder = RecorderConfig {
            adhoc_max: Duration::from_secs(60 * self.range("recorder.adhoc_max_minutes", raw.recorder.adhoc_max_minutes, 240, 1, 24 * 60)?),
            resume_adhoc_window: Duration::from_secs(
                60 * self.range("recorder.resume_adhoc_window_minutes", raw.recorder.resume_adhoc_window_minutes, 30, 0, 24 * 60)?,
            ),
        };

        let clock_trust = match raw.clock.trust.as_deref().unwrap_or("auto") {
            "auto" => ClockTrust::Auto,
            "always" => ClockTrust::Always,
            "never" => ClockTrust::Never,
            other => return Err(self.invalid("clock.trust", "one of \"auto\", \"always\", \"never\"", format!("{other:?}"))),
        };
        let opencast = self.opencast(raw.opencast)?;
        let upload = self.upload(raw.upload, opencast.as_ref().map(|o| o.url.as_str()), journal.min_free_bytes)?;
        let signals = self.signals(raw.signals)?;
        let status_page = self.status_page(raw.status_page.listen)?;
        Ok(Config {
            signals,
            status_page,
            opencast,
            upload,
            source,
            agent_name,
            board,
            capture,
            journal,
            schedule,
            control_socket: self.path(raw.control.socket.unwrap_or_else(|| PathBuf::from("/run/lectern/control.sock"))),
            recorder,
            clock_trust,
            power: PowerConfig {
                hold: Duration::from_millis(self.range("power.hold_ms", raw.power.hold_ms, 2000, 0, 600_000)?),
                poweroff_after: Some(self.range("power.poweroff_after_ms", raw.power.poweroff_after_ms, 0, 0, 600_000)?)
                    .filter(|&ms| ms > 0)
                    .map(Duration::from_millis),
                drain: Duration::from_millis(self.range("power.drain_ms", raw.power.drain_ms, 1000, 0, 10_000)?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, Some(Path::new("/etc/lectern/lectern.toml"))).unwrap_err().to_string()
    }

    /// `lectern config check` reports every out-of-range number, and reports a problem exactly
    /// when the daemon's `Config::parse` rejects the text, starting with the same one.
    #[test]
    fn check_reports_every_problem_and_agrees_with_the_daemon() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("[capture]\nframerate = 30", &[]),
            (
                "[capture]\nframerate = 0\nwidth = 20\n[board]\ndebounce_ms = 0",
                &["key `board.debounce_ms`: expected a number from 1 to 1000, found 0", "key `capture.width`", "key `capture.framerate`"],
            ),
            // A bad choice ends the list, as it ends the daemon's validation.
            ("[capture]\nframerate = 0\n[clock]\ntrust = \"maybe\"", &["key `capture.framerate`", "key `clock.trust`: expected one of"]),
            ("[capture]\nvideo = \"vhs\"\nframerate = 0", &["key `capture.video`: expected \"test\" or \"v4l2\""]),
            ("[capture]\nframerate = 0\nnot_a_key = 1", &["unknown field `not_a_key`"]),
        ];
        for (text, expect) in cases {
            let problems: Vec<String> = Config::check_text(text, Some(Path::new("/etc/lectern/x.toml"))).iter().map(ToString::to_string).collect();
            assert_eq!(problems.len(), expect.len(), "{text:?}: {problems:#?}");
            for (got, want) in problems.iter().zip(expect.iter()) {
                assert!(got.starts_with("config /etc/lectern/x.toml: ") && got.contains(want), "{text:?}: expected {want:?} in {got:?}");
            }
            match Config::parse(text, Some(Path::new("/etc/lectern/x.toml"))) {
                Ok(_) => assert!(problems.is_empty(), "{text:?}"),
                Err(e) => assert_eq!(problems.first(), Some(&e.to_string()), "{text:?}: the daemon's error comes first"),
            }
        }
    }

    #[test]
    fn embedded_defaults_are_the_sim_board() {
        let c = Config::defaults();
        assert_eq!(c.board.backend, BoardBackend::Sim);
        assert_eq!((c.capture.width, c.capture.height, c.capture.framerate), (1280, 720, 30));
        assert_eq!(c.capture.video_bitrate_kbps, 4000);
        assert_eq!(c.journal.segment, Duration::from_secs(2));
        // 800 ms plus the ≤ 1/20 hold of a partial page plus the ~70 ms the encoder and muxer
        // hold (zerolatency) keeps an unwarned cut's loss under 1 s (docs/decisions.md D13).
        assert_eq!(c.journal.fsync_interval, Duration::from_millis(800));
        assert_eq!(c.journal.min_free_bytes, 256 * 1024 * 1024);
        assert_eq!(c.capture.x264_tune.as_deref(), Some("zerolatency"));
        assert_eq!(c.capture.probe_interval, Some(Duration::from_secs(60)));
    }

    #[test]
    fn min_free_mb_is_kept_in_bytes_and_zero_turns_the_reserve_off() {
        let reserve = |text: &str| Config::parse(text, None).unwrap().journal.min_free_bytes;
        assert_eq!(reserve(""), 256 << 20);
        assert_eq!(reserve("[journal]\nmin_free_mb = 0"), 0);
        assert_eq!(reserve("[journal]\nmin_free_mb = 3"), 3 << 20);
    }

    #[test]
    fn probe_interval_zero_turns_the_device_probe_off() {
        let probe = |text: &str| Config::parse(text, None).unwrap().capture.probe_interval;
        assert_eq!(probe(""), Some(Duration::from_secs(60)));
        assert_eq!(probe("[capture]\nprobe_interval_s = 0"), None);
        assert_eq!(probe("[capture]\nprobe_interval_s = 5"), Some(Duration::from_secs(5)));
    }

    #[test]
    fn x264_tune_defaults_to_zerolatency_and_none_turns_it_off() {
        let tune = |text: &str| Config::parse(text, None).unwrap().capture.x264_tune;
        assert_eq!(tune(""), Some("zerolatency".to_owned()));
        assert_eq!(tune("[capture]\nx264_tune = \"none\""), None);
        assert_eq!(tune("[capture]\nx264_tune = \"\""), None);
        assert_eq!(tune("[capture]\nx264_tune = \"film\""), Some("film".to_owned()));
    }

    #[test]
    fn the_shipped_default_file_equals_the_embedded_defaults() {
        let c = Config::parse(DEFAULT_CONFIG, None).unwrap();
        let d = Config::defaults();
        assert_eq!(format!("{:?}", c.capture), format!("{:?}", d.capture));
        assert_eq!(format!("{:?}", c.journal), format!("{:?}", d.journal));
        assert_eq!(format!("{:?}", c.board), format!("{:?}", d.board));
        assert_eq!(format!("{:?}", c.upload), format!("{:?}", d.upload));
        assert_eq!(format!("{:?}", c.signals), format!("{:?}", d.signals));
    }

    #[test]
    fn bad_values_name_file_key_and_expectation() {
        let cases = [
            ("[capture]\nwidth = 12", "key `capture.width`: expected a number from 160 to 3840, found 12"),
            ("[capture]\nvideo = \"hdmi\"", "key `capture.video`: expected \"test\" or \"v4l2\", found \"hdmi\""),
            ("[board]\nbackend = \"pigpio\"", "key `board.backend`"),
            ("[clock]\ntrust = \"maybe\"", "key `clock.trust`"),
            ("[schedule]\nics_url = \"ftp://x/y.ics\"", "key `schedule.ics_url`"),
            ("[schedule]\nics = \"a.ics\"\nics_url = \"https://x/y.ics\"", "key `schedule.ics_url`"),
            ("[journal]\nsegment_seconds = 0.1", "key `journal.segment_seconds`"),
            ("[capture]\nwidth = 1281", "even numbers"),
            ("[agent]\nname = \"room 101\"", "key `agent.name`"),
            ("[capture]\nretry_initial_s = 10\nretry_max_s = 5", "key `capture.retry_max_s`"),
            ("[capture]\nprobe_interval_s = 100000", "key `capture.probe_interval_s`"),
            ("[journal]\nmin_free_mb = 2000000", "key `journal.min_free_mb`: expected a number from 0 to 1048576"),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.starts_with("config /etc/lectern/lectern.toml: "), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn syntax_errors_and_unknown_keys_name_the_file_and_key() {
        let e = err("[capture]\nwidht = 640");
        assert!(e.contains("/etc/lectern/lectern.toml") && e.contains("widht"), "{e}");
        let e = err("[capture]\nwidth = \"wide\"");
        assert!(e.contains("width") && e.contains("expected u32"), "{e}");
        let e = err("[capture\n");
        assert!(e.contains("/etc/lectern/lectern.toml"), "{e}");
    }

    #[test]
    fn opencast_section() {
        assert!(Config::defaults().opencast.is_none(), "no url, no Opencast");
        let c = Config::parse(
            "[opencast]\nurl = \"https://oc.example.edu/\"\npassword = \"s3cret\"\nauth = \"basic\"\ningest_url = \"http://ingest:8080/ingest\"",
            None,
        )
        .unwrap();
        let o = c.opencast.unwrap();
        assert_eq!((o.url.as_str(), o.auth, o.ingest_url.as_deref()), ("https://oc.example.edu", OpencastAuth::Basic, Some("http://ingest:8080/ingest")));
        assert_eq!((o.connect_timeout, o.flavor.as_str()), (Duration::from_secs(10), "presenter/source"));
        assert!(!format!("{o:?}").contains("s3cret"), "the password never reaches a log");
        for (text, want) in [
            ("[opencast]\nurl = \"oc.example.edu\"", "key `opencast.url`: expected an http:// or https:// URL"),
            ("[opencast]\nurl = \"http://oc\"\nauth = \"ntlm\"", "key `opencast.auth`"),
            ("[opencast]\nurl = \"http://oc\"\nconnect_timeout_s = 0", "key `opencast.connect_timeout_s`"),
            ("[opencast]\nurl = \"http://oc\"\nflavor = \"presenter\"", "key `opencast.flavor`"),
            ("[opencast]\nurl = \"http://oc\"\nscheduler_url = \"ftp://x\"", "key `opencast.scheduler_url`"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_config_file() {
        let c = Config::parse("[journal]\nmedia_dir = \"media\"\n[schedule]\nics = \"/abs/s.ics\"", Some(Path::new("/opt/demo/lectern.toml"))).unwrap();
        assert_eq!(c.journal.media_dir, PathBuf::from("/opt/demo/media"));
        assert_eq!(c.schedule.ics, Some(PathBuf::from("/abs/s.ics")));
    }

    #[test]
    fn opencast_password_file_is_read_next_to_the_config() {
        let dir = std::env::temp_dir().join(format!("lectern-config-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pw.secret"), "s3cret\n").unwrap();
        let config = dir.join("lectern.toml");
        let load = |text: &str| {
            std::fs::write(&config, text).unwrap();
            Config::load(&config)
        };
        let oc = "[opencast]\nurl = \"https://oc.example.edu\"\n";
        let c = load(&format!("{oc}password_file = \"pw.secret\"")).unwrap();
        assert_eq!(c.opencast.as_ref().unwrap().password, "s3cret", "relative to the config, one newline stripped");
        assert!(!format!("{c:?}").contains("s3cret"));
        // The shipped default's empty password does not clash with a file.
        assert_eq!(load(&format!("{oc}password = \"\"\npassword_file = \"pw.secret\"")).unwrap().opencast.unwrap().password, "s3cret");
        let both = load(&format!("{oc}password = \"x\"\npassword_file = \"pw.secret\"")).unwrap_err().to_string();
        assert!(both.contains("opencast.password_file") && both.contains("not both"), "{both}");
        let missing = load(&format!("{oc}password_file = \"nope.secret\"")).unwrap_err().to_string();
        assert!(missing.contains("opencast.password_file") && missing.contains("nope.secret"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn camera_controls_and_the_power_line_frequency() {
        let c = Config::parse("[capture]\npower_line_hz = 50\ncamera_controls = { brightness = 200, auto_exposure = 3 }", None).unwrap();
        let want: std::collections::BTreeMap<String, i64> = [("auto_exposure", 3), ("brightness", 200), ("power_line_frequency", 1)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(c.capture.camera_controls, want);
        assert_eq!(Config::parse("[capture]\npower_line_hz = 60", None).unwrap().capture.camera_controls["power_line_frequency"], 2);
        assert_eq!(Config::parse("[capture]\npower_line_hz = 0", None).unwrap().capture.camera_controls["power_line_frequency"], 0);
        assert!(Config::defaults().capture.camera_controls.is_empty());
        let e = Config::parse("[capture]\npower_line_hz = 55", None).unwrap_err().to_string();
        assert!(e.contains("capture.power_line_hz") && e.contains("50, 60, or 0"), "{e}");
    }

    /// `opencast.ca_file` and an S3 target's `ca_file`: read next to the config and checked to
    /// hold a PEM certificate; without one, the public roots.
    #[test]
    fn ca_files_must_hold_a_pem_certificate() {
        let dir = std::env::temp_dir().join(format!("lectern-config-cafile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.join("ca.pem"), pem).unwrap();
        std::fs::write(dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n").unwrap();
        let config = dir.join("lectern.toml");
        type Trust = Option<(Option<PathBuf>, Option<Vec<u8>>)>;
        let opencast: fn(Config) -> Trust = |c| c.opencast.map(|o| (o.ca_file, o.ca_pem));
        let s3: fn(Config) -> Trust = |c| match c.upload.targets.into_iter().next().map(|t| t.kind) {
            Some(TargetKind::S3(s)) => Some((s.ca_file, s.ca_pem)),
            _ => None,
        };
        let s3_target = "[[upload.target]]\nkind = \"s3\"\nendpoints = [\"https://minio.campus\"]\nbucket = \"b\"\naccess_key = \"k\"\nsecret_key = \"hush\"\n";
        for (key, section, trust) in [("opencast.ca_file", "[opencast]\nurl = \"https://oc.example.edu\"\n", opencast), ("upload.target[0].ca_file", s3_target, s3)] {
            let load = |ca: Option<&str>| {
                let line = ca.map(|f| format!("ca_file = \"{f}\"\n")).unwrap_or_default();
                std::fs::write(&config, format!("{section}{line}")).unwrap();
                Config::load(&config)
            };
            assert_eq!(trust(load(Some("ca.pem")).unwrap()), Some((Some(dir.join("ca.pem")), Some(pem.as_bytes().to_vec()))), "{key}: relative to the config");
            assert_eq!(trust(load(None).unwrap()), Some((None, None)), "{key}: public roots by default");
            for (file, want) in [("nope.pem", "nope.pem"), ("key.pem", "no PEM certificate")] {
                let e = load(Some(file)).unwrap_err().to_string();
                assert!(e.contains(&format!("key `{key}`: expected a readable PEM file of CA certificates")) && e.contains(want), "{key} = {file}: {e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_page_is_off_by_default_and_listens_on_loopback_only() {
        assert_eq!(Config::defaults().status_page, None);
        assert_eq!(Config::parse("[status_page]\nlisten = \"\"", None).unwrap().status_page, None);
        let on = |l: &str| Config::parse(&format!("[status_page]\nlisten = \"{l}\""), None);
        assert_eq!(on("127.0.0.1:8480").unwrap().status_page, Some("127.0.0.1:8480".parse().unwrap()));
        assert_eq!(on("[::1]:8480").unwrap().status_page, Some("[::1]:8480".parse().unwrap()));
        for (bad, want) in [("0.0.0.0:8480", "loopback"), ("192.168.1.5:80", "SSH tunnel"), ("localhost:8480", "IP:PORT"), ("8480", "IP:PORT")] {
            let e = on(bad).unwrap_err().to_string();
            assert!(e.contains("status_page.listen") && e.contains(want) && e.contains(bad), "{bad}: {e}");
        }
    }
}
