//! `/v1/webhooks/…`: endpoints and their delivery log, for every protocol's users.
//!
//! - `POST /v1/webhooks/endpoints` `{url, merchant_id?, events?, description?}` → 201 with
//!   the endpoint and its `secret` (`whsec_…`, shown here and on rotation only);
//! - `GET /v1/webhooks/endpoints[?merchant_id=]`, `GET|PATCH|DELETE
//!   /v1/webhooks/endpoints/{id}`;
//! - `POST /v1/webhooks/endpoints/{id}/rotate-secret`;
//! - `GET /v1/webhooks/endpoints/{id}/messages?status=&limit=&before=`;
//! - `POST /v1/webhooks/endpoints/{id}/messages/{msg_id}/retry`;
//! - `POST /v1/webhooks/endpoints/{id}/recover` `{since}` (unix seconds).
//!
//! The caller is a merchant's backend (API key: its own endpoints only, another's is 404)
//! or the app's (app credentials: every endpoint of the app).

use std::collections::HashMap;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::manage::{self, ManageError, Scope};
use crate::http::app_auth::Call;
use crate::http::caller::Caller;
use crate::http::{ApiError, HttpState};

/// Largest request body these routes read.
const MAX_BODY: usize = 16 * 1024;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/webhooks/endpoints", post(create).get(list))
        .route(
            "/v1/webhooks/endpoints/{id}",
            get(show).patch(update).delete(remove),
        )
        .route("/v1/webhooks/endpoints/{id}/rotate-secret", post(rotate))
        .route("/v1/webhooks/endpoints/{id}/messages", get(messages))
        .route(
            "/v1/webhooks/endpoints/{id}/messages/{message_id}/retry",
            post(retry),
        )
        .route("/v1/webhooks/endpoints/{id}/recover", post(recover))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

fn api_error(e: ManageError) -> ApiError {
    match e {
        ManageError::BadRequest(m) => ApiError::bad_request(m),
        ManageError::NotFound(m) => ApiError::not_found(m),
        ManageError::Forbidden(m) => ApiError::forbidden(m),
        ManageError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
        ManageError::Database(e) => {
            tracing::error!("webhook store: {e}");
            ApiError::unavailable("webhook store unavailable")
        }
    }
}

/// The caller's app and what it may see.
async fn scope(state: &HttpState, call: &Call) -> Result<(String, Scope), ApiError> {
    Ok(match Caller::of(state, call).await? {
        Caller::Merchant {
            app, merchant_id, ..
        } => (app.id.to_string(), Scope::Merchant(merchant_id)),
        Caller::App(app) => (app.id.to_string(), Scope::App),
    })
}

async fn create(State(state): State<HttpState>, call: Call) -> Result<Response, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let request = manage::parse_new_endpoint(&call.body).map_err(ApiError::bad_request)?;
    let hooks = &state.webhooks;
    let view = manage::create(
        &hooks.store,
        &hooks.config,
        Some(hooks.endpoints()),
        &app,
        &scope,
        request,
    )
    .await
    .map_err(api_error)?;
    hooks.endpoint_edited(&view.id, &view.url);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list(
    State(state): State<HttpState>,
    Query(query): Query<HashMap<String, String>>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let endpoints = manage::list(
        &state.webhooks.store,
        &app,
        &scope,
        query.get("merchant_id").map(String::as_str),
    )
    .await
    .map_err(api_error)?;
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn show(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Json<manage::EndpointView>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let row = manage::get(&state.webhooks.store, &app, &scope, &id)
        .await
        .map_err(api_error)?;
    Ok(Json(manage::EndpointView::of(&row)))
}

async fn update(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Json<manage::EndpointView>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let patch = manage::parse_patch(&call.body).map_err(ApiError::bad_request)?;
    let hooks = &state.webhooks;
    let view = manage::update(
        &hooks.store,
        &hooks.config,
        Some(hooks.endpoints()),
        &app,
        &scope,
        &id,
        patch,
    )
    .await
    .map_err(api_error)?;
    hooks.endpoint_edited(&view.id, &view.url);
    Ok(Json(view))
}

async fn remove(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let hooks = &state.webhooks;
    manage::delete(&hooks.store, Some(hooks.endpoints()), &app, &scope, &id)
        .await
        .map_err(api_error)?;
    Ok(Json(json!({ "id": id, "deleted": true })))
}

async fn rotate(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Json<manage::EndpointView>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let hooks = &state.webhooks;
    let view = manage::rotate_secret(
        &hooks.store,
        &hooks.config,
        Some(hooks.endpoints()),
        &app,
        &scope,
        &id,
    )
    .await
    .map_err(api_error)?;
    Ok(Json(view))
}

async fn messages(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    call: Call,
) -> Result<Json<Value>, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let limit = match query.get("limit") {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| ApiError::bad_request("`limit` must be a number"))?,
        ),
        None => None,
    };
    let page = manage::messages(
        &state.webhooks.store,
        &app,
        &scope,
        &id,
        query.get("status").map(String::as_str),
        limit,
        query.get("before").map(String::as_str),
    )
    .await
    .map_err(api_error)?;
    Ok(Json(page))
}

async fn retry(
    State(state): State<HttpState>,
    Path((id, message_id)): Path<(String, String)>,
    call: Call,
) -> Result<Response, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    manage::retry(&state.webhooks.store, &app, &scope, &id, &message_id)
        .await
        .map_err(api_error)?;
    state.webhooks.wake();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": message_id, "status": "pending" })),
    )
        .into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    since: i64,
}

async fn recover(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    call: Call,
) -> Result<Response, ApiError> {
    let (app, scope) = scope(&state, &call).await?;
    let request: RecoverRequest = serde_json::from_slice(&call.body).map_err(|e| {
        ApiError::bad_request(format!("Expected JSON {{since: <unix seconds>}}: {e}"))
    })?;
    let count = manage::recover(&state.webhooks.store, &app, &scope, &id, request.since)
        .await
        .map_err(api_error)?;
    state.webhooks.wake();
    Ok((StatusCode::ACCEPTED, Json(json!({ "recovering": count }))).into_response())
}
