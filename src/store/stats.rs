//! Read-only aggregates for operating the service: the database's liveness (`SELECT 1`), the
//! outbox queue depth for systemd's `STATUS=`, and the gauges `/metrics` and `/readyz` gather at
//! scrape time. Each is one cheap aggregate query over an indexed or small table.
//!
//! **Invariant:** reads only; never part of a write transaction.

use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Store, StoreError};

/// How long a probe waits for PostgreSQL to answer before calling it unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `meta` key holding when the last successful backup finished (RFC 3339).
pub const LAST_BACKUP_KEY: &str = "last_backup_at";

/// A count of rows grouped by two labels, e.g. (activity, status) or (status, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// First label.
    pub a: String,
    /// Second label (empty when the query groups by one).
    pub b: String,
    /// How many rows.
    pub n: i64,
}

fn counts(rows: Vec<(String, String, i64)>) -> Vec<Count> {
    rows.into_iter()
        .map(|(a, b, n)| Count { a, b, n })
        .collect()
}

impl Store {
    /// `SELECT 1`: the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(pool)
                .await?
        });
        Ok(())
    }

    /// Rows waiting to be sent: pending or failed (awaiting a retry).
    pub async fn outbox_depth(&self) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'failed')",
            )
            .fetch_one(pool)
            .await?
        }))
    }

    /// Outbox rows by (status, channel).
    pub async fn outbox_by_status_and_channel(&self) -> Result<Vec<Count>, StoreError> {
        Ok(counts(on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT status, channel, COUNT(*) FROM outbox GROUP BY status, channel",
            )
            .fetch_all(pool)
            .await?
        })))
    }

    /// Assignments by (activity, status).
    pub async fn assignments_by_activity_and_status(&self) -> Result<Vec<Count>, StoreError> {
        Ok(counts(on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT activity_id, status, COUNT(*) FROM assignments \
                 GROUP BY activity_id, status",
            )
            .fetch_all(pool)
            .await?
        })))
    }

    /// Open assignments past their due date on local date `today`, by activity (`b` empty).
    pub async fn overdue_by_activity(&self, today: Date) -> Result<Vec<Count>, StoreError> {
        Ok(counts(on_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, i64)>(
                "SELECT activity_id, '', COUNT(*) FROM assignments \
                 WHERE status = 'open' AND due < $1 GROUP BY activity_id",
            )
            .bind(today.to_string())
            .fetch_all(pool)
            .await?
        })))
    }

    /// When the most recent message was sent, if any ever was.
    pub async fn last_sent_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar("SELECT MAX(sent_at) FROM outbox WHERE status = 'sent'")
                .fetch_one(pool)
                .await?
        });
        text.map(|t| {
            super::parse_instant(&t).map_err(|_| StoreError::Corrupt {
                column: "outbox.sent_at",
                value: t,
            })
        })
        .transpose()
    }

    /// When the last successful backup finished, if `qaloop backup` ever recorded one.
    pub async fn last_backup_at(&self) -> Result<Option<Timestamp>, StoreError> {
        self.meta(LAST_BACKUP_KEY)
            .await?
            .map(|t| {
                super::parse_instant(&t).map_err(|_| StoreError::Corrupt {
                    column: "meta.last_backup_at",
                    value: t,
                })
            })
            .transpose()
    }
}

/// `host:port/db` of PostgreSQL options (never credentials).
pub fn pg_target(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    )
}

/// One connection to PostgreSQL within [`PROBE_TIMEOUT`]; failure names host, port and cause.
pub(crate) async fn probe_postgres(options: &PgConnectOptions) -> Result<PgConnection, StoreError> {
    let target = pg_target(options);
    match tokio::time::timeout(PROBE_TIMEOUT, PgConnection::connect_with(options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(StoreError::Unreachable {
            target,
            cause: plain_cause(&e),
        }),
        Err(_) => Err(StoreError::Unreachable {
            target,
            cause: format!(
                "no answer within {} s (is the server running and the port open?)",
                PROBE_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// A driver error in plain words, with the advice an operator needs.
fn plain_cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is PostgreSQL running and listening on that address?)".into()
        }
        sqlx::Error::Io(io) => format!("network error: {io}"),
        sqlx::Error::Database(db) => format!("the server said: {}", db.message()),
        other => other.to_string(),
    }
}

/// A SQLite file can be created only in an existing folder: say so plainly, before the driver
/// answers with "unable to open database file".
pub(crate) fn sqlite_folder_exists(url: &str) -> Result<(), StoreError> {
    let Some((path, _)) = crate::config::sqlite_file(url) else {
        return Ok(());
    };
    let path = std::path::Path::new(path);
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(StoreError::Unreachable {
            target: path.display().to_string(),
            cause: format!(
                "its folder {} does not exist; create it (owned by the service user) or fix database.url",
                dir.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Where a database stands with this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    /// Every migration applied.
    Current,
    /// This many migrations will be applied at the next start (0 applied so far: a new database).
    Pending(usize),
    /// The database cannot be migrated by this binary; why.
    Incompatible(String),
}

fn compare(known: &sqlx::migrate::Migrator, applied: &[(i64, Vec<u8>, bool)]) -> MigrationState {
    let known: Vec<_> = known
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    for (version, checksum, success) in applied {
        match known.iter().find(|m| m.version == *version) {
            None => {
                return MigrationState::Incompatible(format!(
                    "it has migration {version}, which this qaloop does not know: it was written by a newer version (upgrade qaloop, or restore a matching backup)"
                ));
            }
            Some(_) if !success => {
                return MigrationState::Incompatible(format!(
                    "migration {version} failed part-way earlier; restore a backup"
                ));
            }
            Some(m) if m.checksum.as_ref() != checksum.as_slice() => {
                return MigrationState::Incompatible(format!(
                    "migration {version} differs from the one this qaloop ships"
                ));
            }
            Some(_) => {}
        }
    }
    let pending = known.len() - applied.len().min(known.len());
    if pending == 0 {
        MigrationState::Current
    } else {
        MigrationState::Pending(pending)
    }
}

/// Reads, without changing anything, where the database at `url` stands with this binary's
/// migrations. A SQLite file that does not exist yet is `Pending(all)` (created at start).
pub async fn inspect(url: &str) -> Result<MigrationState, StoreError> {
    if url.starts_with("sqlite:") {
        sqlite_folder_exists(url)?;
        if let Some((path, _)) = crate::config::sqlite_file(url)
            && !std::path::Path::new(path).exists()
        {
            return Ok(compare(&SQLITE_MIGRATIONS, &[]));
        }
        let options = SqliteConnectOptions::from_str(url)?.read_only(true);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Unreachable {
                target: crate::config::sqlite_file(url)
                    .map_or_else(|| url.to_owned(), |(p, _)| p.to_owned()),
                cause: plain_cause(&e),
            })?;
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(&mut conn)
        .await?;
        let applied: Vec<(i64, Vec<u8>, bool)> = if exists > 0 {
            sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut conn)
            .await?
        } else {
            Vec::new()
        };
        conn.close().await.ok();
        Ok(compare(&SQLITE_MIGRATIONS, &applied))
    } else {
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = probe_postgres(&options).await?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
        let applied: Vec<(i64, Vec<u8>, bool)> = if exists {
            sqlx::query_as(
                "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&mut conn)
            .await?
        } else {
            Vec::new()
        };
        conn.close().await.ok();
        Ok(compare(&POSTGRES_MIGRATIONS, &applied))
    }
}

impl Store {
    /// When the longest-waiting sendable message (pending or failed, past its hold and its
    /// retry time at `now`) became due; `None` when nothing waits.
    pub async fn oldest_due_message(
        &self,
        now: Timestamp,
    ) -> Result<Option<Timestamp>, StoreError> {
        let now = super::format_instant(now);
        let text: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(CASE WHEN not_before > next_attempt_at THEN not_before \
                 ELSE next_attempt_at END) FROM outbox \
                 WHERE status IN ('pending', 'failed') AND next_attempt_at <= $1 AND not_before <= $1",
            )
            .bind(&now)
            .fetch_one(pool)
            .await?
        });
        text.map(|t| {
            super::parse_instant(&t).map_err(|_| StoreError::Corrupt {
                column: "outbox.next_attempt_at",
                value: t,
            })
        })
        .transpose()
    }
}

impl Store {
    /// SQLite: `VACUUM INTO target` (a consistent, compacted copy, taken online). `None` on
    /// PostgreSQL, which has its own tools.
    pub async fn vacuum_into(&self, target: &str) -> Result<Option<()>, StoreError> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                sqlx::query("VACUUM INTO $1")
                    .bind(target)
                    .execute(pool)
                    .await?;
                Ok(Some(()))
            }
            Backend::Postgres(_) => Ok(None),
        }
    }
}

impl Store {
    /// The earliest moment a queued message (pending or failed) can be claimed: the latest of
    /// its retry time, its working-hours hold and any current claim's lease. `None` when the
    /// queue is empty. Lets the daemon sleep instead of polling.
    pub async fn next_send_at(&self) -> Result<Option<Timestamp>, StoreError> {
        let text: Option<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT MIN(CASE WHEN claimed_until IS NOT NULL AND claimed_until > t THEN claimed_until ELSE t END) \
                 FROM (SELECT claimed_until, CASE WHEN not_before > next_attempt_at THEN not_before \
                       ELSE next_attempt_at END AS t \
                       FROM outbox WHERE status IN ('pending', 'failed')) AS q",
            )
            .fetch_one(pool)
            .await?
        });
        text.map(|t| {
            super::parse_instant(&t).map_err(|_| StoreError::Corrupt {
                column: "outbox.next_attempt_at",
                value: t,
            })
        })
        .transpose()
    }
}
