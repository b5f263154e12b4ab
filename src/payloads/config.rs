//! `[payloads]`: payment requests (seed 001) and their sockets. Every default is what
//! production runs with; tests shorten the timers.

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[payloads]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadsConfig {
    /// The node's address as clients reach it (`https://rt.example.com`, or with a path
    /// prefix behind a proxy: `https://example.com/relay`). `refs.websocket_status` and
    /// the other URLs of a created payload are built from it (`https` → `wss://`).
    /// Unset: the `Host` of the create request, with `https`/`wss` when the node serves
    /// TLS itself.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Where the end user opens a payload (`next.always`); `{public_url}` and `{uuid}`
    /// are replaced. payrelay serves no sign page: point it at the signing side's.
    #[serde(default = "defaults::next_url")]
    pub next_url: String,
    /// The QR image of a payload (`refs.qr_png`), served by the signing side, like
    /// `next_url`.
    #[serde(default = "defaults::qr_png_url")]
    pub qr_png_url: String,
    /// Expiry of a payload whose `options.expire` is absent.
    #[serde(default = "defaults::default_expire_secs")]
    pub default_expire_secs: u64,
    /// The longest `options.expire` accepted (a longer one is a 400).
    #[serde(default = "defaults::max_expire_secs")]
    pub max_expire_secs: u64,
    /// Largest create request body; a larger one is a 413.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest `txjson`, as JSON.
    #[serde(default = "defaults::max_txjson_bytes")]
    pub max_txjson_bytes: usize,
    /// Largest `custom_meta.blob`, as JSON.
    #[serde(default = "defaults::max_blob_bytes")]
    pub max_blob_bytes: usize,
    /// Seconds between two `{"expires_in_seconds":N}` on a payload socket (seed 001: 15).
    #[serde(default = "defaults::countdown_secs")]
    pub countdown_secs: u64,
    /// How often the database is read for payloads coming due (created on other nodes,
    /// or before a restart) and for changes whose messages were not published (a crash
    /// between the two). A payload created on this node expires on time regardless.
    #[serde(default = "defaults::sweep_interval_ms")]
    pub sweep_interval_ms: u64,
    /// Finished payloads (resolved, cancelled, expired), and unfinished ones older than
    /// this, are deleted after it.
    #[serde(default = "defaults::retention_days")]
    pub retention_days: u64,
}

impl Default for PayloadsConfig {
    fn default() -> Self {
        toml::from_str("").expect("the default payloads config is valid")
    }
}

mod defaults {
    pub fn next_url() -> String {
        "{public_url}/sign/{uuid}".into()
    }
    pub fn qr_png_url() -> String {
        "{public_url}/sign/{uuid}_q.png".into()
    }
    pub fn default_expire_secs() -> u64 {
        86_400
    }
    pub fn max_expire_secs() -> u64 {
        7 * 86_400
    }
    pub fn max_body_bytes() -> usize {
        32 * 1024
    }
    pub fn max_txjson_bytes() -> usize {
        8 * 1024
    }
    pub fn max_blob_bytes() -> usize {
        2048
    }
    pub fn countdown_secs() -> u64 {
        15
    }
    pub fn sweep_interval_ms() -> u64 {
        1000
    }
    pub fn retention_days() -> u64 {
        30
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("payloads.{key}"),
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

impl PayloadsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).map_err(|e| invalid("public_url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.host_str().is_none()
                || parsed.query().is_some()
                || parsed.fragment().is_some()
            {
                return Err(invalid(
                    "public_url",
                    "must be http:// or https:// with a host, and no query or fragment",
                ));
            }
        }
        for (key, template) in [
            ("next_url", &self.next_url),
            ("qr_png_url", &self.qr_png_url),
        ] {
            if !template.contains("{uuid}") {
                return Err(invalid(key, "must contain {uuid}"));
            }
        }
        within("max_expire_secs", self.max_expire_secs, 1..=30 * 86_400)?;
        within(
            "default_expire_secs",
            self.default_expire_secs,
            1..=self.max_expire_secs,
        )?;
        within("max_body_bytes", self.max_body_bytes as u64, 1024..=1 << 20)?;
        within(
            "max_txjson_bytes",
            self.max_txjson_bytes as u64,
            64..=self.max_body_bytes as u64,
        )?;
        within(
            "max_blob_bytes",
            self.max_blob_bytes as u64,
            2..=self.max_body_bytes as u64,
        )?;
        within("countdown_secs", self.countdown_secs, 1..=3600)?;
        within("sweep_interval_ms", self.sweep_interval_ms, 10..=60_000)?;
        within("retention_days", self.retention_days, 1..=3650)?;
        if self.retention_days * 86_400 <= self.max_expire_secs {
            return Err(invalid(
                "retention_days",
                "must be longer than max_expire_secs, or payloads would be deleted before they expire",
            ));
        }
        Ok(())
    }

    pub fn countdown(&self) -> Duration {
        Duration::from_secs(self.countdown_secs)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = PayloadsConfig::default();
        config.validate().unwrap();
        assert_eq!(config.countdown_secs, 15);
        assert_eq!(config.public_url, None);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("public_url = \"ftp://x\"", "payloads.public_url"),
            ("public_url = \"https://x/?a=1\"", "payloads.public_url"),
            ("next_url = \"https://wallet/sign\"", "payloads.next_url"),
            ("max_expire_secs = 0", "payloads.max_expire_secs"),
            (
                "default_expire_secs = 900000",
                "payloads.default_expire_secs",
            ),
            (
                "retention_days = 1\nmax_expire_secs = 86400",
                "payloads.retention_days",
            ),
            ("countdown_secs = 0", "payloads.countdown_secs"),
        ] {
            let config: PayloadsConfig = toml::from_str(toml).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml}: {err}");
        }
        PayloadsConfig {
            public_url: Some("https://example.com/relay".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
