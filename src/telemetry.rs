//! Logs (`tracing`) and metrics (Prometheus) set-up.
//!
//! The Prometheus recorder is process-global and must exist before the core creates its
//! metric handles, so [`prometheus`] installs it on first use and every later caller (a
//! second server in the same test process, say) shares it.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the log subscriber. `RUST_LOG` overrides `level`. Safe to call twice.
pub fn init_tracing(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a human at a terminal; log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process's Prometheus handle, installing the recorder on first call.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency_buckets = [
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("latency_seconds".into()), &latency_buckets)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        "payrelay_connections",
        "Open client connections, by protocol"
    );
    describe_counter!(
        "payrelay_connections_opened_total",
        "Connections admitted, by protocol"
    );
    describe_gauge!(
        "payrelay_subscriptions",
        "Channel subscriptions held by open connections"
    );
    describe_counter!(
        "payrelay_messages_in_total",
        "Frames received from clients, by protocol"
    );
    describe_counter!(
        "payrelay_messages_out_total",
        "Publications queued to connections"
    );
    describe_counter!(
        "payrelay_publications_total",
        "Events accepted by the publish path"
    );
    describe_histogram!(
        "payrelay_publish_latency_seconds",
        "From accepting a publication to queuing it for every local subscriber"
    );
    describe_counter!(
        "payrelay_history_appended_total",
        "Publications kept in channel history"
    );
    describe_counter!(
        "payrelay_history_evicted_total",
        "Events dropped from channel history, by reason (size, ttl, memory)"
    );
    describe_gauge!(
        "payrelay_history_events",
        "Events retained in the embedded channel history"
    );
    describe_gauge!(
        "payrelay_history_bytes",
        "Memory (bytes, as allocated) the embedded history counts against history_max_bytes"
    );
    describe_gauge!(
        "payrelay_history_streams",
        "Channel streams the embedded history knows (with events or only a position)"
    );
    describe_counter!(
        "payrelay_slow_consumer_disconnects_total",
        "Connections closed because they could not keep up"
    );
}
