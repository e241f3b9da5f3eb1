//! The systemd unit shipped in the Yocto layer keeps the promises the daemon relies on.

use std::path::Path;

fn unit() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/lecternd.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn value(unit: &str, key: &str) -> Option<String> {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[test]
fn unit_is_notify_with_watchdog_and_no_crash_loop_on_bad_config() {
    let u = unit();
    let cases = [("Type", "notify"), ("RestartPreventExitStatus", "2"), ("Restart", "always"), ("RuntimeDirectory", "lectern")];
    for (key, want) in cases {
        assert_eq!(value(&u, key).as_deref(), Some(want), "{key}");
    }
    let watchdog: u64 = value(&u, "WatchdogSec").unwrap().parse().unwrap();
    // The main loop wakes at least once a second and a clean stop takes at most ~5 s.
    assert!(watchdog >= 10, "WatchdogSec {watchdog} is too tight");
    let stop: u64 = value(&u, "TimeoutStopSec").unwrap().parse().unwrap();
    assert!(stop >= 10, "TimeoutStopSec {stop} does not leave time to commit the open segment");
}

#[test]
fn unit_passes_systemd_analyze_when_available() {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIP: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lecternd.service");
    // The ExecStart binary must exist for verify; point it at a real one.
    std::fs::write(&path, unit().replace("/usr/bin/lecternd", "/bin/true")).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let relevant: Vec<&str> = err.lines().filter(|l| l.contains("lecternd.service")).collect();
    assert!(relevant.is_empty(), "systemd-analyze verify: {relevant:?}");
}
