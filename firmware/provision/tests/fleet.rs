//! `lectern-fleet` run for real, in a temp dir: keygen, sign, inspect and verify as an AV team
//! runs them, with the exit codes docs/provisioning.md promises (0 ok, 1 rejected, 2 error).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lectern-fleet")).args(args).current_dir(dir).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn expect(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    assert!(text(o).contains(needle), "expected {needle:?} in {}", text(o));
}

const PAYLOAD: &str = "version = 3\ndevice = \"box-1\"\nnot_after = \"2099-01-01T00:00:00Z\"\nagent_name = \"hall-b\"\n\
[config.opencast]\nurl = \"https://oc.example.edu\"\n[secrets]\nopencast_password = \"hunter2-s3cret\"\n";

#[test]
fn keygen_sign_inspect_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir(d.join("keys")).unwrap();
    expect(&fleet(d, &["keygen", "fleet-2027", "keys"]), 0, "keys/fleet-2027.pub");
    let secret = d.join("keys/fleet-2027.secret");
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    let before = std::fs::read(&secret).unwrap();
    expect(&fleet(d, &["keygen", "fleet-2027", "keys"]), 2, "never overwritten");
    assert_eq!(std::fs::read(&secret).unwrap(), before);
    expect(&fleet(d, &["keygen", "bad/id", "keys"]), 2, "key id");
    // A directory that is not there yet is made, owner only.
    expect(&fleet(d, &["keygen", "spare", "new/keys"]), 0, "new/keys/spare.pub");
    assert_eq!(std::fs::metadata(d.join("new/keys")).unwrap().permissions().mode() & 0o777, 0o700);
    // A path under a file cannot be a directory: the error says what could not be made.
    std::fs::write(d.join("plain"), "").unwrap();
    expect(&fleet(d, &["keygen", "x", "plain/keys"]), 2, "cannot create the key directory plain/keys");

    std::fs::write(d.join("payload.toml"), PAYLOAD).unwrap();
    expect(&fleet(d, &["sign", "--key", "keys/fleet-2027.secret", "payload.toml", "-o", "b.json"]), 0, "signed payload.toml with key fleet-2027");

    let o = fleet(d, &["inspect", "b.json"]);
    expect(&o, 0, "version    3");
    for needle in ["key_id     fleet-2027", "device     box-1", "secrets    opencast_password", "password_file = \"opencast_password.secret\"", "name = \"hall-b\""] {
        assert!(text(&o).contains(needle), "{needle:?} in {}", text(&o));
    }
    assert!(!text(&o).contains("hunter2"), "inspect shows no secret: {}", text(&o));

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--keys", "keys", "--device", "box-1", "--now", "2030-01-01T00:00:00Z"];
        args.extend_from_slice(extra);
        args.push("b.json");
        fleet(d, &args)
    };
    expect(&verify(&[]), 0, "ok: version 3 for device box-1 signed by fleet-2027");
    expect(&verify(&["--applied", "3"]), 1, "rejected: bundle version 3 is not newer than the applied version 3");
    expect(&verify(&["--device", "box-9"]), 1, "rejected: bundle is for device \"box-1\"");
    expect(&verify(&["--now", "2100-01-01T00:00:00Z"]), 1, "rejected: bundle expired");

    // Tampered: the payload's version raised by hand.
    let mut env: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("b.json")).unwrap()).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    env["payload"] = b64.encode(PAYLOAD.replace("version = 3", "version = 30")).into();
    std::fs::write(d.join("t.json"), serde_json::to_vec(&env).unwrap()).unwrap();
    let mut args = vec!["verify", "--keys", "keys/fleet-2027.pub", "--device", "box-1", "t.json"];
    expect(&fleet(d, &args), 1, "rejected: bad signature");
    // Another fleet's key does not know this one.
    std::fs::create_dir(d.join("other")).unwrap();
    expect(&fleet(d, &["keygen", "other", "other"]), 0, "");
    args[2] = "other";
    args[5] = "b.json";
    expect(&fleet(d, &args), 1, "which this box does not trust");

    // A payload a box would refuse is never signed: malformed, or a config the daemon refuses.
    for (bad, why) in [
        (PAYLOAD.replace("opencast_password", "aws_secret"), "unknown secret"),
        (PAYLOAD.replace("[secrets]", "[config.capture]\nframerate = 0\n[secrets]"), "capture.framerate"),
        (PAYLOAD.replace("[secrets]", "[config.surprise]\n[secrets]"), "unknown field `surprise`"),
    ] {
        std::fs::write(d.join("bad.toml"), bad).unwrap();
        let o = fleet(d, &["sign", "--key", "keys/fleet-2027.secret", "bad.toml", "-o", "bad.json"]);
        expect(&o, 2, why);
        assert!(!text(&o).contains("hunter2"), "{}", text(&o));
        assert!(!d.join("bad.json").exists());
    }
    expect(&fleet(d, &["frobnicate"]), 2, "usage:");
}
