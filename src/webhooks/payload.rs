//! The bodies callbacks carry. Each is built once, when the event is recorded, and every
//! attempt to every endpoint sends those exact bytes (the signature covers them).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;

/// A Standard Webhooks message for one publication.
#[derive(Serialize)]
struct StandardBody<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    /// The event's data as JSON when it is JSON, else as a string.
    data: Data<'a>,
    merchant_id: Option<&'a str>,
    channel: &'a str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Json(&'a RawValue),
    Text(&'a str),
}

/// `{"type", "timestamp", "data", "merchant_id", "channel"}`.
pub fn standard(
    event_type: &str,
    published_at: SystemTime,
    data: &str,
    merchant_id: Option<&str>,
    channel: &str,
) -> String {
    let raw: Option<&RawValue> = serde_json::from_str(data).ok();
    let body = StandardBody {
        event_type,
        timestamp: rfc3339(published_at),
        data: match raw {
            Some(json) => Data::Json(json),
            None => Data::Text(data),
        },
        merchant_id,
        channel,
    };
    // Serialising borrowed strings and already-valid JSON cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

/// A Pusher app webhook: `{"time_ms": …, "events": [event]}`.
pub fn pusher(time_ms: i64, event: serde_json::Value) -> String {
    serde_json::json!({ "time_ms": time_ms, "events": [event] }).to_string()
}

/// RFC 3339 in UTC with milliseconds (`2026-11-25T16:47:30.123Z`).
pub fn rfc3339(at: SystemTime) -> String {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let millis_only = nanos - nanos % 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(millis_only)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_data_is_embedded_and_text_is_a_string() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_089_250_123);
        let body = standard(
            "trade",
            at,
            r#"{"trade":{"id":"t1"}}"#,
            Some("m1"),
            "private-merchant.m1",
        );
        assert_eq!(
            body,
            r#"{"type":"trade","timestamp":"2025-11-25T16:47:30.123Z","data":{"trade":{"id":"t1"}},"merchant_id":"m1","channel":"private-merchant.m1"}"#
        );
        let body: serde_json::Value =
            serde_json::from_str(&standard("note", at, "not json {", None, "c")).unwrap();
        assert_eq!(body["data"], "not json {");
        assert_eq!(body["merchant_id"], serde_json::Value::Null);
    }

    #[test]
    fn pusher_bodies() {
        let body = pusher(
            5,
            serde_json::json!({"name": "channel_occupied", "channel": "c"}),
        );
        assert_eq!(
            body,
            r#"{"events":[{"channel":"c","name":"channel_occupied"}],"time_ms":5}"#
        );
    }
}
