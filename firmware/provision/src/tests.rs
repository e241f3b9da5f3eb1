//! Unit tests of the sans-IO core: one `check` helper, one case per rejection.

use super::*;
use chrono::TimeZone;

fn key(id: &str, seed: u8) -> SecretKey {
    SecretKey::from_seed(id, [seed; 32])
}

fn ring(keys: &[&SecretKey]) -> Keyring {
    let mut r = Keyring::new();
    for k in keys {
        r.add(&k.public_file_text(), std::path::Path::new("test.pub")).unwrap();
    }
    r
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap()
}

const PAYLOAD: &str = "version = 5\ndevice = \"box-1\"\nnot_after = \"2027-02-01T00:00:00Z\"\nagent_name = \"hall-a\"\n\
[config.opencast]\nurl = \"https://oc.example.edu\"\n[secrets]\nopencast_password = \"s3cret\"\n";

/// Verifies `bundle` as box-1 at `now()` with applied version 4, trusting `fleet` (seed 1).
fn check(bundle: &[u8], expect: Result<u64, Rejection>) {
    let fleet = key("fleet", 1);
    let keys = ring(&[&fleet]);
    let cx = Context { keys: &keys, device_id: "box-1", applied_version: 4, now: now() };
    let got = verify(bundle, &cx).map(|v| v.payload.version);
    assert_eq!(got, expect, "bundle: {}", String::from_utf8_lossy(bundle));
}

fn signed(payload: &str) -> Vec<u8> {
    sign(payload.as_bytes(), &key("fleet", 1)).unwrap()
}

#[test]
fn accepts_a_good_bundle() {
    check(&signed(PAYLOAD), Ok(5));
    check(&signed(&PAYLOAD.replace("box-1", "*")), Ok(5));
}

#[test]
fn rejects_each_case() {
    check(&signed(&PAYLOAD.replace("box-1", "box-2")), Err(Rejection::OtherDevice { bundle: "box-2".into(), this: "box-1".into() }));
    check(
        &signed(&PAYLOAD.replace("2027-02-01", "2027-01-09")),
        Err(Rejection::Expired { not_after: "2027-01-09T00:00:00+00:00".into(), now: "2027-01-10T12:00:00+00:00".into() }),
    );
    check(&signed(&PAYLOAD.replace("version = 5", "version = 4")), Err(Rejection::NotNewer { version: 4, applied: 4 }));
    check(&signed(&PAYLOAD.replace("version = 5", "version = 3")), Err(Rejection::NotNewer { version: 3, applied: 4 }));
    let other = sign(PAYLOAD.as_bytes(), &key("other", 2)).unwrap();
    check(&other, Err(Rejection::UnknownKey("other".into())));
    // The trusted key id, but signed by another key.
    let impostor = sign(PAYLOAD.as_bytes(), &key("fleet", 2)).unwrap();
    check(&impostor, Err(Rejection::BadSignature("fleet".into())));
}

#[test]
fn rejects_a_tampered_payload() {
    let mut env = parse_envelope(&signed(PAYLOAD)).unwrap();
    let tampered = PAYLOAD.replace("version = 5", "version = 9");
    env.payload = B64.encode(tampered.as_bytes());
    check(&serde_json::to_vec(&env).unwrap(), Err(Rejection::BadSignature("fleet".into())));
    // One flipped bit anywhere in the payload bytes.
    let mut bytes = PAYLOAD.as_bytes().to_vec();
    bytes[3] ^= 1;
    let mut env = parse_envelope(&signed(PAYLOAD)).unwrap();
    env.payload = B64.encode(&bytes);
    check(&serde_json::to_vec(&env).unwrap(), Err(Rejection::BadSignature("fleet".into())));
}

#[test]
fn rejects_a_missing_signature() {
    let mut env = parse_envelope(&signed(PAYLOAD)).unwrap();
    env.signature = None;
    check(&serde_json::to_vec(&env).unwrap(), Err(Rejection::MissingSignature));
    env.signature = Some(String::new());
    check(&serde_json::to_vec(&env).unwrap(), Err(Rejection::MissingSignature));
}

fn malformed(bundle: &[u8], needle: &str) {
    let fleet = key("fleet", 1);
    let keys = ring(&[&fleet]);
    let cx = Context { keys: &keys, device_id: "box-1", applied_version: 0, now: now() };
    match verify(bundle, &cx) {
        Err(Rejection::Malformed(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        other => panic!("expected malformed ({needle}), got {other:?}"),
    }
}

#[test]
fn rejects_malformed_bundles() {
    malformed(b"", "envelope");
    malformed(b"{}", "envelope");
    malformed(b"not json", "envelope");
    malformed(br#"{"format":"lectern-bundle/2","key_id":"fleet","signature":"AA==","payload":""}"#, "format");
    malformed(br#"{"format":"lectern-bundle/1","key_id":"fleet","signature":"AA==","payload":"","extra":1}"#, "envelope");
    malformed(br#"{"format":"lectern-bundle/1","key_id":"fleet","signature":"@@","payload":""}"#, "signature is not base64");
    malformed(br#"{"format":"lectern-bundle/1","key_id":"fleet","signature":"AA==","payload":""}"#, "expected 64");
    malformed(&vec![b' '; MAX_BUNDLE_BYTES + 1], "more than");
    // Validly signed, but not a valid payload: each must be refused after the signature checked.
    let k = key("fleet", 1);
    for (payload, needle) in [
        ("version = 5\n", "missing field"),
        ("version = 0\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\n", "at least 1"),
        ("version = 5\ndevice = \"*\"\nnot_after = \"tomorrow\"\n", "RFC 3339"),
        ("version = 5\ndevice = \"a b\"\nnot_after = \"2027-02-01T00:00:00Z\"\n", "device"),
        ("version = 5\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\nsurprise = 1\n", "unknown field"),
        ("version = 5\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\n[secrets]\naws = \"x\"\n", "unknown secret"),
        ("version = 5\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\n[config.opencast]\npassword = \"x\"\n", "[secrets]"),
        ("version = 5\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\nagent_name = \"a\"\n[config.agent]\nname = \"b\"\n", "both"),
        ("version = -1\n", "payload"),
    ] {
        malformed(&sign_unchecked(payload.as_bytes(), "fleet", &k.signing), needle);
        assert!(sign(payload.as_bytes(), &k).is_err(), "sign refuses {payload:?}");
    }
    malformed(&sign_unchecked(&[0xff, 0xfe], "fleet", &k.signing), "UTF-8");
}

/// A secret of the wrong type must not be quoted back in the rejection (it ends up in
/// state.json, the log and `status`).
#[test]
fn a_mistyped_secret_is_not_quoted_in_the_rejection() {
    let k = key("fleet", 1);
    for value in ["73105519", "[\"7310\", \"5519\"]", "{ x = 73105519 }", "7310.5519"] {
        let payload = format!("version = 5\ndevice = \"*\"\nnot_after = \"2027-02-01T00:00:00Z\"\n[secrets]\nopencast_password = {value}\n");
        let err = verify(&sign_unchecked(payload.as_bytes(), "fleet", &k.signing), &Context { keys: &ring(&[&k]), device_id: "b", applied_version: 0, now: now() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("secrets.opencast_password must be a string") && !err.contains("7310"), "{err}");
    }
}

#[test]
fn config_toml_merges_names_and_secret_files_and_holds_no_secret() {
    let p = parse_payload(PAYLOAD.replace("agent_name = \"hall-a\"", "agent_name = \"hall-a\"\npinmap = \"hat-v1\"").as_bytes()).unwrap();
    let text = p.config_toml();
    let t: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(t["agent"]["name"].as_str(), Some("hall-a"));
    assert_eq!(t["board"]["pinmap"].as_str(), Some("hat-v1"));
    assert_eq!(t["opencast"]["password_file"].as_str(), Some("opencast_password.secret"));
    assert_eq!(t["opencast"]["url"].as_str(), Some("https://oc.example.edu"));
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!format!("{p:?}").contains("s3cret"), "Debug shows no secret");
}

#[test]
fn keyring_refuses_bad_and_duplicate_keys() {
    let mut r = Keyring::new();
    let p = std::path::Path::new("k.pub");
    let k = key("fleet", 1);
    r.add(&k.public_file_text(), p).unwrap();
    assert!(matches!(r.add(&k.public_file_text(), p), Err(KeyError::Duplicate { .. })));
    for bad in ["", "lectern-fleet-public fleet", "lectern-fleet-secret x AAAA", "lectern-fleet-public bad/id AAAA", "lectern-fleet-public x AAAA"] {
        assert!(matches!(r.add(bad, p), Err(KeyError::Invalid { .. })), "{bad:?}");
    }
    let s = SecretKey::parse(&k.to_file_text(), p).unwrap();
    assert_eq!(s.public_file_text(), k.public_file_text());
    assert!(!format!("{s:?}").contains(&B64.encode([1u8; 32])));
}
