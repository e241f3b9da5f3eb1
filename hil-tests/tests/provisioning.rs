//! Provisioning as an AV team does it, with the real binaries: `lectern-fleet` makes the key and
//! signs the bundles, `lectern provision` applies one on an idle box, the daemon (started with
//! the packaged unit's `--provision-store`) stops itself and, started again as systemd would,
//! runs the bundle's config; Opencast (the shared test double) is told the provisioned version and
//! then a rejection in the agent configuration, so config drift shows in its admin UI.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use lectern_hil_tests::{bin_dir, Daemon};
use lectern_opencast_double::{Config as DoubleConfig, Double};

const AGENT: &str = "room-101";

fn fleet(args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("lectern-fleet")).args(args).output().expect("lectern-fleet (cargo build --bins)");
    assert!(out.status.success(), "lectern-fleet {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The newest agent configuration the double holds for `AGENT`, waiting until `pred` holds.
fn wait_config(double: &Double, what: &str, pred: impl Fn(&std::collections::BTreeMap<String, String>) -> bool) -> std::collections::BTreeMap<String, String> {
    let snap = double
        .wait_for(Duration::from_secs(30), |s| s.agent_configs.iter().rev().find(|c| c.agent == AGENT).is_some_and(|c| pred(&c.properties)))
        .unwrap_or_else(|| panic!("agent configuration never showed {what}: {:#?}", double.snapshot().agent_configs.last()));
    snap.agent_configs.iter().rev().find(|c| c.agent == AGENT).unwrap().properties.clone()
}

#[test]
fn a_bundle_signed_with_the_fleet_tool_is_applied_reported_to_opencast_and_a_rollback_refused() {
    let double = Double::start(DoubleConfig::digest("opencast_system_account", "CHANGE_ME")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    // The AV team's key; a box gets only the public half.
    let (secret_dir, keys) = (d.join("secret"), d.join("keys"));
    std::fs::create_dir(&keys).unwrap();
    std::fs::create_dir(&secret_dir).unwrap();
    fleet(&["keygen", "fleet-2027", secret_dir.to_str().unwrap()]);
    std::fs::copy(secret_dir.join("fleet-2027.pub"), keys.join("fleet-2027.pub")).unwrap();

    let opencast = format!(
        "[opencast]\nurl = \"{}\"\nusername = \"opencast_system_account\"\nauth = \"digest\"\ncalendar_poll_s = 5\nretry_initial_s = 1\nretry_max_s = 2\n",
        double.url()
    );
    // The harness's own keys, as absolute paths: the bundle's config must run in this directory.
    let harness = format!(
        "[board]\nbackend = \"sim\"\nsim_socket = \"{0}/run/sim.sock\"\n[control]\nsocket = \"{0}/run/control.sock\"\n[journal]\nmedia_dir = \"{0}/media\"\nmin_free_mb = 16\n[clock]\ntrust = \"always\"\n",
        d.display()
    );
    // The bundle's config overlay: the same tables under `config.`.
    let overlay: String = format!("{harness}{opencast}").lines().map(|l| l.strip_prefix('[').map_or(format!("{l}\n"), |t| format!("[config.{t}\n"))).collect();
    let payload = |v: u64| {
        format!("version = {v}\ndevice = \"*\"\nnot_after = \"2099-01-01T00:00:00Z\"\nagent_name = \"{AGENT}\"\n[secrets]\nopencast_password = \"CHANGE_ME\"\n{overlay}")
    };
    for v in [1, 2] {
        let p = d.join(format!("v{v}.toml"));
        std::fs::write(&p, payload(v)).unwrap();
        fleet(&["sign", "--key", secret_dir.join("fleet-2027.secret").to_str().unwrap(), p.to_str().unwrap(), "-o", d.join(format!("v{v}.bundle")).to_str().unwrap()]);
    }
    assert!(fleet(&["inspect", d.join("v2.bundle").to_str().unwrap()]).contains("opencast_password"), "inspect names the secret");

    let store = d.join("provision");
    let args = ["--provision-store", store.to_str().unwrap(), "--fleet-keys", keys.to_str().unwrap()];
    let extra = format!("[agent]\nname = \"{AGENT}\"\n{opencast}password = \"CHANGE_ME\"\n");
    let mut daemon = Daemon::start_in_with(dir, &extra, &args).unwrap();
    let caps = wait_config(&double, "provision version none", |p| p.get("lectern.provision.version").map(String::as_str) == Some("none"));
    assert_eq!(caps.get("lectern.provision.rejection").map(String::as_str), Some(""));

    // Apply version 2 offline (a USB stick): the daemon stops itself; systemd would start it again.
    let said = daemon.cli(&["provision", d.join("v2.bundle").to_str().unwrap()]).unwrap();
    assert!(said.contains("provisioned: version 2"), "{said}");
    assert!(daemon.wait_exit(Duration::from_secs(30)).unwrap().success());
    daemon.restart().unwrap();
    assert_eq!(daemon.status()["provision"]["version"], 2);
    wait_config(&double, "provision version 2", |p| p.get("lectern.provision.version").map(String::as_str) == Some("2"));

    // Version 1 now is a rollback: refused, nothing changes, and Opencast hears of it.
    let err = daemon.cli(&["provision", d.join("v1.bundle").to_str().unwrap()]).unwrap_err().to_string();
    assert!(err.contains("not newer"), "{err}");
    let caps = wait_config(&double, "the rejection", |p| p.get("lectern.provision.rejection").is_some_and(|r| r.contains("not newer")));
    assert_eq!(caps.get("lectern.provision.version").map(String::as_str), Some("2"));
    assert_eq!(daemon.status()["provision"]["version"], 2);
    let human = daemon.cli(&["status"]).unwrap();
    assert!(human.lines().any(|l| l.starts_with("bundle:") && l.contains("version 2 (key fleet-2027") && l.contains("last rejected: bundle version 1 is not newer")), "{human}");
    // The same version again is "up to date", not a rejection.
    let said = daemon.cli(&["provision", d.join("v2.bundle").to_str().unwrap()]).unwrap();
    assert!(said.contains("up to date"), "{said}");
    assert!(Path::new(&store).join("current").exists());
    assert!(daemon.terminate().unwrap().success());
}
