//! Endpoint management, shared by the HTTP API and `payrelay webhooks`: create, edit,
//! delete, rotate a secret, read the log, retry, recover. Every operation is scoped: an
//! app sees all of its endpoints, a merchant only its own (another's is "not found").
//!
//! Changes go to the database; a running node picks them up at once when made through its
//! API (the caller passes its [`EndpointIndex`]) and within about a second otherwise.

use serde::Serialize;
use serde_json::{Value, json};

use super::config::WebhooksConfig;
use super::endpoint::{self, EventFilter, Kind, check_url_syntax, literal_ip};
use super::guard;
use super::index::EndpointIndex;
use super::signature;
use super::store::{EndpointRow, MessageRow, OutboxStore};
use crate::core::EventId;
use crate::db::now_ms;
use crate::http::json_body::object as object_body;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The app's backend or operator: every endpoint of the app.
    App,
    /// A merchant's backend: its own endpoints only.
    Merchant(String),
}

impl Scope {
    fn may_see(&self, row: &EndpointRow) -> bool {
        match self {
            Scope::App => true,
            Scope::Merchant(m) => row.merchant_id.as_deref() == Some(m),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("webhook store: {0}")]
    Database(#[from] sqlx::Error),
}

/// An endpoint as the API shows it (never its secret, except where said).
#[derive(Debug, Clone, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub merchant_id: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub kind: Kind,
    pub created_at: i64,
    pub updated_at: i64,
    /// When it began failing without a success since (unix ms), if it is.
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
    /// Present in the answers of create and rotate-secret only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    pub fn of(row: &EndpointRow) -> Self {
        EndpointView {
            id: row.id.clone(),
            url: row.url.clone(),
            merchant_id: row.merchant_id.clone(),
            events: row.filter.names().map(<[String]>::to_vec),
            description: row.description.clone(),
            enabled: row.enabled,
            disabled_reason: row.disabled_reason.clone(),
            kind: row.kind,
            created_at: row.created_at,
            updated_at: row.updated_at,
            failing_since: row.failing_since,
            last_success_at: row.last_success_at,
            secret: None,
        }
    }

    fn with_secret(row: &EndpointRow) -> Self {
        EndpointView {
            secret: Some(row.secret.clone()),
            ..Self::of(row)
        }
    }
}

/// What `POST /v1/webhooks/endpoints` takes.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    pub url: String,
    #[serde(default)]
    pub merchant_id: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

/// What `PATCH /v1/webhooks/endpoints/{id}` takes: any of these.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub url: Option<String>,
    /// `null` clears the filter (every event).
    #[serde(default, deserialize_with = "some_or_null")]
    pub events: Option<Option<Vec<String>>>,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default, deserialize_with = "some_or_null")]
    pub description: Option<Option<String>>,
}

/// Tells "absent" (outer `None`) from "null" (`Some(None)`).
fn some_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// Parses an endpoint-creation body (a fuzz target: it takes any bytes).
pub fn parse_new_endpoint(body: &[u8]) -> Result<NewEndpoint, String> {
    object_body(body)
        .map_err(|e| format!("Expected JSON {{url, merchant_id?, events?, description?}}: {e}"))
}

/// Parses an endpoint-edit body (a fuzz target: it takes any bytes).
pub fn parse_patch(body: &[u8]) -> Result<EndpointPatch, String> {
    object_body(body).map_err(|e| {
        format!("Expected JSON with any of {{url, events, enabled, description}}: {e}")
    })
}

/// Checks a URL as a client gives it: syntax, and the address when it is a literal one.
pub(crate) fn checked_url(raw: &str, config: &WebhooksConfig) -> Result<String, ManageError> {
    let url = check_url_syntax(raw).map_err(ManageError::BadRequest)?;
    if let Some(ip) = literal_ip(&url) {
        guard::check_ip(
            url.host_str().unwrap_or_default(),
            ip,
            config.allow_private_targets,
        )
        .map_err(|e| ManageError::BadRequest(format!("The URL is {e}")))?;
    }
    Ok(url.to_string())
}

pub(crate) fn checked_description(text: Option<String>) -> Result<Option<String>, ManageError> {
    match text {
        Some(d) if d.chars().count() > endpoint::MAX_DESCRIPTION_LEN => {
            Err(ManageError::BadRequest(format!(
                "`description` is longer than {} characters",
                endpoint::MAX_DESCRIPTION_LEN
            )))
        }
        other => Ok(other),
    }
}

pub(crate) fn checked_filter(events: Option<Vec<String>>) -> Result<EventFilter, ManageError> {
    events.map_or(Ok(EventFilter::all()), |names| {
        EventFilter::new(names).map_err(ManageError::BadRequest)
    })
}

/// Creates a Standard Webhooks endpoint; the answer carries its secret.
pub async fn create(
    store: &OutboxStore,
    config: &WebhooksConfig,
    index: Option<&EndpointIndex>,
    app_id: &str,
    scope: &Scope,
    request: NewEndpoint,
) -> Result<EndpointView, ManageError> {
    let merchant_id = match (scope, request.merchant_id) {
        (Scope::Merchant(own), Some(asked)) if &asked != own => {
            return Err(ManageError::Forbidden(
                "An API key manages its own merchant's endpoints only".into(),
            ));
        }
        (Scope::Merchant(own), _) => Some(own.clone()),
        (Scope::App, asked) => asked,
    };
    if let Some(m) = &merchant_id
        && !crate::merchants::store::valid_merchant_id(m)
    {
        return Err(ManageError::BadRequest(
            "`merchant_id` must be 1-64 letters, digits, `_` or `-`".into(),
        ));
    }
    let url = checked_url(&request.url, config)?;
    let filter = checked_filter(request.events)?;
    let description = checked_description(request.description)?;
    let owned = store
        .endpoints(Some(app_id), Some(merchant_id.as_deref()))
        .await?
        .into_iter()
        .filter(|e| e.kind == Kind::Standard)
        .count();
    if owned >= config.max_endpoints_per_owner {
        return Err(ManageError::Conflict(format!(
            "At most {} endpoints per owner",
            config.max_endpoints_per_owner
        )));
    }
    let mut row = EndpointRow::fresh(
        endpoint::new_id(),
        app_id.to_string(),
        merchant_id,
        Kind::Standard,
        url,
        filter,
        signature::new_secret(),
    );
    row.description = description;
    store.insert_endpoint(&row).await?;
    if let Some(index) = index {
        index.upsert(row.to_endpoint());
    }
    tracing::info!(app = %app_id, merchant = ?row.merchant_id, endpoint = %row.id, "webhook endpoint created");
    Ok(EndpointView::with_secret(&row))
}

/// The endpoint `id` if `scope` may see it.
pub async fn get(
    store: &OutboxStore,
    app_id: &str,
    scope: &Scope,
    id: &str,
) -> Result<EndpointRow, ManageError> {
    let missing = || ManageError::NotFound(format!("No webhook endpoint `{id}`"));
    if !endpoint::plausible_id(id) {
        return Err(missing());
    }
    match store.endpoint(app_id, id).await? {
        Some(row) if scope.may_see(&row) => Ok(row),
        _ => Err(missing()),
    }
}

/// Endpoints `scope` may see; the app may narrow to one merchant.
pub async fn list(
    store: &OutboxStore,
    app_id: &str,
    scope: &Scope,
    merchant_id: Option<&str>,
) -> Result<Vec<EndpointView>, ManageError> {
    let filter = match scope {
        Scope::Merchant(own) => Some(Some(own.as_str())),
        Scope::App => merchant_id.map(Some),
    };
    Ok(store
        .endpoints(Some(app_id), filter)
        .await?
        .iter()
        .map(EndpointView::of)
        .collect())
}

fn refuse_configured(row: &EndpointRow) -> Result<(), ManageError> {
    if row.kind == Kind::Pusher {
        return Err(ManageError::Conflict(
            "This endpoint comes from [[apps.webhooks]] in the node's configuration; edit it there"
                .into(),
        ));
    }
    Ok(())
}

pub async fn update(
    store: &OutboxStore,
    config: &WebhooksConfig,
    index: Option<&EndpointIndex>,
    app_id: &str,
    scope: &Scope,
    id: &str,
    patch: EndpointPatch,
) -> Result<EndpointView, ManageError> {
    let mut row = get(store, app_id, scope, id).await?;
    refuse_configured(&row)?;
    if let Some(url) = patch.url {
        let url = checked_url(&url, config)?;
        if url != row.url {
            // A new URL has proven nothing: the endpoint starts again unproven (one
            // slot until its first success there), and not failing. The store clears
            // `last_success_at` too.
            row.failing_since = None;
            row.last_success_at = None;
        }
        row.url = url;
    }
    if let Some(events) = patch.events {
        row.filter = checked_filter(events)?;
    }
    if let Some(description) = patch.description {
        row.description = checked_description(description)?;
    }
    if let Some(enabled) = patch.enabled {
        if enabled && !row.enabled {
            // A fresh start: the failing period counts from the next failure.
            row.failing_since = None;
            row.disabled_reason = None;
        }
        if !enabled && row.enabled {
            row.disabled_reason = Some("disabled by its owner".into());
        }
        row.enabled = enabled;
    }
    row.updated_at = now_ms();
    store.update_endpoint(&row).await?;
    if !row.enabled {
        // Pending messages fail now (and can be recovered after re-enabling).
        let reason = row.disabled_reason.clone().unwrap_or_default();
        store
            .disable_endpoint(&row.id, &reason, row.updated_at, None)
            .await?;
    }
    if let Some(index) = index {
        index.upsert(row.to_endpoint());
    }
    Ok(EndpointView::of(&row))
}

pub async fn delete(
    store: &OutboxStore,
    index: Option<&EndpointIndex>,
    app_id: &str,
    scope: &Scope,
    id: &str,
) -> Result<(), ManageError> {
    let row = get(store, app_id, scope, id).await?;
    refuse_configured(&row)?;
    store.delete_endpoint(app_id, id).await?;
    if let Some(index) = index {
        index.remove(id);
    }
    tracing::info!(app = %app_id, endpoint = %id, "webhook endpoint deleted");
    Ok(())
}

/// A new secret; the old one keeps signing beside it for the overlap.
pub async fn rotate_secret(
    store: &OutboxStore,
    config: &WebhooksConfig,
    index: Option<&EndpointIndex>,
    app_id: &str,
    scope: &Scope,
    id: &str,
) -> Result<EndpointView, ManageError> {
    let mut row = get(store, app_id, scope, id).await?;
    refuse_configured(&row)?;
    let now = now_ms();
    row.previous_secret = Some(std::mem::replace(&mut row.secret, signature::new_secret()));
    row.previous_until = now + config.secret_rotation_overlap_secs as i64 * 1000;
    row.updated_at = now;
    store.update_endpoint(&row).await?;
    if let Some(index) = index {
        index.upsert(row.to_endpoint());
    }
    tracing::info!(app = %app_id, endpoint = %id, "webhook secret rotated");
    let mut view = EndpointView::with_secret(&row);
    view.updated_at = now;
    Ok(view)
}

/// The most messages one page of the log holds.
pub const MAX_PAGE: i64 = 250;

/// One page of an endpoint's log: `status` (`pending`, `delivered`, `failed`), newest
/// first, `before` an event id for the next page.
pub async fn messages(
    store: &OutboxStore,
    app_id: &str,
    scope: &Scope,
    id: &str,
    status: Option<&str>,
    limit: Option<i64>,
    before: Option<&str>,
) -> Result<Value, ManageError> {
    let row = get(store, app_id, scope, id).await?;
    if let Some(s) = status
        && !matches!(s, "pending" | "delivered" | "failed")
    {
        return Err(ManageError::BadRequest(
            "`status` must be pending, delivered or failed".into(),
        ));
    }
    if let Some(b) = before
        && EventId::parse(b).is_none()
    {
        return Err(ManageError::BadRequest(
            "`before` must be a message id (evt_…)".into(),
        ));
    }
    let limit = limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ManageError::BadRequest(format!(
            "`limit` must be 1 to {MAX_PAGE}"
        )));
    }
    let page: Vec<MessageRow> = store.messages(&row.id, status, before, limit).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| m.id.clone()))
        .flatten();
    Ok(json!({ "messages": page, "next_before": next }))
}

/// Sends one message again (a fresh retry schedule).
pub async fn retry(
    store: &OutboxStore,
    app_id: &str,
    scope: &Scope,
    id: &str,
    message_id: &str,
) -> Result<(), ManageError> {
    let row = get(store, app_id, scope, id).await?;
    if !row.enabled {
        return Err(ManageError::Conflict(
            "The endpoint is disabled: enable it first".into(),
        ));
    }
    if EventId::parse(message_id).is_none() || !store.retry(&row.id, message_id, now_ms()).await? {
        return Err(ManageError::NotFound(format!(
            "No delivered or failed message `{message_id}` for this endpoint"
        )));
    }
    Ok(())
}

/// Sends every failed message since `since` (unix seconds) again; returns how many.
pub async fn recover(
    store: &OutboxStore,
    app_id: &str,
    scope: &Scope,
    id: &str,
    since: i64,
) -> Result<u64, ManageError> {
    let row = get(store, app_id, scope, id).await?;
    if !row.enabled {
        return Err(ManageError::Conflict(
            "The endpoint is disabled: enable it first".into(),
        ));
    }
    let since_ms = since
        .checked_mul(1000)
        .ok_or_else(|| ManageError::BadRequest("`since` must be a unix time in seconds".into()))?;
    Ok(store.recover(&row.id, since_ms, now_ms()).await?)
}

/// Brings `[[apps.webhooks]]` into the table: one Pusher endpoint per entry (its id
/// derived from app and URL, so it survives restarts with its log), and entries no longer
/// configured disabled.
pub async fn sync_pusher_endpoints(
    store: &OutboxStore,
    config: &crate::config::Config,
) -> Result<(), sqlx::Error> {
    let existing = store.endpoints(None, None).await?;
    let now = now_ms();
    let mut wanted = Vec::new();
    for app in &config.apps {
        for hook in &app.webhooks {
            let digest = crate::signing::hmac_sha256_hex(app.id.as_bytes(), hook.url.as_bytes());
            let id = format!("{}pusher_{}", endpoint::ENDPOINT_ID_PREFIX, &digest[..24]);
            let filter = EventFilter::new(hook.event_types.clone()).unwrap_or_default();
            match existing.iter().find(|e| e.id == id) {
                Some(row) => {
                    let mut row = row.clone();
                    if !row.enabled || row.filter != filter {
                        row.enabled = true;
                        row.disabled_reason = None;
                        row.failing_since = None;
                        row.filter = filter;
                        row.updated_at = now;
                        store.update_endpoint(&row).await?;
                    }
                }
                None => {
                    let mut row = EndpointRow::fresh(
                        id.clone(),
                        app.id.clone(),
                        None,
                        Kind::Pusher,
                        hook.url.clone(),
                        filter,
                        String::new(),
                    );
                    row.description = Some("[[apps.webhooks]] in the configuration".into());
                    store.insert_endpoint(&row).await?;
                }
            }
            wanted.push(id);
        }
    }
    for row in existing
        .iter()
        .filter(|e| e.kind == Kind::Pusher && e.enabled && !wanted.contains(&e.id))
    {
        store
            .disable_endpoint(&row.id, "removed from the configuration", now, None)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/webhook_bodies: serde reads a struct from a JSON array of its fields,
    /// so `["https://…"]` was a valid PATCH. Bodies are JSON objects only.
    #[test]
    fn bodies_are_json_objects_not_arrays_of_fields() {
        assert!(parse_new_endpoint(br#"["https://example.com/hooks", "m1"]"#).is_err());
        assert!(parse_patch(br#"["https://example.com/hooks"]"#).is_err());
        let created = parse_new_endpoint(br#"{"url": "https://example.com/hooks"}"#).unwrap();
        assert_eq!(created.url, "https://example.com/hooks");
        assert_eq!(
            parse_patch(br#"{"enabled": false}"#).unwrap().enabled,
            Some(false)
        );
        // A repeated key is still refused.
        let repeated = br#"{"url": "https://a.example", "url": "https://b.example"}"#;
        assert!(parse_patch(repeated).is_err());
    }
}
