//! Merchant accounts: who a merchant's backend is, and which channels are its own.
//!
//! A merchant backend never holds the app secret. It proves itself with two credentials
//! that must agree: a JWT (verified per app, [`jwt`]) and an API key (issued and revoked
//! by the app, stored hashed, [`store`]). [`channels`] decides which channel names belong
//! to a merchant. The Pusher auth endpoint (`/v1/websocket/auth`) builds on these.

pub mod channels;
pub mod failures;
mod jwks;
pub(crate) use jwks::parse as parse_jwks;
pub mod jwt;
pub mod store;

pub use jwt::{JwtConfig, JwtError, JwtVerifier};
pub use store::{MerchantStore, StoreError};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use failures::FailureLimiter;

use crate::config::Config;

/// Everything the merchant-facing endpoints need: the key store and each app's JWT
/// verifier.
#[derive(Debug, Clone)]
pub struct Merchants {
    pub store: MerchantStore,
    verifiers: Arc<HashMap<String, JwtVerifier>>,
    /// Failed authentications per API key and per client address.
    pub failures: Arc<FailureLimiter>,
}

impl Merchants {
    /// The merchant store in the node's database `db`, and each app's JWT verifier.
    pub async fn open(config: &Config, db: &crate::db::Db) -> anyhow::Result<Merchants> {
        let store = MerchantStore::new(db.clone());
        let mut verifiers = HashMap::new();
        for app in &config.apps {
            if let Some(jwt) = &app.jwt {
                verifiers.insert(app.id.clone(), JwtVerifier::load(jwt).await?);
            }
        }
        Ok(Merchants {
            store,
            verifiers: Arc::new(verifiers),
            failures: Arc::new(FailureLimiter::new(
                config.auth_failures_per_minute,
                Duration::from_secs(60),
            )),
        })
    }

    /// The app's verifier, if the app accepts merchant JWTs.
    pub fn verifier(&self, app_id: &str) -> Option<&JwtVerifier> {
        self.verifiers.get(app_id)
    }
}
