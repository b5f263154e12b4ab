//! Endpoints in memory, by owner: what the publish path asks "does anyone want this?".
//!
//! The answer must cost nothing when nobody does (the common case on the fan-out path), so
//! it is a read lock and two hash lookups by `&str`, after an atomic that says whether
//! there are endpoints at all. The database stays the truth: every change made through
//! this node updates the index at once, and the maintenance task checks the table every
//! second and reloads it when it changed, so changes made by another node (sharing
//! PostgreSQL) or by `payrelay webhooks` arrive within about a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

use super::endpoint::{Endpoint, Kind};

#[derive(Debug, Default)]
struct AppEndpoints {
    by_merchant: HashMap<Arc<str>, Vec<Arc<Endpoint>>>,
    /// The app's own Standard Webhooks endpoints (app-level events).
    own: Vec<Arc<Endpoint>>,
    /// Pusher app webhooks from the configuration.
    pusher: Vec<Arc<Endpoint>>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<Arc<str>, Arc<Endpoint>>,
    by_app: HashMap<Arc<str>, AppEndpoints>,
}

#[derive(Debug, Default)]
pub struct EndpointIndex {
    inner: RwLock<Inner>,
    any_enabled: AtomicBool,
}

impl EndpointIndex {
    /// Replaces everything with `endpoints` (a reload from the database).
    pub fn replace_all(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        let mut inner = Inner::default();
        for endpoint in endpoints {
            inner.by_id.insert(endpoint.id.clone(), Arc::new(endpoint));
        }
        Self::rebuild(&mut inner);
        self.publish(inner);
    }

    /// Adds or replaces one endpoint.
    pub fn upsert(&self, endpoint: Endpoint) {
        let mut inner = self.inner.write();
        inner.by_id.insert(endpoint.id.clone(), Arc::new(endpoint));
        Self::rebuild(&mut inner);
        self.any_enabled
            .store(inner.by_id.values().any(|e| e.enabled), Ordering::Release);
    }

    pub fn remove(&self, id: &str) {
        let mut inner = self.inner.write();
        inner.by_id.remove(id);
        Self::rebuild(&mut inner);
        self.any_enabled
            .store(inner.by_id.values().any(|e| e.enabled), Ordering::Release);
    }

    /// Marks an endpoint disabled (the dispatcher disabled it).
    pub fn disable(&self, id: &str) {
        let current = self.get(id);
        if let Some(current) = current {
            let mut endpoint = (*current).clone();
            endpoint.enabled = false;
            self.upsert(endpoint);
        }
    }

    fn publish(&self, inner: Inner) {
        let any = inner.by_id.values().any(|e| e.enabled);
        *self.inner.write() = inner;
        self.any_enabled.store(any, Ordering::Release);
    }

    fn rebuild(inner: &mut Inner) {
        let mut by_app: HashMap<Arc<str>, AppEndpoints> = HashMap::new();
        for endpoint in inner.by_id.values().filter(|e| e.enabled) {
            let app = by_app.entry(endpoint.app_id.clone()).or_default();
            match (&endpoint.kind, &endpoint.merchant_id) {
                (Kind::Pusher, _) => app.pusher.push(endpoint.clone()),
                (Kind::Standard, Some(merchant)) => app
                    .by_merchant
                    .entry(merchant.clone())
                    .or_default()
                    .push(endpoint.clone()),
                (Kind::Standard, None) => app.own.push(endpoint.clone()),
            }
        }
        inner.by_app = by_app;
    }

    pub fn get(&self, id: &str) -> Option<Arc<Endpoint>> {
        self.inner.read().by_id.get(id).cloned()
    }

    /// Whether any enabled endpoint exists (the publish path's first, lock-free check).
    pub fn is_empty(&self) -> bool {
        !self.any_enabled.load(Ordering::Acquire)
    }

    /// Enabled Standard Webhooks endpoints of `merchant` (or of the app itself, for
    /// `None`) whose filter takes `event`.
    pub fn standard_for(
        &self,
        app: &str,
        merchant: Option<&str>,
        event: &str,
    ) -> Vec<Arc<Endpoint>> {
        let inner = self.inner.read();
        let Some(app) = inner.by_app.get(app) else {
            return Vec::new();
        };
        let candidates = match merchant {
            Some(m) => app.by_merchant.get(m).map_or(&[][..], Vec::as_slice),
            None => &app.own[..],
        };
        candidates
            .iter()
            .filter(|e| e.filter.matches(event))
            .cloned()
            .collect()
    }

    /// Enabled Pusher app webhooks of `app` that asked for `event_type`.
    pub fn pusher_for(&self, app: &str, event_type: &str) -> Vec<Arc<Endpoint>> {
        let inner = self.inner.read();
        inner.by_app.get(app).map_or_else(Vec::new, |a| {
            a.pusher
                .iter()
                .filter(|e| e.filter.matches(event_type))
                .cloned()
                .collect()
        })
    }

    /// Whether `app` has a Pusher app webhook for `event_type` (cheap; hub callbacks ask).
    pub fn wants_pusher(&self, app: &str, event_type: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let inner = self.inner.read();
        inner
            .by_app
            .get(app)
            .is_some_and(|a| a.pusher.iter().any(|e| e.filter.matches(event_type)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::EventFilter;
    use super::*;

    fn endpoint(id: &str, merchant: Option<&str>, filter: EventFilter) -> Endpoint {
        Endpoint {
            id: id.into(),
            app_id: "1".into(),
            merchant_id: merchant.map(Into::into),
            kind: Kind::Standard,
            url: "https://example.com/".into(),
            filter,
            enabled: true,
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_until: 0,
        }
    }

    #[test]
    fn lookups_by_owner_and_filter() {
        let index = EndpointIndex::default();
        assert!(index.is_empty());
        index.upsert(endpoint("ep_a", Some("m1"), EventFilter::all()));
        index.upsert(endpoint(
            "ep_b",
            Some("m1"),
            EventFilter::new(vec!["payment.*".into()]).unwrap(),
        ));
        index.upsert(endpoint("ep_c", None, EventFilter::all()));
        assert!(!index.is_empty());
        assert_eq!(index.standard_for("1", Some("m1"), "trade").len(), 1);
        assert_eq!(index.standard_for("1", Some("m1"), "payment.paid").len(), 2);
        assert!(index.standard_for("1", Some("m2"), "trade").is_empty());
        assert!(index.standard_for("2", Some("m1"), "trade").is_empty());
        assert_eq!(index.standard_for("1", None, "payload.resolved").len(), 1);
        index.disable("ep_a");
        assert!(index.standard_for("1", Some("m1"), "trade").is_empty());
        index.remove("ep_b");
        index.remove("ep_c");
        assert!(index.is_empty());
    }
}
