//! payrelay: a real-time gateway for payment platforms.
//!
//! See ARCHITECTURE.md for the map. In short: [`core`] is protocol-neutral (apps, hub,
//! broker seam, sessions); [`protocols`] hold the adapters that speak each wire format;
//! [`http`] assembles the router; [`listener`] accepts connections and holds them to
//! limits and timeouts; [`server`] runs a node.

pub mod bench;
pub mod cluster;
pub mod config;
pub mod core;
pub mod db;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod http_client;
pub mod idempotency;
pub mod listener;
pub mod merchants;
pub mod payloads;
pub mod protocols;
pub mod redact;
pub mod redis_client;
pub mod sandbox;
pub mod server;
pub mod signing;
pub mod telemetry;
pub mod tokens;
pub mod webhooks;
