//! The real `lecternd` binary started on a provisioned config (docs/provisioning.md): a version
//! on trial whose config no longer loads is rolled back at once (exit 1, so systemd starts the
//! daemon again on the previous version), a version that used up its starts unconfirmed is
//! rolled back before it is loaded, and `--check-config` counts no start.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use lectern_provision::store::{Start, Store, TRIAL_STARTS};
use lectern_provision::{sign, Keyring, SecretKey};

fn key() -> SecretKey {
    SecretKey::from_seed("fleet", [5; 32])
}

/// Applies version `v`; its media directory does not exist, so a daemon that gets past the
/// config stops at once with exit 1 instead of running.
fn apply(store: &Store, v: u64) {
    let payload = format!(
        "version = {v}\ndevice = \"*\"\nnot_after = \"2099-01-01T00:00:00Z\"\nagent_name = \"hall-{v}\"\n\
         [config.journal]\nmedia_dir = \"/nonexistent/lectern-provision-test\"\n\
         [config.opencast]\nurl = \"https://oc.example.edu\"\n[secrets]\nopencast_password = \"pw\"\n"
    );
    let mut keys = Keyring::new();
    keys.add(&key().public_file_text(), Path::new("fleet.pub")).unwrap();
    let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    store.provision(&sign(payload.as_bytes(), &key()).unwrap(), &keys, "box", now).unwrap();
}

/// Runs lecternd, killed if it is still running after 30 s (it should stop by itself).
fn lecternd(config: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lecternd"))
        .arg("--config")
        .arg(config)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_trial_config_that_no_longer_loads_rolls_back_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    apply(&store, 1);
    store.confirm().unwrap();
    apply(&store, 2);
    // The secret went missing on the box: the config no longer loads.
    std::fs::remove_file(store.root().join("v2/opencast_password.secret")).unwrap();

    let o = lecternd(&store.config_path(), &["--check-config"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(store.state().unwrap().trial.map(|t| (t.version, t.starts)), Some((2, 0)), "a check is not a start");

    let o = lecternd(&store.config_path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("opencast.password_file") && stderr(&o).contains("rolled back to provisioned version 1"), "{}", stderr(&o));
    let state = store.state().unwrap();
    assert_eq!((state.version, state.trial, state.floor), (Some(1), None, 2));
}

#[test]
fn a_version_that_never_stays_up_is_rolled_back_before_it_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    apply(&store, 1);
    store.confirm().unwrap();
    apply(&store, 2);
    for n in 1..TRIAL_STARTS {
        assert_eq!(store.start(TRIAL_STARTS).unwrap(), Start::Trial { version: 2, start: n });
    }
    // The last start it gets: counted, then the daemon stops (its media directory is missing).
    let o = lecternd(&store.config_path(), &[]);
    assert!(stderr(&o).contains(&format!("provisioned version 2 on trial: start {TRIAL_STARTS} of {TRIAL_STARTS}")), "{}", stderr(&o));
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(store.state().unwrap().version, Some(2));
    // The next start rolls back before loading anything.
    let o = lecternd(&store.config_path(), &[]);
    assert!(stderr(&o).contains("provisioned version 2 never stayed up; rolled back to version 1"), "{}", stderr(&o));
    let state = store.state().unwrap();
    assert_eq!((state.version, state.trial), (Some(1), None));
    assert_eq!(lectern_config::Config::load(&store.config_path()).unwrap().agent_name, "hall-1");
}

#[test]
fn the_packaged_unit_runs_its_config_until_a_bundle_is_applied_then_the_stores() {
    // packaging/lecternd.service: `--config /etc/lectern/lectern.toml --provision-store
    // /var/lib/lectern/provision`. Both configs here name a missing media directory, so each
    // start stops at once and its error says which config it ran.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("lectern.toml");
    std::fs::write(&base, "[journal]\nmedia_dir = \"/nonexistent/lectern-base-config\"\n").unwrap();
    let root = tmp.path().join("provision");
    let args = ["--provision-store", root.to_str().unwrap()];

    let o = lecternd(&base, &args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/lectern-base-config"), "before any bundle, --config: {}", stderr(&o));
    assert!(!root.join("current").exists(), "a start writes no store");

    let store = Store::open(&root).unwrap();
    apply(&store, 1);
    let o = lecternd(&base, &args);
    let err = stderr(&o);
    assert!(err.contains("running the provisioned config") && err.contains("provisioned version 1 on trial: start 1"), "{err}");
    assert!(err.contains("/nonexistent/lectern-provision-test") && !err.contains("lectern-base-config"), "the store's version: {err}");
    assert_eq!(store.state().unwrap().trial.map(|t| (t.version, t.starts)), Some((1, 1)), "this start counted");
}
