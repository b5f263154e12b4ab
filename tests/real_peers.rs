//! Real, unmodified third-party peers against a real node: pusher-js under Node, the npm
//! `pusher` server library, the PyPI `pusher` library, npm `ws` for the plain JSON
//! protocol. The scripts in `tests/peers/` are self-checking; `scripts/setup-test-deps`
//! installs what they need (and `scripts/test` runs it first). A missing install fails
//! these tests loudly rather than skipping them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestServer, now};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tokio::process::Command;

const PEER_TIMEOUT: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    let python = repo().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-test-deps (scripts/test does it for you)",
        python.display()
    );
    python
}

fn require_node_modules() {
    let marker = repo().join("tests/peers/node_modules/pusher-js/package.json");
    assert!(
        marker.exists(),
        "tests/peers/node_modules is missing: run scripts/setup-test-deps (scripts/test does it for you)"
    );
}

/// Runs a peer script against `server` and fails the test with its output if it fails.
async fn run_peer(server: &TestServer, program: &Path, script: &str) {
    run_peer_with(server, program, script, &[]).await;
}

async fn run_peer_with(server: &TestServer, program: &Path, script: &str, env: &[(&str, String)]) {
    let mut command = Command::new(program);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command
        .arg(repo().join("tests/peers").join(script))
        .current_dir(repo().join("tests/peers"))
        .env("PAYRELAY_HOST", server.addr.ip().to_string())
        .env("PAYRELAY_PORT", server.addr.port().to_string())
        .env("PAYRELAY_APP_ID", common::APP_ID)
        .env("PAYRELAY_KEY", common::KEY)
        .env("PAYRELAY_SECRET", common::SECRET)
        .env("PAYRELAY_PYTHON", python())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PEER_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within {PEER_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {script} stdout ---\n{stdout}\n--- {script} stderr ---\n{stderr}");
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
}

#[tokio::test]
async fn pusher_js_with_npm_and_pypi_server_libraries() {
    require_node_modules();
    let server = TestServer::start().await;
    run_peer(&server, Path::new("node"), "pusher_js_channels.mjs").await;
}

#[tokio::test]
async fn pypi_pusher_library_reads_channels_and_sees_refusals() {
    let server = TestServer::start().await;
    let python = python();
    run_peer(&server, &python, "pusher_py_channels.py").await;
}

#[tokio::test]
async fn pusher_js_custom_authorizer_calls_the_merchant_auth_endpoint() {
    require_node_modules();
    const JWT_SECRET: &str = "merchant-jwt-secret-0123456789";
    // A test-only key (`openssl rand -base64 32`), for the encrypted-channel scenario.
    const MASTER_KEY: &str = "dGhpcyBpcyBhIHRlc3Qgb25seSBtYXN0ZXIga2V5ISE=";
    let server = TestServer::with_settings(
        "",
        &format!(
            "encryption_master_key_base64 = \"{MASTER_KEY}\"\n\
             [apps.jwt]\nalgorithm = \"HS256\"\nsecret = \"merchant-jwt-secret-0123456789\""
        ),
    )
    .await;
    let store = &server.merchants().store;
    let good = store.create_key("1", "merchant_001").await.unwrap();
    let revoked = store.create_key("1", "merchant_001").await.unwrap();
    store.revoke_key("1", &revoked.key_id).await.unwrap();
    let other = store.create_key("1", "merchant_002").await.unwrap();
    let jwt = |exp_offset: i64| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"merchant_id": "merchant_001", "exp": now() + exp_offset}),
            &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(json!({"merchant_id": "merchant_001", "exp": now() + 60}))
    );
    let env = [
        ("PAYRELAY_MERCHANT", "merchant_001".to_string()),
        ("PAYRELAY_JWT", jwt(300)),
        ("PAYRELAY_API_KEY", good.api_key),
        ("PAYRELAY_JWT_EXPIRED", jwt(-300)),
        ("PAYRELAY_JWT_ALG_NONE", alg_none),
        ("PAYRELAY_API_KEY_REVOKED", revoked.api_key),
        ("PAYRELAY_API_KEY_OTHER", other.api_key),
        ("PAYRELAY_ENCRYPTION_MASTER_KEY", MASTER_KEY.to_string()),
    ];
    run_peer_with(&server, Path::new("node"), "pusher_js_merchant.mjs", &env).await;
}

#[tokio::test]
async fn plain_json_protocol_with_the_npm_ws_client() {
    require_node_modules();
    let plain = |extra: &str| {
        format!(
            "[apps.plain]\nallowed_origins = [\"https://app.example.com\", \"https://*.example.org\"]\n\
             max_invalid_messages = 2\nping_interval_secs = 1\ntoken_recheck_secs = 30\n{extra}"
        )
    };
    let server = TestServer::with_settings("pong_timeout_secs = 1", &plain("")).await;
    let disabled = TestServer::with_settings("", &plain("websocket_enabled = false")).await;
    let env = [("PAYRELAY_DISABLED_PORT", disabled.addr.port().to_string())];
    run_peer_with(&server, Path::new("node"), "plain_ws.mjs", &env).await;
}

#[tokio::test]
async fn plain_protocol_recovery_with_the_npm_ws_client() {
    require_node_modules();
    let server = TestServer::with_settings("", "[apps.history]\nsize = 50").await;
    run_peer(&server, Path::new("node"), "plain_ws_recovery.mjs").await;
}

#[tokio::test]
async fn pusher_js_recovery_with_the_resume_helper() {
    require_node_modules();
    let server = TestServer::with_settings("", "[apps.history]\nsize = 50").await;
    run_peer(&server, Path::new("node"), "pusher_js_recovery.mjs").await;
}

/// Seed 003's merchant setup: M with a live, a revoked and a to-be-revoked key, and
/// another merchant N.
async fn socketio_env(server: &TestServer) -> Vec<(&'static str, String)> {
    let store = &server.merchants().store;
    let key = store.create_key("1", "merchant_001").await.unwrap();
    let revoked = store.create_key("1", "merchant_001").await.unwrap();
    store.revoke_key("1", &revoked.key_id).await.unwrap();
    let doomed = store.create_key("1", "merchant_001").await.unwrap();
    let other = store.create_key("1", "merchant_002").await.unwrap();
    vec![
        ("PAYRELAY_MERCHANT", "merchant_001".to_string()),
        ("PAYRELAY_API_KEY", key.api_key),
        ("PAYRELAY_API_KEY_OTHER", other.api_key),
        ("PAYRELAY_API_KEY_REVOKED", revoked.api_key),
        ("PAYRELAY_API_KEY_DOOMED", doomed.api_key),
        ("PAYRELAY_API_KEY_DOOMED_ID", doomed.key_id),
    ]
}

#[tokio::test]
async fn socketio_client_runs_the_seed_snippet() {
    require_node_modules();
    let server = TestServer::start().await;
    let env = socketio_env(&server).await;
    run_peer_with(&server, Path::new("node"), "socketio_client.mjs", &env).await;
}

#[tokio::test]
async fn python_socketio_is_a_second_independent_client() {
    let server = TestServer::start().await;
    let env = socketio_env(&server).await;
    run_peer_with(&server, &python(), "socketio_client.py", &env).await;
}

#[tokio::test]
async fn socketio_client_reconnects_after_a_slow_consumer_close() {
    require_node_modules();
    // Small queues and one second of patience: a client that stops reading is given up
    // on within seconds.
    let server =
        TestServer::with_settings("outbound_queue_size = 16\npong_timeout_secs = 1", "").await;
    let key = server
        .merchants()
        .store
        .create_key("1", "merchant_001")
        .await
        .unwrap();
    let env = [
        ("PAYRELAY_MERCHANT", "merchant_001".to_string()),
        ("PAYRELAY_API_KEY", key.api_key),
    ];
    run_peer_with(&server, Path::new("node"), "socketio_reconnect.mjs", &env).await;
}

#[tokio::test]
async fn tls_clients_verify_the_node_certificate() {
    require_node_modules();
    let ca = common::tls::TestCa::new("peers");
    let dir = common::tls::temp_dir("peers");
    let settings = common::tls::install(&dir, &ca.issue("payrelay peers"));
    let server = TestServer::with_settings(&settings, "").await;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let other_file = dir.join("other-ca.pem");
    std::fs::write(&other_file, common::tls::TestCa::new("stranger").pem()).unwrap();
    let key = server
        .merchants()
        .store
        .create_key("1", "merchant_001")
        .await
        .unwrap();
    let ca_path = ca_file.display().to_string();
    let env = [
        ("NODE_EXTRA_CA_CERTS", ca_path.clone()),
        ("PAYRELAY_TLS_CA", ca_path),
        ("PAYRELAY_OTHER_CA", other_file.display().to_string()),
        ("PAYRELAY_MERCHANT", "merchant_001".to_string()),
        ("PAYRELAY_API_KEY", key.api_key),
    ];
    run_peer_with(&server, Path::new("node"), "tls_clients.mjs", &env).await;
}

#[tokio::test]
async fn token_lifetimes_and_scopes_with_ws_and_socketio_client() {
    require_node_modules();
    let server = TestServer::with_settings(
        "",
        "[apps.socketio]\ndisconnect_on_token_expiry = true\nclient_token_scope = \"user\"",
    )
    .await;
    let env = [("PAYRELAY_MERCHANT", "merchant_001".to_string())];
    run_peer_with(&server, Path::new("node"), "token_lifetimes.mjs", &env).await;
}

/// The README's callback receivers, on the official `standardwebhooks` libraries (npm and
/// PyPI), verify what payrelay sends as it is sent: events of each kind of data, and
/// after a secret rotation with the receiver still holding the old secret. A forged
/// signature is refused by the same receiver, so it is really checking.
async fn official_verifier_accepts_callbacks(program: &Path, script: &str) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let server = TestServer::with_config(
        "bind = \"127.0.0.1:0\"\n[webhooks]\nallow_private_targets = true\npoll_interval_ms = 50\n\
         [[apps]]\nid = \"1\"\nkey = \"app-key\"\nsecret = \"app-secret\"\n",
    )
    .await;
    // The endpoint is made first (its secret is the receiver's), then pointed at the port
    // the receiver got from the system: no port is picked and bound later.
    let (status, endpoint) = server
        .basic_request(
            "POST",
            "/v1/webhooks/endpoints",
            Some(&json!({"url": "http://127.0.0.1:9/webhooks", "merchant_id": "m1"})),
        )
        .await;
    assert_eq!(status, 201, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_string();
    let mut child = Command::new(program)
        .arg(repo().join("tests/peers").join(script))
        .current_dir(repo().join("tests/peers"))
        .env("WEBHOOK_SECRET", &secret)
        .env("PORT", "0")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = async || -> serde_json::Value {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{script} said nothing for 20 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("{script} ended"));
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{script}: {line}"))
    };
    let listening = next_line().await;
    assert_eq!(listening["listening"], true, "{listening}");
    let port = listening["port"].as_u64().expect("the receiver's port");
    let url = format!("http://127.0.0.1:{port}/webhooks");
    let id = endpoint["id"].as_str().unwrap();
    let (status, patched) = server
        .basic_request(
            "PATCH",
            &format!("/v1/webhooks/endpoints/{id}"),
            Some(&json!({"url": url})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["url"], url.as_str(), "{patched}");

    let mut sent = Vec::new();
    for data in [
        json!({"trade": {"id": "t1"}}),
        json!("plain text"),
        json!([1, 2]),
    ] {
        let (status, reply) = server
            .basic_request(
                "POST",
                "/v1/events",
                Some(&json!({"merchant_id": "m1", "kind": "merchant", "event": "trade", "data": data})),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        sent.push((reply["id"].as_str().unwrap().to_string(), data));
    }
    let (status, _) = server
        .basic_request(
            "POST",
            &format!("/v1/webhooks/endpoints/{id}/rotate-secret"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, reply) = server
        .basic_request(
            "POST",
            "/v1/events",
            Some(&json!({"merchant_id": "m1", "kind": "merchant", "event": "deposit", "data": {}})),
        )
        .await;
    sent.push((reply["id"].as_str().unwrap().to_string(), json!({})));
    let mut verified = Vec::new();
    while verified.len() < sent.len() {
        let line = next_line().await;
        assert!(
            line.get("rejected").is_none(),
            "{script} refused a callback: {line}"
        );
        verified.push((
            line["verified"].as_str().unwrap().to_string(),
            line["data"].clone(),
        ));
    }
    verified.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(verified, sent, "every event, verified, with its data");

    let forged = common::http()
        .post(&url)
        .header("webhook-id", "evt_forged")
        .header("webhook-timestamp", now().to_string())
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    assert!(next_line().await.get("rejected").is_some());
}

#[tokio::test]
async fn npm_standardwebhooks_verifies_callbacks() {
    require_node_modules();
    official_verifier_accepts_callbacks(Path::new("node"), "webhook_receiver.mjs").await;
}

#[tokio::test]
async fn pypi_standardwebhooks_verifies_callbacks() {
    official_verifier_accepts_callbacks(&python(), "webhook_receiver.py").await;
}

/// An app whose key and secret are UUIDs: xumm-sdk accepts no other credentials.
const XUMM_KEY: &str = "3c9d1f0e-6a1b-4c5d-8e7f-0a1b2c3d4e5f";
const XUMM_SECRET: &str = "9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d";

async fn xumm_node() -> (TestServer, [(&'static str, String); 2]) {
    let server = TestServer::with_config(&format!(
        "bind = \"127.0.0.1:0\"\n[[apps]]\nid = \"1\"\nkey = \"{XUMM_KEY}\"\nsecret = \"{XUMM_SECRET}\"\n"
    ))
    .await;
    let env = [
        ("PAYRELAY_XUMM_KEY", XUMM_KEY.to_string()),
        ("PAYRELAY_XUMM_SECRET", XUMM_SECRET.to_string()),
    ];
    (server, env)
}

#[tokio::test]
async fn xumm_sdk_creates_gets_cancels_and_subscribes() {
    require_node_modules();
    let (server, env) = xumm_node().await;
    let mut env = env.to_vec();
    // Every scenario but the minute-long one, which has a test of its own.
    env.push(("PAYRELAY_ONLY", String::new()));
    env.push(("PAYRELAY_SKIP", "keepalive".to_string()));
    run_peer_with(&server, Path::new("node"), "xumm_sdk.mjs", &env).await;
}

#[tokio::test]
async fn xumm_sdk_keeps_a_subscription_for_a_minute_without_reconnecting() {
    require_node_modules();
    let (server, env) = xumm_node().await;
    let mut env = env.to_vec();
    env.push(("PAYRELAY_ONLY", "keepalive".to_string()));
    run_peer_with(&server, Path::new("node"), "xumm_sdk.mjs", &env).await;
}
