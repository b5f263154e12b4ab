//! The server under test: where its sockets and HTTP API are, and the app to use.
//!
//! Any Pusher-compatible server works; only loopback addresses are accepted, because the
//! generator is built to saturate what it points at.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocols::pusher::request_auth::sign_query;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// Host and port of the server, e.g. `127.0.0.1:6001`.
    pub addr: SocketAddr,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    /// What the bench sockets speak.
    #[serde(default)]
    pub protocol: Protocol,
}

/// The wire protocol of the bench's sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Pusher protocol 7 on `/app/{key}`, public channels.
    #[default]
    Pusher,
    /// Socket.IO v4 on `/socket.io/` with a merchant API key per "channel" (merchant);
    /// events go to `private-merchant.{merchant}` (payrelay's gateway only).
    Socketio,
    /// Payment request sockets on `/sign/{uuid}`; each "channel" is a payload the bench
    /// creates (`POST /api/v1/platform/payload`, payrelay only).
    Payload,
}

impl Target {
    /// Resolves `url` (`http://`, `ws://` or bare `host:port`) to a loopback address.
    pub fn new(url: &str, app_id: &str, key: &str, secret: &str) -> anyhow::Result<Target> {
        let host_port = url
            .split_once("://")
            .map_or(url, |(_, rest)| rest)
            .trim_end_matches('/');
        let addr = host_port
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("cannot resolve {url}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{url} resolves to no address"))?;
        if !addr.ip().is_loopback() {
            anyhow::bail!("{url} is not a loopback address; the bench only targets this machine");
        }
        Ok(Target {
            addr,
            app_id: app_id.to_string(),
            key: key.to_string(),
            secret: secret.to_string(),
            protocol: Protocol::Pusher,
        })
    }

    /// The Socket.IO handshake URL for a merchant API key.
    pub fn socketio_url(&self, api_key: &str) -> String {
        format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&apiKey={api_key}",
            self.addr
        )
    }

    /// The channels the bench sockets join, from `names`: the names themselves for
    /// Pusher; for Socket.IO each name is a merchant that gets a fresh API key (through
    /// the key admin API), and its channel is `private-merchant.{name}`. For payload sockets each name
    /// stands for a payload created for the run, and the channel is its uuid. Returns the
    /// channels and, for Socket.IO, the key for each.
    pub async fn prepare_channels(
        &self,
        names: Vec<String>,
    ) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        match self.protocol {
            Protocol::Pusher => return Ok((names, Vec::new())),
            Protocol::Payload => {
                let (uuids, _) = self.create_payloads(names.len(), 3600.0, 32).await?;
                return Ok((uuids, Vec::new()));
            }
            Protocol::Socketio => {}
        }
        let http = crate::http_client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut channels = Vec::with_capacity(names.len());
        let mut keys = Vec::with_capacity(names.len());
        for merchant in names {
            let url = format!(
                "http://{}/apps/{}/merchants/{merchant}/keys",
                self.addr, self.app_id
            );
            let response = http
                .post(url)
                .basic_auth(&self.key, Some(&self.secret))
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let Some(api_key) = body["api_key"].as_str() else {
                anyhow::bail!("cannot create an API key for {merchant}: {status} {body}");
            };
            keys.push(api_key.to_string());
            channels.push(format!("private-merchant.{merchant}"));
        }
        Ok((channels, keys))
    }

    /// Creates `count` SignIn payloads expiring in `expire_secs`, `concurrency` requests
    /// in flight; returns their uuids and how long it took.
    pub async fn create_payloads(
        &self,
        count: usize,
        expire_secs: f64,
        concurrency: usize,
    ) -> anyhow::Result<(Vec<String>, Duration)> {
        let http = crate::http_client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let started = std::time::Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let created = parking_lot::Mutex::new(Vec::with_capacity(count));
        let creator = || async {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                let uuid = self.create_payload(&http, expire_secs).await?;
                created.lock().push(uuid);
            }
            Ok::<_, anyhow::Error>(())
        };
        let creators = (0..concurrency.clamp(1, count.max(1))).map(|_| creator());
        futures_util::future::try_join_all(creators).await?;
        Ok((created.into_inner(), started.elapsed()))
    }

    /// Creates one SignIn payload; returns its uuid.
    pub async fn create_payload(
        &self,
        http: &reqwest::Client,
        expire_secs: f64,
    ) -> anyhow::Result<String> {
        let body = serde_json::json!({
            "txjson": {"TransactionType": "SignIn"},
            "options": {"expire": expire_secs / 60.0},
        });
        let response = http
            .post(format!("http://{}/api/v1/platform/payload", self.addr))
            .basic_auth(&self.key, Some(&self.secret))
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        match answer["uuid"].as_str() {
            Some(uuid) => Ok(uuid.to_string()),
            None => anyhow::bail!("cannot create a payload: {status} {answer}"),
        }
    }

    /// `POST /v1/payloads/{uuid}/opened`, as the signing side reports it.
    pub async fn open_payload(&self, http: &reqwest::Client, uuid: &str) -> anyhow::Result<()> {
        let response = http
            .post(format!("http://{}/v1/payloads/{uuid}/opened", self.addr))
            .basic_auth(&self.key, Some(&self.secret))
            .json(&serde_json::json!({}))
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!("cannot open payload {uuid}: {}", response.status());
        }
        Ok(())
    }

    /// The socket URL of payload `uuid`.
    pub fn payload_url(&self, uuid: &str) -> String {
        format!("ws://{}/sign/{uuid}", self.addr)
    }

    pub fn socket_url(&self) -> String {
        format!(
            "ws://{}/app/{}?protocol=7&client=payrelay-bench&version=0.1",
            self.addr, self.key
        )
    }

    pub fn is_ipv4(&self) -> bool {
        matches!(self.addr.ip(), IpAddr::V4(_))
    }
}

/// Signs and sends Pusher HTTP API requests, as a server library would.
#[derive(Clone)]
pub struct Publisher {
    target: Target,
    http: reqwest::Client,
}

/// What one publish request came to.
#[derive(Debug, Clone, Copy)]
pub enum Published {
    Ok,
    Status(u16),
    Failed,
}

/// Publish results: how many the server accepted, and the rest by HTTP status
/// (`transport` when no response came).
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
}

impl Outcomes {
    pub fn record(&mut self, outcome: Published) {
        let reason = match outcome {
            Published::Ok => {
                self.ok += 1;
                return;
            }
            Published::Status(code) => code.to_string(),
            Published::Failed => "transport".into(),
        };
        *self.errors.entry(reason).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Publisher {
    pub fn new(target: &Target) -> anyhow::Result<Publisher> {
        let http = crate::http_client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(Publisher {
            target: target.clone(),
            http,
        })
    }

    /// `POST /apps/{id}/events` with one event on one channel.
    pub async fn trigger(&self, channel: &str, event: &str, data: &str) -> Published {
        let body = serde_json::json!({"name": event, "channel": channel, "data": data});
        self.post("events", body).await
    }

    /// `POST /apps/{id}/batch_events`: one event per item of `data`, all on `channel`,
    /// as a server library's `triggerBatch` sends them (Pusher allows 10 per request).
    pub async fn trigger_batch(&self, channel: &str, event: &str, data: &[String]) -> Published {
        let batch: Vec<_> = data
            .iter()
            .map(|d| serde_json::json!({"name": event, "channel": channel, "data": d}))
            .collect();
        self.post("batch_events", serde_json::json!({ "batch": batch }))
            .await
    }

    async fn post(&self, route: &str, body: serde_json::Value) -> Published {
        let path = format!("/apps/{}/{route}", self.target.app_id);
        let body = body.to_string().into_bytes();
        let now = (super::payload::now_micros() / 1_000_000) as i64;
        let query = sign_query(
            &self.target.key,
            &self.target.secret,
            "POST",
            &path,
            &[],
            &body,
            now,
        );
        let url = format!("http://{}{path}?{query}", self.target.addr);
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => Published::Ok,
            Ok(response) => Published::Status(response.status().as_u16()),
            Err(_) => Published::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_of_every_form_resolve_to_loopback() {
        for url in [
            "127.0.0.1:6001",
            "http://127.0.0.1:6001",
            "ws://127.0.0.1:6001/",
        ] {
            let target = Target::new(url, "1", "k", "s").unwrap();
            assert_eq!(target.addr.port(), 6001, "{url}");
        }
    }

    #[test]
    fn remote_targets_are_refused() {
        let err = Target::new("10.1.2.3:6001", "1", "k", "s").unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
    }
}
