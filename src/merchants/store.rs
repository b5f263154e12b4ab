//! Merchants and their API keys, in the node's database (the SQLite file by default, or
//! PostgreSQL; see `src/db`).
//!
//! Keys are random 160-bit secrets, so a plain SHA-256 is enough to store them: there is
//! nothing to brute-force that a slow hash would protect. The plaintext is returned once,
//! by [`MerchantStore::create_key`], and never stored or logged; lookups hash what the
//! client presents and compare hashes.

use rand::RngExt;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Db, on_pool};

/// Prefix of every API key, so a leaked key is recognisable in a code scan.
pub const KEY_PREFIX: &str = "prk_";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("merchant store: {0}")]
    Database(#[from] sqlx::Error),
    #[error("merchant id `{0}` must be 1-64 letters, digits, `_` or `-`")]
    BadMerchantId(String),
}

/// A key as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub key_id: String,
    pub merchant_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A live key as a presented secret resolves: whose it is, and its id (what a socket
/// opened with it remembers, so the key's revocation can close it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundKey {
    pub key_id: String,
    pub app_id: String,
    pub merchant_id: String,
}

/// A key just created: the only time its plaintext exists outside the client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewKey {
    pub key_id: String,
    pub merchant_id: String,
    pub api_key: String,
}

#[derive(Debug, Clone)]
pub struct MerchantStore {
    db: Db,
}

/// Merchant ids end up in channel names (`private-merchant.{id}`), so they use the
/// characters channel names allow, minus the separators.
pub fn valid_merchant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl MerchantStore {
    /// The store in `db` (already migrated).
    pub fn new(db: Db) -> MerchantStore {
        MerchantStore { db }
    }

    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    pub async fn open(url: &str) -> Result<MerchantStore, StoreError> {
        Ok(MerchantStore::new(Db::open(url).await?))
    }

    /// Creates an API key for `merchant_id` (creating the merchant on first use).
    pub async fn create_key(&self, app_id: &str, merchant_id: &str) -> Result<NewKey, StoreError> {
        if !valid_merchant_id(merchant_id) {
            return Err(StoreError::BadMerchantId(merchant_id.to_string()));
        }
        let secret: [u8; 20] = rand::rng().random();
        let api_key = format!("{KEY_PREFIX}{}", hex::encode(secret));
        let id_bytes: [u8; 6] = rand::rng().random();
        let key_id = format!("key_{}", hex::encode(id_bytes));
        on_pool!(self.db.writer(), pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO merchants (app_id, merchant_id, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(app_id)
            .bind(merchant_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO api_keys (key_id, app_id, merchant_id, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&key_id)
            .bind(app_id)
            .bind(merchant_id)
            .bind(hash_key(&api_key))
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(NewKey {
            key_id,
            merchant_id: merchant_id.to_string(),
            api_key,
        })
    }

    /// Revokes a key; returns the merchant it belonged to, or `None` if there was no such
    /// live key in `app_id`.
    pub async fn revoke_key(
        &self,
        app_id: &str,
        key_id: &str,
    ) -> Result<Option<String>, StoreError> {
        on_pool!(self.db.writer(), pool => {
            let row = sqlx::query(
                "UPDATE api_keys SET revoked_at = $1 WHERE app_id = $2 AND key_id = $3 AND revoked_at IS NULL RETURNING merchant_id",
            )
            .bind(now())
            .bind(app_id)
            .bind(key_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| r.get::<String, _>(0)))
        })
    }

    /// The key a presented secret is, if it is live in any app.
    pub async fn find_key(&self, api_key: &str) -> Result<Option<FoundKey>, StoreError> {
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(
                "SELECT key_id, app_id, merchant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            )
            .bind(hash_key(api_key))
            .fetch_optional(pool)
            .await?;
            Ok(row.map(|r| FoundKey {
                key_id: r.get(0),
                app_id: r.get(1),
                merchant_id: r.get(2),
            }))
        })
    }

    /// Whether key `key_id` of `app_id` exists and is not revoked (for sockets opened
    /// with it, which notice a revocation made by another process this way).
    pub async fn is_key_live(&self, app_id: &str, key_id: &str) -> Result<bool, StoreError> {
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(
                "SELECT 1 FROM api_keys WHERE app_id = $1 AND key_id = $2 AND revoked_at IS NULL",
            )
            .bind(app_id)
            .bind(key_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.is_some())
        })
    }

    pub async fn list_keys(
        &self,
        app_id: &str,
        merchant_id: Option<&str>,
    ) -> Result<Vec<KeyInfo>, StoreError> {
        on_pool!(self.db.reader(), pool => {
            let rows = sqlx::query(
                "SELECT key_id, merchant_id, created_at, revoked_at FROM api_keys
                 WHERE app_id = $1 AND ($2 IS NULL OR merchant_id = $2) ORDER BY created_at, key_id",
            )
            .bind(app_id)
            .bind(merchant_id)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| KeyInfo {
                    key_id: r.get(0),
                    merchant_id: r.get(1),
                    created_at: r.get(2),
                    revoked_at: r.get(3),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_shown_once_found_by_hash_and_revocable() {
        let store = MerchantStore::open("sqlite::memory:").await.unwrap();
        let key = store.create_key("1", "merchant_001").await.unwrap();
        assert!(key.api_key.starts_with(KEY_PREFIX));
        // The key names its app as well as its merchant: no other app can use it.
        let found = store.find_key(&key.api_key).await.unwrap().unwrap();
        assert_eq!(
            (found.app_id.as_str(), found.merchant_id.as_str()),
            ("1", "merchant_001")
        );
        assert_eq!(found.key_id, key.key_id);
        assert!(store.is_key_live("1", &key.key_id).await.unwrap());
        assert!(!store.is_key_live("2", &key.key_id).await.unwrap());
        assert_eq!(store.find_key("prk_wrong").await.unwrap(), None);

        let listed = store.list_keys("1", Some("merchant_001")).await.unwrap();
        assert_eq!(listed.len(), 1);
        let listing = serde_json::to_string(&listed).unwrap();
        assert!(!listing.contains(&key.api_key), "listing leaks the key");

        assert_eq!(
            store.revoke_key("1", &key.key_id).await.unwrap().as_deref(),
            Some("merchant_001")
        );
        assert_eq!(store.find_key(&key.api_key).await.unwrap(), None);
        assert!(!store.is_key_live("1", &key.key_id).await.unwrap());
        assert_eq!(store.revoke_key("1", &key.key_id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn keys_survive_a_reopen_of_the_file() {
        let dir = std::env::temp_dir().join(format!("payrelay-store-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("payrelay.db").display());
        let key = {
            let store = MerchantStore::open(&url).await.unwrap();
            store.create_key("1", "m1").await.unwrap()
        };
        let store = MerchantStore::open(&url).await.unwrap();
        let found = store.find_key(&key.api_key).await.unwrap().unwrap();
        assert_eq!(found.merchant_id, "m1");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn merchant_ids_must_fit_channel_names() {
        let store = MerchantStore::open("sqlite::memory:").await.unwrap();
        for bad in ["", "a.b", "a b", &"x".repeat(65)] {
            assert!(store.create_key("1", bad).await.is_err(), "{bad:?}");
        }
    }
}
