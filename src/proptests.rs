//! Property tests over the parsers that read outside input, with bounded
//! case counts and a fixed seed, so `cargo test` runs the same cases every
//! time in well under a second each. Each asserts no panic and, for what
//! is rejected, a typed error; for what is accepted, that it is
//! well-formed.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use crate::retry::backoff::{Backoff, retry_after};
use crate::{Endpoint, EndpointErrorKind};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x746f_7765_722d_6c62),
        ..Config::default()
    }
}

/// Valid endpoints, to be mutated.
fn seeds() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("http://127.0.0.1:5001".to_string()),
        Just("https://greet.internal:8443/".to_string()),
        Just("10.0.0.7:8080".to_string()),
        Just("http://[::1]:9000".to_string()),
        Just("http://[fe80::1%25eth0]:80".to_string()),
        Just("my_service".to_string()),
    ]
}

/// One small edit: insert, delete or replace a character with one from a
/// set that URIs care about.
fn mutated() -> impl Strategy<Value = String> {
    let chars = prop::sample::select(vec![
        ':', '/', '@', '[', ']', '%', '+', '-', '.', '?', '#', ' ', '0', '9', 'a', 'Z', '_',
        '\u{e9}', '\0', '\n',
    ]);
    (
        seeds(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, chars), 1..4),
    )
        .prop_map(|(seed, edits)| {
            let mut s: Vec<char> = seed.chars().collect();
            for (at, op, c) in edits {
                let i = at.index(s.len() + 1);
                match op {
                    0 => s.insert(i, c),
                    1 if i < s.len() => {
                        s.remove(i);
                    }
                    _ if i < s.len() => s[i] = c,
                    _ => s.push(c),
                }
            }
            s.into_iter().collect()
        })
}

/// An accepted endpoint is well-formed: its key parses back to itself, its
/// port is not 0, its host has no stray characters.
fn assert_well_formed(input: &str, endpoint: &Endpoint) {
    let again = Endpoint::new(endpoint.key())
        .unwrap_or_else(|e| panic!("`{input}` was accepted but its key does not parse: {e}"));
    assert_eq!(again.key(), endpoint.key(), "{input}");
    assert_ne!(endpoint.port(), 0, "{input}");
    let host = endpoint.host();
    let bracketed = host.starts_with('[') && host.ends_with(']');
    assert!(
        bracketed || !host.contains(['[', ']', ':', '@', '/', '?', '#', ' ', '%', '+']),
        "`{input}` accepted with host `{host}`"
    );
}

proptest! {
    #![proptest_config(config(4000))]

    #[test]
    fn mutated_endpoints_are_well_formed_or_a_typed_error(input in mutated()) {
        match Endpoint::new(&input) {
            Ok(endpoint) => assert_well_formed(&input, &endpoint),
            Err(error) => {
                // The message quotes the input, userinfo redacted.
                let _ = error.to_string();
                prop_assert_eq!(error.input(), &*crate::redact::userinfo(&input));
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(input in "\\PC{0,40}") {
        if let Ok(endpoint) = Endpoint::new(&input) {
            assert_well_formed(&input, &endpoint);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn userinfo_is_rejected_and_never_repeated(
        scheme in prop::sample::select(vec!["", "http://", "https://"]),
        user in "[a-z]{0,6}",
        secret in "[A-Za-z0-9]{8,16}",
        host in prop::sample::select(vec!["10.0.0.7", "greet", "[::1]"]),
        port in prop::option::of(1u16..),
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let input = format!("{scheme}{user}:{secret}@{host}{port}");
        let error = Endpoint::new(&input).unwrap_err();
        prop_assert_eq!(error.kind(), &EndpointErrorKind::UserInfo);
        for text in [error.to_string(), format!("{error:?}")] {
            prop_assert!(!text.contains(&secret), "{}", text);
        }
    }

    #[test]
    fn ports_are_digits_from_1_to_65535(written in "[0-9+\\- ]{0,7}") {
        let input = format!("http://h:{written}");
        // Whitespace around the whole input is trimmed.
        let port = written.trim_end();
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && (1..=65535).contains(&port.parse::<u32>().unwrap_or(0));
        match Endpoint::new(&input) {
            Ok(endpoint) => {
                prop_assert!(valid, "{} accepted", input);
                prop_assert_eq!(u32::from(endpoint.port()), port.parse::<u32>().unwrap());
            }
            Err(error) => {
                prop_assert!(!valid, "{} rejected: {}", input, error);
            }
        }
    }

    #[test]
    fn retry_after_is_a_duration_or_none(value in retry_after_value()) {
        let mut headers = HeaderMap::new();
        if let Ok(v) = value.parse() {
            headers.insert(RETRY_AFTER, v);
        }
        if let Some(wait) = retry_after(&headers, SystemTime::now()) {
            // Whatever it asks, adding it to now saturates rather than panics.
            let _ = tokio::time::Instant::now().checked_add(wait);
        }
    }

    #[test]
    fn backoff_at_any_setting_and_retry_stays_under_its_cap(
        base in duration(),
        cap in duration(),
        retry in any::<u32>(),
    ) {
        let backoff = Backoff::new(base, cap);
        let ceiling = backoff.ceiling(retry);
        prop_assert!(ceiling <= cap.max(base));
        prop_assert!(backoff.delay(retry) <= ceiling);
    }

    #[test]
    fn srv_weights_stay_in_range(weight in any::<u16>(), mixed in any::<bool>()) {
        #[cfg(feature = "dns")]
        {
            let w = crate::discover::dns::srv_weight(weight, mixed);
            prop_assert!(w >= 1);
            prop_assert!(weight == 0 || w >= u32::from(weight));
        }
        #[cfg(not(feature = "dns"))]
        let _ = (weight, mixed);
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..10_000).prop_map(Duration::from_millis),
    ]
}

fn retry_after_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_string()),
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\\PC{0,30}",
    ]
}

#[test]
fn the_issues_malformed_endpoints_are_rejected() {
    for input in [
        "10.0.0.7[:8080]",
        "http://a:+1",
        "http://a:",
        "http://a:1:2",
        "http://a b",
    ] {
        assert!(Endpoint::new(input).is_err(), "{input} accepted");
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use proptest::prelude::*;

    use super::{assert_well_formed, config, mutated};
    use crate::discover::etcd::codec::{self, WatchLine};

    proptest! {
        #![proptest_config(config(1000))]

    #[test]
        fn etcd_values_decode_or_say_why(value in etcd_value()) {
            match codec::decode_instance(value.as_bytes()) {
                Ok(endpoint) => {
                    assert_well_formed(&value, &endpoint);
                    prop_assert!(endpoint.weight() >= 1);
                }
                Err(reason) => {
                    let _ = reason.to_string();
                }
            }
        }

        #[test]
        fn watch_frames_parse_or_fail_typed(frame in watch_frame()) {
            // Any frame is a line or a typed JSON error; an accepted one
            // carries its revisions as read, i64::MAX included.
            match serde_json::from_str::<WatchLine>(&frame) {
                Ok(WatchLine { result: Some(result), .. }) => {
                    let revision = result.header.revision;
                    prop_assert!(frame.contains(&revision.to_string()), "{}", frame);
                }
                Ok(_) => prop_assert!(false, "a result frame without its result: {}", frame),
                Err(error) => prop_assert!(error.is_data() || error.is_syntax(), "{}", error),
            }
        }
    }

    fn int64_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(format!("\"{}\"", i64::MAX)),
            Just(format!("\"{}\"", i64::MIN)),
            Just("\"9223372036854775808\"".to_string()),
            Just("\"-1\"".to_string()),
            Just("\"x\"".to_string()),
            Just("1e400".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| format!("\"{n}\"")),
        ]
    }

    fn watch_frame() -> impl Strategy<Value = String> {
        (int64_text(), int64_text(), any::<bool>(), any::<bool>(), "[A-Za-z0-9+/=]{0,12}").prop_map(
            |(revision, mod_revision, canceled, delete, key)| {
                let kind = if delete { r#""type":"DELETE","# } else { "" };
                format!(
                    r#"{{"result":{{"header":{{"revision":{revision}}},"canceled":{canceled},"compact_revision":{revision},"events":[{{{kind}"kv":{{"key":"{key}","value":"{key}","mod_revision":{mod_revision}}}}}]}}}}"#
                )
            },
        )
    }

    fn etcd_value() -> impl Strategy<Value = String> {
        let addr = prop_oneof![mutated(), "\\PC{0,20}"];
        let weight = prop_oneof![
            Just("0".to_string()),
            Just(u32::MAX.to_string()),
            Just((u64::from(u32::MAX) + 1).to_string()),
            Just("-1".to_string()),
            Just("1.5".to_string()),
            Just("\"7\"".to_string()),
            Just("null".to_string()),
            Just("[]".to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
        ];
        let op = prop_oneof![
            Just("0".to_string()),
            Just("1".to_string()),
            Just("\"add\"".to_string()),
            Just("null".to_string()),
        ];
        (addr, weight, op).prop_map(|(addr, weight, op)| {
            let addr = serde_json::to_string(&addr).unwrap_or_default();
            format!(r#"{{"Op":{op},"Addr":{addr},"Metadata":{{"weight":{weight},"zone":"z"}}}}"#)
        })
    }
}

#[cfg(feature = "file")]
mod file {
    use std::path::Path;

    use proptest::prelude::*;

    use super::{assert_well_formed, config, mutated};
    use crate::discover::file::parse;

    fn entry() -> impl Strategy<Value = String> {
        let addr = prop_oneof![mutated(), "\\PC{0,12}"]
            .prop_map(|a| serde_json::to_string(&a).unwrap_or_default());
        let weight = prop::sample::select(vec![
            "0",
            "1",
            "4294967295",
            "4294967296",
            "-1",
            "1.5",
            "\"3\"",
            "null",
            "{}",
        ]);
        prop_oneof![
            addr.clone(),
            (addr, weight).prop_map(|(a, w)| format!(r#"{{"addr":{a},"weight":{w},"zone":1}}"#)),
            Just("42".to_string()),
            Just("[]".to_string()),
        ]
    }

    fn file() -> impl Strategy<Value = String> {
        let entries = || prop::collection::vec(entry(), 0..5).prop_map(|e| e.join(","));
        prop_oneof![
            entries().prop_map(|e| format!("[{e}]")),
            entries().prop_map(|e| format!(r#"{{"endpoints":[{e}]}}"#)),
            "\\PC{0,30}",
            Just(r#"{"endpoints":{}}"#.to_string()),
        ]
    }

    proptest! {
        #![proptest_config(config(1000))]

        #[test]
        fn endpoint_files_parse_or_fail_typed(text in file()) {
            match parse(Path::new("endpoints.json"), text.as_bytes()) {
                Ok(endpoints) => {
                    for endpoint in &endpoints {
                        assert_well_formed(&text, endpoint);
                    }
                }
                Err(error) => prop_assert!(error.to_string().contains("endpoints.json")),
            }
        }
    }
}
