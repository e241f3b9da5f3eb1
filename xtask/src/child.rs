//! Child processes the benchmark starts (lecternd, the Opencast stand-in, pyca): their output is
//! copied to a log file through a pipe, and they are stopped by pid when dropped.
//!
//! The pipe matters for the measurement: if a child wrote its log straight to a file, those
//! bytes would show up in its `/proc/PID/io` write_bytes and inflate its write amplification. Here
//! the xtask process does the file writes, and the child only writes to a pipe (which is not
//! storage I/O). In production lecternd logs to journald, which is also not charged to it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A started process that is terminated (SIGTERM, then SIGKILL) when dropped.
pub struct Managed {
    name: String,
    child: Option<Child>,
}

impl Managed {
    /// Starts `cmd` with stdout and stderr copied to `log` by two small threads.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Managed> {
        let file = File::create(log).with_context(|| log.display().to_string())?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {name}: {cmd:?}"))?;
        let mut out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let mut f1 = file.try_clone()?;
        let mut f2 = file;
        std::thread::spawn(move || std::io::copy(&mut out, &mut f1));
        std::thread::spawn(move || std::io::copy(&mut err, &mut f2));
        Ok(Managed {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` once the process has exited (and is reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM, up to `grace` for a clean exit, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        signal(child.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < grace {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "xtask: {} did not exit within {grace:?} of SIGTERM; killing it",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(10));
    }
}

/// Sends a signal to one process by pid (std has no kill(2) with a signal number; `kill` is on
/// every Debian machine, and the hil-tests harness does the same).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}
