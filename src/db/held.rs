//! PostgreSQL connections kept for one statement on the hottest path, outside sqlx's pool.
//!
//! sqlx's pool tests a connection with a round trip to the server when it hands it out
//! and again when it takes it back. For a statement that runs hundreds of times a second
//! and is the publish path's latency (the outbox batch: every publish waits for its
//! commit), that is two more wake-ups of the server per statement, one of them on the
//! path. These connections are taken and given back without a test; one that failed is
//! dropped instead of given back. A kept connection can break while idle (the server
//! restarted, a proxy ended it): a statement that finds its connection broken runs once
//! more on a fresh connection. Almost always it never reached the server; if the
//! connection broke after the server committed it (the answer lost on the way), the
//! second run fails on the keys the first inserted, or logs an attempt twice: an error
//! or a duplicate line, never a lost write.
//!
//! Each run is bounded in time: a server that stops answering (frozen, the network cut
//! without a reset) fails the statement instead of holding every caller that waits on it.

use std::time::Duration;

use parking_lot::Mutex;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// How long opening a connection may take before the statement fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a statement may run by default: far beyond any outbox batch (milliseconds),
/// short enough that publishes waiting on a frozen server get an error.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A statement run on a held connection: it owns the connection while it runs and
/// hands it back with its result (a closure borrowing the connection could not also
/// borrow the caller's rows and stay `Send`).
pub type Statement<'a, T> = std::pin::Pin<
    Box<dyn std::future::Future<Output = (PgConnection, Result<T, sqlx::Error>)> + Send + 'a>,
>;

#[derive(Debug)]
pub struct HeldConnections {
    options: PgConnectOptions,
    statement_timeout: Duration,
    idle: Mutex<Vec<PgConnection>>,
}

impl HeldConnections {
    /// Connections opened with `options` as they are needed, at most as many at once as
    /// callers run statements at once; each statement given up after `statement_timeout`
    /// ([`STATEMENT_TIMEOUT`] in the node).
    pub fn new(options: PgConnectOptions, statement_timeout: Duration) -> Self {
        HeldConnections {
            options,
            statement_timeout,
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
            Some(conn) => match self.bounded(statement(conn)).await? {
                (broken, Err(e)) if is_broken_connection(&e) => {
                    drop(broken);
                    self.bounded(statement(self.connect().await?)).await?
                }
                ran => ran,
            },
            None => self.bounded(statement(self.connect().await?)).await?,
        };
        self.keep_if_ok(conn, &result);
        result
    }

    /// `statement`, given up (its connection dropped with it: its state is unknown)
    /// after the statement timeout. A statement that timed out is not run again: it may
    /// have run.
    async fn bounded<'a, T>(
        &self,
        statement: Statement<'a, T>,
    ) -> Result<(PgConnection, Result<T, sqlx::Error>), sqlx::Error> {
        tokio::time::timeout(self.statement_timeout, statement)
            .await
            .map_err(|_| {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "PostgreSQL did not answer within {} s",
                        self.statement_timeout.as_secs_f64()
                    ),
                ))
            })
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

/// Whether `e` says the connection was gone: the socket failed, or the server ended the
/// session (SQLSTATE class 08, connection exception, or 57P…, shutdown, terminated
/// backend, idle session timeout; not 57014, a statement cancelled on a live session).
fn is_broken_connection(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
