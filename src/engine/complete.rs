//! Completing an assignment: who may, and what it triggers.

use jiff::Timestamp;

use super::Context;
use super::plan::plan_triggered;
use crate::org::Org;
use crate::store::{Assignment, Completion, Status, Store, StoreError};

/// Why a completion was refused.
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    /// No such assignment.
    #[error("no assignment has id {0}")]
    NotFound(i64),
    /// The person completing is not a current member of staff.
    #[error("`{0}` is not a current member of staff")]
    UnknownPerson(String),
    /// They may not complete this assignment.
    #[error(
        "{by} may not complete assignment {id} (held by {assignee}): only the assignee, a holder of its role, \
         someone above the assignee in line management, or a QA admin may"
    )]
    NotAllowed {
        /// The assignment.
        id: i64,
        /// Who tried.
        by: String,
        /// Who holds it.
        assignee: String,
    },
    /// It is already done or cancelled.
    #[error("assignment {id} is already {}", status.as_str())]
    NotOpen {
        /// The assignment.
        id: i64,
        /// Where it stands.
        status: Status,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `by` may complete `assignment`: the assignee, a holder of the owning role, anyone
/// above the assignee in line management, or a holder of the admin role.
pub fn may_complete(ctx: &Context, org: &Org, assignment: &Assignment, by: &str) -> bool {
    let Some(person) = org.get(by).filter(|p| p.is_current()) else {
        return false;
    };
    if assignment.assignee == by || person.holds(&ctx.schedule.admin_role) {
        return true;
    }
    match assignment.assignee.strip_prefix("role:") {
        Some(role) => person.holds(role),
        None => org.is_above(by, &assignment.assignee),
    }
}

/// Completes assignment `id` as `by`, creating any work it triggers in the same transaction.
/// Returns the completed assignment and the ids of triggered work.
pub async fn complete(
    store: &Store,
    ctx: &Context,
    id: i64,
    by: &str,
    note: Option<&str>,
    now: Timestamp,
) -> Result<(Assignment, Vec<i64>), CompleteError> {
    let assignment = match store.assignment(id).await {
        Ok(a) => a,
        Err(StoreError::NotFound(id)) => return Err(CompleteError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    if assignment.status != Status::Open {
        return Err(CompleteError::NotOpen {
            id,
            status: assignment.status,
        });
    }
    let org = Org::new(store.people().await?);
    if org.get(by).is_none_or(|p| !p.is_current()) {
        return Err(CompleteError::UnknownPerson(by.to_owned()));
    }
    if !may_complete(ctx, &org, &assignment, by) {
        return Err(CompleteError::NotAllowed {
            id,
            by: by.to_owned(),
            assignee: assignment.assignee.clone(),
        });
    }
    let today = ctx.today(now);
    let triggered: Vec<_> = ctx
        .schedule
        .triggered_by(&assignment.activity_id)
        .map(|activity| plan_triggered(ctx, activity, &assignment, by, today, &org))
        .collect();
    let notices = |created: &[(i64, &crate::store::NewAssignment)]| {
        ctx.new_work_notices(&org, created, false, now)
    };
    match store
        .complete(id, by, note, &triggered, &notices, now)
        .await?
    {
        Completion::Completed { triggered } => Ok((store.assignment(id).await?, triggered)),
        Completion::NotOpen(status) => Err(CompleteError::NotOpen { id, status }),
    }
}
