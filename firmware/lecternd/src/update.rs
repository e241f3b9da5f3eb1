//! System updates that never cost a lecture (issue 13): `lectern update BUNDLE` asks for a RAUC
//! bundle to be installed into the inactive slot and the box rebooted into it, and this module
//! decides *when*. It owns the update's state, the installer seam and the installer thread;
//! which slot boots and whether it is kept are RAUC's and the bootloader's business (the layer's
//! `lectern-healthy.service` marks a slot good only once this daemon answers, docs/yocto.md).
//!
//! The core, [`UpdateGate`], is sans-IO: `(state, busy, now) -> action`. States:
//!
//! ```text
//!   request ─▶ Deferred ──(idle)──▶ Installing ──ok──▶ RebootPending ──(idle)──▶ Rebooting
//!                 ▲  (busy: why)        │                 ▲  (busy: why)
//!                 │                     └─error─▶ Failed  │
//!   a new request replaces a deferred or failed one; one installing, installed or rebooting is
//!   refused (the slot it writes is the only other slot).
//! ```
//!
//! *Busy* ([`Busy::reason`]) is: the recorder is not idle (recording, retrying after a capture
//! error, holding a recording through a power cut), the stitch worker is remuxing, the power-fail
//! line is asserted, or a scheduled recording starts within [`LECTURE_MARGIN_MS`]. `rauc install` writes a whole root filesystem
//! to the card (minutes of heavy I/O) and the reboot takes about a minute, so neither starts
//! while a recording's fsyncs would compete with it or while the next lecture is about to start.
//! A recording that starts *during* an install is not stopped: the install only writes the
//! inactive slot, and the reboot waits for the recording to end. Recordings always win.
//!
//! `rauc install` blocks for minutes, so it runs on a thread of its own and the main loop only
//! polls for its result once per turn ([`Updater::turn`]); the systemd watchdog keeps being fed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::Arc;

use lectern_recorder::{Slot, State};
use serde_json::{json, Value};

/// No install starts and no reboot is requested when a scheduled recording starts sooner than
/// this: an install of a ~300 MB root filesystem to an SD card takes a few minutes and the reboot
/// about one, and the box should be up and idle well before the lecture's pre-roll.
pub const LECTURE_MARGIN_MS: i64 = 15 * 60 * 1000;

/// What may keep an update waiting, as the main loop sees it on one turn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Busy {
    /// The recorder is not idle: its state name and the recording's id.
    pub recorder: Option<(String, Option<String>)>,
    /// The stitch worker is remuxing this recording.
    pub stitching: Option<String>,
    /// When the next scheduled recording starts (ms since the epoch).
    pub next_start_ms: Option<i64>,
    /// The power-fail line is asserted: the box may lose power at any moment, so neither an
    /// install nor a reboot starts.
    pub power_failing: bool,
}

impl Busy {
    /// What the daemon is doing, from the recorder's state, the stitcher and the schedule.
    pub fn of(state: &State, stitching: Option<&str>, schedule: &[Slot], power_failing: bool, now_ms: i64) -> Busy {
        Busy {
            power_failing,
            recorder: (*state != State::Idle).then(|| (state.name().to_owned(), state.active().map(|a| a.spec.id.clone()))),
            stitching: stitching.map(str::to_owned),
            next_start_ms: schedule.iter().map(|s| s.start_ms).filter(|&t| t >= now_ms).min(),
        }
    }

    /// Why an update must wait now, or `None` when the box is idle long enough for it.
    pub fn reason(&self, now_ms: i64) -> Option<String> {
        if let Some((state, id)) = &self.recorder {
            return Some(match id {
                Some(id) => format!("{state} {id}"),
                None => state.clone(),
            });
        }
        if let Some(id) = &self.stitching {
            return Some(format!("stitching {id}"));
        }
        if self.power_failing {
            return Some("the power-fail line is asserted".to_owned());
        }
        match self.next_start_ms {
            Some(t) if t - now_ms < LECTURE_MARGIN_MS => {
                Some(format!("a scheduled recording starts in {} min", ((t - now_ms).max(0) + 59_999) / 60_000))
            }
            _ => None,
        }
    }
}

/// Where an update is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the box to be idle before `rauc install`; `why` is what it waits for.
    Deferred { why: String },
    /// `rauc install` runs on the installer thread.
    Installing { since_ms: i64 },
    /// Installed into the inactive slot; the reboot into it waits for the box to be idle.
    RebootPending { installed_ms: i64, why: Option<String> },
    /// The reboot was requested; systemd stops the daemon next.
    Rebooting { at_ms: i64 },
    /// The install or the reboot request failed; the running slot stays.
    Failed { error: String, at_ms: i64 },
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Deferred { .. } => "deferred",
            Phase::Installing { .. } => "installing",
            Phase::RebootPending { .. } => "reboot_pending",
            Phase::Rebooting { .. } => "rebooting",
            Phase::Failed { .. } => "failed",
        }
    }
}

/// One requested update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub bundle: PathBuf,
    pub requested_ms: i64,
    pub phase: Phase,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Install(PathBuf),
    Reboot,
}

/// The sans-IO core: see the module doc for the states.
#[derive(Debug, Default)]
pub struct UpdateGate {
    pending: Option<Pending>,
}

impl UpdateGate {
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Takes a request. A deferred or failed update is replaced; one that is installing, waiting
    /// for its reboot or rebooting is not (the bundle it wrote is the only other slot).
    pub fn request(&mut self, bundle: PathBuf, now_ms: i64) -> Result<(), String> {
        if let Some(p) = &self.pending {
            match &p.phase {
                Phase::Deferred { .. } | Phase::Failed { .. } => {}
                Phase::Installing { .. } => return Err(format!("update {} is installing; try again once it is done", p.bundle.display())),
                Phase::RebootPending { .. } | Phase::Rebooting { .. } => {
                    return Err(format!("update {} is installed and waits for its reboot; request the next one after it", p.bundle.display()))
                }
            }
        }
        self.pending = Some(Pending { bundle, requested_ms: now_ms, phase: Phase::Deferred { why: "not checked yet".into() } });
        Ok(())
    }

    /// One main-loop turn: starts the install or the reboot when nothing makes it wait.
    pub fn turn(&mut self, busy: &Busy, now_ms: i64) -> Option<Action> {
        let p = self.pending.as_mut()?;
        let why = busy.reason(now_ms);
        match &mut p.phase {
            Phase::Deferred { why: w } => match why {
                Some(why) => {
                    *w = why;
                    None
                }
                None => {
                    p.phase = Phase::Installing { since_ms: now_ms };
                    Some(Action::Install(p.bundle.clone()))
                }
            },
            Phase::RebootPending { why: w, .. } => match why {
                Some(why) => {
                    *w = Some(why);
                    None
                }
                None => {
                    p.phase = Phase::Rebooting { at_ms: now_ms };
                    Some(Action::Reboot)
                }
            },
            Phase::Installing { .. } | Phase::Rebooting { .. } | Phase::Failed { .. } => None,
        }
    }

    /// The installer thread finished.
    pub fn installed(&mut self, result: Result<(), String>, now_ms: i64) {
        if let Some(p) = self.pending.as_mut().filter(|p| matches!(p.phase, Phase::Installing { .. })) {
            p.phase = match result {
                Ok(()) => Phase::RebootPending { installed_ms: now_ms, why: None },
                Err(error) => Phase::Failed { error, at_ms: now_ms },
            };
        }
    }

    /// The reboot could not even be requested.
    pub fn reboot_failed(&mut self, error: String, now_ms: i64) {
        if let Some(p) = self.pending.as_mut() {
            p.phase = Phase::Failed { error: format!("installed, but the reboot request failed: {error}"), at_ms: now_ms };
        }
    }

    /// `status.update` (docs/control-api.md): null when no update was requested since start.
    pub fn json(&self) -> Value {
        let Some(p) = &self.pending else { return Value::Null };
        let (waiting_for, error, since) = match &p.phase {
            Phase::Deferred { why } => (Some(why.clone()), None, None),
            Phase::Installing { since_ms } => (None, None, Some(*since_ms)),
            Phase::RebootPending { installed_ms, why } => (why.clone(), None, Some(*installed_ms)),
            Phase::Rebooting { at_ms } => (None, None, Some(*at_ms)),
            Phase::Failed { error, at_ms } => (None, Some(error.clone()), Some(*at_ms)),
        };
        json!({
            "bundle": p.bundle.display().to_string(),
            "state": p.phase.name(),
            "requested": crate::rfc3339(p.requested_ms),
            "since": since.map_or(Value::Null, crate::rfc3339),
            "waiting_for": waiting_for,
            "error": error,
        })
    }
}

/// The installer seam: the real one is RAUC, tests hand in a fake.
pub trait Installer: Send + Sync + 'static {
    /// Installs `bundle` into the inactive slot and marks it to boot next; blocks until done.
    fn install(&self, bundle: &Path) -> Result<(), String>;
    /// Asks the system to reboot (returns once asked; systemd then stops the daemon).
    fn reboot(&self) -> Result<(), String>;
}

/// `rauc install BUNDLE` (through the RAUC service on D-Bus; the layer's D-Bus policy lets the
/// `lectern` user call it) and `systemctl reboot`.
#[derive(Debug, Clone)]
pub struct Rauc {
    pub rauc: PathBuf,
    pub systemctl: PathBuf,
}

impl Default for Rauc {
    fn default() -> Rauc {
        Rauc { rauc: "rauc".into(), systemctl: "systemctl".into() }
    }
}

/// Runs a command to its end; an error says which command, its exit status and the last lines
/// it printed on stderr (RAUC says there why a bundle was refused).
fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = tail[tail.len().saturating_sub(3)..].join(" | ");
    Err(format!("{what} failed ({}): {tail}", out.status))
}

impl Installer for Rauc {
    fn install(&self, bundle: &Path) -> Result<(), String> {
        run(Command::new(&self.rauc).arg("install").arg(bundle))
    }

    fn reboot(&self) -> Result<(), String> {
        run(Command::new(&self.systemctl).arg("reboot"))
    }
}

/// The shell around [`UpdateGate`]: checks requests, runs the installer on its thread, polls it.
pub struct Updater {
    gate: UpdateGate,
    installer: Arc<dyn Installer>,
    done: Option<Receiver<Result<(), String>>>,
    /// The last reason logged for waiting, so the log gets a line per change, not per turn.
    logged_wait: Option<String>,
}

impl Updater {
    pub fn new(installer: Arc<dyn Installer>) -> Updater {
        Updater { gate: UpdateGate::default(), installer, done: None, logged_wait: None }
    }

    /// `lectern update BUNDLE`: the bundle must be an absolute path to a file the daemon can see
    /// (the CLI makes it absolute; with the unit's `PrivateTmp=` a bundle under /tmp is not
    /// visible to the daemon, hence the check). Starts at once when the box is idle.
    pub fn request(&mut self, bundle: &Path, busy: &Busy, now_ms: i64) -> Result<Value, String> {
        if !bundle.is_absolute() {
            return Err(format!("update bundle {}: not an absolute path", bundle.display()));
        }
        match std::fs::metadata(bundle) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(format!("update bundle {}: not a file", bundle.display())),
            Err(e) => {
                return Err(format!(
                    "update bundle {}: {e} (the daemon cannot see it; copy bundles to the data partition, e.g. /data/updates, not /tmp)",
                    bundle.display()
                ))
            }
        }
        self.gate.request(bundle.to_owned(), now_ms)?;
        log::info!(target: "lecternd", "update {}: requested", bundle.display());
        self.logged_wait = None;
        self.turn(busy, now_ms);
        Ok(self.gate.json())
    }

    /// One main-loop turn: collects the installer's result and starts what is due.
    pub fn turn(&mut self, busy: &Busy, now_ms: i64) {
        if let Some(rx) = &self.done {
            let result = match rx.try_recv() {
                Ok(r) => Some(r),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some(Err("the installer thread ended without a result".to_owned())),
            };
            if let Some(r) = result {
                self.done = None;
                self.finish_install(r, now_ms);
            }
        }
        match self.gate.turn(busy, now_ms) {
            Some(Action::Install(bundle)) => {
                log::warn!(target: "lecternd", "update {}: installing into the inactive slot (rauc install)", bundle.display());
                let (tx, rx) = channel();
                let installer = self.installer.clone();
                let spawned = std::thread::Builder::new().name("update".into()).spawn(move || {
                    let _ = tx.send(installer.install(&bundle));
                });
                match spawned {
                    Ok(_) => self.done = Some(rx),
                    Err(e) => self.finish_install(Err(format!("cannot start the installer thread: {e}")), now_ms),
                }
            }
            Some(Action::Reboot) => {
                log::warn!(target: "lecternd", "update installed and the box is idle: rebooting into the new slot");
                if let Err(e) = self.installer.reboot() {
                    log::error!(target: "lecternd", "update: cannot reboot: {e}");
                    self.gate.reboot_failed(e, now_ms);
                }
            }
            None => self.log_wait(),
        }
    }

    fn finish_install(&mut self, result: Result<(), String>, now_ms: i64) {
        match &result {
            Ok(()) => log::info!(target: "lecternd", "update installed; the reboot waits for the box to be idle"),
            Err(e) => log::error!(target: "lecternd", "update failed, the running slot stays: {e}"),
        }
        self.gate.installed(result, now_ms);
    }

    fn log_wait(&mut self) {
        let why = match self.gate.pending().map(|p| &p.phase) {
            Some(Phase::Deferred { why }) => Some(format!("install deferred: {why}")),
            Some(Phase::RebootPending { why: Some(why), .. }) => Some(format!("reboot deferred: {why}")),
            _ => None,
        };
        if why.is_some() && why != self.logged_wait {
            log::info!(target: "lecternd", "update: {}", why.as_deref().unwrap_or_default());
        }
        self.logged_wait = why;
    }

    pub fn status_json(&self) -> Value {
        self.gate.json()
    }

    /// Tests: waits for the installer thread's result (bounded) and takes it.
    #[cfg(test)]
    fn wait_installed(&mut self, now_ms: i64) {
        let rx = self.done.take().expect("an install is running");
        let r = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the fake installer answers");
        self.finish_install(r, now_ms);
    }
}

impl crate::Daemon {
    fn update_busy(&self, now_ms: i64) -> Busy {
        Busy::of(self.recorder.state(), self.stitching.as_deref(), self.recorder.schedule(), self.power_fail, now_ms)
    }

    /// The `update` control request.
    pub(crate) fn update_request(&mut self, bundle: &str) -> Result<Value, String> {
        let now = self.clock.now_ms();
        let busy = self.update_busy(now);
        self.updater.request(Path::new(bundle), &busy, now)
    }

    /// One main-loop turn of the updater (after the stitcher had its turn, so a stitch that is
    /// about to start keeps the update waiting).
    pub(crate) fn update_turn(&mut self) {
        let now = self.clock.now_ms();
        let busy = self.update_busy(now);
        self.updater.turn(&busy, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lectern_recorder::{Event, Recorder, Settings};
    use std::sync::Mutex;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_795_683_600_000;

    /// An installer that records what it was asked and answers with what the test set.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
        install_error: Mutex<Option<String>>,
        reboot_error: Mutex<Option<String>>,
    }

    impl Installer for Fake {
        fn install(&self, bundle: &Path) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("install {}", bundle.display()));
            self.install_error.lock().unwrap().clone().map_or(Ok(()), Err)
        }
        fn reboot(&self) -> Result<(), String> {
            self.calls.lock().unwrap().push("reboot".into());
            self.reboot_error.lock().unwrap().clone().map_or(Ok(()), Err)
        }
    }

    fn calls(f: &Fake) -> Vec<String> {
        f.calls.lock().unwrap().clone()
    }

    fn bundle() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lectern-bundle.raucb");
        std::fs::write(&p, b"bundle").unwrap();
        (dir, p)
    }

    fn slot(start_ms: i64) -> Slot {
        Slot { uid: "lecture-1".into(), title: "Thermodynamics".into(), start_ms, end_ms: start_ms + 90 * MIN }
    }

    /// Drives a real recorder (sans-IO) so the busy states are the ones the daemon sees.
    fn recorder_in(state: &str) -> Recorder {
        let mut r = Recorder::new(Settings { provisioned: true, ..Settings::default() });
        let _ = r.handle(Event::ClockTrust(true), T0);
        match state {
            "idle" => {}
            "recording" => {
                let _ = r.handle(Event::CliStart { title: Some("Guest talk".into()) }, T0);
            }
            "retrying" => {
                let _ = r.handle(Event::CliStart { title: None }, T0);
                let _ = r.handle(Event::CaptureFailed { message: "vsrc: no camera".into() }, T0);
            }
            "power_lost" => {
                let _ = r.handle(Event::CliStart { title: None }, T0);
                let _ = r.handle(Event::PowerFail, T0);
            }
            other => panic!("no recorder state {other}"),
        }
        assert_eq!(r.state().name(), state, "the test's recorder is not in the state it set up");
        r
    }

    #[test]
    fn busy_reasons_from_recorder_states_stitcher_and_schedule() {
        let check = |state: &str, stitching: Option<&str>, next: Option<i64>, want: Option<&str>| {
            let r = recorder_in(state);
            let schedule: Vec<Slot> = next.map(slot).into_iter().collect();
            let busy = Busy::of(r.state(), stitching, &schedule, false, T0);
            let got = busy.reason(T0);
            match want {
                None => assert_eq!(got, None, "{state} {stitching:?} {next:?}"),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.starts_with(w)), "{state} {stitching:?} {next:?}: {got:?}, want {w}..."),
            }
        };
        check("idle", None, None, None);
        check("recording", None, None, Some("recording adhoc-"));
        check("retrying", None, None, Some("retrying adhoc-"));
        check("power_lost", None, None, Some("power_lost adhoc-"));
        check("idle", Some("lecture-1"), None, Some("stitching lecture-1"));
        check("idle", None, Some(T0 + 5 * MIN), Some("a scheduled recording starts in 5 min"));
        check("idle", None, Some(T0 + LECTURE_MARGIN_MS - 1), Some("a scheduled recording starts in 15 min"));
        check("idle", None, Some(T0 + LECTURE_MARGIN_MS), None);
        check("idle", None, Some(T0 + 3 * 60 * MIN), None);
        // A lecture that already started and is not being recorded (stopped by hand) holds nothing.
        check("idle", None, Some(T0 - 10 * MIN), None);
        let failing = Busy::of(&State::Idle, None, &[], true, T0);
        assert_eq!(failing.reason(T0).as_deref(), Some("the power-fail line is asserted"));
    }

    #[test]
    fn an_update_waits_for_the_recording_and_the_reboot_waits_for_the_next_one() {
        let (_dir, b) = bundle();
        let fake = Arc::new(Fake::default());
        let mut u = Updater::new(fake.clone());
        let recording = Busy::of(recorder_in("recording").state(), None, &[], false, T0);
        let idle = Busy::default();

        let v = u.request(&b, &recording, T0).unwrap();
        assert_eq!(v["state"], "deferred");
        assert!(v["waiting_for"].as_str().unwrap().starts_with("recording adhoc-"), "{v}");
        for minute in 1..=90 {
            u.turn(&recording, T0 + minute * MIN);
        }
        assert!(calls(&fake).is_empty(), "nothing may run during a recording: {:?}", calls(&fake));

        // The lecture ends: the install starts on the next turn.
        u.turn(&idle, T0 + 91 * MIN);
        assert_eq!(u.status_json()["state"], "installing");
        // A new recording starts while rauc writes the other slot: the install is not stopped,
        // and the reboot waits for the recording to end.
        u.wait_installed(T0 + 95 * MIN);
        assert_eq!(u.status_json()["state"], "reboot_pending");
        for minute in 95..=180 {
            u.turn(&recording, T0 + minute * MIN);
        }
        let v = u.status_json();
        assert_eq!((v["state"].as_str(), v["waiting_for"].as_str().map(|s| &s[..10])), (Some("reboot_pending"), Some("recording ")), "{v}");
        assert_eq!(calls(&fake), vec![format!("install {}", b.display())]);
        u.turn(&idle, T0 + 181 * MIN);
        assert_eq!(calls(&fake), vec![format!("install {}", b.display()), "reboot".into()]);
        assert_eq!(u.status_json()["state"], "rebooting");
    }

    #[test]
    fn an_idle_box_installs_at_once_unless_a_lecture_is_about_to_start() {
        let (_dir, b) = bundle();
        let fake = Arc::new(Fake::default());
        let mut u = Updater::new(fake.clone());
        let soon = Busy { next_start_ms: Some(T0 + 10 * MIN), ..Busy::default() };
        assert_eq!(u.request(&b, &soon, T0).unwrap()["waiting_for"], "a scheduled recording starts in 10 min");
        assert!(calls(&fake).is_empty());

        let (_dir2, b2) = bundle();
        let v = u.request(&b2, &Busy::default(), T0 + MIN).unwrap();
        assert_eq!((v["state"].as_str(), v["bundle"].as_str()), (Some("installing"), b2.to_str()), "a deferred update is replaced by a newer request");
        u.wait_installed(T0 + 2 * MIN);
        assert_eq!(u.request(&b, &Busy::default(), T0 + 3 * MIN).unwrap_err().split(';').next(), Some(&*format!("update {} is installed and waits for its reboot", b2.display())));
        u.turn(&Busy::default(), T0 + 3 * MIN);
        assert_eq!(calls(&fake), vec![format!("install {}", b2.display()), "reboot".into()]);
    }

    #[test]
    fn a_failed_install_keeps_the_slot_and_says_why() {
        let (_dir, b) = bundle();
        let fake = Arc::new(Fake::default());
        *fake.install_error.lock().unwrap() = Some("rauc install: Compatible mismatch".into());
        let mut u = Updater::new(fake.clone());
        u.request(&b, &Busy::default(), T0).unwrap();
        let err = u.request(&b, &Busy::default(), T0).unwrap_err();
        assert!(err.contains("is installing"), "{err}");
        u.wait_installed(T0 + MIN);
        let v = u.status_json();
        assert_eq!((v["state"].as_str(), v["error"].as_str()), (Some("failed"), Some("rauc install: Compatible mismatch")));
        for minute in 2..10 {
            u.turn(&Busy::default(), T0 + minute * MIN);
        }
        assert_eq!(calls(&fake).len(), 1, "a failed install is not retried by itself, and never rebooted into: {:?}", calls(&fake));
        // A new request after a failure is taken.
        *fake.install_error.lock().unwrap() = None;
        assert_eq!(u.request(&b, &Busy::default(), T0 + 10 * MIN).unwrap()["state"], "installing");
    }

    #[test]
    fn a_failed_reboot_request_is_reported() {
        let (_dir, b) = bundle();
        let fake = Arc::new(Fake::default());
        *fake.reboot_error.lock().unwrap() = Some("Access denied".into());
        let mut u = Updater::new(fake.clone());
        u.request(&b, &Busy::default(), T0).unwrap();
        u.wait_installed(T0 + MIN);
        u.turn(&Busy::default(), T0 + MIN);
        let v = u.status_json();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["error"], "installed, but the reboot request failed: Access denied");
    }

    #[test]
    fn bad_bundle_paths_are_refused_with_the_path() {
        let fake = Arc::new(Fake::default());
        let mut u = Updater::new(fake.clone());
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.raucb");
        let cases: [(&Path, &str); 3] = [
            (Path::new("relative.raucb"), "update bundle relative.raucb: not an absolute path"),
            (dir.path(), &format!("update bundle {}: not a file", dir.path().display())),
            (&missing, &format!("update bundle {}: No such file or directory", missing.display())),
        ];
        for (path, want) in cases {
            let err = u.request(path, &Busy::default(), T0).unwrap_err();
            assert!(err.starts_with(want), "{err}\nwant {want}");
        }
        assert_eq!(u.status_json(), Value::Null);
        assert!(calls(&fake).is_empty());
    }

    #[test]
    fn the_real_installer_reports_the_command_and_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let rauc = dir.path().join("rauc");
        std::fs::write(&rauc, "#!/bin/sh\necho \"installing $2\" >&2\necho 'LastError: Compatible mismatch' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&rauc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let real = Rauc { rauc: rauc.clone(), systemctl: dir.path().join("no-systemctl") };
        let err = real.install(Path::new("/data/b.raucb")).unwrap_err();
        assert!(err.contains("\"install\" \"/data/b.raucb\"") && err.ends_with("installing /data/b.raucb | LastError: Compatible mismatch"), "{err}");
        let err = real.reboot().unwrap_err();
        assert!(err.starts_with("cannot run") && err.contains("no-systemctl"), "{err}");
    }
}
