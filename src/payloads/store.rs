//! Payloads in the node's database (`migrations/*/0004_payloads.sql`).
//!
//! Every change of state is one conditional `UPDATE … RETURNING`: it happens only from
//! the state the rule allows (resolve only a pending payload that is opened or not yet
//! due, expire only an unopened one that is due, …), so two nodes, or a timer and a
//! request, racing for the same payload change it once and only the winner announces it.
//! The same statement sets `announce`, the change's outbox entry.

use sqlx::Row;

use super::model::{Change, NewPayload, Payload, Resolution, State};
use crate::db::{Backend, Db, on_pool};

const COLUMNS: &str = "uuid, app_id, reference_uuid, tx_type, request_json, options, custom_meta, \
     user_token, created_at, expires_at, state, opened_at, opened_by_deeplink, signed, txid, \
     account, issued_user_token, finished_at";

#[derive(Debug, thiserror::Error)]
#[error("payload store: {0}")]
pub struct StoreError(#[from] sqlx::Error);

#[derive(Clone)]
pub struct PayloadStore {
    db: Db,
}

fn bool_of(value: Option<i64>) -> Option<bool> {
    value.map(|v| v != 0)
}

macro_rules! payload_from_row {
    ($row:expr) => {{
        let r = $row;
        Payload {
            uuid: r.get(0),
            app_id: r.get(1),
            reference_uuid: r.get(2),
            tx_type: r.get(3),
            request_json: r.get(4),
            options: r.get(5),
            custom_meta: r.get(6),
            user_token: r.get(7),
            created_at: r.get(8),
            expires_at: r.get(9),
            state: State::parse(r.get::<&str, _>(10)).unwrap_or(State::Expired),
            opened_at: r.get(11),
            opened_by_deeplink: bool_of(r.get(12)),
            signed: bool_of(r.get(13)),
            txid: r.get(14),
            account: r.get(15),
            issued_user_token: r.get(16),
            finished_at: r.get(17),
        }
    }};
}

/// Runs `$sql` (which ends in `RETURNING {COLUMNS}` or selects them) with `$binds` and
/// returns the row as a payload, if any.
macro_rules! one_payload {
    ($pool:expr, $sql:expr, $($bind:expr),*) => {
        on_pool!($pool, pool => {
            let row = sqlx::query($sql)$(.bind($bind))*.fetch_optional(pool).await?;
            Ok(row.map(|r| payload_from_row!(r)))
        })
    };
}

impl PayloadStore {
    pub fn new(db: Db) -> Self {
        PayloadStore { db }
    }

    pub fn backend(&self) -> Backend {
        self.db.backend()
    }

    pub async fn insert(&self, payload: &Payload) -> Result<(), StoreError> {
        on_pool!(self.db.writer(), pool => {
            sqlx::query(
                "INSERT INTO payloads (uuid, app_id, reference_uuid, tx_type, request_json, \
                 options, custom_meta, user_token, created_at, expires_at, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending')",
            )
            .bind(&payload.uuid)
            .bind(&payload.app_id)
            .bind(&payload.reference_uuid)
            .bind(&payload.tx_type)
            .bind(&payload.request_json)
            .bind(&payload.options)
            .bind(&payload.custom_meta)
            .bind(&payload.user_token)
            .bind(payload.created_at)
            .bind(payload.expires_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    pub async fn get(&self, uuid: &str) -> Result<Option<Payload>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM payloads WHERE uuid = $1");
        one_payload!(self.db.reader(), &sql, uuid)
    }

    /// Opens a pending, unopened payload that is not yet due.
    pub async fn open(
        &self,
        app_id: &str,
        uuid: &str,
        by_deeplink: bool,
        now: i64,
    ) -> Result<Option<Payload>, StoreError> {
        let sql = format!(
            "UPDATE payloads SET opened_at = $1, opened_by_deeplink = $2, \
             announce = 'opened', announce_at = $1 \
             WHERE uuid = $3 AND app_id = $4 AND state = 'pending' AND opened_at IS NULL \
             AND expires_at > $1 RETURNING {COLUMNS}"
        );
        one_payload!(
            self.db.writer(),
            &sql,
            now,
            i64::from(by_deeplink),
            uuid,
            app_id
        )
    }

    /// Resolves a pending payload that is opened, or not yet due (open before, not
    /// resolve before).
    pub async fn resolve(
        &self,
        app_id: &str,
        uuid: &str,
        resolution: &Resolution,
        now: i64,
    ) -> Result<Option<Payload>, StoreError> {
        let sql = format!(
            "UPDATE payloads SET state = 'resolved', finished_at = $1, signed = $2, txid = $3, \
             account = $4, issued_user_token = $5, announce = 'resolved', announce_at = $1 \
             WHERE uuid = $6 AND app_id = $7 AND state = 'pending' \
             AND (opened_at IS NOT NULL OR expires_at > $1) RETURNING {COLUMNS}"
        );
        one_payload!(
            self.db.writer(),
            &sql,
            now,
            i64::from(resolution.signed),
            resolution.txid.as_deref(),
            resolution.account.as_deref(),
            resolution.user_token.as_deref(),
            uuid,
            app_id
        )
    }

    /// Cancels a pending payload nobody opened (an opened one may be being signed).
    pub async fn cancel(
        &self,
        app_id: &str,
        uuid: &str,
        now: i64,
    ) -> Result<Option<Payload>, StoreError> {
        let sql = format!(
            "UPDATE payloads SET state = 'cancelled', finished_at = $1, \
             announce = 'cancelled', announce_at = $1 \
             WHERE uuid = $2 AND app_id = $3 AND state = 'pending' AND opened_at IS NULL \
             RETURNING {COLUMNS}"
        );
        one_payload!(self.db.writer(), &sql, now, uuid, app_id)
    }

    /// Expires a pending payload that is due and was never opened.
    pub async fn expire(&self, uuid: &str, now: i64) -> Result<Option<Payload>, StoreError> {
        let sql = format!(
            "UPDATE payloads SET state = 'expired', finished_at = expires_at, \
             announce = 'expired', announce_at = $1 \
             WHERE uuid = $2 AND state = 'pending' AND opened_at IS NULL AND expires_at <= $1 \
             RETURNING {COLUMNS}"
        );
        one_payload!(self.db.writer(), &sql, now, uuid)
    }

    /// Marks `change` of `uuid` as published (unless a later change replaced it).
    pub async fn announced(&self, uuid: &str, change: Change) -> Result<(), StoreError> {
        on_pool!(self.db.writer(), pool => {
            sqlx::query(
                "UPDATE payloads SET announce = NULL, announce_at = NULL \
                 WHERE uuid = $1 AND announce = $2",
            )
            .bind(uuid)
            .bind(change.as_str())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Unopened pending payloads due by `until`, soonest first.
    pub async fn due(&self, until: i64, limit: i64) -> Result<Vec<(String, i64)>, StoreError> {
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(
                "SELECT uuid, expires_at FROM payloads \
                 WHERE state = 'pending' AND opened_at IS NULL AND expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2",
            )
            .bind(until)
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// Payloads whose last change was recorded before `before` but not published, with
    /// that change.
    pub async fn unannounced(
        &self,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(Payload, Change)>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, announce FROM payloads \
             WHERE announce IS NOT NULL AND announce_at < $1 ORDER BY announce_at LIMIT $2"
        );
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(&sql).bind(before).bind(limit).fetch_all(pool).await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let change = Change::parse(r.get::<&str, _>(18))?;
                    Some((payload_from_row!(r), change))
                })
                .collect())
        })
    }

    /// Deletes up to `batch` payloads finished before `before`, or created before it and
    /// never finished, whose last change was published. Returns how many.
    pub async fn prune(&self, before: i64, batch: i64) -> Result<u64, StoreError> {
        on_pool!(self.db.writer(), pool => {
            let done = sqlx::query(
                "DELETE FROM payloads WHERE uuid IN (SELECT uuid FROM payloads \
                 WHERE announce IS NULL AND (finished_at < $1 \
                 OR (finished_at IS NULL AND created_at < $1)) LIMIT $2)",
            )
            .bind(before)
            .bind(batch)
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        })
    }
}

/// A stored payload for a create request that passed its checks.
pub fn new_row(app_id: &str, new: NewPayload, now: i64) -> Payload {
    Payload {
        uuid: uuid::Uuid::new_v4().hyphenated().to_string(),
        app_id: app_id.to_string(),
        reference_uuid: uuid::Uuid::new_v4().hyphenated().to_string(),
        tx_type: new.tx_type,
        request_json: new.request_json,
        options: new.options,
        custom_meta: new.custom_meta,
        user_token: new.user_token,
        created_at: now,
        expires_at: now.saturating_add(new.expire_ms),
        state: State::Pending,
        opened_at: None,
        opened_by_deeplink: None,
        signed: None,
        txid: None,
        account: None,
        issued_user_token: None,
        finished_at: None,
    }
}
