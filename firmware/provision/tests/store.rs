//! The provisioning store on a real filesystem (a temp dir): a good bundle becomes the config
//! the daemon's own loader reads, with the secret in a 0600 file beside it; every rejection
//! leaves every file as it was except the recorded rejection; rollback restores the previous
//! version and keeps the floor.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use lectern_provision::store::{ProvisionError, Start, Store, StoreError, Trial};
use lectern_provision::{sign, Keyring, Rejection, SecretKey};

fn fleet() -> SecretKey {
    SecretKey::from_seed("fleet", [3; 32])
}

fn keys() -> Keyring {
    let mut r = Keyring::new();
    r.add(&fleet().public_file_text(), Path::new("fleet.pub")).unwrap();
    r
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap()
}

fn payload(version: u64, extra: &str) -> String {
    format!(
        "version = {version}\ndevice = \"box-1\"\nnot_after = \"2027-02-01T00:00:00Z\"\nagent_name = \"hall-{version}\"\n\
         [config.opencast]\nurl = \"https://oc.example.edu\"\n{extra}[secrets]\nopencast_password = \"pw-{version}-s3cret\"\n"
    )
}

fn bundle(version: u64) -> Vec<u8> {
    sign(payload(version, "").as_bytes(), &fleet()).unwrap()
}

fn provision(store: &Store, bundle: &[u8]) -> Result<u64, ProvisionError> {
    store.provision(bundle, &keys(), "box-1", now()).map(|a| a.version)
}

/// Every entry under the root but `state.json`: path → (mode, link target or contents).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, String)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == "state.json" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else {
                std::fs::read_to_string(&p).unwrap()
            };
            out.insert(rel, (meta.permissions().mode() & 0o7777, what));
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_good_bundle_becomes_the_daemons_config_with_the_secret_beside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    assert_eq!(mode(store.root()), 0o700);
    assert_eq!(store.state().unwrap().version, None);
    let applied = store.provision(&bundle(5), &keys(), "box-1", now()).unwrap();
    assert_eq!((applied.version, applied.previous), (5, None));
    assert_eq!(applied.config, store.config_path());
    assert_eq!(Store::of_config(&store.config_path()).unwrap().root(), store.root(), "the daemon finds the store from its --config");
    assert!(Store::of_config(&store.root().join("v5/lectern.toml")).is_none(), "only through the current link");
    assert!(Store::of_config(Path::new("/etc/lectern/lectern.toml")).is_none());

    let config = lectern_config::Config::load(&store.config_path()).unwrap();
    assert_eq!(config.agent_name, "hall-5");
    assert_eq!(config.opencast.as_ref().unwrap().password, "pw-5-s3cret");
    let secret = store.root().join("v5/opencast_password.secret");
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&store.root().join("v5/lectern.toml")), 0o640);
    assert_eq!(mode(&store.root().join("state.json")), 0o600);
    for f in ["v5/lectern.toml", "state.json"] {
        let text = std::fs::read_to_string(store.root().join(f)).unwrap();
        assert!(!text.contains("s3cret"), "{f} holds the secret: {text}");
    }
    let state = store.state().unwrap();
    assert_eq!((state.version, state.floor, state.applied_key_id.as_deref()), (Some(5), 5, Some("fleet")));
    assert!(!format!("{state:?}").contains("s3cret"));
}

#[test]
fn every_rejection_changes_nothing_but_the_recorded_rejection() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("p")).unwrap();
    provision(&store, &bundle(5)).unwrap();
    let before = snapshot(store.root());

    let mut tampered = String::from_utf8(bundle(6)).unwrap();
    let at = tampered.find("\"payload\": \"").unwrap() + 14;
    tampered.replace_range(at..at + 1, if &tampered[at..at + 1] == "A" { "B" } else { "A" });
    let other_key = sign(payload(6, "").as_bytes(), &SecretKey::from_seed("fleet", [4; 32])).unwrap();
    let other_box = sign(payload(6, "").replace("box-1", "box-2").as_bytes(), &fleet()).unwrap();
    let expired = sign(payload(6, "").replace("2027-02-01", "2027-01-01").as_bytes(), &fleet()).unwrap();
    let bad_config = sign(payload(6, "[config.capture]\nframerate = 0\n").as_bytes(), &fleet()).unwrap();
    type Case = (&'static str, Vec<u8>, fn(&Rejection) -> bool);
    let cases: Vec<Case> = vec![
        ("replay", bundle(5), |r| matches!(r, Rejection::NotNewer { version: 5, applied: 5 })),
        ("rollback", bundle(4), |r| matches!(r, Rejection::NotNewer { version: 4, applied: 5 })),
        ("tampered", tampered.into_bytes(), |r| matches!(r, Rejection::BadSignature(_) | Rejection::Malformed(_))),
        ("wrong key", other_key, |r| matches!(r, Rejection::BadSignature(_))),
        ("other box", other_box, |r| matches!(r, Rejection::OtherDevice { .. })),
        ("expired", expired, |r| matches!(r, Rejection::Expired { .. })),
        ("malformed", b"{\"format\": 1}".to_vec(), |r| matches!(r, Rejection::Malformed(_))),
        ("daemon refuses the config", bad_config, |r| matches!(r, Rejection::Config(m) if m.contains("capture.framerate") && !m.contains(".tmp"))),
    ];
    for (name, bytes, expect) in cases {
        match provision(&store, &bytes) {
            Err(ProvisionError::Rejected(r)) => {
                assert!(expect(&r), "{name}: {r:?}");
                let last = store.state().unwrap().last_rejection.unwrap();
                assert_eq!(last.reason, r, "{name}");
                assert_eq!(last.at, now());
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(snapshot(store.root()), before, "{name} changed the store");
        assert_eq!(store.state().unwrap().version, Some(5), "{name}");
        assert!(!std::fs::read_to_string(store.root().join("state.json")).unwrap().contains("s3cret"), "{name}");
    }
}

#[test]
fn rollback_restores_the_previous_version_and_keeps_the_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("p")).unwrap();
    assert!(matches!(store.rollback(), Err(StoreError::NoPrevious)));
    provision(&store, &bundle(5)).unwrap();
    provision(&store, &bundle(6)).unwrap();
    let applied = store.provision(&bundle(7), &keys(), "box-1", now()).unwrap();
    assert_eq!(applied.previous, Some(6));
    assert!(!store.root().join("v5").exists(), "only current and previous are kept");
    let state = store.state().unwrap();
    assert_eq!((state.version, state.previous, state.floor), (Some(7), Some(6), 7));

    assert_eq!(store.rollback().unwrap(), 6);
    let config = lectern_config::Config::load(&store.config_path()).unwrap();
    assert_eq!(config.opencast.unwrap().password, "pw-6-s3cret", "the previous secret came back with its config");
    assert!(!store.root().join("v7").exists());
    let state = store.state().unwrap();
    assert_eq!((state.version, state.previous, state.floor), (Some(6), None, 7));
    assert!(matches!(store.rollback(), Err(StoreError::NoPrevious)), "one step back only");
    // The version that failed is not taken again; a fix with a higher version is.
    assert!(matches!(provision(&store, &bundle(7)), Err(ProvisionError::Rejected(Rejection::NotNewer { version: 7, applied: 7 }))));
    assert_eq!(provision(&store, &bundle(8)).unwrap(), 8);
    assert_eq!(store.state().unwrap().previous, Some(6));
}

#[test]
fn staging_left_by_a_cut_is_cleared_and_never_becomes_current() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("p")).unwrap();
    provision(&store, &bundle(5)).unwrap();
    // A cut during a staging of version 6: half-written files in v6.tmp.
    std::fs::create_dir(store.root().join("v6.tmp")).unwrap();
    std::fs::write(store.root().join("v6.tmp/lectern.toml"), "[capture\n").unwrap();
    assert_eq!(store.state().unwrap().version, Some(5));
    assert_eq!(provision(&store, &bundle(6)).unwrap(), 6);
    assert!(!store.root().join("v6.tmp").exists());
    assert_eq!(lectern_config::Config::load(&store.config_path()).unwrap().agent_name, "hall-6");
}

#[test]
fn a_version_on_trial_rolls_back_after_its_starts_unless_confirmed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("p")).unwrap();
    assert_eq!(store.start(3).unwrap(), Start::Normal);
    provision(&store, &bundle(5)).unwrap();
    // A first enrolment that never gets healthy: nothing to go back to, the trial ends.
    for n in 1..=3 {
        assert_eq!(store.start(3).unwrap(), Start::Trial { version: 5, start: n });
    }
    assert_eq!(store.start(3).unwrap(), Start::Normal);
    assert_eq!((store.state().unwrap().version, store.state().unwrap().trial), (Some(5), None));

    provision(&store, &bundle(6)).unwrap();
    assert_eq!(store.state().unwrap().trial, Some(Trial { version: 6, starts: 0 }));
    assert_eq!(store.start(2).unwrap(), Start::Trial { version: 6, start: 1 });
    assert_eq!(store.confirm().unwrap(), Some(6));
    assert_eq!(store.start(2).unwrap(), Start::Normal, "a confirmed version is not on trial");
    assert_eq!(store.confirm().unwrap(), None);

    provision(&store, &bundle(7)).unwrap();
    assert_eq!(store.start(2).unwrap(), Start::Trial { version: 7, start: 1 });
    assert_eq!(store.start(2).unwrap(), Start::Trial { version: 7, start: 2 });
    assert_eq!(store.start(2).unwrap(), Start::RolledBack { from: 7, to: 6 });
    let state = store.state().unwrap();
    assert_eq!((state.version, state.trial, state.floor), (Some(6), None, 7));
    assert_eq!(lectern_config::Config::load(&store.config_path()).unwrap().agent_name, "hall-6");
    assert_eq!(store.start(2).unwrap(), Start::Normal);

    // A config that does not load on the box rolls back at once.
    provision(&store, &bundle(8)).unwrap();
    assert_eq!(store.fail_trial().unwrap(), Some(6));
    assert_eq!(store.state().unwrap().version, Some(6));
    assert_eq!(store.fail_trial().unwrap(), None, "no trial left");
}

#[test]
fn an_s3_secret_key_goes_to_its_own_file_and_never_into_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("provision")).unwrap();
    let s3 = "[[config.upload.target]]\nkind = \"s3\"\nendpoints = [\"https://s3.example.edu\"]\nbucket = \"lectures\"\naccess_key = \"AKIA1\"\n";
    let with_secret = format!("{}s3_secret_key = \"s3-k3y-s3cret\"\n", payload(1, s3));
    assert_eq!(provision(&store, &sign(with_secret.as_bytes(), &fleet()).unwrap()).unwrap(), 1);
    let dir = store.root().join("v1");
    let config_text = std::fs::read_to_string(dir.join("lectern.toml")).unwrap();
    assert!(!config_text.contains("s3-k3y-s3cret") && config_text.contains("secret_key_file = \"s3_secret_key.secret\""), "{config_text}");
    assert_eq!(mode(&dir.join("s3_secret_key.secret")), 0o600);
    let loaded = lectern_config::Config::load(&store.config_path()).unwrap();
    assert!(format!("{:?}", loaded.upload.targets).contains("lectures"));
    assert!(!format!("{loaded:?}").contains("s3-k3y-s3cret"), "never in a Debug output");

    // The key inline in the config is refused; so is an S3 target without the secret.
    let inline = payload(2, &format!("{s3}secret_key = \"s3-k3y-s3cret\"\n"));
    let err = provision(&store, &lectern_provision::sign_unchecked(inline.as_bytes(), "fleet", &fleet().signing)).unwrap_err().to_string();
    assert!(err.contains("[secrets] s3_secret_key") && !err.contains("s3-k3y-s3cret"), "{err}");
    let missing = payload(2, s3);
    let err = provision(&store, &sign(missing.as_bytes(), &fleet()).unwrap()).unwrap_err().to_string();
    assert!(err.contains("upload.target[0].secret_key"), "{err}");
    assert_eq!(store.state().unwrap().version, Some(1));
}
