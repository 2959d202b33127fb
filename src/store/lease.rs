//! Leadership among several `serve` processes on one PostgreSQL database: exactly one runs
//! passes (reconcile and today's notices); every node may dispatch (claims are leased rows).
//!
//! The leader holds a session advisory lock, keyed by the current schema, on a connection of its
//! own outside the pool (advisory locks belong to a session; a pooled connection would hand the
//! lock to whoever borrows it next). If the leader dies or its connection drops, PostgreSQL
//! releases the lock and another node takes it at its next check. SQLite has one `serve` per
//! database (the file lock), which is always the leader.
//!
//! **Invariant:** a node believes it leads only after checking, on the lock's own connection,
//! that the lock is held; a failed check drops the connection (and with it the lock).

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::{Backend, Store};

/// The advisory lock's first key; the second is `hashtext(current_schema())`, so schemas (and
/// tests) on one database do not contend.
const LOCK_CLASS: i32 = 0x7161_6c70; // "qalp"

/// Whether this node leads, and the connection that holds the lock when it does.
pub struct Lease {
    /// PostgreSQL options for the lock's own connection; `None` on SQLite (always leader).
    options: Option<PgConnectOptions>,
    /// The session holding the lock, while this node leads.
    held: Option<PgConnection>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("postgres", &self.options.is_some())
            .field("held", &self.held.is_some())
            .finish()
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This node leads (and did before).
    Leader,
    /// This node just became the leader.
    Acquired,
    /// Another node leads.
    Follower,
    /// This node led until now (its lock connection failed).
    Lost,
}

impl Leadership {
    /// Whether this node may run passes.
    pub fn leads(self) -> bool {
        matches!(self, Leadership::Leader | Leadership::Acquired)
    }
}

impl Store {
    /// A lease for this store's database (not yet checked).
    pub fn lease(&self) -> Lease {
        Lease {
            options: match &self.backend {
                Backend::Sqlite(_) => None,
                Backend::Postgres(pool) => Some((*pool.connect_options()).clone()),
            },
            held: None,
        }
    }
}

impl Lease {
    /// Checks (and if free, takes) leadership. Errors count as not leading.
    pub async fn check(&mut self) -> Leadership {
        let Some(options) = &self.options else {
            return Leadership::Leader;
        };
        if let Some(conn) = &mut self.held {
            let still: Result<bool, sqlx::Error> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
                 AND pid = pg_backend_pid() AND classid = $1::oid \
                 AND objid = hashtext(current_schema())::oid AND granted)",
            )
            .bind(LOCK_CLASS)
            .fetch_one(&mut *conn)
            .await;
            if matches!(still, Ok(true)) {
                return Leadership::Leader;
            }
            if let Some(conn) = self.held.take() {
                conn.close().await.ok();
            }
            return Leadership::Lost;
        }
        let Ok(mut conn) = PgConnection::connect_with(options).await else {
            return Leadership::Follower;
        };
        let got: Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                .bind(LOCK_CLASS)
                .fetch_one(&mut conn)
                .await;
        if matches!(got, Ok(true)) {
            self.held = Some(conn);
            Leadership::Acquired
        } else {
            conn.close().await.ok();
            Leadership::Follower
        }
    }

    /// Gives leadership up (at shutdown, so another node takes over at once).
    pub async fn release(&mut self) {
        if let Some(conn) = self.held.take() {
            conn.close().await.ok();
        }
    }
}
