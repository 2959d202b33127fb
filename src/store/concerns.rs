//! Urgent concerns' SQL: recording one (inside the audit's transaction, or on its own), listing
//! them, and the one-time acknowledgement.

use jiff::Timestamp;
use sqlx::{FromRow, Transaction};

use super::{Backend, BeginWrite, Store, StoreError, format_instant, instant};
pub use crate::domain::NewConcern;
use crate::domain::{Actor, Concern, ConcernKind};

/// The outcome of an acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledged {
    /// Recorded now.
    Now,
    /// Someone else acknowledged it first: who.
    Already(String),
}

#[derive(FromRow)]
struct ConcernRow {
    id: i64,
    assignment_id: i64,
    case_reference: String,
    kind: String,
    raised_by: String,
    raised_at: String,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    acknowledgement: Option<String>,
    health_informed: Option<bool>,
}

const CONCERN_COLUMNS: &str = "id, assignment_id, case_reference, kind, raised_by, raised_at, \
    acknowledged_by, acknowledged_at, acknowledgement, health_informed";

impl TryFrom<ConcernRow> for Concern {
    type Error = StoreError;
    fn try_from(r: ConcernRow) -> Result<Self, StoreError> {
        Ok(Concern {
            id: r.id,
            assignment_id: r.assignment_id,
            kind: ConcernKind::parse(&r.kind).ok_or_else(|| StoreError::Corrupt {
                column: "kind",
                value: r.kind.clone(),
            })?,
            raised_at: instant("raised_at", &r.raised_at)?,
            acknowledged_at: r
                .acknowledged_at
                .as_deref()
                .map(|t| instant("acknowledged_at", t))
                .transpose()?,
            case_reference: r.case_reference,
            raised_by: r.raised_by,
            acknowledged_by: r.acknowledged_by,
            acknowledgement: r.acknowledgement,
            health_informed: r.health_informed,
        })
    }
}

/// Records `concerns` inside the caller's transaction (an audit's submission), once per
/// (audit, kind): a second submission of the same audit records nothing new.
pub(crate) async fn insert_concerns<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    concerns: &[NewConcern],
    by: &Actor,
    at: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    for c in concerns {
        sqlx::query(
            "INSERT INTO concerns (assignment_id, case_reference, kind, raised_by, raised_via, \
             raised_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (assignment_id, kind) DO NOTHING",
        )
        .bind(c.assignment_id)
        .bind(c.case_reference.clone())
        .bind(c.kind.as_str().to_owned())
        .bind(by.staff_id.clone())
        .bind(by.via.as_str().to_owned())
        .bind(at.to_owned())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Records concerns on their own (the CLI, tests); an audit's submission records them in
    /// its own transaction instead.
    pub async fn raise_concerns(
        &self,
        concerns: &[NewConcern],
        by: &Actor,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            insert_concerns(&mut tx, concerns, by, &at).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Concerns, newest first; only unacknowledged ones when `open_only`.
    pub async fn concerns(&self, open_only: bool) -> Result<Vec<Concern>, StoreError> {
        let sql = if open_only {
            "WHERE acknowledged_at IS NULL ORDER BY raised_at DESC, id DESC"
        } else {
            "ORDER BY raised_at DESC, id DESC"
        };
        let rows: Vec<ConcernRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CONCERN_COLUMNS} FROM concerns {sql}"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(Concern::try_from).collect()
    }

    /// One concern.
    pub async fn concern(&self, id: i64) -> Result<Concern, StoreError> {
        let row: Option<ConcernRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CONCERN_COLUMNS} FROM concerns WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound(id))?.try_into()
    }

    /// Records the acknowledgement once: the first one wins; later ones learn who it was. Its
    /// alerts not yet sent are cancelled in the same transaction.
    pub async fn acknowledge_concern(
        &self,
        id: i64,
        by: &Actor,
        what_next: &str,
        health_informed: Option<bool>,
        now: Timestamp,
    ) -> Result<Acknowledged, StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(
                "UPDATE concerns SET acknowledged_by = $1, acknowledged_via = $2, \
                 acknowledged_at = $3, acknowledgement = $4, health_informed = $5 \
                 WHERE id = $6 AND acknowledged_at IS NULL",
            )
            .bind(&by.staff_id)
            .bind(by.via.as_str())
            .bind(&at)
            .bind(what_next)
            .bind(health_informed)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                let who: Option<Option<String>> =
                    sqlx::query_scalar("SELECT acknowledged_by FROM concerns WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return match who {
                    None => Err(StoreError::NotFound(id)),
                    Some(who) => Ok(Acknowledged::Already(who.unwrap_or_default())),
                };
            }
            sqlx::query(
                "UPDATE outbox SET status = 'cancelled', last_error = 'concern acknowledged' \
                 WHERE kind = 'urgent_concern' AND key LIKE $1 AND status IN ('pending', 'failed')",
            )
            .bind(format!("urgent_concern:c{id}:%"))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Acknowledged::Now)
        })
    }
}
