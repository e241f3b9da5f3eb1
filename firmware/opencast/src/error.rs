//! The crate's single error type, [`OpencastError`], and the rule that decides whether a failed
//! operation is worth retrying later ([`OpencastError::is_transient`]). Every variant names the
//! URL or file involved, because the person reading the log line is an AV technician who needs to
//! know *which* server call went wrong.

use std::path::PathBuf;

/// Everything that can go wrong talking to Opencast.
#[derive(Debug, thiserror::Error)]
pub enum OpencastError {
    /// The request never got an HTTP answer: connection refused, DNS, TLS, a timeout, a reset.
    /// This is what "the server is unreachable" looks like, so it is always retried.
    #[error("{method} {url}: {source}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// What ureq reported.
        #[source]
        source: ureq::Error,
    },

    /// The server answered with a status the call does not accept.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// The full URL.
        url: String,
        /// The status code.
        status: u16,
        /// The first few hundred bytes of the answer, for the log.
        body: String,
        /// The answer's `Retry-After` header as sent (delta-seconds or an HTTP date), if any.
        retry_after: Option<String>,
    },

    /// The credentials or the auth method in `[opencast]` are wrong: a 401 that survives a fresh
    /// Digest challenge, or a 302 to the login page (what Opencast does when the request lacks
    /// `X-Requested-Auth: Digest`, i.e. `auth = "basic"` against a Digest-only server).
    #[error("{url}: authentication failed ({detail}); check opencast.username, opencast.password and opencast.auth")]
    Auth {
        /// The full URL.
        url: String,
        /// What the server did.
        detail: String,
    },

    /// The service registry's answer could not be used.
    #[error("service discovery {url}: {detail}")]
    Discovery {
        /// The registry URL (or the service type when no URL applies).
        url: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// The calendar answer is not a complete iCalendar document.
    #[error("calendar {url}: {detail}")]
    Calendar {
        /// The calendar URL.
        url: String,
        /// What was wrong with the answer.
        detail: String,
    },

    /// A `WWW-Authenticate` challenge could not be parsed or asks for something we do not speak.
    #[error("digest challenge: {0}")]
    Challenge(String),

    /// A queued operation could not be decoded (written by a different firmware version?).
    #[error("outbox entry {id} ({kind}): {detail}")]
    BadEntry {
        /// Outbox row id.
        id: i64,
        /// The entry's kind.
        kind: String,
        /// What was wrong.
        detail: String,
    },

    /// A local file of a recording (a track) could not be read.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The outbox store in the journal database failed.
    #[error("outbox: {0}")]
    Journal(#[from] lectern_journal::JournalError),
}

impl OpencastError {
    /// Whether the operation that failed should stay queued and be tried again after a back-off.
    ///
    /// Unreachable servers, 5xx, 408 and 429 are transient. So are auth failures: they are a
    /// configuration fault an operator fixes, and dropping queued recording states because a
    /// password expired would lose exactly the metadata the outbox exists to keep. Other 4xx
    /// answers (400 bad request, 404 unknown recording) and a track file that no longer exists
    /// will not change by retrying: the entry is parked and logged instead of blocking everything
    /// queued behind it.
    pub fn is_transient(&self) -> bool {
        match self {
            OpencastError::Transport { .. } | OpencastError::Auth { .. } | OpencastError::Journal(_) => true,
            OpencastError::Status { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            // A file that is gone will not come back; any other read error (a flaky card) may
            // pass.
            OpencastError::Io { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
            // A half-written calendar or registry answer (a proxy cut it) may be whole next time.
            OpencastError::Calendar { .. } | OpencastError::Discovery { .. } => true,
            OpencastError::Challenge(_) | OpencastError::BadEntry { .. } => false,
        }
    }

    /// The HTTP status of an answer the call did not accept (`None` for every other failure), so
    /// callers with their own retry policy (`lectern-upload`) can classify it.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpencastError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The `Retry-After` header of a refused answer, as the server sent it.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            OpencastError::Status { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = OpencastError> = std::result::Result<T, E>;
