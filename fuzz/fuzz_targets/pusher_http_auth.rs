//! A signed Pusher HTTP API request (what the `pusher` server libraries send) and the
//! HTTP Basic credentials of the simpler routes, one field per line:
//!
//! ```text
//! METHOD
//! /path
//! query            (auth_key=..&auth_timestamp=..&auth_version=1.0&body_md5=..&auth_signature=..)
//! authorization    (the Authorization header, e.g. Basic base64(key:secret))
//! body
//! ```
//!
//! Invariants: verification never panics and never accepts a request the app's secret
//! did not sign; a request signed with the secret (over the same method, path, extra
//! query parameters and body) is accepted, and refused once the body, the path or the
//! clock moves; Basic credentials that decode re-encode to the same header.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, MAX_CLOCK_SKEW_SECS, RequestAuthError};
use payrelay_fuzz::{fields, text};

/// The seeds are signed at this time.
const NOW: i64 = 1_700_000_000;
const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

fn reserved(name: &str) -> bool {
    name.starts_with("auth_") || name == "body_md5"
}

fuzz_target!(|bytes: &[u8]| {
    let parts = fields(bytes, 5);
    let field = |i: usize| parts.get(i).and_then(|f| text(f)).unwrap_or("");
    let (method, path, query, authorization) = (field(0), field(1), field(2), field(3));
    let body = parts.get(4).copied().unwrap_or(b"");
    let app = payrelay_fuzz::app();

    // As received. A signature the fuzzer made up cannot match, except the seeds' own.
    let verdict = fuzzing::verify_request(&app, method, path, query, body, NOW);
    let extra: Vec<(String, String)> = form_pairs(query)
        .into_iter()
        .filter(|(k, _)| !reserved(&k.to_lowercase()))
        .collect();
    let extra: Vec<(&str, &str)> = extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signed = fuzzing::sign_query(KEY, SECRET, method, path, &extra, body, NOW);
    if verdict.is_ok() {
        let given = signature(query).expect("an accepted request has a signature");
        let expected = signature(&signed).expect("signed queries have a signature");
        assert!(
            given.eq_ignore_ascii_case(&expected),
            "a forged request was accepted"
        );
    }

    // Signed with the secret: accepted, at any time within the allowed skew.
    assert_eq!(
        fuzzing::verify_request(&app, method, path, &signed, body, NOW),
        Ok(())
    );
    assert_eq!(
        fuzzing::verify_request(&app, method, path, &signed, body, NOW + MAX_CLOCK_SKEW_SECS),
        Ok(())
    );
    assert_eq!(
        fuzzing::verify_request(
            &app,
            method,
            path,
            &signed,
            body,
            NOW - MAX_CLOCK_SKEW_SECS - 1
        ),
        Err(RequestAuthError::Expired)
    );
    // Any change to what was signed is refused.
    let mut tampered = body.to_vec();
    tampered.push(b'x');
    let body_refusal = if body.is_empty() {
        // Nothing was signed for an empty body, so a body now is one without its MD5.
        RequestAuthError::Missing("body_md5")
    } else {
        RequestAuthError::BodyMismatch
    };
    assert_eq!(
        fuzzing::verify_request(&app, method, path, &signed, &tampered, NOW),
        Err(body_refusal)
    );
    let other_path = format!("{path}/x");
    assert_eq!(
        fuzzing::verify_request(&app, method, &other_path, &signed, body, NOW),
        Err(RequestAuthError::BadSignature)
    );

    // HTTP Basic.
    if let Ok(Some((key, secret))) = fuzzing::basic_credentials(authorization.as_bytes()) {
        assert!(!key.contains(':'), "the key ends at the first colon");
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{key}:{secret}"));
        let again = fuzzing::basic_credentials(format!("Basic {encoded}").as_bytes());
        assert_eq!(again, Ok(Some((key, secret))));
    }
});

/// The query's parameters, decoded as the server decodes them.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// The (last, as the server reads it) `auth_signature` of a query.
fn signature(query: &str) -> Option<String> {
    form_pairs(query)
        .into_iter()
        .filter(|(k, _)| k == "auth_signature")
        .map(|(_, v)| v)
        .last()
}
