//! The edges of a WebSocket that an adapter owns itself (Pusher, plain JSON): how large a
//! message the transport reads, and how a socket is closed.
//!
//! Closing is where clients tell a clean end from a failure. RFC 6455 5.5.1: whoever
//! receives a close frame answers it, and the server then drops the TCP connection. A
//! close that is not answered, or a socket dropped without one, is reported to the client
//! as 1006 ("abnormal"), and client libraries act on the code: pusher-js decides between
//! reconnecting and giving up by it, the plain protocol documents 1009, 1012 and 1013.
//!
//! A message far over the app's limit is the one case where no handshake is possible:
//! the transport refuses it from its frame header, before buffering it, and the rest of
//! it is never read. See [`close_unread`].

use std::error::Error as _;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite;

/// After sending a close frame, how long to wait for the client's before dropping.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// RFC 6455 5.5: a control frame's payload is at most 125 bytes, two of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// How long a socket closed with its input unread stays open before it is dropped, so
/// the close frame reaches the client ahead of the reset that dropping it causes.
const UNREAD_LINGER: Duration = Duration::from_millis(500);

/// The largest message the WebSocket layer buffers for an app whose limit is
/// `max_message_size`. Up to this size a message is read whole and refused with the
/// protocol's own answer and a close handshake; anything larger is refused from its
/// frame header (see [`oversized`]), so a client cannot make the server buffer it.
pub fn transport_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(2).max(16 * 1024)
}

/// The size a client declared for a message the transport refused as too large, when
/// that is why reading from the socket failed.
pub fn oversized(error: &axum::Error) -> Option<usize> {
    use tungstenite::error::{CapacityError, Error};
    match error.source()?.downcast_ref::<Error>()? {
        Error::Capacity(CapacityError::MessageTooLong { size, .. }) => Some(*size),
        _ => None,
    }
}

/// The close frame for `code`, with the reason cut to what a close frame can carry
/// (at a character boundary).
fn close_frame(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    }))
}

/// Sends a close frame and waits (up to [`CLOSE_GRACE`]) for the client's answer, so the
/// close is delivered and the client sees this code rather than 1006.
pub async fn close(ws: &mut WebSocket, code: u16, reason: &str) {
    let sent = tokio::time::timeout(CLOSE_GRACE, ws.send(close_frame(code, reason))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Answers the client's close frame: tungstenite queued the echo when it read the close,
/// and it leaves with the next flush. Without this the client reports 1006.
pub async fn answer_close(ws: &mut WebSocket) {
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
}

/// Closes a socket whose last message was refused unread. Reading on would buffer the
/// rest of that message (its header may promise gigabytes), so the client's answer cannot
/// be awaited: the close frame is sent, given a moment to reach the client, and the
/// socket dropped. The client still sees this code.
pub async fn close_unread(ws: &mut WebSocket, code: u16, reason: &str) {
    let sent = tokio::time::timeout(CLOSE_GRACE, ws.send(close_frame(code, reason))).await;
    if matches!(sent, Ok(Ok(()))) {
        tokio::time::sleep(UNREAD_LINGER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_reads_twice_the_limit_and_never_less_than_16_kib() {
        assert_eq!(transport_limit(10 * 1024), 20 * 1024);
        assert_eq!(transport_limit(256), 16 * 1024);
        assert_eq!(transport_limit(usize::MAX), usize::MAX);
    }

    #[test]
    fn close_reasons_fit_a_close_frame() {
        let long = "é".repeat(100);
        let Message::Close(Some(frame)) = close_frame(4001, &long) else {
            panic!("a close frame");
        };
        assert!(frame.reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(frame.reason.len(), 122, "cut at a character boundary");
        let Message::Close(Some(frame)) = close_frame(1000, "bye") else {
            panic!("a close frame");
        };
        assert_eq!(frame.reason.as_str(), "bye");
    }
}
