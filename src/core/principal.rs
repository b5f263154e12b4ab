//! Who a connection is signed in as: an app's end user, or a merchant.
//!
//! The two are separate namespaces. User ids come from the app (Pusher `pusher:signin`,
//! plain-protocol tokens), merchant ids from the merchant store (Socket.IO API keys and
//! client tokens); both are free-form, so user "42" and merchant "42" are unrelated
//! parties. Everything that finds connections by identity (terminate, revocation, one
//! socket per user) names the namespace, so an operation on one never reaches the other.

use std::fmt;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// An end user of the app.
    User(Arc<str>),
    /// A merchant (its backend or front end).
    Merchant(Arc<str>),
}

impl Principal {
    pub fn user(id: &str) -> Self {
        Principal::User(Arc::from(id))
    }

    pub fn merchant(id: &str) -> Self {
        Principal::Merchant(Arc::from(id))
    }

    /// The namespace, for logs (which never name the id).
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User(_) => "user",
            Principal::Merchant(_) => "merchant",
        }
    }

    /// The id within its namespace.
    pub fn id(&self) -> &Arc<str> {
        match self {
            Principal::User(id) | Principal::Merchant(id) => id,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User(id) => write!(f, "user {id}"),
            Principal::Merchant(id) => write!(f, "merchant {id}"),
        }
    }
}
