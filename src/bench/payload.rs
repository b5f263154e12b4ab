//! The bench event's data: a send time and a sequence number, padded to the wanted size.
//!
//! The data is a plain string, `t=<unix µs>;s=<seq>;xxxx…`, not JSON: Pusher carries
//! `data` as a JSON string, and a string without quotes or backslashes arrives byte for
//! byte inside the frame, so a subscriber finds the stamp with a substring search instead
//! of parsing every frame. At hundreds of thousands of deliveries per second the
//! generator must stay cheaper than the server it measures.

use std::time::{SystemTime, UNIX_EPOCH};

/// The event name the bench publishes and counts.
pub const EVENT: &str = "bench";

/// Smallest data size that still holds a full stamp.
pub const MIN_SIZE: usize = 48;

/// Microseconds since the Unix epoch: the clock publisher and subscribers share.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Data of `size` bytes (at least [`MIN_SIZE`]) stamped with `sent_us` and `seq`.
pub fn stamp(sent_us: u64, seq: u64, size: usize) -> String {
    let mut data = format!("t={sent_us};s={seq};");
    let size = size.max(MIN_SIZE);
    if data.len() < size {
        data.extend(std::iter::repeat_n('x', size - data.len()));
    }
    data
}

/// Finds the stamp in a received frame, as text: a Pusher event frame
/// (`{"event":"bench","channel":…,"data":"t=…"}`) or a Socket.IO one
/// (`42["bench","t=…"]`). Nothing before the data can hold `"t=` (event and channel
/// names have no quotes).
pub fn read_stamp(frame: &str) -> Option<(u64, u64)> {
    let start = frame.find("\"t=")? + "\"t=".len();
    let rest = &frame[start..];
    let (sent, rest) = rest.split_once(";s=")?;
    let (seq, _) = rest.split_once(';')?;
    Some((sent.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_have_the_requested_size_and_read_back() {
        let data = stamp(1_700_000_000_123_456, 42, 100);
        assert_eq!(data.len(), 100);
        let frame = serde_json::json!({"event": EVENT, "channel": "c", "data": data}).to_string();
        assert_eq!(read_stamp(&frame), Some((1_700_000_000_123_456, 42)));
    }

    #[test]
    fn small_sizes_still_carry_the_stamp() {
        let data = stamp(u64::MAX, u64::MAX, 1);
        assert!(data.len() <= MIN_SIZE, "{data}");
        let frame = format!(r#"{{"event":"bench","channel":"c","data":"{data}"}}"#);
        assert!(read_stamp(&format!(r#"42["bench","{data}"]"#)).is_some());
        assert_eq!(read_stamp(&frame), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn other_frames_have_no_stamp() {
        assert_eq!(read_stamp(r#"{"event":"pusher:ping","data":{}}"#), None);
        assert_eq!(read_stamp(r#"{"event":"bench","data":"t=x;s=1;"}"#), None);
    }
}
