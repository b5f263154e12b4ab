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
