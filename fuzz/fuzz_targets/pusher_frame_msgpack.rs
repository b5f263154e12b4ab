//! One binary WebSocket message from a Pusher client on an `application/msgpack`
//! connection, and the server's own MessagePack encoding of control frames.
//!
//! Invariants: decoding never panics; a decoded frame re-encoded as MessagePack or JSON
//! decodes to the same frame, and is then checked like a JSON frame (data, signatures,
//! frames quoting it). Any MessagePack map the server could be asked to write as a
//! control frame (a JSON object) unpacks to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, WireFormat};
use payrelay_fuzz::{check_frame, check_reencoding};
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(frame) = fuzzing::pusher_client_frame(WireFormat::MsgPack, true, bytes) {
        check_reencoding(&frame);
        check_frame(&frame);
    }
    // The server's direction: a JSON control frame becomes a MessagePack map.
    let Ok(value @ Value::Object(_)) = rmp_serde::from_slice::<Value>(bytes) else {
        return;
    };
    let json = value.to_string();
    // Control frames are the server's own shallow objects; JSON nested past serde_json's
    // recursion limit cannot be one.
    if serde_json::from_str::<Value>(&json).is_err() {
        return;
    }
    let (binary, packed) = fuzzing::pusher_control_message(WireFormat::MsgPack, &json);
    assert!(binary, "MessagePack frames are binary");
    let back: Value = rmp_serde::from_slice(&packed).expect("our MessagePack unpacks");
    assert_eq!(
        back, value,
        "a control frame changed on its way to MessagePack"
    );
});
