//! Pusher protocol 7 frames: what clients send and what the server writes.
//!
//! Two quirks every client depends on: the `data` of server events is a JSON *string*
//! (pusher-js parses it a second time), while `pusher:error` carries an object; and
//! `subscription_succeeded` for a non-presence channel has no `data` at all (the seed's
//! wscat transcript shows exactly `{"event":"...","channel":"test-channel"}`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::core::presence::{Member, PresenceSnapshot};
use crate::core::{Publication, StreamPosition};

/// A frame from the client, before its event decides what `data` must hold.
#[derive(Debug, Deserialize)]
pub struct ClientFrame {
    pub event: String,
    #[serde(default)]
    pub channel: Option<String>,
    /// `null` is no data, however it was written (see [`data_or_none`]).
    #[serde(default, deserialize_with = "data_or_none")]
    pub data: Option<Value>,
}

/// A frame's `data`, with `null` read as absent: JSON `null` and MessagePack nil, and also
/// a MessagePack float that JSON cannot hold (NaN, infinity), which a JSON value holds as
/// `null`. Without this, such a float made `Some(Null)` where `null` makes `None`, so the
/// same frame meant two things (found by fuzz/pusher_frame_msgpack).
fn data_or_none<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?.filter(|data| !data.is_null()))
}

/// `pusher:subscribe` data.
#[derive(Debug, Deserialize)]
pub struct SubscribeData {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub channel_data: Option<String>,
    /// payrelay's extension: the position of the last event the client saw on the
    /// channel, to replay what followed (`clients/pusher-resume.js` sends it).
    #[serde(default)]
    pub resume_from: Option<String>,
}

/// `pusher:unsubscribe` data.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeData {
    pub channel: String,
}

/// `pusher:signin` data.
#[derive(Debug, Deserialize)]
pub struct SigninData {
    pub auth: String,
    pub user_data: String,
}

/// Parses a client frame's `data`, which clients send as an object but some send as a
/// JSON string holding the object.
pub fn parse_data<T: for<'de> Deserialize<'de>>(data: Option<Value>) -> Result<T, String> {
    let value = match data {
        Some(Value::String(s)) => serde_json::from_str(&s).map_err(|e| e.to_string())?,
        Some(v) => v,
        None => return Err("missing `data`".into()),
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The presence member a subscribe's `channel_data` names: a `user_id` (a non-empty
/// string, or a number shown as one) and an optional `user_info` of at most
/// `max_info_bytes` serialised. The error is the subscription error's status and text.
pub fn presence_member(channel_data: &str, max_info_bytes: usize) -> Result<Member, (u16, String)> {
    let invalid = |why: &str| (400, format!("Invalid presence channel_data: {why}"));
    let value: Value = serde_json::from_str(channel_data).map_err(|_| invalid("not JSON"))?;
    let user_id = match value.get("user_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("`user_id` must be a non-empty string or a number")),
    };
    let user_info = value.get("user_info").cloned();
    let size = user_info.as_ref().map_or(0, |i| i.to_string().len());
    if size > max_info_bytes {
        return Err((
            super::codes::OVER_CAPACITY,
            format!("Presence user_info is {size} bytes, over the limit of {max_info_bytes}"),
        ));
    }
    Ok(Member {
        user_id: user_id.into(),
        user_info,
    })
}

/// The user a `pusher:signin`'s `user_data` signs in: its non-empty string `id`.
pub fn signin_user_id(user_data: &str) -> Option<String> {
    serde_json::from_str::<Value>(user_data)
        .ok()
        .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        .filter(|id| !id.is_empty())
}

fn to_string<T: Serialize>(value: &T) -> String {
    // Serialising our own plain structs and `Value`s cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// A server frame with its keys in the order Pusher writes them: event, channel, data.
#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    /// payrelay's extra fields (`[apps.history] pusher_fields`); Pusher clients ignore
    /// unknown fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<&'a StreamPosition>,
}

fn frame<D: Serialize>(event: &str, channel: Option<&str>, data: Option<D>) -> String {
    to_string(&Frame {
        event,
        channel,
        data,
        user_id: None,
        id: None,
        position: None,
    })
}

/// The event frame for a publication (what pusher-js hands to `channel.bind`); with
/// `fields`, its `id` and `position` follow Pusher's keys.
pub fn event(publication: &Publication, fields: bool) -> String {
    to_string(&Frame {
        event: &publication.event,
        channel: Some(&publication.channel),
        data: Some(&*publication.data),
        user_id: publication.user_id.as_deref(),
        id: fields.then(|| publication.id.to_string()),
        position: publication.position().filter(|_| fields),
    })
}

/// `pusher:resume_failed` on a channel: the position asked for cannot be vouched for;
/// `data.position` is where the events that follow come after.
pub fn resume_failed(channel: &str, position: Option<&StreamPosition>) -> String {
    let data = match position {
        Some(position) => json!({ "position": position }),
        None => json!({}),
    };
    frame(
        "pusher:resume_failed",
        Some(channel),
        Some(data.to_string()),
    )
}

pub fn connection_established(socket_id: &str, activity_timeout_secs: u64) -> String {
    #[derive(Serialize)]
    struct Established<'a> {
        socket_id: &'a str,
        activity_timeout: u64,
    }
    let data = to_string(&Established {
        socket_id,
        activity_timeout: activity_timeout_secs,
    });
    frame("pusher:connection_established", None, Some(data))
}

pub fn error(code: Option<u16>, message: &str) -> String {
    frame(
        "pusher:error",
        None,
        Some(json!({"code": code, "message": message})),
    )
}

pub fn ping() -> String {
    frame("pusher:ping", None, Some(json!({})))
}

pub fn pong() -> String {
    frame("pusher:pong", None, Some(json!({})))
}

/// `pusher_internal:subscription_succeeded`; `position` (an extra field, when the app
/// shows positions) is where the events that follow come after.
pub fn subscription_succeeded(
    channel: &str,
    presence: Option<&PresenceSnapshot>,
    position: Option<&StreamPosition>,
) -> String {
    let Some(snapshot) = presence else {
        return to_string(&Frame::<()> {
            event: "pusher_internal:subscription_succeeded",
            channel: Some(channel),
            data: None,
            user_id: None,
            id: None,
            position,
        });
    };
    #[derive(Serialize)]
    struct Presence<'a> {
        ids: Vec<&'a str>,
        hash: serde_json::Map<String, Value>,
        count: usize,
    }
    #[derive(Serialize)]
    struct Data<'a> {
        presence: Presence<'a>,
    }
    let ids: Vec<&str> = snapshot.members.iter().map(|m| &*m.user_id).collect();
    let hash = snapshot
        .members
        .iter()
        .map(|m| {
            let info = m.user_info.clone().unwrap_or(Value::Null);
            (m.user_id.to_string(), info)
        })
        .collect();
    let count = ids.len();
    let data = to_string(&Data {
        presence: Presence { ids, hash, count },
    });
    to_string(&Frame {
        event: "pusher_internal:subscription_succeeded",
        channel: Some(channel),
        data: Some(data),
        user_id: None,
        id: None,
        position,
    })
}

/// `pusher:subscription_error`, as pusher-js surfaces it on the channel.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    frame(
        "pusher:subscription_error",
        Some(channel),
        Some(json!({"type": kind, "error": error, "status": status})),
    )
}

pub fn member_added(channel: &str, member: &Member) -> String {
    let mut data = json!({"user_id": &*member.user_id});
    if let Some(info) = &member.user_info {
        data["user_info"] = info.clone();
    }
    frame(
        "pusher_internal:member_added",
        Some(channel),
        Some(to_string(&data)),
    )
}

pub fn member_removed(channel: &str, user_id: &str) -> String {
    frame(
        "pusher_internal:member_removed",
        Some(channel),
        Some(to_string(&json!({"user_id": user_id}))),
    )
}

pub fn cache_miss(channel: &str) -> String {
    frame::<()>("pusher:cache_miss", Some(channel), None)
}

pub fn signin_success(user_data: &str) -> String {
    frame(
        "pusher:signin_success",
        None,
        Some(json!({"user_data": user_data})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn connection_established_carries_a_json_string() {
        let frame: Value = serde_json::from_str(&connection_established("1.2", 120)).unwrap();
        assert_eq!(frame["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data, json!({"socket_id": "1.2", "activity_timeout": 120}));
    }

    #[test]
    fn frames_match_the_seed_transcript_byte_for_byte() {
        assert_eq!(
            subscription_succeeded("test-channel", None, None),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"test-channel"}"#
        );
        assert_eq!(
            connection_established("957523923.7566984777", 30),
            r#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"957523923.7566984777\",\"activity_timeout\":30}"}"#
        );
    }

    #[test]
    fn presence_succeeded_lists_members_once() {
        let member = |id: &str| {
            Arc::new(Member {
                user_id: id.into(),
                user_info: Some(json!({"name": id})),
            })
        };
        let snapshot = PresenceSnapshot {
            members: vec![member("a"), member("b")],
        };
        let frame: Value =
            serde_json::from_str(&subscription_succeeded("presence-x", Some(&snapshot), None))
                .unwrap();
        let data: Value = serde_json::from_str(frame["data"].as_str().unwrap()).unwrap();
        assert_eq!(data["presence"]["count"], 2);
        assert_eq!(data["presence"]["ids"], json!(["a", "b"]));
        assert_eq!(data["presence"]["hash"]["b"], json!({"name": "b"}));
    }

    #[test]
    fn event_frames_keep_data_as_a_string() {
        let mut p = Publication::new("1".into(), "ch".into(), "ev".into(), r#"{"n":1}"#.into());
        let frame: Value = serde_json::from_str(&event(&p, false)).unwrap();
        assert_eq!(
            frame,
            json!({"event": "ev", "channel": "ch", "data": "{\"n\":1}"})
        );
        p.user_id = Some("u".into());
        let frame: Value = serde_json::from_str(&event(&p, false)).unwrap();
        assert_eq!(frame["user_id"], "u");
    }

    #[test]
    fn the_extra_fields_follow_pushers_keys() {
        let p = Publication::new("1".into(), "ch".into(), "ev".into(), "d".into());
        p.set_position(StreamPosition::new(3, "Ep".into()));
        assert_eq!(
            event(&p, true),
            format!(
                r#"{{"event":"ev","channel":"ch","data":"d","id":"{}","position":"3.Ep"}}"#,
                p.id
            )
        );
        let position = StreamPosition::new(0, "Ep".into());
        assert_eq!(
            subscription_succeeded("ch", None, Some(&position)),
            r#"{"event":"pusher_internal:subscription_succeeded","channel":"ch","position":"0.Ep"}"#
        );
        assert_eq!(
            resume_failed("ch", Some(&position)),
            r#"{"event":"pusher:resume_failed","channel":"ch","data":"{\"position\":\"0.Ep\"}"}"#
        );
    }

    #[test]
    fn data_may_be_an_object_or_a_json_string() {
        let a: SubscribeData = parse_data(Some(json!({"channel": "x"}))).unwrap();
        let b: SubscribeData = parse_data(Some(json!("{\"channel\":\"x\"}"))).unwrap();
        assert_eq!(a.channel, b.channel);
        assert!(parse_data::<SubscribeData>(None).is_err());
        assert!(parse_data::<SubscribeData>(Some(json!(42))).is_err());
    }
}
