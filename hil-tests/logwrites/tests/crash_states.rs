//! The crash-state check end to end: the guest under QEMU TCG, every FLUSH/FUA/MARK state of the
//! write log checked (docs/powercut-harness.md, "Every crash state: dm-log-writes"). The clean
//! journal must pass every state; the journal with its data fsync dropped before the row commit
//! (`row-before-data-fsync`) must be caught. Also, without a guest: the workload on the host and
//! the checker on its final state, so the checker is known to accept a healthy directory.
//!
//! Needs root, qemu-system-x86, busybox-static, dmsetup and e2fsprogs (scripts/install-deps.sh)
//! and fetches Debian's kernel with `apt-get download` into target/logwrites-cache on first use.
//! Without them the guest tests skip and say why on stderr; under CI (`CI=true`) they fail
//! instead, since CI installs them all.

use std::io::Write;
use std::path::PathBuf;

use lectern_logwrites::{missing_prerequisite, promise, Options, Report};

/// The run's options, or `None` (after saying why on stderr) where the guest cannot run. Under
/// CI (`CI=true`), which installs everything, a missing piece fails the test instead: a green
/// CI must mean the crash states were checked.
fn options(fault: Option<&str>) -> Option<Options> {
    let mut o = Options::new(PathBuf::from(env!("CARGO_BIN_EXE_logwrites-workload")));
    o.fault = fault.map(str::to_owned);
    let missing = missing_prerequisite().or_else(|| lectern_logwrites::guest::Kernel::fetch(&o.cache).err().map(|e| format!("no Debian kernel: {e:#}")));
    if let Some(why) = missing {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI must run the dm-log-writes crash-state check: {why}");
        // Straight to the process's stderr, not eprintln!: the test harness swallows a passing
        // test's eprintln!, and a skip must be seen.
        let bar = "!".repeat(72);
        let _ = writeln!(std::io::stderr(), "\n{bar}\nSKIPPED: the dm-log-writes crash-state check cannot run here: {why}\n{bar}");
        return None;
    }
    Some(o)
}

/// The guest tests take turns: each boots an emulated machine that keeps one core busy.
static GUEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(o: &Options) -> Report {
    let _turn = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let report = lectern_logwrites::run(o).expect("the crash-state run itself must work");
    eprintln!("{}", report.summary(o.fault.as_deref()));
    report
}

#[test]
fn every_crash_state_of_the_clean_journal_keeps_its_promises() {
    let Some(o) = options(None) else { return };
    let r = run(&o);
    assert!(r.failures.is_empty(), "{}", r.summary(None));
    assert_eq!(r.checked, r.states);
    assert!(r.promises >= 19, "the workload announced only {} promises", r.promises);
    // Every promise is a mark, and a log this size has many flushes besides.
    assert!(r.states > r.promises + 50, "only {} crash states for {} promises", r.states, r.promises);
    assert!(r.repairs.get("recovery-segment-recovered").is_some_and(|&n| n > 0), "no state had a torn segment to recover: the workload no longer exercises recovery");
}

#[test]
fn row_committed_before_its_data_fsync_is_caught() {
    let Some(o) = options(Some("row-before-data-fsync")) else { return };
    let r = run(&o);
    assert!(r.failures.iter().any(|f| f.violation), "the broken commit order passed every crash state:\n{}", r.summary(o.fault.as_deref()));
    assert!(r.failures.iter().all(|f| f.violation), "failures other than invariant violations:\n{}", r.summary(o.fault.as_deref()));
}

#[test]
fn checker_accepts_the_workload_run_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_logwrites-workload")).arg(&media).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let promises = promise::parse_console(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(promises.len(), 19, "{promises:?}");
    let repairs = lectern_logwrites::check::check_state(&media, &promises, 1_900_000_000_000).unwrap();
    assert!(repairs.is_empty(), "a clean run left something to repair: {repairs:?}");
    // The checker is not blind: a committed segment cut short is reported.
    let seg = media.join("recordings").join(promise::RECORDING_ID).join("part-0001/seg-000002.ts");
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(188 * 10).unwrap();
    let err = lectern_logwrites::check::check_state(&media, &promises, 1_900_000_000_000).unwrap_err();
    assert!(err.downcast_ref::<lectern_hil_tests::powercut::Violation>().is_some(), "{err:#}");
}
