//! The local control socket between `lectern` (the operator CLI, scripts, monitoring) and
//! `lecternd`: one JSON request line in, one JSON response line out, over a Unix stream socket.
//!
//! This crate owns the wire format and both ends of the socket, not what the requests do: the
//! daemon passes a handler to [`Server::spawn`]. The response shapes are a public interface that
//! scripts depend on; they are documented in docs/control-api.md and pinned by the daemon's tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Requests are small; anything longer is refused rather than buffered without bound.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: cannot connect (is lecternd running?): {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: cannot bind: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    #[error("control socket {path}: bad response {line:?}: {message}")]
    BadResponse { path: PathBuf, line: String, message: String },
    /// The daemon understood the request and refused it.
    #[error("{0}")]
    Refused(String),
}

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Current state, recording, LED, encoder, capture counters.
    Status,
    /// Start an ad-hoc recording.
    RecordStart {
        #[serde(default)]
        title: Option<String>,
    },
    /// Stop the current recording (ad-hoc or scheduled).
    RecordStop,
    /// Every recording in the journal with its totals.
    Recordings,
    /// The newest `n` recordings (by start), in the same shape as `Recordings`, and `total`,
    /// how many the journal holds: a page or a script that shows the last few need not have
    /// the daemon build a row for every recording of the year.
    NewestRecordings { n: u32 },
    /// The segments of one recording.
    Segments { recording_id: String },
    /// Every upload job with its progress, the targets' endpoints and the alarms.
    Uploads,
    /// Queue a parked or waiting upload again, due now.
    UploadRetry { recording_id: String },
    /// Install a RAUC bundle (an absolute path on the box) into the inactive slot and reboot
    /// into it, each step deferred until no recording or stitch runs and none is about to start.
    Update { bundle: String },
    /// Apply a signed provisioning bundle (an absolute path on the box, docs/provisioning.md);
    /// refused, with the reason, while the box is not idle as for `Update`.
    Provision { bundle: String },
    /// The confidence preview of the running recording: opens it for a while and answers with
    /// the newest JPEG (base64) and the audio meter, or `pending` until the first JPEG comes.
    Preview,
}

/// The envelope of every response: `{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// Sends one request and returns the response's `data`, or [`ControlError::Refused`].
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<serde_json::Value, ControlError> {
    let io = |source| ControlError::Io { path: socket.to_owned(), source };
    let mut stream = UnixStream::connect(socket).map_err(|source| ControlError::Connect { path: socket.to_owned(), source })?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream.take(16 * 1024 * 1024)).read_line(&mut reply).map_err(io)?;
    let resp: Response = serde_json::from_str(reply.trim_end()).map_err(|e| ControlError::BadResponse {
        path: socket.to_owned(),
        line: reply.chars().take(200).collect(),
        message: e.to_string(),
    })?;
    if resp.ok {
        Ok(resp.data)
    } else {
        Err(ControlError::Refused(resp.error.unwrap_or_else(|| "refused without a reason".into())))
    }
}

/// What the daemon does with a request.
pub type Handler = dyn Fn(Request) -> Result<serde_json::Value, String> + Send + Sync;

/// The listening end; removes its socket file when dropped.
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` (removing a stale socket file first; creating the parent directory) and serves
    /// requests on a thread, one connection at a time: requests are rare and cheap, and a single
    /// thread bounds what a misbehaving client can cost.
    pub fn spawn(path: &Path, handler: Box<Handler>) -> Result<Server, ControlError> {
        let bind = |source| ControlError::Bind { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(bind)?;
        }
        match std::fs::remove_file(path) {
            Ok(()) => log::debug!(target: "control", "removed stale socket {}", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind)?;
        // Owner and group only: the socket starts and stops recordings.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(stream) => serve(stream, &*handler),
                        Err(e) => log::warn!(target: "control", "accept failed: {e}"),
                    }
                }
            })
            .map_err(bind)?;
        Ok(Server { path: path.to_owned(), stop, thread: Some(thread) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so the thread sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(stream: UnixStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(read) = stream.try_clone() else { return };
    if BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let resp = match serde_json::from_str::<Request>(line.trim_end()) {
        Ok(req) => match handler(req) {
            Ok(data) => Response { ok: true, error: None, data },
            Err(e) => Response { ok: false, error: Some(e), data: serde_json::Value::Null },
        },
        Err(e) => Response { ok: false, error: Some(format!("bad request: {e}")), data: serde_json::Value::Null },
    };
    let mut out = serde_json::to_string(&resp).expect("responses serialize");
    out.push('\n');
    let mut stream = stream;
    if let Err(e) = stream.write_all(out.as_bytes()) {
        log::debug!(target: "control", "client went away: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_wire_format_is_stable() {
        let cases = [
            (Request::Status, r#"{"cmd":"status"}"#),
            (Request::RecordStart { title: Some("T".into()) }, r#"{"cmd":"record_start","title":"T"}"#),
            (Request::RecordStop, r#"{"cmd":"record_stop"}"#),
            (Request::Recordings, r#"{"cmd":"recordings"}"#),
            (Request::NewestRecordings { n: 20 }, r#"{"cmd":"newest_recordings","n":20}"#),
            (Request::Segments { recording_id: "r".into() }, r#"{"cmd":"segments","recording_id":"r"}"#),
            (Request::Update { bundle: "/data/updates/b.raucb".into() }, r#"{"cmd":"update","bundle":"/data/updates/b.raucb"}"#),
            (Request::Provision { bundle: "/media/usb/hall-a.bundle".into() }, r#"{"cmd":"provision","bundle":"/media/usb/hall-a.bundle"}"#),
            (Request::Preview, r#"{"cmd":"preview"}"#),
        ];
        for (req, wire) in cases {
            assert_eq!(serde_json::to_string(&req).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Request>(wire).unwrap(), req);
        }
        assert_eq!(serde_json::from_str::<Request>(r#"{"cmd":"record_start"}"#).unwrap(), Request::RecordStart { title: None });
    }

    #[test]
    fn round_trip_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        // A stale file where the socket goes must not stop the daemon from starting.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"stale").unwrap();
        let server = Server::spawn(
            &path,
            Box::new(|req| match req {
                Request::Status => Ok(json!({"state": "idle"})),
                Request::RecordStop => Err("not recording".into()),
                other => Ok(json!({ "echo": format!("{other:?}") })),
            }),
        )
        .unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(request(&path, &Request::Status, t).unwrap(), json!({"state": "idle"}));
        let e = request(&path, &Request::RecordStop, t).unwrap_err();
        assert_eq!(e.to_string(), "not recording");
        // Garbage gets a clear error, and the server keeps serving.
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"cmd\":\"reboot\"}\n").unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        assert!(reply.contains("\"ok\":false") && reply.contains("bad request") && reply.contains("reboot"), "{reply}");
        assert!(request(&path, &Request::Status, t).is_ok());
        drop(server);
        assert!(!path.exists());
        let e = request(&path, &Request::Status, t).unwrap_err();
        assert!(e.to_string().contains("is lecternd running?"), "{e}");
    }
}
