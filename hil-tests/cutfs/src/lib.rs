//! cutfs: a FUSE filesystem for power-cut testing. Written data is visible at once but survives a
//! *cut* only if it was fsynced; created, renamed and removed names survive only if their directory
//! was fsynced. A cut throws away everything else, as pulling the plug on a real card would, where a
//! process kill (the page cache survives it) proves nothing about fsync.
//!
//! [`model`] holds the rules, sans I/O; [`fuse`] serves the model through the kernel; [`CutFs`]
//! is the handle tests use: mount in-process on a background session, [`CutFs::cut`], unmount.
//! A cut unmounts, resets the model and mounts again, so the kernel cannot serve a page it cached
//! before the cut. The `cutfs` binary wraps the same handle behind a control socket.
//! The model's limits are in docs/powercut-harness.md.

pub mod fuse;
pub mod model;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use model::Stats;

/// Everything that can go wrong mounting or cutting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel refused the mount (no /dev/fuse, not permitted, mountpoint missing).
    #[error("mount cutfs at {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    /// The unmount before a cut or at the end failed, typically because a process still has a file
    /// or its working directory under the mountpoint (EBUSY).
    #[error("unmount cutfs at {path} (is a file under it still open?): {source}")]
    Unmount { path: PathBuf, source: std::io::Error },
    /// A method was called on a handle whose mount is gone (only possible after a failed remount).
    #[error("cutfs at {0} is not mounted")]
    NotMounted(PathBuf),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How often a busy unmount is tried, 50 ms apart (one second in all).
const UNMOUNT_ATTEMPTS: u32 = 20;

/// A mounted cutfs. Dropping it unmounts (errors are logged, as drop cannot return them).
pub struct CutFs {
    model: Arc<Mutex<model::Model>>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl CutFs {
    /// Mounts an empty cutfs at `mountpoint` (an existing directory), owned by the caller.
    pub fn mount(mountpoint: &Path) -> Result<CutFs> {
        use std::os::unix::fs::MetadataExt;
        // The root belongs to whoever owns the mountpoint, as with any mounted filesystem's root.
        let meta = std::fs::metadata(mountpoint).map_err(|source| Error::Mount { path: mountpoint.to_owned(), source })?;
        let (uid, gid) = (meta.uid(), meta.gid());
        let model = Arc::new(Mutex::new(model::Model::new(uid, gid)));
        let mut fs = CutFs { model, mountpoint: mountpoint.to_owned(), session: None };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> Result<fuser::BackgroundSession> {
        let err = |source| Error::Mount { path: self.mountpoint.clone(), source };
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("cutfs".into()), fuser::MountOption::Subtype("cutfs".into())];
        fuser::spawn_mount(fuse::CutFuse::new(self.model.clone()), &self.mountpoint, &config).map_err(err)
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Cuts power: unmounts (every file under the mount must be closed), drops everything that was
    /// not durable, and mounts the survivors again at the same place. Returns the counters, with
    /// what this cut dropped.
    pub fn cut(&mut self) -> Result<Stats> {
        self.unmount_session(false)?;
        let stats = self.lock().cut();
        log::info!(target: "cutfs", "cut {}: dropped {} inodes, {} bytes", stats.cuts, stats.last_cut_dropped_inodes, stats.last_cut_dropped_bytes);
        self.session = Some(self.spawn()?);
        Ok(stats)
    }

    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    /// Unmounts for good (the durable image is dropped with `self`).
    pub fn unmount(mut self) -> Result<()> {
        self.unmount_session(false)
    }

    /// Unmounts through `fusermount3 -u` (`-z`, lazily, when `lazy`). A busy mount (EBUSY) makes
    /// a non-lazy unmount fail and stay mounted, so the caller can close what is open and retry;
    /// only once the kernel has let go is the session joined.
    fn unmount_session(&mut self, lazy: bool) -> Result<()> {
        if self.session.is_none() {
            return Err(Error::NotMounted(self.mountpoint.clone()));
        }
        let err = |source| Error::Unmount { path: self.mountpoint.clone(), source };
        // A file closed a moment ago can still pin the mount: any fork in this process (another
        // test spawning a child) briefly holds a copy of every descriptor until its exec. So
        // "busy" is retried for a while before it counts.
        let mut attempts = 0;
        loop {
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u").args(lazy.then_some("-z")).arg("--").arg(&self.mountpoint);
            let out = cmd.output().map_err(|e| err(std::io::Error::new(e.kind(), format!("fusermount3 (apt: fuse3): {e}"))))?;
            if out.status.success() {
                break;
            }
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            attempts += 1;
            if !msg.contains("busy") || attempts >= UNMOUNT_ATTEMPTS {
                return Err(err(std::io::Error::other(msg)));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // The kernel has dropped the connection, so the session thread ends on its own (and fuser's
        // own unmount at drop finds nothing left to do).
        let session = self.session.take().expect("checked above");
        if lazy {
            // A lazily detached mount lives on until its last file closes; do not wait for that.
            return Ok(());
        }
        session.join().map_err(err)
    }

    fn lock(&self) -> MutexGuard<'_, model::Model> {
        // A panic inside a FUSE handler poisons the lock; the model itself is still consistent
        // because every operation validates before it mutates.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for CutFs {
    fn drop(&mut self) {
        if self.session.is_some() {
            // Lazily, so a file still open (a test that panicked) cannot leave the mount behind.
            if let Err(e) = self.unmount_session(true) {
                log::error!(target: "cutfs", "{e}");
            }
        }
    }
}
