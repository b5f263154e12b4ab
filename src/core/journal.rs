//! The publication journal: what must outlive a crash before a publication is accepted.
//!
//! The core knows nothing of webhooks. It only promises that, when a journal is set, a
//! publication is offered to it before the broker sees it, and that the publishing API
//! answers only after the journal's write finished: so a callback a publication implies is
//! durably recorded before anyone is told the event was accepted. The webhook outbox
//! (`src/webhooks`) is the journal today; a journal that has nothing to record for a
//! publication says so at once, and the publish path then pays nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Publication;

/// A journal's write in progress; the publish path awaits it.
pub type JournalWrite = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

pub trait PublicationJournal: Send + Sync + 'static {
    /// Starts recording `publication`, or `None` when nothing about it must be recorded
    /// (the common case, which must cost no more than a lookup).
    fn record(&self, publication: &Arc<Publication>) -> Option<JournalWrite>;
}
