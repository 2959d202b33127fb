//! The records kept with completed work (see `migrations/*/0004_records.sql`): written in the
//! completion's transaction by [`Store::complete`], read by the pages and `assignments show`.
//!
//! **Invariant:** records and moderation outcomes are never updated or deleted (triggers on
//! both backends reject it), like history.

use sqlx::Transaction;

use super::{Backend, Store, StoreError, instant};
use crate::domain::{Actor, ModerationOutcome, NewRecord, Record, Via};

/// Inserts a completion's record and any moderation outcomes inside the caller's transaction.
pub(super) async fn insert<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    id: i64,
    new: &NewRecord,
    by: &Actor,
    at: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO records (assignment_id, form_id, fields, submitted_by, submitted_at, via) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(new.form_id.clone())
    .bind(new.fields.to_string())
    .bind(by.staff_id.clone())
    .bind(at.to_owned())
    .bind(by.via.as_str().to_owned())
    .execute(&mut **tx)
    .await?;
    for o in &new.outcomes {
        sqlx::query(
            "INSERT INTO moderation_outcomes \
             (moderation_id, audit_id, field, audit_grade, agreed, moderated_grade) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(o.audit_id)
        .bind(o.field.clone())
        .bind(o.audit_grade.clone())
        .bind(o.agreed)
        .bind(o.moderated_grade.clone())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

type RecordRow = (i64, String, String, String, String, String);
type OutcomeRow = (i64, i64, String, String, bool, Option<String>);

/// Turns a stored row into a [`Record`].
fn to_record(
    (assignment_id, form_id, fields, submitted_by, at, via): RecordRow,
) -> Result<Record, StoreError> {
    Ok(Record {
        assignment_id,
        fields: serde_json::from_str(&fields).map_err(|_| StoreError::Corrupt {
            column: "fields",
            value: fields.clone(),
        })?,
        form_id,
        submitted_by,
        submitted_at: instant("submitted_at", &at)?,
        via: Via::parse(&via).ok_or(StoreError::Corrupt {
            column: "via",
            value: via.clone(),
        })?,
    })
}

impl Store {
    /// Every record answering `form_id`, oldest first (what the senior-leadership digest reads
    /// to find Inadequate audits).
    pub async fn records_of_form(&self, form_id: &str) -> Result<Vec<Record>, StoreError> {
        let rows: Vec<RecordRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT assignment_id, form_id, fields, submitted_by, submitted_at, via \
                 FROM records WHERE form_id = $1 ORDER BY assignment_id",
            )
            .bind(form_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(to_record).collect()
    }

    /// The record stored with assignment `id`, if it was completed through a form.
    pub async fn record(&self, id: i64) -> Result<Option<Record>, StoreError> {
        let row: Option<RecordRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT assignment_id, form_id, fields, submitted_by, submitted_at, via \
                 FROM records WHERE assignment_id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(to_record).transpose()
    }

    /// Moderation outcomes about audit `audit_id` (from every moderation of it), in field order
    /// of insertion.
    pub async fn moderation_outcomes(
        &self,
        audit_id: i64,
    ) -> Result<Vec<ModerationOutcome>, StoreError> {
        let rows: Vec<OutcomeRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT moderation_id, audit_id, field, audit_grade, agreed, moderated_grade \
                 FROM moderation_outcomes WHERE audit_id = $1 ORDER BY moderation_id",
            )
            .bind(audit_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(moderation_id, audit_id, field, audit_grade, agreed, moderated_grade)| {
                    ModerationOutcome {
                        moderation_id,
                        audit_id,
                        field,
                        audit_grade,
                        agreed,
                        moderated_grade,
                    }
                },
            )
            .collect())
    }
}
