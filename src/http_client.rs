//! The node's outgoing HTTP client (JWKS fetches, and later webhooks).
//!
//! reqwest is built without a default TLS provider; rustls with `ring` is installed here
//! once, so HTTPS works without the C toolchain aws-lc needs. Every outgoing client must
//! be built through [`builder`] so the provider is in place first.

use std::sync::OnceLock;
use std::time::Duration;

/// A builder with the process's TLS provider installed.
pub fn builder() -> reqwest::ClientBuilder {
    // Fails only if a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().connect_timeout(Duration::from_secs(10))
}

/// A shared client for short requests (connection pool reused across calls).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        builder()
            .user_agent(concat!("payrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds with the installed TLS provider")
    })
}
