//! The actions tracker's SQL: raising actions, changing their state with a history row in the
//! same transaction, listing them.
//!
//! Every state change is a guarded write (`WHERE id = … AND state = <the state it was checked
//! in>`), so two people acting at once cannot both win: the second finds the state moved and
//! is told so.

use jiff::Timestamp;
use jiff::civil::Date;
use sqlx::{FromRow, Transaction};

use super::{Backend, BeginWrite, Store, StoreError, date, format_instant, instant};
use crate::domain::{Action, ActionChange, ActionSource, ActionState, Actor, NewAction, Via};

/// Which actions to list.
#[derive(Debug, Clone, Default)]
pub struct ActionFilter {
    /// Only these states (empty: all).
    pub states: Vec<ActionState>,
    /// Only open and due before this date.
    pub overdue_on: Option<Date>,
    /// Only owned by one of these staff ids (empty: anyone).
    pub owners: Vec<String>,
    /// Only raised from this assignment's record.
    pub assignment_id: Option<i64>,
    /// Only these ids (empty: any). Callers keep lists to a few thousand (bind limits).
    pub ids: Vec<i64>,
}

/// One line of an action's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionHistoryEntry {
    /// The action.
    pub action_id: i64,
    /// `raised`, `done`, `verified`, `reopened` or `reassigned`.
    pub event: String,
    /// Staff id, or `system:…`.
    pub actor: String,
    /// Through which edge.
    pub via: Via,
    /// When.
    pub at: Timestamp,
    /// The note, the reason, or what moved.
    pub detail: String,
}

/// The outcome of a guarded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionChanged {
    /// Written.
    Changed,
    /// Someone else changed it first; this is where it stands now.
    Moved(ActionState),
}

#[derive(FromRow)]
struct ActionRow {
    id: i64,
    source: String,
    assignment_id: Option<i64>,
    description: String,
    owner: String,
    raised_by: String,
    due: String,
    inadequate: bool,
    state: String,
    reopened: i32,
    created_at: String,
    done_at: Option<String>,
    verified_at: Option<String>,
    verified_by: Option<String>,
}

const ACTION_COLUMNS: &str = "id, source, assignment_id, description, owner, raised_by, due, \
    inadequate, state, reopened, created_at, done_at, verified_at, verified_by";

fn corrupt(column: &'static str, value: &str) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_owned(),
    }
}

impl TryFrom<ActionRow> for Action {
    type Error = StoreError;
    fn try_from(r: ActionRow) -> Result<Self, StoreError> {
        let opt_instant = |column, text: Option<&str>| text.map(|t| instant(column, t)).transpose();
        Ok(Action {
            id: r.id,
            source: ActionSource::parse(&r.source).ok_or_else(|| corrupt("source", &r.source))?,
            assignment_id: r.assignment_id,
            due: date("due", &r.due)?,
            inadequate: r.inadequate,
            state: ActionState::parse(&r.state).ok_or_else(|| corrupt("state", &r.state))?,
            reopened: u32::try_from(r.reopened).map_err(|_| corrupt("reopened", "negative"))?,
            created_at: instant("created_at", &r.created_at)?,
            done_at: opt_instant("done_at", r.done_at.as_deref())?,
            verified_at: opt_instant("verified_at", r.verified_at.as_deref())?,
            description: r.description,
            owner: r.owner,
            raised_by: r.raised_by,
            verified_by: r.verified_by,
        })
    }
}

/// Appends one action history row.
async fn record_action<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    id: i64,
    event: &str,
    actor: &Actor,
    at: &str,
    detail: &str,
) -> Result<(), sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO action_history (action_id, event, actor, via, at, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(event.to_owned())
    .bind(actor.staff_id.clone())
    .bind(actor.via.as_str().to_owned())
    .bind(at.to_owned())
    .bind(detail.to_owned())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves the unverified actions owned by leaver `from` to `to`, with history, inside the staff
/// import's transaction (so a leaver's work and actions move together). Returns the ids moved.
pub(super) async fn hand_over<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    from: &str,
    to: &str,
    at: &str,
) -> Result<Vec<i64>, sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB> + sqlx::Decode<'a, DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    (i64,): for<'r> FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let ids: Vec<(i64,)> = sqlx::query_as(
        "UPDATE actions SET owner = $1 WHERE owner = $2 AND state <> 'verified' RETURNING id",
    )
    .bind(to.to_owned())
    .bind(from.to_owned())
    .fetch_all(&mut **tx)
    .await?;
    let actor = Actor::system("staff-import");
    for &(id,) in &ids {
        record_action(
            tx,
            id,
            "reassigned",
            &actor,
            at,
            &format!("from {from} to {to} (leaver)"),
        )
        .await?;
    }
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// Inserts `actions`, each with its `raised` history row, inside the caller's transaction (an
/// audit's completion, or [`Store::raise_actions`]). Returns their ids in order.
pub(super) async fn insert_actions<'c, DB>(
    tx: &mut Transaction<'c, DB>,
    actions: &[NewAction],
    by: &Actor,
    at: &str,
) -> Result<Vec<i64>, sqlx::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
    for<'e> &'e mut <DB as sqlx::Database>::Connection: sqlx::Executor<'e, Database = DB>,
    for<'a> i64: sqlx::Encode<'a, DB> + sqlx::Type<DB> + sqlx::Decode<'a, DB>,
    for<'a> Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    for<'a> String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    (i64,): for<'r> FromRow<'r, <DB as sqlx::Database>::Row>,
{
    let mut ids = Vec::with_capacity(actions.len());
    for a in actions {
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO actions (source, assignment_id, description, owner, raised_by, \
             due, inadequate, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8) RETURNING id",
        )
        .bind(a.source.as_str().to_owned())
        .bind(a.assignment_id)
        .bind(a.description.clone())
        .bind(a.owner.clone())
        .bind(a.raised_by.clone())
        .bind(a.due.to_string())
        .bind(a.inadequate)
        .bind(at.to_owned())
        .fetch_one(&mut **tx)
        .await?;
        record_action(
            tx,
            id,
            "raised",
            by,
            at,
            &format!("owner {}, due {}", a.owner, a.due),
        )
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

impl Store {
    /// Raises actions, each with a `raised` history row, in one transaction. Returns their ids
    /// in order. Callers validate first ([`NewAction::validate`]).
    pub async fn raise_actions(
        &self,
        actions: &[NewAction],
        by: &Actor,
        now: Timestamp,
    ) -> Result<Vec<i64>, StoreError> {
        let at = format_instant(now);
        Ok(on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let ids = insert_actions(&mut tx, actions, by, &at).await?;
            tx.commit().await?;
            ids
        }))
    }

    /// One action.
    pub async fn action(&self, id: i64) -> Result<Action, StoreError> {
        let row: Option<ActionRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {ACTION_COLUMNS} FROM actions WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.ok_or(StoreError::NotFound(id))?.try_into()
    }

    /// Actions with these ids, however many (in chunks, like
    /// [`Store::assignments_with_ids`]).
    pub async fn actions_with_ids(&self, ids: &[i64]) -> Result<Vec<Action>, StoreError> {
        let mut found = Vec::new();
        for chunk in ids.chunks(super::ID_CHUNK) {
            found.extend(
                self.actions(&ActionFilter {
                    ids: chunk.to_vec(),
                    ..Default::default()
                })
                .await?,
            );
        }
        Ok(found)
    }

    /// Actions matching `filter`, oldest due first.
    pub async fn actions(&self, filter: &ActionFilter) -> Result<Vec<Action>, StoreError> {
        let rows: Vec<ActionRow> = on_pool!(self, |pool| {
            let mut qb = sqlx::QueryBuilder::new(format!(
                "SELECT {ACTION_COLUMNS} FROM actions WHERE 1 = 1"
            ));
            if !filter.states.is_empty() {
                qb.push(" AND state IN (");
                let mut list = qb.separated(", ");
                for s in &filter.states {
                    list.push_bind(s.as_str());
                }
                qb.push(")");
            }
            if let Some(day) = filter.overdue_on {
                qb.push(" AND state = 'open' AND due < ")
                    .push_bind(day.to_string());
            }
            if !filter.owners.is_empty() {
                qb.push(" AND owner IN (");
                let mut list = qb.separated(", ");
                for o in &filter.owners {
                    list.push_bind(o.clone());
                }
                qb.push(")");
            }
            if let Some(id) = filter.assignment_id {
                qb.push(" AND assignment_id = ").push_bind(id);
            }
            if !filter.ids.is_empty() {
                qb.push(" AND id IN (");
                let mut list = qb.separated(", ");
                for id in &filter.ids {
                    list.push_bind(*id);
                }
                qb.push(")");
            }
            qb.push(" ORDER BY due, id");
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(Action::try_from).collect()
    }

    /// Applies `change` to action `id` if it is still in state `from` (the state the change was
    /// checked against), with its history row, in one transaction.
    pub async fn change_action(
        &self,
        id: i64,
        from: ActionState,
        change: &ActionChange,
        by: &Actor,
        now: Timestamp,
    ) -> Result<ActionChanged, StoreError> {
        let at = format_instant(now);
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let query = match change {
                ActionChange::Done { .. } => sqlx::query(
                    "UPDATE actions SET state = 'done', done_at = $1 WHERE id = $2 AND state = $3",
                )
                .bind(&at),
                ActionChange::Verify { .. } => sqlx::query(
                    "UPDATE actions SET state = 'verified', verified_at = $1, verified_by = $4 \
                     WHERE id = $2 AND state = $3",
                )
                .bind(&at),
                ActionChange::Reopen { due, .. } => sqlx::query(
                    "UPDATE actions SET state = 'open', due = $1, reopened = reopened + 1, \
                     done_at = NULL WHERE id = $2 AND state = $3",
                )
                .bind(due.to_string()),
            }
            .bind(id)
            .bind(from.as_str());
            let query = match change {
                ActionChange::Verify { .. } => query.bind(&by.staff_id),
                _ => query,
            };
            let updated = query.execute(&mut *tx).await?.rows_affected();
            if updated == 0 {
                let state: Option<String> =
                    sqlx::query_scalar("SELECT state FROM actions WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                return match state {
                    None => Err(StoreError::NotFound(id)),
                    Some(s) => Ok(ActionChanged::Moved(
                        ActionState::parse(&s).ok_or_else(|| corrupt("state", &s))?,
                    )),
                };
            }
            let detail = match change {
                ActionChange::Reopen { due, reason } => format!("due {due}: {reason}"),
                other => other.note().to_owned(),
            };
            record_action(&mut tx, id, change.event(), by, &at, &detail).await?;
            tx.commit().await?;
            Ok(ActionChanged::Changed)
        })
    }

    /// An action's history, oldest first.
    pub async fn action_history(&self, id: i64) -> Result<Vec<ActionHistoryEntry>, StoreError> {
        let rows: Vec<(i64, String, String, String, String, String)> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT action_id, event, actor, via, at, detail FROM action_history \
                 WHERE action_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(action_id, event, actor, via, at, detail)| {
                Ok(ActionHistoryEntry {
                    action_id,
                    event,
                    actor,
                    via: Via::parse(&via).ok_or_else(|| corrupt("via", &via))?,
                    at: instant("at", &at)?,
                    detail,
                })
            })
            .collect()
    }
}
