//! PostgreSQL connections kept for one statement on the hottest path, outside sqlx's pool.
//!
//! sqlx's pool tests a connection with a round trip to the server when it hands it out
//! and again when it takes it back. For a statement that runs hundreds of times a second
//! and is the publish path's latency (the outbox batch: every publish waits for its
//! commit), that is two more wake-ups of the server per statement, one of them on the
//! path. These connections are taken and given back without a test; one that failed is
//! dropped instead of given back. A kept connection can break while idle (the server
//! restarted, a proxy ended it): a statement that finds its connection broken that way
//! never ran, so it runs once more on a fresh connection.

use std::time::Duration;

use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// How long opening a connection may take before the statement fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A statement run on a held connection: it owns the connection while it runs and
/// hands it back with its result (a closure borrowing the connection could not also
/// borrow the caller's rows and stay `Send`).
pub type Statement<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (PgConnection, Result<T, sqlx::Error>)> + Send + 'a>,
>;

#[derive(Debug)]
pub struct HeldConnections {
    options: PgConnectOptions,
    idle: Mutex<Vec<PgConnection>>,
}

impl HeldConnections {
    /// Connections opened with `options` as they are needed, at most as many at once as
    /// callers run statements at once.
    pub fn new(options: PgConnectOptions) -> Self {
        HeldConnections {
            options,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `statement` on an idle connection (or a new one) and keeps the connection
    /// for the next call if the statement succeeded. If a kept connection turns out to
    /// be broken, the statement runs again on a fresh one.
    pub async fn run<'a, T, F>(&self, statement: F) -> Result<T, sqlx::Error>
    where
        F: Fn(PgConnection) -> Statement<'a, T>,
    {
        let kept = self.idle.lock().pop();
        let (conn, result) = match kept {
            Some(conn) => match statement(conn).await {
                (broken, Err(e)) if is_broken_connection(&e) => {
                    drop(broken);
                    statement(self.connect().await?).await
                }
                ran => ran,
            },
            None => statement(self.connect().await?).await,
        };
        self.keep_if_ok(conn, &result);
        result
    }

    async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.options.connect())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// A connection whose statement failed may be broken: it is closed, not kept. (A
    /// statement the server refused leaves a good one, but failures are rare enough
    /// not to tell apart.)
    fn keep_if_ok<T>(&self, conn: PgConnection, result: &Result<T, sqlx::Error>) {
        if result.is_ok() {
            self.idle.lock().push(conn);
        }
    }

    /// Closes the idle connections.
    pub async fn close(&self) {
        let idle: Vec<PgConnection> = std::mem::take(&mut *self.idle.lock());
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// Whether `e` says the connection was gone before the statement could run: the socket
/// failed, or the server ended the session (SQLSTATE class 08, connection exception, or
/// 57, operator intervention: shutdown, terminated backend).
fn is_broken_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}
