//! The curl command-line client as the tests' HTTP client: it is libcurl, the library pyca and
//! many capture agents use, and it is independent of the double's own HTTP code.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::process::Command;
use std::time::{Duration, Instant};

/// One curl run.
#[derive(Debug)]
pub struct Reply {
    /// curl's exit code (0, or e.g. 7 refused, 18 partial body, 52 empty reply).
    pub exit: i32,
    pub status: u16,
    pub headers: String,
    pub body: Vec<u8>,
    pub elapsed: Duration,
    /// curl's error message, if any.
    pub stderr: String,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().filter_map(|l| l.split_once(':')).find(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
    }
}

/// Runs `curl -sS <args> URL` and collects status, headers and body.
pub fn curl(args: &[&str], url: &str) -> Reply {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, b) = (dir.path().join("h"), dir.path().join("b"));
    let t = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&h)
        .arg("-o")
        .arg(&b)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed (scripts/install-deps.sh)");
    let headers = std::fs::read_to_string(&h).unwrap_or_default();
    // With a 401 round trip or a redirect, -D holds every response head; keep the last one.
    let last = headers.rsplit("\r\n\r\n").find(|s| s.starts_with("HTTP/")).unwrap_or("").to_owned();
    Reply {
        exit: out.status.code().unwrap_or(-1),
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0),
        headers: last,
        body: std::fs::read(&b).unwrap_or_default(),
        elapsed: t.elapsed(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// curl arguments for Digest as a capture agent sends it.
pub fn digest(user_pass: &str) -> Vec<&str> {
    vec!["--digest", "-u", user_pass, "-H", "X-Requested-Auth: Digest"]
}
