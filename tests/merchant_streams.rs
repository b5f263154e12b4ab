//! Seed 000 as a merchant meets it on the wire: the wscat session against the sandbox,
//! the exchange-rates cache channel, and the Content-Type choice of frame format.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// The seed's own app key, so the transcript below reads like the seed's.
const SEED_KEY: &str = "pagCMLx6TXrb";
const JWT_SECRET: &str = "merchant-jwt-secret-0123456789";

fn sandbox_config(extra: &str) -> String {
    format!(
        r#"
bind = "127.0.0.1:0"
sandbox = true
sandbox_test_interval_secs = 1
{extra}
[[apps]]
id = "1"
key = "{SEED_KEY}"
secret = "app-secret"
[apps.jwt]
algorithm = "HS256"
secret = "{JWT_SECRET}"
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

/// Reads text frames until one that is not a sandbox test event.
async fn next_non_test_event(client: &mut Client) -> String {
    loop {
        let text = client.text().await;
        if !text.contains(r#""event":"test-event""#) {
            return text;
        }
    }
}

#[tokio::test]
async fn the_seeds_wscat_session_is_reproduced_message_for_message() {
    // Byte for byte with the app's `pusher_fields` off; with the default, the same frames
    // also carry `id` and `position` (tests/pusher_protocol.rs).
    let config = sandbox_config("").replace(
        "[apps.jwt]",
        "[apps.history]\npusher_fields = false\n[apps.jwt]",
    );
    let server = TestServer::with_config(&config).await;
    let key = server
        .merchants()
        .store
        .create_key("1", "merchant_001")
        .await
        .unwrap();

    // $ wscat -c wss://sandbox-ws.quickpay.best/app/pagCMLx6TXrb  (no query string)
    let mut ws = Client::connect(&server.ws_url(&format!("/app/{SEED_KEY}"))).await;
    // < {"event":"pusher:connection_established","data":"{\"socket_id\":...,\"activity_timeout\":...}"}
    let welcome = ws.text().await;
    let parsed: Value = serde_json::from_str(&welcome).unwrap();
    let data: Value = serde_json::from_str(parsed["data"].as_str().unwrap()).unwrap();
    let socket_id = data["socket_id"].as_str().unwrap().to_string();
    assert_eq!(
        welcome,
        format!(
            r#"{{"event":"pusher:connection_established","data":"{{\"socket_id\":\"{socket_id}\",\"activity_timeout\":120}}"}}"#
        )
    );

    // > {"event":"pusher:subscribe","data":{"auth":"","channel":"test-channel"}}
    ws.send_text(r#"{"event":"pusher:subscribe","data":{"auth":"","channel":"test-channel"}}"#)
        .await;
    // < {"event":"pusher_internal:subscription_succeeded","channel":"test-channel"}
    assert_eq!(
        ws.text().await,
        r#"{"event":"pusher_internal:subscription_succeeded","channel":"test-channel"}"#
    );
    // ...and the test stream keeps talking.
    let test_event: Value = serde_json::from_str(&ws.text().await).unwrap();
    assert_eq!(test_event["event"], "test-event");
    assert_eq!(test_event["channel"], "test-channel");
    let payload: Value = serde_json::from_str(test_event["data"].as_str().unwrap()).unwrap();
    assert!(payload["sequence"].as_u64().unwrap() >= 1, "{payload}");

    // $ curl -X POST .../v1/websocket/auth -H 'Authorization: Bearer ...' -H 'X-API-KEY: ...'
    //   -d '{"socket_id": "123.456", "channel_name": "test-channel"}'
    let answer: Value = http()
        .post(server.url("/v1/websocket/auth"))
        .header("content-type", "application/json")
        .bearer_auth(jwt("merchant_001"))
        .header("x-api-key", &key.api_key)
        .body(r#"{"socket_id": "123.456", "channel_name": "test-channel"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // {"auth":"pagCMLx6TXrb:<64 hex>"}
    let expected = payrelay::signing::hmac_sha256_hex(b"app-secret", b"123.456:test-channel");
    assert_eq!(answer, json!({"auth": format!("{SEED_KEY}:{expected}")}));

    // The merchant channel, with the signature the endpoint gives for this socket.
    let channel = "private-merchant.merchant_001";
    let answer: Value = http()
        .post(server.url("/v1/websocket/auth"))
        .bearer_auth(jwt("merchant_001"))
        .header("x-api-key", &key.api_key)
        .json(&json!({"socket_id": socket_id, "channel_name": channel}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let auth = answer["auth"].as_str().unwrap();
    // {"event":"pusher:subscribe","data":{"auth":"pagCMLx6TXrb:...","channel":"private-merchant.merchant_001"}}
    ws.send_text(&format!(
        r#"{{"event":"pusher:subscribe","data":{{"auth":"{auth}","channel":"{channel}"}}}}"#
    ))
    .await;
    // {"event":"pusher_internal:subscription_succeeded","channel":"private-merchant.merchant_001"}
    assert_eq!(
        next_non_test_event(&mut ws).await,
        format!(r#"{{"event":"pusher_internal:subscription_succeeded","channel":"{channel}"}}"#)
    );

    // Every message has the format {"event":"","channel":"","data":"{}"}.
    let response = http()
        .post(server.url("/v1/events"))
        .basic_auth(SEED_KEY, Some("app-secret"))
        .json(&json!({
            "merchant_id": "merchant_001",
            "kind": "merchant",
            "event": "payment.updated",
            "data": {"payment_id": "pay_1", "status": "paid"},
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let reply: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        next_non_test_event(&mut ws).await,
        format!(
            r#"{{"event":"payment.updated","channel":"{channel}","data":"{{\"payment_id\":\"pay_1\",\"status\":\"paid\"}}"}}"#
        )
    );
}

#[tokio::test]
async fn exchange_rates_reach_a_new_subscriber_at_once() {
    let server =
        TestServer::with_config(&sandbox_config(r#"exchange_rates_channel = "cache-fx""#)).await;
    // Let the generator publish at least once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut client = Client::connect(&server.ws_url(&format!("/app/{SEED_KEY}"))).await;
    client.established().await;
    client.subscribed("cache-fx").await;
    // The cached latest rates come right after the confirmation, not a second later.
    let started = std::time::Instant::now();
    let rates = client.json().await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(rates["event"], "rates", "{rates}");
    let data: Value = serde_json::from_str(rates["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["base"], "USD");
    let eur = data["rates"]["EUR"].as_f64().unwrap();
    assert!((0.5..1.5).contains(&eur), "{data}");
    // And they keep coming every second.
    let next = client.event("rates").await;
    assert_ne!(next["data"], rates["data"]);
}

#[tokio::test]
async fn outside_the_sandbox_the_backend_publishes_rates_and_test_channel_is_quiet() {
    let server = TestServer::start().await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("test-channel").await;
    client.subscribed("cache-exchange-rates").await;
    // Nobody has published rates yet: Pusher's cache-miss, then silence.
    client.event("pusher:cache_miss").await;
    client.silent_for(Duration::from_millis(1500)).await;

    let rates = r#"{"base":"USD","rates":{"EUR":0.91}}"#;
    server.trigger("cache-exchange-rates", "rates", rates).await;
    assert_eq!(client.event("rates").await["data"], rates);
    let (mut late, _) = server.connect_established().await;
    late.subscribed("cache-exchange-rates").await;
    assert_eq!(late.event("rates").await["data"], rates);
}

#[tokio::test]
async fn content_type_selects_binary_json_or_msgpack_frames() {
    let server = TestServer::start().await;
    let url = server.ws_url(&format!("/app/{KEY}?protocol=7"));

    // application/octet-stream: the same JSON, in binary frames.
    let mut binary =
        Client::connect_with_header(&url, "content-type", "application/octet-stream").await;
    let welcome: Value = serde_json::from_slice(&binary.binary().await).unwrap();
    assert_eq!(welcome["event"], "pusher:connection_established");
    binary.subscribe("prices").await;
    let mut ok: Value = serde_json::from_slice(&binary.binary().await).unwrap();
    ok.as_object_mut().unwrap().remove("position");
    assert_eq!(
        ok,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "prices"})
    );

    // application/msgpack: MessagePack maps with the same keys, in binary frames; the
    // client may speak MessagePack too.
    let mut packed = Client::connect_with_header(&url, "content-type", "application/msgpack").await;
    let welcome: Value = rmp_serde::from_slice(&packed.binary().await).unwrap();
    assert_eq!(welcome["event"], "pusher:connection_established");
    let subscribe = json!({"event": "pusher:subscribe", "data": {"channel": "prices"}});
    packed
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(
            rmp_serde::to_vec_named(&subscribe).unwrap(),
        ))
        .await
        .unwrap();
    let mut ok: Value = rmp_serde::from_slice(&packed.binary().await).unwrap();
    assert!(ok["position"].is_string(), "{ok}");
    ok.as_object_mut().unwrap().remove("position");
    assert_eq!(
        ok,
        json!({"event": "pusher_internal:subscription_succeeded", "channel": "prices"})
    );

    server.trigger("prices", "tick", r#"{"p":1}"#).await;
    let binary_event: Value = serde_json::from_slice(&binary.binary().await).unwrap();
    let packed_event: Value = rmp_serde::from_slice(&packed.binary().await).unwrap();
    for mut event in [binary_event, packed_event] {
        let extra = event.as_object_mut().unwrap();
        assert!(
            extra
                .remove("id")
                .unwrap()
                .as_str()
                .unwrap()
                .starts_with("evt_")
        );
        assert!(extra.remove("position").unwrap().is_string());
        assert_eq!(
            event,
            json!({"event": "tick", "channel": "prices", "data": r#"{"p":1}"#})
        );
    }

    // An unknown type is refused at the handshake rather than silently ignored.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("content-type", "application/xml".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 415);
        }
        other => panic!("expected a 415 refusal, got {other:?}"),
    }
}
