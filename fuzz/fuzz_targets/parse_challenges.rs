//! `parse_challenges` and the default classifier over arbitrary header values.
//!
//! The input is split on `\n` (a byte no header value can hold) into up to 100 values;
//! the ones `HeaderValue::from_bytes` accepts become `WWW-Authenticate` and
//! `Proxy-Authenticate` lines. Checks the parser's caps and invariants, and that what the
//! crate shows of a challenge (`Display`) holds no raw control character.

#![no_main]

use http::{header, HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_health_classify::{parse_challenges, Challenge, Classifier, DefaultClassifier, Outcome};

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check(challenges: &[Challenge]) {
    assert!(challenges.len() <= 16);
    for challenge in challenges {
        assert!(!challenge.scheme().is_empty());
        assert!(challenge.scheme().bytes().all(is_tchar));
        let params: Vec<(&str, &str)> = challenge.params().collect();
        assert!(params.len() <= 32);
        assert!(challenge.token68().is_none() || params.is_empty());
        for (i, (name, _)) in params.iter().enumerate() {
            assert!(!name.is_empty() && name.bytes().all(is_tchar));
            assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(
                params[..i].iter().all(|(n, _)| n != name),
                "duplicate {name}"
            );
            assert_eq!(challenge.param(name), Some(params[i].1), "first value wins");
        }
        assert!(!format!("{challenge:?}").chars().any(char::is_control));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for raw in data.split(|&b| b == b'\n').take(100) {
        if let Ok(value) = HeaderValue::from_bytes(raw) {
            headers.append(header::WWW_AUTHENTICATE, value.clone());
            headers.append(header::PROXY_AUTHENTICATE, value);
        }
    }
    let challenges = parse_challenges(&headers);
    check(&challenges);
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
    ] {
        let outcome = DefaultClassifier.classify_response(status, &headers);
        let Outcome::Auth(auth) = &outcome else {
            panic!("{status} is an auth outcome: {outcome:?}");
        };
        check(auth.challenges());
        if status != StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            assert_eq!(auth.challenges(), challenges.as_slice());
        }
        let _ = (auth.scope(), auth.resource_metadata(), auth.bearer_error());
        for shown in [
            outcome.to_string(),
            auth.to_string(),
            format!("{outcome:?}"),
        ] {
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
    }
});
