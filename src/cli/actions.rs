//! `qaloop actions …`: raise, list and move actions through their lifecycle from the server.
//! An edge only: every rule is in `domain::action` and `engine::actions`.

use clap::Subcommand;
use jiff::Timestamp;
use jiff::civil::Date;

use super::output::{ActionView, Format, print};
use super::{Failure, Outcome, exit, load, now_or_clock, open_store};
use crate::domain::{ActionChange, ActionError, ActionSource, ActionState, Actor, NewAction, Via};
use crate::engine::actions::{ActionsError, change, default_due, raise};
use crate::org::Org;
use crate::store::ActionFilter;

/// `qaloop actions …`
#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// Raise an action by hand (or for an assignment's record with --assignment).
    Add {
        /// What must change, in a sentence. Never a child's name.
        #[arg(long)]
        description: String,
        /// Staff id of who must do it.
        #[arg(long, value_name = "STAFF_ID")]
        owner: String,
        /// Staff id of who raises it (they, or their manager, verify it).
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// Due date [default: the schedule's `[actions] due_working_days` from today].
        #[arg(long, value_name = "YYYY-MM-DD")]
        due: Option<Date>,
        /// The assignment whose record raised it.
        #[arg(long, value_name = "ID")]
        assignment: Option<i64>,
        /// It comes from an audit graded Inadequate (shorter default due date).
        #[arg(long)]
        inadequate: bool,
        /// The moment it is raised [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// List actions (the closing-the-loop tracker).
    List {
        /// Which actions.
        #[arg(long, value_enum, default_value_t = StateFilter::Unclosed)]
        state: StateFilter,
        /// Only owned by this person.
        #[arg(long, value_name = "STAFF_ID")]
        owner: Option<String>,
        /// Only owners in this service.
        #[arg(long)]
        service: Option<String>,
        /// Only owners in this team.
        #[arg(long)]
        team: Option<String>,
        /// Output format (CSV cells are safe to open in a spreadsheet).
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The moment overdue is judged at [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// The owner says it is done.
    Done {
        /// Action id.
        id: i64,
        /// Staff id of the owner (or a manager above them).
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// What was done.
        #[arg(long)]
        note: String,
        /// The moment of the change [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Confirm a done action made a difference (the raiser or their manager, never the owner).
    Verify {
        /// Action id.
        id: i64,
        /// Staff id of the verifier.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// How you know it made a difference.
        #[arg(long)]
        note: String,
        /// The moment of the change [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Send a done action back to open with a new due date.
    Reopen {
        /// Action id.
        id: i64,
        /// Staff id of the verifier.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// The new due date.
        #[arg(long, value_name = "YYYY-MM-DD")]
        due: Date,
        /// Why it is not done.
        #[arg(long)]
        reason: String,
        /// The moment of the change [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Every change to an action: what, who, when, how.
    History {
        /// Action id.
        id: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Which actions `actions list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFilter {
    /// Open or done but not yet verified: what the tracker chases.
    Unclosed,
    /// Open (new or reopened).
    Open,
    /// Open and past due.
    Overdue,
    /// Done, waiting for verification.
    Done,
    /// Verified.
    Verified,
    /// Reopened at least once.
    Reopened,
    /// Everything.
    All,
}

/// The exit code and message for a refused or failed action command.
fn failure(error: ActionsError) -> Failure {
    let code = match &error {
        ActionsError::Refused {
            error: ActionError::NotAllowed { .. },
            ..
        } => exit::NOPERM,
        ActionsError::Refused { .. } | ActionsError::NotFound(_) => exit::DATAERR,
        ActionsError::Store(_) => exit::FAILURE,
    };
    Failure::new(code, error.to_string())
}

/// Runs `qaloop actions …`.
pub(super) async fn run(config: Option<&std::path::Path>, command: ActionsCommand) -> Outcome {
    let loaded = load(config, "warn")?;
    let store = open_store(&loaded.settings).await?;
    let ctx = &loaded.ctx;
    match command {
        ActionsCommand::Add {
            description,
            owner,
            by,
            due,
            assignment,
            inadequate,
            now,
        } => {
            let now = now_or_clock(now);
            let action = NewAction {
                source: if assignment.is_some() {
                    ActionSource::Audit
                } else {
                    ActionSource::Manual
                },
                assignment_id: assignment,
                description,
                owner,
                raised_by: by.clone(),
                due: due.unwrap_or_else(|| default_due(ctx, ctx.today(now), inadequate)),
                inadequate,
            };
            let ids = raise(
                &store,
                ctx,
                std::slice::from_ref(&action),
                &Actor::new(by, Via::Cli),
                now,
            )
            .await
            .map_err(failure)?;
            out!(
                "action {} raised for {}, due {}",
                ids[0],
                action.owner,
                action.due
            );
            Ok(())
        }
        ActionsCommand::List {
            state,
            owner,
            service,
            team,
            format,
            now,
        } => {
            let today = ctx.today(now_or_clock(now));
            let mut filter = ActionFilter {
                owners: owner.into_iter().collect(),
                ..Default::default()
            };
            match state {
                StateFilter::Unclosed => filter.states = vec![ActionState::Open, ActionState::Done],
                StateFilter::Open | StateFilter::Reopened => {
                    filter.states = vec![ActionState::Open]
                }
                StateFilter::Overdue => filter.overdue_on = Some(today),
                StateFilter::Done => filter.states = vec![ActionState::Done],
                StateFilter::Verified => filter.states = vec![ActionState::Verified],
                StateFilter::All => {}
            }
            let org = Org::new(store.people().await?);
            let rows: Vec<ActionView> = store
                .actions(&filter)
                .await?
                .iter()
                .filter(|a| state != StateFilter::Reopened || a.reopened > 0)
                .map(|a| ActionView::new(a, &org, today, &ctx.tz))
                .filter(|v| service.as_ref().is_none_or(|s| *s == v.service))
                .filter(|v| team.as_ref().is_none_or(|t| *t == v.team))
                .collect();
            print(
                &rows,
                format,
                &[
                    "id",
                    "service",
                    "team",
                    "owner",
                    "due",
                    "state",
                    "overdue",
                    "age_days",
                    "description",
                ],
            )?;
            Ok(())
        }
        ActionsCommand::Done { id, by, note, now } => {
            apply(&store, ctx, id, ActionChange::Done { note }, by, now).await
        }
        ActionsCommand::Verify { id, by, note, now } => {
            apply(&store, ctx, id, ActionChange::Verify { note }, by, now).await
        }
        ActionsCommand::Reopen {
            id,
            by,
            due,
            reason,
            now,
        } => {
            apply(
                &store,
                ctx,
                id,
                ActionChange::Reopen { due, reason },
                by,
                now,
            )
            .await
        }
        ActionsCommand::History { id, format } => {
            store.action(id).await.map_err(|e| match e {
                crate::store::StoreError::NotFound(id) => {
                    Failure::new(exit::DATAERR, format!("no action has id {id}"))
                }
                other => other.into(),
            })?;
            let rows = store.action_history(id).await?;
            print(&rows, format, &["at", "event", "actor", "via", "detail"])?;
            Ok(())
        }
    }
}

async fn apply(
    store: &crate::store::Store,
    ctx: &crate::engine::Context,
    id: i64,
    requested: ActionChange,
    by: String,
    now: Option<Timestamp>,
) -> Outcome {
    let action = change(
        store,
        ctx,
        id,
        &requested,
        &Actor::new(by, Via::Cli),
        now_or_clock(now),
    )
    .await
    .map_err(failure)?;
    out!("action {id} is now {}", action.state.as_str());
    Ok(())
}
