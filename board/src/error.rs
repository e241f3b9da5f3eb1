//! The one error type of `lectern-board`. Every variant names the pin, file or socket path it is
//! about, because the person reading the message is usually at a lecture-hall box with a
//! multimeter, not at a debugger.

use std::path::PathBuf;

/// Everything that can go wrong opening or driving the board.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// A pin map named by path could not be read.
    #[error("cannot read pin map {path}: {source}")]
    PinMapRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A pin map is not valid TOML or has a value of the wrong type.
    #[error("pin map {file} is not valid: {message}")]
    PinMapParse { file: String, message: String },

    /// A pin map parsed but one key is missing or has an impossible value.
    #[error("pin map {file}: key `{key}`: {problem}")]
    PinMapKey {
        file: String,
        key: String,
        problem: String,
    },

    /// A pin map name that is neither built in nor a path.
    #[error(
        "unknown pin map {name:?}: built-in maps are {known}; pass a path to use your own file"
    )]
    UnknownPinMap { name: String, known: String },

    /// The configuration asks for a backend that this build left out.
    #[error("GPIO backend {backend:?} is not compiled in; rebuild lectern-board with feature `{backend}`")]
    BackendDisabled { backend: &'static str },

    /// The configured gpiochip (by label or by name) does not exist.
    #[error("GPIO chip {wanted} not found: {detail}")]
    ChipNotFound { wanted: String, detail: String },

    /// A GPIO operation on a real backend failed.
    #[error("GPIO {pin}: {op} failed: {source}")]
    Gpio {
        /// Which role and line, e.g. `button (line 17 on gpiochip0)`.
        pin: String,
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// An input of the opened board was handed out already (each goes to exactly one monitor).
    #[error("board input {input} was already taken")]
    InputTaken { input: &'static str },

    /// The edge-delivery channel of an input went away (its interrupt thread died).
    #[error("GPIO {pin}: edge events stopped arriving (interrupt thread gone)")]
    EdgeSourceClosed { pin: String },

    /// A socket operation on the sim control socket failed.
    #[error("sim socket {path}: {op} failed: {source}")]
    SimSocket {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// Another live sim server already answers on this socket path.
    #[error("sim socket {path} is already served by another process")]
    SimSocketInUse { path: PathBuf },

    /// Something that is not a socket sits where the sim socket should go; we refuse to delete it.
    #[error("sim socket path {path} exists and is not a socket; refusing to remove it")]
    SimSocketNotASocket { path: PathBuf },

    /// The sim server understood the connection but rejected the request.
    #[error("sim request {request:?} rejected: {reason}")]
    SimRejected { request: String, reason: String },

    /// The sim server answered something that is neither `ok ...` nor `err ...`.
    #[error("sim socket {path}: unexpected reply {reply:?}")]
    SimProtocol { path: PathBuf, reply: String },

    /// A board thread could not be started.
    #[error("cannot start thread {name}: {source}")]
    Spawn {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias used throughout the crate.
pub type Result<T, E = BoardError> = std::result::Result<T, E>;

/// Lets `BoardError` be the error of the embedded-hal pins we implement, so generic drivers
/// written against embedded-hal see our context-rich messages instead of a bare `Infallible`.
impl embedded_hal::digital::Error for BoardError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}
