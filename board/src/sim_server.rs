//! The sim control socket: a Unix stream socket speaking one request line → one reply line, so
//! `lectern sim button`, system tests and a human with `socat` can press the simulated button.
//!
//! Protocol (requests are case-sensitive, surrounding whitespace ignored):
//!
//! | request          | reply                                     |
//! |------------------|-------------------------------------------|
//! | `button press`   | `ok press` (after the short hold)          |
//! | `button long`    | `ok long` (after the long hold)            |
//! | `button down`    | `ok down`                                  |
//! | `button up`      | `ok up`                                    |
//! | `powerfail on`   | `ok powerfail on`                          |
//! | `powerfail off`  | `ok powerfail off`                         |
//! | `led`            | `ok <pattern> <on/off>`, e.g. `ok idle off` |
//! | `state`          | `ok {"led":"idle","led_on":false,"button":"up","powerfail":false}` |
//!
//! Anything else gets `err <what was wrong>`. The parser ([`parse_request`]) is pure; the server
//! thread only owns sockets. Each connection gets its own thread so a 2 s `button long` does not
//! block a concurrent `state`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{BoardError, Result};
use crate::sim::SimHandle;

/// A parsed sim socket request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRequest {
    ButtonPress,
    ButtonLong,
    ButtonDown,
    ButtonUp,
    PowerFail(bool),
    Led,
    State,
}

const USAGE: &str = "expected one of: button press|long|down|up, powerfail on|off, led, state";

/// Parses one request line. The error is the text after `err ` in the reply.
pub fn parse_request(line: &str) -> std::result::Result<SimRequest, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["button", "press"] => Ok(SimRequest::ButtonPress),
        ["button", "long"] => Ok(SimRequest::ButtonLong),
        ["button", "down"] => Ok(SimRequest::ButtonDown),
        ["button", "up"] => Ok(SimRequest::ButtonUp),
        ["powerfail", "on"] => Ok(SimRequest::PowerFail(true)),
        ["powerfail", "off"] => Ok(SimRequest::PowerFail(false)),
        ["led"] => Ok(SimRequest::Led),
        ["state"] => Ok(SimRequest::State),
        [] => Err(format!("empty request; {USAGE}")),
        ["button", other, ..] => Err(format!(
            "unknown button action {other:?}; expected press, long, down or up"
        )),
        ["button"] => Err("`button` needs an action: press, long, down or up".to_owned()),
        ["powerfail", other, ..] => Err(format!(
            "unknown powerfail state {other:?}; expected on or off"
        )),
        ["powerfail"] => Err("`powerfail` needs on or off".to_owned()),
        _ => Err(format!("unknown request {:?}; {USAGE}", line.trim())),
    }
}

/// Carries out one request against the sim and returns the full reply line (without newline).
pub fn handle_line(handle: &SimHandle, line: &str) -> String {
    let req = match parse_request(line) {
        Ok(r) => r,
        Err(e) => return format!("err {e}"),
    };
    match req {
        SimRequest::ButtonPress => {
            handle.press();
            "ok press".to_owned()
        }
        SimRequest::ButtonLong => {
            handle.long_press();
            "ok long".to_owned()
        }
        SimRequest::ButtonDown => {
            handle.button_down();
            "ok down".to_owned()
        }
        SimRequest::ButtonUp => {
            handle.button_up();
            "ok up".to_owned()
        }
        SimRequest::PowerFail(on) => {
            handle.set_power_fail(on);
            format!("ok powerfail {}", if on { "on" } else { "off" })
        }
        SimRequest::Led => match handle.led_pattern() {
            Some(p) => format!("ok {p} {}", if handle.led_on() { "on" } else { "off" }),
            None => "err no LED driver is attached to the simulated LED".to_owned(),
        },
        SimRequest::State => match serde_json::to_string(&handle.snapshot()) {
            Ok(json) => format!("ok {json}"),
            Err(e) => format!("err cannot encode state: {e}"),
        },
    }
}

/// Serves the sim control socket until dropped; drop removes the socket file.
pub struct SimServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Binds `path` (removing a stale socket left by a crashed run) and starts serving `handle`.
    pub fn spawn(path: &Path, handle: SimHandle) -> Result<SimServer> {
        // The socket usually lives in a runtime directory that may not exist yet.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| BoardError::SimSocket { path: path.to_owned(), op: "create directory", source })?;
        }
        remove_stale(path)?;
        let listener = UnixListener::bind(path).map_err(|source| BoardError::SimSocket {
            path: path.to_owned(),
            op: "bind",
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let path = path.to_owned();
            std::thread::Builder::new()
                .name("board-sim-socket".into())
                .spawn(move || accept_loop(listener, handle, stop, path))
                .map_err(|source| BoardError::Spawn {
                    name: "board-sim-socket",
                    source,
                })?
        };
        log::info!(target: "board", "sim control socket listening on {}", path.display());
        Ok(SimServer {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` has no timeout; a throwaway connection wakes it so it can see the stop flag.
        // If that fails (someone deleted the socket file under us), joining would hang forever,
        // so the thread is left parked in `accept` until the process exits; it holds nothing
        // but the listening descriptor.
        match UnixStream::connect(&self.path) {
            Ok(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            Err(e) => log::warn!(
                target: "board",
                "sim socket {}: cannot wake the server thread ({e}); leaving it parked",
                self.path.display()
            ),
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!(target: "board", "cannot remove sim socket {}: {e}", self.path.display());
        }
    }
}

fn remove_stale(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BoardError::SimSocket {
                path: path.to_owned(),
                op: "stat",
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(BoardError::SimSocketNotASocket {
            path: path.to_owned(),
        });
    }
    if UnixStream::connect(path).is_ok() {
        return Err(BoardError::SimSocketInUse {
            path: path.to_owned(),
        });
    }
    log::info!(target: "board", "removing stale sim socket {}", path.display());
    std::fs::remove_file(path).map_err(|source| BoardError::SimSocket {
        path: path.to_owned(),
        op: "remove stale",
        source,
    })
}

fn accept_loop(listener: UnixListener, handle: SimHandle, stop: Arc<AtomicBool>, path: PathBuf) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let handle = handle.clone();
                let spawned = std::thread::Builder::new()
                    .name("board-sim-conn".into())
                    .spawn(move || serve_connection(stream, &handle));
                if let Err(e) = spawned {
                    log::warn!(target: "board", "sim socket {}: cannot start connection thread: {e}", path.display());
                }
            }
            Err(e) => {
                log::warn!(target: "board", "sim socket {}: accept failed: {e}", path.display());
                // Avoid a hot loop if accept keeps failing (e.g. out of file descriptors).
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_connection(stream: UnixStream, handle: &SimHandle) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log::warn!(target: "board", "sim socket: cannot clone connection: {e}");
            return;
        }
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let reply = handle_line(handle, &line);
        log::debug!(target: "board", "sim socket: {:?} -> {:?}", line.trim(), reply);
        if writeln!(writer, "{reply}").is_err() {
            break;
        }
    }
}

/// Sends one request line and returns the reply payload (the text after `ok `). An `err` reply
/// becomes [`BoardError::SimRejected`]. Used by the CLI (`lectern sim ...`) and tests.
pub fn sim_request(path: &Path, line: &str) -> Result<String> {
    let io_err = |op: &'static str| {
        move |source| BoardError::SimSocket {
            path: path.to_owned(),
            op,
            source,
        }
    };
    let mut stream = UnixStream::connect(path).map_err(io_err("connect"))?;
    writeln!(stream, "{}", line.trim()).map_err(io_err("write"))?;
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(io_err("shutdown"))?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .map_err(io_err("read"))?;
    let reply = reply.trim_end_matches(['\n', '\r']);
    if reply == "ok" {
        Ok(String::new())
    } else if let Some(ok) = reply.strip_prefix("ok ") {
        Ok(ok.to_owned())
    } else if let Some(err) = reply.strip_prefix("err ") {
        Err(BoardError::SimRejected {
            request: line.trim().to_owned(),
            reason: err.to_owned(),
        })
    } else {
        Err(BoardError::SimProtocol {
            path: path.to_owned(),
            reply: reply.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expect: std::result::Result<SimRequest, &str>) {
        match (parse_request(line), expect) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{line:?}"),
            (Err(got), Err(want)) => {
                assert!(got.contains(want), "{line:?}: {got:?} lacks {want:?}")
            }
            (got, want) => panic!("{line:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn request_table() {
        check("button press", Ok(SimRequest::ButtonPress));
        check("  button   long \r", Ok(SimRequest::ButtonLong));
        check("button down", Ok(SimRequest::ButtonDown));
        check("button up", Ok(SimRequest::ButtonUp));
        check("powerfail on", Ok(SimRequest::PowerFail(true)));
        check("powerfail off", Ok(SimRequest::PowerFail(false)));
        check("led", Ok(SimRequest::Led));
        check("state", Ok(SimRequest::State));
        check("", Err("empty request"));
        check("button", Err("needs an action"));
        check("button hold", Err("unknown button action \"hold\""));
        check("powerfail maybe", Err("expected on or off"));
        check("reboot", Err("unknown request \"reboot\""));
    }

    #[test]
    fn led_without_driver_is_an_error_reply() {
        let b = crate::sim::SimBoard::new();
        assert!(handle_line(&b.handle, "led").starts_with("err "));
        assert_eq!(
            handle_line(&b.handle, "state"),
            r#"ok {"led":null,"led_on":false,"button":"up","powerfail":false}"#
        );
    }

    #[test]
    fn stale_socket_is_replaced_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.sock");
        // A socket file nobody listens on, as a crashed run leaves behind.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let b = crate::sim::SimBoard::new();
        let server = SimServer::spawn(&path, b.handle.clone()).unwrap();
        assert_eq!(sim_request(&path, "powerfail on").unwrap(), "powerfail on");
        assert!(b.handle.power_fail());
        // A second server on the same path must refuse rather than steal the socket.
        assert!(matches!(
            SimServer::spawn(&path, b.handle.clone()),
            Err(BoardError::SimSocketInUse { .. })
        ));
        drop(server);
        assert!(!path.exists());
    }

    /// Regression: dropping the server hung forever in `join` when the socket file had been
    /// deleted first (a test's temp dir cleaned up before the board), because the wake-up
    /// connection could not reach the blocked `accept`.
    #[test]
    fn regression_drop_does_not_hang_when_socket_file_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.sock");
        let b = crate::sim::SimBoard::new();
        let server = SimServer::spawn(&path, b.handle).unwrap();
        std::fs::remove_file(&path).unwrap();
        let t0 = std::time::Instant::now();
        drop(server);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn refuses_to_delete_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-socket");
        std::fs::write(&path, "precious").unwrap();
        let b = crate::sim::SimBoard::new();
        let err = SimServer::spawn(&path, b.handle).err().unwrap();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(path.exists());
    }

    #[test]
    fn err_reply_becomes_sim_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sim.sock");
        let b = crate::sim::SimBoard::new();
        let _server = SimServer::spawn(&path, b.handle).unwrap();
        let err = sim_request(&path, "jump").unwrap_err();
        assert!(matches!(err, BoardError::SimRejected { .. }), "{err}");
        assert!(err.to_string().contains("unknown request"), "{err}");
    }
}
