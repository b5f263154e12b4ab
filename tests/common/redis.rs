//! A private `redis-server` for tests that must stop Redis (outages, reconnection) or
//! that must not depend on a shared one.
//!
//! The shared Redis on 127.0.0.1:6379 belongs to everyone on the machine and is never
//! stopped or flushed by a test. A [`PrivateRedis`] is this test's own server, on a free
//! port, with persistence off (`--save '' --appendonly no`), so stopping it loses its data
//! as an outage would. It can be stopped and started again on the same port (clients that
//! reconnect find it where they left it), and it is killed when dropped, panics included.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server gets to answer `PING` after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port; panics with the reason if `redis-server` cannot run
    /// (it is part of the test setup, as Redis on 6379 is for `scripts/test`).
    pub async fn start() -> PrivateRedis {
        match Self::try_start().await {
            Ok(redis) => redis,
            Err(e) => panic!("cannot start a private redis-server: {e}"),
        }
    }

    /// Starts a server on a free port. Another process may take the port between our
    /// probe and the server's bind, so a server that fails to bind is retried elsewhere.
    pub async fn try_start() -> Result<PrivateRedis, String> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let mut redis = PrivateRedis { port, child: None };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (as a crash or an outage would) and waits until its port refuses
    /// connections. Everything it held is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(self.addr()).is_ok() {
            assert!(
                Instant::now() < deadline,
                "redis on {} did not stop",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the server again on the same port (empty: it keeps nothing on disk).
    pub async fn restart(&mut self) {
        self.stop().await;
        // Whatever held the port must let go of it; retry a few times before giving up.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn().await {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!("cannot restart redis on port {}: {e}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server: {e} (is it installed?)"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server on port {} exited at start ({status}); port taken?",
                    self.port
                ));
            }
            if answers_ping(self.addr()) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether a Redis server answers `PING` at `addr` (inline command, `+PONG` reply).
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// The environment variable `scripts/test` sets to the Redis the suite uses.
pub const TEST_REDIS_URL_VAR: &str = "PAYRELAY_TEST_REDIS_URL";

/// The Redis a test that needs one (but need not stop it) talks to, alive as long as this.
pub struct TestRedis {
    url: String,
    _private: Option<PrivateRedis>,
}

impl TestRedis {
    /// `$PAYRELAY_TEST_REDIS_URL` when set (`scripts/test` sets it, to the shared Redis or
    /// to a private one it started); else the shared Redis on 127.0.0.1:6379 if it
    /// answers; else a private `redis-server` started for this test. There is no skip: a
    /// test that needs Redis gets one or fails saying why.
    pub async fn get() -> TestRedis {
        if let Some(url) = std::env::var(TEST_REDIS_URL_VAR)
            .ok()
            .filter(|u| !u.is_empty())
        {
            assert!(
                answers(&url).await,
                "{TEST_REDIS_URL_VAR}={url} does not answer"
            );
            return TestRedis {
                url,
                _private: None,
            };
        }
        let shared = "redis://127.0.0.1:6379/";
        if answers(shared).await {
            return TestRedis {
                url: shared.into(),
                _private: None,
            };
        }
        let private = PrivateRedis::start().await;
        println!(
            "no Redis answers at {shared}: this test runs on a private redis-server at {}",
            private.url()
        );
        TestRedis {
            url: private.url(),
            _private: Some(private),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection for the test's own reads and writes.
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url.as_str())
            .expect("a redis URL")
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

async fn answers(url: &str) -> bool {
    let Ok(client) = ::redis::Client::open(url) else {
        return false;
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.get_multiplexed_async_connection()
        )
        .await,
        Ok(Ok(_))
    )
}
