//! The handlers. Each reads the clock once, checks the link, asks
//! [`crate::domain::authorise`] (directly to view, through the engine to complete), and renders.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AppState, WebError};
use crate::domain::{
    Actor, Assignee, Assignment, ModerationOutcome, NewRecord, Operation, Refusal, Status, Via,
    authorise,
};
use crate::engine::{CompleteError, complete_with_record};
use crate::links::{Grant, LinkKeys, Purpose};
use crate::notify::planner::long_date;
use crate::org::Org;
use crate::schedule::form::{self, ACTION_ROWS, FieldError};
use crate::schedule::{Activity, Field, FieldKind, Form as FormDef};
use crate::store::AssignmentFilter;

/// `?t=TOKEN`
#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    pub(super) t: Option<String>,
}

/// The fresh-link form.
#[derive(Debug, Deserialize)]
pub struct FreshLink {
    #[serde(default)]
    t: String,
    #[serde(default)]
    csrf: String,
}

type Pairs = Vec<(String, String)>;

pub(super) fn finish(state: &AppState, result: Result<Response, WebError>) -> Response {
    result.unwrap_or_else(|e| state.error_page(e))
}

/// `GET /`: there is nothing to see without a link.
pub async fn home(State(state): State<Arc<AppState>>) -> Response {
    let page = state.message(
        StatusCode::OK,
        "Quality assurance",
        &["Open the link in the email or chat message qaloop sent you to see your work."],
    );
    finish(&state, page)
}

/// Anything else.
pub async fn not_found(State(state): State<Arc<AppState>>) -> Response {
    state.error_page(WebError::NotFound)
}

/// Checks `token` grants `purpose` (on `item`) at `now`.
pub(super) fn grant(
    keys: &LinkKeys,
    token: Option<&str>,
    purpose: Purpose,
    item: Option<i64>,
    now: Timestamp,
) -> Result<Grant, WebError> {
    let token = token.unwrap_or_default();
    let bad = |reason: String| WebError::BadLink {
        token: token.to_owned(),
        reason,
    };
    let grant = keys.verify(token, now).map_err(|e| bad(e.to_string()))?;
    if grant.purpose != purpose || grant.item != item {
        return Err(bad(format!(
            "link for {} {:?} used for {} {item:?}",
            grant.purpose.as_str(),
            grant.item,
            purpose.as_str()
        )));
    }
    Ok(grant)
}

/// `GET /a/{id}?t=…`: the work page.
pub async fn work(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let now = state.clock.now();
    let page = async {
        let grant = grant(&state.keys, q.t.as_deref(), Purpose::Item, Some(id), now)?;
        let token = q.t.clone().unwrap_or_default();
        let work = Work::load(&state, id, &grant.staff_id, &token).await?;
        let view = work.view(&state, &token, &HashMap::new(), &[], now);
        state.render(StatusCode::OK, "work.html", view)
    };
    let result = page.await;
    finish(&state, result)
}

/// `POST /a/{id}?t=…`: completes the work with what the form says.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    Form(pairs): Form<Pairs>,
) -> Response {
    let now = state.clock.now();
    let result = submit_inner(&state, id, q.t.as_deref(), pairs, now).await;
    finish(&state, result)
}

async fn submit_inner(
    state: &AppState,
    id: i64,
    token: Option<&str>,
    pairs: Pairs,
    now: Timestamp,
) -> Result<Response, WebError> {
    let grant = grant(&state.keys, token, Purpose::Item, Some(id), now)?;
    let token = token.unwrap_or_default();
    let input: HashMap<String, String> = pairs.into_iter().collect();
    let csrf = input.get("csrf").map(String::as_str).unwrap_or_default();
    if !state.keys.check_csrf(token, csrf) {
        return Err(WebError::Csrf);
    }
    let work = Work::load(state, id, &grant.staff_id, token).await?;
    if let Some(refusal) = work.refusal() {
        if matches!(refusal, Refusal::NotOpen { .. }) {
            let mut view = work.view(state, token, &HashMap::new(), &[], now);
            view.notice = Some("This work was already completed; nothing was changed.".into());
            return state.render(StatusCode::CONFLICT, "work.html", view);
        }
        return Err(WebError::Forbidden(plain_refusal(&refusal)));
    }
    let (note, record) = match work.prepare(&input) {
        Ok(prepared) => prepared,
        Err(errors) => {
            let view = work.view(state, token, &input, &errors, now);
            return state.render(StatusCode::BAD_REQUEST, "work.html", view);
        }
    };
    let by = Actor::new(&grant.staff_id, Via::Link);
    let done = complete_with_record(
        &state.store,
        &state.ctx,
        id,
        &by,
        note.as_deref(),
        record.as_ref(),
        now,
    )
    .await;
    match done {
        Ok((_, triggered)) => {
            tracing::info!(assignment = id, by = %grant.staff_id, "completed through a link");
            let work = Work::load(state, id, &grant.staff_id, token).await?;
            let mut view = work.view(state, token, &HashMap::new(), &[], now);
            view.confirmation = true;
            view.moderation_created = !triggered.is_empty();
            state.render(StatusCode::OK, "work.html", view)
        }
        Err(CompleteError::Refused(Refusal::NotOpen { .. })) => {
            let work = Work::load(state, id, &grant.staff_id, token).await?;
            let mut view = work.view(state, token, &HashMap::new(), &[], now);
            view.notice = Some("This work was already completed; nothing was changed.".into());
            state.render(StatusCode::CONFLICT, "work.html", view)
        }
        Err(CompleteError::Refused(r)) => Err(WebError::Forbidden(plain_refusal(&r))),
        Err(CompleteError::NotFound(_)) => Err(WebError::NotFound),
        Err(CompleteError::Store(e)) => Err(e.into()),
    }
}

/// A refusal in words for the person reading the page.
fn plain_refusal(refusal: &Refusal) -> String {
    match refusal {
        Refusal::OwnWork { .. } => "You completed the audit this moderates, so someone else must \
            moderate it. Ask the QA team to reassign it if it has come to you."
            .into(),
        Refusal::NotAllowed { .. } => "This link lets you see this work but not complete it. \
            The person it is assigned to, their managers or the QA team can."
            .into(),
        Refusal::UnknownPerson(_) => "This link is no longer valid for you.".into(),
        Refusal::NotOpen { status, .. } => format!("This work is already {}.", status.as_str()),
    }
}

/// What completing the work records.
enum FormSpec<'a> {
    /// The activity's own form.
    Record(&'a FormDef),
    /// A moderation of `audit` (its form and record).
    Moderation {
        audit_form: &'a FormDef,
        audit: Box<Assignment>,
        audit_values: Value,
        form: FormDef,
    },
    /// Done, with an optional note.
    Note(FormDef),
}

/// An assignment as one person sees it.
struct Work<'s> {
    assignment: Assignment,
    activity: Option<&'s Activity>,
    org: Org,
    viewer: String,
    spec: FormSpec<'s>,
    record: Option<crate::domain::Record>,
    outcomes: Vec<ModerationOutcome>,
    moderation_record: Option<crate::domain::Record>,
    admin_role: &'s str,
}

impl<'s> Work<'s> {
    async fn load(
        state: &'s AppState,
        id: i64,
        viewer: &str,
        token: &str,
    ) -> Result<Work<'s>, WebError> {
        let assignment = state.store.assignment(id).await?;
        let org = Org::new(state.store.people().await?);
        let schedule = &state.ctx.schedule;
        authorise(
            &org,
            &schedule.admin_role,
            &assignment,
            viewer,
            Operation::View,
        )
        .map_err(|r| match r {
            Refusal::UnknownPerson(_) => WebError::BadLink {
                token: token.to_owned(),
                reason: "not a current member of staff".into(),
            },
            _ => WebError::Forbidden(
                "This link is not for this work. Open the link from your own email.".into(),
            ),
        })?;
        let activity = schedule.activity(&assignment.activity_id);
        let spec = match activity {
            Some(a) if a.moderates => {
                let audit_form = schedule
                    .moderated_form(a)
                    .ok_or_else(|| WebError::Internal("moderation without a form".into()))?;
                let audit_id = assignment
                    .trigger_id
                    .ok_or_else(|| WebError::Internal("moderation without its audit".into()))?;
                let audit = state.store.assignment(audit_id).await?;
                let audit_values = state
                    .store
                    .record(audit_id)
                    .await?
                    .map(|r| r.fields)
                    .unwrap_or(Value::Null);
                FormSpec::Moderation {
                    form: form::moderation_form(audit_form),
                    audit_form,
                    audit: Box::new(audit),
                    audit_values,
                }
            }
            Some(a) => match schedule.form_of(a) {
                Some(f) => FormSpec::Record(f),
                None => FormSpec::Note(form::note_form()),
            },
            None => FormSpec::Note(form::note_form()),
        };
        let record = state.store.record(id).await?;
        let outcomes = state.store.moderation_outcomes(id).await?;
        let moderation_record = match outcomes.first() {
            Some(o) => state.store.record(o.moderation_id).await?,
            None => None,
        };
        Ok(Work {
            assignment,
            activity,
            org,
            viewer: viewer.to_owned(),
            spec,
            record,
            outcomes,
            moderation_record,
            admin_role: &schedule.admin_role,
        })
    }

    /// Why the viewer may not complete it now, if they may not.
    fn refusal(&self) -> Option<Refusal> {
        authorise(
            &self.org,
            self.admin_role,
            &self.assignment,
            &self.viewer,
            Operation::Complete,
        )
        .err()
    }

    fn form(&self) -> &FormDef {
        match &self.spec {
            FormSpec::Record(f) => f,
            FormSpec::Moderation { form, .. } => form,
            FormSpec::Note(f) => f,
        }
    }

    /// Validates the submission into (note, record), or every problem in page order.
    fn prepare(
        &self,
        input: &HashMap<String, String>,
    ) -> Result<(Option<String>, Option<NewRecord>), Vec<FieldError>> {
        let is_staff = |id: &str| self.org.get(id).is_some_and(|p| p.is_current());
        let values = form::validate(self.form(), input, &is_staff)?;
        match &self.spec {
            FormSpec::Note(_) => Ok((
                values
                    .get("note")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                None,
            )),
            FormSpec::Record(f) => Ok((
                None,
                Some(NewRecord {
                    form_id: f.id.clone(),
                    fields: values,
                    outcomes: Vec::new(),
                }),
            )),
            FormSpec::Moderation {
                audit_form,
                audit,
                audit_values,
                ..
            } => {
                let judged = form::judge(audit_form, audit_values, &values)?;
                let outcomes = judged
                    .into_iter()
                    .map(
                        |(field, audit_grade, agreed, moderated_grade)| ModerationOutcome {
                            moderation_id: self.assignment.id,
                            audit_id: audit.id,
                            field,
                            audit_grade,
                            agreed,
                            moderated_grade,
                        },
                    )
                    .collect();
                Ok((
                    None,
                    Some(NewRecord {
                        form_id: "moderation".into(),
                        fields: values,
                        outcomes,
                    }),
                ))
            }
        }
    }

    /// What the work page shows.
    fn view(
        &self,
        state: &AppState,
        token: &str,
        input: &HashMap<String, String>,
        errors: &[FieldError],
        now: Timestamp,
    ) -> WorkView {
        let a = &self.assignment;
        let title = self
            .activity
            .map(|x| x.title.clone())
            .unwrap_or_else(|| a.activity_id.clone());
        let tz = state.ctx.tz.clone();
        let item = ItemView {
            title: title.clone(),
            period: a.period_label.clone(),
            due_long: long_date(a.due),
            assignee: a.assignee.to_string(),
            subject: a.subject.clone(),
            status: a.status.as_str().into(),
            completed_by: a.completed_by.clone(),
            completed_at: a.completed_at.map(|t| local_time(t, &tz)),
        };
        let refusal = self.refusal();
        let show_form = refusal.is_none();
        let fields = if show_form {
            field_views(self.form(), input, errors)
        } else {
            Vec::new()
        };
        let refusal_text = match &refusal {
            None | Some(Refusal::NotOpen { .. }) => None,
            Some(r) => Some(plain_refusal(r)),
        };
        let record_form = match &self.spec {
            FormSpec::Record(f) => Some(*f),
            FormSpec::Moderation { form, .. } => Some(form),
            FormSpec::Note(_) => None,
        };
        let record = self
            .record
            .as_ref()
            .and_then(|r| record_form.map(|f| answers(f, &r.fields)));
        let record_title = match &self.spec {
            FormSpec::Moderation { .. } => "Your moderation".to_owned(),
            _ => "The record".to_owned(),
        };
        let record = match (&record, &a.note) {
            (None, Some(note)) => Some(vec![Answer {
                label: "Note".into(),
                value: note.clone(),
                actions: Vec::new(),
            }]),
            _ => record,
        };
        let audit = match &self.spec {
            FormSpec::Moderation {
                audit_form,
                audit,
                audit_values,
                ..
            } => Some(AuditView {
                title: audit_form.title.clone(),
                by: audit.completed_by.clone().unwrap_or_default(),
                period: audit.period_label.clone(),
                answers: answers(audit_form, audit_values),
            }),
            _ => None,
        };
        let moderation = (!self.outcomes.is_empty()).then(|| {
            let form = record_form;
            ModerationView {
                outcomes: self
                    .outcomes
                    .iter()
                    .map(|o| OutcomeView {
                        label: form
                            .and_then(|f| f.field(&o.field))
                            .map(|f| f.label.clone())
                            .unwrap_or_else(|| o.field.clone()),
                        audit_grade: o.audit_grade.clone(),
                        agreed: o.agreed,
                        moderated_grade: o.moderated_grade.clone(),
                    })
                    .collect(),
                feedback: self
                    .moderation_record
                    .as_ref()
                    .and_then(|r| r.fields.get("feedback"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                by: self
                    .moderation_record
                    .as_ref()
                    .map(|r| r.submitted_by.clone())
                    .unwrap_or_default(),
            }
        });
        let mut moderation = moderation;
        if let Some(m) = &mut moderation {
            // Field order of the form, not of the database.
            if let Some(f) = record_form {
                let order: HashMap<&str, usize> = f
                    .fields
                    .iter()
                    .enumerate()
                    .map(|(i, x)| (x.label.as_str(), i))
                    .collect();
                m.outcomes
                    .sort_by_key(|o| order.get(o.label.as_str()).copied().unwrap_or(usize::MAX));
            }
        }
        let my_work = state
            .keys
            .sign_from(&self.viewer, Purpose::MyWork, None, now);
        WorkView {
            page_title: title,
            item,
            errors: errors.to_vec(),
            fields,
            form_title: match &self.spec {
                FormSpec::Note(_) => "Mark it done".into(),
                FormSpec::Record(f) => f.title.clone(),
                FormSpec::Moderation { form, .. } => form.title.clone(),
            },
            submit_label: match &self.spec {
                FormSpec::Note(_) => "Mark as done".into(),
                FormSpec::Record(_) => "Submit the record".into(),
                FormSpec::Moderation { .. } => "Submit the moderation".into(),
            },
            action: format!("/a/{}?t={token}", a.id),
            csrf: state.keys.csrf(token),
            refusal: refusal_text,
            record,
            record_title,
            audit,
            moderation,
            notice: None,
            confirmation: false,
            moderation_created: false,
            my_work: Some(format!("/me?t={my_work}")),
            raise_action: (matches!(self.spec, FormSpec::Record(_))
                && crate::domain::may_raise_from(&self.org, a, &self.viewer))
            .then(|| format!("/a/{}/actions/new?t={token}", a.id)),
        }
    }
}

pub(super) fn local_time(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%-d %B %Y at %H:%M")
        .to_string()
}

#[derive(Serialize)]
struct WorkView {
    page_title: String,
    item: ItemView,
    errors: Vec<FieldError>,
    fields: Vec<FieldView>,
    form_title: String,
    submit_label: String,
    action: String,
    csrf: String,
    refusal: Option<String>,
    record: Option<Vec<Answer>>,
    record_title: String,
    audit: Option<AuditView>,
    moderation: Option<ModerationView>,
    notice: Option<String>,
    confirmation: bool,
    moderation_created: bool,
    my_work: Option<String>,
    /// Raising an action by hand from this completed audit, for its auditor or their manager.
    raise_action: Option<String>,
}

#[derive(Serialize)]
struct ItemView {
    title: String,
    period: String,
    due_long: String,
    assignee: String,
    subject: Option<String>,
    status: String,
    completed_by: Option<String>,
    completed_at: Option<String>,
}

#[derive(Serialize)]
struct AuditView {
    title: String,
    by: String,
    period: String,
    answers: Vec<Answer>,
}

#[derive(Serialize)]
struct ModerationView {
    outcomes: Vec<OutcomeView>,
    feedback: Option<String>,
    by: String,
}

#[derive(Serialize)]
struct OutcomeView {
    label: String,
    audit_grade: String,
    agreed: bool,
    moderated_grade: Option<String>,
}

#[derive(Serialize)]
struct Answer {
    label: String,
    value: String,
    actions: Vec<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct FieldView {
    id: String,
    label: String,
    help: Option<String>,
    required: bool,
    kind: &'static str,
    options: Vec<String>,
    value: String,
    error: Option<String>,
    rows: Vec<ActionRow>,
}

#[derive(Serialize)]
struct ActionRow {
    n: usize,
    description: String,
    owner: String,
    due: String,
    errors: BTreeMap<String, String>,
}

fn field_views(
    form: &FormDef,
    input: &HashMap<String, String>,
    errors: &[FieldError],
) -> Vec<FieldView> {
    let error_for = |id: &str| {
        errors
            .iter()
            .find(|e| e.field == id)
            .map(|e| e.message.clone())
    };
    let value = |id: &str| input.get(id).cloned().unwrap_or_default();
    form.fields
        .iter()
        .map(|f: &Field| FieldView {
            id: f.id.clone(),
            label: f.label.clone(),
            help: f.help.clone(),
            required: f.required,
            kind: f.kind.as_str(),
            options: f.kind.options(),
            value: value(&f.id),
            error: error_for(&f.id),
            rows: if matches!(f.kind, FieldKind::Actions) {
                (0..ACTION_ROWS)
                    .map(|n| {
                        let name = |part: &str| format!("{}.{n}.{part}", f.id);
                        ActionRow {
                            n,
                            description: value(&name("description")),
                            owner: value(&name("owner")),
                            due: value(&name("due")),
                            errors: ["description", "owner", "due"]
                                .into_iter()
                                .filter_map(|p| error_for(&name(p)).map(|m| (p.to_owned(), m)))
                                .collect(),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// A stored record as label/value pairs in form order (values verbatim; the template escapes).
fn answers(form: &FormDef, values: &Value) -> Vec<Answer> {
    form.fields
        .iter()
        .map(|f| {
            let v = values.get(&f.id);
            let actions = v
                .and_then(Value::as_array)
                .map(|rows| {
                    rows.iter()
                        .map(|row| {
                            ["description", "owner", "due"]
                                .into_iter()
                                .map(|k| {
                                    (
                                        k.to_owned(),
                                        row.get(k)
                                            .and_then(Value::as_str)
                                            .unwrap_or_default()
                                            .to_owned(),
                                    )
                                })
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let value = match v.and_then(Value::as_str) {
                Some("yes") if matches!(f.kind, FieldKind::YesNo) => "Yes".to_owned(),
                Some("no") if matches!(f.kind, FieldKind::YesNo) => "No".to_owned(),
                Some(text) => text.to_owned(),
                None => String::new(),
            };
            Answer {
                label: f.label.clone(),
                value,
                actions,
            }
        })
        .collect()
}

#[derive(Serialize)]
struct MyItem {
    title: String,
    period: String,
    due_long: String,
    overdue: bool,
    assignee: String,
    subject: Option<String>,
    link: String,
}

/// `GET /me?t=…`: the person's open work and, for a manager, their reports' overdue work.
pub async fn my_work(State(state): State<Arc<AppState>>, Query(q): Query<TokenQuery>) -> Response {
    let now = state.clock.now();
    let result = my_work_inner(&state, q.t.as_deref(), now).await;
    finish(&state, result)
}

async fn my_work_inner(
    state: &AppState,
    token: Option<&str>,
    now: Timestamp,
) -> Result<Response, WebError> {
    let grant = grant(&state.keys, token, Purpose::MyWork, None, now)?;
    let org = Org::new(state.store.people().await?);
    let Some(me) = org.get(&grant.staff_id).filter(|p| p.is_current()) else {
        return Err(WebError::BadLink {
            token: token.unwrap_or_default().to_owned(),
            reason: "not a current member of staff".into(),
        });
    };
    let today = state.ctx.today(now);
    let mut assignees = vec![Assignee::person(&grant.staff_id)];
    assignees.extend(me.record.roles.iter().map(Assignee::role));
    let open = state
        .store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Open],
            assignees,
            ..AssignmentFilter::default()
        })
        .await?;
    // Only the work of people below them: asked of the database by assignee, so a manager's
    // page does not read the whole organisation's overdue work.
    let below: Vec<Assignee> = org
        .people()
        .filter(|p| org.is_above(&grant.staff_id, &p.record.staff_id))
        .map(|p| Assignee::person(&p.record.staff_id))
        .collect();
    let overdue = if below.is_empty() {
        Vec::new()
    } else {
        state
            .store
            .assignments(&AssignmentFilter {
                overdue_on: Some(today),
                assignees: below,
                ..AssignmentFilter::default()
            })
            .await?
    };
    let item = |a: &Assignment| MyItem {
        title: state
            .ctx
            .schedule
            .activity(&a.activity_id)
            .map(|x| x.title.clone())
            .unwrap_or_else(|| a.activity_id.clone()),
        period: a.period_label.clone(),
        due_long: long_date(a.due),
        overdue: a.due < today,
        assignee: a.assignee.to_string(),
        subject: a.subject.clone(),
        link: format!(
            "/a/{}?t={}",
            a.id,
            state
                .keys
                .sign_from(&grant.staff_id, Purpose::Item, Some(a.id), now)
        ),
    };
    let reports: Vec<MyItem> = overdue
        .iter()
        .filter(|a| {
            a.assignee
                .staff_id()
                .is_some_and(|id| org.is_above(&grant.staff_id, id))
        })
        .map(item)
        .collect();
    let open: Vec<MyItem> = open.iter().map(item).collect();
    let (actions, to_verify) = super::actions::mine(state, &org, &grant.staff_id, now).await?;
    state.render(
        StatusCode::OK,
        "mywork.html",
        minijinja::context! {
            page_title => "Your work",
            staff_id => &grant.staff_id,
            open => open,
            reports => reports,
            actions => actions,
            to_verify => to_verify,
            raise_link => format!("/me/actions/new?t={}", token.unwrap_or_default()),
        },
    )
}

/// `POST /link`: emails the person a link was made for a fresh one (their open work, each
/// with a new link). The answer is the same whoever asks, so it reveals nothing; at most one
/// such message per person per day is queued (the outbox key says so).
pub async fn fresh_link(State(state): State<Arc<AppState>>, Form(f): Form<FreshLink>) -> Response {
    let now = state.clock.now();
    let result = async {
        if !state.keys.check_csrf(&f.t, &f.csrf) {
            return Err(WebError::Csrf);
        }
        if let Some(claimed) = LinkKeys::claimed(&f.t)
            && let Err(e) = queue_fresh_link(&state, &claimed.staff_id, now).await
        {
            tracing::error!(error = %e, "queueing a fresh link failed");
        }
        state.message(
            StatusCode::OK,
            "Check your email",
            &[
                "If that link was sent to you, a message with fresh links to your work is on its way to you.",
                "Links work for a limited time. Ask the QA team if nothing arrives.",
            ],
        )
    }
    .await;
    finish(&state, result)
}

async fn queue_fresh_link(
    state: &AppState,
    staff_id: &str,
    now: Timestamp,
) -> Result<(), WebError> {
    let Some(router) = crate::notify::router::Router::of(&state.ctx) else {
        return Ok(());
    };
    let org = Org::new(state.store.people().await?);
    let Some(person) = org.get(staff_id).filter(|p| p.is_current()) else {
        return Ok(());
    };
    let today = state.ctx.today(now);
    let mut assignees = vec![Assignee::person(staff_id)];
    assignees.extend(person.record.roles.iter().map(Assignee::role));
    let open = state
        .store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Open],
            assignees,
            ..AssignmentFilter::default()
        })
        .await?;
    let kind = crate::notify::Kind::Digest;
    let mut context = router.context(kind, staff_id, today);
    context.items = open
        .iter()
        .map(|a| crate::notify::planner::item(&state.ctx, router, &org, a, today))
        .collect();
    let notice = crate::notify::router::Notice {
        kind,
        reference: "fresh-link".into(),
        date: Some(today),
        recipient: staff_id.to_owned(),
        post_as: None,
        assignment_id: None,
        immediate: true,
        suppressed: false,
        context,
    };
    let rows: Vec<_> = router
        .route(&[notice], &org, &state.ctx.calendar, now)
        .into_iter()
        .filter(|r| {
            router
                .channels
                .iter()
                .any(|c| c.personal && c.name == r.channel)
        })
        .collect();
    state.store.enqueue(&rows, now).await?;
    Ok(())
}
