//! The QEMU guest: Debian's kernel and a tiny initramfs built at run time, booted under TCG to
//! run the workload on ext4 over a `dm-log-writes` target.
//!
//! - **Kernel.** Debian's `linux-image-amd64` (its versioned dependency), fetched with `apt-get
//!   download` into the cache directory and unpacked with `dpkg-deb -x`; never committed.
//! - **Modules.** dm-log-writes, virtio (PCI + block), ext4 and crc32c, with their dependencies
//!   read from each module's `.modinfo` `depends=` field (the package ships no modules.dep;
//!   depmod runs only when it is installed), loaded with busybox `insmod` in dependency order.
//! - **Initramfs.** An uncompressed newc cpio written here: `/init` (a busybox shell script),
//!   busybox-static, `dmsetup` and the workload binary with the shared libraries `ldd` lists.
//! - **Disks.** `vda` is the data disk (a copy of the ext4 base image made on the host with
//!   `mkfs.ext4 -d`, so `media/` already exists), `vdb` the log disk (sparse, zero).
//!
//! The guest creates `lw` = log-writes(vda, vdb), mounts ext4 on it, marks `mounted`, runs the
//! workload, unmounts, removes the target (which writes the final super block) and powers off.
//! Its console comes back as a string: the workload's promise lines and `LECTERN-GUEST rc=<n>`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Modules the guest needs, by name; their dependencies are added.
const ROOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk", "dm-log-writes", "crc32c_generic", "ext4"];
/// Size of the data disk.
pub const DATA_BYTES: u64 = 32 << 20;
/// Size of the log disk (sparse): the workload logs about 10 MB.
const LOG_BYTES: u64 = 512 << 20;

/// An unpacked Debian kernel: `vmlinuz` and its module tree.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.stderr(Stdio::piped()).stdout(Stdio::piped()).output().with_context(|| format!("run {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Kernel {
    /// The kernel unpacked under `cache`, fetching Debian's current `linux-image-amd64`
    /// dependency with `apt-get download` the first time.
    pub fn fetch(cache: &Path) -> Result<Kernel> {
        let root = cache.join("kernel");
        std::fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
        // Two runs at once (parallel tests) must not unpack into the same place.
        let lock = std::fs::File::create(cache.join("kernel.lock"))?;
        lock.lock().with_context(|| format!("lock {}/kernel.lock", cache.display()))?;
        if let Some(k) = Self::find(&root)? {
            return Ok(k);
        }
        let depends = || -> Option<String> {
            let deps = run_ok(Command::new("apt-cache").args(["depends", "linux-image-amd64"])).ok()?;
            deps.lines().find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")).map(str::to_owned))
        };
        let pkg = match depends() {
            Some(p) => p,
            None => {
                // A machine whose packages were all installed earlier may have no package lists.
                run_ok(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update (to find Debian's kernel package)")?;
                depends().context("apt-cache: linux-image-amd64 names no linux-image-* dependency")?
            }
        };
        run_ok(Command::new("apt-get").args(["download", "-q", &pkg]).current_dir(cache)).with_context(|| format!("apt-get download {pkg}"))?;
        let deb = std::fs::read_dir(cache)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{pkg}_")) && n.ends_with(".deb")))
            .with_context(|| format!("apt-get download {pkg} left no .deb in {}", cache.display()))?;
        let tmp = cache.join("kernel.partial");
        let _ = std::fs::remove_dir_all(&tmp);
        run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp)).with_context(|| format!("dpkg-deb -x {}", deb.display()))?;
        std::fs::rename(&tmp, &root)?;
        std::fs::remove_file(&deb)?;
        Self::find(&root)?.with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
    }

    fn find(root: &Path) -> Result<Option<Kernel>> {
        let Ok(entries) = std::fs::read_dir(root.join("boot")) else { return Ok(None) };
        for e in entries {
            let name = e?.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("vmlinuz-") {
                let modules = root.join("lib/modules").join(version);
                ensure!(modules.is_dir(), "{} has no module tree for {version}", root.display());
                return Ok(Some(Kernel { vmlinuz: root.join("boot").join(&name), modules, version: version.to_owned() }));
            }
        }
        Ok(None)
    }

    /// The module files to load, dependencies first.
    pub fn module_load_order(&self) -> Result<Vec<PathBuf>> {
        let mut by_name = std::collections::HashMap::new();
        for path in walk(&self.modules.join("kernel"))? {
            if let Some(stem) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                by_name.insert(stem.replace('-', "_"), path);
            }
        }
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        fn visit(name: &str, by_name: &std::collections::HashMap<String, PathBuf>, seen: &mut BTreeSet<String>, order: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
            ensure!(depth < 32, "module dependencies of {name} nest too deep (a cycle?)");
            let key = name.replace('-', "_");
            if !seen.insert(key.clone()) {
                return Ok(());
            }
            let path = by_name.get(&key).with_context(|| format!("module {name} is not in the kernel package (built in? then drop it from ROOT_MODULES)"))?;
            for dep in modinfo_depends(path)? {
                visit(&dep, by_name, seen, order, depth + 1)?;
            }
            order.push(path.clone());
            Ok(())
        }
        for m in ROOT_MODULES {
            visit(m, &by_name, &mut seen, &mut order, 0)?;
        }
        Ok(order)
    }
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// The `depends=` list of a module's `.modinfo` strings (NUL-separated `key=value` pairs). The
/// module file is uncompressed in Debian 12's packages; a compressed one is refused by name.
fn modinfo_depends(path: &Path) -> Result<Vec<String>> {
    let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(data.starts_with(b"\x7fELF"), "{} is not an ELF module (compressed modules are not supported)", path.display());
    let key = b"depends=";
    let at = data
        .windows(key.len() + 1)
        .position(|w| w[0] == 0 && &w[1..] == key)
        .with_context(|| format!("{} has no depends= in its .modinfo", path.display()))?;
    let value = &data[at + 1 + key.len()..];
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    Ok(String::from_utf8_lossy(&value[..end]).split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
}

/// A newc ("070701") cpio archive, the format the kernel unpacks as an initramfs.
struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn new() -> Cpio {
        Cpio { out: Vec::new(), ino: 1, dirs: BTreeSet::new() }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let mut h = String::new();
        let name_len = name.len() + 1;
        write!(h, "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", self.ino, mode, 0, 0, 1, 0, data.len()).unwrap();
        write!(h, "{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}", 0, 0, 0, 0, name_len, 0).unwrap();
        self.ino += 1;
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds the parent directories of `name` that are not in the archive yet.
    fn parents(&mut self, name: &str) {
        let mut dir = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
            if self.dirs.insert(dir.clone()) {
                let d = dir.clone();
                self.entry(&d, 0o040755, &[]);
            }
        }
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.parents(name);
        self.entry(name, 0o100000 | mode, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.parents(name);
        self.entry(name, 0o120777, target.as_bytes());
    }

    fn dir(&mut self, name: &str) {
        self.parents(&format!("{name}/x"));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries (and the dynamic loader) a binary needs, as `ldd` lists them.
fn shared_libs(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(binary).output().context("run ldd (apt: libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if [&text, &err].iter().any(|t| t.contains("not a dynamic executable") || t.contains("statically linked")) {
        return Ok(Vec::new());
    }
    ensure!(out.status.success(), "ldd {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Finds a program on PATH or in the usual sbin directories (root's tools live there).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"]).map(|d| Path::new(d).join(name)).find(|p| p.is_file());
    found
}

/// What the guest runs: the workload binary and the fault switch for its journal.
pub struct GuestSpec<'a> {
    pub kernel: &'a Kernel,
    pub workload: &'a Path,
    pub fault: Option<&'a str>,
}

/// Builds the initramfs for `spec` into `out`.
pub fn build_initramfs(spec: &GuestSpec, out: &Path) -> Result<()> {
    let busybox = which("busybox").context("busybox not found (apt: busybox-static)")?;
    let dmsetup = which("dmsetup").context("dmsetup not found (apt: dmsetup)")?;
    let mut c = Cpio::new();
    for d in ["dev", "proc", "sys", "mnt", "tmp", "sbin", "usr/bin", "usr/sbin"] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, &std::fs::read(&busybox)?);
    ensure!(shared_libs(&busybox)?.is_empty(), "{} is dynamically linked; the guest needs busybox-static", busybox.display());
    c.symlink("bin/sh", "busybox");
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
    let mut insmods = String::new();
    for (i, m) in spec.kernel.module_load_order()?.iter().enumerate() {
        let name = format!("modules/{i:02}-{}", m.file_name().unwrap().to_string_lossy());
        c.file(&name, 0o644, &std::fs::read(m)?);
        writeln!(insmods, "insmod /{name} || fail 'insmod {name}'").unwrap();
    }
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

/// A finished guest run.
pub struct GuestRun {
    pub console: String,
    pub elapsed: Duration,
}

/// Boots the guest on `data` (a copy of the base image) and `log` (created empty here).
pub fn boot(kernel: &Kernel, initramfs: &Path, data: &Path, log: &Path, timeout: Duration) -> Result<GuestRun> {
    let qemu = which("qemu-system-x86_64").context("qemu-system-x86_64 not found (apt: qemu-system-x86)")?;
    std::fs::File::create(log)?.set_len(LOG_BYTES)?;
    let started = Instant::now();
    let drive = |p: &Path| format!("file={},format=raw,if=virtio,cache=unsafe", p.display());
    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-nographic", "-no-reboot", "-monitor", "none", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet loglevel=3 panic=-1"])
        .args(["-drive", &drive(data), "-drive", &drive(log)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("start qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
        s
    });
    loop {
        if let Some(status) = child.try_wait()? {
            let console = String::from_utf8_lossy(&reader.join().expect("reader thread")).into_owned();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            ensure!(status.success(), "qemu exited {status}: {}\nconsole:\n{}", err.trim(), tail(&console, 40));
            return Ok(GuestRun { console, elapsed: started.elapsed() });
        }
        if started.elapsed() > timeout {
            // Our own child: killed by its pid through the handle, nothing else.
            let _ = child.kill();
            let _ = child.wait();
            let console = String::from_utf8_lossy(&reader.join().expect("reader thread")).into_owned();
            bail!("the guest did not power off within {timeout:?}; console:\n{}", tail(&console, 40));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes a console log next to the run's other files, for a person to read after a failure.
pub fn save_console(path: &Path, console: &str) -> Result<()> {
    std::fs::File::create(path)?.write_all(console.as_bytes())?;
    Ok(())
}
