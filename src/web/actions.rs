//! Action pages, reached through signed links:
//!
//! - `GET /actions/{id}?t=…` shows one action (what, who owns it, who verifies it, due date,
//!   state, history; the only case detail is the audit's case reference) with the forms its
//!   reader may use now; `POST` makes the change — done (the owner, with a note), verify (the
//!   raiser or their manager, with a note) or reopen (the same, with a new due date and the
//!   reason) — through [`crate::engine::actions::change`].
//! - `GET|POST /a/{id}/actions/new?t=…` raises an action by hand from a completed audit (its
//!   auditor or their manager: [`may_raise_from`]); `GET|POST /me/actions/new?t=…` raises one
//!   from the "my work" page. Both go through [`crate::engine::actions::raise`].
//!
//! What a reader may do is always asked of [`Action::apply`] (the forms shown are the changes it
//! would accept), so the page has no rule of its own; every write records `via = link`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::pages::{TokenQuery, finish, grant, local_time};
use super::{AppState, WebError};
use crate::domain::{
    Action, ActionChange, ActionError, ActionSource, ActionState, Actor, Assignment, NewAction,
    Via, may_raise_from, record,
};
use crate::engine::actions::{ActionsError, default_due};
use crate::links::Purpose;
use crate::notify::planner::long_date;
use crate::org::Org;
use crate::schedule::form::FieldError;

type Pairs = Vec<(String, String)>;

/// `GET /actions/{id}?t=…`
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        let page = ActionPage::load(&state, id, q.t.as_deref(), now).await?;
        let view = page.view(&state, now, &HashMap::new(), Vec::new());
        state.render(StatusCode::OK, "action.html", view)
    }
    .await;
    finish(&state, result)
}

/// `POST /actions/{id}?t=…`: `change` is `done`, `verify` or `reopen`.
pub async fn change(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let now = state.clock.now();
    let result = change_inner(&state, id, q.t.as_deref(), pairs, now).await;
    finish(&state, result)
}

async fn change_inner(
    state: &AppState,
    id: i64,
    token: Option<&str>,
    pairs: Pairs,
    now: Timestamp,
) -> Result<Response, WebError> {
    // The link first (a bad link offers a fresh one), then the form's CSRF token.
    grant(&state.keys, token, Purpose::Action, Some(id), now)?;
    let input: HashMap<String, String> = pairs.into_iter().collect();
    let csrf = input.get("csrf").map(String::as_str).unwrap_or_default();
    if !state.keys.check_csrf(token.unwrap_or_default(), csrf) {
        return Err(WebError::Csrf);
    }
    let page = ActionPage::load(state, id, token, now).await?;
    let field = |s: &str| {
        input
            .get(s)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let asked = match input.get("change").map(String::as_str) {
        Some("done") => ActionChange::Done {
            note: field(DONE_NOTE),
        },
        Some("verify") => ActionChange::Verify {
            note: field(VERIFY_NOTE),
        },
        Some("reopen") => match parse_date(&field(REOPEN_DUE)) {
            Ok(due) => ActionChange::Reopen {
                due,
                reason: field(REOPEN_REASON),
            },
            Err(message) => {
                let mut errors = vec![FieldError {
                    field: REOPEN_DUE.into(),
                    message: message.into(),
                }];
                if field(REOPEN_REASON).is_empty() {
                    errors.push(missing_error(REOPEN_REASON));
                }
                let view = page.view(state, now, &input, errors);
                return state.render(StatusCode::BAD_REQUEST, "action.html", view);
            }
        },
        _ => return Err(WebError::NotFound),
    };
    let by = Actor::new(&page.viewer, Via::Link);
    match crate::engine::actions::change(&state.store, &state.ctx, id, &asked, &by, now).await {
        Ok(_) => {
            tracing::info!(action = id, by = %page.viewer, change = asked.event(), "action changed through a link");
            let page = ActionPage::load(state, id, token, now).await?;
            let mut view = page.view(state, now, &HashMap::new(), Vec::new());
            view.confirmation = Some(match asked {
                ActionChange::Done { .. } => "Action marked as done".into(),
                ActionChange::Verify { .. } => "Action verified".into(),
                ActionChange::Reopen { .. } => "Action reopened".into(),
            });
            state.render(StatusCode::OK, "action.html", view)
        }
        Err(ActionsError::Refused { error, .. }) => match error {
            ActionError::Missing(_) | ActionError::DueInPast { .. } => {
                let name = match (&asked, &error) {
                    (ActionChange::Done { .. }, _) => DONE_NOTE,
                    (ActionChange::Verify { .. }, _) => VERIFY_NOTE,
                    (ActionChange::Reopen { .. }, ActionError::DueInPast { .. }) => REOPEN_DUE,
                    (ActionChange::Reopen { .. }, _) => REOPEN_REASON,
                };
                let error = match &error {
                    ActionError::DueInPast { today, .. } => FieldError {
                        field: name.into(),
                        message: format!(
                            "The new due date must be today ({}) or later",
                            long_date(*today)
                        ),
                    },
                    _ => missing_error(name),
                };
                let view = page.view(state, now, &input, vec![error]);
                state.render(StatusCode::BAD_REQUEST, "action.html", view)
            }
            ActionError::WrongState { state: now_in, .. } => {
                let mut view = page.view(state, now, &HashMap::new(), Vec::new());
                view.notice = Some(format!(
                    "This action is {} now, so it cannot be {}; nothing was changed.",
                    state_words(now_in),
                    asked.event()
                ));
                state.render(StatusCode::CONFLICT, "action.html", view)
            }
            ActionError::NotAllowed { .. } => Err(WebError::Forbidden(refusal_words(
                &page.action,
                &page.viewer,
                &asked,
            ))),
            ActionError::UnknownPerson(_) => Err(WebError::BadLink {
                token: token.unwrap_or_default().to_owned(),
                reason: "not a current member of staff".into(),
            }),
        },
        Err(ActionsError::NotFound(_)) => Err(WebError::NotFound),
        Err(ActionsError::Store(e)) => Err(e.into()),
    }
}

/// Why the reader may not make `asked`, in words: who may instead.
fn refusal_words(action: &Action, viewer: &str, asked: &ActionChange) -> String {
    match asked {
        ActionChange::Done { .. } => format!(
            "Only the action's owner ({}) or their line managers can mark it as done. Nothing was changed.",
            action.owner
        ),
        _ if viewer == action.owner => format!(
            "You own this action, so you cannot {} it yourself: {} (who raised it) or their line \
             manager will. Nothing was changed.",
            if matches!(asked, ActionChange::Verify { .. }) {
                "verify"
            } else {
                "reopen"
            },
            action.raised_by
        ),
        _ => format!(
            "Only the person who raised this action ({}) or their line managers can verify or \
             reopen it. Nothing was changed.",
            action.raised_by
        ),
    }
}

fn state_words(state: ActionState) -> &'static str {
    match state {
        ActionState::Open => "open",
        ActionState::Done => "done and waiting for verification",
        ActionState::Verified => "verified",
    }
}

const DONE_NOTE: &str = "done_note";
const VERIFY_NOTE: &str = "verify_note";
const REOPEN_DUE: &str = "reopen_due";
const REOPEN_REASON: &str = "reopen_reason";
const DESCRIPTION: &str = "description";
const OWNER: &str = "owner";
const DUE: &str = "due";

fn missing_error(field: &str) -> FieldError {
    let message = match field {
        DONE_NOTE => "Enter what was done",
        VERIFY_NOTE => "Enter how you know it made a difference",
        REOPEN_REASON => "Enter why you are reopening it",
        DESCRIPTION => "Enter what needs to happen",
        OWNER => "Choose who owns the action",
        _ => "Enter a value",
    };
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A date from a date input (`YYYY-MM-DD`), or what to type instead.
fn parse_date(text: &str) -> Result<Date, &'static str> {
    if text.is_empty() {
        return Err("Enter a due date");
    }
    text.parse()
        .map_err(|_| "Enter the due date as a real date, for example 2027-07-01")
}

/// An action behind a checked link, and who is reading it.
struct ActionPage {
    action: Action,
    org: Org,
    viewer: String,
    token: String,
    /// The audit it came from, with its activity's title and the record's case reference.
    from: Option<(Assignment, String, Option<String>)>,
    history: Vec<crate::store::ActionHistoryEntry>,
}

impl ActionPage {
    async fn load(
        state: &AppState,
        id: i64,
        token: Option<&str>,
        now: Timestamp,
    ) -> Result<ActionPage, WebError> {
        let grant = grant(&state.keys, token, Purpose::Action, Some(id), now)?;
        let token = token.unwrap_or_default().to_owned();
        let action = state.store.action(id).await?;
        let org = Org::new(state.store.people().await?);
        if org.get(&grant.staff_id).is_none_or(|p| !p.is_current()) {
            return Err(WebError::BadLink {
                token,
                reason: "not a current member of staff".into(),
            });
        }
        if !action.may_see(&org, &grant.staff_id) {
            return Err(WebError::Forbidden(
                "This action is not yours to see. Open the link from your own email.".into(),
            ));
        }
        let from = match action.assignment_id {
            Some(audit_id) => {
                let audit = state.store.assignment(audit_id).await?;
                let activity = state.ctx.schedule.activity(&audit.activity_id);
                let title = activity
                    .map(|a| a.title.clone())
                    .unwrap_or_else(|| audit.activity_id.clone());
                let reference = match (
                    activity.and_then(|a| state.ctx.schedule.form_of(a)),
                    state.store.record(audit_id).await?,
                ) {
                    (Some(form), Some(r)) => {
                        record::case_reference(form, &r.fields).map(str::to_owned)
                    }
                    _ => None,
                };
                Some((audit, title, reference))
            }
            None => None,
        };
        let history = state.store.action_history(id).await?;
        Ok(ActionPage {
            action,
            org,
            viewer: grant.staff_id,
            token,
            from,
            history,
        })
    }

    /// Whether [`Action::apply`] would accept `change` from the reader today (with a note
    /// given): which forms to show.
    fn may(&self, change: &ActionChange, today: Date) -> bool {
        self.action
            .apply(&self.org, &self.viewer, change, today)
            .is_ok()
    }

    fn view(
        &self,
        state: &AppState,
        now: Timestamp,
        input: &HashMap<String, String>,
        errors: Vec<FieldError>,
    ) -> ActionView {
        let a = &self.action;
        let today = state.ctx.today(now);
        let tz = &state.ctx.tz;
        let note = || "-".to_owned();
        let may_done = self.may(&ActionChange::Done { note: note() }, today);
        let may_verify = self.may(&ActionChange::Verify { note: note() }, today);
        let value = |f: &str| input.get(f).cloned().unwrap_or_default();
        let error_for = |f: &str| {
            errors
                .iter()
                .find(|e| e.field == f)
                .map(|e| e.message.clone())
        };
        let text = |id: &'static str, label: &'static str, help: Option<&'static str>| FieldView {
            id,
            label,
            help,
            kind: "long_text",
            value: value(id),
            error: error_for(id),
        };
        let name = |id: &str| person_label(&self.org, id);
        // Someone who may not verify sees why, when it is theirs to wait for.
        let waiting = (a.state == ActionState::Done && !may_verify).then(|| {
            if self.viewer == a.owner {
                format!(
                    "You own this action, so you cannot verify it yourself. {} (who raised it) \
                     or their line manager will check it made a difference.",
                    name(&a.raised_by)
                )
            } else {
                format!(
                    "Waiting for {} (who raised it) or their line manager to verify it.",
                    name(&a.raised_by)
                )
            }
        });
        ActionView {
            page_title: format!("Action {}", a.id),
            id: a.id,
            description: a.description.clone(),
            from: self.from.as_ref().map(|(audit, title, _)| {
                let period =
                    crate::schedule::period::describe(audit.period_start, audit.period_end, state.ctx.fy);
                match audit.completed_by.as_deref() {
                    Some(by) => format!("{title}, {period} (completed by {})", name(by)),
                    None => format!("{title}, {period}"),
                }
            }),
            source: match a.source {
                ActionSource::Audit => "An audit",
                ActionSource::Moderation => "A moderation",
                ActionSource::Observation => "An observation",
                ActionSource::Manual => "Raised by hand",
            },
            case_reference: self.from.as_ref().and_then(|(_, _, r)| r.clone()),
            owner: name(&a.owner),
            raised_by: name(&a.raised_by),
            due_long: long_date(a.due),
            overdue: a.is_overdue(today),
            inadequate: a.inadequate,
            state: a.state.as_str(),
            state_words: state_words(a.state),
            reopened: a.reopened,
            verified_by: a.verified_by.as_deref().map(name),
            history: self
                .history
                .iter()
                .map(|h| HistoryView {
                    event: h.event.clone(),
                    actor: h.actor.clone(),
                    at: local_time(h.at, tz),
                    via: h.via.as_str(),
                    detail: h.detail.clone(),
                })
                .collect(),
            done_form: may_done.then(|| {
                vec![text(
                    DONE_NOTE,
                    "What was done?",
                    Some("Enough for the person who raised it to check. Never type a child's name."),
                )]
            }),
            verify_form: may_verify.then(|| {
                vec![text(
                    VERIFY_NOTE,
                    "How do you know it made a difference?",
                    Some("What you checked, for example the case file or a conversation with the worker."),
                )]
            }),
            reopen_form: may_verify.then(|| {
                vec![
                    FieldView {
                        id: REOPEN_DUE,
                        label: "New due date",
                        help: None,
                        kind: "date",
                        value: input
                            .get(REOPEN_DUE)
                            .cloned()
                            .unwrap_or_else(|| default_due(&state.ctx, today, a.inadequate).to_string()),
                        error: error_for(REOPEN_DUE),
                    },
                    text(REOPEN_REASON, "Why are you reopening it?", None),
                ]
            }),
            waiting,
            action: format!("/actions/{}?t={}", a.id, self.token),
            csrf: state.keys.csrf(&self.token),
            my_work: format!(
                "/me?t={}",
                state.keys.sign_from(&self.viewer, Purpose::MyWork, None, now)
            ),
            errors,
            notice: None,
            confirmation: None,
        }
    }
}

/// "Name (ID)" for a staff id, or the id alone when nobody has it.
fn person_label(org: &Org, id: &str) -> String {
    match org.get(id) {
        Some(p) if !p.record.name.is_empty() => format!("{} ({id})", p.record.name),
        _ => id.to_owned(),
    }
}

#[derive(Serialize)]
struct ActionView {
    page_title: String,
    id: i64,
    description: String,
    source: &'static str,
    from: Option<String>,
    case_reference: Option<String>,
    owner: String,
    raised_by: String,
    due_long: String,
    overdue: bool,
    inadequate: bool,
    state: &'static str,
    state_words: &'static str,
    reopened: u32,
    verified_by: Option<String>,
    history: Vec<HistoryView>,
    done_form: Option<Vec<FieldView>>,
    verify_form: Option<Vec<FieldView>>,
    reopen_form: Option<Vec<FieldView>>,
    waiting: Option<String>,
    action: String,
    csrf: String,
    my_work: String,
    errors: Vec<FieldError>,
    notice: Option<String>,
    confirmation: Option<String>,
}

#[derive(Serialize)]
struct HistoryView {
    event: String,
    actor: String,
    at: String,
    via: &'static str,
    detail: String,
}

/// A field as `fields.html`'s `field` macro reads it.
#[derive(Serialize)]
struct FieldView {
    id: &'static str,
    label: &'static str,
    help: Option<&'static str>,
    kind: &'static str,
    value: String,
    error: Option<String>,
}

// ---- Raising an action by hand ----

/// Where a new action comes from: a completed audit (its link) or the "my work" page.
enum Origin {
    Audit {
        audit: Box<Assignment>,
        inadequate: bool,
        title: String,
        case_reference: Option<String>,
    },
    MyWork,
}

/// `GET /a/{id}/actions/new?t=…`
pub async fn new_from_audit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        let (viewer, origin) = audit_origin(&state, id, q.t.as_deref(), now).await?;
        add_page(
            &state,
            &viewer,
            origin,
            q.t.as_deref(),
            &HashMap::new(),
            Vec::new(),
            now,
        )
        .await
    }
    .await;
    finish(&state, result)
}

/// `POST /a/{id}/actions/new?t=…`
pub async fn raise_from_audit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        grant(&state.keys, q.t.as_deref(), Purpose::Item, Some(id), now)?;
        let input = checked_input(&state, q.t.as_deref(), pairs)?;
        let (viewer, origin) = audit_origin(&state, id, q.t.as_deref(), now).await?;
        raise(&state, &viewer, origin, q.t.as_deref(), input, now).await
    }
    .await;
    finish(&state, result)
}

/// `GET /me/actions/new?t=…`
pub async fn new_by_hand(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        let viewer = my_work_viewer(&state, q.t.as_deref(), now).await?;
        add_page(
            &state,
            &viewer,
            Origin::MyWork,
            q.t.as_deref(),
            &HashMap::new(),
            Vec::new(),
            now,
        )
        .await
    }
    .await;
    finish(&state, result)
}

/// `POST /me/actions/new?t=…`
pub async fn raise_by_hand(
    State(state): State<Arc<AppState>>,
    Query(q): Query<TokenQuery>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        grant(&state.keys, q.t.as_deref(), Purpose::MyWork, None, now)?;
        let input = checked_input(&state, q.t.as_deref(), pairs)?;
        let viewer = my_work_viewer(&state, q.t.as_deref(), now).await?;
        raise(&state, &viewer, Origin::MyWork, q.t.as_deref(), input, now).await
    }
    .await;
    finish(&state, result)
}

fn checked_input(
    state: &AppState,
    token: Option<&str>,
    pairs: Pairs,
) -> Result<HashMap<String, String>, WebError> {
    let input: HashMap<String, String> = pairs.into_iter().collect();
    let csrf = input.get("csrf").map(String::as_str).unwrap_or_default();
    if !state.keys.check_csrf(token.unwrap_or_default(), csrf) {
        return Err(WebError::Csrf);
    }
    Ok(input)
}

async fn my_work_viewer(
    state: &AppState,
    token: Option<&str>,
    now: Timestamp,
) -> Result<String, WebError> {
    let grant = grant(&state.keys, token, Purpose::MyWork, None, now)?;
    let current = state
        .store
        .people_by_id(&[grant.staff_id.as_str()])
        .await?
        .iter()
        .any(|p| p.is_current());
    if !current {
        return Err(WebError::BadLink {
            token: token.unwrap_or_default().to_owned(),
            reason: "not a current member of staff".into(),
        });
    }
    Ok(grant.staff_id)
}

async fn audit_origin(
    state: &AppState,
    id: i64,
    token: Option<&str>,
    now: Timestamp,
) -> Result<(String, Origin), WebError> {
    let grant = grant(&state.keys, token, Purpose::Item, Some(id), now)?;
    let audit = state.store.assignment(id).await?;
    let org = Org::new(state.store.people().await?);
    if org.get(&grant.staff_id).is_none_or(|p| !p.is_current()) {
        return Err(WebError::BadLink {
            token: token.unwrap_or_default().to_owned(),
            reason: "not a current member of staff".into(),
        });
    }
    let activity = state.ctx.schedule.activity(&audit.activity_id);
    let form = activity.and_then(|a| state.ctx.schedule.form_of(a));
    let (Some(activity), Some(form)) = (activity, form) else {
        return Err(WebError::Forbidden(
            "Actions are raised from audits and observations with a record.".into(),
        ));
    };
    if !may_raise_from(&org, &audit, &grant.staff_id) {
        return Err(WebError::Forbidden(
            "Actions can be raised from a completed audit by the person who completed it or \
             their line manager."
                .into(),
        ));
    }
    let fields = state
        .store
        .record(id)
        .await?
        .map(|r| r.fields)
        .unwrap_or_default();
    let origin = Origin::Audit {
        inadequate: record::is_inadequate(form, &fields),
        case_reference: record::case_reference(form, &fields).map(str::to_owned),
        title: format!("{}, {}", activity.title, audit.period_label),
        audit: Box::new(audit),
    };
    Ok((grant.staff_id, origin))
}

/// Validates and raises the action; the form again with every problem named, or a
/// confirmation with the new action's link.
async fn raise(
    state: &AppState,
    viewer: &str,
    origin: Origin,
    token: Option<&str>,
    input: HashMap<String, String>,
    now: Timestamp,
) -> Result<Response, WebError> {
    let org = Org::new(state.store.people().await?);
    let today = state.ctx.today(now);
    let field = |f: &str| {
        input
            .get(f)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let mut errors = Vec::new();
    let due = match parse_date(&field(DUE)) {
        Ok(d) => Some(d),
        Err(message) => {
            errors.push(FieldError {
                field: DUE.into(),
                message: message.into(),
            });
            None
        }
    };
    let (source, assignment_id, inadequate) = match &origin {
        Origin::Audit {
            audit, inadequate, ..
        } => (record::source_of(audit), Some(audit.id), *inadequate),
        Origin::MyWork => (ActionSource::Manual, None, false),
    };
    let new = NewAction {
        source,
        assignment_id,
        description: field(DESCRIPTION),
        owner: field(OWNER),
        raised_by: viewer.to_owned(),
        // A placeholder when the date did not parse: its error is already named.
        due: due.unwrap_or(today),
        inadequate,
    };
    for problem in new.problems(&org, today) {
        let error = match problem {
            ActionError::Missing("a description") => missing_error(DESCRIPTION),
            ActionError::Missing(_) => missing_error(OWNER),
            ActionError::UnknownPerson(id) if id == new.owner => FieldError {
                field: OWNER.into(),
                message: "Choose a current member of staff as the owner".into(),
            },
            ActionError::DueInPast { today, .. } => FieldError {
                field: DUE.into(),
                message: format!("The due date must be today ({}) or later", long_date(today)),
            },
            other => {
                return Err(WebError::Forbidden(format!(
                    "This action cannot be raised: {other}."
                )));
            }
        };
        errors.push(error);
    }
    if !errors.is_empty() {
        // Page order: description, owner, due date.
        let order = |f: &str| [DESCRIPTION, OWNER, DUE].iter().position(|x| *x == f);
        errors.sort_by_key(|e| order(&e.field));
        return add_page(state, viewer, origin, token, &input, errors, now).await;
    }
    let by = Actor::new(viewer, Via::Link);
    let ids = crate::engine::actions::raise(&state.store, &state.ctx, &[new], &by, now)
        .await
        .map_err(|e| match e {
            ActionsError::Store(e) => e.into(),
            e => WebError::Forbidden(format!("This action cannot be raised: {e}.")),
        })?;
    let id = ids[0];
    tracing::info!(action = id, by = %viewer, "action raised through a link");
    let link = format!(
        "/actions/{id}?t={}",
        state.keys.sign_from(viewer, Purpose::Action, Some(id), now)
    );
    let action = state.store.action(id).await?;
    state.render(
        StatusCode::OK,
        "action_raised.html",
        minijinja::context! {
            page_title => "Action raised",
            description => action.description,
            owner => person_label(&org, &action.owner),
            due_long => long_date(action.due),
            link => link,
            back => back_link(state, viewer, &origin, token, now),
        },
    )
}

/// Where "back" goes: the audit's page (same link) or "my work".
fn back_link(
    state: &AppState,
    viewer: &str,
    origin: &Origin,
    token: Option<&str>,
    now: Timestamp,
) -> String {
    match origin {
        Origin::Audit { audit, .. } => format!("/a/{}?t={}", audit.id, token.unwrap_or_default()),
        Origin::MyWork => format!(
            "/me?t={}",
            state.keys.sign_from(viewer, Purpose::MyWork, None, now)
        ),
    }
}

#[derive(Serialize)]
struct StaffOption {
    id: String,
    label: String,
    selected: bool,
}

/// The form to raise an action: description, owner (current staff by name), due date (the
/// `[actions]` default, shorter after an Inadequate audit).
async fn add_page(
    state: &AppState,
    viewer: &str,
    origin: Origin,
    token: Option<&str>,
    input: &HashMap<String, String>,
    errors: Vec<FieldError>,
    now: Timestamp,
) -> Result<Response, WebError> {
    let org = Org::new(state.store.people().await?);
    let today = state.ctx.today(now);
    let inadequate = matches!(
        origin,
        Origin::Audit {
            inadequate: true,
            ..
        }
    );
    let chosen = input.get(OWNER).cloned().unwrap_or_default();
    let mut staff: Vec<StaffOption> = org
        .people()
        .filter(|p| p.is_current())
        .map(|p| StaffOption {
            id: p.record.staff_id.clone(),
            label: person_label(&org, &p.record.staff_id),
            selected: p.record.staff_id == chosen,
        })
        .collect();
    staff.sort_by(|a, b| a.label.cmp(&b.label));
    let error_for = |f: &str| {
        errors
            .iter()
            .find(|e| e.field == f)
            .map(|e| e.message.clone())
    };
    let (from, case_reference, action) = match &origin {
        Origin::Audit {
            audit,
            title,
            case_reference,
            ..
        } => (
            Some(title.clone()),
            case_reference.clone(),
            format!(
                "/a/{}/actions/new?t={}",
                audit.id,
                token.unwrap_or_default()
            ),
        ),
        Origin::MyWork => (
            None,
            None,
            format!("/me/actions/new?t={}", token.unwrap_or_default()),
        ),
    };
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    state.render(
        status,
        "action_new.html",
        minijinja::context! {
            page_title => "Raise an action",
            from => from,
            case_reference => case_reference,
            inadequate => inadequate,
            description => input.get(DESCRIPTION).cloned().unwrap_or_default(),
            description_error => error_for(DESCRIPTION),
            staff => staff,
            owner_error => error_for(OWNER),
            due => input.get(DUE).cloned().unwrap_or_else(|| default_due(&state.ctx, today, inadequate).to_string()),
            due_error => error_for(DUE),
            errors => errors,
            action => action,
            csrf => state.keys.csrf(token.unwrap_or_default()),
            back => back_link(state, viewer, &origin, token, now),
        },
    )
}

/// An action as a line on the "my work" page, with the reader's own link to it.
#[derive(Serialize)]
pub(super) struct MyAction {
    description: String,
    owner: String,
    due_long: String,
    overdue: bool,
    state: &'static str,
    link: String,
}

/// `viewer`'s open actions, and the done actions waiting for them to verify, for "my work".
pub(super) async fn mine(
    state: &AppState,
    org: &Org,
    viewer: &str,
    now: Timestamp,
) -> Result<(Vec<MyAction>, Vec<MyAction>), WebError> {
    use crate::store::ActionFilter;
    let today = state.ctx.today(now);
    let line = |a: &Action| MyAction {
        description: a.description.clone(),
        owner: person_label(org, &a.owner),
        due_long: long_date(a.due),
        overdue: a.is_overdue(today),
        state: a.state.as_str(),
        link: format!(
            "/actions/{}?t={}",
            a.id,
            state
                .keys
                .sign_from(viewer, Purpose::Action, Some(a.id), now)
        ),
    };
    let open = state
        .store
        .actions(&ActionFilter {
            states: vec![ActionState::Open],
            owners: vec![viewer.to_owned()],
            ..ActionFilter::default()
        })
        .await?;
    // Done actions are few (they wait days, not months): read them and ask the rule.
    let to_verify = state
        .store
        .actions(&ActionFilter {
            states: vec![ActionState::Done],
            ..ActionFilter::default()
        })
        .await?;
    Ok((
        open.iter().map(line).collect(),
        to_verify
            .iter()
            .filter(|a| a.may_verify(org, viewer))
            .map(line)
            .collect(),
    ))
}
