//! A live client connection as the core sees it, whatever its protocol.
//!
//! The adapter's task owns the socket; the core holds this shared handle so the hub can
//! queue frames for it and other parts of the node (shutdown, terminate, diagnostics) can
//! reach it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use super::{App, Outbox, Principal, SocketId};

#[derive(Debug)]
pub struct Connection {
    pub id: SocketId,
    pub app: Arc<App>,
    /// Which adapter serves it (`pusher`, ...), for metrics and diagnostics.
    pub protocol: &'static str,
    pub remote: SocketAddr,
    pub connected_at: SystemTime,
    pub outbox: Outbox,
    principal: OnceLock<Principal>,
    /// An id of the credential the connection was opened with (never the credential
    /// itself), so revoking it can close exactly these connections.
    credential: OnceLock<Arc<str>>,
    /// The user this connection is narrowed to, if it is: it then receives only the
    /// publications marked for that user or for everyone (see [`Audience`]).
    ///
    /// [`Audience`]: super::Audience
    narrowed_to: OnceLock<Arc<str>>,
    subscriptions: AtomicUsize,
    /// Names of the subscribed channels, for diagnostics (`/api/v1/ws/connections`).
    channel_names: parking_lot::Mutex<Vec<Arc<str>>>,
}

impl Connection {
    pub(crate) fn new(
        id: SocketId,
        app: Arc<App>,
        protocol: &'static str,
        remote: SocketAddr,
        queue_capacity: usize,
    ) -> Self {
        Connection {
            id,
            app,
            protocol,
            remote,
            connected_at: SystemTime::now(),
            outbox: Outbox::new(queue_capacity),
            principal: OnceLock::new(),
            credential: OnceLock::new(),
            narrowed_to: OnceLock::new(),
            channel_names: parking_lot::Mutex::new(Vec::new()),
            subscriptions: AtomicUsize::new(0),
        }
    }

    /// Who this connection is signed in as, once it is.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.get()
    }

    /// The end user this connection is signed in as, if it is signed in as a user.
    pub fn user_id(&self) -> Option<&Arc<str>> {
        match self.principal.get()? {
            Principal::User(id) => Some(id),
            Principal::Merchant(_) => None,
        }
    }

    /// The merchant this connection is signed in as, if it is signed in as a merchant.
    pub fn merchant_id(&self) -> Option<&Arc<str>> {
        match self.principal.get()? {
            Principal::Merchant(id) => Some(id),
            Principal::User(_) => None,
        }
    }

    pub(crate) fn set_principal(&self, principal: Principal) -> Result<(), Principal> {
        self.principal.set(principal)
    }

    pub fn credential(&self) -> Option<&Arc<str>> {
        self.credential.get()
    }

    /// Records the credential id once, when the connection is opened.
    pub fn set_credential(&self, credential: Arc<str>) {
        let _ = self.credential.set(credential);
    }

    /// Narrows what the connection receives to publications marked for `user` or for
    /// everyone. Set once, before the connection subscribes to anything.
    pub fn narrow_to_user(&self, user: Arc<str>) {
        let _ = self.narrowed_to.set(user);
    }

    /// The user the connection is narrowed to, if any.
    pub fn narrowed_to(&self) -> Option<&Arc<str>> {
        self.narrowed_to.get()
    }

    /// Whether `publication` is for this connection, among its channel's subscribers.
    pub fn receives(&self, publication: &super::Publication) -> bool {
        self.narrowed_to
            .get()
            .is_none_or(|user| publication.audience.reaches(user))
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// The channels this connection is subscribed to, as the core names them.
    pub fn channels(&self) -> Vec<Arc<str>> {
        self.channel_names.lock().clone()
    }

    pub(crate) fn note_subscribed(&self, channel: Arc<str>) {
        self.channel_names.lock().push(channel);
    }

    pub(crate) fn note_unsubscribed(&self, channel: &str) {
        self.channel_names.lock().retain(|c| &**c != channel);
    }

    pub(crate) fn add_subscriptions(&self, delta: isize) {
        if delta >= 0 {
            self.subscriptions
                .fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.subscriptions
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}
