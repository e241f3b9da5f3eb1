//! The fake lab board CI tests the runner with: a directory stands for the board's filesystem,
//! commands run there with `sh -c`, "power" is a process group started at power-on (normally the
//! real `lecternd` on the sim board, as systemd would start it) and SIGKILLed when the relay
//! opens, and every action is recorded in order. Knobs make it misbehave the ways a real rig
//! does: a board that never comes back, a relay that cuts nothing, a reboot that never happens,
//! a slow boot, and a hook that damages the "card" at the cut (an FTL losing flushed data).
//!
//! A cut here loses the process, not the page cache, unless the card is a cutfs mount whose cut
//! the test makes in [`FakeBoard::on_cut`] ([`FakeBoard::with_daemon_on`]); what a real card's
//! controller does at a brown-out only the rig in the lab shows.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transport::{fetch_into, kill_group, run_bounded, sh_quote, LabError, Line, Output, Transport};
use super::Board;

/// One thing the runner did to the fake board, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Run(String),
    Fetch(String),
    Power(bool),
    Line(Line, bool),
    Reboot,
}

/// Called with the board's root right after the relay cut it (the daemon is dead by then).
pub type CutHook = Box<dyn FnMut(&Path) + Send>;

pub struct FakeBoard {
    root: PathBuf,
    /// argv started at every boot, in its own process group; `None`: a board with no daemon.
    init: Option<Vec<String>>,
    child: Option<Child>,
    powered: bool,
    /// When the board answers again (its boot is done); `None`: never, or powered off.
    up_at: Option<Instant>,
    boots: u32,
    /// The `lectern ...` prefix the sim lines go through.
    lectern: String,
    events: Arc<Mutex<Vec<Event>>>,
    /// Unreachable for this long after each later boot.
    pub boot_delay: Duration,
    /// `false`: a later power-on powers nothing up (a dead board or a stuck relay contact).
    pub comes_back: bool,
    /// `false`: switching the relay off changes nothing (miswired relay).
    pub relay_cuts: bool,
    /// `false`: the reboot request is accepted and ignored.
    pub reboots: bool,
    pub on_cut: Option<CutHook>,
}

impl FakeBoard {
    /// A powered, booted board in `root` (which must exist) running `init` at every boot.
    pub fn boot(root: &Path, init: Option<Vec<String>>, lectern: &str) -> Result<FakeBoard, LabError> {
        let mut b = FakeBoard {
            root: root.to_owned(),
            init,
            child: None,
            powered: false,
            up_at: None,
            boots: 0,
            lectern: lectern.to_owned(),
            events: Arc::default(),
            boot_delay: Duration::ZERO,
            comes_back: true,
            relay_cuts: true,
            reboots: true,
            on_cut: None,
        };
        b.start()?;
        Ok(b)
    }

    /// A booted board running the real `lecternd` (from [`crate::bin_dir`]) on the sim board with
    /// `extra` appended to its config, and the [`Board`] profile that reaches it. `extra` holds
    /// whole tables the base does not have (TOML forbids repeating `[board]`, `[control]`,
    /// `[journal]`, `[clock]` or `[capture]`), e.g. `"[power]\nhold_ms = 500\n"`.
    pub fn with_daemon(root: &Path, extra: &str) -> Result<(FakeBoard, Board), LabError> {
        Self::with_daemon_on(root, &root.join("media"), extra)
    }

    /// [`FakeBoard::with_daemon`] with the media directory (the "card") at `media`, e.g. on a
    /// cutfs mount whose cut the test calls from [`FakeBoard::on_cut`].
    pub fn with_daemon_on(root: &Path, media: &Path, extra: &str) -> Result<(FakeBoard, Board), LabError> {
        let io = |what: String| move |source| LabError::Io { what, source };
        let bin = crate::bin_dir();
        for d in [root.join("etc"), root.join("run"), media.to_owned()] {
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        }
        let (r, m) = (root.display(), media.display());
        let config = root.join("etc/lectern.toml");
        let text = format!(
            "[board]\nbackend = \"sim\"\nsim_socket = \"{r}/run/sim.sock\"\ndebounce_ms = 10\nlong_press_ms = 800\n\
             [control]\nsocket = \"{r}/run/control.sock\"\n\
             [journal]\nmedia_dir = \"{m}\"\nmin_free_mb = 16\n\
             [clock]\ntrust = \"always\"\n{}{extra}",
            crate::SMALL
        );
        std::fs::write(&config, text).map_err(io(format!("write {}", config.display())))?;
        let lectern = format!("{} --config {}", sh_quote(&bin.join("lectern").display().to_string()), sh_quote(&config.display().to_string()));
        let init = vec![bin.join("lecternd").display().to_string(), "--config".into(), config.display().to_string()];
        let board = Board { lectern: lectern.clone(), as_daemon: String::new(), boot_id: "cat boot_id".into(), logs: "cat daemon.log".into(), card: "echo fake card".into() };
        Ok((FakeBoard::boot(root, Some(init), &lectern)?, board))
    }

    /// A shared handle on the event log (the runner borrows the board mutably).
    pub fn events(&self) -> Arc<Mutex<Vec<Event>>> {
        self.events.clone()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn record(&self, e: Event) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    fn start(&mut self) -> Result<(), LabError> {
        use std::os::unix::process::CommandExt;
        self.boots += 1;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let boot_id = self.root.join("boot_id");
        std::fs::write(&boot_id, format!("fake-boot-{}-{nanos}\n", self.boots))
            .map_err(|source| LabError::Io { what: format!("write {}", boot_id.display()), source })?;
        if let Some(argv) = &self.init {
            let log_path = self.root.join("daemon.log");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|source| LabError::Io { what: format!("open {}", log_path.display()), source })?;
            let child = Command::new(&argv[0])
                .args(&argv[1..])
                .current_dir(&self.root)
                .env("LECTERN_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .map_err(|source| LabError::Io { what: format!("start {argv:?}"), source })?;
            self.child = Some(child);
        }
        self.powered = true;
        self.up_at = Some(Instant::now() + self.boot_delay);
        Ok(())
    }

    /// Kills everything the board runs, at once (power gone) or after a SIGTERM (a clean stop).
    fn stop(&mut self, clean: bool) {
        let Some(mut child) = self.child.take() else { return };
        if clean {
            kill_group(child.id(), "TERM");
            // systemd's TimeoutStopSec for lecternd.service is 20 s.
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_group(child.id(), "KILL");
        let _ = child.wait();
    }

    fn reachable(&self) -> Result<(), LabError> {
        let detail = match self.up_at {
            _ if !self.powered => "powered off",
            None => "powered but never booted",
            Some(t) if Instant::now() < t => "booting",
            Some(_) => return Ok(()),
        };
        Err(LabError::Unreachable { host: self.name(), detail: detail.into() })
    }

    fn sh(&self, cmd: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd).current_dir(&self.root);
        c
    }
}

impl Transport for FakeBoard {
    fn name(&self) -> String {
        format!("fake board in {}", self.root.display())
    }

    fn run(&mut self, cmd: &str, timeout: Duration) -> Result<Output, LabError> {
        self.record(Event::Run(cmd.to_owned()));
        self.reachable()?;
        run_bounded(self.sh(cmd), &format!("`{cmd}` on {}", self.name()), timeout, None)
    }

    fn fetch(&mut self, cmd: &str, local: &Path, timeout: Duration) -> Result<(), LabError> {
        self.record(Event::Fetch(cmd.to_owned()));
        self.reachable()?;
        let what = format!("`{cmd}` on {} into {}", self.name(), local.display());
        fetch_into(self.sh(cmd), &what, timeout, local, Ok)
    }

    fn power(&mut self, on: bool) -> Result<(), LabError> {
        self.record(Event::Power(on));
        match (on, self.powered) {
            (false, true) if self.relay_cuts => {
                self.stop(false);
                (self.powered, self.up_at) = (false, None);
                if let Some(hook) = self.on_cut.as_mut() {
                    hook(&self.root);
                }
            }
            (true, false) if self.comes_back => self.start()?,
            (true, false) => (self.powered, self.up_at) = (true, None),
            _ => {}
        }
        Ok(())
    }

    fn line(&mut self, line: Line, asserted: bool) -> Result<(), LabError> {
        self.record(Event::Line(line, asserted));
        // The simulated line lives in the daemon: with the board off it is gone, and it comes
        // back released, as a supervisor's line does when power returns.
        if !self.powered || self.child.is_none() {
            return Ok(());
        }
        let cmd = format!("{} {}", self.lectern, line.sim_words(asserted));
        let out = run_bounded(self.sh(&cmd), &cmd, Duration::from_secs(10), None)?;
        if out.code != Some(0) {
            return Err(LabError::Rig { action: format!("{line:?} asserted={asserted}"), detail: out.stderr });
        }
        Ok(())
    }

    fn reboot(&mut self) -> Result<(), LabError> {
        self.record(Event::Reboot);
        self.reachable()?;
        if self.reboots {
            self.stop(true);
            self.start()?;
        }
        Ok(())
    }
}

impl Drop for FakeBoard {
    fn drop(&mut self) {
        self.stop(false);
    }
}
