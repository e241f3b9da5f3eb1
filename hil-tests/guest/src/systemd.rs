//! A guest with a real systemd as PID 1 on the host's own root (as RAUC's `qemu-test` does).
//!
//! The initramfs's `/init` loads the 9p and overlay modules, mounts the host's `/` read-only over
//! virtio-9p, puts a tmpfs overlay on top (the guest writes nothing back to the host, and every
//! run starts from the host's files), removes `/.dockerenv` and `/run/.containerenv` in the
//! overlay (systemd would otherwise detect a container and skip what a real boot does), copies the
//! test's files into it, bind-mounts host files over guest paths (the binaries under test at the
//! paths the unit names), and `switch_root`s to `/lib/systemd/systemd`, which boots
//! [`SystemdGuest::target`]. The test's own unit under that target prints `LECTERN-GUEST ...`
//! lines to the console and powers the machine off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::{add_busybox, add_modules, boot, Cpio, GuestRun, Kernel, Machine, HOST_ROOT_TAG};

/// 9p over virtio and the overlay; their dependencies (netfs, fscache) are added.
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// A file the guest sees in its root (in the overlay), with its mode.
#[derive(Clone, Debug)]
pub struct GuestFile {
    /// Absolute path in the guest.
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

impl GuestFile {
    pub fn new(path: &str, mode: u32, data: impl Into<Vec<u8>>) -> GuestFile {
        GuestFile { path: path.to_owned(), mode, data: data.into() }
    }
}

/// What to boot.
#[derive(Clone, Debug)]
pub struct SystemdGuest {
    pub kernel: Kernel,
    /// Files copied into the overlay before systemd starts (units, configs, the test script).
    pub files: Vec<GuestFile>,
    /// (host path, guest path): bind mounts of host files over guest paths (they need not exist
    /// in the guest).
    pub binds: Vec<(PathBuf, String)>,
    /// Kernel modules loaded before systemd starts, beyond the harness's own (say `vivid`, a
    /// virtual V4L2 camera); the host's root has no module tree for Debian's kernel.
    pub modules: Vec<String>,
    /// The unit systemd boots into (`systemd.unit=`).
    pub target: String,
    pub memory_mb: u32,
    /// The overlay's tmpfs: everything the guest writes, media included.
    pub overlay_mb: u32,
    pub timeout: Duration,
    pub console_log: Option<PathBuf>,
}

/// Builds the initramfs into `out`.
pub fn build_initramfs(g: &SystemdGuest, out: &Path) -> Result<()> {
    let mut c = Cpio::new();
    for d in ["dev", "proc", "sys", "lower", "rw", "newroot", "payload"] {
        c.dir(d);
    }
    add_busybox(&mut c)?;
    let modules: Vec<&str> = MODULES.iter().copied().chain(g.modules.iter().map(String::as_str)).collect();
    let insmods = add_modules(&mut c, &g.kernel, &modules)?;
    for f in &g.files {
        ensure!(f.path.starts_with('/') && !f.path.contains(".."), "guest file path {:?} must be absolute and plain", f.path);
        c.file(&format!("payload{}", f.path), f.mode, &f.data);
    }
    let mut binds = String::new();
    for (host, guest) in &g.binds {
        ensure!(host.is_absolute() && host.exists(), "bind source {} does not exist (build it first)", host.display());
        let (h, gp) = (host.display(), guest);
        writeln!(binds, "mkdir -p \"$(dirname /newroot{gp})\"; touch /newroot{gp}; mount --bind /lower{h} /newroot{gp} || fail 'bind {h} on {gp}'").unwrap();
    }
    let init = INIT
        .replace("@INSMODS@", &insmods)
        .replace("@TAG@", HOST_ROOT_TAG)
        .replace("@OVERLAY_MB@", &g.overlay_mb.to_string())
        .replace("@BINDS@", &binds);
    c.file("init", 0o755, init.as_bytes());
    std::fs::write(out, c.finish())?;
    Ok(())
}

/// Boots the guest (initramfs built in `scratch`) until it powers off.
pub fn run(g: &SystemdGuest, scratch: &Path) -> Result<GuestRun> {
    let initramfs = scratch.join("systemd-initramfs.cpio");
    build_initramfs(g, &initramfs)?;
    boot(&Machine {
        kernel: g.kernel.clone(),
        initramfs,
        // panic=-1: a kernel panic reboots, which -no-reboot turns into a QEMU exit.
        // tsc=unstable: under TCG the TSC calibrates wrong and the guest's clock ran about 7x
        // fast (a 90 s boot showed an uptime of 671 s), which would shrink every timeout the
        // test is about (WatchdogSec, RestartSec, the start limit); the HPET follows the host.
        append: format!("quiet loglevel=3 panic=-1 tsc=unstable systemd.unit={} systemd.show_status=auto", g.target),
        drives: Vec::new(),
        host_root: true,
        memory_mb: g.memory_mb,
        timeout: g.timeout,
        console_log: g.console_log.clone(),
    })
}

/// The initramfs's `/init`: any failure prints `LECTERN-GUEST rc=99 <why>` and powers off.
const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "LECTERN-GUEST rc=99 $1"; poweroff -f; }
@INSMODS@
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro @TAG@ /lower || fail 'mount the host root over 9p'
mount -t tmpfs -o size=@OVERLAY_MB@m,mode=0755 rw /rw || fail 'tmpfs'
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || fail 'overlay on the host root'
# systemd takes /.dockerenv (or /run/.containerenv) for a container and skips a real boot's work.
rm -f /newroot/.dockerenv /newroot/run/.containerenv
[ -e /newroot/.dockerenv ] && fail '/.dockerenv is still visible'
# The host's /tmp (build trees of many GB) would be emptied file by file over 9p by
# systemd-tmpfiles at boot (`D /tmp`): the guest gets a /tmp of its own.
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fail 'tmpfs on /tmp'
cp -a /payload/. /newroot/ || fail 'copy the test files'
@BINDS@
# The kernel's clock against the host's (the console log's timestamps): see `run`.
echo "LECTERN-GUEST initramfs-uptime $(cut -d' ' -f1 /proc/uptime)"
umount /sys
mount --move /dev /newroot/dev || fail 'move /dev'
umount /proc
exec switch_root /newroot /lib/systemd/systemd
"#;
