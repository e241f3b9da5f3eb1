//! A real browser for the tests of web pages: Debian's headless Chromium driven over W3C
//! WebDriver by Debian's `chromedriver` (packages `chromium`, `chromium-driver`; installed by
//! scripts/install-deps.sh). The harness starts its own chromedriver on a free loopback port,
//! one browser session with a throwaway profile in a temp dir, and ends both when dropped.
//!
//! Only what the tests need of WebDriver is here: open a URL, run a script and take its return
//! value, and read the browser console (Chromium's `goog:loggingPrefs` log) so a test can assert
//! that the page raised no error and broke no Content-Security-Policy rule.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a session. `Ok(None)` when Chromium or chromedriver is not
    /// installed and this is not CI (on CI, where install-deps.sh installs them, that is an error).
    pub fn start() -> Result<Option<Browser>> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !std::path::Path::new(p).exists()).collect();
        if !missing.is_empty() {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("CI must have {} (apt: chromium chromium-driver; scripts/install-deps.sh)", missing.join(", "));
            }
            eprintln!("SKIPPED: {} missing (apt install chromium chromium-driver)", missing.join(", "));
            return Ok(None);
        }
        let mut driver = Command::new(CHROMEDRIVER)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?;
        // "ChromeDriver was started successfully on port 32985."
        let stdout = driver.stdout.take().expect("piped");
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(port) = line.split("started successfully on port ").nth(1).and_then(|p| p.trim_end_matches('.').trim().parse::<u16>().ok()) {
                        let _ = port_tx.send(port);
                        sent = true;
                    }
                }
            }
        });
        let port = match port_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(p) => p,
            Err(_) => {
                let _ = driver.kill();
                bail!("chromedriver did not say which port it listens on within 20 s");
            }
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::tempdir()?;
        let mut browser = Browser { driver, base: format!("http://127.0.0.1:{port}"), session: String::new(), agent, _profile: profile };
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": { "browser": "ALL" },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--window-size=1024,900",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let started = Instant::now();
        let v = browser.call("POST", "/session", Some(caps)).map_err(|e| anyhow!("creating a Chromium session: {e:?}"))?;
        browser.session = v["sessionId"].as_str().ok_or_else(|| anyhow!("no sessionId in {v}"))?.to_owned();
        eprintln!("browser: Chromium session in {:?}", started.elapsed());
        Ok(Some(browser))
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut resp = match method {
            "POST" => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or_else(|| json!({})).to_string().as_bytes())?,
            "DELETE" => self.agent.delete(&url).call()?,
            _ => self.agent.get(&url).call()?,
        };
        let status = resp.status().as_u16();
        let text = resp.body_mut().with_config().limit(64 * 1024 * 1024).read_to_string()?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("WebDriver {method} {path}: not JSON: {text:.200}"))?;
        if status != 200 {
            bail!("WebDriver {method} {path}: HTTP {status}: {} {}", v["value"]["error"], v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    /// Navigates to `url` and waits for the page's load event.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", &format!("/session/{}/url", self.session), Some(json!({ "url": url })))?;
        Ok(())
    }

    /// Runs `script` (a function body: `return ...;`) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Result<Value> {
        self.call("POST", &format!("/session/{}/execute/sync", self.session), Some(json!({ "script": script, "args": [] })))
    }

    /// Polls `script` every 100 ms until `cond` holds for its value; the last value either way.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str, cond: impl Fn(&Value) -> bool) -> Result<Value> {
        let start = Instant::now();
        loop {
            let v = self.eval(script)?;
            if cond(&v) {
                return Ok(v);
            }
            if start.elapsed() > timeout {
                bail!("timed out after {timeout:?} waiting for {what}; the page says {v}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser console's entries since the last call (level and message), e.g. a script
    /// error or a Content-Security-Policy violation.
    pub fn console(&self) -> Result<Vec<(String, String)>> {
        let v = self.call("POST", &format!("/session/{}/se/log", self.session), Some(json!({ "type": "browser" })))?;
        Ok(v.as_array()
            .map(|a| a.iter().map(|e| (e["level"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned())).collect())
            .unwrap_or_default())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
