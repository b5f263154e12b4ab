//! Sandbox mode (`sandbox = true`): streams a merchant can watch with no credentials.
//!
//! Seed 000 promises a test stream "available all the time on the sandbox URL": a client
//! that subscribes to the public `test-channel` gets `subscription_succeeded` and then,
//! every `sandbox_test_interval_secs`, a `test-event`. It also promises exchange rates;
//! in the sandbox nobody publishes real ones, so a generator publishes a plausible random
//! walk every second on the exchange-rates `cache-` channel, where a new subscriber gets
//! the latest rates at once. Production nodes never run this (off by default).
//!
//! Both go through [`Core::publish`] like any backend's event, so they exercise the same
//! path, limits and metrics. In a cluster one node runs them, the holder of a lease in
//! Redis (renewed every second, taken over within 5 s when its holder dies, handed
//! back at once when it stops).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngExt;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::core::{Core, NewPublication};

/// The always-on public test channel named by the seed.
pub const TEST_CHANNEL: &str = "test-channel";
pub const TEST_EVENT: &str = "test-event";
/// Event name of a rates update on the exchange-rates channel.
pub const RATES_EVENT: &str = "rates";
const RATES_INTERVAL: Duration = Duration::from_secs(1);
const RATES_BASE: &str = "USD";
/// Starting points of the random walk: units of each currency per US dollar.
const STARTING_RATES: [(&str, f64); 7] = [
    ("EUR", 0.92),
    ("GBP", 0.79),
    ("JPY", 151.2),
    ("BRL", 5.05),
    ("INR", 83.3),
    ("USDT", 1.0),
    ("BTC", 0.0000155),
];
/// Largest relative move of one rate in one second (0.05 %).
const MAX_STEP: f64 = 0.0005;

pub struct Sandbox {
    test_interval: Duration,
    rates_channel: String,
}

impl Sandbox {
    /// The sandbox the configuration asks for, if any.
    pub fn from_config(config: &Config) -> Option<Sandbox> {
        config.sandbox.then(|| Sandbox {
            test_interval: Duration::from_secs(config.sandbox_test_interval_secs),
            rates_channel: config.exchange_rates_channel.clone(),
        })
    }

    /// Runs both generators until the returned task is aborted. With `lease` (a cluster
    /// member), they publish only while it is set: one node of the cluster generates.
    pub fn spawn(self, core: Arc<Core>, lease: Option<Arc<AtomicBool>>) -> JoinHandle<()> {
        let leading = move || {
            lease
                .as_ref()
                .is_none_or(|lease| lease.load(Ordering::Acquire))
        };
        tokio::spawn(async move {
            let mut test_tick = tokio::time::interval(self.test_interval);
            let mut rates_tick = tokio::time::interval(RATES_INTERVAL);
            let mut sequence: u64 = 0;
            let mut rates = RandomWalk::new();
            loop {
                tokio::select! {
                    _ = test_tick.tick() => {
                        if !leading() {
                            continue;
                        }
                        sequence += 1;
                        let data = json!({
                            "message": "Test event from the payrelay sandbox",
                            "sequence": sequence,
                            "timestamp": unix_now(),
                        });
                        publish_to_every_app(&core, TEST_CHANNEL, TEST_EVENT, &data).await;
                    }
                    _ = rates_tick.tick() => {
                        let data = rates.step();
                        if !leading() {
                            continue;
                        }
                        publish_to_every_app(&core, &self.rates_channel, RATES_EVENT, &data).await;
                    }
                }
            }
        })
    }
}

async fn publish_to_every_app(core: &Core, channel: &str, event: &str, data: &Value) {
    for app in core.apps.iter() {
        if !app.enabled {
            continue;
        }
        let publication = NewPublication {
            channel: channel.to_string(),
            event: event.to_string(),
            data: data.to_string(),
            ..Default::default()
        };
        if let Err(e) = core.publish(app, publication).await {
            tracing::warn!(app = %app.id, channel, "sandbox publish failed: {e}");
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Exchange rates that drift by at most [`MAX_STEP`] per step, so charts look alive but
/// no rate jumps implausibly.
struct RandomWalk {
    rates: Vec<(&'static str, f64)>,
}

impl RandomWalk {
    fn new() -> Self {
        RandomWalk {
            rates: STARTING_RATES.to_vec(),
        }
    }

    fn step(&mut self) -> Value {
        let mut rng = rand::rng();
        let mut out = Map::new();
        for (currency, rate) in &mut self.rates {
            *rate *= 1.0 + rng.random_range(-MAX_STEP..=MAX_STEP);
            out.insert((*currency).to_string(), json!(round_significant(*rate, 6)));
        }
        json!({"base": RATES_BASE, "timestamp": unix_now(), "rates": out})
    }
}

/// Rounds to `digits` significant digits: 151.2345678 -> 151.235, 0.0000155123 -> 0.0000155123.
fn round_significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let scale = 10f64.powi(digits - 1 - magnitude);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_drift_but_stay_plausible() {
        let mut walk = RandomWalk::new();
        let mut last = walk.step();
        for _ in 0..600 {
            last = walk.step();
        }
        assert_eq!(last["base"], "USD");
        let eur = last["rates"]["EUR"].as_f64().unwrap();
        // Ten minutes of 0.05 % steps cannot move a rate by more than ~35 %.
        assert!((0.6..1.3).contains(&eur), "EUR {eur}");
        assert!(last["rates"]["BTC"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn rounding_keeps_significant_digits() {
        assert_eq!(round_significant(151.2345678, 6), 151.235);
        assert!((round_significant(0.0000155123456, 6) - 0.0000155123).abs() < 1e-15);
    }
}
