//! Checks shared by the fuzz targets: what must hold for any frame a client can send,
//! whichever wire format carried it.

use payrelay::fuzzing::{
    self, ClientFrame, SigninData, SubscribeData, UnsubscribeData, WireFormat,
};
use std::sync::OnceLock;

use payrelay::core::App;
use serde_json::{Value, json};

/// The app every target checks against: the development app (key `app-key`, secret
/// `app-secret`, default limits), built once.
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| fuzzing::app("app-key", "app-secret"))
}

/// The largest presence `user_info` the checks allow (the app default is 1 KiB).
pub const MAX_MEMBER_INFO: usize = 1024;

/// Splits a fuzz input into at most `n` newline-separated fields (the last keeps any
/// further newlines), so seed files stay readable: one field per line.
pub fn fields(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    bytes.splitn(n, |b| *b == b'\n').collect()
}

/// A field as the server would see it in a header or a query: UTF-8 only.
pub fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes).ok()
}

/// A client frame as a JSON value with the keys it was sent with.
pub fn frame_value(frame: &ClientFrame) -> Value {
    let mut value = json!({ "event": frame.event });
    if let Some(channel) = &frame.channel {
        value["channel"] = json!(channel);
    }
    if let Some(data) = &frame.data {
        value["data"] = data.clone();
    }
    value
}

pub fn assert_same_frame(a: &ClientFrame, b: &ClientFrame, what: &str) {
    assert_eq!(a.event, b.event, "{what}: event");
    assert_eq!(a.channel, b.channel, "{what}: channel");
    assert_eq!(a.data, b.data, "{what}: data");
}

/// A frame that decoded once decodes to the same frame after re-encoding, in JSON and in
/// MessagePack (what a client switching formats would send).
pub fn check_reencoding(frame: &ClientFrame) {
    let value = frame_value(frame);
    let json = value.to_string();
    let again = fuzzing::pusher_client_frame(WireFormat::JsonText, false, json.as_bytes())
        .expect("a re-encoded JSON frame decodes");
    assert_same_frame(frame, &again, "JSON re-encoding");
    let packed = rmp_serde::to_vec_named(&value).expect("a JSON value packs");
    let unpacked = fuzzing::pusher_client_frame(WireFormat::MsgPack, true, &packed)
        .expect("a re-encoded MessagePack frame decodes");
    assert_same_frame(frame, &unpacked, "MessagePack re-encoding");
}

/// What the connection task does with a decoded frame, minus the session: parse the
/// event's data, check names and channel data, and build every frame that quotes client
/// input. Whatever the input, nothing panics and every frame built is well-formed.
pub fn check_frame(frame: &ClientFrame) {
    match frame.event.as_str() {
        "pusher:subscribe" => {
            if let Ok(data) = fuzzing::parse_frame_data::<SubscribeData>(frame.data.clone()) {
                check_subscribe(&data);
            }
        }
        "pusher:unsubscribe" => {
            if let Ok(data) = fuzzing::parse_frame_data::<UnsubscribeData>(frame.data.clone()) {
                let _ = fuzzing::classify_channel(&data.channel);
            }
        }
        "pusher:signin" => {
            if let Ok(data) = fuzzing::parse_frame_data::<SigninData>(frame.data.clone()) {
                check_signin(&data.user_data);
            }
        }
        _ => {}
    }
    // A client event is relayed with its data as a string; every format must carry the
    // client's channel, event and data through unchanged.
    let data = match &frame.data {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let channel = frame.channel.as_deref().unwrap_or("");
    check_event_encoding(channel, &frame.event, &data);
    // Refusals quote the event name.
    let error =
        fuzzing::pusher_error_frame(Some(4300), &format!("Unsupported event `{}`", frame.event));
    let parsed: Value = serde_json::from_str(&error).expect("pusher:error is JSON");
    assert_eq!(parsed["data"]["code"], 4300);
    assert!(
        parsed["data"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&frame.event))
    );
}

pub fn check_subscribe(data: &SubscribeData) {
    let kind = fuzzing::classify_channel(&data.channel);
    let error = fuzzing::pusher_subscription_error_frame(&data.channel, "refused");
    let parsed: Value = serde_json::from_str(&error).expect("subscription_error is JSON");
    assert_eq!(parsed["channel"], json!(data.channel));
    if let Some(channel_data) = &data.channel_data {
        check_channel_data(channel_data);
    }
    if let Ok(info) = kind {
        // The auth check itself must refuse anything the fuzzer made up (it cannot know
        // the secret), and accept the signature the auth endpoint would issue.
        let app = app();
        let socket_id = "1234.1234";
        if info.kind == fuzzing::ChannelKind::Presence {
            let channel_data = data.channel_data.as_deref().unwrap_or("");
            let given = fuzzing::check_presence(
                &app,
                socket_id,
                &data.channel,
                channel_data,
                data.auth.as_deref(),
            );
            let signed = fuzzing::sign_presence(&app, socket_id, &data.channel, channel_data);
            assert_only_signed(given, data.auth.as_deref(), &signed);
            assert_eq!(
                fuzzing::check_presence(
                    &app,
                    socket_id,
                    &data.channel,
                    channel_data,
                    Some(&signed)
                ),
                Ok(())
            );
        } else if info.kind.needs_auth() {
            let given =
                fuzzing::check_private(&app, socket_id, &data.channel, data.auth.as_deref());
            let signed = fuzzing::sign_private(&app, socket_id, &data.channel);
            assert_only_signed(given, data.auth.as_deref(), &signed);
            assert_eq!(
                fuzzing::check_private(&app, socket_id, &data.channel, Some(&signed)),
                Ok(())
            );
        }
    }
}

/// An `auth` is accepted only if it is the signature the app's secret makes (hex digits
/// in either case): the fuzzer cannot know the secret, but the seeds hold real ones.
pub fn assert_only_signed<E: std::fmt::Debug>(
    given: Result<(), E>,
    auth: Option<&str>,
    signed: &str,
) {
    if given.is_ok() {
        let auth = auth.unwrap_or("");
        let (key, hex) = auth.split_once(':').expect("an accepted auth has a colon");
        let (signed_key, signed_hex) = signed.split_once(':').expect("signatures have a colon");
        assert_eq!(key, signed_key, "auth accepted with another key");
        assert!(
            hex.eq_ignore_ascii_case(signed_hex),
            "auth {auth:?} accepted, expected {signed:?}"
        );
    }
}

/// Presence `channel_data`: a member comes out only with a non-empty id and bounded info,
/// and it is the id the JSON names.
pub fn check_channel_data(channel_data: &str) {
    let Ok(member) = fuzzing::presence_member(channel_data, MAX_MEMBER_INFO) else {
        return;
    };
    assert!(
        !member.user_id.is_empty(),
        "empty presence user_id accepted"
    );
    let value: Value = serde_json::from_str(channel_data).expect("accepted channel_data is JSON");
    match &value["user_id"] {
        Value::String(s) => assert_eq!(&*member.user_id, s.as_str()),
        Value::Number(n) => assert_eq!(&*member.user_id, n.to_string()),
        other => panic!("member accepted with user_id {other}"),
    }
    let info_size = member.user_info.as_ref().map_or(0, |i| i.to_string().len());
    assert!(
        info_size <= MAX_MEMBER_INFO,
        "user_info of {info_size} bytes accepted"
    );
}

/// Sign-in `user_data`: the user is its non-empty string `id`, and the success frame
/// echoes `user_data` exactly.
pub fn check_signin(user_data: &str) {
    if let Some(id) = fuzzing::signin_user_id(user_data) {
        assert!(!id.is_empty());
        let value: Value = serde_json::from_str(user_data).expect("accepted user_data is JSON");
        assert_eq!(value["id"].as_str(), Some(id.as_str()));
    }
    let frame = fuzzing::pusher_signin_success_frame(user_data);
    let parsed: Value = serde_json::from_str(&frame).expect("signin_success is JSON");
    assert_eq!(parsed["data"]["user_data"].as_str(), Some(user_data));
}

/// A publication's event frame, in every wire format, decodes back to the channel, event
/// and data that were published (Pusher keeps `data` a string).
pub fn check_event_encoding(channel: &str, event: &str, data: &str) {
    for format in [
        WireFormat::JsonText,
        WireFormat::JsonBinary,
        WireFormat::MsgPack,
    ] {
        let (binary, bytes) = fuzzing::pusher_event_message(format, channel, event, data);
        assert_eq!(
            binary,
            format != WireFormat::JsonText,
            "{format:?}: frame type"
        );
        let value: Value = if format == WireFormat::MsgPack {
            rmp_serde::from_slice(&bytes).expect("a MessagePack event frame unpacks")
        } else {
            serde_json::from_slice(&bytes).expect("a JSON event frame parses")
        };
        assert_eq!(value["event"].as_str(), Some(event), "{format:?}: event");
        assert_eq!(
            value["channel"].as_str(),
            Some(channel),
            "{format:?}: channel"
        );
        assert_eq!(value["data"].as_str(), Some(data), "{format:?}: data");
    }
}
