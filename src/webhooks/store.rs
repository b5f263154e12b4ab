//! The outbox's tables (`migrations/*/0003_webhooks.sql`, indexes and foreign keys as
//! `0005_outbox_claim_indexes.sql` and `0006_outbox_lean_indexes.sql` left them), on
//! SQLite or PostgreSQL.
//!
//! Every index on `webhook_deliveries` costs each delivered callback an entry when the
//! row is recorded and another when it is finished, so the table keeps only the key, the
//! claim's two partial indexes (pending rows) and two written only when a message
//! finishes (`finished`, retention) or fails (`failed`). Queries that used to have an
//! index of their own find their rows through these: the log filtered by status names
//! the status in its text so the partial index applies, and an event is deleted with its
//! last delivery, looked for under its owner's endpoints' keys.
//!
//! Writes that happen per message (recording events, recording attempt outcomes) take
//! whole batches, so the writer task ([`super::writer`]) commits many in one transaction:
//! multi-row `INSERT`s and one `UPDATE … FROM (VALUES …)`, never a statement per row
//! (on PostgreSQL one fixed statement over `UNNEST`ed arrays: see `write_batch_postgres`).
//! The claim ([`OutboxStore::claim`]) is one statement that picks due messages fairly
//! across endpoints (at most a per-endpoint number, counting those already leased, oldest
//! first within each endpoint, endpoints interleaved) and leases them only if nobody
//! holds them: two workers, or two nodes on PostgreSQL, never hold the same message. It
//! walks each endpoint's index entries, never the whole backlog: an endpoint that was down
//! for a day leaves a backlog that costs nothing per claim.
//!
//! A delivery has a `lease_owner` only while it is pending: every change away from
//! pending clears it, so "this node still holds the lease" is `lease_owner = owner` alone.
//!
//! The tables have no foreign keys: the writer inserts an event with its deliveries, and
//! an attempt after its delivery; the only deletions ([`OutboxStore::delete_endpoint`],
//! [`OutboxStore::prune`]) remove the children themselves.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row};

use super::endpoint::{Endpoint, EventFilter, Kind};
use crate::db::{Backend, Db, HeldConnections, on_pool};

/// Rows per multi-row statement: far below both backends' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 500;

pub const PENDING: &str = "pending";
pub const DELIVERED: &str = "delivered";
pub const FAILED: &str = "failed";

/// An endpoint as stored (the API shows most of it).
#[derive(Debug, Clone)]
pub struct EndpointRow {
    pub id: String,
    pub app_id: String,
    pub merchant_id: Option<String>,
    pub kind: Kind,
    pub url: String,
    pub description: Option<String>,
    pub filter: EventFilter,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_until: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub failing_since: Option<i64>,
    pub last_success_at: Option<i64>,
}

impl EndpointRow {
    /// A new, enabled endpoint with nothing delivered yet.
    pub fn fresh(
        id: String,
        app_id: String,
        merchant_id: Option<String>,
        kind: Kind,
        url: String,
        filter: EventFilter,
        secret: String,
    ) -> Self {
        let now = crate::db::now_ms();
        EndpointRow {
            id,
            app_id,
            merchant_id,
            kind,
            url,
            description: None,
            filter,
            enabled: true,
            disabled_reason: None,
            secret,
            previous_secret: None,
            previous_until: 0,
            created_at: now,
            updated_at: now,
            failing_since: None,
            last_success_at: None,
        }
    }

    pub fn to_endpoint(&self) -> Endpoint {
        Endpoint {
            id: self.id.as_str().into(),
            app_id: self.app_id.as_str().into(),
            merchant_id: self.merchant_id.as_deref().map(Into::into),
            kind: self.kind,
            url: self.url.as_str().into(),
            filter: self.filter.clone(),
            enabled: self.enabled,
            secret: self.secret.as_str().into(),
            previous_secret: self.previous_secret.as_deref().map(Into::into),
            previous_until: self.previous_until,
        }
    }
}

const ENDPOINT_COLUMNS: &str = "id, app_id, merchant_id, kind, url, description, events, enabled, \
     disabled_reason, secret, previous_secret, previous_until, created_at, updated_at, \
     failing_since, last_success_at";

macro_rules! endpoint_row {
    ($r:expr) => {
        EndpointRow {
            id: $r.get(0),
            app_id: $r.get(1),
            merchant_id: $r.get(2),
            kind: Kind::parse(&$r.get::<String, _>(3)),
            url: $r.get(4),
            description: $r.get(5),
            filter: EventFilter::from_column($r.get(6)),
            enabled: $r.get(7),
            disabled_reason: $r.get(8),
            secret: $r.get(9),
            previous_secret: $r.get(10),
            previous_until: $r.get(11),
            created_at: $r.get(12),
            updated_at: $r.get(13),
            failing_since: $r.get(14),
            last_success_at: $r.get(15),
        }
    };
}

/// An event to record, with the endpoints it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub app_id: String,
    pub merchant_id: Option<String>,
    pub event_type: String,
    pub channel: Option<String>,
    pub payload: String,
    pub created_at: i64,
    pub deliveries: Vec<NewDelivery>,
}

impl NewEvent {
    /// An event for `endpoints`, none of them leased yet.
    pub fn for_endpoints(
        id: String,
        app_id: &str,
        merchant_id: Option<&str>,
        event_type: &str,
        channel: &str,
        payload: String,
        endpoints: &[std::sync::Arc<Endpoint>],
    ) -> Self {
        NewEvent {
            id,
            app_id: app_id.to_string(),
            merchant_id: merchant_id.map(str::to_string),
            event_type: event_type.to_string(),
            channel: Some(channel.to_string()),
            payload,
            created_at: crate::db::now_ms(),
            deliveries: endpoints
                .iter()
                .map(|e| NewDelivery {
                    endpoint_id: e.id.to_string(),
                    lease_until: 0,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub endpoint_id: String,
    /// Recorded already leased to this node (it sends at once), or left for a claim.
    pub lease_until: i64,
}

/// What an endpoint's attempts so far say about it, for the slots it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not failing, and a success recorded: up to `max_in_flight_per_endpoint` slots.
    Proven,
    /// Not failing, and no success yet (new, or never answered): one slot.
    Unproven,
    /// An attempt failed since its latest success: one slot.
    Failing,
}

impl Health {
    /// An endpoint's class from its row.
    pub fn of(row: &EndpointRow) -> Health {
        if row.failing_since.is_some() {
            Health::Failing
        } else if row.last_success_at.is_none() {
            Health::Unproven
        } else {
            Health::Proven
        }
    }

    /// As the claim query computes it from the row.
    fn code(self) -> i64 {
        match self {
            Health::Proven => 0,
            Health::Unproven => 1,
            Health::Failing => 2,
        }
    }
}

/// A message this node now holds the lease on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub endpoint_id: String,
    pub event_id: String,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What became of an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(i64),
    Failed,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub endpoint_id: String,
    pub event_id: String,
    /// The URL the attempt went to: it says something about the endpoint's health only
    /// while the endpoint still has that URL (an attempt started before an edit may end
    /// after it).
    pub url: String,
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
    /// The attempt count after this attempt.
    pub attempts: i64,
    pub next: Next,
    /// Whether the claim loop started it (not stored: the claimer counts these).
    pub claimed: bool,
}

/// One row of an endpoint's message log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageRow {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub channel: Option<String>,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub next_attempt_at: Option<i64>,
    pub attempt_log: Vec<AttemptRow>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub response_body: Option<String>,
}

/// Outbox figures for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    pub pending: i64,
    pub oldest_pending_created_at: Option<i64>,
    pub disabled_endpoints: i64,
}

#[derive(Debug, Clone)]
pub struct OutboxStore {
    db: Db,
    /// PostgreSQL: the connections that run the batch statement and nothing else (see
    /// [`BATCH_PLANNER_SETTINGS`]), opened as needed and held without the pool's tests.
    batches: Option<std::sync::Arc<HeldConnections>>,
}

/// Planner settings of the connections that write batches on PostgreSQL.
///
/// Every row the batch statement reads, it reads by key (an outcome's delivery, an
/// endpoint's health row), and the plan that does so is the only good one at any size.
/// But a connection plans the statement once and keeps the plan until the tables'
/// statistics change, and the first plans are made when the outbox is nearly empty (a
/// fresh database, a node's first minute, before autovacuum has looked): then a
/// sequential scan and hash join look cheapest, and every later batch reads the whole
/// table; or the partial index of pending rows looks tiny, and every batch reads each of
/// its entries, which include every row that was pending since the last vacuum
/// (`bench webhooks` on PostgreSQL: 2.1 ms a batch, most of it reading 20 000 index
/// entries to update 44 rows). Leaving the planner only index lookups and nested loops
/// keeps the plan the statement was written for, whatever the statistics say.
pub const BATCH_PLANNER_SETTINGS: [(&str, &str); 4] = [
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// Connections for the batch statement beside `main` (same server, same credentials),
/// with [`BATCH_PLANNER_SETTINGS`]: other statements keep the planner's own choices.
/// As many are opened as batches are written at once (`outbox_commits_in_flight`).
fn batch_connections(main: &sqlx::PgPool) -> HeldConnections {
    HeldConnections::new(
        (*main.connect_options())
            .clone()
            .options(BATCH_PLANNER_SETTINGS),
        crate::db::held::STATEMENT_TIMEOUT,
    )
}

impl OutboxStore {
    pub fn new(db: Db) -> Self {
        let batches = match &db {
            Db::Postgres(pool) => Some(std::sync::Arc::new(batch_connections(pool))),
            Db::Sqlite(_) => None,
        };
        OutboxStore { db, batches }
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    // ---------------------------------------------------------------- endpoints

    pub async fn insert_endpoint(&self, row: &EndpointRow) -> Result<(), sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, app_id, merchant_id, kind, url, description, events,
                   enabled, disabled_reason, secret, previous_secret, previous_until, created_at,
                   updated_at, failing_since, last_success_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&row.id)
            .bind(&row.app_id)
            .bind(&row.merchant_id)
            .bind(row.kind.as_str())
            .bind(&row.url)
            .bind(&row.description)
            .bind(row.filter.to_column())
            .bind(row.enabled)
            .bind(&row.disabled_reason)
            .bind(&row.secret)
            .bind(&row.previous_secret)
            .bind(row.previous_until)
            .bind(row.created_at)
            .bind(row.updated_at)
            .bind(row.failing_since)
            .bind(row.last_success_at)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// Writes every editable field of `row` (url, description, filter, enabled, secrets)
    /// and `failing_since`. A new URL clears `last_success_at` (the endpoint is unproven
    /// again); otherwise the column is left as it is, whatever `row` read earlier.
    pub async fn update_endpoint(&self, row: &EndpointRow) -> Result<bool, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, enabled = $4,
                   disabled_reason = $5, secret = $6, previous_secret = $7, previous_until = $8,
                   updated_at = $9, failing_since = $10,
                   last_success_at = CASE WHEN url = $1 THEN last_success_at ELSE NULL END
                 WHERE id = $11 AND app_id = $12",
            )
            .bind(&row.url)
            .bind(&row.description)
            .bind(row.filter.to_column())
            .bind(row.enabled)
            .bind(&row.disabled_reason)
            .bind(&row.secret)
            .bind(&row.previous_secret)
            .bind(row.previous_until)
            .bind(row.updated_at)
            .bind(row.failing_since)
            .bind(&row.id)
            .bind(&row.app_id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Deletes an endpoint with its deliveries and attempts, in one transaction (events
    /// are pruned later). The tables have no foreign keys to cascade (migration 0005):
    /// this is the one place an endpoint's rows go.
    pub async fn delete_endpoint(&self, app_id: &str, id: &str) -> Result<bool, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND app_id = $2")
                .bind(id)
                .bind(app_id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM webhook_attempts WHERE endpoint_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let events: Vec<String> = sqlx::query_scalar(
                "DELETE FROM webhook_deliveries WHERE endpoint_id = $1 RETURNING event_id",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                delete_unreferenced_events(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn endpoint(
        &self,
        app_id: &str,
        id: &str,
    ) -> Result<Option<EndpointRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1 AND app_id = $2"
        );
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(&sql).bind(id).bind(app_id).fetch_optional(pool).await?;
            Ok(row.map(|r| endpoint_row!(r)))
        })
    }

    /// The endpoint `id`, whichever app it belongs to (the dispatcher, for an endpoint
    /// another node made a moment ago).
    pub async fn endpoint_by_id(&self, id: &str) -> Result<Option<EndpointRow>, sqlx::Error> {
        let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            Ok(row.map(|r| endpoint_row!(r)))
        })
    }

    /// Endpoints of `app_id`; with `merchant`, only that merchant's (`Some(None)`: only
    /// the app's own).
    pub async fn endpoints(
        &self,
        app_id: Option<&str>,
        merchant: Option<Option<&str>>,
    ) -> Result<Vec<EndpointRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE ($1 IS NULL OR app_id = $1)
               AND ($2 = 0 OR ($3 IS NULL AND merchant_id IS NULL) OR merchant_id = $3)
             ORDER BY created_at, id"
        );
        let (scoped, merchant_id) = match merchant {
            None => (0_i64, None),
            Some(m) => (1, m),
        };
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(&sql)
                .bind(app_id)
                .bind(scoped)
                .bind(merchant_id)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| endpoint_row!(r)).collect())
        })
    }

    /// Disables an endpoint and fails its pending messages (they stay retryable). Returns
    /// whether this call disabled it (false: it was disabled already, by another node or
    /// its owner).
    ///
    /// With `only_at_url`, only an endpoint that still has that URL is disabled (a 410
    /// is the answer of the URL attempted, which an edit may have replaced meanwhile);
    /// otherwise nothing changes and the call returns false.
    pub async fn disable_endpoint(
        &self,
        id: &str,
        reason: &str,
        now: i64,
        only_at_url: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let mut tx = pool.begin().await?;
            let flipped = sqlx::query(
                "UPDATE webhook_endpoints SET enabled = $1, disabled_reason = $2, updated_at = $3
                 WHERE id = $4 AND enabled AND ($5 IS NULL OR url = $5)",
            )
            .bind(false)
            .bind(reason)
            .bind(now)
            .bind(id)
            .bind(only_at_url)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if only_at_url.is_some() && !flipped {
                return Ok(false);
            }
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', lease_until = 0, lease_owner = NULL,
                   updated_at = $1
                 WHERE endpoint_id = $2 AND status = 'pending'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(flipped)
        })
    }

    /// Enabled endpoints failing without a success since before `since` (ms).
    pub async fn failing_before(&self, since: i64) -> Result<Vec<EndpointRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE enabled AND failing_since IS NOT NULL AND failing_since <= $1"
        );
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(&sql).bind(since).fetch_all(pool).await?;
            Ok(rows.iter().map(|r| endpoint_row!(r)).collect())
        })
    }

    /// What changes when any endpoint is created, edited, disabled or deleted: their
    /// number and latest `updated_at`. A node compares it every second and reloads its
    /// index when it moved, so endpoints made through another node arrive quickly.
    pub async fn endpoints_version(&self) -> Result<(i64, i64), sqlx::Error> {
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM webhook_endpoints",
            )
            .fetch_one(pool)
            .await?;
            Ok((row.get(0), row.get(1)))
        })
    }

    // ---------------------------------------------------------------- the outbox

    /// Leases up to `limit` due messages until `lease_until`: at most `per_endpoint` per
    /// endpoint counting those already leased, the oldest of each endpoint first, one of
    /// every endpoint before a second of any. Only endpoints of the class `health` says:
    /// failing (an attempt failed since their latest success), unproven (not failing, no
    /// success recorded yet) or proven (not failing, a success recorded).
    pub async fn claim(
        &self,
        now: i64,
        lease_until: i64,
        owner: &str,
        per_endpoint: i64,
        limit: i64,
        health: Health,
    ) -> Result<Vec<Claimed>, sqlx::Error> {
        // Per endpoint of the class: the leases it holds (counted up to the share, all
        // that matters), then its oldest due messages (at most a share), numbered. Both
        // are short walks of an index on the endpoint (`webhook_deliveries_leased`,
        // `webhook_deliveries_due`), so a claim costs the same whatever the backlog;
        // only the picked rows are sorted to interleave endpoints. SQLite has no
        // LATERAL: a correlated `rowid IN (… LIMIT)` does the same walk there.
        let held = "
            SELECT e.id,
                   (SELECT COUNT(*) FROM (
                        SELECT 1 FROM webhook_deliveries l
                        WHERE l.endpoint_id = e.id AND l.status = 'pending'
                          AND l.lease_until > 0 AND l.lease_until > $1
                        LIMIT $4) AS held_rows) AS n
            FROM webhook_endpoints e
            WHERE e.enabled
              AND (CASE WHEN e.failing_since IS NOT NULL THEN 2
                        WHEN e.last_success_at IS NULL THEN 1 ELSE 0 END) = $6";
        let oldest_due = |columns: &str| {
            format!(
                "SELECT {columns} FROM webhook_deliveries x
                 WHERE x.endpoint_id = held.id AND x.status = 'pending'
                   AND x.next_attempt_at <= $1 AND x.lease_until <= $1
                 ORDER BY x.next_attempt_at, x.event_id
                 LIMIT $4"
            )
        };
        let due_of_held = match self.backend() {
            Backend::Sqlite => format!(
                "held JOIN webhook_deliveries d ON d.rowid IN ({})",
                oldest_due("x.rowid")
            ),
            Backend::Postgres => format!(
                "held CROSS JOIN LATERAL ({}) AS d",
                oldest_due("x.endpoint_id, x.event_id, x.next_attempt_at")
            ),
        };
        let candidates = |columns: &str| {
            format!(
                "WITH held AS ({held}),
             due AS (
                SELECT d.endpoint_id, d.event_id, d.next_attempt_at, held.n,
                       ROW_NUMBER() OVER (PARTITION BY d.endpoint_id
                                          ORDER BY d.next_attempt_at, d.event_id) AS rn
                FROM {due_of_held}
                WHERE held.n < $4
             )
             SELECT {columns} FROM due
             WHERE rn + n <= $4
             ORDER BY rn, next_attempt_at
             LIMIT $5"
            )
        };
        // The lease is taken only where nobody holds one (`lease_until <= now`), so a row
        // another worker claimed between the read and the write is skipped, not shared.
        // PostgreSQL also skips rows another node is claiming right now instead of
        // waiting for it.
        let sql = match self.backend() {
            Backend::Sqlite => format!(
                "UPDATE webhook_deliveries SET lease_until = $2, lease_owner = $3
                 WHERE status = 'pending' AND lease_until <= $1
                   AND (endpoint_id, event_id) IN ({})
                 RETURNING endpoint_id, event_id, attempts",
                candidates("endpoint_id, event_id")
            ),
            // The picked rows are found first (MATERIALIZED), then locked by key: left
            // to itself, the planner may instead walk every pending row and test each
            // against them, which is what this query exists to avoid. The key includes
            // the due time the row was picked at: the partial index of pending rows,
            // which the planner may prefer for `status = 'pending'`, then finds each row
            // directly instead of walking all of its endpoint's entries (dead ones too)
            // for each (a burst of 20 000 for one endpoint: 8 ms a claim, most of it
            // that walk). A row whose due time moved since is not due as it was picked.
            Backend::Postgres => format!(
                "WITH picked AS MATERIALIZED ({}),
                 locked AS (
                     SELECT d.endpoint_id, d.event_id
                     FROM picked JOIN webhook_deliveries d
                       ON d.endpoint_id = picked.endpoint_id AND d.event_id = picked.event_id
                      AND d.next_attempt_at = picked.next_attempt_at
                     WHERE d.status = 'pending' AND d.lease_until <= $1
                     FOR UPDATE OF d SKIP LOCKED)
                 UPDATE webhook_deliveries SET lease_until = $2, lease_owner = $3
                 FROM locked
                 WHERE webhook_deliveries.endpoint_id = locked.endpoint_id
                   AND webhook_deliveries.event_id = locked.event_id
                 RETURNING webhook_deliveries.endpoint_id, webhook_deliveries.event_id,
                           webhook_deliveries.attempts",
                candidates("endpoint_id, event_id, next_attempt_at")
            ),
        };
        on_pool!(self.db.writer(), pool => {
            let rows = sqlx::query(&sql)
                .bind(now)
                .bind(lease_until)
                .bind(owner)
                .bind(per_endpoint)
                .bind(limit)
                .bind(health.code())
                .fetch_all(pool)
                .await?;
            Ok(rows
                .iter()
                .map(|r| Claimed {
                    endpoint_id: r.get(0),
                    event_id: r.get(1),
                    attempts: r.get(2),
                })
                .collect())
        })
    }

    /// The bodies of these events, by id.
    pub async fn payloads(&self, ids: &[&str]) -> Result<HashMap<String, String>, sqlx::Error> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            on_pool!(self.db.reader(), pool => {
                let mut select = QueryBuilder::new("SELECT id, payload FROM webhook_events WHERE id IN (");
                let mut list = select.separated(", ");
                for id in chunk {
                    list.push_bind(*id);
                }
                select.push(")");
                for row in select.build().fetch_all(pool).await? {
                    found.insert(row.get(0), row.get(1));
                }
            });
        }
        Ok(found)
    }

    /// Records events (with their deliveries) and attempt outcomes in one transaction:
    /// one commit, one fsync on SQLite, for everything the writer gathered. Outcomes
    /// change only rows this node still holds the lease on (a lease that ran out belongs
    /// to someone else now); the attempt itself is always logged.
    ///
    /// "Holds the lease" is `lease_owner = owner`, with no test of `status`: only a
    /// pending row has an owner (every change away from pending clears it: an outcome,
    /// [`Self::disable_endpoint`]). A test of `status = 'pending'` would let PostgreSQL
    /// find the rows through the partial index of pending rows instead of by key (see
    /// [`BATCH_PLANNER_SETTINGS`]).
    pub async fn write_batch(
        &self,
        events: &[NewEvent],
        outcomes: &[Outcome],
        owner: &str,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if events.is_empty() && outcomes.is_empty() {
            return Ok(());
        }
        // Endpoint health: a success clears `failing_since`, a failure starts it, each
        // only if the endpoint still has the URL attempted (in id order: row locks are
        // always taken in one order).
        let mut health: std::collections::BTreeMap<(&str, &str), bool> = Default::default();
        for o in outcomes {
            let ok = o.next == Next::Delivered;
            let entry = health.entry((&o.endpoint_id, &o.url)).or_insert(ok);
            *entry |= ok;
        }
        let deliveries: Vec<(&NewEvent, &NewDelivery)> = events
            .iter()
            .flat_map(|e| e.deliveries.iter().map(move |d| (e, d)))
            .collect();
        if let Some(batches) = &self.batches {
            return batches
                .run(|mut conn| {
                    let (deliveries, health) = (&deliveries, &health);
                    Box::pin(async move {
                        let result = write_batch_postgres(
                            &mut conn, events, deliveries, outcomes, health, owner, now,
                        )
                        .await;
                        (conn, result)
                    })
                })
                .await;
        }
        on_pool!(self.db.writer(), pool => {
            let mut tx = pool.begin().await?;
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO webhook_events (id, app_id, merchant_id, event_type, channel, payload, created_at) ",
                );
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(&e.id)
                        .push_bind(&e.app_id)
                        .push_bind(&e.merchant_id)
                        .push_bind(&e.event_type)
                        .push_bind(&e.channel)
                        .push_bind(&e.payload)
                        .push_bind(e.created_at);
                });
                insert.build().execute(&mut *tx).await?;
            }
            for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::new(
                    "INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts,
                       next_attempt_at, lease_until, lease_owner, created_at, updated_at) ",
                );
                insert.push_values(chunk, |mut row, (e, d)| {
                    row.push_bind(&d.endpoint_id)
                        .push_bind(&e.id)
                        .push_bind(PENDING)
                        .push_bind(0_i64)
                        .push_bind(e.created_at)
                        .push_bind(d.lease_until)
                        .push_bind((d.lease_until > 0).then_some(owner))
                        .push_bind(e.created_at)
                        .push_bind(e.created_at);
                });
                insert.build().execute(&mut *tx).await?;
            }
            for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
                let mut update = QueryBuilder::new(
                    "UPDATE webhook_deliveries SET status = v.column3, attempts = v.column4,
                       next_attempt_at = v.column5, lease_until = 0, lease_owner = NULL, updated_at = ",
                );
                update.push_bind(now);
                update.push(" FROM (");
                update.push_values(chunk, |mut row, o| {
                    let (status, next_at) = match o.next {
                        Next::Delivered => (DELIVERED, o.attempted_at),
                        Next::RetryAt(at) => (PENDING, at),
                        Next::Failed => (FAILED, o.attempted_at),
                    };
                    row.push_bind(&o.endpoint_id)
                        .push_bind(&o.event_id)
                        .push_bind(status)
                        .push_bind(o.attempts)
                        .push_bind(next_at);
                });
                update.push(
                    ") AS v WHERE webhook_deliveries.endpoint_id = v.column1
                       AND webhook_deliveries.event_id = v.column2
                       AND webhook_deliveries.lease_owner = ",
                );
                update.push_bind(owner);
                update.build().execute(&mut *tx).await?;

                let mut insert = QueryBuilder::new(
                    "INSERT INTO webhook_attempts (endpoint_id, event_id, attempted_at, status_code,
                       error, latency_ms, response_body) ",
                );
                insert.push_values(chunk, |mut row, o| {
                    row.push_bind(&o.endpoint_id)
                        .push_bind(&o.event_id)
                        .push_bind(o.attempted_at)
                        .push_bind(o.status_code)
                        .push_bind(&o.error)
                        .push_bind(o.latency_ms)
                        .push_bind(&o.response_body);
                });
                insert.build().execute(&mut *tx).await?;
            }
            for ((endpoint_id, url), ok) in &health {
                // Only a change of state, or a success time more than a second old, is
                // written: a busy endpoint's row is not rewritten by every batch.
                let sql = if *ok {
                    "UPDATE webhook_endpoints SET failing_since = NULL, last_success_at = $1
                     WHERE id = $2 AND url = $3
                       AND (failing_since IS NOT NULL OR last_success_at IS NULL
                            OR last_success_at < $1 - 1000)"
                } else {
                    "UPDATE webhook_endpoints SET failing_since = $1
                     WHERE id = $2 AND url = $3 AND failing_since IS NULL"
                };
                sqlx::query(sql)
                    .bind(now)
                    .bind(*endpoint_id)
                    .bind(*url)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    /// When an endpoint began failing without a success since (ms), if it is.
    pub async fn failing_since(&self, endpoint_id: &str) -> Result<Option<i64>, sqlx::Error> {
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query("SELECT failing_since FROM webhook_endpoints WHERE id = $1")
                .bind(endpoint_id)
                .fetch_optional(pool)
                .await?;
            Ok(row.and_then(|r| r.get::<Option<i64>, _>(0)))
        })
    }

    /// Gives up the leases `owner` holds (a node shutting down leaves its unsent messages
    /// to the others at once), or every lease (`None`: a restarted single node, whose
    /// previous process held them and is dead).
    pub async fn release_leases(&self, owner: Option<&str>) -> Result<u64, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET lease_until = 0, lease_owner = NULL
                 WHERE status = 'pending' AND lease_until > 0 AND ($1 IS NULL OR lease_owner = $1)",
            )
            .bind(owner)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    /// Extends every lease `owner` still holds (its in-flight and queued messages) to
    /// `until`. A lease that already ran out is not renewed: another node may hold it.
    pub async fn renew_leases(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<u64, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET lease_until = $1
                 WHERE status = 'pending' AND lease_until > 0 AND lease_until > $2
                   AND lease_owner = $3",
            )
            .bind(until)
            .bind(now)
            .bind(owner)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    /// Gives back the lease `owner` took on one message, so any node may send it now.
    pub async fn release_lease(
        &self,
        endpoint_id: &str,
        event_id: &str,
        owner: &str,
    ) -> Result<(), sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET lease_until = 0, lease_owner = NULL
                 WHERE endpoint_id = $1 AND event_id = $2 AND status = 'pending' AND lease_owner = $3",
            )
            .bind(endpoint_id)
            .bind(event_id)
            .bind(owner)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    // ---------------------------------------------------------------- the log

    /// An endpoint's messages, newest first, with their attempts.
    pub async fn messages(
        &self,
        endpoint_id: &str,
        status: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        // The status is written into the statement (one of three words), so each filter
        // can use its index: failed messages `webhook_deliveries_failed`, pending ones
        // `webhook_deliveries_due`; delivered ones are most rows, read in key order.
        let only = match status {
            None => "",
            Some(PENDING) => "AND d.status = 'pending'",
            Some(DELIVERED) => "AND d.status = 'delivered'",
            Some(FAILED) => "AND d.status = 'failed'",
            Some(_) => return Ok(Vec::new()),
        };
        let sql = format!(
            "SELECT d.event_id, e.event_type, e.channel, d.status, d.attempts, e.created_at,
                    d.next_attempt_at
             FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
             WHERE d.endpoint_id = $1 {only} AND ($2 IS NULL OR d.event_id < $2)
             ORDER BY d.event_id DESC LIMIT $3"
        );
        let mut messages: Vec<MessageRow> = on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(&sql)
            .bind(endpoint_id)
            .bind(before)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    let status: String = r.get(3);
                    let next: i64 = r.get(6);
                    MessageRow {
                        id: r.get(0),
                        event_type: r.get(1),
                        channel: r.get(2),
                        next_attempt_at: (status == PENDING).then_some(next),
                        status,
                        attempts: r.get(4),
                        created_at: r.get(5),
                        attempt_log: Vec::new(),
                    }
                })
                .collect()
        });
        if messages.is_empty() {
            return Ok(messages);
        }
        let mut by_event: HashMap<String, Vec<AttemptRow>> = HashMap::new();
        on_pool!(self.db.reader(), pool => {
            let mut select = QueryBuilder::new(
                "SELECT event_id, attempted_at, status_code, error, latency_ms, response_body
                 FROM webhook_attempts WHERE endpoint_id = ",
            );
            select.push_bind(endpoint_id);
            select.push(" AND event_id IN (");
            let mut list = select.separated(", ");
            for m in &messages {
                list.push_bind(m.id.as_str());
            }
            select.push(") ORDER BY id");
            for r in select.build().fetch_all(pool).await? {
                by_event.entry(r.get(0)).or_default().push(AttemptRow {
                    attempted_at: r.get(1),
                    status_code: r.get(2),
                    error: r.get(3),
                    latency_ms: r.get(4),
                    response_body: r.get(5),
                });
            }
        });
        for m in &mut messages {
            m.attempt_log = by_event.remove(&m.id).unwrap_or_default();
        }
        Ok(messages)
    }

    /// Puts a delivered or failed message back in the queue with a fresh retry schedule.
    /// Returns false when there is no such message (or it is still pending).
    pub async fn retry(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1,
                   lease_until = 0, lease_owner = NULL, updated_at = $1
                 WHERE endpoint_id = $2 AND event_id = $3 AND status <> 'pending'",
            )
            .bind(now)
            .bind(endpoint_id)
            .bind(event_id)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() > 0)
        })
    }

    /// Puts every failed message of an endpoint created since `since` (ms) back in the
    /// queue; returns how many.
    pub async fn recover(
        &self,
        endpoint_id: &str,
        since: i64,
        now: i64,
    ) -> Result<u64, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $1,
                   lease_until = 0, lease_owner = NULL, updated_at = $1
                 WHERE endpoint_id = $2 AND status = 'failed' AND created_at >= $3",
            )
            .bind(now)
            .bind(endpoint_id)
            .bind(since)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }

    /// Deletes delivered and failed messages last touched before `before` (ms), at most
    /// `limit` of them (the oldest first), with their attempts, and the events left
    /// without a delivery. Returns how many messages went.
    pub async fn prune(&self, before: i64, limit: i64) -> Result<u64, sqlx::Error> {
        on_pool!(self.db.writer(), pool => {
            let mut tx = pool.begin().await?;
            // `status <> 'pending'` as `webhook_deliveries_finished` is written, so both
            // backends walk that index from its oldest entry.
            let picked: Vec<(String, String)> = sqlx::query_as(
                "SELECT endpoint_id, event_id FROM webhook_deliveries
                 WHERE status <> 'pending' AND updated_at < $1
                 ORDER BY updated_at LIMIT $2",
            )
            .bind(before)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            // Deleted by key, and only if still finished (a retry may have put one back
            // in the queue meanwhile); then the attempts of those deleted.
            let mut gone: Vec<(String, String)> = Vec::with_capacity(picked.len());
            for chunk in picked.chunks(ROWS_PER_STATEMENT) {
                let mut delete = keyed(
                    "DELETE FROM webhook_deliveries WHERE status <> 'pending' AND",
                    chunk,
                );
                delete.push(" RETURNING endpoint_id, event_id");
                gone.extend(delete.build_query_as::<(String, String)>().fetch_all(&mut *tx).await?);
            }
            for chunk in gone.chunks(ROWS_PER_STATEMENT) {
                keyed("DELETE FROM webhook_attempts WHERE", chunk)
                    .build()
                    .execute(&mut *tx)
                    .await?;
            }
            let mut events: Vec<String> = gone.iter().map(|(_, e)| e.clone()).collect();
            events.sort_unstable();
            events.dedup();
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                delete_unreferenced_events(chunk).build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(gone.len() as u64)
        })
    }

    pub async fn stats(&self) -> Result<Stats, sqlx::Error> {
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(
                "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'pending'",
            )
            .fetch_one(pool)
            .await?;
            let disabled = sqlx::query("SELECT COUNT(*) FROM webhook_endpoints WHERE NOT enabled")
                .fetch_one(pool)
                .await?;
            Ok(Stats {
                pending: row.get(0),
                oldest_pending_created_at: row.get(1),
                disabled_endpoints: disabled.get(0),
            })
        })
    }

    /// How many messages an endpoint has in each state (tests, the CLI).
    pub async fn counts(&self, endpoint_id: &str) -> Result<HashMap<String, i64>, sqlx::Error> {
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(
                "SELECT status, COUNT(*) FROM webhook_deliveries WHERE endpoint_id = $1 GROUP BY status",
            )
            .bind(endpoint_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
}

/// How an outcome leaves its delivery: (status, next_attempt_at).
fn outcome_state(o: &Outcome) -> (&'static str, i64) {
    match o.next {
        Next::Delivered => (DELIVERED, o.attempted_at),
        Next::RetryAt(at) => (PENDING, at),
        Next::Failed => (FAILED, o.attempted_at),
    }
}

/// The statement [`write_batch_postgres`] runs (public so a test can read its plan on a
/// connection set up as the batch connections are).
pub const POSTGRES_BATCH: &str = "WITH new_events AS (
       INSERT INTO webhook_events (id, app_id, merchant_id, event_type, channel, payload,
                                   created_at)
       SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::text[], $7::bigint[])
     ), new_deliveries AS (
       INSERT INTO webhook_deliveries (endpoint_id, event_id, status, attempts,
         next_attempt_at, lease_until, lease_owner, created_at, updated_at)
       SELECT d.endpoint_id, d.event_id, 'pending', 0, d.created_at, d.lease_until,
              CASE WHEN d.lease_until > 0 THEN $12::text END, d.created_at, d.created_at
       FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::bigint[])
            AS d (endpoint_id, event_id, lease_until, created_at)
     ), outcomes AS (
       UPDATE webhook_deliveries SET status = v.status, attempts = v.attempts,
         next_attempt_at = v.next_at, lease_until = 0, lease_owner = NULL, updated_at = $13
       FROM UNNEST($14::text[], $15::text[], $16::text[], $17::bigint[], $18::bigint[])
            AS v (endpoint_id, event_id, status, attempts, next_at)
       WHERE webhook_deliveries.endpoint_id = v.endpoint_id
         AND webhook_deliveries.event_id = v.event_id
         AND webhook_deliveries.lease_owner = $12
     ), health_changes AS (
       SELECT e.id, h.ok FROM webhook_endpoints e
       JOIN UNNEST($24::text[], $25::bool[], $26::text[]) AS h (id, ok, url)
         ON h.id = e.id AND h.url = e.url
       WHERE CASE WHEN h.ok THEN e.failing_since IS NOT NULL OR e.last_success_at IS NULL
                                 OR e.last_success_at < $13 - 1000
                  ELSE e.failing_since IS NULL END
       ORDER BY e.id
       FOR NO KEY UPDATE OF e
     ), health AS (
       UPDATE webhook_endpoints SET
         failing_since = CASE WHEN c.ok THEN NULL ELSE $13 END,
         last_success_at = CASE WHEN c.ok THEN $13 ELSE webhook_endpoints.last_success_at END
       FROM health_changes c WHERE webhook_endpoints.id = c.id
     )
     INSERT INTO webhook_attempts (endpoint_id, event_id, attempted_at, status_code, error,
                                   latency_ms, response_body)
     SELECT * FROM UNNEST($14::text[], $15::text[], $19::bigint[], $20::bigint[], $21::text[],
                          $22::bigint[], $23::text[])";

/// [`OutboxStore::write_batch`] on PostgreSQL: one statement, committed on its own, so a
/// batch costs one round trip to the server (and its commit's WAL flush), not BEGIN, a
/// statement per table, one per endpoint and COMMIT, each a wake-up of the node and of a
/// backend on a loaded machine. A statement is atomic by itself: all of it commits or
/// none. Its text never changes whatever the batch size (rows travel as arrays,
/// `UNNEST`ed by the server), so it is parsed and planned once per connection: the
/// connections of `OutboxStore::batches`, whose settings keep that plan on keys.
///
/// Endpoint health rows are locked in id order (`ORDER BY id FOR NO KEY UPDATE` locks
/// rows as they leave the sort) before they are updated, and only those whose state
/// changes (or whose success time is more than a second old), so batches in flight at
/// once, on this node or another, never deadlock on them and a busy endpoint's row is
/// not rewritten by every batch.
async fn write_batch_postgres(
    conn: &mut sqlx::PgConnection,
    events: &[NewEvent],
    deliveries: &[(&NewEvent, &NewDelivery)],
    outcomes: &[Outcome],
    health: &std::collections::BTreeMap<(&str, &str), bool>,
    owner: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    // An outcome is only ever for a delivery committed earlier (a message is sent after
    // its record commits), so the UPDATE never needs a row the INSERTs beside it add;
    // empty arrays write nothing.
    sqlx::query(POSTGRES_BATCH)
        .bind(column(events, |e| e.id.as_str()))
        .bind(column(events, |e| e.app_id.as_str()))
        .bind(column(events, |e| e.merchant_id.as_deref()))
        .bind(column(events, |e| e.event_type.as_str()))
        .bind(column(events, |e| e.channel.as_deref()))
        .bind(column(events, |e| e.payload.as_str()))
        .bind(column(events, |e| e.created_at))
        .bind(column(deliveries, |(_, d)| d.endpoint_id.as_str()))
        .bind(column(deliveries, |(e, _)| e.id.as_str()))
        .bind(column(deliveries, |(_, d)| d.lease_until))
        .bind(column(deliveries, |(e, _)| e.created_at))
        .bind(owner)
        .bind(now)
        .bind(column(outcomes, |o| o.endpoint_id.as_str()))
        .bind(column(outcomes, |o| o.event_id.as_str()))
        .bind(column(outcomes, |o| outcome_state(o).0))
        .bind(column(outcomes, |o| o.attempts))
        .bind(column(outcomes, |o| outcome_state(o).1))
        .bind(column(outcomes, |o| o.attempted_at))
        .bind(column(outcomes, |o| o.status_code))
        .bind(column(outcomes, |o| o.error.as_deref()))
        .bind(column(outcomes, |o| o.latency_ms))
        .bind(column(outcomes, |o| o.response_body.as_deref()))
        .bind(health.keys().map(|(id, _)| *id).collect::<Vec<&str>>())
        .bind(health.values().copied().collect::<Vec<bool>>())
        .bind(health.keys().map(|(_, url)| *url).collect::<Vec<&str>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// One column of a batch as an array to bind: the statement's text stays the same
/// whatever the batch's size.
fn column<'a, T, U>(rows: &'a [T], value: impl Fn(&'a T) -> U) -> Vec<U> {
    rows.iter().map(value).collect()
}

/// `{head} (endpoint_id, event_id) IN ((…), …)` for these delivery keys.
fn keyed<'a, DB: sqlx::Database>(head: &str, keys: &'a [(String, String)]) -> QueryBuilder<'a, DB>
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new(format!("{head} (endpoint_id, event_id) IN ("));
    let mut list = query.separated(", ");
    for (endpoint_id, event_id) in keys {
        list.push("(");
        list.push_bind_unseparated(endpoint_id);
        list.push_unseparated(", ");
        list.push_bind_unseparated(event_id);
        list.push_unseparated(")");
    }
    query.push(")");
    query
}

/// Deletes those of `events` that no delivery refers to any more. A delivery only ever
/// goes to an endpoint of its event's app and merchant (or of the app itself, for an
/// event without a merchant), so each event is looked for under those few endpoints'
/// primary keys: no index on the event id is needed (nor kept up by every callback).
fn delete_unreferenced_events<'a, DB: sqlx::Database>(events: &'a [String]) -> QueryBuilder<'a, DB>
where
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = QueryBuilder::new(
        "DELETE FROM webhook_events WHERE NOT EXISTS (
           SELECT 1 FROM webhook_endpoints p
           WHERE p.app_id = webhook_events.app_id
             AND (p.merchant_id = webhook_events.merchant_id
                  OR (p.merchant_id IS NULL AND webhook_events.merchant_id IS NULL))
             AND EXISTS (SELECT 1 FROM webhook_deliveries d
                         WHERE d.endpoint_id = p.id AND d.event_id = webhook_events.id))
         AND id IN (",
    );
    let mut list = query.separated(", ");
    for id in events {
        list.push_bind(id);
    }
    query.push(")");
    query
}
