//! The Pusher HTTP API: what `pusher.trigger()`, `triggerBatch()`, `get()` and
//! `terminateUserConnections()` of the server libraries call.
//!
//! Every route checks the request signature first (401 with a reason otherwise), then
//! validates the whole request before publishing anything: a batch with one bad event
//! publishes none.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::core::channel::{self, ChannelKind, is_presence_channel};
use crate::core::{
    App, MAX_EVENT_NAME_LEN, NewPublication, PublishError, Recovered, SocketId, StreamPosition,
};
use crate::http::app_auth;
use crate::http::{ApiError, HttpState};
use crate::idempotency;

pub(super) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/apps/{app_id}/events", post(trigger))
        .route("/apps/{app_id}/batch_events", post(trigger_batch))
        .route("/apps/{app_id}/channels", get(list_channels))
        .route("/apps/{app_id}/channels/{channel}", get(channel_info))
        .route(
            "/apps/{app_id}/channels/{channel}/users",
            get(channel_users),
        )
        .route(
            "/apps/{app_id}/channels/{channel}/events",
            get(channel_events),
        )
        .route(
            "/apps/{app_id}/users/{user_id}/terminate_connections",
            post(terminate_connections),
        )
        // The PyPI `pusher` library (3.x) posts here without the `/apps/{id}` prefix; the
        // signed `auth_key` still names the app, so the call can be honoured.
        .route(
            "/users/{user_id}/terminate_connections",
            post(terminate_connections_by_key),
        )
}

/// Finds the app and checks the request's signature (the Pusher HTTP API accepts no
/// other credential).
fn authorize(
    state: &HttpState,
    app_id: &str,
    method: &Method,
    uri: &axum::http::Uri,
    body: &[u8],
) -> Result<Arc<App>, ApiError> {
    let headers = axum::http::HeaderMap::new();
    let request = app_auth::Request {
        method,
        uri,
        headers: &headers,
        body,
    };
    app_auth::authenticate(
        state,
        Some(app_id),
        app_auth::Accepts::SignatureOnly,
        &request,
    )
}

fn query_params(uri: &axum::http::Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// One event as the API receives it (`events` or one item of `batch_events`).
#[derive(Debug, Deserialize)]
struct EventRequest {
    name: String,
    data: Value,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
    /// Publish this event at most once within the idempotency window.
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// An event that passed validation, ready to publish.
pub(crate) struct ValidEvent {
    pub(crate) name: String,
    pub(crate) data: String,
    pub(crate) channels: Vec<String>,
    pub(crate) exclude: Option<SocketId>,
    pub(crate) info: Vec<InfoAttribute>,
    pub(crate) idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InfoAttribute {
    UserCount,
    SubscriptionCount,
    Cache,
}

pub(crate) fn parse_info(
    info: Option<&str>,
    allow_cache: bool,
) -> Result<Vec<InfoAttribute>, ApiError> {
    let mut out = Vec::new();
    for attribute in info
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let parsed = match attribute {
            "user_count" => InfoAttribute::UserCount,
            "subscription_count" => InfoAttribute::SubscriptionCount,
            "cache" if allow_cache => InfoAttribute::Cache,
            other => {
                return Err(ApiError::bad_request(format!(
                    "Unknown info attribute `{other}`"
                )));
            }
        };
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    crate::http::json_body::object(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
}

fn validate_event(app: &App, request: EventRequest) -> Result<ValidEvent, ApiError> {
    let channels = match (request.channels, request.channel) {
        (Some(list), None) => list,
        (None, Some(one)) => vec![one],
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Give either `channels` or `channel`, not both",
            ));
        }
        (None, None) => return Err(ApiError::bad_request("Missing `channels`")),
    };
    let max = app.limits.max_event_channels;
    if channels.is_empty() || channels.len() > max {
        return Err(ApiError::bad_request(format!(
            "An event must name 1 to {max} channels"
        )));
    }
    for name in &channels {
        let info = channel::classify(name)
            .map_err(|e| ApiError::bad_request(format!("Invalid channel name `{name}`: {e}")))?;
        if info.kind == ChannelKind::PrivateEncrypted && channels.len() > 1 {
            return Err(ApiError::bad_request(
                "Cannot trigger an event on several channels when one of them is encrypted",
            ));
        }
    }
    if request.name.is_empty() || request.name.len() > MAX_EVENT_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "Event name must be 1 to {MAX_EVENT_NAME_LEN} characters"
        )));
    }
    if request.name.starts_with("pusher:") || request.name.starts_with("pusher_internal:") {
        return Err(ApiError::bad_request(
            "Event names starting with `pusher` are reserved",
        ));
    }
    let data = match request.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let limit = app.limits.max_message_size;
    if data.len() > limit {
        return Err(ApiError::too_large(format!(
            "Event data is {} bytes, over the limit of {limit} bytes",
            data.len()
        )));
    }
    let exclude = match request.socket_id.as_deref() {
        None | Some("") => None,
        // An id this node never handed out is valid and excludes nobody here.
        Some(id) => SocketId::from_client(id).map_err(|e| {
            let shown: String = id.chars().take(45).collect();
            ApiError::bad_request(format!("Invalid socket_id `{shown}`: {e}"))
        })?,
    };
    let info = parse_info(request.info.as_deref(), false)?;
    let idempotency_key = request
        .idempotency_key
        .as_deref()
        .map(idempotency::parse_key)
        .transpose()
        .map_err(ApiError::bad_request)?;
    Ok(ValidEvent {
        name: request.name,
        data,
        channels,
        exclude,
        info,
        idempotency_key,
    })
}

pub(crate) fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::DataTooLarge { .. } => ApiError::too_large(e.to_string()),
        PublishError::Broker(_) | PublishError::Journal(_) | PublishError::History(_) => {
            ApiError::unavailable(e.to_string())
        }
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// A publish that failed, and whether it reached some channels first.
struct Failed {
    error: ApiError,
    published: bool,
}

/// Publishes `event` on each of its channels; the ids by channel.
async fn publish(
    state: &HttpState,
    app: &App,
    event: &ValidEvent,
) -> Result<Map<String, Value>, Failed> {
    let mut ids = Map::new();
    for channel in &event.channels {
        let publication = NewPublication {
            channel: channel.clone(),
            event: event.name.clone(),
            data: event.data.clone(),
            exclude: event.exclude,
            ..Default::default()
        };
        match state.core.publish(app, publication).await {
            Ok(id) => {
                ids.insert(channel.clone(), json!(id));
            }
            Err(e) => {
                return Err(Failed {
                    error: publish_error(e),
                    published: !ids.is_empty(),
                });
            }
        }
    }
    Ok(ids)
}

/// Publishes `event` at most once per its `idempotency_key` (if any): a repeated key
/// publishes nothing and gives the ids of the first time.
async fn publish_once(
    state: &HttpState,
    app: &App,
    event: &ValidEvent,
) -> Result<Map<String, Value>, Failed> {
    let Some(key) = &event.idempotency_key else {
        return publish(state, app, event).await;
    };
    let key = idempotency::scoped(&app.id, "pusher-event", key);
    let fingerprint = idempotency::fingerprint(&[
        event.name.as_bytes(),
        event.data.as_bytes(),
        event.channels.join("\n").as_bytes(),
    ]);
    let refused = |refused: idempotency::Refused| {
        let (status, message) = refused.status_and_message();
        Failed {
            error: ApiError::new(status, message),
            published: false,
        }
    };
    match state.idempotency.begin(&key, &fingerprint).await {
        Ok(idempotency::Begun::Replay(answer)) => {
            Ok(serde_json::from_str(&answer.body).unwrap_or_default())
        }
        Ok(idempotency::Begun::First) => {
            let outcome = publish(state, app, event).await;
            let (answer, published) = match &outcome {
                Ok(ids) => (Value::Object(ids.clone()).to_string(), true),
                Err(failed) => (String::new(), failed.published),
            };
            let answer = idempotency::StoredAnswer {
                status: 200,
                body: answer,
            };
            state
                .idempotency
                .finish(&key, &fingerprint, &answer, published)
                .await;
            outcome
        }
        Err(e) => Err(refused(e)),
    }
}

/// An answer to keep for a request-level idempotency key.
fn stored(status: axum::http::StatusCode, body: &Value) -> idempotency::StoredAnswer {
    idempotency::StoredAnswer {
        status: status.as_u16(),
        body: body.to_string(),
    }
}

fn error_answer(error: &ApiError) -> idempotency::StoredAnswer {
    stored(error.status, &json!({ "error": error.message }))
}

/// The `info` part of a trigger response: per channel, the requested counts (the
/// cluster's, on a cluster member).
async fn channels_info(
    state: &HttpState,
    app: &App,
    channels: &[String],
    info: &[InfoAttribute],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for name in channels {
        let stats = state
            .core
            .channel_stats(&app.id, name)
            .await
            .map_err(ApiError::unavailable)?;
        let mut entry = Map::new();
        for attribute in info {
            match attribute {
                InfoAttribute::UserCount if is_presence_channel(name) => {
                    entry.insert("user_count".into(), stats.user_count.into());
                }
                InfoAttribute::SubscriptionCount => {
                    entry.insert("subscription_count".into(), stats.subscription_count.into());
                }
                _ => {}
            }
        }
        out.insert(name.clone(), Value::Object(entry));
    }
    Ok(out)
}

/// The request's `Idempotency-Key` header, scoped to the app and route.
fn request_key(headers: &HeaderMap, app: &App, route: &str) -> Result<Option<String>, ApiError> {
    Ok(idempotency::header_key(headers)
        .map_err(ApiError::bad_request)?
        .map(|key| idempotency::scoped(&app.id, route, &key)))
}

async fn trigger(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, &body)?;
    let event = parse_trigger(&app, &body)?;
    let key = request_key(&headers, &app, "pusher-events")?;
    let fingerprint = idempotency::fingerprint(&[&body]);
    Ok(
        idempotency::run(&state.idempotency, key, &fingerprint, || async {
            match publish_once(&state, &app, &event).await {
                Ok(ids) => {
                    // Pusher's answer, plus the event's id on each channel.
                    let mut answer = json!({ "event_ids": ids });
                    if !event.info.is_empty() {
                        // Published already: an answer without the counts beats an error
                        // that would make the backend publish again.
                        match channels_info(&state, &app, &event.channels, &event.info).await {
                            Ok(channels) => answer["channels"] = Value::Object(channels),
                            Err(e) => {
                                tracing::warn!("trigger answered without info: {}", e.message)
                            }
                        }
                    }
                    (stored(axum::http::StatusCode::OK, &answer), true)
                }
                Err(failed) => (error_answer(&failed.error), failed.published),
            }
        })
        .await,
    )
}

#[derive(Debug, Deserialize)]
struct BatchRequest {
    batch: Vec<EventRequest>,
}

/// The body of `POST /apps/{id}/events`, validated whole.
pub(crate) fn parse_trigger(app: &App, body: &[u8]) -> Result<ValidEvent, ApiError> {
    validate_event(app, parse_json(body)?)
}

/// The body of `POST /apps/{id}/batch_events`, every item validated before any is
/// published.
pub(crate) fn parse_batch(app: &App, body: &[u8]) -> Result<Vec<ValidEvent>, ApiError> {
    let request: BatchRequest = parse_json(body)?;
    let max = app.limits.max_batch_size;
    if request.batch.is_empty() || request.batch.len() > max {
        return Err(ApiError::bad_request(format!(
            "A batch must hold 1 to {max} events"
        )));
    }
    let mut events = Vec::with_capacity(request.batch.len());
    for (i, item) in request.batch.into_iter().enumerate() {
        if item.channels.is_some() {
            return Err(ApiError::bad_request(format!(
                "batch[{i}]: batch events name one `channel`, not `channels`"
            )));
        }
        let event = validate_event(app, item).map_err(|e| ApiError {
            message: format!("batch[{i}]: {}", e.message),
            ..e
        })?;
        events.push(event);
    }
    Ok(events)
}

async fn trigger_batch(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, &body)?;
    let events = parse_batch(&app, &body)?;
    let key = request_key(&headers, &app, "pusher-batch")?;
    let fingerprint = idempotency::fingerprint(&[&body]);
    Ok(
        idempotency::run(&state.idempotency, key, &fingerprint, || async {
            let mut ids = Vec::with_capacity(events.len());
            for event in &events {
                match publish_once(&state, &app, event).await {
                    Ok(item) => ids.push(item.into_iter().next().map_or(Value::Null, |(_, id)| id)),
                    Err(failed) => {
                        let published = failed.published || !ids.is_empty();
                        return (error_answer(&failed.error), published);
                    }
                }
            }
            // Pusher's answer, plus each item's event id.
            let mut answer = json!({ "event_ids": ids });
            if events.iter().any(|e| !e.info.is_empty()) {
                let mut batch: Vec<Value> = Vec::with_capacity(events.len());
                for event in &events {
                    match channels_info(&state, &app, &event.channels, &event.info).await {
                        // One channel per batch item: its attributes are the item's entry.
                        Ok(mut info) => {
                            batch.push(info.remove(&event.channels[0]).unwrap_or_else(|| json!({})))
                        }
                        Err(e) => {
                            tracing::warn!("batch answered without info: {}", e.message);
                            batch.push(json!({}));
                        }
                    }
                }
                answer["batch"] = Value::Array(batch);
            }
            (stored(axum::http::StatusCode::OK, &answer), true)
        })
        .await,
    )
}

async fn list_channels(
    State(state): State<HttpState>,
    Path(app_id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, b"")?;
    let params = query_params(&uri);
    let prefix = params
        .get("filter_by_prefix")
        .map(String::as_str)
        .unwrap_or("");
    let info = parse_info(params.get("info").map(String::as_str), false)?;
    if info.contains(&InfoAttribute::UserCount) && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "info=user_count needs filter_by_prefix=presence-",
        ));
    }
    let mut channels = Map::new();
    let occupied = state
        .core
        .occupied_channels(&app.id, prefix)
        .await
        .map_err(ApiError::unavailable)?;
    for (name, stats) in occupied {
        let mut entry = Map::new();
        for attribute in &info {
            match attribute {
                InfoAttribute::UserCount => {
                    entry.insert("user_count".into(), stats.user_count.into());
                }
                InfoAttribute::SubscriptionCount => {
                    entry.insert("subscription_count".into(), stats.subscription_count.into());
                }
                InfoAttribute::Cache => {}
            }
        }
        channels.insert(name.to_string(), Value::Object(entry));
    }
    Ok(Json(json!({ "channels": channels })))
}

async fn channel_info(
    State(state): State<HttpState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, b"")?;
    let kind = channel::classify(&channel)
        .map_err(|e| ApiError::bad_request(format!("Invalid channel name `{channel}`: {e}")))?;
    let info = parse_info(query_params(&uri).get("info").map(String::as_str), true)?;
    if info.contains(&InfoAttribute::UserCount) && kind.kind != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "info=user_count is only for presence channels",
        ));
    }
    let stats = state
        .core
        .channel_stats(&app.id, &channel)
        .await
        .map_err(ApiError::unavailable)?;
    let mut body = Map::new();
    body.insert("occupied".into(), stats.occupied().into());
    for attribute in &info {
        match attribute {
            InfoAttribute::UserCount => {
                body.insert("user_count".into(), stats.user_count.into());
            }
            InfoAttribute::SubscriptionCount => {
                body.insert("subscription_count".into(), stats.subscription_count.into());
            }
            InfoAttribute::Cache => {
                if let Some((last, ttl)) = &stats.cache {
                    body.insert(
                        "cache".into(),
                        json!({"event": &*last.event, "data": &*last.data, "ttl": ttl.as_secs(), "id": last.id}),
                    );
                }
            }
        }
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /apps/{id}/channels/{channel}/events?after=<position>&limit=`: what the channel's
/// history holds after a position (from the oldest retained without `after`), oldest
/// first, for backends that missed something. 410 when `after` can no longer be vouched
/// for (another epoch, or older than what is retained).
async fn channel_events(
    State(state): State<HttpState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, b"")?;
    channel::classify(&channel)
        .map_err(|e| ApiError::bad_request(format!("Invalid channel name `{channel}`: {e}")))?;
    if !app.history.enabled() {
        return Err(ApiError::not_found(
            "This app keeps no channel history ([apps.history] size or ttl_secs is 0)",
        ));
    }
    let params = query_params(&uri);
    let after = match params.get("after") {
        None => None,
        Some(text) => Some(StreamPosition::parse(text).ok_or_else(|| {
            ApiError::bad_request("`after` must be a position as events carry it")
        })?),
    };
    let max = app.history.size;
    let limit = match params.get("limit") {
        None => max,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!("`limit` must be 1 to {max}")));
            }
        },
    };
    let history = state.core.history();
    let recovered = history
        .since(&app, &channel, after.as_ref(), limit)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let (publications, top) = match recovered {
        Recovered::Publications { publications, top } => (publications, Some(top)),
        Recovered::Gone { top: _ } if after.is_some() => {
            return Err(ApiError::new(
                axum::http::StatusCode::GONE,
                "The events after `after` are no longer all retained (older than the history window, or the history was lost); ask without `after` for what is",
            ));
        }
        // Nothing was ever kept for this channel.
        Recovered::Gone { top } => (Vec::new(), top),
    };
    let top = match top {
        Some(top) => top,
        None => history
            .latest(&app, &channel)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?
            .ok_or_else(|| ApiError::not_found("This app keeps no channel history"))?,
    };
    let events: Vec<Value> = publications
        .iter()
        .map(|p| {
            let published_ms = p
                .published_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            json!({
                "id": p.id,
                "position": p.position(),
                "event": &*p.event,
                "data": &*p.data,
                "published_at_ms": published_ms,
            })
        })
        .collect();
    Ok(Json(
        json!({ "channel": channel, "position": top, "events": events }),
    ))
}

async fn channel_users(
    State(state): State<HttpState>,
    Path((app_id, channel)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
) -> Result<Json<Value>, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, b"")?;
    if !is_presence_channel(&channel) || channel::classify(&channel).is_err() {
        return Err(ApiError::bad_request(
            "Users can only be listed for presence channels",
        ));
    }
    let users: Vec<Value> = state
        .core
        .presence_members(&app.id, &channel)
        .await
        .map_err(ApiError::unavailable)?
        .iter()
        .map(|id| json!({"id": &**id}))
        .collect();
    Ok(Json(json!({ "users": users })))
}

async fn terminate_connections(
    State(state): State<HttpState>,
    Path((app_id, user_id)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let app = authorize(&state, &app_id, &method, &uri, &body)?;
    terminate(&state, &app, &user_id).await
}

async fn terminate_connections_by_key(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    // Without an app id in the path, the signed `auth_key` names the app.
    let headers = axum::http::HeaderMap::new();
    let request = app_auth::Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    let app = app_auth::authenticate(&state, None, app_auth::Accepts::SignatureOnly, &request)?;
    terminate(&state, &app, &user_id).await
}

async fn terminate(state: &HttpState, app: &App, user_id: &str) -> Result<Json<Value>, ApiError> {
    if user_id.is_empty() || user_id.len() > 200 {
        return Err(ApiError::bad_request("User id must be 1 to 200 characters"));
    }
    state
        .core
        .terminate_user(app, user_id)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    /// Event data sent as a JSON object is published as its text; a float in it keeps
    /// its value exactly (serde_json's default parsing was one ULP off for some).
    #[test]
    fn object_data_keeps_its_numbers_exactly() {
        let app = App::from_config(&AppConfig::development());
        let body = br#"{"name":"e","channel":"c","data":{"price":-1.3629632216575999e57}}"#;
        let event = parse_trigger(&app, body).unwrap();
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["price"].as_f64(), Some(-1.3629632216575999e57));
    }
}
