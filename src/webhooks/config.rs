//! `[webhooks]` (node-wide delivery settings) and `[[apps.webhooks]]` (an app's Pusher-style
//! webhooks). Every default is what production should run with; tests shorten the
//! schedule and allow loopback targets.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[webhooks]`: how callbacks are stored, sent and retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Whether endpoints may resolve to loopback, private, link-local, multicast or
    /// unspecified addresses. Tests set it; production must not (a merchant could make
    /// the node call its own network).
    #[serde(default)]
    pub allow_private_targets: bool,
    /// Seconds to wait before each retry; the first attempt is immediate. After the last
    /// one fails the message is `failed` (listable and retryable).
    #[serde(default = "defaults::retry_schedule")]
    pub retry_schedule_secs: Vec<u64>,
    /// Each retry delay is moved by up to this fraction either way, so endpoints that
    /// failed together do not get their retries together.
    #[serde(default = "defaults::jitter")]
    pub retry_jitter: f64,
    /// One attempt's whole budget: connect, send, status and the first KiB of the body.
    #[serde(default = "defaults::timeout")]
    pub timeout_secs: u64,
    /// The longest `Retry-After` (on 429 and 503) that is honoured; a longer one waits
    /// this long.
    #[serde(default = "defaults::max_retry_after")]
    pub max_retry_after_secs: u64,
    /// Delivered and failed messages are kept this long for the log and replay, then
    /// pruned with their attempts.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u64,
    /// An endpoint failing this long without a single success is disabled (logged and
    /// counted); its pending messages become `failed`.
    #[serde(default = "defaults::disable_after")]
    pub disable_after_failing_secs: u64,
    /// How long a rotated-out signing secret keeps signing beside the new one.
    #[serde(default = "defaults::rotation_overlap")]
    pub secret_rotation_overlap_secs: u64,
    /// Attempts in flight at once on this node, all endpoints together.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint (per node): a slow endpoint holds at
    /// most this many of the node's slots.
    #[serde(default = "defaults::max_in_flight_per_endpoint")]
    pub max_in_flight_per_endpoint: usize,
    /// How long a node's claim on a message lasts without being renewed. A live node
    /// renews its claims every third of it (however long its attempts take), so this is
    /// how long the messages a killed node held wait before another node sends them. An
    /// attempt whose node could not renew in time is abandoned before its claim ends, so
    /// two nodes never send the same message at once.
    #[serde(default = "defaults::lease_secs")]
    pub lease_secs: u64,
    /// How often the outbox is read for due retries and for work other nodes recorded
    /// (new messages recorded by this node start at once).
    #[serde(default = "defaults::poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Outbox transactions one node keeps in flight at once on PostgreSQL: while one
    /// waits for its commit to be flushed, the next batch is written. SQLite has a
    /// single writer, so there it is always 1.
    #[serde(default = "defaults::outbox_commits_in_flight")]
    pub outbox_commits_in_flight: usize,
    /// Endpoints one merchant (or the app itself) may have.
    #[serde(default = "defaults::max_endpoints")]
    pub max_endpoints_per_owner: usize,
    /// How long a Pusher `channel_vacated` / `member_removed` waits: when the channel (or
    /// member) is back within it, neither it nor the matching `occupied` / `added` is sent.
    #[serde(default = "defaults::pusher_delay_ms")]
    pub pusher_leave_delay_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        toml::from_str("").expect("the default webhooks config is valid")
    }
}

/// One `[[apps.webhooks]]` entry: Pusher's app webhooks, signed with the app secret.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PusherWebhookConfig {
    pub url: String,
    /// Which events go to `url`: `channel_occupied`, `channel_vacated`, `member_added`,
    /// `member_removed`, `client_event`.
    pub event_types: Vec<String>,
}

/// The event types a Pusher app webhook can ask for.
pub const PUSHER_EVENT_TYPES: [&str; 5] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
];

mod defaults {
    pub fn retry_schedule() -> Vec<u64> {
        vec![5, 300, 1800, 7200, 18000, 36000, 36000]
    }
    pub fn jitter() -> f64 {
        0.2
    }
    pub fn timeout() -> u64 {
        15
    }
    pub fn max_retry_after() -> u64 {
        3600
    }
    pub fn retention_days() -> u64 {
        7
    }
    pub fn disable_after() -> u64 {
        5 * 86400
    }
    pub fn rotation_overlap() -> u64 {
        86400
    }
    pub fn max_in_flight() -> usize {
        256
    }
    pub fn max_in_flight_per_endpoint() -> usize {
        16
    }
    pub fn outbox_commits_in_flight() -> usize {
        1
    }
    pub fn lease_secs() -> u64 {
        10
    }
    pub fn poll_interval_ms() -> u64 {
        1000
    }
    pub fn max_endpoints() -> usize {
        20
    }
    pub fn pusher_delay_ms() -> u64 {
        3000
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("webhooks.{key}"),
        message: message.into(),
    }
}

fn within(key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("must be between {} and {}", range.start(), range.end()),
        ))
    }
}

impl WebhooksConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_schedule_secs.len() > 50 {
            return Err(invalid("retry_schedule_secs", "at most 50 retries"));
        }
        if self.retry_schedule_secs.iter().any(|&s| s > 7 * 86400) {
            return Err(invalid(
                "retry_schedule_secs",
                "each delay must be at most 604800 (7 days)",
            ));
        }
        if !(0.0..=0.5).contains(&self.retry_jitter) {
            return Err(invalid("retry_jitter", "must be between 0 and 0.5"));
        }
        within("timeout_secs", self.timeout_secs, 1..=300)?;
        within("max_retry_after_secs", self.max_retry_after_secs, 0..=86400)?;
        within("retention_days", self.retention_days, 1..=3650)?;
        within(
            "disable_after_failing_secs",
            self.disable_after_failing_secs,
            1..=365 * 86400,
        )?;
        within(
            "secret_rotation_overlap_secs",
            self.secret_rotation_overlap_secs,
            0..=30 * 86400,
        )?;
        within("max_in_flight", self.max_in_flight as u64, 1..=100_000)?;
        within(
            "max_in_flight_per_endpoint",
            self.max_in_flight_per_endpoint as u64,
            1..=self.max_in_flight as u64,
        )?;
        within("poll_interval_ms", self.poll_interval_ms, 10..=60_000)?;
        within(
            "outbox_commits_in_flight",
            self.outbox_commits_in_flight as u64,
            1..=16,
        )?;
        within("lease_secs", self.lease_secs, 3..=3600)?;
        within(
            "max_endpoints_per_owner",
            self.max_endpoints_per_owner as u64,
            1..=1000,
        )?;
        within(
            "pusher_leave_delay_ms",
            self.pusher_leave_delay_ms,
            0..=60_000,
        )?;
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// How long a claim on a message lasts unless renewed (`lease_secs`).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// How often a node renews its claims: a third of the lease, so one missed renewal
    /// still leaves a third of it.
    pub fn lease_renewal(&self) -> Duration {
        self.lease() / 3
    }
}

impl PusherWebhookConfig {
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let bad = |field: &str, message: String| ConfigError::Invalid {
            key: format!("{at}.{field}"),
            message,
        };
        super::endpoint::check_url_syntax(&self.url).map_err(|e| bad("url", e))?;
        if self.event_types.is_empty() {
            return Err(bad("event_types", "name at least one event type".into()));
        }
        if let Some(unknown) = self
            .event_types
            .iter()
            .find(|t| !PUSHER_EVENT_TYPES.contains(&t.as_str()))
        {
            return Err(bad(
                "event_types",
                format!(
                    "`{unknown}` is not one of {}",
                    PUSHER_EVENT_TYPES.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_production_ones() {
        let config = WebhooksConfig::default();
        assert!(!config.allow_private_targets);
        assert_eq!(
            config.retry_schedule_secs,
            [5, 300, 1800, 7200, 18000, 36000, 36000]
        );
        assert_eq!(config.timeout_secs, 15);
        assert_eq!(config.retention_days, 7);
        assert_eq!(config.lease_secs, 10);
        assert!(config.lease_renewal() < config.lease());
        config.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let config: WebhooksConfig = toml::from_str("timeout_secs = 0").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("webhooks.timeout_secs"), "{err}");
        let pusher = PusherWebhookConfig {
            url: "https://example.com/hook".into(),
            event_types: vec!["channel_exploded".into()],
        };
        let err = pusher
            .validate("apps[0].webhooks[0]")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("apps[0].webhooks[0].event_types"), "{err}");
    }
}
