//! Which WebSocket frames a Pusher connection speaks, chosen by the handshake's
//! `Content-Type` (seed 000: "use the Content-Type header to switch between text and
//! binary message data frame").
//!
//! - `application/json`, `text/plain`, or no (or an empty) header: Pusher's JSON in text
//!   frames, what pusher-js expects.
//! - `application/octet-stream`: the very same JSON bytes, in binary frames.
//! - `application/msgpack` (or its older names `application/x-msgpack`,
//!   `application/vnd.msgpack`): each frame's JSON object re-encoded as a MessagePack map
//!   with the same keys and values (so `data` of an event is still a string holding JSON),
//!   in binary frames.
//!
//! Media types are matched without case and without parameters (`; charset=utf-8`); the
//! README's table lists exactly these, and a unit test below holds the two together.
//!
//! The message layer (`frames.rs`) stays JSON-only; this is the one place that turns a
//! frame into WebSocket bytes and client bytes back into a frame. Publications are
//! converted once per format and cached on the publication like the text frame.

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::Value;

use super::frames::{self, ClientFrame};
use crate::core::Publication;
use crate::protocols::{PUSHER_BINARY_SLOT, PUSHER_JSON_SLOT, PUSHER_MSGPACK_SLOT};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    JsonText,
    JsonBinary,
    MsgPack,
}

/// The media types a client may ask for, for the refusal message.
pub const SUPPORTED: &str = "application/json, application/octet-stream, application/msgpack";

impl WireFormat {
    /// Reads the handshake's `Content-Type`; parameters (`; charset=utf-8`) are ignored.
    /// An unknown type is an error rather than a silent fallback to JSON, so a client that
    /// expects binary frames finds out at once.
    pub fn from_headers(headers: &HeaderMap) -> Result<WireFormat, String> {
        let Some(value) = headers.get(CONTENT_TYPE) else {
            return Ok(WireFormat::JsonText);
        };
        let Ok(value) = value.to_str() else {
            return Err(format!(
                "Unsupported Content-Type (not ASCII); use one of {SUPPORTED}"
            ));
        };
        let media_type = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            "" | "application/json" | "text/plain" => Ok(WireFormat::JsonText),
            "application/octet-stream" => Ok(WireFormat::JsonBinary),
            "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(WireFormat::MsgPack)
            }
            other => Err(format!(
                "Unsupported Content-Type `{other}`; use one of {SUPPORTED}"
            )),
        }
    }

    /// A control frame (JSON text from `frames.rs`) as this format's message.
    pub fn message(self, json: Utf8Bytes) -> Message {
        match self {
            WireFormat::JsonText => Message::Text(json),
            WireFormat::JsonBinary => Message::Binary(Bytes::from(json)),
            WireFormat::MsgPack => Message::Binary(json_to_msgpack(json.as_str())),
        }
    }

    /// A publication's event frame in this format, encoded once per publication.
    /// `fields`: the app's `pusher_fields` (one publication belongs to one app, so every
    /// connection sharing its cached frame asks the same).
    pub fn publication(self, publication: &Publication, fields: bool) -> Message {
        match self {
            WireFormat::JsonText => Message::Text(json_frame(publication, fields)),
            WireFormat::JsonBinary => Message::Binary(
                publication.encoded(PUSHER_BINARY_SLOT, |p| Bytes::from(json_frame(p, fields))),
            ),
            WireFormat::MsgPack => Message::Binary(publication.encoded(PUSHER_MSGPACK_SLOT, |p| {
                json_to_msgpack(&json_frame(p, fields))
            })),
        }
    }

    /// Parses a client frame. Text frames are always JSON; binary frames are JSON, or
    /// MessagePack on a MessagePack connection.
    pub fn decode(self, message_is_binary: bool, bytes: &[u8]) -> Result<ClientFrame, String> {
        if message_is_binary && self == WireFormat::MsgPack {
            // The same nesting as JSON may have: a frame means the same in both formats,
            // and one relayed from a MessagePack client parses for JSON subscribers.
            let mut decoder = rmp_serde::Deserializer::from_read_ref(bytes);
            decoder.set_max_depth(MAX_NESTING);
            ClientFrame::deserialize(&mut decoder).map_err(|e| {
                format!("Malformed message: expected a MessagePack map with an `event` ({e})")
            })
        } else {
            serde_json::from_slice(bytes).map_err(|e| {
                format!("Malformed message: expected a JSON object with an `event` ({e})")
            })
        }
    }
}

/// rmp_serde's nesting limit for client frames: with 128 it refuses exactly the frames
/// serde_json refuses (arrays and maps 128 deep, the frame itself included; the two
/// count their limits one apart), so MessagePack frames nest no deeper than JSON ones.
const MAX_NESTING: usize = 128;

/// The JSON text frame of a publication, shared by every text subscriber.
pub fn json_frame(publication: &Publication, fields: bool) -> Utf8Bytes {
    publication.encoded(PUSHER_JSON_SLOT, |p| {
        Utf8Bytes::from(frames::event(p, fields))
    })
}

fn json_to_msgpack(json: &str) -> Bytes {
    // Our frames are always valid JSON objects, so neither step fails in practice; an
    // empty map is still a well-formed MessagePack value if one ever did.
    let value: Value = serde_json::from_str(json).unwrap_or(Value::Object(Default::default()));
    Bytes::from(rmp_serde::to_vec_named(&value).unwrap_or_else(|_| vec![0x80]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn format_for(content_type: Option<&str>) -> Result<WireFormat, String> {
        let mut headers = HeaderMap::new();
        if let Some(value) = content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        }
        WireFormat::from_headers(&headers)
    }

    #[test]
    fn content_type_chooses_the_format() {
        assert_eq!(format_for(None), Ok(WireFormat::JsonText));
        assert_eq!(
            format_for(Some("application/json; charset=utf-8")),
            Ok(WireFormat::JsonText)
        );
        assert_eq!(
            format_for(Some("Application/Octet-Stream")),
            Ok(WireFormat::JsonBinary)
        );
        assert_eq!(
            format_for(Some("application/msgpack")),
            Ok(WireFormat::MsgPack)
        );
        assert!(format_for(Some("application/xml")).is_err());
    }

    /// Exactly the README's table ("Text or binary frames").
    #[test]
    fn the_accepted_media_types_are_the_documented_ones() {
        for (content_type, format) in [
            (None, WireFormat::JsonText),
            (Some(""), WireFormat::JsonText),
            (Some("application/json"), WireFormat::JsonText),
            (Some("text/plain"), WireFormat::JsonText),
            (Some("application/octet-stream"), WireFormat::JsonBinary),
            (Some("application/msgpack"), WireFormat::MsgPack),
            (Some("application/x-msgpack"), WireFormat::MsgPack),
            (Some("application/vnd.msgpack"), WireFormat::MsgPack),
            (Some("TEXT/PLAIN; charset=utf-8"), WireFormat::JsonText),
        ] {
            assert_eq!(format_for(content_type), Ok(format), "{content_type:?}");
        }
        for refused in [
            "text/html",
            "application/cbor",
            "application/json-seq",
            "*/*",
        ] {
            assert!(format_for(Some(refused)).is_err(), "{refused}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_bytes(b"application/json\xff").unwrap(),
        );
        assert!(
            WireFormat::from_headers(&headers).is_err(),
            "a header that is not ASCII is not taken as JSON"
        );
    }

    #[test]
    fn msgpack_frames_carry_the_json_frame_keys_and_values() {
        let Message::Binary(bytes) =
            WireFormat::MsgPack.message(r#"{"event":"e","channel":"c","data":"{\"a\":1}"}"#.into())
        else {
            panic!("msgpack frames are binary");
        };
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"event": "e", "channel": "c", "data": "{\"a\":1}"})
        );
    }

    /// Found by fuzz/pusher_frame_msgpack: serde_json's default float parsing may be one
    /// ULP off, so a number changed on its way from JSON to MessagePack (and any JSON a
    /// client or the HTTP API sent as an object was re-serialised with different
    /// digits). Floats now parse exactly (`float_roundtrip`).
    #[test]
    fn floats_survive_json_to_msgpack_exactly() {
        let Message::Binary(bytes) =
            WireFormat::MsgPack.message(r#"{"event":"e","data":-1.3629632216575999e57}"#.into())
        else {
            panic!("msgpack frames are binary");
        };
        let back: Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back["data"].as_f64(), Some(-1.3629632216575999e57));
    }

    /// Found by fuzz/pusher_frame_msgpack: a MessagePack float JSON cannot hold (NaN,
    /// infinity) as a frame's `data` became `Some(null)`, while JSON `null` is `None`, so
    /// re-encoding the frame changed it. Both are now "no data".
    #[test]
    fn data_that_json_cannot_hold_is_no_data_like_null() {
        let mut nan = vec![0x82, 0xa5];
        nan.extend_from_slice(b"event");
        nan.push(0xab);
        nan.extend_from_slice(b"pusher:ping");
        nan.push(0xa4);
        nan.extend_from_slice(b"data");
        let mut infinity = nan.clone();
        nan.extend_from_slice(&[0xca, 0x7f, 0xc0, 0x00, 0x00]);
        infinity.extend_from_slice(&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]);
        for bytes in [nan, infinity] {
            let frame = WireFormat::MsgPack.decode(true, &bytes).unwrap();
            assert_eq!(frame.event, "pusher:ping");
            assert_eq!(frame.data, None);
        }
        let null = WireFormat::JsonText
            .decode(false, br#"{"event":"pusher:ping","data":null}"#)
            .unwrap();
        assert_eq!(null.data, None);
        let object = WireFormat::JsonText
            .decode(false, br#"{"event":"e","data":{"a":null}}"#)
            .unwrap();
        assert_eq!(object.data, Some(serde_json::json!({"a": null})));
    }

    /// Found by fuzz/pusher_frame_msgpack: MessagePack frames could nest 1 024 levels
    /// deep, JSON ones 127, so a frame accepted from a MessagePack client was one that no
    /// JSON client could send (and serde_json could not read back). Both stop at 127.
    #[test]
    fn msgpack_frames_nest_as_deep_as_json_ones() {
        let nested = |levels: usize| {
            let mut data = serde_json::json!(1);
            for _ in 0..levels {
                data = serde_json::json!([data]);
            }
            serde_json::json!({"event": "client-x", "data": data})
        };
        for (levels, accepted) in [(126, true), (127, false), (500, false)] {
            let frame = nested(levels);
            let json = serde_json::to_vec(&frame).unwrap();
            let packed = rmp_serde::to_vec_named(&frame).unwrap();
            assert_eq!(
                WireFormat::JsonText.decode(false, &json).is_ok(),
                accepted,
                "JSON, {levels} levels in data"
            );
            assert_eq!(
                WireFormat::MsgPack.decode(true, &packed).is_ok(),
                accepted,
                "MessagePack, {levels} levels in data"
            );
        }
    }

    #[test]
    fn msgpack_client_frames_are_decoded() {
        let frame = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": "x"}});
        let bytes = rmp_serde::to_vec_named(&frame).unwrap();
        let decoded = WireFormat::MsgPack.decode(true, &bytes).unwrap();
        assert_eq!(decoded.event, "pusher:subscribe");
        // A MessagePack connection still accepts JSON text frames.
        let text = WireFormat::MsgPack
            .decode(false, br#"{"event":"pusher:ping"}"#)
            .unwrap();
        assert_eq!(text.event, "pusher:ping");
        assert!(WireFormat::JsonBinary.decode(true, &bytes).is_err());
    }
}
