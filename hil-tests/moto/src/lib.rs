//! moto's real S3 server on loopback, for every test and benchmark that needs an S3-compatible
//! endpoint: one harness, so they all run against the same server the same way.
//!
//! moto (`moto[server]`, pinned to [`MOTO_VERSION`]) is installed from PyPI into a virtualenv
//! under the target directory (`target/tmp/moto-venv`, or `$LECTERN_MOTO_VENV`) on first use and
//! reused afterwards; an exclusive lock on `<venv>.lock` makes parallel tests and test binaries
//! install it once. Without python3-venv, [`MotoServer::start_or_skip`] skips LOUDLY, except under
//! `CI=true`, where it fails: CI installs python3-venv (scripts/install-deps.sh), so nothing skips
//! there.
//!
//! Each [`MotoServer`] is one `moto_server` process in its own process group on a free loopback
//! port; the group is killed when the value is dropped. moto keeps everything in memory, so
//! [`MotoServer::restart`] (same port) loses every object and every in-flight multipart upload,
//! as a real server that lost its upload state would; the harness re-creates the buckets it
//! created, because a real server keeps those. Without [`MotoServer::enable_auth`] moto accepts
//! any credentials and any signature, which the helpers here use ([`ANY_SIGNATURE`]).
//!
//! moto enforces S3's 5 MiB minimum for every part but the last at CompleteMultipartUpload
//! (`EntityTooSmall`); [`Options::min_part_bytes`] lowers it (moto's `S3_UPLOAD_PART_MIN_SIZE`)
//! so tests can use small parts. moto does not check `Content-MD5` or `x-amz-checksum-*` on
//! UploadPart; it returns the part's MD5 as its ETag.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The moto release every test runs against.
pub const MOTO_VERSION: &str = "5.2.5";

/// An `Authorization` header for the helpers: while authentication is off moto checks no
/// signature, but it treats a request without one as anonymous and refuses it private objects
/// (a PutObject's default ACL).
pub const ANY_SIGNATURE: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// How a [`MotoServer`] is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The virtualenv to install moto into and run it from; default [`default_venv`].
    pub venv: Option<PathBuf>,
    /// Smallest part (but the last) CompleteMultipartUpload accepts; default S3's 5 MiB.
    pub min_part_bytes: Option<u64>,
}

/// `$LECTERN_MOTO_VENV`, else `tmp/moto-venv` in the Cargo target directory the running binary
/// was built into (found by its `CACHEDIR.TAG`), else in `$CARGO_TARGET_DIR`.
pub fn default_venv() -> Result<PathBuf> {
    if let Some(v) = std::env::var_os("LECTERN_MOTO_VENV") {
        return Ok(PathBuf::from(v));
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let target = exe
        .ancestors()
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .with_context(|| format!("no Cargo target directory above {}: set LECTERN_MOTO_VENV", exe.display()))?;
    Ok(target.join("tmp/moto-venv"))
}

/// Installs moto into `venv` unless it is there at [`MOTO_VERSION`]. `Ok(false)`, after a loud
/// message, when python3 has no venv/ensurepip (an error under `CI=true`).
pub fn install(venv: &Path) -> Result<bool> {
    let parent = venv.parent().context("venv path has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let lock_path = venv.with_extension("lock");
    let lock = File::create(&lock_path).with_context(|| format!("create {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("lock {}", lock_path.display()))?;
    let python = venv.join("bin/python");
    if !python.exists() {
        let probe = Command::new("python3").args(["-c", "import venv, ensurepip"]).output();
        if !probe.is_ok_and(|o| o.status.success()) {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!("moto needs python3 with venv and ensurepip, and CI must not skip (apt-get install python3-venv)");
            }
            eprintln!("\n{0}\nSKIPPED: the S3 tests need moto, which needs python3 with venv and ensurepip\n(apt-get install python3-venv, or run scripts/install-deps.sh)\n{0}\n", "!".repeat(72));
            return Ok(false);
        }
        let st = Command::new("python3").args(["-m", "venv"]).arg(venv).status().context("python3 -m venv")?;
        if !st.success() {
            bail!("python3 -m venv {} failed ({st})", venv.display());
        }
    }
    let version = || {
        Command::new(&python)
            .args(["-c", "import importlib.metadata as m; print(m.version('moto'))"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if version().as_deref() != Some(MOTO_VERSION) {
        eprintln!("lectern-moto: pip install moto[server]=={MOTO_VERSION} into {}", venv.display());
        let st = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", &format!("moto[server]=={MOTO_VERSION}")])
            .status()
            .context("pip install")?;
        if !st.success() {
            bail!("pip install moto[server]=={MOTO_VERSION} into {} failed ({st})", venv.display());
        }
        if version().as_deref() != Some(MOTO_VERSION) {
            bail!("{} reports moto {:?} after installing {MOTO_VERSION}", venv.display(), version());
        }
    }
    Ok(true)
}

/// An object read back with [`MotoServer::get_object`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub body: Vec<u8>,
    /// Response headers, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl Object {
    /// The value of header `name` (lowercase), e.g. `x-amz-meta-sha256`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One running moto S3 server; see the module doc.
#[derive(Debug)]
pub struct MotoServer {
    venv: PathBuf,
    min_part_bytes: Option<u64>,
    port: u16,
    child: Option<Child>,
    /// moto's request log (stderr), kept for error messages.
    log: tempfile::NamedTempFile,
    buckets: Vec<String>,
    http: ureq::Agent,
}

impl MotoServer {
    /// A server in the default virtualenv with S3's part-size rule; an error when moto cannot be
    /// installed (benchmarks: they must not silently measure nothing).
    pub fn start() -> Result<MotoServer> {
        MotoServer::start_with(Options::default())
    }

    /// Like [`MotoServer::start`] with `opts`.
    pub fn start_with(opts: Options) -> Result<MotoServer> {
        match MotoServer::start_or_skip(opts)? {
            Some(s) => Ok(s),
            None => bail!("moto is not available: python3-venv is missing"),
        }
    }

    /// For tests: `None` (after a loud message) when moto cannot be installed for lack of
    /// python3-venv outside CI.
    pub fn start_or_skip(opts: Options) -> Result<Option<MotoServer>> {
        let venv = match opts.venv {
            Some(v) => v,
            None => default_venv()?,
        };
        if !install(&venv)? {
            return Ok(None);
        }
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let log = tempfile::Builder::new().prefix("lectern-moto-").suffix(".log").tempfile()?;
        let mut server = MotoServer { venv, min_part_bytes: opts.min_part_bytes, port: 0, child: None, log, buckets: Vec::new(), http };
        // A port found free can be taken before moto binds it: try a few.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(Some(server)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn spawn(&mut self) -> Result<()> {
        let log = self.log.reopen()?;
        let mut cmd = Command::new(self.venv.join("bin/moto_server"));
        cmd.args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some(min) = self.min_part_bytes {
            cmd.env("S3_UPLOAD_PART_MIN_SIZE", min.to_string());
        }
        let child = cmd.spawn().with_context(|| format!("start {}/bin/moto_server", self.venv.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.http.get(format!("{}/moto-api/", self.endpoint())).call().is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("moto_server on port {} exited ({st}) before answering:\n{}", self.port, self.log_tail());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("moto_server on port {} did not answer within 30 s:\n{}", self.port, self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`, stable across [`MotoServer::restart`].
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last lines moto logged (its request log), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Creates `name` (kept across [`MotoServer::restart`]).
    pub fn create_bucket(&mut self, name: &str) -> Result<()> {
        self.put_bucket(name)?;
        self.buckets.push(name.to_owned());
        Ok(())
    }

    fn put_bucket(&self, name: &str) -> Result<()> {
        let r = self.http.put(format!("{}/{name}", self.endpoint())).header("authorization", ANY_SIGNATURE).send_empty().context("CreateBucket")?;
        if !r.status().is_success() {
            bail!("CreateBucket {name}: HTTP {}", r.status());
        }
        Ok(())
    }

    /// Kills the server's process group (SIGKILL: nothing is flushed, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id() as libc::pid_t;
            // SAFETY: signals a process group this value created and owns; no memory involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new one on the same port: every object and in-flight
    /// multipart upload is gone, the buckets are re-created empty, authentication is off again.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        // The port is free again once the killed process is reaped; a few tries cover a slow
        // socket teardown.
        let mut tries = 0;
        loop {
            match self.spawn() {
                Ok(()) => break,
                Err(e) if tries < 5 => {
                    tries += 1;
                    eprintln!("lectern-moto: restart on port {}: {e:#}; retrying", self.port);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
        for b in &self.buckets {
            self.put_bucket(b)?;
        }
        Ok(())
    }

    /// Turns on moto's IAM authentication: creates an IAM user allowed `s3:*` and returns its
    /// `(access_key, secret_key)`. From then on every request must carry a valid SigV4
    /// `Authorization` header (moto answers presigned URLs with 500 in this mode), and the
    /// unsigned helpers here stop working.
    pub fn enable_auth(&mut self) -> Result<(String, String)> {
        let script = r#"
import sys, json, boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="lectern")
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="lectern", PolicyName="s3", PolicyDocument=json.dumps(policy))
k = iam.create_access_key(UserName="lectern")["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
        let out = Command::new(self.venv.join("bin/python")).args(["-c", script, &self.endpoint()]).output().context("python (boto3 IAM setup)")?;
        if !out.status.success() {
            bail!("IAM setup failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace();
        let (Some(key), Some(secret)) = (it.next(), it.next()) else { bail!("IAM setup printed {text:?}") };
        let r = self.http.post(format!("{}/moto-api/reset-auth", self.endpoint())).send("0").context("reset-auth")?;
        if !r.status().is_success() {
            bail!("moto reset-auth: HTTP {}", r.status());
        }
        Ok((key.to_owned(), secret.to_owned()))
    }

    /// GetObject without signing: `None` for 404.
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        let mut r = self.http.get(format!("{}/{bucket}/{key}", self.endpoint())).header("authorization", ANY_SIGNATURE).call().context("GetObject")?;
        match r.status().as_u16() {
            404 => Ok(None),
            200 => {
                let headers = r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
                let body = r.body_mut().with_config().limit(u64::MAX).read_to_vec()?;
                Ok(Some(Object { body, headers }))
            }
            s => bail!("GetObject {bucket}/{key}: HTTP {s}"),
        }
    }

    /// ListMultipartUploads without signing: the `(key, upload_id)` of every upload in flight
    /// whose key starts with `prefix`.
    pub fn multipart_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut r = self
            .http
            .get(format!("{}/{bucket}?uploads&prefix={prefix}", self.endpoint()))
            .header("authorization", ANY_SIGNATURE)
            .call()
            .context("ListMultipartUploads")?;
        let body = r.body_mut().read_to_string()?;
        if !r.status().is_success() {
            bail!("ListMultipartUploads {bucket}: HTTP {}: {body}", r.status());
        }
        let text = |upload: &str, tag: &str| -> Option<String> {
            let start = upload.find(&format!("<{tag}>"))? + tag.len() + 2;
            let end = upload[start..].find(&format!("</{tag}>"))?;
            Some(upload[start..start + end].to_owned())
        };
        Ok(body
            .split("<Upload>")
            .skip(1)
            .filter_map(|u| Some((text(u, "Key")?, text(u, "UploadId")?)))
            .collect())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a loopback port")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_a_bucket_and_restarts_losing_uploads() -> Result<()> {
        let Some(mut moto) = MotoServer::start_or_skip(Options::default())? else { return Ok(()) };
        moto.create_bucket("harness")?;
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let r = http.post(format!("{}/harness/k?uploads", moto.endpoint())).send_empty()?;
        assert_eq!(r.status(), 200);
        assert_eq!(moto.multipart_uploads("harness", "k")?.len(), 1);
        let port = moto.port();
        moto.restart()?;
        assert_eq!(moto.port(), port);
        assert!(moto.multipart_uploads("harness", "")?.is_empty(), "a restart loses in-flight uploads");
        assert_eq!(moto.get_object("harness", "k")?, None);
        Ok(())
    }
}
