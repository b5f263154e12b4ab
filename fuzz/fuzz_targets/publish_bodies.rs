//! The JSON bodies of the publishing and token routes as they arrive:
//! `POST /v1/events` (merchant events), `POST /api/v1/events` (the plain protocol's),
//! `POST /api/v1/tokens[/revoke]` (access tokens), `POST /v1/client-tokens[/revoke]`
//! (Socket.IO client tokens). Input: the first line is the merchant of the API key that
//! calls the client-token route (empty: the app's credentials), the rest the body; every
//! parser gets every body.
//!
//! Invariants: no panic; an accepted body is a JSON object of the route's documented keys
//! only, and what the route makes of it holds what the JSON said: the merchant's channel
//! `private-{kind}.{merchant_id}` (its owner that merchant), the plain channel the app
//! configures (`private-all.{c}` without a user, `private-user-{u}.{c}` with one), the
//! event name as sent and never a `pusher:` one, the data as sent (a string as itself,
//! other JSON as its text), the audience as marked (never one user and everyone at
//! once); rebuilt as a backend sends it, the body is accepted as the same publication; the
//! publish path's own checks refuse such a publication only for its event name or size,
//! never for the channel the route built; token requests name valid user and merchant
//! ids, a lifetime within the limit, and an API key only its own merchant.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::core::App;
use payrelay::fuzzing::{self, RoutePublication};
use serde_json::{Value, json};

fuzz_target!(|input: &[u8]| {
    let (key_merchant, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (&[][..], input),
    };
    let key_merchant = std::str::from_utf8(key_merchant)
        .ok()
        .filter(|m| !m.is_empty());
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let app = fuzzing::app("app-key", "app-secret");

    if let Ok(event) = fuzzing::merchant_event_body(body) {
        let object = object_of(
            &json,
            &[
                "merchant_id",
                "kind",
                "event",
                "data",
                "user_id",
                "idempotency_key",
                "merchant_wide",
            ],
        );
        let merchant = object["merchant_id"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        assert_eq!(
            fuzzing::merchant_private_channel(kind, merchant).as_deref(),
            Some(event.channel.as_str())
        );
        assert_eq!(
            fuzzing::merchant_channel_owner(&event.channel),
            Some(merchant)
        );
        assert_eq!(event.answer_channel, event.channel);
        check_common(&app, object, &event);
        assert_eq!(
            event.everyone,
            object.get("merchant_wide") == Some(&Value::Bool(true))
        );
        assert!(!(event.everyone && event.for_user.is_some()));
        let mut again = json!({"merchant_id": merchant, "kind": kind});
        rebuilt(&mut again, &event);
        if event.everyone {
            again["merchant_wide"] = json!(true);
        }
        let back = fuzzing::merchant_event_body(again.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{again} refused: {e:?}"));
        assert_eq!(back, event);
    }

    if let Ok(event) = fuzzing::plain_event_body(&app, body) {
        let object = object_of(
            &json,
            &["user_id", "channel", "event", "data", "idempotency_key"],
        );
        let (global, per_user) = fuzzing::plain_channels(&app);
        let channel = object["channel"].as_str().unwrap();
        assert_eq!(event.answer_channel, channel);
        // The plain API reaches a user through the user's own channel, unmarked.
        assert!(!event.everyone && event.for_user.is_none());
        let mut again = json!({"channel": channel});
        match object.get("user_id").filter(|u| !u.is_null()) {
            None => {
                assert!(global.iter().any(|c| c == channel), "{channel}");
                assert_eq!(event.channel, format!("private-all.{channel}"));
            }
            Some(user) => {
                assert!(per_user.iter().any(|c| c == channel), "{channel}");
                let user = id_text(user).expect("a user id");
                assert!(fuzzing::valid_user_id(&user), "{user}");
                assert_eq!(event.channel, format!("private-user-{user}.{channel}"));
                again["user_id"] = json!(user);
            }
        }
        assert_eq!(fuzzing::plain_logical_channel(&event.channel), channel);
        check_common(&app, object, &event);
        rebuilt(&mut again, &event);
        let back = fuzzing::plain_event_body(&app, again.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{again} refused: {e:?}"));
        assert_eq!(back, event);
    }

    if let Ok((user, ttl)) = fuzzing::access_token_body(body) {
        let object = object_of(&json, &["user_id", "ttl_secs"]);
        assert!(fuzzing::valid_user_id(&user), "{user}");
        assert_eq!(id_text(&object["user_id"]).as_deref(), Some(user.as_str()));
        assert!((1..=30 * 24 * 3600).contains(&ttl), "{ttl}");
        let again = json!({"user_id": user, "ttl_secs": ttl});
        assert_eq!(
            fuzzing::access_token_body(again.to_string().as_bytes()),
            Ok((user, ttl))
        );
    }

    let (default_ttl, max_ttl) = fuzzing::client_token_ttls(&app);
    let client = fuzzing::client_token_body(&app, key_merchant, body);
    if let Ok((merchant, user, ttl)) = &client {
        let object = object_of(&json, &["merchant_id", "user_id", "ttl_secs"]);
        assert!(fuzzing::valid_merchant_id(merchant), "{merchant}");
        match key_merchant {
            Some(own) => assert_eq!(merchant, own),
            None => assert_eq!(object["merchant_id"].as_str(), Some(merchant.as_str())),
        }
        if let Some(user) = user {
            assert!(fuzzing::valid_user_id(user), "{user}");
            assert_eq!(id_text(&object["user_id"]).as_ref(), Some(user));
        } else {
            assert!(object.get("user_id").is_none_or(Value::is_null));
        }
        let asked = object.get("ttl_secs").and_then(Value::as_u64);
        assert_eq!(*ttl, asked.unwrap_or(default_ttl));
        assert!((1..=max_ttl).contains(ttl), "{ttl}");
        let again = json!({"merchant_id": merchant, "user_id": user, "ttl_secs": ttl});
        assert_eq!(
            fuzzing::client_token_body(&app, key_merchant, again.to_string().as_bytes()),
            client
        );
    }
    // An API key never mints for another merchant.
    if let (Some(own), Some(asked)) = (
        key_merchant,
        json.as_ref()
            .and_then(|j| j.get("merchant_id"))
            .and_then(Value::as_str),
    ) && asked != own
    {
        assert!(client.is_err());
    }

    for (route, token) in [
        (
            "/api/v1/tokens/revoke",
            fuzzing::access_token_revoke_body(body),
        ),
        (
            "/v1/client-tokens/revoke",
            fuzzing::client_token_revoke_body(body),
        ),
    ] {
        if let Ok(token) = token {
            let object = object_of(&json, &["token"]);
            assert_eq!(object["token"].as_str(), Some(token.as_str()), "{route}");
        }
    }
});

/// The body as a JSON object of `keys` only (an accepted body must be one).
fn object_of<'a>(json: &'a Option<Value>, keys: &[&str]) -> &'a serde_json::Map<String, Value> {
    let object = json
        .as_ref()
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("accepted a body that is not a JSON object: {json:?}"));
    for key in object.keys() {
        assert!(
            keys.contains(&key.as_str()),
            "accepted an unknown key `{key}`"
        );
    }
    object
}

/// A user id as the routes read it: a non-empty string, or a number's text.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What both publishing routes promise of an accepted body.
fn check_common(app: &App, object: &serde_json::Map<String, Value>, event: &RoutePublication) {
    assert_eq!(object["event"].as_str(), Some(event.event.as_str()));
    assert!(!event.event.starts_with("pusher:") && !event.event.starts_with("pusher_internal:"));
    let data = object.get("data").cloned().unwrap_or(Value::Null);
    let expected = match &data {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_eq!(event.data, expected);
    assert_eq!(
        object.get("idempotency_key").and_then(Value::as_str),
        event.idempotency_key.as_deref()
    );
    if let Some(key) = &event.idempotency_key
        && let Ok(parsed) = fuzzing::idempotency_key(key)
    {
        assert_eq!(&parsed, key);
        assert!(parsed.bytes().all(|b| b.is_ascii_graphic()));
    }
    if let Some(user) = &event.for_user {
        assert!(fuzzing::valid_user_id(user), "{user}");
        assert_eq!(
            object.get("user_id").and_then(id_text).as_deref(),
            Some(user.as_str())
        );
    }
    // The route built the channel: the publish path refuses only the name or the size.
    assert!(
        fuzzing::classify_channel(&event.channel).is_ok(),
        "{}",
        event.channel
    );
    let name_ok = (1..=fuzzing::MAX_EVENT_NAME_LEN).contains(&event.event.len());
    let size_ok = event.data.len() <= app.limits.max_message_size;
    assert_eq!(
        fuzzing::route_publication_check(app, event).is_ok(),
        name_ok && size_ok,
        "{event:?}"
    );
}

/// The event's fields as a backend sends them, into `body`.
fn rebuilt(body: &mut Value, event: &RoutePublication) {
    body["event"] = json!(event.event);
    // Data that was JSON goes back as that JSON; a string as the string.
    body["data"] = serde_json::from_str::<Value>(&event.data)
        .ok()
        .filter(|v| !v.is_string())
        .unwrap_or_else(|| json!(event.data));
    if let Some(user) = &event.for_user {
        body["user_id"] = json!(user);
    }
    if let Some(key) = &event.idempotency_key {
        body["idempotency_key"] = json!(key);
    }
}
