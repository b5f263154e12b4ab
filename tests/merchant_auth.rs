//! `POST /v1/websocket/auth` (seed 000): JWT + API key in, Pusher signature out.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const JWT_SECRET: &str = "merchant-jwt-secret-0123456789";

const CONFIG: &str = r#"
bind = "127.0.0.1:0"
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
[apps.jwt]
algorithm = "HS256"
secret = "merchant-jwt-secret-0123456789"
"#;

fn jwt(merchant: &str, exp_offset: i64) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &json!({"merchant_id": merchant, "exp": now() + exp_offset}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

async fn auth(server: &TestServer, token: &str, key: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(token)
        .header("x-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_merchant_gets_a_signature_that_subscribes_to_its_own_channel_only() {
    let server = TestServer::with_config(CONFIG).await;
    let store = &server.merchants().store;
    let key = store.create_key("1", "merchant_001").await.unwrap();
    let other = store.create_key("1", "merchant_002").await.unwrap();
    let token = jwt("merchant_001", 60);

    let (mut client, socket_id) = server.connect_established().await;
    let channel = "private-merchant.merchant_001";
    let (status, body) = auth(
        &server,
        &token,
        &key.api_key,
        json!({"socket_id": socket_id, "channel_name": channel}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let signature = body["auth"].as_str().unwrap();
    assert!(signature.starts_with("app-key:"), "{body}");
    client.subscribe_with(channel, signature, None).await;
    client.event("pusher_internal:subscription_succeeded").await;

    // Another merchant's channel: 403.
    let (status, body) = auth(
        &server,
        &token,
        &key.api_key,
        json!({"socket_id": socket_id, "channel_name": "private-payments.merchant_002"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("merchant_001"),
        "{body}"
    );

    // Presence: the merchant is the member.
    let (status, body) = auth(
        &server,
        &token,
        &key.api_key,
        json!({"socket_id": socket_id, "channel_name": "presence-payments.merchant_001"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["channel_data"], r#"{"user_id":"merchant_001"}"#);

    // Credentials that disagree, expire, are revoked or are missing: 401.
    let ok_body = json!({"socket_id": socket_id, "channel_name": channel});
    assert_eq!(
        auth(&server, &token, &other.api_key, ok_body.clone())
            .await
            .0,
        401,
        "wrong-merchant key"
    );
    assert_eq!(
        auth(
            &server,
            &jwt("merchant_001", -120),
            &key.api_key,
            ok_body.clone()
        )
        .await
        .0,
        401,
        "expired"
    );
    assert_eq!(
        auth(&server, &token, "prk_unknown", ok_body.clone())
            .await
            .0,
        401,
        "unknown key"
    );
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&json!({"merchant_id":"merchant_001","exp": now()+60}).to_string())
    );
    let (status, body) = auth(&server, &none, &key.api_key, ok_body.clone()).await;
    assert_eq!(status, 401, "alg none");
    assert!(body["error"].as_str().unwrap().contains("none"), "{body}");
    store.revoke_key("1", &key.key_id).await.unwrap();
    assert_eq!(
        auth(&server, &token, &key.api_key, ok_body).await.0,
        401,
        "revoked"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_422() {
    let server = TestServer::with_config(CONFIG).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let token = jwt("m1", 60);
    let (status, _) = auth(
        &server,
        &token,
        &key.api_key,
        json!({"channel_name": "private-merchant.m1"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = auth(
        &server,
        &token,
        &key.api_key,
        json!({"socket_id": "abc", "channel_name": "private-merchant.m1"}),
    )
    .await;
    assert_eq!(status, 422);
    // A channel name that is no channel name: 400, whoever asks.
    let long = format!("private-merchant.{}", "m".repeat(200));
    for channel in [
        "",
        "private-merchant.m1 x",
        "private-merchant.m1\u{e9}",
        long.as_str(),
    ] {
        let (status, body) = auth(
            &server,
            &token,
            &key.api_key,
            json!({"socket_id": "1.2", "channel_name": channel}),
        )
        .await;
        assert_eq!(status, 400, "{channel:?}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid channel_name"),
            "{body}"
        );
    }
    let response = http()
        .post(server.url("/v1/websocket/auth"))
        .json(&json!({"socket_id": "1.2", "channel_name": "private-merchant.m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    // Each refusal above is counted under its reason, by value (exact under nextest, one
    // process per test; a lower bound under `cargo test`, which shares the registry).
    let exact = std::env::var_os("NEXTEST").is_some();
    for (reason, count) in [
        ("malformed_body", 1.0),
        ("bad_socket_id", 1.0),
        ("bad_channel", 4.0),
        ("missing_credentials", 1.0),
    ] {
        let series = format!("payrelay_merchant_auth_refused_total{{reason=\"{reason}\"}}");
        let value = server.metric(&series).await;
        if exact {
            assert_eq!(value, count, "{series}");
        } else {
            assert!(value >= count, "{series}: {value}");
        }
    }
}

#[tokio::test]
async fn the_form_body_pusher_js_sends_is_accepted() {
    let server = TestServer::with_config(CONFIG).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let response = http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(jwt("m1", 60))
        .header("x-api-key", &key.api_key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("socket_id=123.456&channel_name=private-payments.m1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    let expected = private_auth("123.456", "private-payments.m1");
    assert_eq!(body["auth"], expected);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Issue 12 item 15: the README's own example id (`957523923.7566984777`, whose second half
/// does not fit 32 bits) and any other `digits.digits` a Pusher client can hold are signed;
/// what is not one, or is absurdly long, is refused.
#[tokio::test]
async fn any_digits_dot_digits_socket_id_is_signed() {
    let server = TestServer::with_config(CONFIG).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let token = jwt("m1", 60);
    let channel = "private-merchant.m1";
    for socket_id in [
        "957523923.7566984777",
        "123.456",
        "0.0",
        "18446744073709551615.18446744073709551615",
    ] {
        let (status, body) = auth(
            &server,
            &token,
            &key.api_key,
            json!({"socket_id": socket_id, "channel_name": channel}),
        )
        .await;
        assert_eq!(status, 200, "{socket_id}: {body}");
        assert_eq!(
            body["auth"],
            private_auth(socket_id, channel),
            "{socket_id}"
        );
    }
    let too_long = format!("{}.1", "9".repeat(21));
    for socket_id in ["1.2.3", "1.", ".1", "1x.2", " 1.2", too_long.as_str()] {
        let (status, body) = auth(
            &server,
            &token,
            &key.api_key,
            json!({"socket_id": socket_id, "channel_name": channel}),
        )
        .await;
        assert_eq!(status, 422, "{socket_id}: {body}");
    }
}

/// Issue 12 item 14, end to end: with `issuer` and `audience` configured, a JWT must carry
/// both, with those values.
#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_in_the_jwt() {
    let config = format!("{CONFIG}issuer = \"https://api.example\"\naudience = \"payrelay\"\n");
    let server = TestServer::with_config(&config).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let body = json!({"socket_id": "1.2", "channel_name": "private-merchant.m1"});
    let signed = |claims: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let exp = now() + 60;
    let good = signed(
        json!({"merchant_id": "m1", "exp": exp, "iss": "https://api.example", "aud": "payrelay"}),
    );
    assert_eq!(
        auth(&server, &good, &key.api_key, body.clone()).await.0,
        200
    );
    for (claims, why) in [
        (
            json!({"merchant_id": "m1", "exp": exp, "aud": "payrelay"}),
            "no `iss`",
        ),
        (
            json!({"merchant_id": "m1", "exp": exp, "iss": "https://api.example"}),
            "no `aud`",
        ),
        (
            json!({"merchant_id": "m1", "exp": exp, "iss": "https://api.example", "aud": "other"}),
            "audience",
        ),
        (
            json!({"merchant_id": "m1", "exp": exp, "iss": "https://evil", "aud": "payrelay"}),
            "issuer",
        ),
    ] {
        let (status, reply) = auth(&server, &signed(claims), &key.api_key, body.clone()).await;
        assert_eq!(status, 401, "{why}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(why),
            "{why}: {reply}"
        );
    }
}

/// A 32-byte master key, base64 (`openssl rand -base64 32`); test-only.
const MASTER_KEY: &str = "dGhpcyBpcyBhIHRlc3Qgb25seSBtYXN0ZXIga2V5ISE=";

/// Issue 12 item 12: `private-encrypted-merchant.*` channels get Pusher's `shared_secret`,
/// base64(SHA-256(channel name + master key)), so pusher-js can decrypt what the backend
/// encrypted with the same master key. Without a master key the app cannot serve them,
/// and signing them anyway would only hand out a subscription that never decrypts.
#[tokio::test]
async fn encrypted_merchant_channels_get_the_shared_secret() {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let b64 = base64::engine::general_purpose::STANDARD;
    let config = CONFIG.replace(
        "secret = \"app-secret\"",
        &format!("secret = \"app-secret\"\nencryption_master_key_base64 = \"{MASTER_KEY}\""),
    );
    let server = TestServer::with_config(&config).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let channel = "private-encrypted-merchant.m1";
    let body = json!({"socket_id": "123.456", "channel_name": channel});
    let (status, answer) = auth(&server, &jwt("m1", 60), &key.api_key, body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["auth"], private_auth("123.456", channel));
    let mut material = channel.as_bytes().to_vec();
    material.extend(b64.decode(MASTER_KEY).unwrap());
    let expected = b64.encode(Sha256::digest(&material));
    assert_eq!(answer["shared_secret"], expected, "{answer}");
    // Other merchants' encrypted channels stay theirs.
    let (status, _) = auth(
        &server,
        &jwt("m1", 60),
        &key.api_key,
        json!({"socket_id": "123.456", "channel_name": "private-encrypted-merchant.m2"}),
    )
    .await;
    assert_eq!(status, 403);
    // Plain private channels carry no shared secret.
    let (_, answer) = auth(
        &server,
        &jwt("m1", 60),
        &key.api_key,
        json!({"socket_id": "123.456", "channel_name": "private-merchant.m1"}),
    )
    .await;
    assert!(answer.get("shared_secret").is_none(), "{answer}");

    // An app without a master key refuses encrypted channels instead of signing them.
    let server = TestServer::with_config(CONFIG).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "m1")
        .await
        .unwrap();
    let (status, answer) = auth(&server, &jwt("m1", 60), &key.api_key, body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("encryption_master_key_base64"),
        "{answer}"
    );
}

#[test]
fn a_master_key_must_be_32_bytes_of_base64() {
    let with = |value: &str| {
        payrelay::config::Config::parse(&CONFIG.replace(
            "secret = \"app-secret\"",
            &format!("secret = \"app-secret\"\nencryption_master_key_base64 = \"{value}\""),
        ))
    };
    assert!(with(MASTER_KEY).is_ok());
    for bad in [
        "c2hvcnQ=",
        "not base64!",
        "dGhpcyBpcyBhIHRlc3Qgb25seSBtYXN0ZXIga2V5ISEh",
    ] {
        let err = with(bad).unwrap_err().to_string();
        assert!(
            err.starts_with("apps[0].encryption_master_key_base64"),
            "{err}"
        );
        assert!(!err.contains(bad), "the key is not echoed: {err}");
    }
}

/// `[socket_id, channel_name]` is not a body pusher-js or any client sends: serde would
/// read it as one, so the route checks for an object first.
#[tokio::test]
async fn an_auth_body_must_be_a_json_object() {
    let server = TestServer::with_config(CONFIG).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "merchant_001")
        .await
        .unwrap();
    let (_, socket_id) = server.connect_established().await;
    let (status, body) = auth(
        &server,
        &jwt("merchant_001", 60),
        &key.api_key,
        json!([socket_id, "private-merchant.merchant_001"]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("not a JSON object"), "{body}");
}
