//! Payment requests (seed 001): the create body as xumm-sdk sends it, the signing side's
//! resolve and opened bodies, and the uuid of a route.
//!
//! The whole input is the create body (and the resolve and opened bodies); its first line
//! is also a route's uuid.
//!
//! Invariants: no panic; an accepted create body is within every limit (transaction type,
//! txjson and blob sizes, identifier and instruction lengths, expiry range) and re-encodes
//! to the same request; the payload it becomes answers a GET, a socket and a callback with
//! JSON that carries exactly what was asked (custom_meta, request_json, return URLs with
//! their placeholders filled); an accepted resolution is within its limits; a uuid that
//! parses is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, PayloadsConfig};
use payrelay_fuzz::{fields, text};
use serde_json::{Value, json};
use std::sync::OnceLock;

fn limits() -> &'static PayloadsConfig {
    static LIMITS: OnceLock<PayloadsConfig> = OnceLock::new();
    // Small limits, so the fuzzer reaches them.
    LIMITS.get_or_init(|| PayloadsConfig {
        max_body_bytes: 4096,
        max_txjson_bytes: 1024,
        max_blob_bytes: 256,
        max_expire_secs: 86_400,
        default_expire_secs: 600,
        ..Default::default()
    })
}

const NOW: i64 = 1_764_089_250_000;

fuzz_target!(|bytes: &[u8]| {
    let limits = limits();
    if let Ok(new) = fuzzing::payload_create(bytes, limits) {
        check_limits(&new, limits);
        // What was accepted, sent again, is accepted as the same request.
        let options: Value = serde_json::from_str(&new.options).expect("options are JSON");
        let mut options = options.as_object().expect("options are an object").clone();
        options.insert("expire".into(), json!(new.expire_ms as f64 / 60_000.0));
        let again = json!({
            "txjson": serde_json::from_str::<Value>(&new.request_json).expect("txjson is JSON"),
            "options": options,
            "custom_meta": serde_json::from_str::<Value>(&new.custom_meta).expect("custom_meta is JSON"),
            "user_token": new.user_token,
        });
        let reparsed = fuzzing::payload_create(again.to_string().as_bytes(), limits);
        assert_eq!(reparsed.as_ref(), Ok(&new), "re-encoded: {again}");
        check_shapes(fuzzing::payload_of(new, NOW));
    }

    if let Ok(resolution) = fuzzing::payload_resolution(bytes) {
        for field in [&resolution.txid, &resolution.account, &resolution.user_token] {
            assert!(field
                .as_deref()
                .is_none_or(|f| f.chars().count() <= fuzzing::MAX_TOKEN_CHARS));
        }
    }
    let _ = fuzzing::payload_opened(bytes);

    if let Some(uuid) = fields(bytes, 2).first().and_then(|f| text(f))
        && let Some(canonical) = fuzzing::payload_uuid(uuid)
    {
        assert_eq!(canonical.len(), 36);
        assert_eq!(canonical, uuid.to_ascii_lowercase());
        assert_eq!(fuzzing::payload_uuid(&canonical).as_deref(), Some(canonical.as_str()));
    }
});

fn check_limits(new: &fuzzing::NewPayload, limits: &PayloadsConfig) {
    assert!(!new.tx_type.is_empty() && new.tx_type.len() <= fuzzing::MAX_TOKEN_CHARS);
    assert!(new.tx_type.bytes().all(|b| b.is_ascii_alphanumeric()), "{}", new.tx_type);
    assert!(new.request_json.len() <= limits.max_txjson_bytes);
    assert!(
        (1000..=limits.max_expire_secs as i64 * 1000).contains(&new.expire_ms),
        "expiry {} ms",
        new.expire_ms
    );
    let meta: Value = serde_json::from_str(&new.custom_meta).unwrap();
    assert_eq!(meta.as_object().map(|m| m.len()), Some(3), "{meta}");
    if let Some(identifier) = meta["identifier"].as_str() {
        assert!(identifier.chars().count() <= fuzzing::MAX_IDENTIFIER_CHARS);
    }
    if let Some(instruction) = meta["instruction"].as_str() {
        assert!(instruction.chars().count() <= fuzzing::MAX_INSTRUCTION_CHARS);
    }
    assert!(meta["blob"].is_null() || meta["blob"].to_string().len() <= limits.max_blob_bytes);
    assert!(new
        .user_token
        .as_deref()
        .is_none_or(|t| t.chars().count() <= fuzzing::MAX_TOKEN_CHARS));
}

fn check_shapes(payload: fuzzing::Payload) {
    let uuid = payload.uuid.clone();
    assert_eq!(fuzzing::payload_uuid(&uuid).as_deref(), Some(uuid.as_str()));
    let details = payload.details("app-key", NOW);
    // What travels as text (a callback's data, a GET) reads back as the same JSON.
    let text = details.to_string();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), details);
    assert_eq!(details["meta"]["uuid"], uuid.as_str());
    assert_eq!(
        details["payload"]["request_json"],
        serde_json::from_str::<Value>(&payload.request_json).unwrap()
    );
    let meta: Value = serde_json::from_str(&payload.custom_meta).unwrap();
    assert_eq!(details["custom_meta"], meta);
    assert_eq!(details["payload"]["expires_in_seconds"], (payload.expires_at - NOW) / 1000);

    let message = payload.resolve_message();
    let keys: Vec<&String> = message.as_object().unwrap().keys().collect();
    let mut expected = [
        "custom_meta",
        "opened_by_deeplink",
        "payload_uuidv4",
        "reference_call_uuidv4",
        "return_url",
        "signed",
        "txid",
        "user_token",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(message["custom_meta"], meta);
    let options: Value = serde_json::from_str(&payload.options).unwrap();
    for which in ["app", "web"] {
        let asked = options["return_url"][which].as_str();
        let shown = message["return_url"][which].as_str();
        assert_eq!(asked.is_some(), shown.is_some(), "{which}");
        if let (Some(asked), Some(shown)) = (asked, shown) {
            let identifier = meta["identifier"].as_str().unwrap_or("");
            let filled = asked.replace("{id}", &uuid).replace("{cid}", identifier).replace("{txid}", "");
            assert_eq!(shown, filled);
        }
        assert_eq!(details["meta"][format!("return_url_{which}")].as_str(), shown);
    }
}
