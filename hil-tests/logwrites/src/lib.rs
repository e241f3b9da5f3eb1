//! Every crash state of the journal's commit protocol, at flush/FUA granularity of one kernel's
//! ext4: the guest workload ([`workload`]) drives the real journal on ext4 over the kernel's
//! `dm-log-writes` target inside a QEMU TCG guest ([`guest`]); the host reads the write log
//! ([`log`]), rebuilds the disk as it stood at every FLUSH, FUA and MARK entry, loop-mounts it
//! (ext4 replays its own journal) and holds the journal, after its start-up recovery, to every
//! promise announced before that point ([`check`], [`promise`]).
//!
//! Entry point: [`run`]; command `crash-states` (src/bin/crash-states.rs); model and limits in
//! docs/powercut-harness.md, "Every crash state: dm-log-writes".

pub mod check;
pub mod guest;
pub mod log;
pub mod promise;
pub mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::promise::{Promise, GUEST_PREFIX};

/// Lowercase hex SHA-256 of a byte slice.
pub fn hex_sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// How a run is shaped.
#[derive(Clone, Debug)]
pub struct Options {
    /// The guest workload binary (`logwrites-workload`, built for this host).
    pub workload: PathBuf,
    /// Where the Debian kernel is unpacked and kept between runs (gitignored: under `target/`).
    pub cache: PathBuf,
    /// `LECTERN_JOURNAL_FAULT` for the guest's journal (harness self-test only).
    pub fault: Option<String>,
    /// How long the guest may take from boot to power-off.
    pub guest_timeout: Duration,
    /// Keep the images and the console log here instead of a temporary directory.
    pub keep: Option<PathBuf>,
    /// The reorder variant (off by default).
    pub reorder: Reorder,
}

impl Options {
    /// Defaults: the workload next to the running executable, the cache in the workspace's
    /// `target/logwrites-cache`.
    pub fn new(workload: PathBuf) -> Options {
        Options { workload, cache: default_cache(), fault: None, guest_timeout: Duration::from_secs(300), keep: None, reorder: Reorder::default() }
    }
}

/// Where the kernel is kept: the shared guest harness's cache (`lectern_guest::default_cache`:
/// `LECTERN_GUEST_CACHE` or `LECTERN_LOGWRITES_CACHE`, else `target/logwrites-cache`).
pub fn default_cache() -> PathBuf {
    lectern_guest::default_cache()
}

/// One crash state that broke an invariant (or could not be checked at all).
#[derive(Clone, Debug)]
pub struct Failure {
    /// Index of the log entry the state ends with.
    pub entry: u64,
    pub kind: String,
    /// Promises made before this state.
    pub promises: usize,
    /// True for a broken invariant, false for a state that could not be checked (say, ext4 did
    /// not mount it).
    pub violation: bool,
    pub message: String,
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Entries in the write log.
    pub entries: usize,
    /// Crash states (FLUSH, FUA and MARK entries), by the kind of entry that ends them.
    pub states_by_kind: BTreeMap<String, usize>,
    pub states: usize,
    pub checked: usize,
    pub failures: Vec<Failure>,
    /// Promises the workload announced.
    pub promises: usize,
    /// Recovery actions over all states, by kind.
    pub repairs: BTreeMap<&'static str, usize>,
    /// States in which recovery had anything to do.
    pub states_repaired: usize,
    pub guest: Duration,
    pub replay: Duration,
    pub total: Duration,
}

/// Refuses to run where the pieces are missing, naming the first missing one; the integration
/// test skips loudly on this.
pub fn missing_prerequisite() -> Option<String> {
    for (tool, apt) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
        ("dmsetup", "dmsetup"),
        ("mkfs.ext4", "e2fsprogs"),
        ("apt-get", "apt"),
        ("dpkg-deb", "dpkg"),
        ("mount", "mount"),
    ] {
        if guest::which(tool).is_none() {
            return Some(format!("{tool} not found (apt: {apt})"));
        }
    }
    if effective_uid() != 0 {
        return Some("not root: loop-mounting the crash states needs root".into());
    }
    None
}

fn effective_uid() -> u32 {
    // Read from /proc so this crate needs no libc binding: the `Uid:` line's second field.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).and_then(|u| u.parse().ok()))
        .unwrap_or(u32::MAX)
}

/// Runs the guest, then checks every crash state. `Err` means the run itself failed (no guest,
/// a broken log); broken invariants are in [`Report::failures`].
pub fn run(opts: &Options) -> Result<Report> {
    let started = Instant::now();
    // The checker opens the journal in this process: a fault meant for the guest must not
    // reach it, or the check itself would run the broken protocol.
    ensure!(std::env::var_os(lectern_journal::FAULT_ENV).is_none(), "{} is set in the host process; pass the fault to the guest with --fault instead", lectern_journal::FAULT_ENV);
    let tmp = tempfile::tempdir()?;
    let dir = opts.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let kernel = guest::Kernel::fetch(&opts.cache)?;
    let (initramfs, base, data, log_img) = (dir.join("initramfs.cpio"), dir.join("base.img"), dir.join("data.img"), dir.join("log.img"));
    guest::build_initramfs(&guest::GuestSpec { kernel: &kernel, workload: &opts.workload, fault: opts.fault.as_deref() }, &initramfs)?;
    guest::make_base_image(&base, &dir)?;
    std::fs::copy(&base, &data)?;
    let guest_run = guest::boot(&kernel, &initramfs, &data, &log_img, opts.guest_timeout)?;
    guest::save_console(&dir.join("console.log"), &guest_run.console)?;
    let status = guest_run.console.lines().find_map(|l| l.find(GUEST_PREFIX).map(|i| l[i + GUEST_PREFIX.len()..].trim().to_owned()));
    match status.as_deref() {
        Some("rc=0") => {}
        other => bail!("the guest workload did not finish cleanly ({other:?}); console:\n{}", guest::tail(&guest_run.console, 40)),
    }
    let mut report = replay(&dir, opts.reorder)?;
    report.guest = guest_run.elapsed;
    report.total = started.elapsed();
    Ok(report)
}

/// Checks every crash state of a finished guest run kept in `dir` (`console.log`, `log.img`,
/// `base.img`, as [`run`] leaves them with [`Options::keep`]); the guest is not booted again.
pub fn replay(dir: &Path, reorder: Reorder) -> Result<Report> {
    let started = Instant::now();
    let console = std::fs::read_to_string(dir.join("console.log")).with_context(|| format!("read {}/console.log", dir.display()))?;
    let promises = promise::parse_console(&console)?;
    let mut report = Report { promises: promises.len(), ..Report::default() };
    // Each state is mounted and the journal fsyncs on it a few dozen times: on a disk-backed
    // loop device every one of those reaches the host's disk, on tmpfs none does (about 2.5x
    // faster here). The states are scratch either way.
    let scratch = match tempfile::tempdir_in("/dev/shm") {
        Ok(t) => t,
        Err(_) => tempfile::tempdir()?,
    };
    replay_and_check(&dir.join("log.img"), &dir.join("base.img"), scratch.path(), &promises, reorder, &mut report)?;
    report.replay = started.elapsed();
    report.total = report.replay;
    Ok(report)
}

/// Replays the log onto a copy of `base` and checks the state at every crash point; with
/// `reorder > 0`, also that many states per flush interval in which only a random subset of the
/// interval's writes reached the disk.
fn replay_and_check(log_img: &Path, base: &Path, dir: &Path, promises: &[Promise], reorder: Reorder, report: &mut Report) -> Result<()> {
    let log = log::Log::read(log_img)?;
    log::check_closed(&log)?;
    report.entries = log.entries.len();
    // Every promise must have exactly one mark, in order, or the states would be held to the
    // wrong promises.
    let marks: Vec<usize> = log.entries.iter().filter_map(|e| e.mark.as_deref().and_then(log::promise_index)).collect();
    ensure!(marks == (0..promises.len()).collect::<Vec<_>>(), "the log's promise marks {marks:?} do not match the {} promises on the console", promises.len());
    let (work, prev) = (dir.join("work.img"), dir.join("prev.img"));
    std::fs::copy(base, &work)?;
    std::fs::copy(base, &prev)?;
    let mut states = States { log_img, sectorsize: log.sectorsize, state_img: dir.join("state.img"), mnt: dir.join("mnt"), promises, report };
    std::fs::create_dir_all(&states.mnt)?;
    let mut replayer = log::Replayer::new(log_img, &work, log.sectorsize)?;
    let mut rng = reorder.seed | 1;
    let mut made = 0usize;
    // Plain writes since the last crash point: the ones a device could still reorder or lose.
    let mut pending: Vec<&log::Entry> = Vec::new();
    for e in &log.entries {
        replayer.apply(e)?;
        if let Some(n) = e.mark.as_deref().and_then(log::promise_index) {
            made = n + 1;
        }
        if !e.is_crash_point() {
            pending.push(e);
            continue;
        }
        if pending.len() > 1 {
            for _ in 0..reorder.per_interval {
                // Each pending write survives with probability ½ (xorshift64: seeded, stable).
                let subset: Vec<&log::Entry> = pending
                    .iter()
                    .copied()
                    .filter(|_| {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        rng & 1 == 1
                    })
                    .collect();
                if subset.is_empty() || subset.len() == pending.len() {
                    continue;
                }
                // Marks are crash points of their own, so none falls inside an interval: the
                // promises are those made before it.
                states.check(&prev, &subset, e.index, &format!("reordered {}/{}", subset.len(), pending.len()), "reordered", made)?;
            }
        }
        pending.clear();
        states.check(&work, &[], e.index, &e.kind(), &e.kind(), made)?;
        std::fs::copy(&work, &prev)?;
    }
    let _ = std::fs::remove_file(&states.state_img);
    Ok(())
}

/// The reorder variant's shape: states per flush interval (0 = in-order replay only) and seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reorder {
    pub per_interval: usize,
    pub seed: u64,
}

/// Builds, mounts and checks crash states, and counts them into the report.
struct States<'a> {
    log_img: &'a Path,
    sectorsize: u64,
    state_img: PathBuf,
    mnt: PathBuf,
    promises: &'a [Promise],
    report: &'a mut Report,
}

impl States<'_> {
    /// Checks the state `image` + `extra` writes, held to the first `made` promises.
    fn check(&mut self, image: &Path, extra: &[&log::Entry], entry: u64, label: &str, kind: &str, made: usize) -> Result<()> {
        let report = &mut *self.report;
        report.states += 1;
        *report.states_by_kind.entry(kind.to_owned()).or_default() += 1;
        let fail = |violation: bool, message: String| Failure { entry, kind: label.to_owned(), promises: made, violation, message };
        std::fs::copy(image, &self.state_img)?;
        if !extra.is_empty() {
            let mut r = log::Replayer::new(self.log_img, &self.state_img, self.sectorsize)?;
            for e in extra {
                r.apply(e)?;
            }
        }
        if let Err(err) = mount(&self.state_img, &self.mnt) {
            report.failures.push(fail(false, format!("ext4 does not mount this state: {err:#}")));
            return Ok(());
        }
        let outcome = check::check_state(&self.mnt.join("media"), &self.promises[..made], 1_900_000_000_000);
        let unmounted = umount(&self.mnt);
        report.checked += 1;
        match outcome {
            Ok(repairs) => {
                if !repairs.is_empty() {
                    report.states_repaired += 1;
                }
                for (k, n) in repairs {
                    *report.repairs.entry(k).or_default() += n;
                }
            }
            Err(err) => {
                let violation = err.downcast_ref::<lectern_hil_tests::powercut::Violation>().is_some();
                report.failures.push(fail(violation, format!("{err:#}")));
            }
        }
        unmounted
    }
}

fn mount(img: &Path, mnt: &Path) -> Result<()> {
    let out = Command::new("mount").args(["-t", "ext4", "-o", "loop"]).arg(img).arg(mnt).output().context("run mount")?;
    ensure!(out.status.success(), "mount {}: {}", img.display(), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

fn umount(mnt: &Path) -> Result<()> {
    let out = Command::new("umount").arg(mnt).output().context("run umount")?;
    ensure!(out.status.success(), "umount {}: {}", mnt.display(), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

impl Report {
    /// The human summary the command prints.
    pub fn summary(&self, fault: Option<&str>) -> String {
        let kinds: Vec<String> = self.states_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let repairs: Vec<String> = self.repairs.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let violations = self.failures.iter().filter(|f| f.violation).count();
        let mut s = format!(
            "journal fault: {}\nwrite log: {} entries, {} promises\ncrash states: {} ({})\nchecked: {}\nfailures: {} ({} invariant violations)\nrecovery repaired {} states: {}\nwall time: guest {:.1} s, replay + checks {:.1} s, total {:.1} s\n",
            fault.unwrap_or("none"),
            self.entries,
            self.promises,
            self.states,
            kinds.join(", "),
            self.checked,
            self.failures.len(),
            violations,
            self.states_repaired,
            if repairs.is_empty() { "nothing".into() } else { repairs.join(", ") },
            self.guest.as_secs_f64(),
            self.replay.as_secs_f64(),
            self.total.as_secs_f64(),
        );
        for f in self.failures.iter().take(20) {
            s.push_str(&format!("  FAIL at entry {} ({}, after {} promises): {}\n", f.entry, f.kind, f.promises, f.message));
        }
        if self.failures.len() > 20 {
            s.push_str(&format!("  ... and {} more\n", self.failures.len() - 20));
        }
        s
    }
}
