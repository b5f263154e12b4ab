//! Keys from a JWKS URL: fetched once at start-up, then kept fresh by a background task.
//!
//! Nothing here runs inside a request. The auth endpoint verifies against the keys held
//! now; a token naming a `kid` the set lacks only wakes the refresher (at most once per
//! [`MIN_REFETCH`]), so a hung or slow identity provider can never hold a merchant's
//! request, and forged `kid`s cannot make us hammer it. A failed refresh keeps the old
//! keys: the provider being down must not lock every merchant out.
//!
//! The fetch itself is defensive: `https://` only unless the app allows `http://`, no
//! redirects (a JWKS URL names the key set itself; following a redirect would let whoever
//! controls the first host pick our keys' origin), and the body is read chunk by chunk
//! and abandoned past [`MAX_BYTES`] instead of buffered whole.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use parking_lot::RwLock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

/// Verification keys, each with the `kid` that selects it.
pub(super) type Keys = Arc<Vec<(Option<String>, DecodingKey)>>;

/// Least time between two fetches caused by unknown `kid`s.
pub(super) const MIN_REFETCH: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A JWKS is a few kilobytes; a body past this is refused, not buffered.
pub(super) const MAX_BYTES: usize = 1024 * 1024;

/// Whether `url` may be fetched: `https://`, or `http://` when `allow_http`.
pub(super) fn check_url(url: &str, allow_http: bool) -> Result<(), String> {
    if url.starts_with("https://") || (allow_http && url.starts_with("http://")) {
        return Ok(());
    }
    let shown = crate::redact::url(url);
    Err(if url.starts_with("http://") {
        format!(
            "jwks_url `{shown}` is plain http: keys fetched without TLS can be replaced on the \
             way; use https://, or set jwks_allow_http = true for a provider on a trusted network"
        )
    } else {
        format!("jwks_url `{shown}` is not an https:// URL")
    })
}

/// Parses a JWKS document; keys the library cannot use are skipped.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys = set
        .keys
        .iter()
        .filter_map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .ok()
                .map(|key| (jwk.common.key_id.clone(), key))
        })
        .collect::<Vec<_>>();
    if keys.is_empty() {
        return Err("no usable key".into());
    }
    Ok(keys)
}

/// Fetches and parses the key set at `url`. Errors never quote the URL (the caller names
/// it, redacted).
pub(super) async fn fetch(url: &str) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let client = crate::http_client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .user_agent(concat!("payrelay/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut response = client
        .get(url)
        .send()
        .await
        // reqwest's message quotes the URL, credentials and all.
        .map_err(|e| format!("fetch failed: {}", e.without_url()))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(format!(
            "answered {status}: redirects are not followed, set jwks_url to the key set's own URL"
        ));
    }
    if !status.is_success() {
        return Err(format!("answered {status}"));
    }
    let too_large = || format!("the key set is larger than {MAX_BYTES} bytes");
    let declared = response.content_length().unwrap_or(0);
    if declared > MAX_BYTES as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the body failed: {}", e.without_url()))?
    {
        if body.len() + chunk.len() > MAX_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    parse(&body)
}

/// The background task that keeps a remote key set fresh; stops when dropped.
pub(super) struct Refresher {
    nudge: Arc<Notify>,
    _stop: DropGuard,
}

impl Refresher {
    /// Starts refreshing `keys` from `url` every `every`, the last fetch having been now.
    pub(super) fn start(url: String, every: Duration, keys: Arc<RwLock<Keys>>) -> Refresher {
        let nudge = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        tokio::spawn(refresh_loop(url, every, keys, nudge.clone(), stop.clone()));
        Refresher {
            nudge,
            _stop: stop.drop_guard(),
        }
    }

    /// Asks for a fetch soon (a token named an unknown `kid`); never waits for it.
    pub(super) fn nudge(&self) {
        self.nudge.notify_one();
    }
}

async fn refresh_loop(
    url: String,
    every: Duration,
    keys: Arc<RwLock<Keys>>,
    nudge: Arc<Notify>,
    stop: CancellationToken,
) {
    let shown = crate::redact::url(&url);
    let mut last_fetch = Instant::now();
    loop {
        let due = last_fetch + every;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until(due) => {}
            () = nudge.notified() => {
                // Nudges within MIN_REFETCH of the last fetch wait for that much; the
                // permit Notify keeps coalesces a burst of them into one fetch.
                let earliest = (last_fetch + MIN_REFETCH).min(due);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(earliest) => {}
                }
            }
        }
        last_fetch = Instant::now();
        let fetched = tokio::select! {
            () = stop.cancelled() => return,
            fetched = fetch(&url) => fetched,
        };
        match fetched {
            Ok(fresh) => {
                tracing::info!(url = %shown, keys = fresh.len(), "JWKS refreshed");
                *keys.write() = Arc::new(fresh);
            }
            Err(e) => {
                tracing::warn!(url = %shown, "JWKS refresh failed, keeping the old keys: {e}")
            }
        }
    }
}
