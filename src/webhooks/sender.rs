//! One attempt: sign, POST, read the status and the first KiB of the answer, and decide
//! what comes next. Only 2xx is success; redirects are not followed; 410 Gone disables
//! the endpoint; 429 and 503 may say when to come back (`Retry-After`, honoured up to a
//! bound); everything else waits for the next step of the retry schedule.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

use super::config::WebhooksConfig;
use super::endpoint::{Endpoint, Kind, check_url_syntax, literal_ip};
use super::guard::{self, GuardedResolver};
use super::signature;
use crate::core::App;

/// Bytes of the answer kept in the attempt log.
pub const RESPONSE_KEEP: usize = 1024;

/// What one attempt observed.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
    pub body: Option<String>,
    /// `Retry-After` of a 429 or 503, already bounded.
    pub retry_after: Option<Duration>,
    /// The label `/metrics` counts the attempt under.
    pub outcome: &'static str,
}

impl Attempted {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }
}

/// The client every attempt uses: the guarded resolver, no proxy, no redirects, the
/// attempt timeout over the whole exchange. Connections are pooled per host, so a busy
/// endpoint is not re-resolved and re-handshaken per message; a pooled connection goes
/// to an address that was checked when it was opened.
pub fn client(config: &WebhooksConfig) -> reqwest::Client {
    crate::http_client::builder()
        .user_agent(concat!("payrelay-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow_private: config.allow_private_targets,
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout())
        .connect_timeout(config.timeout().min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The headers that carry id and signature.
fn headers(
    endpoint: &Endpoint,
    app: &App,
    event_id: &str,
    body: &str,
    now: SystemTime,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put("webhook-id", event_id);
    match endpoint.kind {
        Kind::Standard => {
            let since_epoch = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            let unix = since_epoch.as_secs() as i64;
            put("webhook-timestamp", &unix.to_string());
            // The overlap ends to the millisecond, not at the start of its last second.
            let secrets = endpoint.signing_secrets(since_epoch.as_millis() as i64);
            put(
                "webhook-signature",
                &signature::standard_signature(&secrets, event_id, unix, body.as_bytes()),
            );
        }
        Kind::Pusher => {
            put("x-pusher-key", &app.key);
            put(
                "x-pusher-signature",
                &signature::pusher_signature(app.secret().as_bytes(), body.as_bytes()),
            );
        }
    }
    headers
}

/// Sends `body` to `endpoint` once.
pub async fn attempt(
    client: &reqwest::Client,
    config: &WebhooksConfig,
    endpoint: &Endpoint,
    app: &App,
    event_id: &str,
    body: &str,
) -> Attempted {
    let started = Instant::now();
    let failed = |error: String, outcome: &'static str| Attempted {
        status: None,
        error: Some(error),
        latency: started.elapsed(),
        body: None,
        retry_after: None,
        outcome,
    };
    let url = match check_url_syntax(&endpoint.url) {
        Ok(url) => url,
        Err(e) => return failed(e, "refused"),
    };
    // An IP literal never meets the resolver: check it here.
    if let Some(ip) = literal_ip(&url)
        && let Err(refused) = guard::check_ip(
            url.host_str().unwrap_or_default(),
            ip,
            config.allow_private_targets,
        )
    {
        return failed(refused.to_string(), "refused");
    }
    let request = client
        .post(url)
        .headers(headers(endpoint, app, event_id, body, SystemTime::now()))
        .body(body.to_string());
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            if let Some(refused) = guard::refusal_in(&e) {
                return failed(refused.to_string(), "refused");
            }
            return if e.is_timeout() {
                failed(
                    format!("timed out after {} s", config.timeout_secs),
                    "timeout",
                )
            } else {
                // Without the URL: its query may hold the receiver's own token.
                failed(describe(&e.without_url()), "connection_error")
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = if matches!(status, 429 | 503) {
        response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
            .map(|d| d.min(Duration::from_secs(config.max_retry_after_secs)))
    } else {
        None
    };
    // The first KiB is enough to debug a refusal; the rest is not read at all.
    let mut kept = Vec::new();
    while kept.len() < RESPONSE_KEEP {
        match response.chunk().await {
            Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
            _ => break,
        }
    }
    kept.truncate(RESPONSE_KEEP);
    let outcome = match status {
        200..=299 => "delivered",
        410 => "gone",
        _ => "http_error",
    };
    Attempted {
        status: Some(status),
        error: None,
        latency: started.elapsed(),
        body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
        retry_after,
        outcome,
    }
}

/// A client error and its causes, on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// When to try again after attempt number `attempts` (1-based) failed: the schedule's
/// delay moved by up to ±`jitter`, and no sooner than a bounded `Retry-After`. `None`
/// when the schedule is used up.
pub fn next_delay(
    schedule: &[u64],
    jitter: f64,
    attempts: i64,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
    let base = Duration::from_secs(*schedule.get(index)?);
    let factor = 1.0 + jitter * (rand::random::<f64>() * 2.0 - 1.0);
    let delay = base.mul_f64(factor.max(0.0));
    Some(retry_after.map_or(delay, |after| delay.max(after)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let later = SystemTime::now() + Duration::from_secs(90);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(80) && parsed <= Duration::from_secs(90));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_schedule_with_jitter_and_its_end() {
        let schedule = [5, 300];
        for _ in 0..100 {
            let d = next_delay(&schedule, 0.2, 1, None).unwrap();
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(6),
                "{d:?}"
            );
        }
        let d = next_delay(&schedule, 0.0, 2, None).unwrap();
        assert_eq!(d, Duration::from_secs(300));
        assert_eq!(next_delay(&schedule, 0.2, 3, None), None);
        assert_eq!(next_delay(&schedule, 0.2, 0, None), None);
        // Retry-After only ever makes the wait longer.
        let d = next_delay(&schedule, 0.0, 1, Some(Duration::from_secs(60))).unwrap();
        assert_eq!(d, Duration::from_secs(60));
        let d = next_delay(&schedule, 0.0, 1, Some(Duration::from_secs(1))).unwrap();
        assert_eq!(d, Duration::from_secs(5));
    }
}
