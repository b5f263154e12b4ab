//! An endpoint: where one owner's callbacks go, which events it wants, and how they are
//! signed. Owners are a merchant (its own events), the app itself (app-level events), or
//! the app's configuration (Pusher app webhooks).

use std::sync::Arc;

use serde::Serialize;

/// Prefix of endpoint ids.
pub const ENDPOINT_ID_PREFIX: &str = "ep_";
/// Longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 512;
/// Most filters one endpoint may list, and the longest one.
pub const MAX_FILTERS: usize = 100;
pub const MAX_FILTER_LEN: usize = 200;

/// How an endpoint's messages are framed and signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// Pusher app webhooks: `{time_ms, events}`, `X-Pusher-Key`, `X-Pusher-Signature`.
    Pusher,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Standard => "standard",
            Kind::Pusher => "pusher",
        }
    }

    pub fn parse(text: &str) -> Kind {
        if text == "pusher" {
            Kind::Pusher
        } else {
            Kind::Standard
        }
    }
}

/// Which events an endpoint wants: every one, or names matched exactly or by a
/// `prefix.*` wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventFilter(Option<Vec<String>>);

impl EventFilter {
    pub fn all() -> Self {
        EventFilter(None)
    }

    /// Checks a filter list as a client sends it.
    pub fn new(names: Vec<String>) -> Result<Self, String> {
        if names.is_empty() {
            return Err("`events` must name at least one event (omit it for every event)".into());
        }
        if names.len() > MAX_FILTERS {
            return Err(format!("`events` may list at most {MAX_FILTERS} names"));
        }
        for name in &names {
            let stem = name.strip_suffix('*').unwrap_or(name);
            if name.is_empty()
                || name.len() > MAX_FILTER_LEN
                || stem.contains('*')
                || name.chars().any(char::is_control)
            {
                return Err(format!(
                    "`{}` is not an event name or a `prefix*` wildcard of at most {MAX_FILTER_LEN} characters",
                    name.chars().take(MAX_FILTER_LEN).collect::<String>()
                ));
            }
        }
        Ok(EventFilter(Some(names)))
    }

    pub fn matches(&self, event: &str) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.iter().any(|name| match name.strip_suffix('*') {
                Some(prefix) => event.starts_with(prefix),
                None => name == event,
            }),
        }
    }

    pub fn names(&self) -> Option<&[String]> {
        self.0.as_deref()
    }

    /// As stored: a JSON array, or NULL for every event.
    pub fn to_column(&self) -> Option<String> {
        self.0
            .as_ref()
            .map(|names| serde_json::to_string(names).unwrap_or_else(|_| "[]".into()))
    }

    pub fn from_column(column: Option<String>) -> Self {
        EventFilter(column.and_then(|text| serde_json::from_str(&text).ok()))
    }
}

/// An endpoint as the dispatcher and the journal see it (kept in memory).
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Arc<str>,
    pub app_id: Arc<str>,
    /// `None`: the app's own endpoint.
    pub merchant_id: Option<Arc<str>>,
    pub kind: Kind,
    pub url: Arc<str>,
    pub filter: EventFilter,
    pub enabled: bool,
    /// The signing secret (`whsec_…`); empty for Pusher endpoints (the app secret signs).
    pub secret: Arc<str>,
    /// The secret rotated out, still signing until `previous_until` (ms).
    pub previous_secret: Option<Arc<str>>,
    pub previous_until: i64,
}

impl Endpoint {
    /// The secrets that sign a message sent at `now_ms`: the current one, and the previous
    /// one during its overlap.
    pub fn signing_secrets(&self, now_ms: i64) -> Vec<&str> {
        let mut secrets = vec![&*self.secret];
        if let Some(previous) = &self.previous_secret
            && now_ms < self.previous_until
        {
            secrets.push(previous);
        }
        secrets
    }
}

/// A fresh endpoint id.
pub fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("{ENDPOINT_ID_PREFIX}{}", hex::encode(bytes))
}

/// Whether `id` could be an endpoint id (checked before it reaches a query).
pub fn plausible_id(id: &str) -> bool {
    id.starts_with(ENDPOINT_ID_PREFIX)
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks what can be checked of a URL without resolving it: `http`/`https`, a host, no
/// credentials, bounded length. The address check happens on every attempt.
pub fn check_url_syntax(raw: &str) -> Result<reqwest::Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!("the URL is longer than {MAX_URL_LEN} characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    // Parsing may lengthen it (percent-encoding, punycode): the URL stored, shown and
    // sent back in a PATCH must pass this check too (found by fuzz/webhook_bodies).
    if url.as_str().len() > MAX_URL_LEN {
        return Err(format!(
            "the URL is longer than {MAX_URL_LEN} characters once encoded"
        ));
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs are accepted".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not accepted; verify the signature instead".into());
    }
    if url.fragment().is_some() {
        return Err("the URL must not have a #fragment".into());
    }
    Ok(url)
}

/// The host of `url` as an IP address, when it is written as one.
pub fn literal_ip(url: &reqwest::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/webhook_bodies: a URL within the limit as sent could be stored
    /// percent-encoded (or in punycode) over it, and was then refused when sent back
    /// unchanged in a PATCH.
    #[test]
    fn the_limit_holds_for_the_url_as_stored() {
        let raw = format!("https://example.com/{}", "é".repeat(1000));
        assert!(raw.len() <= MAX_URL_LEN);
        let err = check_url_syntax(&raw).unwrap_err();
        assert!(err.contains("once encoded"), "{err}");
        let fits = format!("https://example.com/{}", "é".repeat(300));
        let stored = check_url_syntax(&fits).unwrap().to_string();
        assert!(stored.len() <= MAX_URL_LEN);
        assert_eq!(check_url_syntax(&stored).unwrap().as_str(), stored);
    }

    #[test]
    fn filters_match_names_and_prefixes() {
        let filter = EventFilter::new(vec!["trade".into(), "payment.*".into()]).unwrap();
        assert!(filter.matches("trade"));
        assert!(filter.matches("payment.updated"));
        assert!(!filter.matches("trades"));
        assert!(!filter.matches("deposit"));
        assert!(EventFilter::all().matches("anything"));
        let stored = EventFilter::from_column(filter.to_column());
        assert_eq!(stored, filter);
        assert_eq!(EventFilter::from_column(None), EventFilter::all());
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(EventFilter::new(vec![]).is_err());
        assert!(EventFilter::new(vec!["".into()]).is_err());
        assert!(EventFilter::new(vec!["a*b".into()]).is_err());
        assert!(EventFilter::new(vec!["x".repeat(201)]).is_err());
        assert!(EventFilter::new(vec!["a".into(); 101]).is_err());
    }

    #[test]
    fn urls_must_be_plain_http() {
        assert!(check_url_syntax("https://example.com/hooks?x=1").is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pass@example.com/",
            "http://",
            "not a url",
            "https://example.com/#frag",
        ] {
            assert!(check_url_syntax(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url_syntax(&long).is_err());
    }

    #[test]
    fn ids() {
        let id = new_id();
        assert!(plausible_id(&id), "{id}");
        assert!(!plausible_id("ep_'; DROP TABLE"));
        assert!(!plausible_id("key_123"));
    }
}
