//! The `payrelay` binary: configuration errors, the development default, SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

const BIN: &str = env!("CARGO_BIN_EXE_payrelay");

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("payrelay-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("payrelay.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_configuration_stops_startup_naming_the_key() {
    let cases = [
        ("unknown-top", "bnid = \"127.0.0.1:0\"", "bnid"),
        (
            "unknown-app",
            "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_conections=1",
            "max_conections",
        ),
        (
            "bad-value",
            "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\nmax_message_size=-5",
            "apps[0].max_message_size",
        ),
    ];
    for (name, text, key) in cases {
        let path = temp_config(name, text);
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn a_configuration_without_apps_is_refused() {
    // Such a node would start and refuse every connection and API call, silently.
    let path = temp_config("no-apps", "bind = \"127.0.0.1:0\"\n");
    let mut child = Serving(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = child.exit_within(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("[[apps]]"), "{stderr}");
}

/// A running `payrelay` child. Dropping it kills the process, so a failed assertion
/// between spawn and shutdown does not leave a server running after the test.
struct Serving(std::process::Child);

impl Serving {
    fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// Waits for the process to exit by itself, polling so the test's runtime stays free.
    async fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "payrelay did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn sigterm(pid: &str) {
    let status = Command::new("kill").args(["-TERM", pid]).status().unwrap();
    assert!(status.success());
}

/// Starts the binary and returns it with the address it logged and the log lines so far.
fn spawn(args: &[&str]) -> (Serving, String, Vec<String>) {
    // A folder of this test process's own: without --config the node opens
    // `payrelay.db` in its working directory, and a shared one (the temp dir itself) may
    // hold a database another build migrated.
    let cwd = std::env::temp_dir().join(format!("payrelay-cli-{}-serve", std::process::id()));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Serving(
        Command::new(BIN)
            .current_dir(&cwd)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[payrelay] {line}");
            seen.push(line.clone());
            if line.contains("payrelay listening")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let lines = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server logs its address");
    let line = lines.last().unwrap();
    let addr = if line.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
        json["addr"].as_str().expect("addr field").to_string()
    } else {
        line.split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("address in log line")
            .to_string()
    };
    (child, addr, lines)
}

#[tokio::test]
async fn sigterm_closes_clients_with_4200_and_exits_zero() {
    let path = temp_config(
        "sigterm",
        "bind = \"127.0.0.1:0\"\n[[apps]]\nid=\"1\"\nkey=\"app-key\"\nsecret=\"app-secret\"",
    );
    let (mut child, addr, _) = spawn(&["serve", "--config", path.to_str().unwrap()]);
    let mut client = Client::connect(&format!("ws://{addr}/app/app-key?protocol=7")).await;
    client.established().await;

    let started = Instant::now();
    sigterm(&child.pid());
    assert_eq!(client.event("pusher:error").await["data"]["code"], 4200);
    assert_eq!(client.closed().await.0, 4200);
    let exit = child.exit_within(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn serve_without_config_runs_the_development_app() {
    // --bind keeps the test off the default port; everything else is the embedded default.
    let (mut child, addr, lines) =
        spawn(&["serve", "--bind", "127.0.0.1:0", "--log-format", "json"]);
    let warning = lines
        .iter()
        .find(|l| l.contains("development app"))
        .expect("a warning about the development app");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(
        lines.iter().all(|l| !l.contains("app-secret")),
        "the secret is never logged"
    );
    let mut client = Client::connect(&format!("ws://{addr}/app/app-key?protocol=7")).await;
    client.established().await;
    sigterm(&child.pid());
    child.exit_within(Duration::from_secs(15)).await;
}

#[test]
fn keys_are_created_listed_and_revoked_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("payrelay-cli-{}-keys", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("keys.db");
    let _ = std::fs::remove_file(&db);
    let config = temp_config(
        "keys",
        &format!(
            "database_url = \"sqlite://{}\"\n[[apps]]\nid=\"7\"\nkey=\"k7\"\nsecret=\"secret-123\"\n",
            db.display()
        ),
    );
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("keys")
            .args(args)
            .arg("--config")
            .arg(&config)
            .args(["--app", "7"])
            .output()
            .unwrap()
    };

    let created = run(&["create", "--merchant", "merchant_001"]);
    assert!(created.status.success(), "{created:?}");
    let key: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let api_key = key["api_key"].as_str().unwrap();
    assert!(api_key.starts_with("prk_"));
    assert!(String::from_utf8_lossy(&created.stderr).contains("only once"));

    let listed = run(&["list"]);
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(listing.contains("merchant_001"), "{listing}");
    assert!(!listing.contains(api_key), "the listing shows no key");

    let key_id = key["key_id"].as_str().unwrap();
    assert!(run(&["revoke", key_id]).status.success());
    assert_eq!(run(&["revoke", key_id]).status.code(), Some(1));
    let listed = run(&["list", "--merchant", "merchant_001"]);
    let line: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(line["revoked_at"].is_number(), "{line}");

    // An app the configuration does not have is refused.
    let wrong = Command::new(BIN)
        .args(["keys", "list", "--app", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(dir);
}

/// Issue 12 item 19: relative paths in a configuration file are the file's, not the
/// working directory's. `keys create` run from one directory and `keys list` from another
/// see the same store, next to the configuration (the default `database_url` included),
/// and a relative `public_key_file` is found too.
#[test]
fn relative_paths_resolve_against_the_config_files_folder() {
    let root = std::env::temp_dir().join(format!("payrelay-cli-{}-relative", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let etc = root.join("etc");
    let elsewhere = root.join("elsewhere");
    let other = root.join("other");
    for dir in [&etc, &elsewhere, &other] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let pem = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt/rs256-public.pem"
    );
    std::fs::copy(pem, etc.join("jwt.pem")).unwrap();
    let app = "[[apps]]\nid=\"7\"\nkey=\"k7\"\nsecret=\"secret-123\"\n\
               [apps.jwt]\nalgorithm=\"RS256\"\npublic_key_file=\"jwt.pem\"\n";
    for (name, database_url, db) in [
        (
            "explicit",
            "database_url = \"sqlite://data/keys.db\"\n",
            "data/keys.db",
        ),
        ("bare", "database_url = \"sqlite:bare.db\"\n", "bare.db"),
        ("default", "", "payrelay.db"),
    ] {
        let config = etc.join(format!("{name}.toml"));
        std::fs::write(&config, format!("{database_url}{app}")).unwrap();
        std::fs::create_dir_all(etc.join("data")).unwrap();
        let run = |cwd: &std::path::Path, args: &[&str]| {
            Command::new(BIN)
                .current_dir(cwd)
                .arg("keys")
                .args(args)
                .arg("--config")
                .arg(&config)
                .args(["--app", "7"])
                .output()
                .unwrap()
        };
        let created = run(&elsewhere, &["create", "--merchant", "merchant_001"]);
        assert!(created.status.success(), "{name}: {created:?}");
        let listed = run(&other, &["list"]);
        assert!(listed.status.success(), "{name}: {listed:?}");
        let listing = String::from_utf8_lossy(&listed.stdout);
        assert!(listing.contains("merchant_001"), "{name}: {listing:?}");
        assert!(
            etc.join(db).exists(),
            "{name}: the store is next to the config"
        );
        for cwd in [&elsewhere, &other] {
            let stray = std::fs::read_dir(cwd).unwrap().count();
            assert_eq!(
                stray, 0,
                "{name}: nothing is created in the working directory"
            );
        }
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Issue 12 item 9: credentials in URLs never reach the log. Start-up fails here on a
/// Redis that does not answer, on a JWKS URL that does not answer and on a store that
/// cannot be opened; each error names the URL, without its password or query values.
#[test]
fn urls_in_startup_errors_are_logged_without_their_credentials() {
    let dir = std::env::temp_dir().join(format!("payrelay-cli-{}-redact", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let app = "[[apps]]\nid=\"1\"\nkey=\"k\"\nsecret=\"secret-123\"\n";
    // (name, config, the URL as the log names it, RUST_LOG). The store case runs at the
    // default level: sqlx's own debug log quotes a SQLite open error, parameter and all
    // (SQLite URLs carry no credentials; the case checks payrelay's own messages).
    let cases = [
        (
            "redis",
            format!(
                "bind=\"127.0.0.1:0\"\ndatabase_url=\"sqlite::memory:\"\nredis_url = \"redis://default:hunter2pw@127.0.0.1:1/0\"\n{app}"
            ),
            "redis://***@127.0.0.1:1/0",
            "trace",
        ),
        (
            "jwks",
            format!(
                "bind=\"127.0.0.1:0\"\ndatabase_url=\"sqlite::memory:\"\n{app}[apps.jwt]\nalgorithm=\"RS256\"\njwks_url=\"https://idp:hunter2pw@127.0.0.1:1/jwks?access_token=hunter2tok\"\n"
            ),
            "https://***@127.0.0.1:1/jwks?access_token=***",
            "trace",
        ),
        (
            "store",
            format!(
                "bind=\"127.0.0.1:0\"\ndatabase_url=\"sqlite:///nonexistent-dir/x.db?vfs=hunter2vfs\"\n{app}"
            ),
            "sqlite:///nonexistent-dir/x.db?vfs=***",
            "info",
        ),
        (
            "postgres",
            format!(
                "bind=\"127.0.0.1:0\"\ndatabase_url=\"postgres://payrelay:hunter2pw@127.0.0.1:1/payrelay?password=hunter2tok\"\n{app}"
            ),
            "postgres://***@127.0.0.1:1/payrelay?password=***",
            "trace",
        ),
    ];
    for (name, text, shown, level) in cases {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", level)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}: start-up should fail");
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            log.contains(shown),
            "{name}: the URL is named, redacted: {log}"
        );
        for secret in ["hunter2pw", "hunter2tok", "hunter2vfs"] {
            assert!(!log.contains(secret), "{name}: {secret} leaked: {log}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn webhook_endpoints_are_managed_from_the_command_line() {
    let config = temp_config(
        "webhooks",
        "database_url = \"sqlite://hooks.db\"\n[[apps]]\nid=\"7\"\nkey=\"k7\"\nsecret=\"secret-123\"\n",
    );
    let _ = std::fs::remove_file(config.with_file_name("hooks.db"));
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .arg("webhooks")
            .args(args)
            .arg("--config")
            .arg(&config)
            .args(["--app", "7"])
            .output()
            .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            output.status.code(),
            lines,
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, created, stderr) = run(&[
        "create",
        "--url",
        "https://merchant.example.com/hooks",
        "--merchant",
        "m1",
        "--event",
        "trade",
        "--event",
        "payment.*",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("only once"));
    let endpoint = &created[0];
    let id = endpoint["id"].as_str().unwrap();
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        endpoint["events"],
        serde_json::json!(["trade", "payment.*"])
    );

    let (_, listed, _) = run(&["list"]);
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("secret").is_none(), "never listed");
    let (_, updated, _) = run(&["update", id, "--disable", "--all-events"]);
    assert_eq!(updated[0]["enabled"], false);
    assert_eq!(updated[0]["events"], serde_json::Value::Null);
    let (_, rotated, _) = run(&["rotate-secret", id]);
    assert_ne!(rotated[0]["secret"], endpoint["secret"]);
    let (_, log, _) = run(&["messages", id]);
    assert_eq!(log[0]["messages"], serde_json::json!([]));
    let (code, _, stderr) = run(&["create", "--url", "ftp://nope"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("http"), "{stderr}");
    assert_eq!(run(&["delete", id]).0, Some(0));
    assert_eq!(run(&["show", id]).0, Some(1));
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}
