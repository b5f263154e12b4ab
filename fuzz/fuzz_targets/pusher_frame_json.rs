//! One WebSocket message from a Pusher client on a JSON connection (text frames, and the
//! same JSON in binary frames on `application/octet-stream` connections).
//!
//! Invariants: decoding never panics; text and binary frames of the same bytes decode
//! alike (and a MessagePack connection accepts JSON text the same way); a decoded frame
//! re-encoded as JSON or MessagePack decodes to the same frame; its data parses, its
//! signatures are refused unless genuine, and every frame quoting it is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payrelay::fuzzing::{self, WireFormat};
use payrelay_fuzz::{assert_same_frame, check_frame, check_reencoding};

fuzz_target!(|bytes: &[u8]| {
    let text = fuzzing::pusher_client_frame(WireFormat::JsonText, false, bytes);
    let binary = fuzzing::pusher_client_frame(WireFormat::JsonBinary, true, bytes);
    let on_msgpack = fuzzing::pusher_client_frame(WireFormat::MsgPack, false, bytes);
    let frame = match (text, binary, on_msgpack) {
        (Ok(text), Ok(binary), Ok(on_msgpack)) => {
            assert_same_frame(&text, &binary, "binary JSON");
            assert_same_frame(&text, &on_msgpack, "JSON text on a MessagePack connection");
            text
        }
        (Err(_), Err(_), Err(_)) => return,
        _ => panic!("the same JSON decoded on one connection type and not another"),
    };
    check_reencoding(&frame);
    check_frame(&frame);
});
