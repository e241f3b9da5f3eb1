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
    // Starts that crashed or were killed by the watchdog after loading (counted by each start).
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    apply(&store, 1);
    store.confirm().unwrap();
    apply(&store, 2);
    for n in 1..=TRIAL_STARTS {
        assert_eq!(store.start(TRIAL_STARTS).unwrap(), Start::Trial { version: 2, start: n });
    }
    // The next start rolls back before loading anything.
    let o = lecternd(&store.config_path(), &[]);
    assert!(stderr(&o).contains("provisioned version 2 never stayed up; rolled back to version 1"), "{}", stderr(&o));
    let state = store.state().unwrap();
    assert_eq!((state.version, state.trial), (Some(1), None));
    assert_eq!(lectern_config::Config::load(&store.config_path()).unwrap().agent_name, "hall-1");
}

#[test]
fn a_version_on_trial_that_cannot_start_is_rolled_back_at_once() {
    // Its media directory does not exist on this box: the daemon loads the config, fails to
    // start, and goes back to version 1 in that same start (exit 1: systemd starts it again).
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    apply(&store, 1);
    store.confirm().unwrap();
    apply(&store, 2);
    let o = lecternd(&store.config_path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("provisioned version 2 on trial: start 1") && stderr(&o).contains("rolled back to provisioned version 1"), "{}", stderr(&o));
    let state = store.state().unwrap();
    assert_eq!((state.version, state.trial, state.floor), (Some(1), None, 2));
    // Version 1, confirmed, is never rolled back by a failed start: nothing to go back to.
    let o = lecternd(&store.config_path(), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(store.state().unwrap().version, Some(1));
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

/// A static file host over loopback serving one file with an ETag (304 on a match); counts GETs.
fn file_host(body: Vec<u8>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU32>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let gets = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = gets.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut head = String::new();
            let mut r = BufReader::new(conn.try_clone().unwrap());
            while r.read_line(&mut head).unwrap_or(0) > 2 {}
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut w = conn;
            if head.to_lowercase().contains("if-none-match: \"b1\"") {
                let _ = write!(w, "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n");
            } else {
                let _ = write!(w, "HTTP/1.1 200 OK\r\nETag: \"b1\"\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = w.write_all(&body);
            }
        }
    });
    (port, gets)
}

#[test]
fn zero_touch_a_new_box_fetches_its_bundle_applies_it_and_restarts_into_it() {
    // The packaged unit's flags plus the image's enrolment file. The daemon runs on the sim board
    // with its base config, fetches the bundle within seconds, applies it (idle) and stops itself
    // cleanly (exit 0), as systemd's Restart=always expects; started again, it runs the bundle's
    // config (agent hall-7) and its re-check finds the bundle up to date.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("media")).unwrap();
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::write(d.join("keys/fleet.pub"), key().public_file_text()).unwrap();
    let common = format!(
        "[board]\nbackend = \"sim\"\nsim_socket = \"{0}/sim.sock\"\n[control]\nsocket = \"{0}/control.sock\"\n[journal]\nmedia_dir = \"{0}/media\"\nmin_free_mb = 16\n[clock]\ntrust = \"always\"\n",
        d.display()
    );
    std::fs::write(d.join("lectern.toml"), format!("[agent]\nname = \"unenrolled\"\n{common}")).unwrap();
    let payload = format!("version = 7\ndevice = \"*\"\nnot_after = \"2099-01-01T00:00:00Z\"\nagent_name = \"hall-7\"\n[config]\n{}", common.replace("\n[", "\n[config."));
    let payload = payload.replacen("[config]\n[board]", "[config.board]", 1);
    let (port, gets) = file_host(sign(payload.as_bytes(), &key()).unwrap());
    std::fs::write(d.join("enrol.toml"), format!("url = \"http://127.0.0.1:{port}/fleet/{{device}}.bundle\"\ncheck_interval_s = 5\n")).unwrap();
    let store = d.join("provision");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_lecternd"))
            .arg("--config")
            .arg(d.join("lectern.toml"))
            .args(["--provision-store", store.to_str().unwrap(), "--enrol", d.join("enrol.toml").to_str().unwrap()])
            .args(["--fleet-keys", d.join("keys").to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let wait_exit = |child: &mut std::process::Child, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let mut first = spawn();
    let st = wait_exit(&mut first, 40);
    if st.is_none() {
        first.kill().unwrap();
    }
    let out = first.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(st.and_then(|s| s.code()), Some(0), "the first start applies the fetched bundle and stops itself: {err}");
    assert!(err.contains("provisioned from http://127.0.0.1") && err.contains("version 7"), "{err}");
    assert_eq!(Store::open(&store).unwrap().state().unwrap().version, Some(7));

    let mut second = spawn();
    let sock = d.join("control.sock");
    let status = |sock: &Path| lectern_control::request(sock, &lectern_control::Request::Status, Duration::from_secs(5)).ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = status(&sock);
        if last.as_ref().is_some_and(|s| s["provision"]["remote"]["last_apply"].is_string()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    second.kill().unwrap();
    let out = second.wait_with_output().unwrap();
    let s = last.unwrap_or_else(|| panic!("no status: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(s["agent"], "hall-7", "the second start runs the bundle's config: {s}");
    assert_eq!(s["provision"]["version"], 7, "{s}");
    assert_eq!(s["provision"]["remote"]["last_apply"], "up to date (version 7)", "{s}");
    assert_eq!(s["provision"]["last_rejection"], serde_json::Value::Null, "a re-fetch is not a rejection: {s}");
    assert!(gets.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}
