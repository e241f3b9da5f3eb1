//! The one QEMU TCG guest harness of the tests: Debian's kernel, an initramfs built at run time,
//! and a machine booted under TCG (KVM is not usable on these machines) whose serial console comes
//! back as a string. Two kinds of guest use it:
//!
//! - the crash-state check (`lectern-logwrites`): a busybox `/init` of its own, two virtio disks,
//!   the journal over `dm-log-writes` (docs/powercut-harness.md);
//! - a real systemd as PID 1 on the host's root ([`systemd`]): the root shared read-only over 9p
//!   (virtio), a tmpfs overlay on top so the guest writes nothing back, `/.dockerenv` hidden so
//!   systemd does not believe it runs in a container, then `switch_root` to systemd (the packaged
//!   unit under test: hil-tests/guest/tests/systemd.rs, docs/systemd.md).
//!
//! - **Kernel.** Debian's `linux-image-amd64` (its versioned dependency), fetched with `apt-get
//!   download` into the cache directory and unpacked with `dpkg-deb -x`; never committed.
//! - **Modules** by name, with their dependencies read from each module's `.modinfo` `depends=`
//!   field (the package ships no modules.dep; depmod runs only when it is installed), loaded with
//!   busybox `insmod` in dependency order.
//! - **Initramfs.** An uncompressed newc cpio written here ([`Cpio`]), with busybox-static and the
//!   shared libraries `ldd` lists for any binary put in it.

pub mod systemd;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};


/// An unpacked Debian kernel: `vmlinuz` and its module tree.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
    pub version: String,
}

pub fn run_ok(cmd: &mut Command) -> Result<String> {
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

    /// The module files to load for `roots` (module names), dependencies first.
    pub fn module_load_order(&self, roots: &[&str]) -> Result<Vec<PathBuf>> {
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
            let path = by_name.get(&key).with_context(|| format!("module {name} is not in the kernel package (built in? then drop it from the guest's module list)"))?;
            for dep in modinfo_depends(path)? {
                visit(&dep, by_name, seen, order, depth + 1)?;
            }
            order.push(path.clone());
            Ok(())
        }
        for m in roots {
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
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Default for Cpio {
    fn default() -> Cpio {
        Cpio::new()
    }
}

impl Cpio {
    pub fn new() -> Cpio {
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

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.parents(name);
        self.entry(name, 0o100000 | mode, data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.parents(name);
        self.entry(name, 0o120777, target.as_bytes());
    }

    pub fn dir(&mut self, name: &str) {
        self.parents(&format!("{name}/x"));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// The shared libraries (and the dynamic loader) a binary needs, as `ldd` lists them.
pub fn shared_libs(binary: &Path) -> Result<Vec<PathBuf>> {
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


/// `LECTERN_GUEST_CACHE` (or the older `LECTERN_LOGWRITES_CACHE`), else `target/logwrites-cache`
/// in the workspace: where the kernel is unpacked once for every guest.
pub fn default_cache() -> PathBuf {
    std::env::var_os("LECTERN_GUEST_CACHE")
        .or_else(|| std::env::var_os("LECTERN_LOGWRITES_CACHE"))
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/logwrites-cache"))
}

/// The `insmod` lines of an `/init` for `roots` (and their dependencies): each module goes into
/// the archive as `modules/NN-name.ko`, and a failed load calls the script's `fail` function.
pub fn add_modules(c: &mut Cpio, kernel: &Kernel, roots: &[&str]) -> Result<String> {
    let mut insmods = String::new();
    for (i, m) in kernel.module_load_order(roots)?.iter().enumerate() {
        let name = format!("modules/{i:02}-{}", m.file_name().unwrap().to_string_lossy());
        c.file(&name, 0o644, &std::fs::read(m)?);
        writeln!(insmods, "insmod /{name} || fail 'insmod {name}'").unwrap();
    }
    Ok(insmods)
}

/// Puts busybox-static into the archive as `/bin/busybox` with `/bin/sh`.
pub fn add_busybox(c: &mut Cpio) -> Result<()> {
    let busybox = which("busybox").context("busybox not found (apt: busybox-static)")?;
    ensure!(shared_libs(&busybox)?.is_empty(), "{} is dynamically linked; the guest needs busybox-static", busybox.display());
    c.file("bin/busybox", 0o755, &std::fs::read(&busybox)?);
    c.symlink("bin/sh", "busybox");
    Ok(())
}

/// The emulated machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub kernel: Kernel,
    pub initramfs: PathBuf,
    /// The kernel command line after `console=ttyS0`.
    pub append: String,
    /// Raw virtio disks, `vda`, `vdb`, ... in order.
    pub drives: Vec<PathBuf>,
    /// Share the host's `/` read-only over 9p (virtio) with mount tag [`HOST_ROOT_TAG`].
    pub host_root: bool,
    pub memory_mb: u32,
    /// From boot to power-off.
    pub timeout: Duration,
    /// The console is also written here as it arrives (to read a run while it goes, or after a
    /// timeout).
    pub console_log: Option<PathBuf>,
}

/// The 9p mount tag of the host's root.
pub const HOST_ROOT_TAG: &str = "hostroot";

/// A finished guest run.
pub struct GuestRun {
    pub console: String,
    pub elapsed: Duration,
}

/// Boots `m` and waits until the guest powers off (a clean QEMU exit) or `m.timeout` passes.
pub fn boot(m: &Machine) -> Result<GuestRun> {
    let qemu = which("qemu-system-x86_64").context("qemu-system-x86_64 not found (apt: qemu-system-x86)")?;
    let started = Instant::now();
    let mut cmd = Command::new(qemu);
    cmd.args(["-accel", "tcg", "-smp", "1", "-nographic", "-no-reboot", "-monitor", "none", "-nodefaults", "-serial", "stdio"])
        .args(["-m", &m.memory_mb.to_string()])
        .arg("-kernel")
        .arg(&m.kernel.vmlinuz)
        .arg("-initrd")
        .arg(&m.initramfs)
        .args(["-append", &format!("console=ttyS0 {}", m.append)]);
    for d in &m.drives {
        cmd.args(["-drive", &format!("file={},format=raw,if=virtio,cache=unsafe", d.display())]);
    }
    if m.host_root {
        // multidevs=remap: the host's root spans several filesystems, whose inode numbers would
        // otherwise collide in the guest.
        cmd.args(["-virtfs", &format!("local,path=/,mount_tag={HOST_ROOT_TAG},security_model=passthrough,readonly=on,multidevs=remap")]);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("start qemu-system-x86_64")?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut log = match &m.console_log {
        Some(p) => Some(std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?),
        None => None,
    };
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let mut buf = [0u8; 4096];
        let mut line = Vec::new();
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            s.extend_from_slice(&buf[..n]);
            // The log file's lines carry the host's seconds since boot when the line ended, to
            // see where a slow run's time went (the guest's own clock is no witness of that).
            if let Some(f) = log.as_mut() {
                for &b in &buf[..n] {
                    line.push(b);
                    if b == b'\n' {
                        let _ = f.write_all(format!("[{:7.2}] ", started.elapsed().as_secs_f64()).as_bytes());
                        let _ = f.write_all(&line);
                        line.clear();
                    }
                }
            }
        }
        if let Some(f) = log.as_mut() {
            let _ = f.write_all(&line);
        }
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
        if started.elapsed() > m.timeout {
            // Our own child: killed by its pid through the handle, nothing else.
            let _ = child.kill();
            let _ = child.wait();
            let console = String::from_utf8_lossy(&reader.join().expect("reader thread")).into_owned();
            bail!("the guest did not power off within {:?}; console:\n{}", m.timeout, tail(&console, 60));
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
