//! Bounded fuzzing (proptest) of every server reply the agent parses itself: the service
//! registry's JSON, the Digest challenge header and the calendar completeness check (the calendar
//! *parser* has its own harness in `firmware/schedule/tests/fuzz.rs`). Arbitrary bytes and
//! mutations of valid replies must never panic; every refusal names the request and what was
//! wrong. Case counts are small so CI spends seconds here; `PROPTEST_CASES=100000` for a long run.

use lectern_opencast::auth::Challenge;
use lectern_opencast::client::is_complete_vcalendar;
use lectern_opencast::discovery::parse_available;
use proptest::prelude::*;

const URL: &str = "http://oc.example/services/available.json?serviceType=org.opencastproject.scheduler";

const REGISTRY: &str = r#"{"services":{"service":{"type":"org.opencastproject.scheduler","host":"http://oc.example","path":"/recordings","active":true,"online":true,"maintenance":false,"jobproducer":false}}}"#;
const CHALLENGE: &str = r#"Digest realm="Opencast", qop="auth", nonce="MTc5NTY4MzYwMDAwMDo2ZjE0", opaque="x""#;

/// A valid reply with bytes replaced, inserted or cut.
fn mutated(valid: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..8), any::<usize>()).prop_map(move |(edits, cut)| {
        let mut b = valid.as_bytes().to_vec();
        for (at, byte, kind) in edits {
            let i = at % (b.len() + 1);
            match kind {
                0 if i < b.len() => b[i] = byte,
                1 => b.insert(i, byte),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => {}
            }
        }
        let keep = cut % (b.len() + 2);
        if keep <= b.len() {
            b.truncate(keep);
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn registry_replies_never_panic_and_errors_name_the_request(body in prop_oneof![any::<Vec<u8>>(), mutated(REGISTRY)]) {
        match parse_available(URL, &body) {
            Ok(urls) => prop_assert!(!urls.is_empty()),
            Err(e) => {
                let text = e.to_string();
                prop_assert!(text.contains(URL), "{text}");
            }
        }
    }

    #[test]
    fn digest_challenges_never_panic_and_errors_quote_the_header(header in prop_oneof![any::<String>(), mutated(CHALLENGE).prop_map(|b| String::from_utf8_lossy(&b).into_owned())]) {
        if let Err(e) = Challenge::parse(&header) {
            let text = e.to_string();
            prop_assert!(text.contains(&format!("{header:?}")), "{text}");
        }
    }

    #[test]
    fn calendar_completeness_never_panics(body in any::<Vec<u8>>()) {
        let complete = is_complete_vcalendar(&body);
        // Without both markers a body can never count as complete.
        if complete {
            let text = String::from_utf8_lossy(&body);
            prop_assert!(text.contains("BEGIN:VCALENDAR") && text.contains("END:VCALENDAR"));
        }
    }
}

#[test]
fn the_unmutated_replies_parse() {
    assert_eq!(parse_available(URL, REGISTRY.as_bytes()).unwrap(), ["http://oc.example/recordings"]);
    assert!(Challenge::parse(CHALLENGE).is_ok());
}
