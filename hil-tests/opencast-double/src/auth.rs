//! Authentication as an Opencast server answers a capture agent: HTTP Basic, or HTTP Digest
//! (RFC 2617/7616 with MD5 and `qop=auth`) for requests that carry `X-Requested-Auth: Digest`.
//!
//! Opencast's security chain (Spring Security) behaves like this, and so does the double:
//! * Digest mode: a request with a valid `Authorization: Digest` passes. A request without one
//!   gets the Digest challenge (401 with `WWW-Authenticate: Digest realm="Opencast", qop="auth",
//!   nonce=…`) only if it sent `X-Requested-Auth: Digest`; otherwise it is sent to the login page
//!   with a 302, the classic trap for a client that forgot the header and follows redirects.
//!   Nonces are Spring's shape, `base64(expiry_ms ":" md5(expiry_ms ":" key))`, valid for
//!   [`NONCE_VALIDITY_MS`]; a correct response with an expired nonce gets a fresh challenge with
//!   `stale=true`. The `uri` parameter must equal the request target.
//! * Basic mode: `Authorization: Basic` with a known user/password passes, anything else is a 401
//!   with `WWW-Authenticate: Basic realm="Opencast"`.
//!
//! Not covered: session cookies (Opencast hands out a `JSESSIONID` after the first success; the
//! double authenticates every request), nonce-count replay checks (Spring does not do them
//! either), `algorithm=SHA-256` and `auth-int`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use md5::{Digest as _, Md5};

/// The realm Opencast announces.
pub const REALM: &str = "Opencast";
/// How long a nonce is accepted (Spring's `DigestAuthenticationEntryPoint` default: 300 s).
pub const NONCE_VALIDITY_MS: u64 = 300_000;
/// Where Opencast's form login lives; unauthenticated non-Digest requests are redirected here.
pub const LOGIN_PATH: &str = "/admin-ng/login.html";

/// Which scheme the double demands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Basic,
    Digest,
}

/// The outcome of checking one request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Authenticated as this user.
    User(String),
    /// 401 with this `WWW-Authenticate` value and a reason for the log.
    Challenge(String, String),
    /// 302 to the login page.
    Login,
}

/// The users and the scheme; nonces are derived from a per-double key.
pub struct Authenticator {
    pub mode: AuthMode,
    users: BTreeMap<String, String>,
    key: String,
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Authenticator {
    pub fn new(mode: AuthMode, users: BTreeMap<String, String>) -> Authenticator {
        // The key only has to differ between runs so that nonces of an old double are rejected.
        let key = md5_hex(&format!("{}:{}", now_ms(), std::process::id()));
        Authenticator { mode, users, key }
    }

    /// A fresh nonce expiring `NONCE_VALIDITY_MS` after `now_ms`.
    pub fn nonce(&self, now_ms: u64) -> String {
        let expiry = now_ms + NONCE_VALIDITY_MS;
        base64::engine::general_purpose::STANDARD.encode(format!("{expiry}:{}", md5_hex(&format!("{expiry}:{}", self.key))))
    }

    /// `Some(expired)` if the nonce is one of ours, `None` if forged or garbled.
    fn check_nonce(&self, nonce: &str, now_ms: u64) -> Option<bool> {
        let raw = base64::engine::general_purpose::STANDARD.decode(nonce).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (expiry, sig) = raw.split_once(':')?;
        (sig == md5_hex(&format!("{expiry}:{}", self.key))).then_some(expiry.parse::<u64>().ok()? < now_ms)
    }

    fn digest_challenge(&self, stale: bool, now_ms: u64) -> String {
        let stale = if stale { ", stale=true" } else { "" };
        format!("Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"{}\"{stale}", self.nonce(now_ms))
    }

    fn challenge(&self, why: impl Into<String>, now_ms: u64) -> Verdict {
        match self.mode {
            AuthMode::Basic => Verdict::Challenge(format!("Basic realm=\"{REALM}\""), why.into()),
            AuthMode::Digest => Verdict::Challenge(self.digest_challenge(false, now_ms), why.into()),
        }
    }

    /// Checks a request: its method, request target, `Authorization` and `X-Requested-Auth`.
    pub fn check(&self, method: &str, target: &str, authorization: Option<&str>, requested_auth: Option<&str>) -> Verdict {
        self.check_at(method, target, authorization, requested_auth, now_ms())
    }

    pub fn check_at(&self, method: &str, target: &str, authorization: Option<&str>, requested_auth: Option<&str>, now_ms: u64) -> Verdict {
        let (scheme, rest) = match authorization {
            Some(a) => a.split_once(' ').unwrap_or((a, "")),
            None => ("", ""),
        };
        match self.mode {
            AuthMode::Basic => {
                if !scheme.eq_ignore_ascii_case("basic") {
                    return self.challenge("no Basic credentials", now_ms);
                }
                let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok().and_then(|b| String::from_utf8(b).ok());
                match decoded.as_deref().and_then(|d| d.split_once(':')) {
                    Some((u, p)) if self.users.get(u).is_some_and(|pw| pw == p) => Verdict::User(u.to_owned()),
                    Some((u, _)) => self.challenge(format!("wrong Basic password or unknown user {u:?}"), now_ms),
                    None => self.challenge("malformed Basic credentials", now_ms),
                }
            }
            AuthMode::Digest => {
                if !scheme.eq_ignore_ascii_case("digest") {
                    let asked = requested_auth.is_some_and(|v| v.eq_ignore_ascii_case("digest"));
                    return if asked { self.challenge("no Digest credentials", now_ms) } else { Verdict::Login };
                }
                self.check_digest(method, target, rest, now_ms)
            }
        }
    }

    fn check_digest(&self, method: &str, target: &str, params: &str, now_ms: u64) -> Verdict {
        let p = parse_params(params);
        let get = |k: &str| p.get(k).map(String::as_str);
        let (Some(user), Some(nonce), Some(uri), Some(response)) = (get("username"), get("nonce"), get("uri"), get("response")) else {
            return self.challenge("Digest credentials lack username, nonce, uri or response", now_ms);
        };
        if get("realm") != Some(REALM) {
            return self.challenge(format!("Digest realm {:?} is not {REALM:?}", get("realm")), now_ms);
        }
        if uri != target {
            return self.challenge(format!("Digest uri {uri:?} does not match the request target {target:?}"), now_ms);
        }
        if let Some(alg) = get("algorithm").filter(|a| !a.eq_ignore_ascii_case("MD5")) {
            return self.challenge(format!("Digest algorithm {alg:?} is not supported"), now_ms);
        }
        let Some(expired) = self.check_nonce(nonce, now_ms) else {
            return self.challenge("Digest nonce was not issued by this server", now_ms);
        };
        let Some(password) = self.users.get(user) else {
            return self.challenge(format!("unknown user {user:?}"), now_ms);
        };
        let ha1 = md5_hex(&format!("{user}:{REALM}:{password}"));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = match get("qop") {
            Some("auth") => {
                let (Some(nc), Some(cnonce)) = (get("nc"), get("cnonce")) else {
                    return self.challenge("Digest qop=auth without nc or cnonce", now_ms);
                };
                md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
            }
            None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
            Some(q) => return self.challenge(format!("Digest qop {q:?} is not supported"), now_ms),
        };
        if expected != response {
            return self.challenge(format!("wrong Digest response for user {user:?}"), now_ms);
        }
        if expired {
            return Verdict::Challenge(self.digest_challenge(true, now_ms), "stale Digest nonce".into());
        }
        Verdict::User(user.to_owned())
    }
}

/// Parses `k=v, k2="quoted, v"` auth parameters (keys lowercased).
pub fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => v.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            (v, &q[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(k, v);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mode: AuthMode) -> Authenticator {
        Authenticator::new(mode, BTreeMap::from([("agent".to_string(), "s3cret".to_string())]))
    }

    /// What a client computes (RFC 7616 §3.4.1, MD5, qop=auth).
    fn client_header(user: &str, pass: &str, nonce: &str, uri: &str, method: &str) -> String {
        let ha1 = md5_hex(&format!("{user}:{REALM}:{pass}"));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        format!("Digest username=\"{user}\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", cnonce=\"c0ffee\", nc=00000001, qop=auth, response=\"{resp}\", algorithm=MD5")
    }

    #[test]
    fn rfc_2617_example_response() {
        // RFC 2617 §3.5: Mufasa / "Circle Of Life" / testrealm@host.com.
        let ha1 = md5_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = md5_hex("GET:/dir/index.html");
        let r = md5_hex(&format!("{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn digest_round_trip_and_failures() {
        let a = auth(AuthMode::Digest);
        let t = 1_000_000;
        let nonce = a.nonce(t);
        let uri = "/recordings/calendars?agentid=a";
        let ok = client_header("agent", "s3cret", &nonce, uri, "GET");
        assert_eq!(a.check_at("GET", uri, Some(&ok), Some("Digest"), t + 1), Verdict::User("agent".into()));
        // Each of these must fail with a challenge naming the reason.
        let cases = [
            (client_header("agent", "wrong", &nonce, uri, "GET"), uri, "wrong Digest response"),
            (client_header("nobody", "s3cret", &nonce, uri, "GET"), uri, "unknown user"),
            (ok.clone(), "/other", "does not match"),
            (client_header("agent", "s3cret", "Zm9yZ2Vk", uri, "GET"), uri, "not issued"),
            (client_header("agent", "s3cret", &nonce, uri, "POST"), uri, "wrong Digest response"),
        ];
        for (hdr, target, why) in cases {
            match a.check_at("GET", target, Some(&hdr), Some("Digest"), t + 1) {
                Verdict::Challenge(c, reason) => {
                    assert!(c.starts_with("Digest realm=\"Opencast\", qop=\"auth\", nonce=\""), "{c}");
                    assert!(reason.contains(why), "{reason:?} should contain {why:?}");
                }
                v => panic!("{why}: {v:?}"),
            }
        }
        // Correct but expired: a stale challenge.
        match a.check_at("GET", uri, Some(&ok), Some("Digest"), t + NONCE_VALIDITY_MS + 1) {
            Verdict::Challenge(c, _) => assert!(c.ends_with("stale=true"), "{c}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn digest_mode_redirects_without_the_requested_auth_header() {
        let a = auth(AuthMode::Digest);
        assert_eq!(a.check("GET", "/x", None, None), Verdict::Login);
        assert!(matches!(a.check("GET", "/x", None, Some("Digest")), Verdict::Challenge(..)));
        // Basic credentials are not accepted by a Digest server.
        assert_eq!(a.check("GET", "/x", Some("Basic YWdlbnQ6czNjcmV0"), None), Verdict::Login);
    }

    #[test]
    fn basic_mode() {
        let a = auth(AuthMode::Basic);
        assert_eq!(a.check("GET", "/x", Some("Basic YWdlbnQ6czNjcmV0"), None), Verdict::User("agent".into()));
        for bad in [None, Some("Basic YWdlbnQ6d3Jvbmc="), Some("Basic !!!"), Some("Digest username=\"agent\"")] {
            match a.check("GET", "/x", bad, None) {
                Verdict::Challenge(c, _) => assert_eq!(c, "Basic realm=\"Opencast\""),
                v => panic!("{bad:?}: {v:?}"),
            }
        }
    }

    #[test]
    fn params_with_quotes_and_commas() {
        let p = parse_params(r#"username="a,b", nc=00000001, uri="/x?y=1", qop=auth, response="r\"q""#);
        assert_eq!(p["username"], "a,b");
        assert_eq!(p["nc"], "00000001");
        assert_eq!(p["uri"], "/x?y=1");
        assert_eq!(p["qop"], "auth");
        assert_eq!(p["response"], "r\"q");
    }
}
