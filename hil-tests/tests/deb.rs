//! The .deb for Raspberry Pi OS, end to end: `cargo deb` builds it from the metadata in
//! firmware/lecternd/Cargo.toml, `dpkg-deb` shows what it holds (files, modes, conffiles,
//! Depends, maintainer scripts), and dpkg installs, upgrades, removes and purges it for real.
//!
//! dpkg never runs on this machine's own root: every dpkg call runs in a throwaway *box*, a
//! private mount namespace (`unshare -m`) with an overlayfs over `/` whose upper layer lives in
//! the test's temporary directory, chrooted into. The host's packages (GStreamer, systemd) satisfy
//! the package's Depends; everything dpkg and the maintainer scripts write (/etc/passwd, the dpkg
//! database, /var/lib/lectern) lands in the upper layer, which persists from one box to the next
//! and is deleted with the temporary directory. `/run` is an empty tmpfs in the box, so the
//! scripts see no running systemd: `deb-systemd-helper` enables the unit offline (symlinks) and
//! `deb-systemd-invoke` is not called. The upgrade checks put stand-ins for `systemctl`,
//! `deb-systemd-invoke` and `lectern status` first on PATH to see what postinst would do on a
//! running box. Not covered here: the unit actually starting under systemd with its hardening
//! (the QEMU guest test does that), and Raspberry Pi OS's own package versions (the box is the
//! host's Debian 12; Raspberry Pi OS bookworm has the same package names).
//!
//! Needs root, `unshare`, overlayfs and cargo-deb (scripts/install-deps.sh installs it). Outside
//! CI a missing capability skips loudly; under CI (CI=true) it fails. Cost: no build of its own
//! (it packages the binaries scripts/test.sh built), two packagings and about twenty boxes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// The package's name and where its pieces land, as firmware/lecternd/Cargo.toml says.
const PKG: &str = "lectern";
const CONFIG: &str = "/etc/lectern/lectern.toml";
const MEDIA: &str = "/var/lib/lectern";
const UNIT: &str = "/usr/lib/systemd/system/lecternd.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/lecternd.service";
/// The CLI's man page: cargo-deb gzips what the metadata puts under usr/share/man (Debian policy).
const MAN: &str = "/usr/share/man/man1/lectern.1.gz";
/// The CLI's completions where Debian's bash, zsh and fish look, each with its committed source
/// (hil-tests/tests/cli_assets.rs keeps those current).
const COMPLETIONS: &[(&str, &str)] = &[
    ("/usr/share/bash-completion/completions/lectern", "packaging/completions/lectern.bash"),
    ("/usr/share/zsh/vendor-completions/_lectern", "packaging/completions/_lectern"),
    ("/usr/share/fish/vendor_completions.d/lectern.fish", "packaging/completions/lectern.fish"),
];

/// The GStreamer plugin packages the capture pipeline needs (firmware/capture: see the comment
/// on `depends` in firmware/lecternd/Cargo.toml for which element lives in which).
const GST_DEPENDS: &[&str] = &[
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
    "gstreamer1.0-alsa",
    // From `$auto` (dpkg-shlibdeps): the binaries link libgstreamer and libgstapp.
    "libgstreamer1.0-0",
    "libgstreamer-plugins-base1.0-0",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

/// The target directory this test was built into (`target/debug/deps/deb-*` → `target`), where
/// the workspace's binaries are.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).expect("test binary is not in <target>/<profile>/deps").to_owned()
}

fn text(out: &Output) -> String {
    format!("status {}\nstdout:\n{}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Why this machine cannot run the test, if it cannot.
fn missing_capability(scratch: &Path) -> Option<String> {
    match Command::new("cargo").args(["deb", "--version"]).output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("cargo-deb is not installed (scripts/install-deps.sh installs it)".into()),
    }
    for tool in ["unshare", "dpkg-deb", "chroot"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| !o.status.success()).unwrap_or(true) {
            return Some(format!("{tool} is not installed"));
        }
    }
    let b = DebBox::new(scratch);
    let out = b.try_run("true");
    if !out.status.success() {
        return Some(format!("no overlay of / in a private mount namespace here (root and CAP_SYS_ADMIN needed): {}", text(&out)));
    }
    None
}

/// A throwaway root: overlayfs over `/` with its upper layer under `dir`, entered afresh (new
/// mount namespace, chroot) for every script; what one script wrote, the next one sees.
struct DebBox {
    dir: PathBuf,
    /// Mounted read-only at /mnt/debs in the box.
    debs: PathBuf,
}

impl DebBox {
    fn new(dir: &Path) -> DebBox {
        for sub in ["upper", "work", "root", "debs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        DebBox { dir: dir.to_owned(), debs: dir.join("debs") }
    }

    fn try_run(&self, script: &str) -> Output {
        let d = self.dir.display();
        let setup = format!(
            "set -e
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/upper,workdir={d}/work {d}/root
             mount --rbind /dev {d}/root/dev
             mount --rbind /proc {d}/root/proc
             mount -t tmpfs tmpfs {d}/root/run
             mkdir -p {d}/root/mnt/debs
             mount --bind -o ro {debs} {d}/root/mnt/debs
             exec chroot {d}/root /bin/sh -euc \"$1\"",
            debs = self.debs.display()
        );
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &setup, "box"])
            .arg(script)
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run unshare")
    }

    /// Runs `script` in the box; it must succeed. Returns stdout and stderr.
    fn run(&self, what: &str, script: &str) -> (String, String) {
        let out = self.try_run(script);
        assert!(out.status.success(), "{what}: `{script}` failed in the box: {}", text(&out));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn out(&self, script: &str) -> String {
        self.run(script, script).0.trim().to_owned()
    }

    fn exists(&self, path: &str) -> bool {
        self.try_run(&format!("test -e {path} || test -L {path}")).status.success()
    }

    /// The package's dpkg status and version, e.g. "install ok installed 0.1.0-1", or
    /// "not-installed".
    fn status(&self) -> String {
        let out = self.try_run(&format!("dpkg-query -W -f='${{Status}} ${{Version}}' {PKG}"));
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        } else {
            "not-installed".into()
        }
    }

    /// What the scripts need from the box's user database: passwd line and group names.
    fn user(&self) -> Option<(String, Vec<String>)> {
        let out = self.try_run(&format!("getent passwd {PKG} && id -nG {PKG}"));
        if !out.status.success() {
            return None;
        }
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = s.lines();
        let passwd = lines.next().unwrap_or_default().to_owned();
        let groups = lines.next().unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        Some((passwd, groups))
    }
}

/// Packages the binaries this test run already has (`cargo build --workspace --bins`, as
/// scripts/test.sh does first) with cargo-deb into `out`, one directory per package; returns the
/// .deb. The release build a real package gets would cost CI minutes and changes nothing the
/// test looks at (metadata, files, scripts), so this takes cargo-deb's `--profile dev
/// --no-build`, strips instead of splitting the symbols into a -dbgsym package, and packs with
/// `--fast`.
fn cargo_deb(out: &Path, version: Option<&str>) -> PathBuf {
    let bins = target_dir().join("debug");
    for bin in ["lecternd", "lectern"] {
        assert!(bins.join(bin).exists(), "{} has no {bin}: run `cargo build --workspace --bins` first", bins.display());
    }
    std::fs::create_dir_all(out).unwrap();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir())
        .args(["deb", "-p", "lecternd", "--locked", "--profile", "dev", "--no-build"])
        .args(["--no-dbgsym", "--no-separate-debug-symbols", "--strip", "--fast", "--output"])
        .arg(out);
    if let Some(v) = version {
        cmd.args(["--deb-version", v]);
    }
    run(&mut cmd, "cargo deb");
    let debs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "cargo deb left {debs:?} in {}", out.display());
    debs.into_iter().next().unwrap()
}

fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name), "dpkg-deb -f").trim().to_owned()
}

/// One line of `dpkg-deb -c`: mode string, owner and path (without the leading '.').
fn listing(deb: &Path) -> Vec<(String, String, String)> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb), "dpkg-deb -c")
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let path = cols.get(5)?.trim_start_matches('.').trim_end_matches('/').to_owned();
            Some((cols[0].to_owned(), cols[1].to_owned(), path))
        })
        .collect()
}

/// `check(listing, path, mode)`: the package holds `path`, owned by root, with `mode`.
fn check_file(list: &[(String, String, String)], path: &str, mode: &str) {
    let Some((m, owner, _)) = list.iter().find(|(_, _, p)| p == path) else {
        let near: Vec<&str> = list.iter().map(|(_, _, p)| p.as_str()).filter(|p| p.contains(path.rsplit('/').next().unwrap())).collect();
        panic!("the package has no {path} (similar: {near:?})");
    };
    assert_eq!(m, mode, "{path}: mode");
    assert!(owner == "0/0" || owner == "root/root", "{path}: owner {owner}, not root");
}

fn tree_files(dir: &str, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    names.sort();
    names
}

fn check_package(deb: &Path, scratch: &Path) -> String {
    std::fs::create_dir_all(scratch).unwrap();
    // Control fields.
    assert_eq!(field(deb, "Package"), PKG);
    let description = field(deb, "Description");
    assert!(!description.contains("[generated"), "no description in firmware/lecternd/Cargo.toml: {description}");
    let depends = field(deb, "Depends");
    let dep_names: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap_or("")).collect();
    for want in GST_DEPENDS.iter().chain(&["systemd", "libc6"]) {
        assert!(dep_names.contains(want), "Depends lacks {want}: {depends}");
    }
    // The power-off rule needs polkit; apt installs Recommends by default.
    assert_eq!(field(deb, "Recommends"), "polkitd", "Recommends");

    // Files and modes: the binaries, the one unit, the conffile, pin maps, docs, the CLI's man
    // page and completions.
    let list = listing(deb);
    let mut cases: Vec<(&str, &str)> = vec![
        ("/usr/bin/lecternd", "-rwxr-xr-x"),
        ("/usr/bin/lectern", "-rwxr-xr-x"),
        (UNIT, "-rw-r--r--"),
        (CONFIG, "-rw-r--r--"),
        ("/usr/share/doc/lectern/deb.md", "-rw-r--r--"),
        ("/usr/share/doc/lectern/lectern.toml.reference", "-rw-r--r--"),
        (MAN, "-rw-r--r--"),
    ];
    cases.extend(COMPLETIONS.iter().map(|(path, _)| (*path, "-rw-r--r--")));
    for (path, mode) in cases {
        check_file(&list, path, mode);
    }
    for map in tree_files("board/pinmaps", ".toml") {
        check_file(&list, &format!("/usr/share/lectern/pinmaps/{map}"), "-rw-r--r--");
    }
    let units: Vec<&str> = list.iter().map(|(_, _, p)| p.as_str()).filter(|p| p.ends_with(".service")).collect();
    assert_eq!(units, [UNIT], "exactly one systemd unit");
    // Nothing under the media directory: the recordings are never the package's files, so no
    // remove or purge can take them.
    let media: Vec<&str> = list.iter().map(|(_, _, p)| p.as_str()).filter(|p| p.starts_with(MEDIA)).collect();
    assert!(media.is_empty(), "the package ships files under {MEDIA}: {media:?}");
    // The unit's Documentation= points into the package.
    let unit_text = std::fs::read_to_string(workspace().join("packaging/lecternd.service")).unwrap();
    for doc in unit_text.lines().filter_map(|l| l.strip_prefix("Documentation=")).flat_map(str::split_whitespace) {
        if let Some(path) = doc.strip_prefix("file://") {
            assert!(list.iter().any(|(_, _, p)| p == path), "the unit's Documentation={doc} is not in the package (is its source under docs/ missing?)");
        }
    }

    // The installed unit, config and sysusers file are byte for byte the tested ones in
    // packaging/ (hil-tests/tests/packaging.rs, firmware/config/tests/packaged.rs).
    let x = scratch.join("extract");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&x), "dpkg-deb -x");
    let mut same = vec![(UNIT.to_owned(), "packaging/lecternd.service"), (CONFIG.to_owned(), "packaging/lectern.toml")];
    if workspace().join("packaging/lectern.sysusers").exists() {
        same.push(("/usr/lib/sysusers.d/lectern.conf".into(), "packaging/lectern.sysusers"));
    }
    same.extend(COMPLETIONS.iter().map(|(installed, source)| (installed.to_string(), *source)));
    for (installed, source) in &same {
        let a = std::fs::read(x.join(installed.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{installed}: {e}"));
        let b = std::fs::read(workspace().join(source)).unwrap();
        assert!(a == b, "{installed} in the package differs from {source}");
    }
    // The man page is the committed one, gzipped, and `man` finds its title line.
    let page = run(Command::new("zcat").arg(x.join(MAN.trim_start_matches('/'))), "zcat the man page");
    assert!(page.as_bytes() == std::fs::read(workspace().join("packaging/man/lectern.1")).unwrap(), "{MAN} is not packaging/man/lectern.1 gzipped");
    assert!(page.lines().take(5).any(|l| l.starts_with(".TH lectern 1 ")), "{MAN} has no `.TH lectern 1` header:\n{page}");

    // Conffiles: exactly the config.
    let ctrl = scratch.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctrl), "dpkg-deb -e");
    let conffiles = std::fs::read_to_string(ctrl.join("conffiles")).unwrap_or_default();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONFIG], "conffiles");

    // Maintainer scripts: ours, executable, with the generated systemd snippets in them.
    let script = |name: &str| {
        let p = ctrl.join(name);
        let mode = std::fs::metadata(&p).unwrap_or_else(|e| panic!("maintainer script {name}: {e}")).permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o755, "{name} mode");
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(!s.contains("#DEBHELPER#"), "{name}: #DEBHELPER# was not replaced");
        s
    };
    let (postinst, prerm, postrm) = (script("postinst"), script("prerm"), script("postrm"));
    let contains = [
        (&postinst, "postinst", "deb-systemd-helper enable lecternd.service"),
        (&postinst, "postinst", "deb-systemd-invoke start lecternd.service"),
        (&postinst, "postinst", "deb-systemd-invoke restart lecternd.service"),
        (&prerm, "prerm", "deb-systemd-invoke stop lecternd.service"),
        (&postrm, "postrm", "deb-systemd-helper purge lecternd.service"),
    ];
    for (s, name, want) in contains {
        assert_eq!(s.matches(want).count(), 1, "{name} should have `{want}` once:\n{s}");
    }
    if workspace().join("packaging/lectern.sysusers").exists() {
        assert!(postinst.contains("systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} lectern.conf"), "postinst does not apply the sysusers file:\n{postinst}");
    }
    // An upgrade must not stop the daemon: the stop in prerm is for `remove` only.
    assert!(prerm.contains("[ \"$1\" = remove ]"), "prerm stops lecternd on upgrade too:\n{prerm}");
    // Every script parses.
    for name in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(ctrl.join(name)), &format!("sh -n {name}"));
    }
    postinst
}

/// postinst's own user and directory code, without the sysusers file: what runs where the
/// package ships none, or `systemd-sysusers` cannot apply it. The installed package always has
/// the file (the generated snippet applies it anyway), so this is run on its own.
fn fallback_script(postinst: &str) -> String {
    let start = postinst.find("LECTERN_USER=").expect("postinst defines no LECTERN_USER");
    let end = postinst.find("case \"$1\" in").expect("postinst has no `case \"$1\"`");
    format!("{}\nSYSUSERS_CONF=/nonexistent\nensure_user\nensure_media_dir\n", &postinst[start..end])
}

/// Stand-ins that make postinst believe systemd runs and lecternd is active and `state`, and
/// log what it asks systemd to do to /var/log/lectern-test-invoke.log (all in the box).
fn pretend_running(state: &str) -> String {
    format!(
        "mkdir -p /run/systemd/system /usr/local/bin /usr/local/sbin
         printf '#!/bin/sh\\necho \"systemctl $*\" >> /var/log/lectern-test-invoke.log\\nexit 0\\n' > /usr/local/bin/systemctl
         printf '#!/bin/sh\\necho \"invoke $*\" >> /var/log/lectern-test-invoke.log\\n' > /usr/local/sbin/deb-systemd-invoke
         printf '#!/bin/sh\\necho '\"'\"'{{\"state\": \"{state}\", \"recording\": null}}'\"'\"'\\n' > /usr/local/bin/lectern
         chmod 755 /usr/local/bin/systemctl /usr/local/sbin/deb-systemd-invoke /usr/local/bin/lectern
         : > /var/log/lectern-test-invoke.log"
    )
}

const STOP_PRETENDING: &str = "rm -f /usr/local/bin/systemctl /usr/local/sbin/deb-systemd-invoke /usr/local/bin/lectern";

/// The recordings under the media directory: each file's checksum, and the owners of two.
fn media(b: &DebBox) -> String {
    let out = b.try_run(&format!("cd {MEDIA} && find . -type f | sort | xargs sha256sum && stat -c '%n %U' lectern.db lecture-7/part-1/seg-000001.ts"));
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    } else {
        format!("<{MEDIA} unreadable or gone: {}>", String::from_utf8_lossy(&out.stderr).trim())
    }
}

#[test]
fn deb_builds_installs_upgrades_removes_and_purges_keeping_recordings() {
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path();
    if let Some(why) = missing_capability(&scratch.join("probe")) {
        assert!(std::env::var_os("CI").is_none(), "CI must run the .deb test, but {why}");
        eprintln!("SKIP deb test: {why}");
        return;
    }
    let t0 = Instant::now();

    // Two packages of one build, the second with a higher version.
    let v1 = cargo_deb(&scratch.join("v1"), None);
    let version1 = field(&v1, "Version");
    let version2 = format!("{version1}+upgrade1");
    let v2 = cargo_deb(&scratch.join("v2"), Some(&version2));
    eprintln!("deb test: built {} and {} in {:.0?}", v1.display(), v2.display(), t0.elapsed());
    let postinst = check_package(&v1, &scratch.join("v1-content"));

    let b = DebBox::new(&scratch.join("box"));
    std::fs::copy(&v1, b.debs.join("v1.deb")).unwrap();
    std::fs::copy(&v2, b.debs.join("v2.deb")).unwrap();
    std::fs::write(b.debs.join("fallback.sh"), fallback_script(&postinst)).unwrap();
    assert!(b.user().is_none(), "the host already has a {PKG} user; the box would not show what postinst creates");

    // Install.
    b.run("install", "dpkg -i /mnt/debs/v1.deb");
    assert_eq!(b.status(), format!("install ok installed {version1}"));
    let (passwd, groups) = b.user().expect("postinst created no lectern user");
    let fields: Vec<&str> = passwd.split(':').collect();
    assert_eq!((fields[5], fields[6]), (MEDIA, "/usr/sbin/nologin"), "lectern user's home and shell: {passwd}");
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "lectern is not a system user: {passwd}");
    for g in ["video", "audio", "gpio"] {
        assert!(groups.iter().any(|x| x == g), "lectern is not in {g}: {groups:?}");
    }
    assert_eq!(b.out(&format!("stat -c '%U:%G %a' {MEDIA}")), "lectern:lectern 750", "{MEDIA} owner and mode");
    assert_eq!(b.out(&format!("readlink -f {WANTS} || true")), UNIT, "lecternd.service is not enabled");
    assert_eq!(b.out("lecternd --version"), format!("lecternd {}", version1.split('-').next().unwrap()));
    b.run("installed config", &format!("lecternd --config {CONFIG} --check-config"));
    b.run("installed CLI", "lectern --help 2>&1 | grep -q '^Usage: lectern'");

    // A box in use: a journal with a recording owned by lectern, and an AV team's edit.
    let journal = "seg=/var/lib/lectern/lecture-7/part-1/seg-000001.ts
         mkdir -p \"${seg%/*}\" && printf 'segment bytes' > \"$seg\" && printf 'sqlite' > /var/lib/lectern/lectern.db
         chown -R lectern:lectern /var/lib/lectern/lecture-7 /var/lib/lectern/lectern.db";
    b.run("journal", journal);
    b.run("edit config", &format!("printf '\\n# room 1.23: edited by the AV team\\n' >> {CONFIG}"));
    let config_edited = b.out(&format!("cat {CONFIG}"));
    let media_before = media(&b);
    let uid = b.out("id -u lectern");

    // Upgrade while lecternd records: postinst must not restart it; prerm must not stop it.
    let (_, err) = b.run("upgrade while recording", &format!("{} && dpkg -i /mnt/debs/v2.deb", pretend_running("recording")));
    let log = b.out("cat /var/log/lectern-test-invoke.log");
    assert!(!log.contains("restart") && !log.contains("stop"), "upgrade while recording stopped or restarted lecternd: {log}");
    assert!(err.contains("keeps running version"), "postinst did not say why it left lecternd running: {err}");
    assert_eq!(b.status(), format!("install ok installed {version2}"));
    // The same upgrade on an idle box restarts it (reinstalling v2 takes the same path).
    b.run("upgrade while idle", &format!("{} && dpkg -i /mnt/debs/v2.deb", pretend_running("idle")));
    let log = b.out("cat /var/log/lectern-test-invoke.log");
    assert!(log.contains("invoke restart lecternd.service"), "an upgrade of an idle box did not restart lecternd: {log}");
    assert!(!log.contains("stop"), "upgrade stopped lecternd: {log}");
    b.run("stop pretending", STOP_PRETENDING);
    // What the upgrades kept.
    assert_eq!(b.out(&format!("cat {CONFIG}")), config_edited, "upgrade lost the edited config");
    assert!(!b.exists(&format!("{CONFIG}.dpkg-new")) && !b.exists(&format!("{CONFIG}.dpkg-dist")), "upgrade left a .dpkg-new/.dpkg-dist config");
    assert_eq!(media(&b), media_before, "upgrade changed the journal");
    assert_eq!(b.out("id -u lectern"), uid, "upgrade changed the lectern uid");

    // Remove: the program goes, config, user and recordings stay.
    b.run("remove", &format!("dpkg -r {PKG}"));
    assert_eq!(b.status(), format!("deinstall ok config-files {version2}"));
    for gone in ["/usr/bin/lecternd", "/usr/bin/lectern", UNIT] {
        assert!(!b.exists(gone), "remove left {gone}");
    }
    assert_eq!(b.out(&format!("cat {CONFIG}")), config_edited, "remove touched the config");
    assert!(b.user().is_some(), "remove deleted the lectern user");
    assert_eq!(media(&b), media_before, "remove touched the recordings");

    // Purge: config and enablement go; the recordings and so the user stay, with a notice.
    let (_, err) = b.run("purge", &format!("dpkg -P {PKG}"));
    assert_eq!(b.status(), "not-installed", "purge left the package known to dpkg");
    for gone in ["/etc/lectern", WANTS, "/etc/systemd/system/lecternd.service"] {
        assert!(!b.exists(gone), "purge left {gone}");
    }
    assert_eq!(media(&b), media_before, "purge touched the recordings");
    assert_eq!(b.out("id -u lectern"), uid, "purge deleted the owner of the kept recordings");
    assert!(err.contains("kept /var/lib/lectern"), "purge did not say that it kept the recordings: {err}");

    // Reinstall over the kept recordings: same user, the journal readable by it.
    b.run("reinstall", "dpkg -i /mnt/debs/v1.deb");
    assert_eq!(b.out("id -u lectern"), uid, "reinstall created a new lectern user");
    assert_eq!(b.out(&format!("stat -c '%U' {MEDIA}/lectern.db")), "lectern");
    // A box whose recordings were deleted on purpose: purge now takes the user too.
    b.run("clear media", &format!("rm -rf {MEDIA}/* && dpkg -P {PKG}"));
    assert!(!b.exists(MEDIA), "purge left an empty {MEDIA}");
    assert!(b.user().is_none(), "purge of a box without recordings left the lectern user");
    assert!(!b.try_run("getent group lectern").status.success(), "purge left the lectern group");

    // postinst without the sysusers file (useradd), twice: the same user, groups and directory.
    for round in 1..=2 {
        b.run("postinst without sysusers", "sh -eu /mnt/debs/fallback.sh");
        let (passwd, groups) = b.user().unwrap_or_else(|| panic!("round {round}: postinst without sysusers created no user"));
        let fields: Vec<&str> = passwd.split(':').collect();
        assert_eq!((fields[5], fields[6]), (MEDIA, "/usr/sbin/nologin"), "round {round}: {passwd}");
        for g in ["video", "audio", "gpio", "lectern"] {
            assert!(groups.iter().any(|x| x == g), "round {round}: lectern is not in {g}: {groups:?}");
        }
        assert_eq!(b.out(&format!("stat -c '%U:%G %a' {MEDIA}")), "lectern:lectern 750", "round {round}: {MEDIA}");
    }

    eprintln!("deb test: done in {:.0?}", t0.elapsed());
}
