//! `qaloop concerns …`: urgent and health concerns recorded in audits — list them with their
//! time to acknowledge, record one by hand, acknowledge one.

use clap::Subcommand;
use jiff::Timestamp;
use serde::Serialize;

use super::output::{Format, print};
use super::{Failure, Outcome, exit, load, now_or_clock, open_store};
use crate::domain::{Actor, ConcernKind, Via};
use crate::org::Org;
use crate::store::{Acknowledged, NewConcern, StoreError};

/// `qaloop concerns …`
#[derive(Debug, Subcommand)]
pub enum ConcernsCommand {
    /// List concerns (unacknowledged only, unless --all).
    List {
        /// Include acknowledged concerns.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The moment ages are judged at [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Record a concern found in an audit (the audit form does this itself).
    Raise {
        /// The audit's assignment id.
        #[arg(long, value_name = "ID")]
        assignment: i64,
        /// The case reference (never a name).
        #[arg(long, value_name = "REF")]
        case_ref: String,
        /// A health concern (must also go to the health service).
        #[arg(long)]
        health: bool,
        /// Staff id of the auditor.
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// The moment it is recorded [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
    /// Acknowledge a concern: stops the alerts and records what you did next.
    Ack {
        /// Concern id.
        id: i64,
        /// Staff id of the person acknowledging (head of service, an alerted role, SLT, QA admin).
        #[arg(long, value_name = "STAFF_ID")]
        by: String,
        /// What you did next.
        #[arg(long)]
        note: String,
        /// For a health concern: whether it has been raised with the health service.
        #[arg(long, value_enum)]
        health_service: Option<HealthService>,
        /// The moment of acknowledgement [default: now].
        #[arg(long, value_name = "RFC3339")]
        now: Option<Timestamp>,
    },
}

/// Whether a health concern has been raised with the health service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthService {
    /// It has.
    Raised,
    /// Not yet.
    NotYet,
}

/// A concern as `concerns list` shows it.
#[derive(Debug, Serialize)]
struct ConcernView {
    id: i64,
    assignment_id: i64,
    case_reference: String,
    kind: &'static str,
    raised_by: String,
    raised_at: String,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    minutes_to_acknowledge: i64,
    health_informed: Option<bool>,
}

/// Runs `qaloop concerns …`.
pub(super) async fn run(config: Option<&std::path::Path>, command: ConcernsCommand) -> Outcome {
    let loaded = load(config, "warn")?;
    let store = open_store(&loaded.settings).await?;
    match command {
        ConcernsCommand::List { all, format, now } => {
            let now = now_or_clock(now);
            let rows: Vec<ConcernView> = store
                .concerns(!all)
                .await?
                .into_iter()
                .map(|c| ConcernView {
                    id: c.id,
                    assignment_id: c.assignment_id,
                    kind: c.kind.as_str(),
                    raised_by: c.raised_by.clone(),
                    raised_at: c.raised_at.to_string(),
                    acknowledged_by: c.acknowledged_by.clone(),
                    acknowledged_at: c.acknowledged_at.map(|t| t.to_string()),
                    minutes_to_acknowledge: c.minutes_to_acknowledge(now),
                    health_informed: c.health_informed,
                    case_reference: c.case_reference,
                })
                .collect();
            print(
                &rows,
                format,
                &[
                    "id",
                    "kind",
                    "case_reference",
                    "raised_at",
                    "acknowledged_by",
                    "minutes_to_acknowledge",
                ],
            )?;
            Ok(())
        }
        ConcernsCommand::Raise {
            assignment,
            case_ref,
            health,
            by,
            now,
        } => {
            let org = Org::new(store.people().await?);
            if org.get(&by).is_none_or(|p| !p.is_current()) {
                return Err(Failure::new(
                    exit::DATAERR,
                    format!("`{by}` is not a current member of staff"),
                ));
            }
            match store.assignment(assignment).await {
                Err(StoreError::NotFound(id)) => {
                    return Err(Failure::new(
                        exit::DATAERR,
                        format!("no assignment has id {id}"),
                    ));
                }
                other => other.map(|_| ())?,
            }
            let kind = if health {
                ConcernKind::Health
            } else {
                ConcernKind::Urgent
            };
            store
                .raise_concerns(
                    &[NewConcern {
                        assignment_id: assignment,
                        case_reference: case_ref,
                        kind,
                    }],
                    &Actor::new(by, Via::Cli),
                    now_or_clock(now),
                )
                .await?;
            out!(
                "{} concern recorded; alerts go out at the next dispatch",
                kind.as_str()
            );
            Ok(())
        }
        ConcernsCommand::Ack {
            id,
            by,
            note,
            health_service,
            now,
        } => {
            let concern = store.concern(id).await.map_err(|e| match e {
                StoreError::NotFound(id) => {
                    Failure::new(exit::DATAERR, format!("no concern has id {id}"))
                }
                other => other.into(),
            })?;
            let org = Org::new(store.people().await?);
            let ctx = &loaded.ctx;
            if !concern.may_acknowledge(
                &org,
                &by,
                &loaded.settings.urgent,
                &ctx.schedule.admin_role,
            ) {
                return Err(Failure::new(
                    exit::NOPERM,
                    format!(
                        "{by} may not acknowledge concern {id}: only the people it alerts \
                         (the auditor's head of service, the roles in [urgent] notify_roles, \
                         senior leadership) or a QA admin may"
                    ),
                ));
            }
            if note.trim().is_empty() {
                return Err(Failure::new(exit::DATAERR, "--note: say what you did next"));
            }
            let health_informed = match (concern.kind, health_service) {
                (ConcernKind::Health, None) => {
                    return Err(Failure::new(
                        exit::USAGE,
                        "this is a health concern: say whether it has been raised with the \
                         health service (--health-service raised or --health-service not-yet)",
                    ));
                }
                (ConcernKind::Health, Some(h)) => Some(h == HealthService::Raised),
                (ConcernKind::Urgent, _) => None,
            };
            match store
                .acknowledge_concern(
                    id,
                    &Actor::new(&by, Via::Cli),
                    &note,
                    health_informed,
                    now_or_clock(now),
                )
                .await?
            {
                Acknowledged::Now => {
                    out!("concern {id} acknowledged by {by}; alerts stopped");
                    Ok(())
                }
                Acknowledged::Already(who) => Err(Failure::new(
                    exit::FAILURE,
                    format!("concern {id} was already acknowledged by {who}"),
                )),
            }
        }
    }
}
