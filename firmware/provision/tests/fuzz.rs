//! The bounded fuzz harness for the bundle parser (run by `cargo test`, as the calendar parser's
//! `firmware/schedule/tests/fuzz.rs` is): arbitrary bytes, mutated signed bundles and mutated
//! payloads under a valid signature must never panic, and nothing but a bundle whose signed
//! payload is unchanged may verify. Generated payloads are accepted exactly when the device,
//! expiry and version rules say so. The case counts keep the file to a few seconds; raise
//! `PROPTEST_CASES` locally for a longer run.

use chrono::{DateTime, TimeZone, Utc};
use lectern_provision::{parse_envelope, payload_bytes, sign, sign_unchecked, verify, Context, Keyring, Rejection, SecretKey};
use proptest::prelude::*;

const PAYLOAD: &str = "version = 5\ndevice = \"box-1\"\nnot_after = \"2027-02-01T00:00:00Z\"\nagent_name = \"hall-a\"\n\
pinmap = \"hat-v1\"\n[config.opencast]\nurl = \"https://oc.example.edu\"\n[config.capture]\nframerate = 25\n\
[secrets]\nopencast_password = \"s3cret\"\n";

fn fleet() -> SecretKey {
    SecretKey::from_seed("fleet", [7; 32])
}

fn keys() -> Keyring {
    let mut r = Keyring::new();
    r.add(&fleet().public_file_text(), std::path::Path::new("fleet.pub")).unwrap();
    r
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap()
}

fn cx(keys: &Keyring) -> Context<'_> {
    Context { keys, device_id: "box-1", applied_version: 0, now: now() }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Flip(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), prop::collection::vec(prop_oneof![Just(b'"'), Just(b'\n'), Just(b'='), Just(b'['), Just(b' '), any::<u8>()], 0..8))
            .prop_map(|(a, b)| Mutation::Insert(a, b)),
        (any::<usize>(), 1u8..=255).prop_map(|(a, b)| Mutation::Flip(a, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let len = bytes.len().max(1);
    match m {
        Mutation::Truncate(at) => bytes.truncate(at % len),
        Mutation::Delete(at, n) => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        Mutation::Insert(at, b) => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Flip(at, x) => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random bytes never panic and never verify.
    #[test]
    fn arbitrary_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let keys = keys();
        prop_assert!(verify(&bytes, &cx(&keys)).is_err());
    }

    /// A signed bundle, mutated as bytes: it verifies only if what was signed is unchanged (a
    /// mutation in the JSON's whitespace, say), and then it says exactly what was signed.
    #[test]
    fn a_mutated_bundle_verifies_only_unchanged(ms in prop::collection::vec(mutation(), 1..4)) {
        let original = sign(PAYLOAD.as_bytes(), &fleet()).unwrap();
        let mutated = ms.iter().fold(original.clone(), apply);
        let keys = keys();
        match verify(&mutated, &cx(&keys)) {
            Ok(v) => {
                let env = parse_envelope(&mutated).unwrap();
                prop_assert_eq!(payload_bytes(&env).unwrap(), PAYLOAD.as_bytes().to_vec());
                prop_assert_eq!(v.payload.version, 5);
                prop_assert_eq!(v.key_id, "fleet");
            }
            Err(Rejection::Malformed(m)) => prop_assert!(!m.is_empty()),
            Err(Rejection::MissingSignature | Rejection::UnknownKey(_) | Rejection::BadSignature(_)) => {}
            Err(other) => prop_assert!(false, "a mutation reached a payload check: {other:?}"),
        }
    }

    /// A mutated payload under a valid signature (a fleet key signing garbage) never panics; if
    /// it is accepted, its config file is TOML that holds no secret.
    #[test]
    fn a_mutated_signed_payload_never_panics(ms in prop::collection::vec(mutation(), 1..4)) {
        let payload = ms.iter().fold(PAYLOAD.as_bytes().to_vec(), apply);
        let bundle = sign_unchecked(&payload, "fleet", &fleet().signing);
        let keys = keys();
        match verify(&bundle, &cx(&keys)) {
            Ok(v) => {
                let text = v.payload.config_toml();
                prop_assert!(text.parse::<toml::Table>().is_ok(), "{}", text);
                for secret in v.payload.secrets.values().filter(|s| s.len() >= 3) {
                    prop_assert!(!text.contains(secret.as_str()), "{}", text);
                }
                prop_assert!(sign(&payload, &fleet()).is_ok(), "sign accepts what verify accepts");
            }
            Err(Rejection::Malformed(m)) => {
                prop_assert!(!m.is_empty());
                prop_assert!(sign(&payload, &fleet()).is_err(), "sign refuses what a box would refuse as malformed");
            }
            Err(Rejection::OtherDevice { .. } | Rejection::Expired { .. } | Rejection::NotNewer { .. }) => {}
            Err(other) => prop_assert!(false, "a valid signature was refused: {other:?}"),
        }
    }

    /// Generated payloads: accepted exactly when the device matches (or is `*`), `now` is not past
    /// `not_after`, and the version is above the applied one.
    #[test]
    fn the_rules_decide_exactly(
        version in 1u64..20,
        applied in 0u64..20,
        device in prop_oneof![Just("*"), Just("box-1"), Just("box-2")],
        expiry_offset_s in -100_000i64..100_000,
        agent in "[a-z0-9-]{1,20}",
    ) {
        let not_after = now() + chrono::Duration::seconds(expiry_offset_s);
        let payload = format!(
            "version = {version}\ndevice = \"{device}\"\nnot_after = \"{}\"\nagent_name = \"{agent}\"\n",
            not_after.to_rfc3339()
        );
        let bundle = sign(payload.as_bytes(), &fleet()).unwrap();
        let keys = keys();
        let cx = Context { keys: &keys, device_id: "box-1", applied_version: applied, now: now() };
        let got = verify(&bundle, &cx);
        let expect_ok = device != "box-2" && expiry_offset_s >= 0 && version > applied;
        prop_assert_eq!(got.is_ok(), expect_ok, "{:?}", got);
        match got {
            Ok(v) => prop_assert_eq!(v.payload.agent_name.as_deref(), Some(agent.as_str())),
            Err(Rejection::OtherDevice { .. }) => prop_assert_eq!(device, "box-2"),
            Err(Rejection::Expired { .. }) => prop_assert!(expiry_offset_s < 0 && device != "box-2"),
            Err(Rejection::NotNewer { version: v, applied: a }) => prop_assert!(v <= a && v == version && a == applied),
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }
}
