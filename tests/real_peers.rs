//! Real, unmodified third-party peers against a real node: pusher-js under Node, the npm
//! `pusher` server library, the PyPI `pusher` library. The scripts in `tests/peers/` are
//! self-checking; `scripts/setup-test-deps` installs what they need (and `scripts/test`
//! runs it first). A missing install fails these tests loudly rather than skipping them.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
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
    let mut command = Command::new(program);
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
