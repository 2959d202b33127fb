//! Raising and changing actions: checked by the domain's rules ([`NewAction::validate`],
//! [`Action::apply`]), written by the store with their history in one transaction.

use jiff::Timestamp;
use jiff::civil::Date;

use super::Context;
use crate::domain::{Action, ActionChange, ActionError, Actor, NewAction};
use crate::org::Org;
use crate::store::{ActionChanged, Store, StoreError};

/// Why raising or changing an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    /// No such action.
    #[error("no action has id {0}")]
    NotFound(i64),
    /// The rules said no; for a batch, `index` says which action (0-based).
    #[error("{}{error}", index.map(|i| format!("action {}: ", i + 1)).unwrap_or_default())]
    Refused {
        /// Which of several actions, when raising a batch.
        index: Option<usize>,
        /// What is wrong.
        error: ActionError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ActionError> for ActionsError {
    fn from(error: ActionError) -> Self {
        ActionsError::Refused { index: None, error }
    }
}

/// The default due date of an action raised on `today`: the schedule's `[actions]` timeline,
/// shorter when it comes from an audit graded Inadequate.
pub fn default_due(ctx: &Context, today: Date, inadequate: bool) -> Date {
    let settings = &ctx.schedule.actions;
    let n = if inadequate {
        settings.inadequate_due_working_days
    } else {
        settings.due_working_days
    };
    ctx.calendar.nth_working_day_after(today, n)
}

/// Raises `actions` as `by`: all or nothing — any invalid action (no owner, an unknown owner,
/// a due date in the past, no description) refuses the whole batch and writes nothing.
pub async fn raise(
    store: &Store,
    ctx: &Context,
    actions: &[NewAction],
    by: &Actor,
    now: Timestamp,
) -> Result<Vec<i64>, ActionsError> {
    let org = Org::new(store.people().await?);
    let today = ctx.today(now);
    for (index, action) in actions.iter().enumerate() {
        action
            .validate(&org, today)
            .map_err(|error| ActionsError::Refused {
                index: (actions.len() > 1).then_some(index),
                error,
            })?;
    }
    Ok(store.raise_actions(actions, by, now).await?)
}

/// Applies `change` to action `id` as `by`, returning the action as it now stands.
pub async fn change(
    store: &Store,
    ctx: &Context,
    id: i64,
    change: &ActionChange,
    by: &Actor,
    now: Timestamp,
) -> Result<Action, ActionsError> {
    let action = match store.action(id).await {
        Ok(a) => a,
        Err(StoreError::NotFound(id)) => return Err(ActionsError::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    let org = Org::new(store.people().await?);
    action.apply(&org, &by.staff_id, change, ctx.today(now))?;
    match store
        .change_action(id, action.state, change, by, now)
        .await?
    {
        ActionChanged::Changed => Ok(store.action(id).await?),
        ActionChanged::Moved(state) => Err(ActionError::WrongState {
            id,
            state,
            change: change.event(),
        }
        .into()),
    }
}
