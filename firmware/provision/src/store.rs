//! The provisioning store: where a verified bundle becomes the daemon's config and secrets,
//! atomically, with the previous version kept for rollback.
//!
//! Layout under the store's root (on a box `/var/lib/lectern/provision`, owned by the service
//! user, mode 0700):
//!
//! ```text
//! v7/lectern.toml                  the config the bundle produced (0640)
//! v7/opencast_password.secret      one file per secret (0600); the config names it by a relative
//!                                  `*_file` key, so it resolves next to the config
//! v6/...                           the previous version, kept for rollback
//! current -> v7                    the daemon runs `--config <root>/current/lectern.toml`
//! previous -> v6
//! state.json                       rollback floor and the last rejection (no secrets)
//! ```
//!
//! Applying: verify (nothing written but the rejection in `state.json` if it fails) → write every
//! file into `v7.tmp/`, fsync each → validate `v7.tmp/lectern.toml` with `Config::load`, exactly
//! as the daemon loads it (secrets included) → fsync the directory, rename it to `v7`, fsync the
//! root → point `previous` at the old target and `current` at `v7`, each by renaming a fresh
//! symlink over the old one, fsync the root → `state.json` by temp file, fsync, rename, root fsync.
//! A cut at any point leaves `current` at the old or the new version, whole: config and secrets
//! switch together because they live in one directory behind one symlink.
//!
//! The running version is read from the `current` link, never only from `state.json`, so a cut
//! between the switch and the state write cannot make the two disagree. The rollback *floor*
//! (what a new bundle must exceed) is the highest version ever applied: a version rolled back
//! because its daemon failed the health check is not accepted again; the AV team re-issues a fix
//! with a higher version.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{symlink, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{secret_file_name, verify, Context, Keyring, Rejection, Verified};

/// Starts a new version gets before it is rolled back unconfirmed; with the unit's
/// `RestartSec=100ms` a daemon that dies at once uses them within a second, well inside its start
/// limit (5 in 60 s), so the start that rolls back still happens.
pub const TRIAL_STARTS: u32 = 3;

/// The config file's name inside a version directory.
pub const CONFIG_FILE: &str = "lectern.toml";
const STATE_FILE: &str = "state.json";

/// A store operation that failed on the filesystem; names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("provision store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("provision store {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("provision store: no previous version to roll back to")]
    NoPrevious,
}

/// Why `provision` applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Rejected(Rejection),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The last refused bundle, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRejection {
    pub at: DateTime<Utc>,
    pub reason: Rejection,
    /// The message as shown to people.
    pub message: String,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// The highest version ever applied: a bundle must be newer than this.
    pub floor: u64,
    pub applied_key_id: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub last_rejection: Option<LastRejection>,
    /// The version applied last, until the daemon confirms it healthy ([`Store::confirm`]).
    #[serde(default)]
    pub trial: Option<Trial>,
}

/// A version on trial: applied, not yet confirmed healthy by a daemon running it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub version: u64,
    /// Daemon starts with it so far.
    pub starts: u32,
}

/// What a daemon start with the store's config means ([`Store::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// No version on trial.
    Normal,
    /// The version on trial, and which start with it this is (1 = the first).
    Trial { version: u64, start: u32 },
    /// The version on trial used up its starts without being confirmed: `current` was rolled
    /// back to the previous version.
    RolledBack { from: u64, to: u64 },
}

/// The store's state: the running and previous versions (from the links) and the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct State {
    /// The version `current` points at; `None` when the box was never provisioned.
    pub version: Option<u64>,
    pub previous: Option<u64>,
    /// A new bundle must be above this (max of the state file's floor and `version`).
    pub floor: u64,
    pub applied_key_id: Option<String>,
    pub applied_at: Option<DateTime<Utc>>,
    pub last_rejection: Option<LastRejection>,
    pub trial: Option<Trial>,
}

/// A bundle that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u64,
    pub previous: Option<u64>,
    pub config: PathBuf,
}

/// The provisioning store at one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Writes a new file with `mode`, and fsyncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(io(path))?;
    // The umask may have narrowed the mode; never widened, but make it exact.
    f.set_permissions(fs::Permissions::from_mode(mode)).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn fsync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|d| d.sync_all()).map_err(io(path))
}

fn version_of(name: &str) -> Option<u64> {
    name.strip_prefix('v')?.parse().ok().filter(|v| *v > 0)
}

/// Writes a payload's secrets and config into the empty directory `dir` (fsyncing each file and
/// the directory) and loads the config with the daemon's own loader: what it refuses, a box never
/// switches to. The fleet tool runs the same check in a scratch directory before it signs.
pub fn stage_and_check(dir: &Path, payload: &crate::Payload) -> Result<(), ProvisionError> {
    for (secret, value) in &payload.secrets {
        write_new(&dir.join(secret_file_name(secret)), value.as_bytes(), 0o600)?;
    }
    let config = dir.join(CONFIG_FILE);
    write_new(&config, payload.config_toml().as_bytes(), 0o640)?;
    fsync_dir(dir)?;
    lectern_config::Config::load(&config).map_err(|e| {
        // The message names the bundle, not the scratch directory.
        let message = e.to_string().replace(&format!("{}", dir.display()), &format!("<bundle v{}>", payload.version));
        ProvisionError::Rejected(Rejection::Config(message))
    })?;
    Ok(())
}

impl Store {
    /// Opens the store, creating its root (0700) if missing; its parent must exist.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        match fs::create_dir(root) {
            Ok(()) => {
                fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io(root))?;
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(root)(e)),
        }
        Ok(Store { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The config path the daemon runs with once provisioned.
    pub fn config_path(&self) -> PathBuf {
        Store::config_path_of(&self.root)
    }

    /// The same for a store root, without opening it.
    pub fn config_path_of(root: &Path) -> PathBuf {
        root.join("current").join(CONFIG_FILE)
    }

    /// The store whose `current/lectern.toml` `config` is, if it is one (a `current` symlink).
    pub fn of_config(config: &Path) -> Option<Store> {
        let current = config.parent()?;
        if config.file_name()? != CONFIG_FILE || current.file_name()? != "current" || !current.is_symlink() {
            return None;
        }
        Some(Store { root: current.parent()?.to_owned() })
    }

    fn link_version(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.root.join(name);
        match fs::read_link(&path) {
            Ok(target) => {
                let v = target.to_str().and_then(version_of);
                v.map(Some).ok_or_else(|| StoreError::Corrupt { path, message: format!("points at {}, not a version directory", target.display()) })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn read_state_file(&self) -> Result<StateFile, StoreError> {
        let path = self.root.join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt { path, message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn write_state_file(&self, state: &StateFile) -> Result<(), StoreError> {
        let tmp = self.root.join(format!("{STATE_FILE}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut bytes = serde_json::to_vec_pretty(state).expect("the state serialises");
        bytes.push(b'\n');
        write_new(&tmp, &bytes, 0o600)?;
        let path = self.root.join(STATE_FILE);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fsync_dir(&self.root)
    }

    /// The running version, the previous one, the floor and the last rejection.
    pub fn state(&self) -> Result<State, StoreError> {
        let file = self.read_state_file()?;
        let version = self.link_version("current")?;
        Ok(State {
            version,
            previous: self.link_version("previous")?,
            floor: file.floor.max(version.unwrap_or(0)),
            applied_key_id: file.applied_key_id,
            applied_at: file.applied_at,
            last_rejection: file.last_rejection,
            trial: file.trial,
        })
    }

    fn record_rejection(&self, reason: Rejection, now: DateTime<Utc>) -> Result<ProvisionError, StoreError> {
        let mut file = self.read_state_file()?;
        file.last_rejection = Some(LastRejection { at: now, message: reason.to_string(), reason: reason.clone() });
        self.write_state_file(&file)?;
        Ok(ProvisionError::Rejected(reason))
    }

    /// Verifies a bundle and applies it; on any rejection nothing but `state.json`'s
    /// `last_rejection` changes.
    pub fn provision(&self, bundle: &[u8], keys: &Keyring, device_id: &str, now: DateTime<Utc>) -> Result<Applied, ProvisionError> {
        let state = self.state()?;
        let cx = Context { keys, device_id, applied_version: state.floor, now };
        let verified = match verify(bundle, &cx) {
            Ok(v) => v,
            Err(r) => return Err(self.record_rejection(r, now)?),
        };
        self.apply(verified, now)
    }

    fn apply(&self, verified: Verified, now: DateTime<Utc>) -> Result<Applied, ProvisionError> {
        let payload = &verified.payload;
        let name = format!("v{}", payload.version);
        let staged = self.root.join(format!("{name}.tmp"));
        self.clean_staging()?;
        fs::create_dir(&staged).map_err(io(&staged))?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o750)).map_err(io(&staged))?;
        match stage_and_check(&staged, payload) {
            Ok(()) => {}
            Err(e) => {
                let _ = fs::remove_dir_all(&staged);
                return Err(match e {
                    ProvisionError::Rejected(r) => self.record_rejection(r, now)?,
                    other => other,
                });
            }
        }
        let final_dir = self.root.join(&name);
        if final_dir.exists() {
            // Left by an earlier apply of this version that was rolled back before its state was
            // written; the floor did not record it, so it is replaced.
            fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        fs::rename(&staged, &final_dir).map_err(io(&final_dir))?;
        fsync_dir(&self.root)?;

        let old = self.link_version("current")?;
        if let Some(old) = old {
            self.set_link("previous", &format!("v{old}"))?;
        }
        self.set_link("current", &name)?;
        let mut file = self.read_state_file()?;
        file.floor = file.floor.max(payload.version);
        file.applied_key_id = Some(verified.key_id.clone());
        file.applied_at = Some(now);
        file.trial = Some(Trial { version: payload.version, starts: 0 });
        self.write_state_file(&file)?;
        self.prune()?;
        log::info!(target: "provision", "applied bundle version {} (key {}), previous {:?}", payload.version, verified.key_id, old);
        Ok(Applied { version: payload.version, previous: old, config: self.config_path() })
    }

    /// Points `current` back at `previous` (the daemon failed its health check with the new
    /// config). The floor stays: the rolled-back version is not accepted again.
    pub fn rollback(&self) -> Result<u64, StoreError> {
        let previous = self.link_version("previous")?.ok_or(StoreError::NoPrevious)?;
        let bad = self.link_version("current")?;
        self.set_link("current", &format!("v{previous}"))?;
        let prev_link = self.root.join("previous");
        fs::remove_file(&prev_link).map_err(io(&prev_link))?;
        fsync_dir(&self.root)?;
        if let Some(bad) = bad {
            let dir = self.root.join(format!("v{bad}"));
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
            fsync_dir(&self.root)?;
        }
        log::warn!(target: "provision", "rolled back from version {} to {previous}", bad.map_or("(none)".to_owned(), |v| v.to_string()));
        Ok(previous)
    }

    /// Called once per daemon start, before it loads the store's config: counts the start of a
    /// version on trial, and once it had `max_starts` starts without being confirmed healthy
    /// rolls `current` back (a daemon that crashes, hangs or fails its health check with the new
    /// config gets that many tries; systemd's start limit must allow more). A first enrolment
    /// has no previous version: its trial just ends, and the box keeps what it has.
    pub fn start(&self, max_starts: u32) -> Result<Start, StoreError> {
        let mut file = self.read_state_file()?;
        let current = self.link_version("current")?;
        let Some(mut trial) = file.trial.filter(|t| Some(t.version) == current) else {
            if file.trial.take().is_some() {
                self.write_state_file(&file)?;
            }
            return Ok(Start::Normal);
        };
        if trial.starts < max_starts {
            trial.starts += 1;
            file.trial = Some(trial);
            self.write_state_file(&file)?;
            return Ok(Start::Trial { version: trial.version, start: trial.starts });
        }
        let result = match self.link_version("previous")? {
            Some(_) => {
                let to = self.rollback()?;
                Start::RolledBack { from: trial.version, to }
            }
            None => {
                log::warn!(target: "provision", "version {} was never confirmed healthy and there is no previous version to go back to", trial.version);
                Start::Normal
            }
        };
        file.trial = None;
        self.write_state_file(&file)?;
        Ok(result)
    }

    /// A daemon running the version on trial found itself healthy: the trial ends. Returns the
    /// version confirmed, if one was on trial.
    pub fn confirm(&self) -> Result<Option<u64>, StoreError> {
        let mut file = self.read_state_file()?;
        let Some(trial) = file.trial.take() else { return Ok(None) };
        self.write_state_file(&file)?;
        log::info!(target: "provision", "version {} confirmed healthy", trial.version);
        Ok(Some(trial.version))
    }

    /// The daemon cannot run the version on trial at all (its config no longer loads): roll
    /// back at once. Returns the version now current, or `None` when there was no trial or
    /// nothing to go back to.
    pub fn fail_trial(&self) -> Result<Option<u64>, StoreError> {
        let mut file = self.read_state_file()?;
        if file.trial.take().is_none() || self.link_version("previous")?.is_none() {
            return Ok(None);
        }
        let to = self.rollback()?;
        self.write_state_file(&file)?;
        Ok(Some(to))
    }

    /// Replaces a symlink atomically: a fresh link renamed over the old one.
    fn set_link(&self, name: &str, target: &str) -> Result<(), StoreError> {
        let tmp = self.root.join(format!("{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        symlink(target, &tmp).map_err(io(&tmp))?;
        let path = self.root.join(name);
        fs::rename(&tmp, &path).map_err(io(&path))?;
        fsync_dir(&self.root)
    }

    /// Removes staging directories a cut left behind.
    fn clean_staging(&self) -> Result<(), StoreError> {
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let path = entry.map_err(io(&self.root))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with('v') && name.ends_with(".tmp") {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Removes version directories that neither `current` nor `previous` points at.
    fn prune(&self) -> Result<(), StoreError> {
        let keep = [self.link_version("current")?, self.link_version("previous")?];
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let path = entry.map_err(io(&self.root))?.path();
            let v = path.file_name().and_then(|n| n.to_str()).and_then(version_of);
            if let Some(v) = v {
                if !keep.contains(&Some(v)) && path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path).map_err(io(&path))?;
                }
            }
        }
        fsync_dir(&self.root)
    }
}
