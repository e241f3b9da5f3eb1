//! The box's local status page (issue 11): one read-only web page that shows what the box is
//! doing — state, the confidence picture (about one a second, only while the page is open), the
//! audio meter, the signal and upload alarms, the recordings with their quality verdict, and
//! storage — for an AV technician with a laptop, over an SSH tunnel.
//!
//! The seam is the control socket's: the page asks the daemon the same read-only requests as
//! `lectern status`, `lectern recordings` and `lectern preview`, through a [`Source`] that the
//! daemon wires to its main loop. The page can start, stop or change nothing, so it needs no
//! login; it listens on loopback only (the config refuses anything else), and answers only
//! requests whose `Host` is a loopback name, so a web page elsewhere cannot reach it through DNS
//! rebinding. The server is `tiny_http` (docs/decisions.md D24): one thread here handles the
//! requests one at a time, so a busy browser can never queue more than one request into the
//! daemon.
//!
//! Routes (GET and HEAD only; docs/status-page.md):
//! - `/` the page, `/page.js`, `/page.css` (embedded; no request leaves the box)
//! - `/api/status` `/api/recordings` (the newest [`RECORDINGS_SHOWN`], asked as such) `/api/preview`: the
//!   control requests' `data`; a refusal is a 409 with `{"error": ...}`
//! - `/preview.jpg` the newest picture as a JPEG (503 + `Retry-After` while it is coming)

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use base64::Engine as _;
use lectern_control::Request;
use serde_json::{json, Value};
use tiny_http::{Header, Method, Response};

/// How many recordings `/api/recordings` returns, newest first: the page's table stays small
/// however long the box has been recording.
pub const RECORDINGS_SHOWN: usize = 20;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const PAGE_JS: &str = include_str!("../assets/page.js");
const PAGE_CSS: &str = include_str!("../assets/page.css");

/// Nothing but the page's own files: no inline script, no other origin; the picture arrives as
/// a `data:` URL. Framing is refused.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Answers the daemon's control requests; the daemon passes the same kind of handler it gives
/// the control socket. Only `Status`, `NewestRecordings` and `Preview` are ever asked.
pub type Source = lectern_control::Handler;

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("status page: cannot listen on {addr}: {message}")]
    Listen { addr: SocketAddr, message: String },
    #[error("status page: {addr} is not a loopback address (the page has no login)")]
    NotLoopback { addr: SocketAddr },
}

/// The running page server; stops when dropped.
pub struct StatusPage {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl StatusPage {
    /// Listens on `listen` (port 0 picks a free one: see [`StatusPage::addr`]) and serves on a
    /// thread of its own.
    pub fn spawn(listen: SocketAddr, source: Box<Source>) -> Result<StatusPage, PageError> {
        if !listen.ip().is_loopback() {
            return Err(PageError::NotLoopback { addr: listen });
        }
        let server = tiny_http::Server::http(listen).map_err(|e| PageError::Listen { addr: listen, message: e.to_string() })?;
        let addr = server.server_addr().to_ip().unwrap_or(listen);
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("status-page".into())
            .spawn(move || {
                for req in serving.incoming_requests() {
                    serve(req, &*source);
                }
            })
            .map_err(|e| PageError::Listen { addr, message: e.to_string() })?;
        log::info!(target: "statuspage", "status page on http://{addr}/ (loopback only)");
        Ok(StatusPage { addr, server, thread: Some(thread) })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A reply before it becomes a `tiny_http` response.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    extra: Option<(&'static str, &'static str)>,
}

impl Reply {
    fn json(status: u16, v: &Value) -> Reply {
        Reply { status, content_type: "application/json", body: v.to_string().into_bytes(), extra: None }
    }
    fn text(status: u16, t: &str) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: format!("{t}\n").into_bytes(), extra: None }
    }
    fn asset(content_type: &'static str, body: &str) -> Reply {
        Reply { status: 200, content_type, body: body.as_bytes().to_vec(), extra: None }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("ASCII header")
}

fn serve(req: tiny_http::Request, source: &Source) {
    let host = req.headers().iter().find(|h| h.field.equiv("Host")).map(|h| h.value.as_str().to_owned());
    let reply = route(req.method(), req.url(), host.as_deref(), source);
    let mut resp = Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_header(header("Content-Type", reply.content_type))
        .with_header(header("Cache-Control", "no-store"))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Referrer-Policy", "no-referrer"))
        .with_header(header("Content-Security-Policy", CSP));
    if let Some((k, v)) = reply.extra {
        resp = resp.with_header(header(k, v));
    }
    if let Err(e) = req.respond(resp) {
        log::debug!(target: "statuspage", "client went away: {e}");
    }
}

/// True for `localhost`, `127.0.0.1`, `[::1]` (any port), which is what a browser on the box
/// or at the near end of an SSH tunnel sends; a rebound DNS name is none of them.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn route(method: &Method, url: &str, host: Option<&str>, source: &Source) -> Reply {
    if !host.is_some_and(loopback_host) {
        return Reply::text(421, &format!("the status page answers only to localhost, 127.0.0.1 or [::1] (Host: {})", host.unwrap_or("none")));
    }
    if !matches!(method, Method::Get | Method::Head) {
        return Reply { extra: Some(("Allow", "GET, HEAD")), ..Reply::text(405, "the status page is read-only: GET or HEAD") };
    }
    let path = url.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/index.html" => Reply::asset("text/html; charset=utf-8", INDEX_HTML),
        "/page.js" => Reply::asset("text/javascript; charset=utf-8", PAGE_JS),
        "/page.css" => Reply::asset("text/css; charset=utf-8", PAGE_CSS),
        "/api/status" => api(source(Request::Status)),
        "/api/recordings" => api(source(Request::NewestRecordings { n: RECORDINGS_SHOWN as u32 }).map(newest_first)),
        "/api/preview" => api(source(Request::Preview)),
        "/preview.jpg" => jpeg(source(Request::Preview)),
        _ => Reply::text(404, &format!("no such page: {path}")),
    }
}

fn api(answer: Result<Value, String>) -> Reply {
    match answer {
        Ok(v) => Reply::json(200, &v),
        Err(e) => Reply::json(409, &json!({ "error": e })),
    }
}

/// The daemon's newest [`RECORDINGS_SHOWN`] recordings (oldest of them first), newest first for
/// the table, with how many there are in all.
fn newest_first(mut v: Value) -> Value {
    let mut list = match v.get_mut("recordings").map(Value::take) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    let total = v.get("total").and_then(Value::as_u64).unwrap_or(list.len() as u64);
    list.sort_by_key(|r| std::cmp::Reverse(r.get("started_at_ms").and_then(Value::as_i64).unwrap_or(i64::MIN)));
    list.truncate(RECORDINGS_SHOWN);
    json!({ "recordings": list, "total": total })
}

fn jpeg(answer: Result<Value, String>) -> Reply {
    let v = match answer {
        Ok(v) => v,
        Err(e) => return Reply::text(409, &e),
    };
    match v.get("jpeg_base64").and_then(Value::as_str) {
        Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(bytes) => Reply { status: 200, content_type: "image/jpeg", body: bytes, extra: None },
            Err(e) => Reply::text(502, &format!("the daemon's picture is not base64: {e}")),
        },
        None => Reply { extra: Some(("Retry-After", "1")), ..Reply::text(503, "the picture is coming: ask again in a second") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_only() {
        for ok in ["localhost", "localhost:8480", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:8480", "127.1.2.3:80", "[::1]:8480", "[::1]"] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in ["", "evil.example:8480", "10.0.0.5:8480", "localhost.evil.example:8480", "[2001:db8::1]:80", "127.0.0.1.nip.io:8480"] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn recordings_are_newest_first_and_cut() {
        let list: Vec<Value> = (0..30).map(|i| json!({ "id": format!("r{i}"), "started_at_ms": i * 1000 })).collect();
        let v = newest_first(json!({ "recordings": list, "total": 31 }));
        assert_eq!(v["total"], 31);
        let ids: Vec<&str> = v["recordings"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), RECORDINGS_SHOWN);
        assert_eq!((ids[0], ids[RECORDINGS_SHOWN - 1]), ("r29", "r10"));
    }
}
