//! Merchant accounts: who a merchant's backend is, and which channels are its own.
//!
//! A merchant backend never holds the app secret. It proves itself with two credentials
//! that must agree: a JWT (verified per app, [`jwt`]) and an API key (issued and revoked
//! by the app, stored hashed, [`store`]). [`channels`] decides which channel names belong
//! to a merchant. The Pusher auth endpoint (`/v1/websocket/auth`) builds on these.

pub mod channels;
pub mod jwt;
pub mod store;

pub use jwt::{JwtConfig, JwtError, JwtVerifier};
pub use store::{MerchantStore, StoreError};
