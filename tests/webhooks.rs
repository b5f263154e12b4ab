//! Signed callbacks against a real receiver on loopback: what is delivered, how it is
//! signed, retries, refusals, tenancy, the log, replay, Pusher app webhooks, PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::process;
use common::receiver::{Answer, Receiver};
use common::*;
use payrelay::webhooks::signature::standard_signature;

const WAIT_LONG: Duration = Duration::from_secs(15);

/// A node whose retries come within seconds, allowed to call loopback receivers.
fn config(webhooks: &str, database: &str) -> String {
    format!(
        r#"bind = "127.0.0.1:0"
{database}
[webhooks]
allow_private_targets = true
retry_schedule_secs = [1, 1]
retry_jitter = 0.0
timeout_secs = 2
poll_interval_ms = 50
pusher_leave_delay_ms = 400
{webhooks}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
enable_client_messages = true
"#
    )
}

async fn node(webhooks: &str) -> TestServer {
    TestServer::with_config(&config(webhooks, "")).await
}

async fn create_endpoint(server: &TestServer, body: Value) -> Value {
    let (status, reply) = server
        .basic_request("POST", "/v1/webhooks/endpoints", Some(&body))
        .await;
    assert_eq!(status, 201, "{reply}");
    reply
}

async fn publish(server: &TestServer, merchant: &str, event: &str, data: Value) -> String {
    let body = json!({"merchant_id": merchant, "kind": "payments", "event": event, "data": data});
    let (status, reply) = server
        .basic_request("POST", "/v1/events", Some(&body))
        .await;
    assert_eq!(status, 200, "{reply}");
    reply["id"].as_str().unwrap().to_string()
}

/// The signatures of a received message that verify with `secret`.
fn verifies(received: &receiver::Received, secret: &str) -> bool {
    let id = received.header("webhook-id");
    let timestamp: i64 = received.header("webhook-timestamp").parse().unwrap();
    let expected = standard_signature(&[secret], id, timestamp, &received.body);
    received
        .header("webhook-signature")
        .split(' ')
        .any(|part| part == expected)
}

use common::receiver;

async fn messages(server: &TestServer, endpoint: &str, query: &str) -> Value {
    let (status, reply) = server
        .basic_request(
            "GET",
            &format!("/v1/webhooks/endpoints/{endpoint}/messages{query}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Polls the log until `check` holds.
async fn wait_log(server: &TestServer, endpoint: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT_LONG;
    loop {
        let log = messages(server, endpoint, "").await;
        if check(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "the log never got there: {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_merchant_event_reaches_its_endpoints_signed_whatever_api_published_it() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    let other = Receiver::start().await;
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/hooks"), "merchant_id": "m1", "description": "ledger"}),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{endpoint}");
    assert!(endpoint["id"].as_str().unwrap().starts_with("ep_"));
    assert_eq!(endpoint["enabled"], true);
    create_endpoint(&server, json!({"url": other.url("/"), "merchant_id": "m2"})).await;

    // /v1/events
    let id = publish(
        &server,
        "m1",
        "trade",
        json!({"trade": {"id": "t1", "status": "paid"}}),
    )
    .await;
    let got = receiver.wait_for(1, WAIT).await;
    let first = &got[0];
    assert_eq!(first.path, "/hooks");
    assert_eq!(first.header("webhook-id"), id);
    assert_eq!(first.header("content-type"), "application/json");
    assert!(
        verifies(first, &secret),
        "signature: {}",
        first.header("webhook-signature")
    );
    let timestamp: i64 = first.header("webhook-timestamp").parse().unwrap();
    assert!((timestamp - now()).abs() <= 5);
    let body = first.json();
    assert_eq!(body["type"], "trade");
    assert_eq!(
        body["data"],
        json!({"trade": {"id": "t1", "status": "paid"}})
    );
    assert_eq!(body["merchant_id"], "m1");
    assert_eq!(body["channel"], "private-payments.m1");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'), "{body}");

    // The Pusher HTTP API and batch_events, on each of the merchant's channels; data
    // that is not JSON arrives as a string.
    server
        .trigger("private-merchant.m1", "deposit", "not json")
        .await;
    let batch = json!({"batch": [
        {"name": "withdrawal", "channel": "private-notifications.m1", "data": "{\"n\":1}"},
        {"name": "other", "channel": "public-news", "data": "{}"},
    ]});
    let (status, reply) = server
        .api("POST", "/apps/1/batch_events", &[], Some(&batch))
        .await;
    assert_eq!(status, 200, "{reply}");
    let got = receiver.wait_for(3, WAIT).await;
    let types: Vec<Value> = got.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(types, ["trade", "deposit", "withdrawal"]);
    assert_eq!(got[1].json()["data"], "not json");
    assert_eq!(got[2].json()["data"], json!({"n": 1}));

    // Client events never become callbacks, even on the merchant's channel.
    let (mut client, socket_id) = server.connect_established().await;
    let channel = "private-payments.m1";
    client
        .subscribe_with(channel, &private_auth(&socket_id, channel), None)
        .await;
    client.event("pusher_internal:subscription_succeeded").await;
    client
        .send_json(json!({"event": "client-typing", "channel": channel, "data": {}}))
        .await;
    // Nor do other merchants' endpoints hear of m1.
    publish(&server, "m1", "marker", json!({})).await;
    let got = receiver.wait_for(4, WAIT).await;
    assert_eq!(
        got[3].json()["type"],
        "marker",
        "the client event came first"
    );
    assert!(other.received().is_empty());
    // Every id is distinct, and the log lists them newest first.
    let log = wait_log(&server, endpoint["id"].as_str().unwrap(), |log| {
        log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["status"] == "delivered")
            .count()
            == 4
    })
    .await;
    let newest = &log["messages"][0];
    assert_eq!(newest["type"], "marker");
    assert_eq!(newest["attempts"], 1);
    assert_eq!(newest["attempt_log"][0]["status_code"], 200);
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_and_body_until_a_2xx() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(500).body(&format!("database down{}", "!".repeat(3000))),
        Answer::status(200).delay(Duration::from_secs(4)),
    ]);
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let id = publish(&server, "m1", "payment.updated", json!({"status": "paid"})).await;
    let got = receiver.wait_for(3, WAIT_LONG).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == id));
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same bytes every time"
    );
    // The schedule's 1 s between attempts (the timeout took 2 s of the second).
    assert!(got[1].at - got[0].at >= Duration::from_millis(900));
    assert!(got[2].at - got[1].at >= Duration::from_millis(2900));
    let log = wait_log(&server, endpoint["id"].as_str().unwrap(), |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;
    let attempts = log["messages"][0]["attempt_log"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 3, "{log}");
    assert_eq!(attempts[0]["status_code"], 500);
    let kept = attempts[0]["response_body"].as_str().unwrap();
    assert!(kept.starts_with("database down!"), "{kept}");
    assert_eq!(kept.len(), 1024, "the first KiB of the answer");
    assert_eq!(attempts[1]["status_code"], Value::Null);
    assert!(
        attempts[1]["error"].as_str().unwrap().contains("timed out"),
        "{log}"
    );
    assert_eq!(attempts[2]["status_code"], 200);
    assert!(
        server
            .metric("payrelay_webhook_attempts_total{outcome=\"timeout\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_message_fails_after_the_schedule_and_can_be_retried_and_recovered() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Answer::status(500));
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_string();
    // Failed before `since`: recover leaves it alone.
    let old = publish(&server, "m1", "old", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = now();
    let first = publish(&server, "m1", "a", json!({})).await;
    publish(&server, "m1", "b", json!({})).await;
    let log = wait_log(&server, &endpoint_id, |log| {
        log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "failed")
            && log["messages"].as_array().unwrap().len() == 3
    })
    .await;
    assert_eq!(log["messages"][0]["attempts"], 3, "1 + 2 retries: {log}");
    assert_eq!(receiver.received().len(), 9);
    let failed = messages(&server, &endpoint_id, "?status=failed&limit=1").await;
    assert_eq!(failed["messages"].as_array().unwrap().len(), 1);
    let next = failed["next_before"].as_str().unwrap().to_string();
    let older = messages(
        &server,
        &endpoint_id,
        &format!("?status=failed&before={next}"),
    )
    .await;
    assert_eq!(older["messages"][0]["id"], first);

    receiver.otherwise(Answer::status(204));
    let (status, reply) = server
        .basic_request(
            "POST",
            &format!("/v1/webhooks/endpoints/{endpoint_id}/messages/{first}/retry"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    let got = receiver.wait_for(10, WAIT).await;
    assert_eq!(got[9].header("webhook-id"), first);
    wait_log(&server, &endpoint_id, |log| {
        log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == first.as_str() && m["status"] == "delivered")
    })
    .await;

    let (status, reply) = server
        .basic_request(
            "POST",
            &format!("/v1/webhooks/endpoints/{endpoint_id}/recover"),
            Some(&json!({"since": since})),
        )
        .await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(
        reply["recovering"], 1,
        "only the one failed since then, not the older one"
    );
    let log = wait_log(&server, &endpoint_id, |log| {
        log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "delivered" || m["id"] == old.as_str())
    })
    .await;
    assert_eq!(log["messages"][2]["id"], old);
    assert_eq!(log["messages"][2]["status"], "failed");
    assert_eq!(receiver.received().len(), 11);
    // Bad requests are named.
    for query in ["?status=lost", "?limit=0", "?before=abc"] {
        let (status, _) = server
            .basic_request(
                "GET",
                &format!("/v1/webhooks/endpoints/{endpoint_id}/messages{query}"),
                None,
            )
            .await;
        assert_eq!(status, 400, "{query}");
    }
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(410)]);
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    publish(&server, "m1", "a", json!({})).await;
    receiver.wait_for(1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, shown) = server
            .basic_request(
                "GET",
                &format!("/v1/webhooks/endpoints/{endpoint_id}"),
                None,
            )
            .await;
        if shown["enabled"] == false {
            assert!(
                shown["disabled_reason"].as_str().unwrap().contains("410"),
                "{shown}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&server, "m1", "b", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a disabled endpoint gets nothing"
    );
    let log = messages(&server, endpoint_id, "").await;
    assert_eq!(log["messages"][0]["status"], "failed");
    assert_eq!(
        log["messages"].as_array().unwrap().len(),
        1,
        "nothing recorded for it since"
    );
    assert!(
        server
            .metric("payrelay_webhook_endpoints_disabled_total{reason=\"gone\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_its_bound_and_redirects_are_not_followed() {
    let server = node("max_retry_after_secs = 3").await;
    let polite = Receiver::start().await;
    polite.script([Answer::status(503).header("retry-after", "2")]);
    let greedy = Receiver::start().await;
    greedy.script([Answer::status(429).header("retry-after", "3600")]);
    let elsewhere = Receiver::start().await;
    let redirecting = Receiver::start().await;
    redirecting.script([Answer::status(302).header("location", &elsewhere.url("/"))]);
    for (receiver, merchant) in [(&polite, "m1"), (&greedy, "m2"), (&redirecting, "m3")] {
        create_endpoint(
            &server,
            json!({"url": receiver.url("/"), "merchant_id": merchant}),
        )
        .await;
    }
    for merchant in ["m1", "m2", "m3"] {
        publish(&server, merchant, "e", json!({})).await;
    }
    let got = polite.wait_for(2, WAIT_LONG).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured: {waited:?}"
    );
    let got = greedy.wait_for(2, WAIT_LONG).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(8),
        "Retry-After: 3600 bounded to 3 s: {waited:?}"
    );
    let got = redirecting.wait_for(2, WAIT_LONG).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let server = TestServer::with_config(&config("", "").replace(
        "allow_private_targets = true",
        "allow_private_targets = false",
    ))
    .await;
    let receiver = Receiver::start().await;
    for url in [
        receiver.url("/"),
        "http://10.0.0.1/".to_string(),
        "http://[::1]:9/".to_string(),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "ftp://example.com/".to_string(),
        "http://user:pw@example.com/".to_string(),
    ] {
        let (status, reply) = server
            .basic_request(
                "POST",
                "/v1/webhooks/endpoints",
                Some(&json!({"url": url, "merchant_id": "m1"})),
            )
            .await;
        assert_eq!(status, 400, "{url}: {reply}");
    }
    // A name is resolved at each attempt, and refused when it points inside.
    let endpoint = create_endpoint(
        &server,
        json!({"url": format!("http://localhost:{}/", receiver.addr.port()), "merchant_id": "m1"}),
    )
    .await;
    publish(&server, "m1", "e", json!({})).await;
    let log = wait_log(&server, endpoint["id"].as_str().unwrap(), |log| {
        log["messages"][0]["attempt_log"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    })
    .await;
    let error = log["messages"][0]["attempt_log"][0]["error"]
        .as_str()
        .unwrap();
    assert!(
        error.contains("refused") && error.contains("loopback"),
        "{error}"
    );
    assert!(receiver.received().is_empty());
}

async fn key_for(server: &TestServer, merchant: &str) -> String {
    server
        .merchants()
        .store
        .create_key("1", merchant)
        .await
        .unwrap()
        .api_key
}

async fn as_merchant(
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            server.url(path),
        )
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_merchant_key_sees_and_edits_only_its_own_endpoints() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    let (k1, k2) = (key_for(&server, "m1").await, key_for(&server, "m2").await);
    let (status, mine) = as_merchant(
        &server,
        &k1,
        "POST",
        "/v1/webhooks/endpoints",
        Some(json!({"url": receiver.url("/")})),
    )
    .await;
    assert_eq!(status, 201, "{mine}");
    assert_eq!(mine["merchant_id"], "m1", "the key's merchant");
    let id = mine["id"].as_str().unwrap();
    let (status, _) = as_merchant(
        &server,
        &k1,
        "POST",
        "/v1/webhooks/endpoints",
        Some(json!({"url": receiver.url("/"), "merchant_id": "m2"})),
    )
    .await;
    assert_eq!(status, 403);
    let path = format!("/v1/webhooks/endpoints/{id}");
    for (method, path, body) in [
        ("GET", path.clone(), None),
        ("PATCH", path.clone(), Some(json!({"enabled": false}))),
        ("DELETE", path.clone(), None),
        ("POST", format!("{path}/rotate-secret"), None),
        ("GET", format!("{path}/messages"), None),
        ("POST", format!("{path}/recover"), Some(json!({"since": 0}))),
    ] {
        let (status, reply) = as_merchant(&server, &k2, method, &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {reply}");
    }
    let (_, listed) = as_merchant(&server, &k2, "GET", "/v1/webhooks/endpoints", None).await;
    assert_eq!(listed["endpoints"], json!([]));
    let (_, listed) = as_merchant(&server, &k1, "GET", "/v1/webhooks/endpoints", None).await;
    assert_eq!(listed["endpoints"].as_array().unwrap().len(), 1);
    assert!(
        listed["endpoints"][0].get("secret").is_none(),
        "never listed"
    );
    // The app sees everything, and can narrow to a merchant.
    create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m2"}),
    )
    .await;
    let (_, all) = server
        .basic_request("GET", "/v1/webhooks/endpoints", None)
        .await;
    assert_eq!(all["endpoints"].as_array().unwrap().len(), 2);
    let (_, some) = server
        .basic_request("GET", "/v1/webhooks/endpoints?merchant_id=m2", None)
        .await;
    assert_eq!(some["endpoints"].as_array().unwrap().len(), 1);
    // No credentials, a bad key.
    let (status, _) = as_merchant(&server, "prk_nope", "GET", "/v1/webhooks/endpoints", None).await;
    assert_eq!(status, 401);
    let (status, _) = server
        .raw_request("GET", "/v1/webhooks/endpoints", Vec::new())
        .await;
    assert_eq!(status, 401);
    // The owner edits and deletes.
    let (status, edited) = as_merchant(
        &server,
        &k1,
        "PATCH",
        &path,
        Some(json!({"events": ["trade"], "description": "ledger"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["events"], json!(["trade"]));
    let (status, _) = as_merchant(&server, &k1, "DELETE", &path, None).await;
    assert_eq!(status, 200);
    let (status, _) = as_merchant(&server, &k1, "GET", &path, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn filters_choose_events_and_bad_bodies_are_named() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1", "events": ["trade", "payment.*"]}),
    )
    .await;
    for event in [
        "deposit",
        "trade",
        "payment.updated",
        "trades",
        "payment.refunded",
    ] {
        publish(&server, "m1", event, json!({})).await;
    }
    let got = receiver.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let types: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| r.json()["type"].clone())
        .collect();
    assert_eq!(types.len(), 3, "{types:?}");
    assert_eq!(got.len(), 3);
    for body in [
        json!({"url": receiver.url("/"), "events": []}),
        json!({"url": receiver.url("/"), "events": ["a*b"]}),
        json!({"url": receiver.url("/"), "surprise": 1}),
        json!({"events": ["trade"]}),
        json!({"url": receiver.url("/"), "merchant_id": "bad.id"}),
        json!({"url": receiver.url("/"), "description": "x".repeat(600)}),
    ] {
        let (status, reply) = server
            .basic_request("POST", "/v1/webhooks/endpoints", Some(&body))
            .await;
        assert_eq!(status, 400, "{body}: {reply}");
    }
    let (status, _) = server
        .raw_request("POST", "/v1/webhooks/endpoints", vec![b'x'; 20_000])
        .await;
    assert!(status == 413 || status == 401, "{status}");
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_during_the_overlap() {
    let server = node("secret_rotation_overlap_secs = 1").await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let old = endpoint["secret"].as_str().unwrap().to_string();
    let id = endpoint["id"].as_str().unwrap();
    let (status, rotated) = server
        .basic_request(
            "POST",
            &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    publish(&server, "m1", "e", json!({})).await;
    let got = receiver.wait_for(1, WAIT).await;
    let header = got[0].header("webhook-signature");
    assert_eq!(header.split(' ').count(), 2, "{header}");
    assert!(verifies(&got[0], &new) && verifies(&got[0], &old));
    // After the overlap, the new secret alone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    publish(&server, "m1", "e", json!({})).await;
    let got = receiver.wait_for(2, WAIT).await;
    let header = got[1].header("webhook-signature");
    assert_eq!(header.split(' ').count(), 1, "{header}");
    assert!(verifies(&got[1], &new) && !verifies(&got[1], &old));
}

#[tokio::test]
async fn app_endpoints_get_app_level_events_only() {
    let server = node("").await;
    let own = Receiver::start().await;
    create_endpoint(
        &server,
        json!({"url": own.url("/"), "events": ["payload.*"]}),
    )
    .await;
    publish(&server, "m1", "payload.resolved", json!({})).await;
    let app = server.core.apps.by_id("1").unwrap().clone();
    let id = server
        .core
        .publish(
            &app,
            payrelay::core::NewPublication {
                channel: "private-payload-123".into(),
                event: "payload.resolved".into(),
                data: r#"{"signed":true}"#.into(),
                app_event: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = own.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        own.received().len(),
        1,
        "the merchant's event is not the app's"
    );
    assert_eq!(got[0].header("webhook-id"), id.to_string());
    assert_eq!(got[0].json()["merchant_id"], Value::Null);
    assert_eq!(got[0].json()["data"], json!({"signed": true}));
}

#[tokio::test]
async fn pusher_app_webhooks_for_occupancy_members_and_client_events() {
    let receiver = Receiver::start().await;
    let toml = config("", "").replace(
        "enable_client_messages = true\n",
        &format!(
            "enable_client_messages = true\n[[apps.webhooks]]\nurl = \"{}\"\nevent_types = [\"channel_occupied\", \"channel_vacated\", \"member_added\", \"member_removed\", \"client_event\"]\n",
            receiver.url("/pusher")
        ),
    );
    let server = TestServer::with_config(&toml).await;
    let names = |got: &[receiver::Received]| -> Vec<String> {
        got.iter()
            .map(|r| r.json()["events"][0]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (mut a, _) = server.connect_established().await;
    a.subscribed("news").await;
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(names(&got), ["channel_occupied"]);
    let body = got[0].json();
    assert_eq!(body["events"][0]["channel"], "news");
    assert!(body["time_ms"].as_i64().unwrap() > 0);
    assert_eq!(got[0].header("x-pusher-key"), KEY);
    let signature = payrelay::signing::hmac_sha256_hex(SECRET.as_bytes(), &got[0].body);
    assert_eq!(got[0].header("x-pusher-signature"), signature);

    // Leaving and coming back within the delay: neither is sent.
    a.send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.subscribed("news").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "{:?}",
        names(&receiver.received())
    );
    // Leaving for good: vacated after the delay.
    drop(a);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(names(&got)[1], "channel_vacated");

    // Presence members and a client event.
    let (mut b, socket_id) = server.connect_established().await;
    let channel = "presence-room";
    let data = r#"{"user_id":"u1","user_info":{}}"#;
    b.subscribe_with(
        channel,
        &presence_auth(&socket_id, channel, data),
        Some(data),
    )
    .await;
    b.event("pusher_internal:subscription_succeeded").await;
    b.send_json(json!({"event": "client-hello", "channel": channel, "data": {"x": 1}}))
        .await;
    let got = receiver.wait_for(5, WAIT).await;
    // Callbacks run concurrently: their order is not a promise.
    let later: Vec<Value> = got[2..]
        .iter()
        .map(|r| r.json()["events"][0].clone())
        .collect();
    let find = |name: &str| {
        later
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {later:?}"))
            .clone()
    };
    assert_eq!(later.len(), 3, "{later:?}");
    find("channel_occupied");
    assert_eq!(find("member_added")["user_id"], "u1");
    let client = find("client_event");
    assert_eq!(client["event"], "client-hello");
    assert_eq!(client["socket_id"], socket_id);
    assert_eq!(client["user_id"], "u1");
    // A member leaving and coming back within the delay: neither is sent (nor the
    // channel's vacancy and occupancy).
    b.send_json(json!({"event": "pusher:unsubscribe", "data": {"channel": channel}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.subscribe_with(
        channel,
        &presence_auth(&socket_id, channel, data),
        Some(data),
    )
    .await;
    b.event("pusher_internal:subscription_succeeded").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        5,
        "{:?}",
        names(&receiver.received())
    );
    drop(b);
    let got = receiver.wait_for(7, WAIT).await;
    let mut last: Vec<String> = names(&got[5..]);
    last.sort();
    assert_eq!(last, ["channel_vacated", "member_removed"]);
    // The configured endpoint is listed, read-only.
    let (_, listed) = server
        .basic_request("GET", "/v1/webhooks/endpoints", None)
        .await;
    let id = listed["endpoints"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed["endpoints"][0]["kind"], "pusher");
    let (status, _) = server
        .basic_request("DELETE", &format!("/v1/webhooks/endpoints/{id}"), None)
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn the_outbox_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let server =
        TestServer::with_config(&config("", &format!("database_url = \"{}\"", pg.url))).await;
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500)]);
    let endpoint = create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let ids: Vec<String> = futures_util::future::join_all(
        (0..20).map(|i| publish(&server, "m1", "trade", json!({"n": i}))),
    )
    .await;
    let got = receiver.wait_for(21, WAIT_LONG).await;
    let mut seen: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 20, "every event, the failed one retried");
    assert!(got.iter().all(|r| verifies(r, &secret)));
    assert!(ids.iter().all(|id| seen.contains(&id.as_str())));
    wait_log(&server, endpoint["id"].as_str().unwrap(), |log| {
        log["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["status"] == "delivered")
            .count()
            == 20
    })
    .await;
}

/// Two nodes on one PostgreSQL outbox: both claim retries coming due (`FOR UPDATE SKIP
/// LOCKED` and the lease), so every message is sent, and no attempt of a message is made
/// by one node while the other's is still on the wire: each event gets exactly one 2xx.
#[tokio::test]
async fn two_nodes_share_one_postgresql_outbox_without_sending_a_message_twice() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    // A generous timeout: an attempt timing out on a busy machine after the receiver
    // answered would be a second 2xx that no lease could prevent.
    // Three outbox batches in flight per node: with two nodes, up to six transactions
    // write deliveries and endpoint health rows at once (locked in id order: none may
    // deadlock and refuse a publish).
    let toml = config(
        "outbox_commits_in_flight = 3",
        &format!("database_url = \"{}\"", pg.url),
    )
    .replace("timeout_secs = 2", "timeout_secs = 10");
    let a = TestServer::with_config(&toml).await;
    // The first attempts fail, so their retries are claimed by whichever node polls
    // first; successes take a while, so the other node polls while they are in flight.
    let flaky = || async {
        let receiver = Receiver::start().await;
        receiver.script((0..15).map(|_| Answer::status(500)));
        receiver.otherwise(Answer::status(200).delay(Duration::from_millis(300)));
        receiver
    };
    let (shared, late) = (flaky().await, flaky().await);
    create_endpoint(&a, json!({"url": shared.url("/"), "merchant_id": "m1"})).await;
    let b = TestServer::with_config(&toml).await;
    // Made after the second node loaded its endpoints: it claims this one's retries
    // before its periodic reload brings the endpoint.
    create_endpoint(&a, json!({"url": late.url("/"), "merchant_id": "m2"})).await;
    let late_ids: Vec<String> = futures_util::future::join_all(
        (0..20).map(|i| publish(&a, "m2", "trade", json!({"n": i}))),
    )
    .await;
    // Both nodes publish at once.
    let shared_ids: Vec<String> = futures_util::future::join_all((0..40).map(|i| {
        let node = if i % 2 == 0 { &a } else { &b };
        publish(node, "m1", "trade", json!({"n": i}))
    }))
    .await;
    for (receiver, ids) in [(&late, &late_ids), (&shared, &shared_ids)] {
        let deadline = Instant::now() + WAIT_LONG;
        loop {
            let got = receiver.received();
            let mut successes: std::collections::HashMap<&str, usize> = Default::default();
            for r in got.iter().filter(|r| r.status == 200) {
                *successes.entry(r.header("webhook-id")).or_default() += 1;
            }
            assert!(
                successes.values().all(|&n| n == 1),
                "a message was sent twice: {successes:?}"
            );
            if ids.iter().all(|id| successes.contains_key(id.as_str())) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} delivered",
                successes.len(),
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn endpoint_path(endpoint: &Value) -> String {
    format!(
        "/v1/webhooks/endpoints/{}",
        endpoint["id"].as_str().unwrap()
    )
}

/// Waits until the endpoint's `enabled` is `enabled`, and returns it as shown.
async fn wait_enabled(server: &TestServer, endpoint: &Value, enabled: bool) -> Value {
    let deadline = Instant::now() + WAIT_LONG;
    loop {
        let (status, shown) = server
            .basic_request("GET", &endpoint_path(endpoint), None)
            .await;
        assert_eq!(status, 200, "{shown}");
        if shown["enabled"] == enabled {
            return shown;
        }
        assert!(Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_without_a_success_for_the_period_is_disabled_and_counted() {
    let server = node("disable_after_failing_secs = 3").await;
    let dead = Receiver::start().await;
    dead.otherwise(Answer::status(500));
    let recovered = Receiver::start().await;
    recovered.script([Answer::status(500), Answer::status(200)]);
    let failing =
        create_endpoint(&server, json!({"url": dead.url("/"), "merchant_id": "m1"})).await;
    let healthy = create_endpoint(
        &server,
        json!({"url": recovered.url("/"), "merchant_id": "m2"}),
    )
    .await;
    publish(&server, "m1", "a", json!({})).await;
    publish(&server, "m2", "a", json!({})).await;
    let shown = wait_enabled(&server, &failing, false).await;
    assert!(
        shown["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("failing without a success"),
        "{shown}"
    );
    assert!(
        server
            .metric("payrelay_webhook_endpoints_disabled_total{reason=\"failing\"}")
            .await
            >= 1.0
    );
    // A success since its failure keeps the other one going.
    recovered.wait_for(2, WAIT).await;
    let (_, shown) = server
        .basic_request("GET", &endpoint_path(&healthy), None)
        .await;
    assert_eq!(shown["enabled"], true, "{shown}");
    assert_eq!(shown["failing_since"], Value::Null, "{shown}");
    // Its owner turns it back on: a fresh start.
    let (status, shown) = server
        .basic_request(
            "PATCH",
            &endpoint_path(&failing),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["failing_since"], Value::Null, "{shown}");
}

/// What the outbox records of an endpoint's health, on either store: a failure sets
/// `failing_since` (kept, not moved, by later failures), a success clears it and sets
/// `last_success_at`; two endpoints changing in one batch each get their own state.
async fn endpoint_health_on(database: &str) {
    let server = TestServer::with_config(&config("", database)).await;
    let flaky = Receiver::start().await;
    flaky.script([
        Answer::status(500),
        Answer::status(500),
        Answer::status(200),
    ]);
    let fine = Receiver::start().await;
    let flaky_ep =
        create_endpoint(&server, json!({"url": flaky.url("/"), "merchant_id": "m1"})).await;
    let fine_ep =
        create_endpoint(&server, json!({"url": fine.url("/"), "merchant_id": "m2"})).await;
    let shown = |endpoint: Value| {
        let server = &server;
        async move {
            let (status, shown) = server
                .basic_request("GET", &endpoint_path(&endpoint), None)
                .await;
            assert_eq!(status, 200, "{shown}");
            shown
        }
    };
    assert_eq!(
        shown(flaky_ep.clone()).await["last_success_at"],
        Value::Null
    );
    let before = payrelay::db::now_ms();
    publish(&server, "m1", "a", json!({})).await;
    publish(&server, "m2", "a", json!({})).await;
    flaky.wait_for(1, WAIT).await;
    let deadline = Instant::now() + WAIT;
    let failing_since = loop {
        let now = shown(flaky_ep.clone()).await;
        if let Some(at) = now["failing_since"].as_i64() {
            break at;
        }
        assert!(Instant::now() < deadline, "never marked failing: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(failing_since >= before, "{failing_since} < {before}");
    // The second failure (a second later) leaves the start of the failing period alone.
    flaky.wait_for(2, WAIT_LONG).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = shown(flaky_ep.clone()).await;
    assert!(
        now["failing_since"] == json!(failing_since) || now["failing_since"].is_null(),
        "{now}"
    );
    flaky.wait_for(3, WAIT_LONG).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let now = shown(flaky_ep.clone()).await;
        if now["failing_since"].is_null() && now["last_success_at"].is_i64() {
            assert!(
                now["last_success_at"].as_i64().unwrap() > failing_since,
                "{now}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fine_now = shown(fine_ep).await;
    assert_eq!(fine_now["failing_since"], Value::Null, "{fine_now}");
    assert!(
        fine_now["last_success_at"].as_i64().unwrap() >= before,
        "{fine_now}"
    );
}

#[tokio::test]
async fn endpoint_health_is_recorded_on_sqlite() {
    endpoint_health_on("").await;
}

#[tokio::test]
async fn endpoint_health_is_recorded_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    endpoint_health_on(&format!("database_url = \"{}\"", pg.url)).await;
}

/// One sample of `series` in a node's `/metrics` (0 when absent).
async fn sample(addr: std::net::SocketAddr, series: &str) -> f64 {
    let text = http()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// The outbox in `/metrics`: pending, in flight, attempts by outcome, the oldest pending
/// message's age, disabled endpoints. A node process of its own, so no other test's
/// figures mix in.
#[tokio::test]
async fn metrics_show_the_outbox() {
    let node = process::NodeProcess::start(
        None,
        "[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [600]\nretry_jitter = 0.0\n\
         timeout_secs = 60\npoll_interval_ms = 50\nmax_in_flight_per_endpoint = 1",
    );
    let base = format!("http://{}", node.addr);
    let call = |method: reqwest::Method, path: &str, body: Value| {
        http()
            .request(method, format!("{base}{path}"))
            .basic_auth("app-key", Some("app-secret"))
            .json(&body)
            .send()
    };
    let slow = Receiver::start().await;
    slow.otherwise(Answer::status(200).delay(Duration::from_secs(60)));
    let failing = Receiver::start().await;
    failing.otherwise(Answer::status(500));
    let gone = Receiver::start().await;
    gone.otherwise(Answer::status(410));
    let fine = Receiver::start().await;
    for (receiver, merchant) in [
        (&slow, "m1"),
        (&failing, "m2"),
        (&gone, "m3"),
        (&fine, "m4"),
    ] {
        let response = call(
            reqwest::Method::POST,
            "/v1/webhooks/endpoints",
            json!({"url": receiver.url("/"), "merchant_id": merchant}),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 201);
    }
    for merchant in ["m1", "m1", "m1", "m2", "m3", "m4"] {
        let response = call(
            reqwest::Method::POST,
            "/v1/events",
            json!({"merchant_id": merchant, "kind": "payments", "event": "e", "data": {}}),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
    }
    // m1: one attempt hangs, two wait for its slot; m2: a retry in 10 min; m3: disabled.
    let expected = [
        ("payrelay_webhook_in_flight", 1.0),
        ("payrelay_webhook_pending", 4.0),
        ("payrelay_webhook_disabled_endpoints", 1.0),
        (
            "payrelay_webhook_attempts_total{outcome=\"delivered\"}",
            1.0,
        ),
        (
            "payrelay_webhook_attempts_total{outcome=\"http_error\"}",
            1.0,
        ),
        ("payrelay_webhook_attempts_total{outcome=\"gone\"}", 1.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for (series, _) in expected {
            seen.push(sample(node.addr, series).await);
        }
        let age = sample(node.addr, "payrelay_webhook_oldest_pending_age_seconds").await;
        if expected
            .iter()
            .zip(&seen)
            .all(|((_, want), got)| want == got)
            && age >= 1.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}, oldest pending age {age}",
            expected
                .iter()
                .map(|(s, _)| s)
                .zip(&seen)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(slow.received().len(), 1, "one at a time to m1");
}

/// A slow endpoint holds its own slots only: another endpoint's first attempt and its
/// retry (which goes through the claim, past the slow one's backlog) are sent while the
/// slow one's attempts still hang.
#[tokio::test]
async fn a_slow_endpoint_never_delays_another() {
    let server = TestServer::with_config(
        &config("max_in_flight = 4\nmax_in_flight_per_endpoint = 2", "")
            .replace("timeout_secs = 2", "timeout_secs = 20"),
    )
    .await;
    let slow = Receiver::start().await;
    // It answers once (so it is proven and has its 2 slots), then slowly.
    slow.script([Answer::status(200)]);
    slow.otherwise(Answer::status(200).delay(Duration::from_secs(10)));
    let healthy = Receiver::start().await;
    healthy.script([Answer::status(500)]);
    let slow_endpoint =
        create_endpoint(&server, json!({"url": slow.url("/"), "merchant_id": "m1"})).await;
    create_endpoint(
        &server,
        json!({"url": healthy.url("/"), "merchant_id": "m2"}),
    )
    .await;
    publish(&server, "m1", "e", json!({"n": -1})).await;
    wait_log(&server, slow_endpoint["id"].as_str().unwrap(), |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;
    for i in 0..10 {
        publish(&server, "m1", "e", json!({"n": i})).await;
    }
    let hanging = slow.wait_for(3, WAIT).await;
    let id = publish(&server, "m2", "e", json!({})).await;
    let got = healthy.wait_for(2, WAIT).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == id));
    assert_eq!(
        slow.received().len(),
        3,
        "the slow endpoint never gets more than its 2 slots"
    );
    assert!(
        got[1].at < hanging[1].at + Duration::from_secs(10),
        "the retry went out while the slow endpoint's attempts still hung"
    );
}

/// Delivered and failed messages go after `retention_days` with their attempts and
/// events; pending ones stay whatever their age.
#[tokio::test]
async fn retention_prunes_delivered_and_failed_messages_only() {
    retention_on("").await;
}

#[tokio::test]
async fn retention_on_postgresql() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    retention_on(&format!("database_url = \"{}\"", pg.url)).await;
}

async fn retention_on(database: &str) {
    let server = TestServer::with_config(&config("", database).replace(
        "retry_schedule_secs = [1, 1]",
        "retry_schedule_secs = [600]",
    ))
    .await;
    let fine = Receiver::start().await;
    let failing = Receiver::start().await;
    failing.otherwise(Answer::status(500));
    let gone = Receiver::start().await;
    gone.otherwise(Answer::status(410));
    let mut endpoints = Vec::new();
    for (receiver, merchant) in [(&fine, "m1"), (&failing, "m2"), (&gone, "m3")] {
        let endpoint = create_endpoint(
            &server,
            json!({"url": receiver.url("/"), "merchant_id": merchant}),
        )
        .await;
        endpoints.push(endpoint["id"].as_str().unwrap().to_string());
    }
    let mut ids = Vec::new();
    for merchant in ["m1", "m2", "m3"] {
        ids.push(publish(&server, merchant, "e", json!({})).await);
    }
    for (endpoint, status) in endpoints.iter().zip(["delivered", "pending", "failed"]) {
        wait_log(&server, endpoint, |log| {
            log["messages"][0]["status"] == status
                && log["messages"][0]["attempt_log"]
                    .as_array()
                    .is_some_and(|a| a.len() == 1)
        })
        .await;
    }
    let day = 86_400_000;
    let now = payrelay::db::now_ms();
    assert_eq!(
        server.webhooks.prune_at(now + 6 * day).await,
        0,
        "within the 7 days"
    );
    assert_eq!(server.webhooks.prune_at(now + 8 * day).await, 2);
    for (endpoint, left) in endpoints.iter().zip([0, 1, 0]) {
        let log = messages(&server, endpoint, "").await;
        assert_eq!(log["messages"].as_array().unwrap().len(), left, "{log}");
    }
    let log = messages(&server, &endpoints[1], "").await;
    assert_eq!(log["messages"][0]["status"], "pending");
    assert_eq!(
        log["messages"][0]["attempt_log"].as_array().unwrap().len(),
        1
    );
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let bodies = server.webhooks.store.payloads(&refs).await.unwrap();
    assert_eq!(bodies.len(), 1, "only the pending message's event is kept");
    assert!(bodies.contains_key(&ids[1]));
}

/// A burst larger than an endpoint's slots drains as fast as the endpoint answers: a freed
/// slot starts the next message, without waiting for the next outbox poll (every second
/// here: 2 messages a second, so 40 messages would take 20 s). Then the same for retries,
/// which come due together and go through the claim. Each half must finish well inside
/// those 20 s (12 s: a loaded CI machine took 5 s and more for the retries' claim rounds).
#[tokio::test]
async fn a_burst_beyond_the_endpoint_slots_drains_without_waiting_for_the_poll() {
    let server = TestServer::with_config(
        &config("max_in_flight_per_endpoint = 2", "")
            .replace("poll_interval_ms = 50", "poll_interval_ms = 1000")
            // Generous: an attempt timing out on a busy machine is retried a second later,
            // out of the order this test reads.
            .replace("timeout_secs = 2", "timeout_secs = 10"),
    )
    .await;
    let receiver = Receiver::start().await;
    let answer = Answer::status(200).delay(Duration::from_millis(20));
    receiver.otherwise(answer.clone());
    create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let publish_all = |from: usize| {
        futures_util::future::join_all(
            (from..from + 40).map(|i| publish(&server, "m1", "e", json!({"n": i}))),
        )
    };
    let delivered = |from: usize, ids: &[String]| {
        let got = receiver.received();
        let mut seen: Vec<&str> = got[from..]
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| r.header("webhook-id"))
            .collect();
        seen.sort();
        seen.dedup();
        seen.len() == ids.len() && ids.iter().all(|id| seen.contains(&id.as_str()))
    };
    const WITHIN_POLL_BOUND: Duration = Duration::from_secs(12);
    let ids = publish_all(0).await;
    receiver.wait_for(40, WITHIN_POLL_BOUND).await;
    assert!(delivered(0, &ids));

    // Every first attempt fails: the retries come due together a second later.
    receiver.script((0..40).map(|_| Answer::status(500)));
    let ids = publish_all(40).await;
    let got = receiver.wait_for(120, WITHIN_POLL_BOUND).await;
    assert!(
        delivered(80, &ids),
        "{:?}",
        got[40..]
            .iter()
            .map(|r| (r.status, r.header("webhook-id").to_string()))
            .collect::<Vec<_>>()
    );
}

/// Endpoints that fail and then hang until the attempt timeout cannot take the slots a
/// healthy endpoint needs. Four such endpoints, each with plenty waiting, on a node of 4
/// slots (2 per endpoint): without a bound on failing endpoints they hold all 4 until the
/// timeout (60 s here, and they hang longer), and the healthy endpoint's message waits for
/// it. An endpoint whose latest attempt failed has 1 slot, and failing endpoints together
/// half the node's, so the healthy one is sent while they still hang.
#[tokio::test]
async fn hanging_failing_endpoints_cannot_starve_a_healthy_one() {
    let server = TestServer::with_config(
        &config("max_in_flight = 4\nmax_in_flight_per_endpoint = 2", "")
            .replace("timeout_secs = 2", "timeout_secs = 60")
            .replace(
                "retry_schedule_secs = [1, 1]",
                "retry_schedule_secs = [0, 0, 0]",
            ),
    )
    .await;
    let mut hanging = Vec::new();
    for i in 0..4 {
        let receiver = Receiver::start().await;
        // A first answer fails at once (the endpoint is failing from then on); every
        // later request hangs past the attempt timeout.
        receiver.script([Answer::status(500)]);
        receiver.otherwise(Answer::status(200).delay(Duration::from_secs(600)));
        create_endpoint(
            &server,
            json!({"url": receiver.url("/"), "merchant_id": format!("h{i}")}),
        )
        .await;
        hanging.push(receiver);
    }
    let healthy = Receiver::start().await;
    create_endpoint(
        &server,
        json!({"url": healthy.url("/"), "merchant_id": "ok"}),
    )
    .await;
    // One message each first, so every hanging endpoint fails once before the rest come.
    for i in 0..4 {
        publish(&server, &format!("h{i}"), "e", json!({"n": 0})).await;
    }
    for receiver in &hanging {
        receiver.wait_for(1, WAIT).await;
    }
    for n in 1..6 {
        for i in 0..4 {
            publish(&server, &format!("h{i}"), "e", json!({"n": n})).await;
        }
    }
    // The hanging endpoints take what they may; wait until nothing more starts there.
    let hung = || {
        hanging
            .iter()
            .map(|r| r.received().len() - 1)
            .sum::<usize>()
    };
    let deadline = Instant::now() + WAIT;
    while hung() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hung() >= 1,
        "the failing endpoints' later messages are attempted"
    );
    let id = publish(&server, "ok", "e", json!({})).await;
    let got = healthy.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].header("webhook-id"), id);
    let in_flight = hung();
    assert!(
        in_flight <= 2,
        "failing endpoints hold at most half the node's 4 slots, one each: {in_flight}"
    );
    for receiver in &hanging {
        assert!(
            receiver.received().len() <= 2,
            "one attempt at a time to a failing endpoint"
        );
    }
}

/// Endpoints that hang from their very first attempt (never known to fail) cannot take
/// the slots an established endpoint needs. Twenty new endpoints, each with plenty waiting,
/// on a node of 8 slots (4 per endpoint), hanging past a 60 s timeout: if new endpoints
/// had the normal share they would hold all 8 for the whole timeout. An endpoint without
/// a success has 1 slot, and such endpoints together a quarter of the node's (2), so the
/// established endpoint's burst is delivered while they still hang, and an endpoint
/// promoted by its first success gets its full share.
#[tokio::test]
async fn hanging_new_endpoints_cannot_starve_an_established_one() {
    let server = TestServer::with_config(
        &config("max_in_flight = 8\nmax_in_flight_per_endpoint = 4", "")
            .replace("timeout_secs = 2", "timeout_secs = 60"),
    )
    .await;
    let established = Receiver::start().await;
    // Nine prompt answers (its first message and a burst of 8), then it hangs too.
    established.script((0..9).map(|_| Answer::status(200)));
    established.otherwise(Answer::status(200).delay(Duration::from_secs(600)));
    let endpoint = create_endpoint(
        &server,
        json!({"url": established.url("/"), "merchant_id": "ok"}),
    )
    .await;
    // Its first success makes it established.
    publish(&server, "ok", "e", json!({"n": 0})).await;
    wait_log(&server, endpoint["id"].as_str().unwrap(), |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;

    let mut hanging = Vec::new();
    for i in 0..20 {
        let receiver = Receiver::start().await;
        receiver.otherwise(Answer::status(200).delay(Duration::from_secs(600)));
        create_endpoint(
            &server,
            json!({"url": receiver.url("/"), "merchant_id": format!("h{i}")}),
        )
        .await;
        hanging.push(receiver);
    }
    for n in 0..3 {
        for i in 0..20 {
            publish(&server, &format!("h{i}"), "e", json!({"n": n})).await;
        }
    }
    // The new endpoints take what they may; wait until nothing more starts there.
    let hung = || hanging.iter().map(|r| r.received().len()).sum::<usize>();
    let deadline = Instant::now() + WAIT;
    while hung() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hung() >= 1, "the new endpoints' messages are attempted");

    // A burst to the established endpoint goes out while the new endpoints hang.
    let mut ids = Vec::new();
    for n in 1..9 {
        ids.push(publish(&server, "ok", "e", json!({"n": n})).await);
    }
    let got = established.wait_for(9, Duration::from_secs(20)).await;
    for id in &ids {
        assert!(
            got.iter().any(|r| r.header("webhook-id") == id),
            "{id} delivered while the new endpoints hang"
        );
    }
    let in_flight = hung();
    assert!(
        in_flight <= 2,
        "new endpoints hold at most a quarter of the node's 8 slots, one each: {in_flight}"
    );
    for receiver in &hanging {
        assert!(
            receiver.received().len() <= 1,
            "one attempt at a time to a new endpoint"
        );
    }
    // Established, it has its full share of 4 (outside the new endpoints' quarter): with
    // its answers hanging now, 4 attempts are in flight at once, and no more.
    for n in 9..15 {
        publish(&server, "ok", "e", json!({"n": n})).await;
    }
    established.wait_for(13, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(established.received().len(), 13, "4 slots per endpoint");
    assert!(hung() <= 2);
}

/// A proven endpoint whose URL changes is unproven again: one attempt at a time to the
/// new URL (it may hang) until its first success there, `last_success_at` cleared. A
/// change of anything else leaves it proven.
#[tokio::test]
async fn a_new_url_makes_a_proven_endpoint_unproven_again() {
    let server = TestServer::with_config(
        &config("max_in_flight = 8\nmax_in_flight_per_endpoint = 4", "")
            .replace("timeout_secs = 2", "timeout_secs = 60"),
    )
    .await;
    let old = Receiver::start().await;
    // A prompt first answer proves it; the next three take 3 s each.
    old.script([Answer::status(200)]);
    old.otherwise(Answer::status(200).delay(Duration::from_secs(3)));
    let endpoint =
        create_endpoint(&server, json!({"url": old.url("/"), "merchant_id": "m1"})).await;
    let id = endpoint["id"].as_str().unwrap().to_string();
    let path = format!("/v1/webhooks/endpoints/{id}");
    publish(&server, "m1", "e", json!({"n": 0})).await;
    wait_log(&server, &id, |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;
    let patch = |body: Value| {
        let server = &server;
        let path = path.clone();
        async move {
            let (status, reply) = server.basic_request("PATCH", &path, Some(&body)).await;
            assert_eq!(status, 200, "{reply}");
            reply
        }
    };
    let edited = patch(json!({"description": "ledger", "events": ["e"], "enabled": true})).await;
    assert!(edited["last_success_at"].is_i64(), "{edited}");

    // Proven: its three slow messages are in flight at once.
    let started = Instant::now();
    for n in 1..4 {
        publish(&server, "m1", "e", json!({"n": n})).await;
    }
    old.wait_for(4, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a proven endpoint has several attempts in flight"
    );
    wait_log(&server, &id, |log| {
        let messages = log["messages"].as_array().unwrap();
        messages.len() == 4 && messages.iter().all(|m| m["status"] == "delivered")
    })
    .await;

    let new = Receiver::start().await;
    new.otherwise(Answer::status(200).delay(Duration::from_secs(600)));
    let edited = patch(json!({"url": new.url("/")})).await;
    assert!(edited["last_success_at"].is_null(), "{edited}");
    let (status, got) = server.basic_request("GET", &path, None).await;
    assert_eq!(status, 200, "{got}");
    assert!(got["last_success_at"].is_null(), "{got}");
    assert!(got["failing_since"].is_null(), "{got}");
    for n in 4..8 {
        publish(&server, "m1", "e", json!({"n": n})).await;
    }
    new.wait_for(1, WAIT).await;
    // Past the next index reload too (every second when endpoints change).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        new.received().len(),
        1,
        "one attempt at a time to the new URL of an endpoint proven at its old one"
    );
}

/// Attempts that were on the wire to the old URL when the URL changed say nothing about
/// the new one: a success there does not prove the edited endpoint (it keeps one attempt
/// at a time at its new URL), and a 410 from there does not disable it.
#[tokio::test]
async fn answers_from_an_old_url_neither_prove_nor_disable_the_edited_endpoint() {
    let server = TestServer::with_config(
        &config("max_in_flight = 8\nmax_in_flight_per_endpoint = 4", "")
            .replace("timeout_secs = 2", "timeout_secs = 60"),
    )
    .await;
    let old = Receiver::start().await;
    // Both answers come 2 s after the request: a success, then a 410.
    old.script([
        Answer::status(200).delay(Duration::from_secs(2)),
        Answer::status(410).delay(Duration::from_secs(2)),
    ]);
    let endpoint =
        create_endpoint(&server, json!({"url": old.url("/"), "merchant_id": "m1"})).await;
    let id = endpoint["id"].as_str().unwrap().to_string();
    let path = format!("/v1/webhooks/endpoints/{id}");
    // Unproven: one attempt at a time, so the first message is on the wire alone.
    publish(&server, "m1", "e", json!({"n": 0})).await;
    old.wait_for(1, WAIT).await;

    let new = Receiver::start().await;
    new.otherwise(Answer::status(200).delay(Duration::from_secs(600)));
    let (status, reply) = server
        .basic_request("PATCH", &path, Some(&json!({"url": new.url("/")})))
        .await;
    assert_eq!(status, 200, "{reply}");
    // The old URL's 200 arrives after the edit: the message is delivered...
    wait_log(&server, &id, |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;
    // ...but the endpoint has proven nothing at its new URL.
    let (_, got) = server.basic_request("GET", &path, None).await;
    assert!(got["last_success_at"].is_null(), "{got}");
    for n in 1..4 {
        publish(&server, "m1", "e", json!({"n": n})).await;
    }
    new.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        new.received().len(),
        1,
        "one attempt at a time to the new URL: the old URL's success proved nothing"
    );
    let (_, got) = server.basic_request("GET", &path, None).await;
    assert!(got["last_success_at"].is_null(), "{got}");

    // A 410 from an old URL, arriving after the URL moved to a live receiver, leaves the
    // endpoint enabled and its message is retried at the new URL.
    let gone = Receiver::start().await;
    gone.otherwise(Answer::status(410).delay(Duration::from_secs(2)));
    let second = create_endpoint(&server, json!({"url": gone.url("/"), "merchant_id": "m2"})).await;
    let second = second["id"].as_str().unwrap().to_string();
    publish(&server, "m2", "e", json!({"n": 0})).await;
    gone.wait_for(1, WAIT).await;
    let live = Receiver::start().await;
    let (status, reply) = server
        .basic_request(
            "PATCH",
            &format!("/v1/webhooks/endpoints/{second}"),
            Some(&json!({"url": live.url("/")})),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let log = wait_log(&server, &second, |log| {
        log["messages"][0]["status"] == "delivered"
    })
    .await;
    let codes: Vec<_> = log["messages"][0]["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].clone())
        .collect();
    assert_eq!(codes, vec![json!(410), json!(200)], "{log}");
    let (_, got) = server
        .basic_request("GET", &format!("/v1/webhooks/endpoints/{second}"), None)
        .await;
    assert_eq!(got["enabled"], true, "{got}");
}

/// Publishes one event through a node process; returns its id.
async fn publish_to(addr: std::net::SocketAddr, merchant: &str, data: Value) -> String {
    let response = http()
        .post(format!("http://{addr}/v1/events"))
        .basic_auth("app-key", Some("app-secret"))
        .json(&json!({"merchant_id": merchant, "kind": "payments", "event": "e", "data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

/// Two nodes on one PostgreSQL outbox with 3 s leases. While node A is alive, its lease
/// on a message whose attempt takes 8 s is renewed, so B never sends it meanwhile; once A
/// is `kill -9`ed holding the lease on a message whose attempt hangs, B sends it when
/// the lease runs out (3 s after A's last renewal), not after a long fixed lease.
#[tokio::test]
async fn a_killed_nodes_leased_messages_go_out_from_another_node_within_the_lease() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let webhooks = "lease_secs = 3";
    let database = format!("database_url = \"{}\"", pg.url);
    let toml = config(webhooks, &database).replace("timeout_secs = 2", "timeout_secs = 60");
    let b = TestServer::with_config(&toml).await;
    let receiver = Receiver::start().await;
    receiver.script([
        Answer::status(200).delay(Duration::from_secs(8)),
        Answer::status(200).delay(Duration::from_secs(600)),
    ]);
    let endpoint =
        create_endpoint(&b, json!({"url": receiver.url("/"), "merchant_id": "m1"})).await;
    let endpoint = endpoint["id"].as_str().unwrap().to_string();
    let a = process::NodeProcess::start(
        None,
        &format!(
            "{database}\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = [1]\n\
             retry_jitter = 0.0\ntimeout_secs = 60\npoll_interval_ms = 50\n{webhooks}"
        ),
    );

    // A holds the message for 8 s, past its 3 s lease: renewed, so B leaves it alone.
    let first = publish_to(a.addr, "m1", json!({"n": 1})).await;
    wait_log(&b, &endpoint, |log| {
        log["messages"][0]["id"] == first.as_str() && log["messages"][0]["status"] == "delivered"
    })
    .await;
    assert_eq!(
        receiver.received().len(),
        1,
        "a renewed lease keeps the other node off the message"
    );

    // A hangs on the next one and dies holding its lease: B sends it once that runs out.
    let second = publish_to(a.addr, "m1", json!({"n": 2})).await;
    receiver.wait_for(2, WAIT_LONG).await;
    drop(a); // kill -9
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got[1].header("webhook-id"), second);
    assert_eq!(got[2].header("webhook-id"), second);
    wait_log(&b, &endpoint, |log| {
        log["messages"][0]["id"] == second.as_str() && log["messages"][0]["status"] == "delivered"
    })
    .await;
}

/// On SQLite the file is one node's alone: a node restarted after `kill -9` sends at once
/// what its previous process held, whatever the lease (10 min here).
#[tokio::test]
async fn a_restarted_sqlite_node_sends_what_it_held_at_once() {
    let dir = std::env::temp_dir().join(format!("payrelay-lease-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outbox.db");
    let _ = std::fs::remove_file(&file);
    let settings = format!(
        "database_url = \"sqlite://{}\"\n[webhooks]\nallow_private_targets = true\n\
         retry_schedule_secs = [1]\nretry_jitter = 0.0\ntimeout_secs = 60\npoll_interval_ms = 50\n\
         lease_secs = 600",
        file.display()
    );
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(200).delay(Duration::from_secs(600))]);
    let node = process::NodeProcess::start(None, &settings);
    let response = http()
        .post(format!("http://{}/v1/webhooks/endpoints", node.addr))
        .basic_auth("app-key", Some("app-secret"))
        .json(&json!({"url": receiver.url("/"), "merchant_id": "m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = publish_to(node.addr, "m1", json!({})).await;
    receiver.wait_for(1, WAIT_LONG).await;
    drop(node); // kill -9, holding the lease for 10 minutes
    let node = process::NodeProcess::start(None, &settings);
    let got = receiver.wait_for(2, WAIT_LONG).await;
    assert_eq!(got[1].header("webhook-id"), id);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The app's backend may manage endpoints with a Pusher request signature instead of HTTP
/// Basic (issue 13: "authenticated like the existing simple routes"); a bad signature is a
/// 401, and no listing ever shows a secret.
#[tokio::test]
async fn the_app_backend_manages_endpoints_with_a_pusher_request_signature() {
    let server = node("").await;
    let receiver = Receiver::start().await;
    let (status, created) = server
        .api(
            "POST",
            "/v1/webhooks/endpoints",
            &[],
            Some(&json!({"url": receiver.url("/"), "merchant_id": "m1", "events": ["trade"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let path = format!("/v1/webhooks/endpoints/{id}");
    let (status, listed) = server.api("GET", "/v1/webhooks/endpoints", &[], None).await;
    assert_eq!(status, 200, "{listed}");
    assert!(listed.to_string().contains(&id));
    assert!(!listed.to_string().contains("whsec_"), "{listed}");
    let (status, edited) = server
        .api("PATCH", &path, &[], Some(&json!({"description": "signed"})))
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["description"], "signed");
    let (status, shown) = server.api("GET", &path, &[], None).await;
    assert_eq!(status, 200, "{shown}");
    assert!(!shown.to_string().contains("whsec_"), "{shown}");
    publish(&server, "m1", "trade", json!({"n": 1})).await;
    receiver.wait_for(1, WAIT).await;
    let log_path = format!("{path}/messages");
    let (status, log) = server
        .api("GET", &log_path, &[("status", "delivered")], None)
        .await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["messages"].as_array().unwrap().len(), 1, "{log}");
    let (status, refused) = server
        .api_signed("GET", "/v1/webhooks/endpoints", &[], None, "not-the-secret")
        .await;
    assert_eq!(status, 401, "{refused}");
    let (status, _) = server.api("DELETE", &path, &[], None).await;
    assert!(status == 200 || status == 204, "{status}");
    let (status, _) = server.api("GET", &path, &[], None).await;
    assert_eq!(status, 404);
}

/// The operator's `payrelay webhooks retry` and `recover`, on the database of a running
/// node: the node sends what they put back in the queue.
#[tokio::test]
async fn the_command_line_retries_and_recovers_failed_messages_of_a_running_node() {
    let dir = std::env::temp_dir().join(format!("payrelay-cli-recover-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("outbox.db");
    let _ = std::fs::remove_file(&file);
    let database = format!("database_url = \"sqlite://{}\"", file.display());
    let node = process::NodeProcess::start(
        None,
        &format!(
            "{database}\n[webhooks]\nallow_private_targets = true\nretry_schedule_secs = []\n\
             timeout_secs = 10\npoll_interval_ms = 50"
        ),
    );
    let config = dir.join("cli.toml");
    std::fs::write(
        &config,
        format!("{database}\n[[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n"),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_payrelay"))
            .arg("webhooks")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let receiver = Receiver::start().await;
    receiver.script([Answer::status(500), Answer::status(500)]);
    let response = http()
        .post(format!("http://{}/v1/webhooks/endpoints", node.addr))
        .basic_auth("app-key", Some("app-secret"))
        .json(&json!({"url": receiver.url("/"), "merchant_id": "m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    let endpoint = endpoint["id"].as_str().unwrap().to_string();
    let first = publish_to(node.addr, "m1", json!({"n": 1})).await;
    let second = publish_to(node.addr, "m1", json!({"n": 2})).await;
    receiver.wait_for(2, WAIT_LONG).await;
    let failed = |out: &str| out.matches("\"status\":\"failed\"").count();
    let deadline = Instant::now() + WAIT_LONG;
    while failed(&cli(&["messages", &endpoint, "--status", "failed"])) < 2 {
        assert!(Instant::now() < deadline, "both messages fail (no retries)");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cli(&["retry", &endpoint, &first]);
    let got = receiver.wait_for(3, WAIT_LONG).await;
    assert_eq!(
        (got[2].header("webhook-id"), got[2].status),
        (first.as_str(), 200)
    );
    cli(&["recover", &endpoint, "--since", "0"]);
    let got = receiver.wait_for(4, WAIT_LONG).await;
    assert_eq!(
        (got[3].header("webhook-id"), got[3].status),
        (second.as_str(), 200)
    );
    let deadline = Instant::now() + WAIT_LONG;
    while cli(&["messages", &endpoint, "--status", "delivered"])
        .matches("\"status\":\"delivered\"")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "both delivered in the log");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP forwarder in front of PostgreSQL that a test can cut (every connection through
/// it drops, new ones are refused) and restore, to play a database outage. A cut cancels
/// the links' token: a link accepted or connecting at that moment sees it too, so no
/// connection outlives the cut (a list of links to abort missed those).
struct CuttableProxy {
    addr: std::net::SocketAddr,
    links: std::sync::Arc<parking_lot::Mutex<Option<tokio_util::sync::CancellationToken>>>,
    accept: tokio::task::AbortHandle,
}

impl CuttableProxy {
    async fn start(upstream: String) -> CuttableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links = std::sync::Arc::new(parking_lot::Mutex::new(Some(
            tokio_util::sync::CancellationToken::new(),
        )));
        let links2 = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                // Cut: dropped, the database "does not answer".
                let Some(cut) = links2.lock().clone() else {
                    continue;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = async {
                            if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        } => {}
                    }
                });
            }
        })
        .abort_handle();
        CuttableProxy {
            addr,
            links,
            accept,
        }
    }

    fn cut(&self) {
        if let Some(links) = self.links.lock().take() {
            links.cancel();
        }
    }

    fn restore(&self) {
        let mut links = self.links.lock();
        if links.is_none() {
            *links = Some(tokio_util::sync::CancellationToken::new());
        }
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// README "Running several nodes", PostgreSQL down: open sockets stay open and keep
/// receiving; a publication a callback needs is refused with 503 (accepted means
/// recorded), one that no callback needs goes through; once the database is back the
/// node records and sends callbacks again without a restart.
#[tokio::test]
async fn a_postgresql_outage_refuses_only_what_a_callback_needs() {
    let Some(pg) = PgDatabase::create().await else {
        return;
    };
    let parsed = url::Url::parse(&pg.url).unwrap();
    let upstream = format!(
        "{}:{}",
        parsed.host_str().unwrap(),
        parsed.port().unwrap_or(5432)
    );
    let proxy = CuttableProxy::start(upstream).await;
    let mut through = parsed.clone();
    through.set_host(Some("127.0.0.1")).unwrap();
    through.set_port(Some(proxy.addr.port())).unwrap();
    let server =
        TestServer::with_config(&config("", &format!("database_url = \"{through}\""))).await;
    let receiver = Receiver::start().await;
    create_endpoint(
        &server,
        json!({"url": receiver.url("/"), "merchant_id": "m1"}),
    )
    .await;
    let (mut client, _) = server.connect_established().await;
    client.subscribed("news").await;

    proxy.cut();
    let body = json!({"merchant_id": "m1", "kind": "payments", "event": "trade", "data": {"n": 1}});
    let (status, reply) = server
        .basic_request("POST", "/v1/events", Some(&body))
        .await;
    assert_eq!(status, 503, "a callback cannot be recorded: {reply}");
    assert!(
        reply["error"].as_str().unwrap_or("").contains("outbox"),
        "{reply}"
    );
    // No callback needs this one: delivered, and the socket is still there.
    server.trigger("news", "headline", "still here").await;
    let frame = client.event("headline").await;
    assert_eq!(frame["data"], "still here");
    assert_eq!(receiver.received().len(), 0, "nothing refused was sent");

    proxy.restore();
    let deadline = Instant::now() + WAIT_LONG;
    let id = loop {
        let (status, reply) = server
            .basic_request("POST", "/v1/events", Some(&body))
            .await;
        if status == 200 {
            break reply["id"].as_str().unwrap().to_string();
        }
        assert_eq!(status, 503, "{reply}");
        assert!(
            Instant::now() < deadline,
            "the database came back, the node did not"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = receiver.wait_for(1, WAIT_LONG).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("webhook-id"), id);
}
