//! The crash-state guest: Debian's kernel and a tiny initramfs, booted under TCG through the
//! shared guest harness (`lectern-guest`, hil-tests/guest: the kernel, modules, cpio writer and
//! QEMU), to run the workload on ext4 over a `dm-log-writes` target.
//!
//! - **Modules.** dm-log-writes, virtio (PCI + block), ext4 and crc32c (with their dependencies).
//! - **Initramfs.** `/init` (a busybox shell script, below), busybox-static, `dmsetup` and the
//!   workload binary with the shared libraries `ldd` lists.
//! - **Disks.** `vda` is the data disk (a copy of the ext4 base image made on the host with
//!   `mkfs.ext4 -d`, so `media/` already exists), `vdb` the log disk (sparse, zero).
//!
//! The guest creates `lw` = log-writes(vda, vdb), mounts ext4 on it, marks `mounted`, runs the
//! workload, unmounts, removes the target (which writes the final super block) and powers off.
//! Its console comes back as a string: the workload's promise lines and `LECTERN-GUEST rc=<n>`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

pub use lectern_guest::{run_ok, save_console, shared_libs, tail, which, Cpio, GuestRun, Kernel};

/// Modules the guest needs, by name; their dependencies are added.
const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "dm-log-writes", "crc32c_generic", "ext4"];
/// Size of the data disk.
pub const DATA_BYTES: u64 = 32 << 20;
/// Size of the log disk (sparse): the workload logs about 10 MB.
const LOG_BYTES: u64 = 512 << 20;

/// What the guest runs: the workload binary and the fault switch for its journal.
pub struct GuestSpec<'a> {
    pub kernel: &'a Kernel,
    pub workload: &'a Path,
    pub fault: Option<&'a str>,
}

/// Builds the initramfs for `spec` into `out`.
pub fn build_initramfs(spec: &GuestSpec, out: &Path) -> Result<()> {
    let dmsetup = which("dmsetup").context("dmsetup not found (apt: dmsetup)")?;
    let mut c = Cpio::new();
    for d in ["dev", "proc", "sys", "mnt", "tmp", "sbin", "usr/bin", "usr/sbin"] {
        c.dir(d);
    }
    lectern_guest::add_busybox(&mut c)?;
    let mut libs = BTreeSet::new();
    for (name, bin) in [("sbin/dmsetup", dmsetup.as_path()), ("workload", spec.workload)] {
        c.file(name, 0o755, &std::fs::read(bin).with_context(|| format!("read {}", bin.display()))?);
        libs.extend(shared_libs(bin)?);
    }
    for lib in &libs {
        // The loader's path is baked into every binary, so each library goes where ldd found it.
        let name = lib.to_string_lossy().trim_start_matches('/').to_owned();
        c.file(&name, 0o755, &std::fs::read(lib).with_context(|| format!("read {}", lib.display()))?);
    }
    let insmods = lectern_guest::add_modules(&mut c, spec.kernel, ROOT_MODULES)?;
    let fault = spec.fault.map(|f| format!("export LECTERN_JOURNAL_FAULT={f}")).unwrap_or_default();
    let init = INIT.replace("@INSMODS@", &insmods).replace("@FAULT@", &fault);
    c.file("init", 0o755, init.as_bytes());
    std::fs::write(out, c.finish()).with_context(|| format!("write {}", out.display()))
}

/// The guest's `/init`. Any failure prints `LECTERN-GUEST rc=<n> <why>` and powers off, so the
/// host never waits for a timeout to learn that the guest gave up.
const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
fail() { echo "LECTERN-GUEST rc=99 $1"; poweroff -f; }
@INSMODS@
n=0
while [ ! -b /dev/vdb ]; do n=$((n+1)); [ $n -gt 100 ] && fail 'no /dev/vdb'; sleep 0.1; done
size=$(blockdev --getsz /dev/vda) || fail 'blockdev vda'
dmsetup --noudevsync create lw --table "0 $size log-writes /dev/vda /dev/vdb" || fail 'dmsetup create'
# No udev here: dmsetup makes the node itself when asked.
dmsetup mknodes lw || fail 'dmsetup mknodes'
[ -b /dev/mapper/lw ] || fail 'no /dev/mapper/lw'
mount -t ext4 /dev/mapper/lw /mnt || fail 'mount ext4 on log-writes'
dmsetup message lw 0 mark mounted || fail 'mark mounted'
@FAULT@
/workload /mnt/media lw
rc=$?
unset LECTERN_JOURNAL_FAULT
umount /mnt || fail 'umount'
dmsetup --noudevsync remove lw || fail 'dmsetup remove'
sync
echo "LECTERN-GUEST rc=$rc"
poweroff -f
"#;

/// Makes the ext4 base image (with an empty `media/`) at `path`.
pub fn make_base_image(path: &Path, scratch: &Path) -> Result<()> {
    let tree = scratch.join("base-tree");
    std::fs::create_dir_all(tree.join("media"))?;
    std::fs::File::create(path)?.set_len(DATA_BYTES)?;
    let mkfs = which("mkfs.ext4").context("mkfs.ext4 not found (apt: e2fsprogs)")?;
    // Lazy initialisation would have the kernel zero inode tables in the background while the
    // workload runs, adding writes that are no part of the protocol under test.
    run_ok(Command::new(mkfs).args(["-q", "-F", "-b", "4096", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-d"]).arg(&tree).arg(path))?;
    Ok(())
}

/// Boots the guest on `data` (a copy of the base image) and `log` (created empty here).
pub fn boot(kernel: &Kernel, initramfs: &Path, data: &Path, log: &Path, timeout: Duration) -> Result<GuestRun> {
    std::fs::File::create(log)?.set_len(LOG_BYTES)?;
    lectern_guest::boot(&lectern_guest::Machine {
        kernel: kernel.clone(),
        initramfs: initramfs.to_owned(),
        append: "quiet loglevel=3 panic=-1".into(),
        drives: vec![data.to_owned(), log.to_owned()],
        host_root: false,
        memory_mb: 512,
        timeout,
        console_log: None,
    })
}
