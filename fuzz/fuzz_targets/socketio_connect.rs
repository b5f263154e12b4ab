//! A Socket.IO CONNECT as it arrives: the handshake query on the first line, then the
//! Engine.IO message (`40{"token":"pct_..."}`, `40/admin,{"apiKey":"..."}`, ...), which
//! socketioxide's own parser decodes before payrelay reads the credential from it.
//!
//! Invariants: no panic, in socketioxide's parser or ours; a credential is accepted
//! only when exactly one of `apiKey` and `token` is present and non-empty across the
//! query and the auth payload (the query wins over the payload for the same field), and
//! it is the very value presented; otherwise the refusal says what is missing or doubled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, Credential};
use payrelay_fuzz::{fields, text};
use socketioxide_core::Str;
use socketioxide_core::packet::PacketData;
use socketioxide_core::parser::{Parse, ParseConfig, ParserState};
use socketioxide_parser_common::CommonParser;

fuzz_target!(|bytes: &[u8]| {
    let parts = fields(bytes, 2);
    let query = parts.first().and_then(|f| text(f));
    let Some(packet) = parts.get(1).and_then(|f| text(f)) else {
        return;
    };
    // Engine.IO message packets start with `4`; the rest is the Socket.IO packet.
    let Some(socketio) = packet.strip_prefix('4') else {
        return;
    };
    let parser = CommonParser;
    let decoded = parser.decode_str(
        &ParseConfig::default(),
        &ParserState::default(),
        Str::from(socketio.to_string()),
    );
    let Ok(packet) = decoded else {
        return;
    };
    let PacketData::Connect(payload) = &packet.inner else {
        return;
    };
    let auth = payload
        .as_ref()
        .and_then(|v| v.as_str())
        .map(|s| s.as_str().to_string());
    let result = fuzzing::socketio_credential(query, auth.as_deref());

    // The contract, field by field: the query's last non-empty value, else the payload's
    // (a payload of another shape counts as none, as socketioxide's `TryData` fails).
    let from_query = |name: &str| {
        form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .filter(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.into_owned())
            .last()
    };
    let payload: Payload = auth
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let api_key = from_query("apiKey").or_else(|| nonempty(payload.api_key));
    let token = from_query("token").or_else(|| nonempty(payload.token));
    match (result, api_key, token) {
        (Ok(Credential::ApiKey(got)), Some(key), None) => assert_eq!(got, key),
        (Ok(Credential::Token(got)), None, Some(token)) => assert_eq!(got, token),
        (Err(e), Some(_), Some(_)) => assert!(e.starts_with("Pass either"), "{e}"),
        (Err(e), None, None) => assert!(e.starts_with("Missing credentials"), "{e}"),
        (result, api_key, token) => panic!(
            "{result:?} for apiKey present: {}, token present: {}",
            api_key.is_some(),
            token.is_some()
        ),
    }
});

/// The auth payload's shape, as the client libraries send it.
#[derive(Default, serde::Deserialize)]
struct Payload {
    #[serde(rename = "apiKey", default)]
    api_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
}
