//! The closing-the-loop tracker: `GET /tracker?t=…` (counts by service and team, and the
//! unclosed actions with their age) and `GET /tracker.csv?t=…` (the same rows as a download).
//!
//! A `tracker` link works for holders of [`SLT_ROLE`] (every service) and of [`HOS_ROLE`]
//! (only actions whose owner is in their own service, from the staff file); anyone else is
//! refused. Filters come from the query string: `state` (`unclosed`, the default, `open`,
//! `overdue`, `done`, `verified`, `reopened`, `all`) and `service`.
//!
//! The description is shown (escaped by the template): the page is behind a signed link for
//! senior staff, who need it to act. CSV cells go through
//! [`crate::cli::output::spreadsheet_safe`], like `qaloop actions list --format csv`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::pages::{finish, grant};
use super::{AppState, WebError};
use crate::cli::output::spreadsheet_safe;
use crate::domain::{Action, ActionState};
use crate::links::Purpose;
use crate::org::Org;
use crate::store::ActionFilter;

/// Senior leadership: sees every service.
pub const SLT_ROLE: &str = "slt";
/// A head of service: sees their own service.
pub const HOS_ROLE: &str = "head_of_service";

/// `?t=TOKEN&state=…&service=…`
#[derive(Debug, Deserialize)]
pub struct TrackerQuery {
    t: Option<String>,
    state: Option<String>,
    service: Option<String>,
}

/// The state filters, in the order the page offers them.
const STATES: &[(&str, &str)] = &[
    ("unclosed", "Not yet verified"),
    ("open", "Open"),
    ("overdue", "Overdue"),
    ("done", "Done, waiting for verification"),
    ("verified", "Verified"),
    ("reopened", "Reopened"),
    ("all", "All"),
];

/// One action as the tracker shows it.
#[derive(Debug, Serialize)]
struct Row {
    id: i64,
    service: String,
    team: String,
    owner: String,
    raised_by: String,
    description: String,
    due: String,
    state: String,
    overdue: bool,
    /// Working days overdue (open) or waiting for verification (done); 0 otherwise.
    days: u32,
    reopened: u32,
    inadequate: bool,
}

/// One team's counts.
#[derive(Debug, Default, Serialize)]
struct Counts {
    service: String,
    team: String,
    open: u32,
    overdue: u32,
    done: u32,
    verified: u32,
    reopened: u32,
}

/// What the person may see: every service, or one.
enum Scope {
    All,
    Service(String),
}

/// The page.
pub async fn page(State(state): State<Arc<AppState>>, Query(q): Query<TrackerQuery>) -> Response {
    let now = state.clock.now();
    let result = async {
        let tracker = Tracker::load(&state, &q, now).await?;
        let token = q.t.clone().unwrap_or_default();
        let query = filter_query(&tracker.state, q.service.as_deref());
        state.render(
            StatusCode::OK,
            "tracker.html",
            minijinja::context! {
                page_title => "Closing the loop: actions",
                staff_id => &tracker.viewer,
                scope => &tracker.scope_label,
                token => &token,
                states => STATES.iter().map(|(v, l)| minijinja::context! {
                    value => v, label => l, selected => *v == tracker.state,
                }).collect::<Vec<_>>(),
                services => tracker.services.iter().map(|s| minijinja::context! {
                    value => s, selected => q.service.as_deref() == Some(s.as_str()),
                }).collect::<Vec<_>>(),
                counts => &tracker.counts,
                rows => &tracker.rows,
                state_label => STATES.iter().find(|(v, _)| *v == tracker.state).map(|x| x.1),
                csv_link => format!("/tracker.csv?t={}{query}", encode(&token)),
            },
        )
    }
    .await;
    finish(&state, result)
}

/// The CSV download of the rows the page shows.
pub async fn csv(State(state): State<Arc<AppState>>, Query(q): Query<TrackerQuery>) -> Response {
    let now = state.clock.now();
    let result = async {
        let tracker = Tracker::load(&state, &q, now).await?;
        let body = to_csv(&tracker.rows).map_err(|e| WebError::Internal(format!("csv: {e}")))?;
        Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"actions.csv\"",
                ),
            ],
            body,
        )
            .into_response())
    }
    .await;
    finish(&state, result)
}

/// Every cell neutralised for spreadsheets.
fn to_csv(rows: &[Row]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "id",
        "service",
        "team",
        "owner",
        "raised_by",
        "due",
        "state",
        "overdue",
        "days",
        "reopened",
        "inadequate",
        "description",
    ])?;
    for r in rows {
        let cells = [
            r.id.to_string(),
            r.service.clone(),
            r.team.clone(),
            r.owner.clone(),
            r.raised_by.clone(),
            r.due.clone(),
            r.state.clone(),
            r.overdue.to_string(),
            r.days.to_string(),
            r.reopened.to_string(),
            r.inadequate.to_string(),
            r.description.clone(),
        ];
        w.write_record(cells.iter().map(|c| spreadsheet_safe(c).into_owned()))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// The tracker as one person may see it.
struct Tracker {
    viewer: String,
    scope_label: String,
    state: String,
    services: Vec<String>,
    counts: Vec<Counts>,
    rows: Vec<Row>,
}

impl Tracker {
    async fn load(state: &AppState, q: &TrackerQuery, now: Timestamp) -> Result<Tracker, WebError> {
        let grant = grant(&state.keys, q.t.as_deref(), Purpose::Tracker, None, now)?;
        let org = Org::new(state.store.people().await?);
        let Some(me) = org.get(&grant.staff_id).filter(|p| p.is_current()) else {
            return Err(WebError::BadLink {
                token: q.t.clone().unwrap_or_default(),
                reason: "not a current member of staff".into(),
            });
        };
        let scope = if me.holds(SLT_ROLE) {
            Scope::All
        } else if me.holds(HOS_ROLE) {
            Scope::Service(me.record.service.clone())
        } else {
            return Err(WebError::Forbidden(
                "The tracker is for senior leadership and heads of service.".into(),
            ));
        };
        let today = state.ctx.today(now);
        let actions = state.store.actions(&ActionFilter::default()).await?;
        let place = |a: &Action| {
            org.get(&a.owner)
                .map(|p| (p.record.service.clone(), p.record.team.clone()))
                .unwrap_or_else(|| ("Former staff".to_owned(), String::new()))
        };
        let in_scope: Vec<(&Action, String, String)> = actions
            .iter()
            .map(|a| {
                let (service, team) = place(a);
                (a, service, team)
            })
            .filter(|(_, service, _)| match &scope {
                Scope::All => true,
                Scope::Service(mine) => service == mine,
            })
            .collect();
        let mut services: Vec<String> = in_scope.iter().map(|x| x.1.clone()).collect();
        services.sort();
        services.dedup();
        let chosen: Vec<&(&Action, String, String)> = in_scope
            .iter()
            .filter(|x| {
                q.service
                    .as_deref()
                    .is_none_or(|s| s.is_empty() || s == x.1)
            })
            .collect();
        let mut counts: BTreeMap<(String, String), Counts> = BTreeMap::new();
        for (a, service, team) in &chosen {
            let c = counts
                .entry((service.clone(), team.clone()))
                .or_insert_with(|| Counts {
                    service: service.clone(),
                    team: team.clone(),
                    ..Counts::default()
                });
            match a.state {
                ActionState::Open => {
                    c.open += 1;
                    c.overdue += u32::from(a.is_overdue(today));
                    c.reopened += u32::from(a.reopened > 0);
                }
                ActionState::Done => c.done += 1,
                ActionState::Verified => c.verified += 1,
            }
        }
        let wanted = STATES
            .iter()
            .map(|x| x.0)
            .find(|s| Some(*s) == q.state.as_deref())
            .unwrap_or("unclosed");
        let mut rows: Vec<Row> = chosen
            .iter()
            .filter(|(a, _, _)| matches_state(a, wanted, today))
            .map(|(a, service, team)| row(state, a, service, team, today))
            .collect();
        rows.sort_by(|x, y| {
            (&x.service, &x.team, &x.due, x.id).cmp(&(&y.service, &y.team, &y.due, y.id))
        });
        Ok(Tracker {
            viewer: grant.staff_id,
            scope_label: match scope {
                Scope::All => "All services".to_owned(),
                Scope::Service(s) => s,
            },
            state: wanted.to_owned(),
            services,
            counts: counts.into_values().collect(),
            rows,
        })
    }
}

fn matches_state(a: &Action, wanted: &str, today: Date) -> bool {
    match wanted {
        "open" => a.state == ActionState::Open,
        "overdue" => a.is_overdue(today),
        "done" => a.state == ActionState::Done,
        "verified" => a.state == ActionState::Verified,
        "reopened" => a.state == ActionState::Open && a.reopened > 0,
        "all" => true,
        _ => a.state != ActionState::Verified,
    }
}

fn row(state: &AppState, a: &Action, service: &str, team: &str, today: Date) -> Row {
    let calendar = &state.ctx.calendar;
    let days = match a.state {
        ActionState::Open if a.due < today => calendar.working_days_between(a.due, today),
        ActionState::Done => a
            .done_at
            .map(|t| calendar.working_days_between(t.to_zoned(state.ctx.tz.clone()).date(), today))
            .unwrap_or(0),
        _ => 0,
    };
    Row {
        id: a.id,
        service: service.to_owned(),
        team: team.to_owned(),
        owner: a.owner.clone(),
        raised_by: a.raised_by.clone(),
        description: a.description.clone(),
        due: a.due.to_string(),
        state: a.state.as_str().to_owned(),
        overdue: a.is_overdue(today),
        days,
        reopened: a.reopened,
        inadequate: a.inadequate,
    }
}

/// `&state=…&service=…` for the CSV link, so the download matches the page.
fn filter_query(state: &str, service: Option<&str>) -> String {
    let mut q = format!("&state={}", encode(state));
    if let Some(s) = service.filter(|s| !s.is_empty()) {
        q.push_str(&format!("&service={}", encode(s)));
    }
    q
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
