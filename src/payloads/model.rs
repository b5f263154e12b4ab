//! A payment request ("payload") as the store keeps it, the create body as xumm-sdk sends
//! it, and every JSON shape the API, the socket and the callbacks show.
//!
//! The shapes follow xumm-sdk 1.11's types (`XummPostPayloadResponse`,
//! `XummGetPayloadResponse`, `XummDeletePayloadResponse`, `XummWebsocketBody`): the SDK
//! judges a create by `next`, a get or cancel by `meta.uuid`, and reads the rest.

use serde_json::{Map, Value, json};

use super::config::PayloadsConfig;

/// Longest `custom_meta.identifier` (xumm's limit).
pub const MAX_IDENTIFIER_CHARS: usize = 40;
/// Longest `custom_meta.instruction`.
pub const MAX_INSTRUCTION_CHARS: usize = 280;
/// Longest `options.return_url.app` / `.web`.
pub const MAX_RETURN_URL_CHARS: usize = 2048;
/// Longest `user_token`, `txid`, `account` and `TransactionType`.
pub const MAX_TOKEN_CHARS: usize = 128;

/// Where a payload is in its life. Only `Pending` changes, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Resolved,
    Cancelled,
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Resolved => "resolved",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "resolved" => State::Resolved,
            "cancelled" => State::Cancelled,
            "expired" => State::Expired,
            _ => return None,
        })
    }
}

/// A change of a payload that sockets and callbacks hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    Resolved,
    Cancelled,
    Expired,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Resolved => "resolved",
            Change::Cancelled => "cancelled",
            Change::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Change> {
        Some(match text {
            "opened" => Change::Opened,
            "resolved" => Change::Resolved,
            "cancelled" => Change::Cancelled,
            "expired" => Change::Expired,
            _ => return None,
        })
    }

    /// The app-level event (callback type) of this change; opening has none.
    pub fn callback_event(self) -> Option<&'static str> {
        match self {
            Change::Opened => None,
            Change::Resolved => Some("payload.resolved"),
            Change::Cancelled => Some("payload.cancelled"),
            Change::Expired => Some("payload.expired"),
        }
    }
}

/// One payload, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub uuid: String,
    pub app_id: String,
    /// `reference_call_uuidv4`: a second random id, shown in the resolve message.
    pub reference_uuid: String,
    pub tx_type: String,
    /// The transaction as the app sent it (JSON text).
    pub request_json: String,
    /// The app's options (JSON object text): `submit`, `return_url`, …
    pub options: String,
    /// `{identifier, blob, instruction}` (JSON object text).
    pub custom_meta: String,
    /// The user token the app asked to push the request to.
    pub user_token: Option<String>,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    pub expires_at: i64,
    pub state: State,
    pub opened_at: Option<i64>,
    pub opened_by_deeplink: Option<bool>,
    pub signed: Option<bool>,
    pub txid: Option<String>,
    pub account: Option<String>,
    /// The user token the signing side issued on resolution.
    pub issued_user_token: Option<String>,
    /// When it was resolved, cancelled or expired.
    pub finished_at: Option<i64>,
}

/// Seconds from `now_ms` to `at_ms`, rounded down (negative once past).
pub fn seconds_until(at_ms: i64, now_ms: i64) -> i64 {
    (at_ms - now_ms).div_euclid(1000)
}

impl Payload {
    pub fn is_opened(&self) -> bool {
        self.opened_at.is_some()
    }

    /// Expired for good: never opened before its expiry (or cancelled, which xumm marks
    /// expired too). An opened payload past its expiry can still be resolved.
    pub fn is_expired(&self) -> bool {
        matches!(self.state, State::Expired | State::Cancelled)
    }

    /// Unopened and past its expiry, though no timer has marked it yet.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.state == State::Pending && !self.is_opened() && self.expires_at <= now_ms
    }

    fn options_value(&self) -> Map<String, Value> {
        serde_json::from_str(&self.options).unwrap_or_default()
    }

    fn custom_meta_value(&self) -> Value {
        serde_json::from_str(&self.custom_meta)
            .unwrap_or_else(|_| json!({"identifier": null, "blob": null, "instruction": null}))
    }

    fn identifier(&self) -> Option<String> {
        self.custom_meta_value()
            .get("identifier")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// `options.return_url.{which}` with xumm's placeholders filled in: `{id}` the
    /// payload's uuid, `{cid}` the custom identifier, `{txid}` the signed transaction.
    pub fn return_url(&self, which: &str) -> Option<String> {
        let options = self.options_value();
        let template = options.get("return_url")?.get(which)?.as_str()?;
        Some(
            template
                .replace("{id}", &self.uuid)
                .replace("{cid}", &self.identifier().unwrap_or_default())
                .replace("{txid}", self.txid.as_deref().unwrap_or("")),
        )
    }

    fn option_bool(&self, name: &str) -> Option<bool> {
        self.options_value().get(name).and_then(Value::as_bool)
    }

    /// What `GET /api/v1/platform/payload/{uuid}` answers (and a callback carries).
    pub fn details(&self, app_key: &str, now_ms: i64) -> Value {
        let request: Value = serde_json::from_str(&self.request_json).unwrap_or(Value::Null);
        let destination = request
            .get("Destination")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let destination_tag = request
            .get("DestinationTag")
            .filter(|t| t.is_u64())
            .cloned()
            .unwrap_or(Value::Null);
        let resolved = self.state == State::Resolved;
        json!({
            "meta": self.meta(&destination),
            "application": {
                "name": self.app_id,
                "description": "",
                "disabled": 0,
                "uuidv4": app_key,
                "icon_url": "",
                "issued_user_token": self.issued_user_token,
            },
            "payload": {
                "tx_type": self.tx_type,
                "tx_destination": destination,
                "tx_destination_tag": destination_tag,
                "request_json": request,
                "origintype": null,
                "signmethod": null,
                "created_at": rfc3339(self.created_at),
                "expires_at": rfc3339(self.expires_at),
                "expires_in_seconds": seconds_until(self.expires_at, now_ms),
            },
            "response": {
                "hex": null,
                "txid": self.txid,
                "resolved_at": if resolved { self.finished_at.map(rfc3339) } else { None },
                "dispatched_nodetype": null,
                "dispatched_to": null,
                "dispatched_result": null,
                "dispatched_to_node": null,
                "environment_nodeuri": null,
                "environment_nodetype": null,
                "environment_networkid": null,
                "multisign_account": null,
                "account": self.account,
                "signer": self.account,
                "user": null,
            },
            "custom_meta": self.custom_meta_value(),
        })
    }

    /// `meta` of the GET and DELETE answers.
    pub fn meta(&self, destination: &str) -> Value {
        json!({
            "exists": true,
            "uuid": self.uuid,
            "multisign": self.option_bool("multisign").unwrap_or(false),
            "submit": self.option_bool("submit").unwrap_or(true),
            "pathfinding": self.option_bool("pathfinding").unwrap_or(false),
            "pathfinding_fallback": self.option_bool("pathfinding_fallback").unwrap_or(false),
            "destination": destination,
            "resolved_destination": destination,
            "resolved": self.state == State::Resolved,
            "signed": self.signed.unwrap_or(false),
            "cancelled": self.state == State::Cancelled,
            "expired": self.is_expired(),
            "pushed": false,
            "app_opened": self.is_opened(),
            "opened_by_deeplink": self.opened_by_deeplink,
            "return_url_app": self.return_url("app"),
            "return_url_web": self.return_url("web"),
            "is_xapp": false,
            "signers": null,
        })
    }

    /// The resolve message, exactly as seed 001 shows it.
    pub fn resolve_message(&self) -> Value {
        json!({
            "payload_uuidv4": self.uuid,
            "reference_call_uuidv4": self.reference_uuid,
            "return_url": {"app": self.return_url("app"), "web": self.return_url("web")},
            "signed": self.signed.unwrap_or(false),
            "opened_by_deeplink": self.opened_by_deeplink.unwrap_or(false),
            "user_token": self.issued_user_token.is_some(),
            "custom_meta": self.custom_meta_value(),
            "txid": self.txid,
        })
    }

    /// The socket message that announces `change`.
    pub fn socket_message(&self, change: Change) -> Value {
        match change {
            Change::Opened => json!({"opened": true}),
            Change::Resolved => self.resolve_message(),
            // xumm marks a cancelled payload expired: a subscriber waiting for the end
            // hears of it the same way.
            Change::Cancelled | Change::Expired => json!({"expired": true}),
        }
    }
}

/// RFC 3339 in UTC, seconds (`2026-11-25T16:47:30Z`), as xumm writes its dates.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// A create request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPayload {
    pub tx_type: String,
    pub request_json: String,
    pub options: String,
    pub custom_meta: String,
    pub user_token: Option<String>,
    pub expire_ms: i64,
}

/// Why a create body is refused: 400, or 413 for a size limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> BodyError {
    BodyError {
        status: 400,
        message: message.into(),
    }
}

fn too_large(message: impl Into<String>) -> BodyError {
    BodyError {
        status: 413,
        message: message.into(),
    }
}

/// A string field: absent or null is `None`; anything but a string of at most `max`
/// characters without control characters is refused.
fn optional_string(
    value: Option<&Value>,
    name: &str,
    max: usize,
) -> Result<Option<String>, BodyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                return Err(bad(format!("`{name}` is longer than {max} characters")));
            }
            if s.chars().any(|c| c.is_control() && c != '\n') {
                return Err(bad(format!("`{name}` contains control characters")));
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(bad(format!("`{name}` must be a string"))),
    }
}

/// Parses a create body as xumm-sdk sends it: `{txjson, options?, custom_meta?,
/// user_token?}`, or a bare transaction (`{"TransactionType": …}`). Unknown fields are
/// ignored; known ones of the wrong type, out of range or over a limit are refused.
pub fn parse_create(body: &[u8], limits: &PayloadsConfig) -> Result<NewPayload, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(too_large(format!(
            "The body is {} bytes, over the limit of {}",
            body.len(),
            limits.max_body_bytes
        )));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("The body is not JSON: {e}")))?;
    let Value::Object(mut body) = value else {
        return Err(bad("The body must be a JSON object"));
    };
    let txjson = match body.remove("txjson") {
        Some(Value::Object(tx)) => tx,
        Some(_) => return Err(bad("`txjson` must be a JSON object")),
        None if body.contains_key("TransactionType") => std::mem::take(&mut body),
        None if body.contains_key("txblob") => {
            return Err(bad(
                "`txblob` is not supported: send the transaction as `txjson`",
            ));
        }
        None => return Err(bad("Missing `txjson`")),
    };
    let tx_type = match txjson.get("TransactionType") {
        Some(Value::String(t))
            if !t.is_empty()
                && t.len() <= MAX_TOKEN_CHARS
                && t.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            t.clone()
        }
        _ => {
            return Err(bad(
                "`txjson.TransactionType` must be a transaction type name such as \"Payment\"",
            ));
        }
    };
    let request_json = Value::Object(txjson).to_string();
    if request_json.len() > limits.max_txjson_bytes {
        return Err(too_large(format!(
            "`txjson` is {} bytes, over the limit of {}",
            request_json.len(),
            limits.max_txjson_bytes
        )));
    }
    let (options, expire_ms) = parse_options(body.get("options"), limits)?;
    let custom_meta = parse_custom_meta(body.get("custom_meta"), limits)?;
    let user_token = optional_string(body.get("user_token"), "user_token", MAX_TOKEN_CHARS)?;
    Ok(NewPayload {
        tx_type,
        request_json,
        options: Value::Object(options).to_string(),
        custom_meta: custom_meta.to_string(),
        user_token,
        expire_ms,
    })
}

/// `options`: the flags xumm knows are kept (booleans only), `expire` (minutes, may be
/// fractional) becomes the expiry, `return_url {app, web}` is kept.
fn parse_options(
    value: Option<&Value>,
    limits: &PayloadsConfig,
) -> Result<(Map<String, Value>, i64), BodyError> {
    let mut kept = Map::new();
    let mut expire_ms = limits.default_expire_secs as i64 * 1000;
    let options = match value {
        None | Some(Value::Null) => return Ok((kept, expire_ms)),
        Some(Value::Object(options)) => options,
        Some(_) => return Err(bad("`options` must be a JSON object")),
    };
    for flag in ["submit", "multisign", "pathfinding", "pathfinding_fallback"] {
        match options.get(flag) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                kept.insert(flag.into(), Value::Bool(*b));
            }
            Some(_) => return Err(bad(format!("`options.{flag}` must be true or false"))),
        }
    }
    match options.get("expire") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            let minutes = n.as_f64().unwrap_or(f64::NAN);
            let max_minutes = limits.max_expire_secs as f64 / 60.0;
            let ms = (minutes * 60_000.0).round();
            if !(ms >= 1000.0 && minutes <= max_minutes) {
                return Err(bad(format!(
                    "`options.expire` is in minutes and must be from 1/60 (one second) to {max_minutes}"
                )));
            }
            expire_ms = ms as i64;
        }
        Some(_) => return Err(bad("`options.expire` must be a number of minutes")),
    }
    match options.get("return_url") {
        None | Some(Value::Null) => {}
        Some(Value::Object(urls)) => {
            let mut kept_urls = Map::new();
            for which in ["app", "web"] {
                let name = format!("options.return_url.{which}");
                if let Some(url) = optional_string(urls.get(which), &name, MAX_RETURN_URL_CHARS)? {
                    kept_urls.insert(which.into(), Value::String(url));
                }
            }
            kept.insert("return_url".into(), Value::Object(kept_urls));
        }
        Some(_) => return Err(bad("`options.return_url` must be {\"app\", \"web\"}")),
    }
    Ok((kept, expire_ms))
}

/// `custom_meta {identifier, blob, instruction}`, always with the three keys.
fn parse_custom_meta(value: Option<&Value>, limits: &PayloadsConfig) -> Result<Value, BodyError> {
    let empty = Map::new();
    let meta = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(meta)) => meta,
        Some(_) => return Err(bad("`custom_meta` must be a JSON object")),
    };
    let identifier = optional_string(
        meta.get("identifier"),
        "custom_meta.identifier",
        MAX_IDENTIFIER_CHARS,
    )?;
    let instruction = optional_string(
        meta.get("instruction"),
        "custom_meta.instruction",
        MAX_INSTRUCTION_CHARS,
    )?;
    let blob = match meta.get("blob") {
        None | Some(Value::Null) => Value::Null,
        Some(blob @ (Value::Object(_) | Value::Array(_))) => {
            let size = blob.to_string().len();
            if size > limits.max_blob_bytes {
                return Err(too_large(format!(
                    "`custom_meta.blob` is {size} bytes, over the limit of {}",
                    limits.max_blob_bytes
                )));
            }
            blob.clone()
        }
        Some(_) => return Err(bad("`custom_meta.blob` must be a JSON object")),
    };
    Ok(json!({"identifier": identifier, "blob": blob, "instruction": instruction}))
}

/// `POST /v1/payloads/{uuid}/resolve`: what the signing side reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub signed: bool,
    pub txid: Option<String>,
    pub account: Option<String>,
    pub user_token: Option<String>,
}

/// Parses a resolve body `{"signed", "txid"?, "account"?, "user_token"?}`.
pub fn parse_resolution(body: &[u8]) -> Result<Resolution, BodyError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("The body is not JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(bad("The body must be a JSON object"));
    };
    let signed = match body.get("signed") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(bad("`signed` (true or false) is required")),
    };
    let txid = optional_string(body.get("txid"), "txid", MAX_TOKEN_CHARS)?;
    let account = optional_string(body.get("account"), "account", MAX_TOKEN_CHARS)?;
    let user_token = optional_string(body.get("user_token"), "user_token", MAX_TOKEN_CHARS)?;
    Ok(Resolution {
        signed,
        txid,
        account,
        user_token,
    })
}

/// Parses an opened body `{"opened_by_deeplink"?}` (an empty body is `false`).
pub fn parse_opened(body: &[u8]) -> Result<bool, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("The body is not JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(bad("The body must be a JSON object"));
    };
    match body.get("opened_by_deeplink") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad("`opened_by_deeplink` must be true or false")),
    }
}

/// A payload uuid as the routes take it: a UUID in its hyphenated form, any case;
/// answered lower-case.
pub fn parse_uuid(text: &str) -> Option<String> {
    if text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PayloadsConfig {
        PayloadsConfig::default()
    }

    #[test]
    fn sdk_bodies_and_bare_transactions_are_accepted() {
        let body = br#"{"txjson":{"TransactionType":"Payment","Destination":"rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY","Amount":"1000"},
            "options":{"expire":5,"submit":false,"return_url":{"app":"https://shop/{id}","web":null}},
            "custom_meta":{"identifier":"order-1","blob":{"cart":[1,2]},"instruction":"Pay"},
            "user_token":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee","surprise":1}"#;
        let new = parse_create(body, &limits()).unwrap();
        assert_eq!(new.tx_type, "Payment");
        assert_eq!(new.expire_ms, 300_000);
        let options: Value = serde_json::from_str(&new.options).unwrap();
        assert_eq!(
            options,
            json!({"submit": false, "return_url": {"app": "https://shop/{id}"}})
        );
        let meta: Value = serde_json::from_str(&new.custom_meta).unwrap();
        assert_eq!(meta["blob"], json!({"cart": [1, 2]}));

        let bare = parse_create(br#"{"TransactionType":"SignIn"}"#, &limits()).unwrap();
        assert_eq!(bare.tx_type, "SignIn");
        assert_eq!(bare.expire_ms, 86_400_000);
        let meta: Value = serde_json::from_str(&bare.custom_meta).unwrap();
        assert_eq!(
            meta,
            json!({"identifier": null, "blob": null, "instruction": null})
        );
        // Fractional minutes: tests and kiosks want short expiries.
        let short = parse_create(
            br#"{"txjson":{"TransactionType":"SignIn"},"options":{"expire":0.05}}"#,
            &limits(),
        )
        .unwrap();
        assert_eq!(short.expire_ms, 3000);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        let limits = limits();
        let refused = |body: &str| parse_create(body.as_bytes(), &limits).unwrap_err();
        for body in [
            "",
            "[]",
            "{}",
            r#"{"txblob":"1200"}"#,
            r#"{"txjson":"Payment"}"#,
            r#"{"txjson":{"TransactionType":""}}"#,
            r#"{"txjson":{"TransactionType":"Pay ment"}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"expire":0}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"expire":-5}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"expire":100000}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"expire":"5"}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"submit":"yes"}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"options":{"return_url":"x"}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"custom_meta":{"blob":"text"}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"custom_meta":{"identifier":7}}"#,
            r#"{"txjson":{"TransactionType":"SignIn"},"user_token":{}}"#,
        ] {
            assert_eq!(refused(body).status, 400, "{body}");
        }
        let identifier = "x".repeat(41);
        let body = format!(
            r#"{{"txjson":{{"TransactionType":"SignIn"}},"custom_meta":{{"identifier":"{identifier}"}}}}"#
        );
        assert_eq!(refused(&body).status, 400);
        let blob = "x".repeat(3000);
        let body = format!(
            r#"{{"txjson":{{"TransactionType":"SignIn"}},"custom_meta":{{"blob":{{"b":"{blob}"}}}}}}"#
        );
        let error = refused(&body);
        assert_eq!(error.status, 413);
        assert!(
            error.message.contains("custom_meta.blob"),
            "{}",
            error.message
        );
        let big = format!(
            r#"{{"TransactionType":"SignIn","Memo":"{}"}}"#,
            "x".repeat(40_000)
        );
        assert_eq!(refused(&big).status, 413);
    }

    fn payload() -> Payload {
        Payload {
            uuid: "0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab".into(),
            app_id: "1".into(),
            reference_uuid: "11111111-2222-4333-8444-555555555555".into(),
            tx_type: "Payment".into(),
            request_json:
                r#"{"TransactionType":"Payment","Destination":"rDest","DestinationTag":7}"#.into(),
            options: r#"{"return_url":{"app":"app://done/{id}?tx={txid}&c={cid}"}}"#.into(),
            custom_meta: r#"{"identifier":"order-1","blob":{"a":1},"instruction":"Pay"}"#.into(),
            user_token: None,
            created_at: 1_764_089_250_000,
            expires_at: 1_764_089_310_000,
            state: State::Resolved,
            opened_at: Some(1_764_089_260_000),
            opened_by_deeplink: Some(true),
            signed: Some(true),
            txid: Some("ABCDEF".into()),
            account: Some("rSigner".into()),
            issued_user_token: Some("token-1".into()),
            finished_at: Some(1_764_089_270_000),
        }
    }

    #[test]
    fn the_resolve_message_is_the_seeds() {
        let message = payload().resolve_message();
        assert_eq!(
            message,
            json!({
                "payload_uuidv4": "0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab",
                "reference_call_uuidv4": "11111111-2222-4333-8444-555555555555",
                "return_url": {"app": "app://done/0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab?tx=ABCDEF&c=order-1", "web": null},
                "signed": true,
                "opened_by_deeplink": true,
                "user_token": true,
                "custom_meta": {"identifier": "order-1", "blob": {"a": 1}, "instruction": "Pay"},
                "txid": "ABCDEF",
            })
        );
    }

    #[test]
    fn details_have_the_sdk_shape() {
        let details = payload().details("app-key", 1_764_089_300_500);
        assert_eq!(
            details["meta"]["uuid"],
            "0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab"
        );
        assert_eq!(details["meta"]["resolved"], true);
        assert_eq!(details["meta"]["expired"], false);
        assert_eq!(details["meta"]["destination"], "rDest");
        assert_eq!(details["payload"]["tx_destination_tag"], 7);
        assert_eq!(details["payload"]["expires_in_seconds"], 9);
        assert_eq!(details["payload"]["created_at"], "2025-11-25T16:47:30Z");
        assert_eq!(details["response"]["resolved_at"], "2025-11-25T16:47:50Z");
        assert_eq!(details["response"]["account"], "rSigner");
        assert_eq!(details["application"]["uuidv4"], "app-key");
        assert_eq!(seconds_until(1000, 2500), -2);
    }

    #[test]
    fn resolve_and_opened_bodies() {
        assert_eq!(
            parse_resolution(br#"{"signed":false}"#).unwrap(),
            Resolution {
                signed: false,
                txid: None,
                account: None,
                user_token: None
            }
        );
        assert!(parse_resolution(br#"{"txid":"A"}"#).is_err());
        assert!(parse_resolution(br#"{"signed":"yes"}"#).is_err());
        assert_eq!(parse_opened(b""), Ok(false));
        assert_eq!(parse_opened(br#"{"opened_by_deeplink":true}"#), Ok(true));
        assert!(parse_opened(b"[]").is_err());
        assert!(parse_opened(br#"{"opened_by_deeplink":1}"#).is_err());
    }

    #[test]
    fn uuids_are_canonical() {
        assert_eq!(
            parse_uuid("0F1E2D3C-AAAA-4BBB-8CCC-0123456789AB").as_deref(),
            Some("0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab")
        );
        assert_eq!(parse_uuid("0f1e2d3caaaa4bbb8ccc0123456789ab"), None);
        assert_eq!(parse_uuid("{0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab}"), None);
        assert_eq!(parse_uuid("../etc"), None);
    }
}
