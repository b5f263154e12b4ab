//! A merchant backend's JWT (`Authorization: Bearer …` on `/v1/websocket/auth`), checked
//! by verifiers for each algorithm an app may configure, and a JWKS document as a
//! `jwks_url` may answer.
//!
//! The whole input is the token; its first two lines also serve as a merchant id and a
//! `kid` for tokens the target signs itself.
//!
//! Invariants: no panic (header, claims, keys, JWKS); a token is accepted only with the
//! configured algorithm in its header, and then names the merchant its claims name; the
//! `alg` quoted in errors is at most 16 characters; a token signed with the app's HS256
//! secret verifies to its merchant, and the same claims under another algorithm in the
//! header are refused as such; a JWKS that parses has at least one key.
#![no_main]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, JwtAlgorithm, JwtConfig, JwtError, JwtVerifier};
use payrelay_fuzz::{fields, text};
use serde_json::{Value, json};

const HS_SECRET: &str = "merchant-jwt-secret-0123456789";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/jwt");

fn verifier(config: Value) -> JwtVerifier {
    let config: JwtConfig = serde_json::from_value(config).expect("a valid [apps.jwt]");
    JwtVerifier::new(&config).expect("the fixtures load")
}

fn verifiers() -> &'static [(JwtAlgorithm, JwtVerifier)] {
    static VERIFIERS: OnceLock<Vec<(JwtAlgorithm, JwtVerifier)>> = OnceLock::new();
    VERIFIERS.get_or_init(|| {
        vec![
            (JwtAlgorithm::HS256, verifier(json!({"algorithm": "HS256", "secret": HS_SECRET}))),
            (
                JwtAlgorithm::RS256,
                verifier(json!({"algorithm": "RS256", "public_key_file": format!("{FIXTURES}/rs256-public.pem")})),
            ),
            (
                JwtAlgorithm::ES256,
                verifier(json!({"algorithm": "ES256", "public_key_file": format!("{FIXTURES}/es256-public.pem")})),
            ),
        ]
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A token's header and claims, read without checking anything.
fn unverified(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let mut part = || -> Option<Value> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts.next()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    Some((part()?, part()?))
}

fuzz_target!(|bytes: &[u8]| {
    if let Ok(n) = fuzzing::jwks_key_count(bytes) {
        assert!(n >= 1, "a JWKS without keys was accepted");
    }
    if let Some(token) = text(bytes) {
        if let Some(alg) = fuzzing::jwt_unverified_alg(token) {
            assert!(alg.chars().count() <= 16, "alg {alg:?} quoted whole");
        }
        for (algorithm, verifier) in verifiers() {
            let Ok(merchant) = verifier.verify(token) else {
                continue;
            };
            // Only the seeds hold genuine signatures; whatever is accepted must be
            // consistent with what the token says.
            let (header, claims) = unverified(token).expect("an accepted token decodes");
            assert_eq!(
                header["alg"].as_str(),
                Some(format!("{algorithm:?}").as_str())
            );
            let named = match claims.get("merchant_id").or_else(|| claims.get("sub")) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                other => panic!("accepted, naming merchant {other:?}"),
            };
            assert_eq!(merchant, named);
        }
    }

    // Tokens signed with the app's secret: accepted for the merchant they name.
    let parts = fields(bytes, 3);
    let merchant = parts.first().and_then(|f| text(f)).unwrap_or("");
    let kid = parts.get(1).and_then(|f| text(f));
    let claims = json!({"merchant_id": merchant, "exp": now() + 3600});
    let key = EncodingKey::from_secret(HS_SECRET.as_bytes());
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid.map(str::to_string);
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("HS256 signs anything");
    let hs = &verifiers()[0].1;
    match hs.verify(&token) {
        Ok(got) => assert_eq!(got, merchant),
        Err(JwtError::NoMerchant(_)) => assert!(merchant.is_empty()),
        Err(e) => panic!("a genuine token was refused: {e}"),
    }
    for (_, other) in &verifiers()[1..] {
        assert!(
            matches!(other.verify(&token), Err(JwtError::WrongAlgorithm(..))),
            "an HS256 token reached an asymmetric key"
        );
    }
    header.alg = Algorithm::HS384;
    let token = jsonwebtoken::encode(&header, &claims, &key).expect("HS384 signs anything");
    assert!(matches!(
        hs.verify(&token),
        Err(JwtError::WrongAlgorithm(..))
    ));
});
