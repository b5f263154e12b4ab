//! The app backend's side of merchant accounts: the key admin API and CLI, `/v1/events`,
//! failed-attempt throttling. (JWT keys from a JWKS URL: `tests/jwks.rs`.)

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const JWT_SECRET: &str = "merchant-jwt-secret-0123456789";

fn config(extra: &str) -> String {
    format!(
        r#"
bind = "127.0.0.1:0"
{extra}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[apps.jwt]
algorithm = "HS256"
secret = "{JWT_SECRET}"
[[apps]]
id = "2"
key = "other-key"
secret = "other-secret"
"#
    )
}

fn jwt(merchant: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"merchant_id": merchant, "exp": now() + 60}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn merchant_auth(server: &TestServer, token: &str, api_key: &str, channel: &str) -> u16 {
    http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(token)
        .header("x-api-key", api_key)
        .json(&json!({"socket_id": "1.2", "channel_name": channel}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_through_the_admin_api() {
    let server = TestServer::with_config(&config("")).await;

    // HTTP Basic with the app's key and secret (curl -u app-key:app-secret).
    let (status, created) = server
        .basic_request("POST", "/apps/1/merchants/merchant_001/keys", None)
        .await;
    assert_eq!(status, 201, "{created}");
    let api_key = created["api_key"].as_str().unwrap().to_string();
    let key_id = created["key_id"].as_str().unwrap().to_string();
    assert!(api_key.starts_with("prk_"));
    assert_eq!(
        merchant_auth(
            &server,
            &jwt("merchant_001"),
            &api_key,
            "private-merchant.merchant_001"
        )
        .await,
        200
    );

    // Pusher request signing works too; listings never show the key.
    let (status, listed) = server
        .api("GET", "/apps/1/merchants/merchant_001/keys", &[], None)
        .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["keys"][0]["key_id"], key_id.as_str());
    assert!(!listed.to_string().contains(&api_key), "{listed}");
    let (_, all) = server.basic_request("GET", "/apps/1/keys", None).await;
    assert_eq!(all["keys"].as_array().unwrap().len(), 1);

    // Revocation applies at once, without a restart.
    let (status, revoked) = server
        .api("DELETE", &format!("/apps/1/keys/{key_id}"), &[], None)
        .await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["merchant_id"], "merchant_001");
    assert_eq!(
        merchant_auth(
            &server,
            &jwt("merchant_001"),
            &api_key,
            "private-merchant.merchant_001"
        )
        .await,
        401
    );
    let (status, _) = server
        .basic_request("DELETE", &format!("/apps/1/keys/{key_id}"), None)
        .await;
    assert_eq!(status, 404, "a revoked key cannot be revoked again");

    // Wrong secret, another app's credentials, no credentials, a bad merchant id.
    let status = http()
        .post(server.url("/apps/1/merchants/m/keys"))
        .basic_auth("app-key", Some("wrong-secret"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    let status = http()
        .post(server.url("/apps/1/merchants/m/keys"))
        .basic_auth("other-key", Some("other-secret"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401, "app 2's credentials cannot manage app 1");
    let (status, _) = server
        .raw_request("POST", "/apps/1/merchants/m/keys", Vec::new())
        .await;
    assert_eq!(status, 401);
    let (status, body) = server
        .basic_request("POST", "/apps/1/merchants/bad.id/keys", None)
        .await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn v1_events_and_the_pusher_api_land_on_the_same_merchant_channel() {
    let server = TestServer::with_config(&config("")).await;
    let (mut client, socket_id) = server.connect_established().await;
    let channel = "private-payments.m1";
    client
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    client.event("pusher_internal:subscription_succeeded").await;

    let event = json!({"merchant_id": "m1", "kind": "payments", "event": "payment.updated", "data": {"status": "paid"}});
    let (status, reply) = server
        .basic_request("POST", "/v1/events", Some(&event))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["channel"], channel);
    let id = reply["id"].as_str().expect("the event's id");
    assert!(
        payrelay::core::EventId::parse(id).is_some(),
        "an evt_ id: {reply}"
    );
    let got = client.event("payment.updated").await;
    assert_eq!(got["channel"], channel);
    assert_eq!(got["data"], r#"{"status":"paid"}"#);

    // The same channel through the Pusher HTTP API.
    server.trigger(channel, "payment.refunded", "{}").await;
    assert_eq!(client.event("payment.refunded").await["channel"], channel);

    // Refusals: bad kind, reserved name, oversized data, no credentials.
    let bad_kind = json!({"merchant_id": "m1", "kind": "wallets", "event": "e", "data": {}});
    assert_eq!(
        server
            .basic_request("POST", "/v1/events", Some(&bad_kind))
            .await
            .0,
        400
    );
    let reserved =
        json!({"merchant_id": "m1", "kind": "payments", "event": "pusher:x", "data": {}});
    assert_eq!(
        server
            .basic_request("POST", "/v1/events", Some(&reserved))
            .await
            .0,
        400
    );
    let huge =
        json!({"merchant_id": "m1", "kind": "payments", "event": "e", "data": "x".repeat(20_000)});
    assert_eq!(
        server
            .basic_request("POST", "/v1/events", Some(&huge))
            .await
            .0,
        413
    );
    let (status, _) = server
        .raw_request("POST", "/v1/events", serde_json::to_vec(&event).unwrap())
        .await;
    assert_eq!(status, 401);
    client.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn failed_attempts_are_throttled_per_key_and_per_address() {
    let server = TestServer::with_config(&config("auth_failures_per_minute = 3")).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let good = jwt("m1");
    for _ in 0..3 {
        assert_eq!(
            merchant_auth(
                &server,
                &good,
                &key.api_key,
                "private-merchant.someone_else"
            )
            .await,
            403
        );
    }
    // The limit is reached: this key, from this address, waits (even with good
    // credentials); the address's count is the app's, and the key's its own.
    let response = http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(&good)
        .header("x-api-key", &key.api_key)
        .json(&json!({"socket_id": "1.2", "channel_name": "private-merchant.m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("Too many"),
        "{body}"
    );

    // Malformed requests do not count: a fresh node, three 400s, then a success.
    let server = TestServer::with_config(&config("auth_failures_per_minute = 3")).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    for _ in 0..4 {
        let status = http()
            .post(server.url("/v1/websocket/auth"))
            .bearer_auth(&good)
            .header("x-api-key", &key.api_key)
            .body("not json")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 400);
    }
    assert_eq!(
        merchant_auth(&server, &good, &key.api_key, "private-merchant.m1").await,
        200
    );
}

/// `POST /v1/websocket/auth` with these headers (`None`: header left out).
async fn auth_with(
    server: &TestServer,
    token: Option<&str>,
    api_key: Option<&str>,
    forwarded_for: Option<&str>,
) -> u16 {
    let mut request = http()
        .post(server.url("/v1/websocket/auth"))
        .json(&json!({"socket_id": "1.2", "channel_name": "private-merchant.m1"}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(key) = api_key {
        request = request.header("x-api-key", key);
    }
    if let Some(client) = forwarded_for {
        request = request.header("x-forwarded-for", client);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Issue 12 item 3, the review's case: 20 empty requests from one address gave every
/// merchant behind it 429 for the minute. Requests without credentials now count against
/// no one.
#[tokio::test]
async fn empty_requests_do_not_lock_out_a_merchant_behind_the_same_address() {
    let server = TestServer::with_config(&config("")).await; // the default limit, 20
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    for _ in 0..25 {
        assert_eq!(auth_with(&server, None, None, None).await, 401);
        assert_eq!(auth_with(&server, Some(&jwt("m1")), None, None).await, 401);
    }
    assert_eq!(
        auth_with(&server, Some(&jwt("m1")), Some(&key.api_key), None).await,
        200,
        "the merchant with a valid key is not locked out"
    );
}

/// Behind a trusted proxy each client counts alone: a guesser runs out, the merchant
/// behind the same proxy does not. The forwarding header of anyone else is ignored, so
/// rotating it does not dodge the count.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_counts_alone() {
    let server = TestServer::with_config(&config(
        "auth_failures_per_minute = 3\ntrusted_proxies = [\"127.0.0.0/8\"]",
    ))
    .await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let good = jwt("m1");
    let guesser = Some("203.0.113.7");
    for i in 0..3 {
        let guess = format!("prk_guess{i}");
        assert_eq!(
            auth_with(&server, Some(&good), Some(&guess), guesser).await,
            401
        );
    }
    assert_eq!(
        auth_with(&server, Some(&good), Some("prk_guess9"), guesser).await,
        429,
        "the guessing client is throttled"
    );
    let merchant = Some("198.51.100.9, 127.0.0.1");
    assert_eq!(
        auth_with(&server, Some(&good), Some(&key.api_key), merchant).await,
        200,
        "another client behind the same proxy is not"
    );

    // Without trusted proxies the header is the client's own word, and ignored.
    let server = TestServer::with_config(&config("auth_failures_per_minute = 3")).await;
    for i in 0..3 {
        let spoofed = format!("198.51.100.{i}");
        let guess = format!("prk_guess{i}");
        assert_eq!(
            auth_with(&server, Some(&good), Some(&guess), Some(&spoofed)).await,
            401
        );
    }
    assert_eq!(
        auth_with(&server, Some(&good), Some("prk_guess9"), Some("192.0.2.1")).await,
        429
    );
}

/// Failures are keyed on the credential and the app: a key whose JWTs keep failing runs
/// out from every address, while another app's merchant at the same address is not held.
#[tokio::test]
async fn a_failing_key_runs_out_everywhere_and_only_in_its_app() {
    let server = TestServer::with_config(&format!(
        r#"
bind = "127.0.0.1:0"
auth_failures_per_minute = 3
trusted_proxies = ["127.0.0.1"]
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[apps.jwt]
algorithm = "HS256"
secret = "{JWT_SECRET}"
[[apps]]
id = "2"
key = "other-key"
secret = "other-secret"
[apps.jwt]
algorithm = "HS256"
secret = "{JWT_SECRET}"
"#
    ))
    .await;
    let store = &server.merchants().store;
    let stolen = store.create_key("1", "m1").await.unwrap();
    let neighbour = store.create_key("2", "m1").await.unwrap();
    let other_in_app_1 = store.create_key("1", "m2").await.unwrap();
    let wrong_merchant = jwt("someone-else");
    for _ in 0..3 {
        assert_eq!(
            auth_with(&server, Some(&wrong_merchant), Some(&stolen.api_key), None).await,
            401
        );
    }
    assert_eq!(
        auth_with(
            &server,
            Some(&jwt("m1")),
            Some(&stolen.api_key),
            Some("192.0.2.50")
        )
        .await,
        429,
        "the key is spent, from any address"
    );
    assert_eq!(
        auth_with(&server, Some(&jwt("m1")), Some(&neighbour.api_key), None).await,
        200,
        "another app's merchant at the same address is not held"
    );
    assert_eq!(
        auth_with(
            &server,
            Some(&jwt("m2")),
            Some(&other_in_app_1.api_key),
            None
        )
        .await,
        429,
        "within app 1 the address is spent"
    );
}

/// RFC 7235 2.1: the authentication scheme is case-insensitive (`bearer`, `BASIC`).
#[tokio::test]
async fn authorization_schemes_are_case_insensitive() {
    use base64::Engine;
    let server = TestServer::with_config(&config("")).await;
    let basic = base64::engine::general_purpose::STANDARD.encode("app-key:app-secret");
    let response = http()
        .post(server.url("/apps/1/merchants/merchant_001/keys"))
        .header("authorization", format!("basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "lower-case basic");
    let created: Value = response.json().await.unwrap();
    let api_key = created["api_key"].as_str().unwrap();

    let response = http()
        .post(server.url("/v1/websocket/auth"))
        .header("authorization", format!("bearer {}", jwt("merchant_001")))
        .header("x-api-key", api_key)
        .json(&json!({"socket_id": "1.2", "channel_name": "private-merchant.merchant_001"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "lower-case bearer JWT");

    let response = http()
        .post(server.url("/v1/client-tokens"))
        .header("authorization", format!("BEARER {api_key}"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "upper-case bearer API key");
}

/// A route called with no credentials at all says which credentials it takes, instead of
/// naming one missing query parameter of one of them.
#[tokio::test]
async fn requests_without_credentials_are_told_what_the_route_takes() {
    let server = TestServer::with_config(&config("")).await;
    for (method, path) in [
        ("POST", "/apps/1/merchants/m/keys"),
        ("GET", "/apps/1/keys"),
        ("DELETE", "/apps/1/keys/key_x"),
        ("POST", "/v1/events"),
    ] {
        let (status, body) = server.raw_request(method, path, Vec::new()).await;
        assert_eq!(status, 401, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.starts_with("Missing credentials")
                && error.contains("HTTP Basic")
                && error.contains("signature"),
            "{path}: {error}"
        );
    }
    // The Pusher HTTP API takes a request signature only, as Pusher does.
    let (status, body) = server
        .raw_request("GET", "/apps/1/channels", Vec::new())
        .await;
    assert_eq!(status, 401, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("Missing credentials") && error.contains("Pusher request signature"),
        "{error}"
    );
    assert!(!error.contains("Basic"), "{error}");
    // A signature attempt missing one parameter is still told which.
    let (status, body) = server
        .raw_request("GET", "/apps/1/channels?auth_key=app-key", Vec::new())
        .await;
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("auth_signature"),
        "{body}"
    );
}
