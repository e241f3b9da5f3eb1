//! Offline enrolment (issue 10): `lectern provision BUNDLE` asks the daemon to apply a signed
//! provisioning bundle from a path on the box (a USB stick). This module owns the daemon's side:
//! the paths (store, trusted keys, device id), the idle gate and the `status` view; the format,
//! every check and the atomic apply are `lectern-provision`'s (docs/provisioning.md).
//!
//! A bundle is applied only while the box is idle in the sense of a system update
//! ([`crate::update::Busy::reason`]: not recording, retrying, holding a recording through a power
//! cut, stitching, on a failing power line, or within 15 min of a scheduled start); otherwise the
//! request is refused with the reason and the operator tries again, so a recording is never cut.
//! Applying writes the store. When this daemon runs the store's config (`--config
//! <store>/current/lectern.toml`, as the provisioned unit does) it then stops itself cleanly
//! with SIGTERM, and systemd (`Restart=always`) starts it again with the new config; otherwise
//! the reply says the new config waits for such a start.
//!
//! The health check: each applied version is on *trial* in the store. `main.rs` counts every
//! start with it ([`lectern_provision::store::Store::start`]) and rolls back to the previous
//! version after `TRIAL_STARTS` starts without a confirmation, or at once when the config no
//! longer loads; [`crate::Daemon::provision_turn`] confirms the version once the main loop has
//! been turning for [`HEALTHY_AFTER`] (a wedged loop is killed by the watchdog first). Healthy
//! means "runs", not "reaches Opencast": a wrong URL or password is not rolled back.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lectern_provision::store::{ProvisionError, Store};
use lectern_provision::{Keyring, MAX_BUNDLE_BYTES};
use serde_json::{json, Value};

/// How long the main loop must have been turning before a version on trial counts as healthy.
pub(crate) const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// Asks for a clean stop (the signal path a `systemctl stop` takes), after which systemd's
/// `Restart=always` starts the daemon again.
fn sigterm_self() -> std::io::Result<()> {
    // SAFETY: kill(2) with our own pid and a valid signal number has no memory effects.
    match unsafe { libc::kill(libc::getpid(), libc::SIGTERM) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Where provisioning lives on a box.
#[derive(Debug, Clone)]
pub(crate) struct Provisioner {
    /// The store (the service user's state directory).
    pub store: PathBuf,
    /// The trusted fleet public keys (`*.pub`), from the image.
    pub keys: PathBuf,
    /// The file holding this box's device id.
    pub machine_id: PathBuf,
    /// How the daemon restarts itself after an apply (the seam tests replace).
    pub restart: fn() -> std::io::Result<()>,
    /// The version on trial was confirmed (or there was nothing to confirm) in this run.
    pub confirmed: bool,
    /// The daemon was started with `--provision-store` (the packaged unit): its next start runs
    /// the store's `current`, so an apply restarts it even before the first version exists.
    pub store_aware: bool,
}

impl Provisioner {
    /// The paths of an installed box (docs/provisioning.md).
    pub(crate) fn system() -> Provisioner {
        Provisioner {
            store: PathBuf::from("/var/lib/lectern/provision"),
            keys: PathBuf::from("/etc/lectern/fleet-keys"),
            machine_id: PathBuf::from("/etc/machine-id"),
            restart: sigterm_self,
            confirmed: false,
            store_aware: false,
        }
    }

    /// Does the daemon run the store's config (`running` is its config), or will its next start?
    fn runs_store(&self, running: Option<&Path>) -> bool {
        self.store_aware || running.is_some_and(|p| p == Store::config_path_of(&self.store))
    }

    /// Ends the trial of the running version once the daemon is healthy; once per run. The
    /// store is the one the running config is in, wherever it is: `main.rs` counted this start
    /// in that one.
    pub(crate) fn confirm(&mut self, running: Option<&Path>) {
        self.confirmed = true;
        let Some(store) = running.and_then(Store::of_config) else { return };
        match store.confirm() {
            Ok(Some(v)) => log::info!(target: "lecternd", "provisioned version {v} confirmed healthy"),
            Ok(None) => {}
            Err(e) => log::error!(target: "lecternd", "{e}"),
        }
    }

    /// Applies the bundle at `bundle` unless `busy` says why not. Errors are for the operator:
    /// they name the file or the rejection, never a secret.
    pub(crate) fn request(&self, bundle: &Path, busy: Option<String>, running: Option<&Path>, now: DateTime<Utc>) -> Result<Value, String> {
        if let Some(why) = busy {
            return Err(format!("not applied: the box is busy ({why}); try again when it is idle"));
        }
        let bytes = read_bounded(bundle)?;
        self.apply_bytes(&bytes, &bundle.display().to_string(), running, now)
    }

    /// This box's device id (`/etc/machine-id`).
    pub(crate) fn device_id(&self) -> Result<String, String> {
        let device = std::fs::read_to_string(&self.machine_id).map_err(|e| format!("device id {}: {e}", self.machine_id.display()))?;
        Ok(device.trim().to_owned())
    }

    /// Verifies and applies a bundle's bytes (from `source`: a path or the enrolment URL); the
    /// caller checked the box is idle. A bundle of the version the box already runs is answered
    /// `{"up_to_date": version}` and not recorded as a rejection: zero-touch re-fetches it after
    /// every restart.
    pub(crate) fn apply_bytes(&self, bytes: &[u8], source: &str, running: Option<&Path>, now: DateTime<Utc>) -> Result<Value, String> {
        let keys = Keyring::load(&self.keys).map_err(|e| e.to_string())?;
        if keys.is_empty() {
            return Err(format!("no trusted fleet keys (*.pub) in {}", self.keys.display()));
        }
        let device = self.device_id()?;
        let store = Store::open(&self.store).map_err(|e| e.to_string())?;
        let running_version = store.state().map_err(|e| e.to_string())?.version;
        let cx = lectern_provision::Context { keys: &keys, device_id: &device, applied_version: 0, now };
        if let (Ok(v), Some(current)) = (lectern_provision::verify(bytes, &cx), running_version) {
            if v.payload.version == current {
                return Ok(json!({ "up_to_date": current }));
            }
        }
        match store.provision(bytes, &keys, &device, now) {
            Ok(applied) => {
                log::info!(target: "lecternd", "provisioned from {source}: version {} (previous {:?})", applied.version, applied.previous);
                let note = if !self.runs_store(running) {
                    format!("takes effect when lecternd starts with --provision-store {}", self.store.display())
                } else if let Err(e) = (self.restart)() {
                    format!("restart lecternd to apply it (could not stop itself: {e})")
                } else {
                    "lecternd restarts with it now; it rolls back if the daemon does not stay up".to_owned()
                };
                Ok(json!({ "applied": applied.version, "previous": applied.previous, "config": applied.config, "note": note }))
            }
            Err(ProvisionError::Rejected(r)) => {
                log::warn!(target: "lecternd", "provisioning bundle from {source} rejected: {r}");
                Err(format!("rejected, nothing changed: {r}"))
            }
            Err(ProvisionError::Store(e)) => Err(e.to_string()),
        }
    }

    /// The agent configuration entries Opencast shows for this box, so an AV team sees config
    /// drift across the fleet in the admin UI: the firmware version, the provisioned version
    /// (`none` before the first bundle) and the last rejection (empty when there was none).
    pub(crate) fn capabilities(&self) -> Vec<(String, String)> {
        let state = if self.store.is_dir() { Store::open(&self.store).and_then(|s| s.state()).ok() } else { None };
        let state = state.unwrap_or_default();
        vec![
            ("lectern.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("lectern.provision.version".into(), state.version.map_or("none".into(), |v| v.to_string())),
            ("lectern.provision.rejection".into(), state.last_rejection.map(|r| format!("{}: {}", r.at.to_rfc3339(), r.message)).unwrap_or_default()),
        ]
    }

    /// `status.provision`: the applied and previous versions, the floor, the last rejection.
    /// Never a secret (the store's state holds none). Null when the store does not exist.
    pub(crate) fn status_json(&self) -> Value {
        if !self.store.is_dir() {
            return Value::Null;
        }
        match Store::open(&self.store).and_then(|s| s.state()) {
            Ok(state) => serde_json::to_value(state).unwrap_or(Value::Null),
            Err(e) => json!({ "error": e.to_string() }),
        }
    }
}

/// Reads a bundle, refusing one larger than a bundle may be before reading it all.
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("bundle {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_BUNDLE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("bundle {}: {e}", path.display()))?;
    Ok(bytes)
}

impl crate::Daemon {
    /// The `provision` control request.
    pub(crate) fn provision_request(&mut self, bundle: &str) -> Result<Value, String> {
        let now = self.clock.now_ms();
        let busy = crate::update::Busy::of(self.recorder.state(), self.stitching.as_deref(), self.recorder.schedule(), self.power_fail, now);
        let utc = DateTime::<Utc>::from_timestamp_millis(now).ok_or("the wall clock is out of range")?;
        let answer = self.provisioner.request(Path::new(bundle), busy.reason(now), self.config.source.as_deref(), utc);
        self.report_provision();
        answer
    }

    /// Tells Opencast (agent configuration) the provisioned version and the last rejection.
    pub(crate) fn report_provision(&self) {
        if let Some(agent) = self.agent.as_ref() {
            agent.set_capabilities(self.provisioner.capabilities());
        }
    }

    /// One main-loop turn: confirms a version on trial once the loop has turned for
    /// [`HEALTHY_AFTER`], and applies a fetched bundle when the box is idle.
    pub(crate) fn provision_turn(&mut self) {
        if !self.provisioner.confirmed && self.started.elapsed() >= HEALTHY_AFTER {
            self.provisioner.confirm(self.config.source.as_deref());
        }
        if self.enrol.as_ref().is_some_and(|e| e.pending.is_some()) {
            let now = self.clock.now_ms();
            let busy = crate::update::Busy::of(self.recorder.state(), self.stitching.as_deref(), self.recorder.schedule(), self.power_fail, now);
            if busy.reason(now).is_some() {
                return; // kept pending: applied on the first idle turn
            }
            let Some(e) = self.enrol.as_mut() else { return };
            let (bytes, url) = (e.pending.take().unwrap_or_default(), e.url.clone());
            let outcome = match DateTime::<Utc>::from_timestamp_millis(now) {
                Some(utc) => self.provisioner.apply_bytes(&bytes, &url, self.config.source.as_deref(), utc),
                None => Err("the wall clock is out of range".into()),
            };
            let said = match outcome {
                Ok(v) if v.get("up_to_date").is_some() => format!("up to date (version {})", v["up_to_date"]),
                Ok(v) => format!("applied version {}: {}", v["applied"], v["note"].as_str().unwrap_or_default()),
                Err(e) => e,
            };
            if let Some(e) = self.enrol.as_mut() {
                e.last_apply = Some(said);
            }
            self.report_provision();
        }
    }

    /// Starts zero-touch enrolment from the enrolment file at `path`. A bad file or a missing
    /// device id is logged and shown in `status`; the box records as configured either way.
    pub(crate) fn start_enrolment(&mut self, path: &Path) {
        if !path.exists() {
            // The packaged unit always passes the image's path; a box enrolled by hand has none.
            log::info!(target: "lecternd", "zero-touch enrolment off: no {}", path.display());
            return;
        }
        let started = lectern_provision::remote::Enrolment::load(path).and_then(|enrolment| {
            let device = self.provisioner.device_id()?;
            let tx = self.tx.clone();
            let url = lectern_provision::remote::shown_url(&enrolment.url_for(&device));
            let stop = crate::enrol::spawn(&enrolment, &device, move |f| {
                let _ = tx.send(crate::Event::Enrol(f));
            })
            .map_err(|e| format!("enrolment thread: {e}"))?;
            log::info!(target: "lecternd", "enrolment: checking {url} about every {} s", enrolment.check_interval.as_secs());
            Ok((url, stop))
        });
        match started {
            Ok((url, stop)) => {
                self.enrol = Some(crate::enrol::EnrolState { url, ..Default::default() });
                self._enrol_fetch = Some(stop);
            }
            Err(e) => {
                log::error!(target: "lecternd", "zero-touch enrolment off: {e}");
                self.enrol = Some(crate::enrol::EnrolState { last_result: Some(format!("off: {e}")), ..Default::default() });
            }
        }
    }

    /// `status.provision`: the store's versions and, with `--enrol`, `remote` (the last check).
    pub(crate) fn provision_status(&self) -> Value {
        let mut v = self.provisioner.status_json();
        if let Some(e) = &self.enrol {
            if !v.is_object() {
                v = json!({});
            }
            v["remote"] = e.status_json();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use lectern_provision::{sign, SecretKey};

    fn setup() -> (tempfile::TempDir, Provisioner, SecretKey) {
        let tmp = tempfile::tempdir().unwrap();
        let key = SecretKey::from_seed("fleet", [9; 32]);
        std::fs::create_dir(tmp.path().join("keys")).unwrap();
        std::fs::write(tmp.path().join("keys/fleet.pub"), key.public_file_text()).unwrap();
        std::fs::write(tmp.path().join("machine-id"), "0123abcd\n").unwrap();
        let p = Provisioner {
            store: tmp.path().join("provision"),
            keys: tmp.path().join("keys"),
            machine_id: tmp.path().join("machine-id"),
            restart: count_restart,
            confirmed: false,
            store_aware: false,
        };
        (tmp, p, key)
    }

    static RESTARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    fn count_restart() -> std::io::Result<()> {
        RESTARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap()
    }

    fn write_bundle(dir: &Path, key: &SecretKey, version: u64, device: &str) -> PathBuf {
        let payload = format!(
            "version = {version}\ndevice = \"{device}\"\nnot_after = \"2027-02-01T00:00:00Z\"\n\
             [config.opencast]\nurl = \"https://oc.example.edu\"\n[secrets]\nopencast_password = \"pw-s3cret\"\n"
        );
        let path = dir.join(format!("b{version}.json"));
        std::fs::write(&path, sign(payload.as_bytes(), key).unwrap()).unwrap();
        path
    }

    #[test]
    fn busy_box_is_never_provisioned() {
        let (tmp, p, key) = setup();
        let b = write_bundle(tmp.path(), &key, 1, "0123abcd");
        let err = p.request(&b, Some("recording rec-1".into()), None, now()).unwrap_err();
        assert!(err.contains("busy (recording rec-1)"), "{err}");
        assert!(!p.store.exists(), "nothing written while busy");
        assert_eq!(p.status_json(), Value::Null);
    }

    #[test]
    fn idle_box_applies_and_status_shows_versions_without_secrets() {
        let (tmp, p, key) = setup();
        let v = p.request(&write_bundle(tmp.path(), &key, 1, "0123abcd"), None, None, now()).unwrap();
        assert_eq!(v["applied"], 1);
        assert!(v["note"].as_str().unwrap().contains("--provision-store"), "{v}");
        let err = p.request(&write_bundle(tmp.path(), &key, 2, "other-box"), None, None, now()).unwrap_err();
        assert!(err.starts_with("rejected, nothing changed: bundle is for device \"other-box\", this box is \"0123abcd\""), "{err}");
        let status = p.status_json();
        assert_eq!(status["version"], 1);
        assert_eq!(status["last_rejection"]["reason"]["kind"], "other_device");
        assert!(!status.to_string().contains("s3cret"), "{status}");
        assert!(!err.contains("s3cret"));
        let config = lectern_config::Config::load(&p.store.join("current/lectern.toml")).unwrap();
        assert_eq!(config.opencast.unwrap().password, "pw-s3cret");
    }

    #[test]
    fn missing_keys_or_bundle_are_named() {
        let (tmp, mut p, key) = setup();
        let b = write_bundle(tmp.path(), &key, 1, "*");
        let err = p.request(&tmp.path().join("nope.json"), None, None, now()).unwrap_err();
        assert!(err.contains("nope.json"), "{err}");
        std::fs::remove_file(tmp.path().join("keys/fleet.pub")).unwrap();
        assert!(p.request(&b, None, None, now()).unwrap_err().contains("no trusted fleet keys"));
        p.keys = tmp.path().join("absent");
        assert!(p.request(&b, None, None, now()).unwrap_err().contains("absent"));
        assert!(!p.store.exists());
    }

    /// The only test that counts RESTARTS (tests run in parallel).
    #[test]
    fn a_daemon_running_the_store_restarts_itself_and_confirms_the_trial() {
        let (tmp, mut p, key) = setup();
        let running = Store::config_path_of(&p.store);
        let v = p.request(&write_bundle(tmp.path(), &key, 1, "*"), None, Some(&running), now()).unwrap();
        assert!(v["note"].as_str().unwrap().contains("restarts with it now"), "{v}");
        assert_eq!(RESTARTS.load(std::sync::atomic::Ordering::SeqCst), 1);
        let store = Store::open(&p.store).unwrap();
        assert_eq!(store.state().unwrap().trial.map(|t| t.version), Some(1));
        // Another config: the trial is not this daemon's to confirm.
        p.confirm(Some(Path::new("/etc/lectern/lectern.toml")));
        assert!(store.state().unwrap().trial.is_some());
        p.confirm(Some(&running));
        assert_eq!(store.state().unwrap().trial, None);
        // The same bundle again (zero-touch re-fetches it after every restart): up to date, not
        // a rejection, no restart.
        let v = p.request(&write_bundle(tmp.path(), &key, 1, "*"), None, Some(&running), now()).unwrap();
        assert_eq!(v, json!({ "up_to_date": 1 }));
        assert_eq!(store.state().unwrap().last_rejection, None);
        assert_eq!(RESTARTS.load(std::sync::atomic::Ordering::SeqCst), 1, "nothing new, no restart");
        // The packaged unit (`--provision-store`) still runs /etc's config before the first
        // bundle: an apply restarts it too, and its next start picks the store's version.
        p.store_aware = true;
        let v = p.request(&write_bundle(tmp.path(), &key, 2, "*"), None, Some(Path::new("/etc/lectern/lectern.toml")), now()).unwrap();
        assert!(v["note"].as_str().unwrap().contains("restarts with it now"), "{v}");
        assert_eq!(RESTARTS.load(std::sync::atomic::Ordering::SeqCst), 2);
        // An older version is a rollback: refused and recorded.
        let err = p.request(&write_bundle(tmp.path(), &key, 1, "*"), None, Some(&running), now()).unwrap_err();
        assert!(err.contains("not newer"), "{err}");
        assert!(store.state().unwrap().last_rejection.is_some());
        assert_eq!(RESTARTS.load(std::sync::atomic::Ordering::SeqCst), 2, "a rejection never restarts");
    }
}
