//! Reassigning and cancelling work: checked by [`crate::domain::authorise`], written with the
//! notices they cause in one transaction.

use jiff::Timestamp;

use super::Context;
use super::complete::CompleteError;
use crate::domain::{Actor, Assignee, Assignment, Operation, Refusal, authorise};
use crate::org::Org;
use crate::store::{Store, StoreError};

/// Why a reassignment or cancellation was refused. Same shape as a completion's refusal.
pub type ChangeError = CompleteError;

/// Loads assignment `id` and the organisation, and checks that `by` may do `operation`.
pub(super) async fn load_authorised(
    store: &Store,
    ctx: &Context,
    id: i64,
    by: &Actor,
    operation: Operation,
) -> Result<(Assignment, Org), ChangeError> {
    let assignment = match store.assignment(id).await {
        Ok(a) => a,
        Err(StoreError::NotFound(id)) => return Err(ChangeError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    let org = Org::new(store.people().await?);
    authorise(
        &org,
        &ctx.schedule.admin_role,
        &assignment,
        &by.staff_id,
        operation,
    )?;
    Ok((assignment, org))
}

/// Moves open assignment `id` to the current member of staff `to`, as `by`; the new holder is
/// told in the same transaction. Returns the assignment as it now stands.
pub async fn reassign(
    store: &Store,
    ctx: &Context,
    id: i64,
    to: &str,
    by: &Actor,
    now: Timestamp,
) -> Result<Assignment, ChangeError> {
    let (assignment, org) = load_authorised(store, ctx, id, by, Operation::Reassign).await?;
    if org.get(to).is_none_or(|p| !p.is_current()) {
        return Err(Refusal::UnknownPerson(to.to_owned()).into());
    }
    let mut moved = assignment.clone();
    moved.assignee = Assignee::person(to);
    let notices = ctx.moved_notices(&org, &moved, now);
    if store.reassign(id, to, by, &notices, now).await? {
        Ok(store.assignment(id).await?)
    } else {
        let status = store.assignment(id).await?.status;
        Err(Refusal::NotOpen { id, status }.into())
    }
}

/// Withdraws open assignment `id` as `by`, with a reason for the history; its unsent notices
/// are cancelled in the same transaction.
pub async fn cancel(
    store: &Store,
    ctx: &Context,
    id: i64,
    by: &Actor,
    reason: &str,
    now: Timestamp,
) -> Result<Assignment, ChangeError> {
    load_authorised(store, ctx, id, by, Operation::Cancel).await?;
    if store.cancel(id, by, reason, now).await? {
        Ok(store.assignment(id).await?)
    } else {
        let status = store.assignment(id).await?.status;
        Err(Refusal::NotOpen { id, status }.into())
    }
}
