//! Issue 10's security checks on the real daemon: it opens no network socket that listens or
//! accepts datagrams (the control interface is a Unix socket), and that socket is not open to
//! other users. TLS verification is checked in firmware/opencast/tests/tls.rs, secret file modes
//! in firmware/provision/tests/store.rs.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use lectern_hil_tests::{wait_until, Daemon, SMALL};

/// Inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Every IPv4/IPv6 TCP socket in LISTEN and every UDP/raw socket, as (table, local address, inode).
fn network_listeners() -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retr uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9).and_then(|i| i.parse().ok())) else { continue };
            if !table.starts_with("tcp") || *state == "0A" {
                out.push((table.to_owned(), (*local).to_owned(), inode));
            }
        }
    }
    out
}

#[test]
fn the_daemon_listens_on_no_network_socket_and_its_control_socket_is_private() {
    // Everything a box does by default plus a schedule URL and an Opencast server: the clients
    // connect out, nothing listens.
    let mut d = Daemon::start(&format!(
        "{SMALL}[opencast]\nurl = \"http://127.0.0.1:9\"\nretry_initial_s = 1\nretry_max_s = 2\n[schedule]\nics_url = \"http://127.0.0.1:9/room.ics\"\n"
    ))
    .unwrap();
    let pid = d.pid().unwrap();
    // Let the agent, the calendar fetch and the uploader start and fail their first calls.
    wait_until("the calendar's first attempt", Duration::from_secs(20), || d.status()["opencast"]["calendar"]["error"].is_string()).unwrap();
    d.cli(&["record", "start"]).unwrap();
    wait_until("recording", Duration::from_secs(10), || d.status()["state"] == "recording").unwrap();

    // The check itself sees a listener: this test process's own.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mine = socket_inodes(std::process::id());
    assert!(network_listeners().iter().any(|(_, _, inode)| mine.contains(inode)), "the scan misses a listening socket");
    drop(probe);

    let ours = socket_inodes(pid);
    assert!(!ours.is_empty(), "the daemon holds its control socket at least");
    let listening: Vec<_> = network_listeners().into_iter().filter(|(_, _, inode)| ours.contains(inode)).collect();
    assert!(listening.is_empty(), "lecternd listens on the network: {listening:?}");

    let sock = d.control_socket();
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "{} is a Unix socket", sock.display());
    let mode = meta.permissions().mode() & 0o777;
    assert_eq!(mode & 0o007, 0, "the control socket is open to other users: {mode:o}");
    d.cli(&["record", "stop"]).unwrap();
    assert!(d.terminate().unwrap().success());
}

/// The plugin files process `pid` has mapped, as plugin names (`…/gstreamer-1.0/libgstNAME.so`).
fn mapped_plugins(pid: u32) -> BTreeSet<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("/gstreamer-1.0/"))
        .filter_map(|p| p.rsplit('/').next()?.strip_prefix("libgst")?.strip_suffix(".so").map(str::to_owned))
        .collect()
}

#[test]
fn the_daemon_loads_only_the_plugins_on_its_allow_list() {
    let mut d = Daemon::start(&format!("{SMALL}preview_width = 160\n")).unwrap();
    d.cli(&["record", "start"]).unwrap();
    wait_until("recording", Duration::from_secs(10), || d.status()["state"] == "recording").unwrap();
    // The preview branch loads its plugins too once it is open.
    wait_until("a preview picture", Duration::from_secs(20), || d.cli(&["preview", "--out", d.dir.path().join("p.jpg").to_str().unwrap()]).is_ok()).unwrap();
    let mapped = mapped_plugins(d.pid().unwrap());
    assert!(mapped.contains("x264") && mapped.contains("coreelements"), "the scan finds the daemon's plugins: {mapped:?}");
    let allowed = lectern_capture::plugins::plugins();
    let other: Vec<&String> = mapped.iter().filter(|p| !allowed.contains(&p.as_str())).collect();
    assert!(other.is_empty(), "lecternd loaded plugins off its allow-list (firmware/capture/src/plugins.rs): {other:?}");
    d.cli(&["record", "stop"]).unwrap();
    assert!(d.terminate().unwrap().success());
}

/// An operator's own `GST_PLUGIN_LOADING_WHITELIST` wins over the daemon's, and an element whose
/// plugin it leaves out is reported as the existing missing-element error, with its purpose.
#[test]
fn a_plugin_left_off_the_allow_list_is_a_missing_element_named_with_its_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let without_level: Vec<&str> = lectern_capture::plugins::plugins().into_iter().filter(|p| *p != "level").collect();
    let list = without_level.join(",");
    // A registry of its own: made for another list, the shared one would be scanned again.
    let registry = dir.path().join("gstreamer-registry.bin");
    let env = [("GST_PLUGIN_LOADING_WHITELIST", std::path::Path::new(&list)), ("GST_REGISTRY", registry.as_path())];
    let mut d = Daemon::start_in_env(dir, &format!("{SMALL}retry_initial_s = 1\nretry_max_s = 2\n"), &env).unwrap();
    d.cli(&["record", "start"]).unwrap();
    let want = "GStreamer element \"level\" (needed for audio level metering) is not installed";
    wait_until("the missing element", Duration::from_secs(10), || d.status()["recording"]["last_error"].as_str().is_some_and(|e| e.contains(want))).unwrap();
    assert!(registry.exists(), "the daemon used the registry file it was given");
    d.cli(&["record", "stop"]).unwrap();
    assert!(d.terminate().unwrap().success());
}
