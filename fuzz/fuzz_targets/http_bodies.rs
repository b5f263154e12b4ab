//! Request bodies of the HTTP APIs, all from the network: `POST /apps/{id}/events`,
//! `POST /apps/{id}/batch_events` (Pusher HTTP API), `POST /v1/websocket/auth` (JSON or
//! form), and the `info` query parameter of the channel routes.
//!
//! Invariants: no panic; an accepted event satisfies every documented rule (1 to
//! `max_event_channels` valid channel names, no encrypted channel among several, a
//! non-reserved name of 1 to 200 bytes, data within `max_message_size`, a socket id that
//! round-trips); rebuilt as the JSON a server library would send, it is accepted again
//! unchanged; accepted batches hold 1 to `max_batch_size` single-channel events; the
//! auth body's fields round-trip through JSON and form encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, ApiEvent, ChannelKind, MAX_EVENT_NAME_LEN, SocketId};
use serde_json::json;

fuzz_target!(|body: &[u8]| {
    let app = payrelay_fuzz::app();
    let limits = &app.limits;

    if let Ok(event) = fuzzing::pusher_trigger_body(&app, body) {
        check_event(&app, &event);
        let again = fuzzing::pusher_trigger_body(&app, rebuilt(&event, true).as_bytes())
            .expect("a rebuilt event is accepted");
        assert_eq!(again, ApiEvent { info: 0, ..event });
    }

    if let Ok(events) = fuzzing::pusher_batch_body(&app, body) {
        assert!((1..=limits.max_batch_size).contains(&events.len()));
        for event in &events {
            check_event(&app, event);
            assert_eq!(event.channels.len(), 1, "a batch item names one channel");
        }
        let items: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::from_str(&rebuilt(e, false)).expect("rebuilt JSON"))
            .collect();
        let again =
            fuzzing::pusher_batch_body(&app, json!({"batch": items}).to_string().as_bytes())
                .expect("a rebuilt batch is accepted");
        let unchanged: Vec<ApiEvent> = events
            .into_iter()
            .map(|e| ApiEvent { info: 0, ..e })
            .collect();
        assert_eq!(again, unchanged);
    }

    for content_type in [
        None,
        Some("application/x-www-form-urlencoded; charset=utf-8"),
    ] {
        if let Ok((socket_id, channel)) = fuzzing::merchant_auth_body(content_type, body) {
            let as_json = json!({"socket_id": socket_id, "channel_name": channel}).to_string();
            assert_eq!(
                fuzzing::merchant_auth_body(None, as_json.as_bytes()),
                Ok((socket_id.clone(), channel.clone()))
            );
            let as_form = form_urlencoded::Serializer::new(String::new())
                .append_pair("socket_id", &socket_id)
                .append_pair("channel_name", &channel)
                .finish();
            assert_eq!(
                fuzzing::merchant_auth_body(
                    Some("application/x-www-form-urlencoded"),
                    as_form.as_bytes()
                ),
                Ok((socket_id, channel))
            );
        }
    }

    if let Ok(info) = std::str::from_utf8(body) {
        for allow_cache in [false, true] {
            if let Ok(n) = fuzzing::pusher_info_param(Some(info), allow_cache) {
                assert!(n <= 2 + usize::from(allow_cache), "{n} distinct attributes");
            }
        }
    }
});

fn check_event(app: &payrelay::core::App, event: &ApiEvent) {
    let limits = &app.limits;
    assert!((1..=limits.max_event_channels).contains(&event.channels.len()));
    for channel in &event.channels {
        let info = fuzzing::classify_channel(channel).expect("accepted channels are valid");
        if info.kind == ChannelKind::PrivateEncrypted {
            assert_eq!(
                event.channels.len(),
                1,
                "an encrypted channel among several"
            );
        }
    }
    assert!(!event.name.is_empty() && event.name.len() <= MAX_EVENT_NAME_LEN);
    assert!(!event.name.starts_with("pusher:") && !event.name.starts_with("pusher_internal:"));
    assert!(
        event.data.len() <= limits.max_message_size,
        "{} bytes of data",
        event.data.len()
    );
    if let Some(id) = &event.exclude {
        let parsed = SocketId::parse(id).expect("the excluded socket id shows as one");
        assert_eq!(&parsed.to_string(), id);
    }
}

/// The event as a server library would send it: data as a string.
fn rebuilt(event: &ApiEvent, several: bool) -> String {
    let mut value = json!({"name": event.name, "data": event.data});
    if several {
        value["channels"] = json!(event.channels);
    } else {
        value["channel"] = json!(event.channels[0]);
    }
    if let Some(id) = &event.exclude {
        value["socket_id"] = json!(id);
    }
    value.to_string()
}
