//! The node's durable store: one SQL database for merchants, keys, tokens and the webhook
//! outbox, either the embedded SQLite file (the default) or PostgreSQL (when
//! `database_url` is `postgres://…`, so several nodes share it).
//!
//! Both backends are driven by sqlx's native drivers, not its `Any` driver: the outbox is
//! on the publish path and pays for every conversion. Queries are written once, in the SQL
//! both dialects accept (`$1` placeholders, `ON CONFLICT`, `RETURNING`), and [`on_pool!`]
//! compiles each for both pools. The few statements that must differ (row locking) live
//! beside their callers and say why. A store asks for [`Db::reader`] or [`Db::writer`]:
//! on SQLite they are different pools ([`SqlitePools`]), on PostgreSQL the same one.
//!
//! The schema is versioned: `migrations/sqlite/` and `migrations/postgres/` hold one
//! numbered file per change, embedded in the binary and applied on open. The first ones
//! use `IF NOT EXISTS` on SQLite because those tables existed before migrations did, so a
//! file written by an older payrelay opens and is brought up to date.

use std::str::FromStr;
use std::time::Duration;

pub mod held;
mod sqlite;

pub use held::HeldConnections;
pub use sqlite::SqlitePools;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on the node's database, migrated to the schema this binary expects.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePools),
    Postgres(PgPool),
}

/// One pool of a [`Db`], for reads or for writes.
#[derive(Debug, Clone, Copy)]
pub enum Pool<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool `$which` (a [`Pool`]) holds. The body
/// is compiled once per backend, so it may use each driver's own row and argument types.
macro_rules! on_pool {
    ($which:expr, $pool:ident => $body:expr) => {
        match $which {
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Db {
    /// Opens the database at `url` (`sqlite://path`, created if missing, `sqlite::memory:`,
    /// or `postgres://…`) and applies every migration it has not seen.
    pub async fn open(url: &str) -> Result<Db, sqlx::Error> {
        let db = if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await?;
            Db::Postgres(pool)
        } else {
            Db::Sqlite(sqlite::open(url).await?)
        };
        db.migrate().await?;
        Ok(db)
    }

    async fn migrate(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Sqlite(pools) => SQLITE_MIGRATIONS.run(&pools.write).await?,
            Db::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// The pool for queries that only read.
    pub fn reader(&self) -> Pool<'_> {
        match self {
            Db::Sqlite(pools) => Pool::Sqlite(&pools.read),
            Db::Postgres(pool) => Pool::Postgres(pool),
        }
    }

    /// The pool for anything that writes.
    pub fn writer(&self) -> Pool<'_> {
        match self {
            Db::Sqlite(pools) => Pool::Sqlite(&pools.write),
            Db::Postgres(pool) => Pool::Postgres(pool),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Closes every connection (tests that reopen the same file).
    pub async fn close(&self) {
        match self {
            Db::Sqlite(pools) => {
                pools.read.close().await;
                pools.write.close().await;
            }
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// Milliseconds since the Unix epoch (the outbox's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_from_before_migrations_opens_and_keeps_its_rows() {
        let dir = std::env::temp_dir().join(format!("payrelay-db-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("old.db").display());
        // What payrelay before migrations left: the idempotent schema, no migration table.
        {
            let pool = sqlite::open(&url).await.unwrap().write;
            sqlx::raw_sql(
                "CREATE TABLE merchants (app_id TEXT NOT NULL, merchant_id TEXT NOT NULL,
                   created_at INTEGER NOT NULL, PRIMARY KEY (app_id, merchant_id));
                 CREATE TABLE api_keys (key_id TEXT PRIMARY KEY, app_id TEXT NOT NULL,
                   merchant_id TEXT NOT NULL, key_hash TEXT NOT NULL UNIQUE,
                   created_at INTEGER NOT NULL, revoked_at INTEGER,
                   FOREIGN KEY (app_id, merchant_id) REFERENCES merchants (app_id, merchant_id));
                 INSERT INTO merchants VALUES ('1', 'm1', 1);
                 INSERT INTO api_keys VALUES ('key_1', '1', 'm1', 'abc', 1, NULL);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let db = Db::open(&url).await.unwrap();
        let Pool::Sqlite(pool) = db.reader() else {
            unreachable!()
        };
        let (keys,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM api_keys")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(keys, 1, "the old rows are kept");
        let (applied,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(applied as usize, SQLITE_MIGRATIONS.iter().count());
        db.close().await;
        // Opening again applies nothing twice.
        Db::open(&url).await.unwrap().close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let names = |m: &sqlx::migrate::Migrator| {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&SQLITE_MIGRATIONS), names(&POSTGRES_MIGRATIONS));
    }
}
