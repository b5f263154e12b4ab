//! The plain JSON protocol (`/api/v1/ws`): one client message, and the event frame the
//! server writes for data a backend published.
//!
//! The whole input is the client's message and, as text, the published data; its first
//! two lines also serve as a user id and a logical channel name.
//!
//! Invariants: no panic; a message that parses re-encodes to the same message; the event
//! frame is JSON whose `event` and `channel` are what was published and whose `data` is
//! the published JSON itself (or the published text as a string when it is not JSON);
//! logical channels round-trip through core channel names for every valid user id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing;
use payrelay_fuzz::{fields, text};
use serde_json::{Value, json};

fuzz_target!(|bytes: &[u8]| {
    if let Ok((event, channel)) = fuzzing::plain_client_message(bytes) {
        let mut again = json!({"event": event});
        if let Some(channel) = &channel {
            again["channel"] = json!(channel);
        }
        let reparsed = fuzzing::plain_client_message(again.to_string().as_bytes());
        assert_eq!(reparsed, Ok((event, channel)));
    }

    let parts = fields(bytes, 3);
    let user = parts.first().and_then(|f| text(f)).unwrap_or("");
    let channel = parts.get(1).and_then(|f| text(f)).unwrap_or("settings");
    let global = fuzzing::plain_core_channel(true, channel, user);
    assert_eq!(fuzzing::plain_logical_channel(&global), channel);
    if fuzzing::valid_user_id(user) {
        let own = fuzzing::plain_core_channel(false, channel, user);
        assert_eq!(fuzzing::plain_logical_channel(&own), channel);
        assert_ne!(own, global, "a user's channel is not the global one");
    }

    let Ok(data) = std::str::from_utf8(bytes) else {
        return;
    };
    let frame = fuzzing::plain_event_frame(&global, "ORDER_UPDATED", data);
    let parsed: Value = match serde_json::from_str(&frame) {
        Ok(parsed) => parsed,
        Err(e) => panic!("the event frame is not JSON ({e}): {frame}"),
    };
    assert_eq!(parsed["event"], "ORDER_UPDATED");
    assert_eq!(parsed["channel"].as_str(), Some(channel));
    match serde_json::from_str::<Value>(data) {
        Ok(published) => assert_eq!(parsed["data"], published, "JSON data changed"),
        Err(_) => assert_eq!(parsed["data"].as_str(), Some(data), "text data changed"),
    }
});
