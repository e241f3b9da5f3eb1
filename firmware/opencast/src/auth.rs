//! HTTP authentication for Opencast, sans-IO: parsing a Digest challenge and computing the
//! `Authorization` header (RFC 7616 / RFC 2617, MD5, `qop=auth` with `nc`/`cnonce`, or the
//! RFC 2069 form when the server offers no qop), and the Basic header (RFC 7617).
//!
//! Opencast answers an unauthenticated request with a 302 to its login page unless the request
//! carries `X-Requested-Auth: Digest`; with it, the answer is a 401 and a Digest challenge. The
//! HTTP shell ([`crate::client`]) sends that header on every request in Digest mode, keeps the
//! last challenge and reuses it with an incrementing `nc` (saving a round trip per call, which
//! matters for multi-gigabyte track uploads: a rejected upload would be sent twice), and answers a
//! fresh 401 (`stale=true` when the nonce expired) by taking the new challenge once.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::error::{OpencastError, Result};

/// A parsed `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back verbatim when present.
    pub opaque: Option<String>,
    /// Whether the server offered `qop=auth` (otherwise the RFC 2069 form is used).
    pub qop_auth: bool,
    /// `stale=true`: the nonce expired but the credentials were fine.
    pub stale: bool,
}

impl Challenge {
    /// Parses the value of one `WWW-Authenticate` header. Only `Digest` with `algorithm=MD5`
    /// (the default, and what Opencast's Spring Security sends) is accepted.
    pub fn parse(header: &str) -> Result<Challenge> {
        let bad = |what: &str| OpencastError::Challenge(format!("{what} in {header:?}"));
        let rest = header.trim_start();
        let (scheme, params) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if !scheme.eq_ignore_ascii_case("digest") {
            return Err(bad("not a Digest challenge"));
        }
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut qop_auth = false;
        let mut qop_seen = false;
        let mut stale = false;
        for (key, value) in parse_params(params).ok_or_else(|| bad("malformed parameters"))? {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(value),
                "nonce" => nonce = Some(value),
                "opaque" => opaque = Some(value),
                "stale" => stale = value.eq_ignore_ascii_case("true"),
                "qop" => {
                    qop_seen = true;
                    qop_auth = value.split(',').any(|q| q.trim().eq_ignore_ascii_case("auth"));
                }
                "algorithm" if !value.eq_ignore_ascii_case("md5") => {
                    return Err(bad(&format!("unsupported algorithm {value:?} (only MD5)")));
                }
                _ => {}
            }
        }
        if qop_seen && !qop_auth {
            return Err(bad("qop offers no \"auth\""));
        }
        Ok(Challenge {
            realm: realm.ok_or_else(|| bad("no realm"))?,
            nonce: nonce.ok_or_else(|| bad("no nonce"))?,
            opaque,
            qop_auth,
            stale,
        })
    }

    /// The `Authorization` header value for one request. `nc` counts the requests made with
    /// this nonce, starting at 1; `cnonce` is a fresh client nonce.
    pub fn authorization(&self, user: &str, password: &str, method: &str, uri: &str, nc: u32, cnonce: &str) -> String {
        let ha1 = md5_hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let nc = format!("{nc:08x}");
        let response = if self.qop_auth {
            md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\"",
            quote(user),
            quote(&self.realm),
            quote(&self.nonce),
            quote(uri)
        );
        if self.qop_auth {
            let _ = write!(h, ", qop=auth, nc={nc}, cnonce=\"{}\"", quote(cnonce));
        }
        let _ = write!(h, ", response=\"{response}\", algorithm=MD5");
        if let Some(opaque) = &self.opaque {
            let _ = write!(h, ", opaque=\"{}\"", quote(opaque));
        }
        h
    }
}

/// A new client nonce: 16 hex digits that differ on every call within and across processes.
/// It need not be secret, only unpredictable to a server that would choose its nonce against it.
pub fn cnonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(now.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let out = h.finalize();
    out[..8].iter().fold(String::with_capacity(16), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The `Authorization` value for HTTP Basic.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().fold(String::with_capacity(32), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Escapes a value for a quoted-string.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Splits `k=v, k="quoted, value", ...` into pairs; `None` when the syntax is broken.
fn parse_params(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_owned();
        }
        out.push((key, value));
    }
}

/// Standard base64 with padding (RFC 4648 §4); only Basic auth needs it.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5, the worked example.
    const RFC2617_CHALLENGE: &str = r#"Digest
                 realm="testrealm@host.com",
                 qop="auth,auth-int",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;

    #[test]
    fn rfc2617_worked_example() {
        let c = Challenge::parse(RFC2617_CHALLENGE).unwrap();
        assert_eq!(c.realm, "testrealm@host.com");
        assert!(c.qop_auth && !c.stale);
        let h = c.authorization("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "0a4f113b");
        assert!(h.contains(r#"response="6629fae49393a05397450978507c4ef1""#), "{h}");
        assert!(h.contains("nc=00000001") && h.contains(r#"cnonce="0a4f113b""#), "{h}");
        assert!(h.contains(r#"opaque="5ccc069c403ebaf9f0171e9517f40e41""#), "{h}");
        assert!(h.starts_with(r#"Digest username="Mufasa", realm="testrealm@host.com""#), "{h}");
    }

    #[test]
    fn rfc7616_md5_example() {
        // RFC 7616 §3.9.1 (the MD5 half of the example).
        let c = Challenge::parse(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        let h = c.authorization("Mufasa", "Circle of Life", "GET", "/dir/index.html", 1, "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ");
        assert!(h.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#), "{h}");
    }

    #[test]
    fn rfc2069_form_without_qop() {
        let c = Challenge::parse(r#"Digest realm="r", nonce="n""#).unwrap();
        assert!(!c.qop_auth);
        let h = c.authorization("u", "p", "POST", "/x", 1, "c");
        let want = md5_hex(&format!("{}:n:{}", md5_hex("u:r:p"), md5_hex("POST:/x")));
        assert!(h.contains(&format!("response=\"{want}\"")) && !h.contains("nc="), "{h}");
    }

    #[test]
    fn challenges_that_cannot_be_answered_are_clear_errors() {
        let check = |header: &str, want: &str| {
            let e = Challenge::parse(header).unwrap_err().to_string();
            assert!(e.contains(want), "{header:?}: {e}");
        };
        check(r#"Basic realm="x""#, "not a Digest challenge");
        check(r#"Digest nonce="n""#, "no realm");
        check(r#"Digest realm="r""#, "no nonce");
        check(r#"Digest realm="r", nonce="n", algorithm=SHA-256"#, "unsupported algorithm");
        check(r#"Digest realm="r", nonce="n", qop="auth-int""#, "no \"auth\"");
        check(r#"Digest realm="unterminated"#, "malformed");
        check(r#"Digest =x"#, "malformed");
    }

    #[test]
    fn stale_and_escapes() {
        let c = Challenge::parse(r#"Digest realm="a \"b\"", nonce=abc, stale=TRUE, qop=auth"#).unwrap();
        assert_eq!((c.realm.as_str(), c.nonce.as_str(), c.stale, c.qop_auth), ("a \"b\"", "abc", true, true));
        assert!(c.authorization("u", "p", "GET", "/", 2, "c").contains(r#"realm="a \"b\"""#));
    }

    #[test]
    fn base64_rfc4648_vectors_and_basic() {
        for (input, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(basic("Aladdin", "open sesame"), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn cnonces_differ() {
        let a = cnonce();
        let b = cnonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}
