//! Read-only aggregates for operating the service: the database's liveness (`SELECT 1`), the
//! outbox queue depth for systemd's `STATUS=`, and the gauges `/metrics` and `/readyz` gather at
//! scrape time. Each is one cheap aggregate query over an indexed or small table.
//!
//! **Invariant:** reads only; never part of a write transaction.

use jiff::Timestamp;
use jiff::civil::Date;

use super::{Backend, Store, StoreError};

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

    /// Delivery attempts made and rows given up on (dead), by channel, over the outbox's life.
    pub async fn send_attempts_by_channel(&self) -> Result<Vec<Count>, StoreError> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT channel, CAST(COALESCE(SUM(attempts), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END), 0) AS BIGINT) \
                 FROM outbox GROUP BY channel",
            )
            .fetch_all(pool)
            .await?
        });
        // `a` = channel, `b` = dead count as text is awkward; return two counts per channel.
        Ok(rows
            .into_iter()
            .flat_map(|(channel, attempts, dead)| {
                [
                    Count {
                        a: channel.clone(),
                        b: "attempts".into(),
                        n: attempts,
                    },
                    Count {
                        a: channel,
                        b: "dead".into(),
                        n: dead,
                    },
                ]
            })
            .collect())
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
            t.parse().map_err(|_| StoreError::Corrupt {
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
                t.parse().map_err(|_| StoreError::Corrupt {
                    column: "meta.last_backup_at",
                    value: t,
                })
            })
            .transpose()
    }
}
