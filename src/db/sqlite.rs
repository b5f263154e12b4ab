//! The SQLite file as every store uses it: WAL, a pool for reads and one for writes.
//!
//! WAL lets readers go on while one writer writes, and a killed process loses no committed
//! transaction. sqlx's default `synchronous = FULL` puts each commit on disk before it
//! returns, which is what lets the webhook outbox answer 2xx for an event; the outbox
//! groups concurrent events into one commit so that costs one fsync per batch, not per
//! event.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

/// How long a write waits for the database's write lock (held by another writer, a
/// backup, the `sqlite3` shell) before it fails.
const WRITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read waits for a lock. In WAL mode reads do not wait for writers, so only
/// rare cases (WAL recovery, a process that switched the file out of WAL) make them
/// wait, and then they should fail fast rather than hold a request.
const READ_BUSY_TIMEOUT: Duration = Duration::from_millis(250);
/// Connections serving reads at once.
const READ_CONNECTIONS: u32 = 4;

/// The embedded database as every store uses it: a pool for reads and one for writes.
///
/// SQLite lets one writer in at a time, and a writer waits (up to its busy timeout) while
/// another process holds the write lock. Sharing one pool, writes stuck on an external
/// lock held every connection and a read-only request (merchant auth, a socket's
/// admission) queued behind them for seconds. In WAL mode reads never wait for writers,
/// so they get their own read-only connections and never queue behind a write. Writes
/// share one connection: SQLite would serialize them anyway.
#[derive(Debug, Clone)]
pub struct SqlitePools {
    pub read: SqlitePool,
    pub write: SqlitePool,
}

/// Opens the SQLite database at `url` (`sqlite://path`, created if missing, or
/// `sqlite::memory:`).
pub(super) async fn open(url: &str) -> Result<SqlitePools, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?;
    let persistent = |pool: SqlitePoolOptions| {
        pool.min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    };
    if url.contains(":memory:") {
        // An in-memory database exists per connection: one connection does everything.
        let pool = persistent(SqlitePoolOptions::new().max_connections(1))
            .connect_with(options)
            .await?;
        return Ok(SqlitePools {
            read: pool.clone(),
            write: pool,
        });
    }
    // The writer opens first: it creates the file and puts it in WAL mode (a setting the
    // file keeps), which read-only connections cannot do.
    let write = persistent(SqlitePoolOptions::new().max_connections(1))
        .acquire_timeout(WRITE_BUSY_TIMEOUT)
        .connect_with(
            options
                .clone()
                .create_if_missing(true)
                .foreign_keys(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .busy_timeout(WRITE_BUSY_TIMEOUT),
        )
        .await?;
    let read = persistent(SqlitePoolOptions::new().max_connections(READ_CONNECTIONS))
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.read_only(true).busy_timeout(READ_BUSY_TIMEOUT))
        .await?;
    Ok(SqlitePools { read, write })
}
