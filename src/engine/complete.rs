//! Completing an assignment: checked by [`crate::domain::authorise`], and what it triggers.

use jiff::Timestamp;

use super::Context;
use super::plan::plan_triggered;
use crate::domain::{
    Actor, Assignment, NewAssignment, NewRecord, Operation, RecordEffects, Refusal,
};
use crate::store::{Completion, Store, StoreError};

/// Why a completion was refused.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// No such assignment.
    #[error("no assignment has id {0}")]
    NotFound(i64),
    /// The authorisation rules said no (unknown person, not allowed, not open).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Completes assignment `id` as `by`, creating any work it triggers in the same transaction.
/// Returns the completed assignment and the ids of triggered work.
pub async fn complete(
    store: &Store,
    ctx: &Context,
    id: i64,
    by: &Actor,
    note: Option<&str>,
    now: Timestamp,
) -> Result<(Assignment, Vec<i64>), CompleteError> {
    complete_with_record(store, ctx, id, by, note, None, now).await
}

/// Like [`complete`], also storing the submitted form's `record` in the same transaction (the
/// caller has validated it against the activity's form).
pub async fn complete_with_record(
    store: &Store,
    ctx: &Context,
    id: i64,
    by: &Actor,
    note: Option<&str>,
    record: Option<&NewRecord>,
    now: Timestamp,
) -> Result<(Assignment, Vec<i64>), CompleteError> {
    let (assignment, org) =
        super::change::load_authorised(store, ctx, id, by, Operation::Complete).await?;
    let today = ctx.today(now);
    let triggered: Vec<_> = ctx
        .schedule
        .triggered_by(&assignment.activity_id)
        .map(|activity| plan_triggered(ctx, activity, &assignment, &by.staff_id, today, &org))
        .collect();
    let notices =
        |created: &[(i64, &NewAssignment)]| ctx.new_work_notices(&org, created, false, now);
    // The actions the record raises and the concerns it flags commit with it.
    let effects = match (record, ctx.schedule.activity(&assignment.activity_id)) {
        (Some(record), Some(activity)) => activity
            .form
            .as_ref()
            .and_then(|form| ctx.schedule.forms.get(form))
            .map(|form| RecordEffects::of(record, form, &assignment, &by.staff_id))
            .unwrap_or_default(),
        _ => RecordEffects::default(),
    };
    match store
        .complete(
            id,
            by,
            note,
            record.map(|r| (r, &effects)),
            &triggered,
            &notices,
            now,
        )
        .await?
    {
        Completion::Completed { triggered } => Ok((store.assignment(id).await?, triggered)),
        Completion::NotOpen(status) => Err(Refusal::NotOpen { id, status }.into()),
    }
}
