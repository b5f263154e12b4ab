//! Webhook endpoint bodies as they arrive: `POST /v1/webhooks/endpoints` (create) and
//! `PATCH /v1/webhooks/endpoints/{id}` (edit), from a merchant's API key or the app.
//!
//! Invariants: no panic; an accepted body is a JSON object of the documented keys only,
//! and every field holds what the JSON said (for PATCH, an absent key, `null` and a value
//! stay distinct); a URL that passes the checks is `http`/`https` with a host, without
//! credentials or a fragment, never a literal non-public address unless private targets
//! are allowed, and passes the checks again unchanged (what is stored can be sent back in
//! a PATCH); an accepted `events` list holds 1 to 100 names of 1 to 200 bytes, each
//! matching itself (a `prefix*` any event that starts with the prefix), and survives the
//! database column unchanged; a description is accepted exactly when it is at most 512
//! characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, MAX_DESCRIPTION_LEN, MAX_FILTER_LEN, MAX_FILTERS, MAX_URL_LEN};
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    let json: Option<Value> = serde_json::from_slice(body).ok();

    if let Ok(request) = fuzzing::parse_new_endpoint(body) {
        let object = object_of(&json, &["url", "merchant_id", "events", "description"]);
        assert_eq!(object["url"], Value::from(request.url.as_str()));
        assert_eq!(
            optional(object, "merchant_id"),
            request.merchant_id.map(Value::from)
        );
        assert_eq!(
            optional(object, "events"),
            request.events.clone().map(Value::from)
        );
        assert_eq!(
            optional(object, "description"),
            request.description.clone().map(Value::from)
        );
        check_url(&request.url);
        check_filter(request.events);
        check_description(request.description);
    }

    if let Ok(patch) = fuzzing::parse_patch(body) {
        let object = object_of(&json, &["url", "events", "enabled", "description"]);
        assert_eq!(optional(object, "url"), patch.url.clone().map(Value::from));
        assert_eq!(optional(object, "enabled"), patch.enabled.map(Value::from));
        // Absent, null and a value are three different edits.
        assert_eq!(
            object.get("events"),
            patch
                .events
                .clone()
                .map(|e| e.map_or(Value::Null, Value::from))
                .as_ref()
        );
        assert_eq!(
            object.get("description"),
            patch
                .description
                .clone()
                .map(|d| d.map_or(Value::Null, Value::from))
                .as_ref()
        );
        if let Some(url) = &patch.url {
            check_url(url);
        }
        if let Some(events) = patch.events {
            check_filter(events);
        }
        if let Some(description) = patch.description {
            check_description(description);
        }
    }
});

/// The body's JSON object, which an accepted body must be, with only `keys`.
fn object_of<'a>(json: &'a Option<Value>, keys: &[&str]) -> &'a serde_json::Map<String, Value> {
    let object = json
        .as_ref()
        .and_then(Value::as_object)
        .expect("an accepted body is a JSON object");
    for key in object.keys() {
        assert!(keys.contains(&key.as_str()), "unknown key {key:?} accepted");
    }
    object
}

/// A key's value, with `null` taken as absent (as `Option` fields read it).
fn optional(object: &serde_json::Map<String, Value>, key: &str) -> Option<Value> {
    object.get(key).filter(|v| !v.is_null()).cloned()
}

fn check_url(raw: &str) {
    let strict = fuzzing::webhook_url(raw, false);
    let relaxed = fuzzing::webhook_url(raw, true);
    if strict.is_ok() {
        assert_eq!(
            strict, relaxed,
            "allowing private targets changes nothing else"
        );
    }
    let Ok(stored) = relaxed else {
        return;
    };
    assert!(raw.len() <= MAX_URL_LEN);
    let url = url::Url::parse(&stored).expect("a stored URL parses");
    assert!(matches!(url.scheme(), "http" | "https"), "{stored}");
    assert!(url.host_str().is_some_and(|h| !h.is_empty()), "{stored}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{stored}"
    );
    assert!(url.fragment().is_none(), "{stored}");
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::from(ip)),
        Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::from(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        assert_eq!(
            strict.is_ok(),
            fuzzing::non_public_address(ip).is_none(),
            "{stored}: a literal address is refused exactly when it is not public"
        );
    }
    // What is stored and shown can be sent back unchanged.
    assert_eq!(
        fuzzing::webhook_url(&stored, true).as_deref(),
        Ok(stored.as_str()),
        "{raw:?} was stored as {stored:?}, which the checks then refuse or change"
    );
}

fn check_filter(events: Option<Vec<String>>) {
    let given = events.clone();
    let Ok(filter) = fuzzing::webhook_filter(events) else {
        let names = given.expect("every event is always a valid filter");
        assert!(
            names.is_empty()
                || names.len() > MAX_FILTERS
                || names.iter().any(|n| {
                    let stem = n.strip_suffix('*').unwrap_or(n);
                    n.is_empty()
                        || n.len() > MAX_FILTER_LEN
                        || stem.contains('*')
                        || n.chars().any(char::is_control)
                }),
            "a valid list was refused: {names:?}"
        );
        return;
    };
    assert_eq!(fuzzing::webhook_filter_stored(&filter), filter);
    let Some(names) = given else {
        assert!(filter.matches("anything"));
        return;
    };
    assert_eq!(filter.names(), Some(names.as_slice()));
    assert!((1..=MAX_FILTERS).contains(&names.len()));
    for name in &names {
        assert!(!name.is_empty() && name.len() <= MAX_FILTER_LEN);
        match name.strip_suffix('*') {
            Some(prefix) => {
                assert!(!prefix.contains('*'));
                assert!(filter.matches(prefix));
                assert!(filter.matches(&format!("{prefix}.more")));
            }
            None => assert!(filter.matches(name)),
        }
    }
}

fn check_description(text: Option<String>) {
    let within = text
        .as_ref()
        .is_none_or(|t| t.chars().count() <= MAX_DESCRIPTION_LEN);
    match fuzzing::webhook_description(text.clone()) {
        Ok(kept) => {
            assert!(within);
            assert_eq!(kept, text);
        }
        Err(_) => assert!(!within),
    }
}
