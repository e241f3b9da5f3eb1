//! The lab's one seam: everything the runner does to a board goes through [`Transport`] — run a
//! command on it, copy a file off it, switch its supply with the relay, drive its button and
//! power-fail lines, ask it to reboot. [`Ssh`] is the real one (the system `ssh` binary, rig
//! commands run on the controller); `super::fake::FakeBoard` is the one CI tests the runner with.
//! This file also owns the rig specs (`--relay usbrelay:ID`, `--button pinctrl:5`, ...) and the
//! bounded process runner both implementations use, so a hung command is killed, never waited on.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A GPIO line of the board that the rig drives (docs/hil.md, "GPIO loopback").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Button,
    PowerFail,
}

impl Line {
    /// The `lectern sim ...` words that put the simulated line into this state.
    pub fn sim_words(self, asserted: bool) -> &'static str {
        match (self, asserted) {
            (Line::Button, true) => "sim button down",
            (Line::Button, false) => "sim button up",
            (Line::PowerFail, true) => "sim powerfail on",
            (Line::PowerFail, false) => "sim powerfail off",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Line::Button => "--button",
            Line::PowerFail => "--powerfail",
        }
    }
}

/// What a command on the board printed; it exited 0 unless it came from [`Transport::run`]'s
/// caller asking for the raw result.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Everything that can go wrong in the lab, each variant naming what and where.
#[derive(Debug)]
pub enum LabError {
    /// The board did not answer at all: SSH could not connect (exit 255), or it is powered off.
    Unreachable { host: String, detail: String },
    /// A command ran past its limit and was killed (with its process group).
    Timeout { what: String, after: Duration },
    /// A command ran and exited non-zero.
    Failed { what: String, code: Option<i32>, stderr: String },
    /// A rig action (relay, GPIO line) could not be done, or is not configured.
    Rig { action: String, detail: String },
    /// The relay was switched off and the board kept answering.
    StillPowered { host: String, after: Duration },
    /// After power-on or a reboot the board did not answer with a new boot id in time.
    DidNotComeBack { host: String, after: Duration, last: String },
    /// The board kept answering with the boot id it had before the reboot.
    NotRebooted { host: String, after: Duration },
    /// The board answers but `lectern status` does not (the daemon is down or wedged).
    DaemonDown { host: String, after: Duration, last: String },
    /// The board is not in a state the scenario can start from.
    Precondition(String),
    /// What the scenario exists to find: the daemon or the card broke a promise.
    Check(String),
    /// A local file or process operation failed.
    Io { what: String, source: std::io::Error },
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabError::Unreachable { host, detail } => write!(f, "{host} is unreachable: {detail}"),
            LabError::Timeout { what, after } => write!(f, "{what} did not finish within {after:?} and was killed"),
            LabError::Failed { what, code, stderr } => {
                let code = code.map_or("a signal".to_owned(), |c| format!("exit status {c}"));
                write!(f, "{what} failed with {code}: {}", stderr.trim())
            }
            LabError::Rig { action, detail } => write!(f, "rig: {action}: {detail}"),
            LabError::StillPowered { host, after } => write!(
                f,
                "{host} still answered {after:?} after the relay cut its power: is the relay in the board's supply line, and is its spec right (on = powered)?"
            ),
            LabError::DidNotComeBack { host, after, last } => {
                write!(f, "{host} did not come back with a new boot id within {after:?}; last: {last}")
            }
            LabError::NotRebooted { host, after } => {
                write!(f, "{host} kept its boot id for {after:?}: it never rebooted (power never cut, or the reboot was refused)")
            }
            LabError::DaemonDown { host, after, last } => {
                write!(f, "lecternd on {host} did not answer `lectern status` within {after:?}; last: {last}")
            }
            LabError::Precondition(m) => write!(f, "cannot start: {m}"),
            LabError::Check(m) => write!(f, "check failed: {m}"),
            LabError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for LabError {}

impl LabError {
    /// The board did not answer (as opposed to answering with a failure).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, LabError::Unreachable { .. } | LabError::Timeout { .. })
    }
}

/// The lab's seam. Every call is bounded: `timeout` (or the implementation's own limit for rig
/// actions) ends it with [`LabError::Timeout`].
pub trait Transport {
    /// Who this is, for messages: `pi@10.0.0.5`, `fake board in /tmp/...`.
    fn name(&self) -> String;
    /// Runs a shell command on the board; a non-zero exit is `Ok` with its code (the caller
    /// decides), an unreachable board is [`LabError::Unreachable`].
    fn run(&mut self, cmd: &str, timeout: Duration) -> Result<Output, LabError>;
    /// Runs `cmd` on the board and streams its stdout into `local`: how a file is copied off the
    /// board (`cat` as the daemon's user: the media is mode 0600, so `scp` cannot read it).
    fn fetch(&mut self, cmd: &str, local: &Path, timeout: Duration) -> Result<(), LabError>;
    /// Switches the board's supply with the relay: `false` cuts it.
    fn power(&mut self, on: bool) -> Result<(), LabError>;
    /// Asserts or releases one of the board's input lines through the GPIO loopback.
    fn line(&mut self, line: Line, asserted: bool) -> Result<(), LabError>;
    /// Asks the board for a clean reboot; returns once asked (the board may still be up).
    fn reboot(&mut self) -> Result<(), LabError>;
}

/// Runs `cmd` and turns a non-zero exit into [`LabError::Failed`].
pub fn run_ok(t: &mut dyn Transport, cmd: &str, timeout: Duration) -> Result<String, LabError> {
    let out = t.run(cmd, timeout)?;
    if out.code != Some(0) {
        return Err(LabError::Failed { what: format!("`{cmd}` on {}", t.name()), code: out.code, stderr: out.stderr });
    }
    Ok(out.stdout)
}

/// Quotes a word for a POSIX shell: `'...'` with every `'` written as `'\''`.
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:@%+,".contains(&b)) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Runs a process with a time limit. It gets its own process group so a timeout kills whatever
/// it started too (a `sh -c` whose `sleep` kept our pipes open would otherwise hang the reader);
/// stdout goes to `stdout_to` when given, else it is collected.
pub fn run_bounded(mut cmd: Command, what: &str, timeout: Duration, stdout_to: Option<&Path>) -> Result<Output, LabError> {
    use std::os::unix::process::CommandExt;
    let io = |source| LabError::Io { what: what.to_owned(), source };
    cmd.stdin(Stdio::null()).stderr(Stdio::piped()).process_group(0);
    match stdout_to {
        Some(p) => cmd.stdout(std::fs::File::create(p).map_err(|e| LabError::Io { what: format!("create {}", p.display()), source: e })?),
        None => cmd.stdout(Stdio::piped()),
    };
    let mut child = cmd.spawn().map_err(io)?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let out_rx = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err_rx = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().map_err(io)? {
            break st;
        }
        if start.elapsed() >= timeout {
            kill_group(child.id(), "KILL");
            let _ = child.wait();
            return Err(LabError::Timeout { what: what.to_owned(), after: timeout });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A grandchild that left the group may still hold a pipe: do not wait for it forever.
    let collect = |rx: std::sync::mpsc::Receiver<String>| rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    Ok(Output { code: status.code(), stdout: collect(out_rx), stderr: collect(err_rx) })
}

/// Runs `cmd` with its stdout going into `local`. `classify` sees the result first (ssh's exit
/// 255). On any failure the partial file is removed, so a file that exists is a complete copy.
pub(crate) fn fetch_into(
    cmd: Command,
    what: &str,
    timeout: Duration,
    local: &Path,
    classify: impl FnOnce(Output) -> Result<Output, LabError>,
) -> Result<(), LabError> {
    let r = run_bounded(cmd, what, timeout, Some(local)).and_then(classify).and_then(|out| match out.code {
        Some(0) => Ok(()),
        code => Err(LabError::Failed { what: what.to_owned(), code, stderr: out.stderr }),
    });
    if r.is_err() {
        let _ = std::fs::remove_file(local);
    }
    r
}

/// Sends a signal to a process group (the group's id is its leader's pid).
pub(crate) fn kill_group(pgid: u32, signal: &str) {
    // std has no kill(2); the `kill` tool is on every Debian machine (as in the harness's lib.rs).
    let _ = Command::new("kill").arg(format!("-{signal}")).arg("--").arg(format!("-{pgid}")).stderr(Stdio::null()).status();
}

/// One rig output as two shell commands run on the controller (the machine running `lab`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Action {
    /// Powers the board (relay) or asserts the line (button pressed, power failing).
    pub on: String,
    pub off: String,
}

/// How one input line of the board is driven.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineDrive {
    /// From the controller through the loopback wiring.
    Rig(Action),
    /// The board runs the sim backend: `lectern sim ...` on the board itself (a board without
    /// loopback wiring; proves everything but the GPIO path).
    Sim,
}

/// Parses a relay spec: `usbrelay:ID` (a USB HID relay through the `usbrelay` tool, `ID=1`
/// powers the board through the normally-open contact), `pinctrl:N` (a relay module on the
/// controller's GPIO N, high = energised = powered), `exec:PROGRAM` (`PROGRAM on|off`).
pub fn parse_relay(spec: &str) -> Result<Action, String> {
    match spec.split_once(':') {
        Some(("usbrelay", id)) if !id.is_empty() => {
            Ok(Action { on: format!("usbrelay {}", sh_quote(&format!("{id}=1"))), off: format!("usbrelay {}", sh_quote(&format!("{id}=0"))) })
        }
        Some(("pinctrl", n)) if n.parse::<u8>().is_ok() => Ok(Action { on: format!("pinctrl set {n} op dh"), off: format!("pinctrl set {n} op dl") }),
        Some(("exec", prog)) if !prog.is_empty() => Ok(exec_action(prog)),
        _ => Err(format!("--relay {spec:?}: expected usbrelay:ID, pinctrl:GPIO or exec:PROGRAM")),
    }
}

/// Parses a line spec: `pinctrl:N` (the controller's GPIO N as an open drain: driven low to
/// assert, an input with no pull to release, so it never drives the board's pin high),
/// `exec:PROGRAM` (`PROGRAM on|off`), or `sim`.
pub fn parse_line(line: Line, spec: &str) -> Result<LineDrive, String> {
    match spec.split_once(':') {
        _ if spec == "sim" => Ok(LineDrive::Sim),
        Some(("pinctrl", n)) if n.parse::<u8>().is_ok() => {
            Ok(LineDrive::Rig(Action { on: format!("pinctrl set {n} op dl"), off: format!("pinctrl set {n} ip pn") }))
        }
        Some(("exec", prog)) if !prog.is_empty() => Ok(LineDrive::Rig(exec_action(prog))),
        _ => Err(format!("{} {spec:?}: expected pinctrl:GPIO, exec:PROGRAM or sim", line.flag())),
    }
}

fn exec_action(prog: &str) -> Action {
    Action { on: format!("{} on", sh_quote(prog)), off: format!("{} off", sh_quote(prog)) }
}

/// The rig around one board: its relay and its two loopback lines, each optional (a scenario
/// that needs a missing one says which flag it needs).
#[derive(Clone, Debug, Default)]
pub struct Rig {
    pub relay: Option<Action>,
    pub button: Option<LineDrive>,
    pub power_fail: Option<LineDrive>,
}

/// How long a rig command may take (a USB relay answers in milliseconds).
const RIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a rig command on the controller.
fn rig_command(action: &str, cmd: &str) -> Result<(), LabError> {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    let out = run_bounded(c, &format!("rig command `{cmd}`"), RIG_TIMEOUT, None)?;
    if out.code != Some(0) {
        return Err(LabError::Rig { action: action.to_owned(), detail: format!("`{cmd}` exited {:?}: {}", out.code, out.stderr.trim()) });
    }
    Ok(())
}

/// The real transport: the system `ssh` for the board, rig commands on the controller.
pub struct Ssh {
    /// `user@host` or an alias from `~/.ssh/config` (keys, ports and jump hosts live there).
    pub host: String,
    /// The ssh program (tests put a stand-in here).
    pub program: String,
    /// Options before the host: no password prompts, a short connect timeout, and keep-alives so
    /// a board that loses power mid-command ends the session within seconds.
    pub options: Vec<String>,
    pub rig: Rig,
    /// The CLI prefix used for `sim` lines (`lectern --config ...`).
    pub lectern: String,
    /// The reboot command (`sudo -n systemctl reboot`).
    pub reboot_cmd: String,
    /// What we last switched the relay to; `None` before the first switch (assumed powered).
    powered: Option<bool>,
}

impl Ssh {
    pub fn new(host: &str, rig: Rig, lectern: &str) -> Result<Ssh, String> {
        if host.is_empty() || host.starts_with('-') {
            return Err(format!("--host {host:?}: expected user@host or an ssh alias"));
        }
        let options = ["BatchMode=yes", "ConnectTimeout=5", "ServerAliveInterval=2", "ServerAliveCountMax=3"]
            .iter()
            .flat_map(|o| ["-o".to_owned(), (*o).to_owned()])
            .collect();
        Ok(Ssh {
            host: host.to_owned(),
            program: "ssh".into(),
            options,
            rig,
            lectern: lectern.to_owned(),
            reboot_cmd: "sudo -n systemctl reboot".into(),
            powered: None,
        })
    }

    /// The full argv for running `cmd` on the board (ssh joins its command words with spaces and
    /// hands them to the remote shell, so `cmd` goes as one word, quoted by the caller).
    pub fn argv(&self, cmd: &str) -> Vec<String> {
        let mut v = vec![self.program.clone()];
        v.extend(self.options.iter().cloned());
        v.push(self.host.clone());
        v.push(cmd.to_owned());
        v
    }

    fn command(&self, cmd: &str) -> Command {
        let argv = self.argv(cmd);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    fn classify(&self, out: Output) -> Result<Output, LabError> {
        // ssh exits 255 for its own failures (connect, auth, the connection dropped); a remote
        // command that itself exits 255 is misread as unreachable, which no command here does.
        if out.code == Some(255) {
            return Err(LabError::Unreachable { host: self.host.clone(), detail: out.stderr.trim().to_owned() });
        }
        Ok(out)
    }
}

impl Transport for Ssh {
    fn name(&self) -> String {
        self.host.clone()
    }

    fn run(&mut self, cmd: &str, timeout: Duration) -> Result<Output, LabError> {
        let what = format!("`{cmd}` on {}", self.host);
        let out = run_bounded(self.command(cmd), &what, timeout, None)?;
        self.classify(out)
    }

    fn fetch(&mut self, cmd: &str, local: &Path, timeout: Duration) -> Result<(), LabError> {
        let what = format!("`{cmd}` on {} into {}", self.host, local.display());
        fetch_into(self.command(cmd), &what, timeout, local, |out| self.classify(out))
    }

    fn power(&mut self, on: bool) -> Result<(), LabError> {
        let action = if on { "relay on (power the board)" } else { "relay off (cut the board's power)" };
        let relay = self.rig.relay.as_ref().ok_or_else(|| LabError::Rig { action: action.into(), detail: "no relay configured (--relay)".into() })?;
        rig_command(action, if on { &relay.on } else { &relay.off })?;
        self.powered = Some(on);
        Ok(())
    }

    fn line(&mut self, line: Line, asserted: bool) -> Result<(), LabError> {
        let drive = match line {
            Line::Button => &self.rig.button,
            Line::PowerFail => &self.rig.power_fail,
        };
        let action = format!("{line:?} {}", if asserted { "asserted" } else { "released" });
        match drive.clone() {
            None => Err(LabError::Rig { action, detail: format!("no {line:?} line configured ({})", line.flag()) }),
            Some(LineDrive::Rig(a)) => rig_command(&action, if asserted { &a.on } else { &a.off }),
            // A simulated line lives in the daemon: with the board off there is nothing to drive,
            // and it comes back released, as a real supervisor line does when power returns.
            Some(LineDrive::Sim) if self.powered == Some(false) => Ok(()),
            Some(LineDrive::Sim) => {
                let cmd = format!("{} {}", self.lectern, line.sim_words(asserted));
                run_ok(self, &cmd, RIG_TIMEOUT).map(drop)
            }
        }
    }

    fn reboot(&mut self) -> Result<(), LabError> {
        let cmd = self.reboot_cmd.clone();
        match self.run(&cmd, Duration::from_secs(30)) {
            Ok(out) if out.code == Some(0) => Ok(()),
            // The session may die with the board before ssh hears the command's exit.
            Err(e) if e.is_unreachable() => Ok(()),
            Ok(out) => Err(LabError::Failed { what: format!("`{cmd}` on {}", self.host), code: out.code, stderr: out.stderr }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_leaves_plain_words_and_quotes_the_rest() {
        for (word, want) in [
            ("/var/lib/lectern/a.mp4", "/var/lib/lectern/a.mp4"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("$(reboot)", "'$(reboot)'"),
        ] {
            assert_eq!(sh_quote(word), want, "{word:?}");
        }
    }

    #[test]
    fn rig_specs_parse_into_commands_or_name_what_was_wrong() {
        assert_eq!(parse_relay("usbrelay:HURTM_1").unwrap(), Action { on: "usbrelay HURTM_1=1".into(), off: "usbrelay HURTM_1=0".into() });
        assert_eq!(parse_relay("pinctrl:23").unwrap().off, "pinctrl set 23 op dl");
        assert_eq!(parse_relay("exec:/opt/rig/relay").unwrap().on, "/opt/rig/relay on");
        for bad in ["usbrelay:", "pinctrl:x", "gpio:5", ""] {
            assert!(parse_relay(bad).unwrap_err().contains("--relay"), "{bad}");
        }
        assert_eq!(
            parse_line(Line::Button, "pinctrl:5").unwrap(),
            LineDrive::Rig(Action { on: "pinctrl set 5 op dl".into(), off: "pinctrl set 5 ip pn".into() })
        );
        assert_eq!(parse_line(Line::PowerFail, "sim").unwrap(), LineDrive::Sim);
        assert!(parse_line(Line::PowerFail, "pinctrl:").unwrap_err().starts_with("--powerfail"));
    }
}
