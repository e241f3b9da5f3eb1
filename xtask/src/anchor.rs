//! The anchor of the recording benchmark: pyca 4.4 (from PyPI) driving ffmpeg with the same
//! encoder settings as Lectern, against the Opencast test double (`opencast-double`, the release
//! binary of `hil-tests/opencast-double`, Basic auth) — the same server `bench-kill` gives pyca.
//!
//! pyca installs into a virtualenv under the output directory (`OUT/pyca-venv`, reused by later
//! runs with the same `--out`). The double serves a calendar with one event starting a little
//! after pyca starts; pyca's schedule service fetches it, and its capture service starts the
//! ffmpeg command of `hil-tests/anchors/pyca/pyca.conf.in` when the event begins. pyca runs as
//! five processes (`pyca run` and its schedule, capture, ingest and agentstate children); ffmpeg
//! is a child of the capture process. Nothing of pyca is changed or patched.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::child::{signal, Managed};
use crate::procfs;

/// The pyca release the issue names as the anchor.
pub const PYCA_VERSION: &str = "4.4";
/// Credentials of the Opencast double (pyca sends them with Basic auth).
pub const OC_USER: &str = "opencast_system_account";
pub const OC_PASSWORD: &str = "bench-anchor";
/// What the two Lectern-vs-pyca benchmarks run from the target directory's `release/`: the daemon, its CLI and
/// the Opencast double that serves pyca its calendar (the rest of the workspace need not build).
pub const BENCH_PACKAGES: &[&str] = &["-p", "lecternd", "-p", "lectern-cli", "-p", "lectern-opencast-double"];
/// The capture-agent name pyca registers as in the recording benchmark.
const PYCA_AGENT: &str = "lectern-bench-pyca";

/// One event the double schedules: uid, agent, start and end (Unix seconds), title.
pub struct DoubleEvent {
    pub uid: String,
    pub agent: String,
    pub start: u64,
    pub end: u64,
    pub title: String,
}

/// Starts the release `opencast-double` from `bin` with Basic auth and `events`, logging to
/// `dir/opencast-double.log`, and returns it with its URL once it listens.
pub fn start_double(bin: &Path, dir: &Path, events: &[DoubleEvent]) -> Result<(Managed, String)> {
    let mut cmd = Command::new(bin.join("opencast-double"));
    cmd.args(["--basic", "--user", OC_USER, "--password", OC_PASSWORD]);
    for e in events {
        cmd.arg("--event").arg(format!(
            "uid={},agent={},start={},end={},title={}",
            e.uid, e.agent, e.start, e.end, e.title
        ));
    }
    let log = dir.join("opencast-double.log");
    let mut double = Managed::spawn("opencast-double", &mut cmd, &log)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(url) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
            return Ok((double, url.trim().to_owned()));
        }
        if double.exited().is_some() || Instant::now() > deadline {
            bail!("opencast-double did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A virtualenv with pyca installed, and the versions found.
pub struct Setup {
    venv: PathBuf,
    pub pyca_version: String,
    /// `pip freeze` of the virtualenv: pyca 4.4 pins no upper bounds, so its dependencies are
    /// whatever PyPI had on the day; they are recorded with the results.
    pub freeze: String,
    pub ffmpeg_version: String,
}

/// Creates (or reuses) `out/pyca-venv` with pyca 4.4 and checks that ffmpeg is on PATH.
pub fn prepare(out: &Path) -> Result<Setup> {
    let ffmpeg_version = first_line(Command::new("ffmpeg").arg("-version"))
        .context("ffmpeg is not installed (apt-get install ffmpeg)")?;
    let venv = out.join("pyca-venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!("xtask: creating {}", venv.display());
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let installed = || {
        first_line(Command::new(&python).args([
            "-c",
            "import importlib.metadata as m; print(m.version('pyca'))",
        ]))
    };
    if installed().ok().as_deref() != Some(PYCA_VERSION) {
        eprintln!("xtask: pip install pyca=={PYCA_VERSION}");
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            &format!("pyca=={PYCA_VERSION}"),
        ]))?;
    }
    let pyca_version = installed()?;
    let freeze = String::from_utf8(
        Command::new(venv.join("bin/pip"))
            .arg("freeze")
            .output()?
            .stdout,
    )?;
    Ok(Setup {
        venv,
        pyca_version,
        freeze,
        ffmpeg_version,
    })
}

/// A running pyca with its Opencast double and one scheduled event.
pub struct Anchor {
    pub dir: PathBuf,
    /// Declared before `double` so that pyca is stopped first when dropped.
    pyca: Managed,
    double: Managed,
    /// When the scheduled event starts (pyca starts ffmpeg within about a second of it).
    pub event_start: Instant,
}

impl Anchor {
    /// Starts the double (from `bin`) and pyca in `out/anchor`; the event begins `lead` from now.
    pub fn start(
        setup: &Setup,
        root: &Path,
        bin: &Path,
        out: &Path,
        minutes: u32,
        lead: Duration,
    ) -> Result<Anchor> {
        let dir = out.join("anchor");
        std::fs::create_dir_all(dir.join("recordings"))?;
        // The event start is a whole Unix second, as in an iCalendar; the Instant is derived from it.
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let start_epoch = (now + lead).as_secs() + 1;
        let event_start = Instant::now() + (Duration::from_secs(start_epoch) - now);

        let anchors = root.join("hil-tests/anchors/pyca");
        let (double, url) = start_double(
            bin,
            &dir,
            &[DoubleEvent {
                uid: "bench-record".into(),
                agent: PYCA_AGENT.into(),
                start: start_epoch,
                end: start_epoch + u64::from(minutes) * 60,
                title: "bench-record".into(),
            }],
        )?;
        let template = std::fs::read_to_string(anchors.join("pyca.conf.in"))?;
        let conf = dir.join("pyca.conf");
        std::fs::write(
            &conf,
            template
                .replace("@OUT@", &dir.display().to_string())
                .replace("@NAME@", PYCA_AGENT)
                .replace("@URL@", &url)
                .replace("@USER@", OC_USER)
                .replace("@PASSWORD@", OC_PASSWORD),
        )?;
        let pyca = Managed::spawn(
            "pyca",
            Command::new(setup.venv.join("bin/pyca"))
                .arg("-c")
                .arg(&conf)
                .arg("run")
                .current_dir(&dir),
            &dir.join("pyca.log"),
        )?;
        Ok(Anchor {
            dir,
            pyca,
            double,
            event_start,
        })
    }

    /// pyca's own processes: `pyca run` and its children, without the ffmpeg it started.
    pub fn pyca_pids(&self) -> Vec<u32> {
        let main = self.pyca.pid();
        if main == 0 {
            return Vec::new();
        }
        let mut pids: Vec<u32> = procfs::descendants(main)
            .into_iter()
            .filter(|&p| procfs::comm(p) != "ffmpeg")
            .collect();
        if procfs::alive(main) {
            pids.push(main);
        }
        pids
    }

    /// The capture process pyca started, while it runs.
    pub fn ffmpeg_pid(&self) -> Option<u32> {
        // pid 0 means pyca is already stopped: never search the whole process table.
        let main = self.pyca.pid();
        if main == 0 {
            return None;
        }
        procfs::descendants(main)
            .into_iter()
            .find(|&p| procfs::comm(p) == "ffmpeg")
    }

    /// Fails if pyca has exited (it never should before we stop it).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(st) = self.pyca.exited() {
            bail!(
                "pyca exited ({st}); see {}",
                self.dir.join("pyca.log").display()
            );
        }
        Ok(())
    }

    /// The MP4 that ffmpeg wrote.
    pub fn recording(&self) -> Option<PathBuf> {
        let dirs = std::fs::read_dir(self.dir.join("recordings")).ok()?;
        dirs.flatten()
            .filter_map(|d| std::fs::read_dir(d.path()).ok())
            .flat_map(|files| files.flatten().map(|f| f.path()))
            .find(|p| p.extension().is_some_and(|e| e == "mp4"))
    }

    /// Stops pyca, then any ffmpeg still running, then the double. pyca 4.4's capture service
    /// does not pass SIGTERM on to ffmpeg (its handler reads a global the capture never sets), so
    /// an ffmpeg that is still running is stopped here by its pid.
    pub fn stop(&mut self) {
        let ffmpeg = self.ffmpeg_pid();
        self.pyca.terminate(Duration::from_secs(10));
        if let Some(pid) = ffmpeg.filter(|&p| procfs::alive(p)) {
            signal(pid, "TERM");
        }
        self.double.terminate(Duration::from_secs(5));
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first line of a command's stdout, or an error if it could not run or failed.
pub fn first_line(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

fn run(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("{cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

impl Setup {
    /// The `pyca` entry point of the virtualenv.
    pub fn pyca_bin(&self) -> PathBuf {
        self.venv.join("bin/pyca")
    }
}
