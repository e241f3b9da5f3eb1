//! Hardware-in-the-loop scenarios: the real `lecternd` binary on the simulated board, driven
//! through its control socket and the sim board's socket exactly as `lectern` and a lab rig would.
//!
//! On CI the board is `sim`; in the lab the same scenarios run with `LECTERN_HIL_CONFIG` pointing
//! at a real board's config (see hil-tests/README.md). This module is the harness: it writes a
//! config into a temporary directory, starts the daemon, waits for its sockets, and offers
//! helpers to query the journal's SQLite database read-only and to check media with GStreamer's
//! discoverer.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// The directory holding `lecternd` and `lectern`: a test binary lives in `target/<profile>/deps`,
/// a bench binary of this crate in `target/<profile>` itself.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_owned();
    if !dir.join("lecternd").exists() {
        dir = dir.parent().expect("profile dir").to_owned();
    }
    assert!(dir.join("lecternd").exists(), "{} has no lecternd: run `cargo build --workspace --bins` first", dir.display());
    dir
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Writes `dir/asound.conf`: alsa-lib's own configuration plus `pcm.NAME`, a `file` PCM over the
/// `null` PCM whose capture reads `infile` (a plain file or a FIFO the test feeds; how and why:
/// firmware/capture/tests/alsa_file_pcm.rs). Give its path to the daemon as `ALSA_CONFIG_PATH`
/// ([`Daemon::start_in_env`]). `None` (with a SKIPPED line) when alsa-lib's data is not installed.
pub fn file_pcm(dir: &Path, name: &str, infile: &Path) -> Option<PathBuf> {
    let base = Path::new("/usr/share/alsa/alsa.conf");
    if !base.exists() {
        eprintln!("SKIPPED: {} missing (alsa-lib data not installed)", base.display());
        return None;
    }
    let conf = dir.join("asound.conf");
    let text = format!(
        "<{}>\npcm.{name} {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n  infile \"{}\"\n  format \"raw\"\n}}\n",
        base.display(),
        infile.display()
    );
    std::fs::write(&conf, text).expect("write asound.conf");
    Some(conf)
}

/// A running daemon in its own temporary directory.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    log: PathBuf,
    /// lecternd arguments after `--config FILE` (kept across restarts).
    args: Vec<String>,
    /// Environment variables for this daemon alone (kept across restarts).
    env: Vec<(String, PathBuf)>,
}

/// A small, fast capture for scenarios that do not measure media quality.
pub const SMALL: &str = "[capture]\nwidth = 320\nheight = 240\nvideo_bitrate_kbps = 500\n";

impl Daemon {
    /// Writes `extra` TOML after the harness's own keys and starts the daemon.
    pub fn start(extra: &str) -> Result<Daemon> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir, extra)
    }

    /// Starts (or restarts) a daemon whose config lives in `dir` (the media survives restarts).
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Result<Daemon> {
        Self::start_in_with(dir, extra, &[])
    }

    /// [`Daemon::start_in`] with more lecternd arguments (`--provision-store DIR`, …).
    pub fn start_in_with(dir: tempfile::TempDir, extra: &str, args: &[&str]) -> Result<Daemon> {
        let mut d = Self::start_deferred(dir, extra, args)?;
        d.spawn()?;
        Ok(d)
    }

    /// Writes the config (unless `dir` has one) and the daemon's record, without starting it.
    fn start_deferred(dir: tempfile::TempDir, extra: &str, args: &[&str]) -> Result<Daemon> {
        let config = dir.path().join("lectern.toml");
        if !config.exists() {
            // The storage reserve is 16 MB rather than the default 256 MB, so the scenarios do not
            // depend on how full the test machine's disk is (tests/storage.rs sets its own).
            let base = "[board]\nbackend = \"sim\"\nsim_socket = \"run/sim.sock\"\ndebounce_ms = 10\nlong_press_ms = 800\n\
                        [control]\nsocket = \"run/control.sock\"\n\
                        [journal]\nmedia_dir = \"media\"\nmin_free_mb = 16\n\
                        [clock]\ntrust = \"always\"\n";
            std::fs::write(&config, merge(base, extra))?;
            // The journal refuses a missing media directory (an unmounted card must not fill the root fs).
            std::fs::create_dir_all(dir.path().join("media"))?;
        }
        let log = dir.path().join("lecternd.log");
        Ok(Daemon { dir, config, child: None, log, args: args.iter().map(|a| a.to_string()).collect(), env: Vec::new() })
    }

    /// [`Daemon::start_in`] with environment variables for this daemon alone, such as
    /// `ALSA_CONFIG_PATH` (see [`file_pcm`]) or `NOTIFY_SOCKET`: they go to the child process,
    /// never into the test process that other tests share.
    pub fn start_in_env(dir: tempfile::TempDir, extra: &str, env: &[(&str, &Path)]) -> Result<Daemon> {
        let mut d = Self::start_deferred(dir, extra, &[])?;
        d.env = env.iter().map(|(k, v)| (k.to_string(), v.to_path_buf())).collect();
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(bin_dir().join("lecternd"))
            .arg("--config")
            .arg(&self.config)
            .args(&self.args)
            .env("LECTERN_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn lecternd")?;
        self.child = Some(child);
        let sock = self.control_socket();
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        let mut exited = None;
        wait_until("the control socket", Duration::from_secs(20), || {
            if let Ok(Some(st)) = child.try_wait() {
                exited = Some(st);
                return true;
            }
            lectern_control::request(&sock, &lectern_control::Request::Status, Duration::from_secs(2)).is_ok()
        })
        .and_then(|()| match exited {
            Some(st) => bail!("lecternd exited at start-up: {st}"),
            None => Ok(()),
        })
        .with_context(|| format!("daemon log:\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        Ok(())
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.path().join("run/control.sock")
    }

    pub fn sim_socket(&self) -> PathBuf {
        self.dir.path().join("run/sim.sock")
    }

    pub fn media(&self) -> PathBuf {
        self.dir.path().join("media")
    }

    /// The running daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a control request; `Err` carries the daemon's refusal.
    pub fn ctl(&self, req: lectern_control::Request) -> Result<Value> {
        Ok(lectern_control::request(&self.control_socket(), &req, Duration::from_secs(30))?)
    }

    pub fn status(&self) -> Value {
        self.ctl(lectern_control::Request::Status).expect("status")
    }

    /// Runs the real `lectern` CLI against this daemon and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(bin_dir().join("lectern")).arg("--config").arg(&self.config).args(args).output()?;
        if !out.status.success() {
            bail!("lectern {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        unsafe_kill(child.id(), 15);
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("lecternd did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the daemon to stop by itself (as after a provisioning apply).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut().context("not running")?;
        loop {
            if let Some(st) = child.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > timeout {
                bail!("lecternd did not stop by itself within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process dies with no chance to flush or commit anything.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the daemon again on the same directory and media.
    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// How many segment rows (open or committed) part `part_seq` of any recording has; 0 while
    /// the database does not exist yet. A row appears with the first media of its segment.
    pub fn segment_rows(&self, part_seq: i64) -> i64 {
        self.db()
            .and_then(|db| {
                Ok(db.query_row(
                    "SELECT count(*) FROM segments s JOIN parts p ON s.part_id = p.id WHERE p.seq = ?1",
                    [part_seq],
                    |r| r.get(0),
                )?)
            })
            .unwrap_or(0)
    }

    /// Opens the journal database read-only.
    pub fn db(&self) -> Result<rusqlite::Connection> {
        Ok(rusqlite::Connection::open_with_flags(self.media().join("lectern.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    // std has no kill(2) with a signal number; the `kill` tool is on every Debian machine.
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

/// Appends `extra` to `base`, letting sections in `extra` override same-named keys in `base`
/// (a tiny merge: TOML forbids repeating a table, so the tables are merged textually by key).
fn merge(base: &str, extra: &str) -> String {
    let parse = |s: &str| -> toml_lite::Doc { toml_lite::parse(s) };
    let mut doc = parse(base);
    for (table, key, line) in parse(extra).entries {
        doc.entries.retain(|(t, k, _)| !(t == &table && k == &key));
        doc.entries.push((table, key, line));
    }
    doc.render()
}

/// Just enough TOML structure to merge flat `[table] key = value` configs.
mod toml_lite {
    pub struct Doc {
        pub entries: Vec<(String, String, String)>,
    }

    pub fn parse(s: &str) -> Doc {
        let mut table = String::new();
        let mut entries = Vec::new();
        for line in s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = t.to_owned();
            } else if let Some((k, _)) = line.split_once('=') {
                entries.push((table.clone(), k.trim().to_owned(), line.to_owned()));
            }
        }
        Doc { entries }
    }

    impl Doc {
        pub fn render(&self) -> String {
            let mut tables: Vec<&str> = Vec::new();
            for (t, _, _) in &self.entries {
                if !tables.contains(&t.as_str()) {
                    tables.push(t);
                }
            }
            let mut out = String::new();
            for t in tables {
                out.push_str(&format!("[{t}]\n"));
                for (_, _, line) in self.entries.iter().filter(|(tt, _, _)| tt == t) {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out
        }
    }
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What GStreamer's discoverer says about a media file.
#[derive(Debug)]
pub struct Discovered {
    pub duration: Duration,
    pub has_video: bool,
    pub has_audio: bool,
}

/// Runs `gst-discoverer-1.0` on a file; an error means it did not decode.
pub fn discover(path: &Path) -> Result<Discovered> {
    let out = Command::new("gst-discoverer-1.0").arg(path).output().context("gst-discoverer-1.0 (apt: gstreamer1.0-plugins-base-apps)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !text.contains("Done discovering") || text.contains("An error was encountered") {
        bail!("{} does not decode:\n{text}", path.display());
    }
    let duration = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Duration: "))
        .and_then(parse_hms)
        .with_context(|| format!("no duration for {}:\n{text}", path.display()))?;
    let stream = |kind: &str, codec: &str| text.lines().any(|l| l.trim_start().starts_with(kind) && l.contains(codec));
    Ok(Discovered { duration, has_video: stream("video #", ": H.264"), has_audio: stream("audio #", ": MPEG-4 AAC") })
}

/// Decodes every frame of a media file with ffmpeg and returns its error lines (empty: clean).
/// Lines of ffmpeg's own `null` output muxer are not decode errors and are left out: when a seam
/// of a stitched file falls inside ffmpeg's first seconds of frame-rate probing it guesses a rate
/// far above 30 fps and complains about DTS it derived itself (its own concat output does the
/// same); `powercut::check_final_media` checks the file's real DTS instead.
pub fn decode_errors(path: &Path) -> Result<Vec<String>> {
    let out = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output().context("ffmpeg (apt: ffmpeg)")?;
    let mut errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("[null @"))
        .map(str::to_owned)
        .collect();
    if !out.status.success() && errors.is_empty() {
        errors.push(format!("ffmpeg exited with {}", out.status));
    }
    Ok(errors)
}

fn parse_hms(s: &str) -> Option<Duration> {
    let mut parts = s.trim().split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    Some(Duration::from_secs_f64(h * 3600.0 + m * 60.0 + sec))
}

/// One committed segment row, as the tests read it straight from SQLite.
#[derive(Debug)]
pub struct Seg {
    pub part_seq: i64,
    pub seq: i64,
    pub path: PathBuf,
    pub bytes: i64,
    pub sha256: String,
    pub duration_ns: i64,
    pub recovered: bool,
    pub state: String,
}

pub fn segments(db: &rusqlite::Connection, media: &Path, recording_id: &str) -> Result<Vec<Seg>> {
    let mut st = db.prepare(
        "SELECT p.seq, s.seq, s.path, s.bytes, s.sha256, s.duration_ns, s.recovered, s.state \
         FROM segments s JOIN parts p ON s.part_id = p.id WHERE s.recording_id = ?1 ORDER BY s.seq",
    )?;
    let rows = st.query_map([recording_id], |r| {
        Ok(Seg {
            part_seq: r.get(0)?,
            seq: r.get(1)?,
            path: media.join(r.get::<_, String>(2)?),
            bytes: r.get(3)?,
            sha256: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
            duration_ns: r.get::<_, Option<i64>>(5)?.unwrap_or(0),
            recovered: r.get::<_, i64>(6)? != 0,
            state: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Concatenates segment files (MPEG-TS concatenates byte-wise) into `out`.
pub fn concat(segs: &[Seg], out: &Path) -> Result<()> {
    let mut f = std::fs::File::create(out)?;
    for s in segs {
        std::io::copy(&mut std::fs::File::open(&s.path)?, &mut f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn merge_overrides_keys_and_keeps_the_rest() {
        let m = super::merge("[a]\nx = 1\ny = 2\n[b]\nz = 3\n", "[a]\nx = 9\n[c]\nw = 4\n");
        assert_eq!(m, "[a]\ny = 2\nx = 9\n[b]\nz = 3\n[c]\nw = 4\n");
    }

    #[test]
    fn hms_parses() {
        assert_eq!(super::parse_hms("0:01:02.500000000"), Some(std::time::Duration::from_millis(62_500)));
    }
}

pub mod browser;
pub mod lab;
pub mod powercut;
pub mod powercut_upload;
