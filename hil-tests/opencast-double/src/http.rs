//! The double's HTTP/1.1 layer over a plain `TcpStream`: reading a request head, a body reader
//! for `Content-Length` and `chunked` bodies, `Expect: 100-continue`, and writing responses —
//! including the deliberately broken ones the fault switches need (a connection dropped without
//! a reply, a body cut short after its `Content-Length` was announced).
//!
//! It is hand-rolled rather than taken from a server crate because those faults need the raw
//! socket (docs/decisions.md D9). Everything here is bounded: a request head may be at most
//! [`MAX_HEAD`] bytes, and bodies are only ever read through [`Body`], which never buffers more
//! than one chunk.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// The largest request head (request line and headers) accepted; more is a 431.
pub const MAX_HEAD: usize = 64 * 1024;

/// A parsed request head; the body is still on the wire.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// The request target exactly as sent (path and query), which Digest's `uri` must match.
    pub target: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub http10: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header, matched case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client asked to close the connection after this exchange.
    pub fn wants_close(&self) -> bool {
        match self.header("connection") {
            Some(v) if v.eq_ignore_ascii_case("close") => true,
            Some(v) if v.eq_ignore_ascii_case("keep-alive") => false,
            _ => self.http10,
        }
    }
}

/// Why a request head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending anything: the normal end of keep-alive.
    Closed,
    Io(io::Error),
    /// Malformed request: the reply is a 400 (or 431) naming what was wrong.
    Bad(u16, String),
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// Reads one request head from `r`.
pub fn read_head(r: &mut BufReader<TcpStream>) -> Result<Head, HeadError> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = r.by_ref().take((MAX_HEAD + 1 - total) as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return if lines.is_empty() { Err(HeadError::Closed) } else { Err(HeadError::Bad(400, "connection closed inside the request head".into())) };
        }
        total += n;
        if total > MAX_HEAD {
            return Err(HeadError::Bad(431, format!("request head longer than {MAX_HEAD} bytes")));
        }
        if !line.ends_with(b"\n") {
            return Err(HeadError::Bad(400, "connection closed inside the request head".into()));
        }
        let text = String::from_utf8(line).map_err(|_| HeadError::Bad(400, "request head is not UTF-8".into()))?;
        let text = text.trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            // RFC 9112 §2.2: a server should ignore empty lines before the request line.
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(text);
    }
    parse_head(&lines)
}

/// Parses the request line and headers (sans-IO, so that it can be tested on strings).
pub fn parse_head(lines: &[String]) -> Result<Head, HeadError> {
    let bad = |m: String| HeadError::Bad(400, m);
    let first = lines.first().ok_or_else(|| bad("empty request".into()))?;
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("malformed request line {first:?}")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v => return Err(HeadError::Bad(505, format!("unsupported HTTP version {v:?}"))),
    };
    if !target.starts_with('/') {
        return Err(bad(format!("request target {target:?} is not an absolute path")));
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let (k, v) = line.split_once(':').ok_or_else(|| bad(format!("header line without a colon: {line:?}")))?;
        if k.is_empty() || k.contains([' ', '\t']) {
            return Err(bad(format!("malformed header name {k:?}")));
        }
        headers.push((k.to_owned(), v.trim().to_owned()));
    }
    let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_decode(raw_path).ok_or_else(|| bad(format!("bad percent-encoding in path {raw_path:?}")))?;
    let query = parse_urlencoded(raw_query).ok_or_else(|| bad(format!("bad percent-encoding in query {raw_query:?}")))?;
    Ok(Head { method: method.to_owned(), target: target.to_owned(), path, query, http10, headers })
}

/// Decodes `a=b&c=d` (application/x-www-form-urlencoded, `+` as space); `None` if malformed.
pub fn parse_urlencoded(s: &str) -> Option<Vec<(String, String)>> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(&k.replace('+', " "))?, percent_decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// Decodes `%XX` escapes into UTF-8; `None` on a broken escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    /// Inside a chunk with this many bytes left, or between chunks (0) until `done`.
    Chunked { left: u64, done: bool },
}

/// The request body as a `Read`: stops at the end of the body, never reads into the next request.
pub struct Body<'a> {
    r: &'a mut BufReader<TcpStream>,
    framing: Framing,
    /// Total body bytes handed out so far.
    pub read: u64,
}

impl<'a> Body<'a> {
    /// The body of the request with head `h`; a 400/501 message if its framing is invalid.
    pub fn new(r: &'a mut BufReader<TcpStream>, h: &Head) -> Result<Body<'a>, (u16, String)> {
        let framing = match (h.header("transfer-encoding"), h.header("content-length")) {
            // RFC 9112 §6.1 allows rejecting this; it is how request smuggling starts, and curl
            // sends it when told to chunk a Digest request (its auth probe adds Content-Length: 0).
            (Some(_), Some(_)) => return Err((400, "both Transfer-Encoding and Content-Length".into())),
            (Some(te), _) if te.eq_ignore_ascii_case("chunked") => Framing::Chunked { left: 0, done: false },
            (Some(te), _) => return Err((501, format!("unsupported Transfer-Encoding {te:?}"))),
            (None, Some(cl)) => Framing::Length(cl.parse().map_err(|_| (400, format!("bad Content-Length {cl:?}")))?),
            (None, None) => Framing::Length(0),
        };
        Ok(Body { r, framing, read: 0 })
    }

    /// The announced length, if the body is not chunked.
    pub fn length(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n + self.read),
            Framing::Chunked { .. } => None,
        }
    }

    /// Whether the whole body has been read (so the connection can carry another request).
    pub fn finished(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Chunked { done: true, .. })
    }

    /// Reads and discards up to `limit` bytes of what is left; true if the body is now finished.
    pub fn drain(&mut self, limit: u64) -> io::Result<bool> {
        io::copy(&mut self.by_ref().take(limit), &mut io::sink())?;
        Ok(self.finished())
    }

    fn chunk_size_line(&mut self) -> io::Result<u64> {
        let mut line = String::new();
        self.r.by_ref().take(1024).read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size line {line:?}")))
    }
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let eof = || io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed inside the request body");
        let n = match &mut self.framing {
            Framing::Length(0) | Framing::Chunked { done: true, .. } => return Ok(0),
            Framing::Length(left) => {
                let want = (*left).min(buf.len() as u64) as usize;
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof());
                }
                *left -= n as u64;
                n
            }
            Framing::Chunked { left: 0, .. } => {
                let size = self.chunk_size_line()?;
                if size == 0 {
                    // Trailers, then the empty line that ends the body.
                    loop {
                        let mut line = String::new();
                        if self.r.by_ref().take(8192).read_line(&mut line)? == 0 {
                            return Err(eof());
                        }
                        if line.trim_end().is_empty() {
                            break;
                        }
                    }
                    self.framing = Framing::Chunked { left: 0, done: true };
                    return Ok(0);
                }
                self.framing = Framing::Chunked { left: size, done: false };
                return self.read(buf);
            }
            Framing::Chunked { left, .. } => {
                let want = (*left).min(buf.len() as u64) as usize;
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(eof());
                }
                *left -= n as u64;
                if *left == 0 {
                    let mut crlf = [0u8; 2];
                    self.r.read_exact(&mut crlf)?;
                    if &crlf != b"\r\n" {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk not followed by CRLF"));
                    }
                }
                n
            }
        };
        self.read += n as u64;
        Ok(n)
    }
}

/// A response to write.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body: body.into() }
    }

    /// A plain-text reply (Opencast's REST errors are mostly short text or empty bodies).
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response::new(status, "text/plain;charset=UTF-8", body.into())
    }

    pub fn with_header(mut self, k: &str, v: impl Into<String>) -> Response {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The reason phrase of the status codes the double sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Writes `resp`. With `truncate_to`, the full `Content-Length` is announced but only that many
/// body bytes are sent (the caller then closes the connection).
pub fn write_response(w: &mut impl Write, resp: &Response, close: bool, head_only: bool, truncate_to: Option<usize>) -> io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    // 304 carries no body and (RFC 9110 §15.4.5) its Content-Length would describe the cached one.
    if resp.status != 304 {
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    out.push_str("Server: lectern-opencast-double\r\n");
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    w.write_all(out.as_bytes())?;
    if !head_only && resp.status != 304 {
        let n = truncate_to.unwrap_or(resp.body.len()).min(resp.body.len());
        w.write_all(&resp.body[..n])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[&str]) -> Result<Head, HeadError> {
        parse_head(&lines.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_target_query_and_headers() {
        let h = head(&["GET /recordings/calendars?agentid=room%20101&cutoff=5 HTTP/1.1", "If-None-Match: abc", "X-Requested-Auth: Digest"]).unwrap();
        assert_eq!(h.path, "/recordings/calendars");
        assert_eq!(h.query("agentid"), Some("room 101"));
        assert_eq!(h.query("cutoff"), Some("5"));
        assert_eq!(h.header("if-none-match"), Some("abc"));
        assert!(!h.wants_close());
    }

    #[test]
    fn malformed_heads_are_400_with_a_reason() {
        let check = |lines: &[&str], status: u16, needle: &str| match head(lines) {
            Err(HeadError::Bad(s, m)) => {
                assert_eq!(s, status, "{m}");
                assert!(m.contains(needle), "{m:?} should mention {needle:?}");
            }
            other => panic!("{lines:?} gave {other:?}"),
        };
        check(&["GET /x"], 400, "request line");
        check(&["GET x HTTP/1.1"], 400, "absolute path");
        check(&["GET /x HTTP/2"], 505, "HTTP/2");
        check(&["GET /x HTTP/1.1", "NoColon"], 400, "colon");
        check(&["GET /x?a=%zz HTTP/1.1"], 400, "percent");
    }

    #[test]
    fn urlencoded_forms_decode_plus_and_escapes() {
        assert_eq!(parse_urlencoded("state=capture_finished&address=http%3A%2F%2Fa+b").unwrap(), vec![("state".into(), "capture_finished".into()), ("address".into(), "http://a b".into())]);
        assert_eq!(parse_urlencoded("").unwrap(), vec![]);
        assert!(parse_urlencoded("a=%4").is_none());
    }
}
