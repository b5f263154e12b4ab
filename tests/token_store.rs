//! The token stores under stress: a Redis outage (on a private `redis-server` this test
//! stops and starts again), records another backend wrote, and the SQLite file locked by
//! another process.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_private_redis_stops_and_comes_back_on_the_same_port() {
    let mut redis = PrivateRedis::start().await;
    let port = redis.port();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = ::redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut connection)
        .await
        .unwrap();
    redis.stop().await;
    assert!(!redis.is_running());
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection()
        )
        .await
        .is_ok_and(|c| c.is_err()),
        "a stopped server refuses connections"
    );
    redis.restart().await;
    assert_eq!(redis.port(), port);
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = ::redis::cmd("GET")
        .arg("k")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(value, None, "nothing survives a stop: persistence is off");
}

/// Another process holding the SQLite file's write lock, as the `sqlite3` shell does
/// inside a transaction (or a backup tool writing to it). Released on drop.
struct ExternalWriteLock {
    shell: std::process::Child,
}

impl ExternalWriteLock {
    async fn take(path: &std::path::Path) -> ExternalWriteLock {
        use std::io::{BufRead, Write};
        use std::process::{Command, Stdio};
        let mut shell = Command::new("sqlite3")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sqlite3 runs (the SQLite shell is part of the test setup)");
        let mut stdin = shell.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN IMMEDIATE; INSERT INTO merchants VALUES ('lock', 'lock', 0); SELECT 'locked';"
        )
        .unwrap();
        stdin.flush().unwrap();
        // Keep stdin open: the shell waits for more input with the transaction open.
        std::mem::forget(stdin);
        let stdout = shell.stdout.take().unwrap();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map(|_| line)
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(line.trim(), "locked", "the shell took the write lock");
        ExternalWriteLock { shell }
    }
}

impl Drop for ExternalWriteLock {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

#[tokio::test]
async fn reads_do_not_queue_behind_writes_stuck_on_another_process_lock() {
    let dir = std::env::temp_dir().join(format!("payrelay-lock-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("payrelay.db");
    let server =
        TestServer::with_settings(&format!("database_url = \"sqlite://{}\"", db.display()), "")
            .await;
    let key = server
        .merchants()
        .store
        .create_key(APP_ID, "merchant_001")
        .await
        .unwrap();
    let (status, minted) = server
        .basic_request(
            "POST",
            "/api/v1/tokens",
            Some(&serde_json::json!({"user_id": "u1", "ttl_secs": 600})),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["data"]["token"].as_str().unwrap().to_string();

    let _lock = ExternalWriteLock::take(&db).await;
    // Writes to both stores now wait on the lock (up to their busy timeout) ...
    let mut writers = Vec::new();
    for n in 0..6 {
        let url = server.url("/api/v1/tokens");
        writers.push(tokio::spawn(
            http()
                .post(url)
                .basic_auth(KEY, Some(SECRET))
                .json(&serde_json::json!({"user_id": format!("w{n}"), "ttl_secs": 60}))
                .send(),
        ));
        let url = server.url(&format!("/apps/{APP_ID}/merchants/m{n}/keys"));
        writers.push(tokio::spawn(
            http().post(url).basic_auth(KEY, Some(SECRET)).send(),
        ));
    }
    // ... give them a head start to take every connection they can ...
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... and reads of both stores still answer at once: an API key lookup (what merchant
    // auth does) and a plain socket's admission (a token lookup).
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let found = tokio::time::timeout(
            Duration::from_secs(2),
            server.merchants().store.find_key(&key.api_key),
        )
        .await
        .expect("an API key lookup answers within 2 s during the lock")
        .unwrap();
        assert_eq!(
            found.map(|k| k.merchant_id).as_deref(),
            Some("merchant_001")
        );
        let admitted = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(server.ws_url(&format!("/api/v1/ws?token={token}"))),
        )
        .await
        .expect("admission answers within 2 s during the lock");
        assert!(admitted.is_ok(), "admitted: {admitted:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for writer in writers {
        writer.abort();
    }
    let _ = std::fs::remove_dir_all(dir);
}
