//! Access tokens in the embedded SQLite file: only SHA-256 hashes are stored, so a copy
//! of the file yields no usable token.

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;

use super::{MintedToken, TokenError, TokenRecord, TokenStore, credential_id, now_unix};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash    TEXT PRIMARY KEY,
    credential_id TEXT NOT NULL,
    app_id        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX IF NOT EXISTS access_tokens_by_user ON access_tokens (app_id, user_id);
";

pub struct SqliteTokens {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl SqliteTokens {
    pub async fn open(url: &str) -> Result<SqliteTokens, TokenError> {
        let pool = crate::merchants::store::open_pool(url)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(SCHEMA)
            .execute(&pool)
            .await
            .map_err(unavailable)?;
        Ok(SqliteTokens { pool })
    }
}

#[async_trait]
impl TokenStore for SqliteTokens {
    async fn mint(
        &self,
        app_id: &str,
        user_id: &str,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        if !super::valid_user_id(user_id) {
            return Err(TokenError::BadUserId(user_id.to_string()));
        }
        let token = super::new_token();
        let expires_at = now_unix().saturating_add(ttl.as_secs() as i64);
        sqlx::query(
            "INSERT INTO access_tokens (token_hash, credential_id, app_id, user_id, expires_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(hash(&token))
        .bind(credential_id(&token))
        .bind(app_id)
        .bind(user_id)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(MintedToken {
            token,
            user_id: user_id.to_string(),
            expires_at,
        })
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let row = sqlx::query(
            "SELECT app_id, user_id, expires_at, revoked_at FROM access_tokens WHERE token_hash = ?",
        )
        .bind(hash(token))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|r| TokenRecord {
            app_id: Some(r.get(0)),
            user_id: r.get(1),
            expires_at: Some(r.get(2)),
            revoked: r.get::<Option<i64>, _>(3).is_some(),
        }))
    }

    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let record = self.lookup(token).await?;
        if record.is_some() {
            sqlx::query(
                "UPDATE access_tokens SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
            )
            .bind(now_unix())
            .bind(hash(token))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        }
        Ok(record)
    }

    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError> {
        let rows = sqlx::query(
            "UPDATE access_tokens SET revoked_at = ? WHERE app_id = ? AND user_id = ? AND revoked_at IS NULL RETURNING credential_id",
        )
        .bind(now_unix())
        .bind(app_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_minted_found_and_revoked() {
        let store = SqliteTokens::open("sqlite::memory:").await.unwrap();
        let minted = store
            .mint("1", "120045", Duration::from_secs(60))
            .await
            .unwrap();
        let record = store.lookup(&minted.token).await.unwrap().unwrap();
        assert_eq!(record.user_id, "120045");
        assert!(!record.revoked && !record.is_expired(now_unix()));
        assert_eq!(store.lookup("prt_nope").await.unwrap(), None);
        store.revoke(&minted.token).await.unwrap();
        assert!(store.lookup(&minted.token).await.unwrap().unwrap().revoked);

        let other = store
            .mint("1", "120045", Duration::from_secs(60))
            .await
            .unwrap();
        let revoked = store.revoke_user("1", "120045").await.unwrap();
        assert_eq!(revoked, vec![credential_id(&other.token)]);
        assert!(
            store
                .mint("1", "a.b", Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
