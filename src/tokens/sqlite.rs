//! Tokens in the node's database (the embedded SQLite file, or PostgreSQL; `src/db`): only
//! SHA-256 hashes are stored, so a copy of the database yields no usable token. Access tokens and merchants' client tokens keep their own
//! tables (a client token has a merchant and maybe no user); the prefix payrelay gave a
//! token says which table holds it.

use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Db, on_pool};

use super::{
    MintedToken, Subject, TokenError, TokenRecord, TokenStore, credential_id, expiry_after,
    now_unix,
};

/// The table that holds `token`.
fn table_of(token: &str) -> &'static str {
    if token.starts_with(super::CLIENT_TOKEN_PREFIX) {
        "client_tokens"
    } else {
        "access_tokens"
    }
}

pub struct SqliteTokens {
    /// Lookups (every socket admission) use the read pool, so they never queue behind a
    /// mint waiting on another process's write lock.
    db: Db,
}

fn unavailable(e: sqlx::Error) -> TokenError {
    TokenError::Unavailable(e.to_string())
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl SqliteTokens {
    /// The store in `db` (already migrated).
    pub fn new(db: Db) -> SqliteTokens {
        SqliteTokens { db }
    }

    pub async fn open(url: &str) -> Result<SqliteTokens, TokenError> {
        Ok(SqliteTokens::new(Db::open(url).await.map_err(unavailable)?))
    }
}

#[async_trait]
impl TokenStore for SqliteTokens {
    async fn mint(
        &self,
        app_id: &str,
        subject: &Subject,
        ttl: Duration,
    ) -> Result<MintedToken, TokenError> {
        subject.validate()?;
        let token = subject.new_token();
        let (expires_at, _) = expiry_after(ttl);
        on_pool!(self.db.writer(), pool => {
            let query = match subject {
                Subject::User(user) => sqlx::query(
                    "INSERT INTO access_tokens (token_hash, credential_id, app_id, expires_at, user_id) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(hash(&token))
                .bind(credential_id(&token))
                .bind(app_id)
                .bind(expires_at)
                .bind(user),
                Subject::Client {
                    merchant_id,
                    user_id,
                    minted_with,
                } => sqlx::query(
                    "INSERT INTO client_tokens (token_hash, credential_id, app_id, expires_at, user_id, merchant_id, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(hash(&token))
                .bind(credential_id(&token))
                .bind(app_id)
                .bind(expires_at)
                .bind(user_id)
                .bind(merchant_id)
                .bind(minted_with),
            };
            query.execute(pool).await.map_err(unavailable)?;
        });
        Ok(subject.minted(token, expires_at))
    }

    async fn lookup(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let table = table_of(token);
        let client_columns = if table == "client_tokens" {
            "merchant_id, key_id"
        } else {
            "NULL, NULL"
        };
        let sql = format!(
            "SELECT app_id, user_id, expires_at, revoked_at, {client_columns} FROM {table} WHERE token_hash = $1"
        );
        on_pool!(self.db.reader(), pool => {
            let row = sqlx::query(&sql)
                .bind(hash(token))
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?;
            Ok(row.map(|r| {
                let user_id: Option<String> = r.get(1);
                let subject = match r.get::<Option<String>, _>(4) {
                    Some(merchant_id) => Subject::Client {
                        merchant_id,
                        user_id,
                        minted_with: r.get(5),
                    },
                    None => Subject::User(user_id.unwrap_or_default()),
                };
                TokenRecord {
                    app_id: Some(r.get(0)),
                    subject,
                    expires_at: Some(r.get(2)),
                    revoked: r.get::<Option<i64>, _>(3).is_some(),
                }
            }))
        })
    }

    async fn revoke(&self, token: &str) -> Result<Option<TokenRecord>, TokenError> {
        let record = self.lookup(token).await?;
        if record.is_some() {
            let sql = format!(
                "UPDATE {} SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
                table_of(token)
            );
            on_pool!(self.db.writer(), pool => sqlx::query(&sql)
                .bind(now_unix())
                .bind(hash(token))
                .execute(pool)
                .await
                .map(|_| ())
                .map_err(unavailable))?;
        }
        Ok(record)
    }

    async fn revoke_user(&self, app_id: &str, user_id: &str) -> Result<Vec<String>, TokenError> {
        on_pool!(self.db.writer(), pool => {
            let rows = sqlx::query(
                "UPDATE access_tokens SET revoked_at = $1 WHERE app_id = $2 AND user_id = $3 AND revoked_at IS NULL RETURNING credential_id",
            )
            .bind(now_unix())
            .bind(app_id)
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(unavailable)?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    async fn ping(&self) -> Result<(), TokenError> {
        on_pool!(self.db.reader(), pool => {
            sqlx::query("SELECT 1")
                .execute(pool)
                .await
                .map(drop)
                .map_err(unavailable)
        })
    }

    fn name(&self) -> &'static str {
        match self.db.backend() {
            crate::db::Backend::Sqlite => "sqlite",
            crate::db::Backend::Postgres => "postgres",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Subject {
        Subject::User(id.to_string())
    }

    /// Minted late in a second, a 2-second token used to expire at the next second but
    /// one: barely more than 1 s, so a client slowed down between the mint and its
    /// connect was refused (tests/peers/token_lifetimes.mjs under load).
    #[tokio::test]
    async fn a_token_lives_at_least_its_ttl() {
        let store = SqliteTokens::open("sqlite::memory:").await.unwrap();
        let since_epoch = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
        };
        for ttl in [1, 2, 60].map(Duration::from_secs) {
            while since_epoch().subsec_millis() < 900 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let before = since_epoch();
            let minted = store.mint("1", &user("u1"), ttl).await.unwrap();
            let record = store.lookup(&minted.token).await.unwrap().unwrap();
            assert_eq!(record.expires_at, Some(minted.expires_at));
            let lifetime = Duration::from_secs(minted.expires_at as u64) - before;
            assert!(lifetime >= ttl, "{ttl:?} asked, {lifetime:?} given");
            assert!(lifetime < ttl + Duration::from_secs(1), "{lifetime:?}");
        }
    }

    #[tokio::test]
    async fn tokens_are_minted_found_and_revoked() {
        let store = SqliteTokens::open("sqlite::memory:").await.unwrap();
        let minted = store
            .mint("1", &user("120045"), Duration::from_secs(60))
            .await
            .unwrap();
        let record = store.lookup(&minted.token).await.unwrap().unwrap();
        assert_eq!(record.access_user(), Some("120045"));
        assert!(!record.revoked && !record.is_expired(now_unix()));
        assert_eq!(store.lookup("prt_nope").await.unwrap(), None);
        store.revoke(&minted.token).await.unwrap();
        assert!(store.lookup(&minted.token).await.unwrap().unwrap().revoked);

        let other = store
            .mint("1", &user("120045"), Duration::from_secs(60))
            .await
            .unwrap();
        let revoked = store.revoke_user("1", "120045").await.unwrap();
        assert_eq!(revoked, vec![credential_id(&other.token)]);
        assert!(
            store
                .mint("1", &user("a.b"), Duration::from_secs(1))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn client_tokens_name_a_merchant_and_are_not_access_tokens() {
        let store = SqliteTokens::open("sqlite::memory:").await.unwrap();
        let subject = Subject::Client {
            merchant_id: "merchant_001".into(),
            user_id: None,
            minted_with: Some("key_1".into()),
        };
        let minted = store
            .mint("1", &subject, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(minted.token.starts_with(crate::tokens::CLIENT_TOKEN_PREFIX));
        let record = store.lookup(&minted.token).await.unwrap().unwrap();
        assert_eq!(record.subject, subject);
        assert_eq!(
            record.access_user(),
            None,
            "a client token opens no plain socket"
        );
        // A forced logout of a user id equal to the merchant's touches no client token.
        assert!(
            store
                .revoke_user("1", "merchant_001")
                .await
                .unwrap()
                .is_empty()
        );
        store.revoke(&minted.token).await.unwrap();
        assert!(
            !store
                .lookup(&minted.token)
                .await
                .unwrap()
                .unwrap()
                .is_live(0)
        );
        let bad = Subject::Client {
            merchant_id: "m.1".into(),
            user_id: Some("u1".into()),
            minted_with: None,
        };
        assert!(store.mint("1", &bad, Duration::from_secs(1)).await.is_err());
    }
}
