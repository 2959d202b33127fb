//! The urgent-concern page an alert links to: `GET /concerns/{id}?t=…` shows the concern (case
//! reference, kind, when and by whom, whether acknowledged — never details); `POST` records the
//! acknowledgement (what the reader did next and, for a health concern, whether it was raised
//! with the health service) through [`crate::store::Store::acknowledge_concern`].
//!
//! Who may see and acknowledge is [`Concern::may_acknowledge`] (the people alerted, senior
//! leadership, the admin role): a link for anyone else is refused.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::pages::{finish, grant, local_time};
use super::{AppState, WebError};
use crate::domain::{Actor, Concern, ConcernKind, Via};
use crate::links::Purpose;
use crate::org::Org;
use crate::schedule::form::FieldError;
use crate::store::Acknowledged;

/// The form field for what the acknowledger did next.
const WHAT_NEXT: &str = "what_next";
/// The form field for a health concern's "raised with the health service?".
const HEALTH: &str = "health_informed";

/// `?t=TOKEN`
#[derive(Debug, Deserialize)]
pub struct ConcernQuery {
    t: Option<String>,
}

/// `GET /concerns/{id}?t=…`
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<ConcernQuery>,
) -> Response {
    let now = state.clock.now();
    let result = async {
        let (concern, viewer, token) = load(&state, id, q.t.as_deref(), now).await?;
        let view = view(
            &state,
            &concern,
            &viewer,
            &token,
            &HashMap::new(),
            Vec::new(),
        );
        state.render(StatusCode::OK, "concern.html", view)
    }
    .await;
    finish(&state, result)
}

/// `POST /concerns/{id}?t=…`: acknowledges it.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Path(id): Path<i64>,
    Query(q): Query<ConcernQuery>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let now = state.clock.now();
    let result = acknowledge_inner(&state, id, q.t.as_deref(), pairs, now).await;
    finish(&state, result)
}

async fn acknowledge_inner(
    state: &AppState,
    id: i64,
    token: Option<&str>,
    pairs: Vec<(String, String)>,
    now: Timestamp,
) -> Result<Response, WebError> {
    let input: HashMap<String, String> = pairs.into_iter().collect();
    let given = token.unwrap_or_default();
    // The link first (a bad link offers a fresh one), then the form's CSRF token.
    grant(&state.keys, token, Purpose::Concern, Some(id), now)?;
    let csrf = input.get("csrf").map(String::as_str).unwrap_or_default();
    if !state.keys.check_csrf(given, csrf) {
        return Err(WebError::Csrf);
    }
    let (concern, viewer, token) = load(state, id, token, now).await?;
    if !concern.is_open() {
        let mut page = view(
            state,
            &concern,
            &viewer,
            &token,
            &HashMap::new(),
            Vec::new(),
        );
        page.notice = Some(already(&concern));
        return state.render(StatusCode::CONFLICT, "concern.html", page);
    }
    let (what_next, health_informed) = match validate(&concern, &input) {
        Ok(valid) => valid,
        Err(errors) => {
            let page = view(state, &concern, &viewer, &token, &input, errors);
            return state.render(StatusCode::BAD_REQUEST, "concern.html", page);
        }
    };
    let by = Actor::new(&viewer, Via::Link);
    let outcome = state
        .store
        .acknowledge_concern(id, &by, &what_next, health_informed, now)
        .await?;
    let concern = state.store.concern(id).await?;
    let mut page = view(
        state,
        &concern,
        &viewer,
        &token,
        &HashMap::new(),
        Vec::new(),
    );
    match outcome {
        Acknowledged::Now => {
            tracing::info!(concern = id, by = %viewer, "concern acknowledged through a link");
            page.confirmation = true;
            state.render(StatusCode::OK, "concern.html", page)
        }
        Acknowledged::Already(_) => {
            page.notice = Some(already(&concern));
            state.render(StatusCode::CONFLICT, "concern.html", page)
        }
    }
}

/// The concern behind a checked link, and who is looking (who must be allowed to act on it).
async fn load(
    state: &AppState,
    id: i64,
    token: Option<&str>,
    now: Timestamp,
) -> Result<(Concern, String, String), WebError> {
    let grant = grant(&state.keys, token, Purpose::Concern, Some(id), now)?;
    let token = token.unwrap_or_default().to_owned();
    let concern = state.store.concern(id).await?;
    let org = Org::new(state.store.people().await?);
    if org.get(&grant.staff_id).is_none_or(|p| !p.is_current()) {
        return Err(WebError::BadLink {
            token,
            reason: "not a current member of staff".into(),
        });
    }
    if !concern.may_acknowledge(
        &org,
        &grant.staff_id,
        &state.urgent,
        &state.ctx.schedule.admin_role,
    ) {
        return Err(WebError::Forbidden(
            "This concern was not raised with you. Open the link from your own email.".into(),
        ));
    }
    Ok((concern, grant.staff_id, token))
}

/// What the acknowledger did next, and for a health concern whether it was raised with the
/// health service; or every problem in page order.
fn validate(
    concern: &Concern,
    input: &HashMap<String, String>,
) -> Result<(String, Option<bool>), Vec<FieldError>> {
    let mut errors = Vec::new();
    let what_next = input
        .get(WHAT_NEXT)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if what_next.is_empty() {
        errors.push(FieldError {
            field: WHAT_NEXT.into(),
            message: "Enter what you did next".into(),
        });
    }
    let health = if concern.kind == ConcernKind::Health {
        match input.get(HEALTH).map(String::as_str) {
            Some("yes") => Some(true),
            Some("no") => Some(false),
            _ => {
                errors.push(FieldError {
                    field: HEALTH.into(),
                    message: "Select yes if it has been raised with the health service".into(),
                });
                None
            }
        }
    } else {
        None
    };
    if errors.is_empty() {
        Ok((what_next, health))
    } else {
        Err(errors)
    }
}

fn already(concern: &Concern) -> String {
    format!(
        "This concern was already acknowledged by {}; nothing was changed.",
        concern.acknowledged_by.as_deref().unwrap_or("someone else")
    )
}

#[derive(Serialize)]
struct ConcernView {
    page_title: String,
    id: i64,
    case_reference: String,
    health: bool,
    raised_by: String,
    raised_at: String,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<String>,
    acknowledgement: Option<String>,
    health_informed: Option<bool>,
    errors: Vec<FieldError>,
    fields: Vec<FieldView>,
    action: String,
    csrf: String,
    notice: Option<String>,
    confirmation: bool,
}

/// A field as `fields.html`'s `field` macro reads it.
#[derive(Serialize)]
struct FieldView {
    id: &'static str,
    label: &'static str,
    help: Option<&'static str>,
    required: bool,
    kind: &'static str,
    options: Vec<&'static str>,
    value: String,
    error: Option<String>,
}

fn view(
    state: &AppState,
    concern: &Concern,
    _viewer: &str,
    token: &str,
    input: &HashMap<String, String>,
    errors: Vec<FieldError>,
) -> ConcernView {
    let tz = &state.ctx.tz;
    let health = concern.kind == ConcernKind::Health;
    let error_for = |id: &str| {
        errors
            .iter()
            .find(|e| e.field == id)
            .map(|e| e.message.clone())
    };
    let mut fields = Vec::new();
    if concern.is_open() {
        fields.push(FieldView {
            id: WHAT_NEXT,
            label: "What did you do next?",
            help: Some("Who you spoke to and what was agreed. Never type a child's name."),
            required: true,
            kind: "long_text",
            options: Vec::new(),
            value: input.get(WHAT_NEXT).cloned().unwrap_or_default(),
            error: error_for(WHAT_NEXT),
        });
        if health {
            fields.push(FieldView {
                id: HEALTH,
                label: "Has it been raised with the health service?",
                help: Some("A health concern must be raised with the health service at once."),
                required: true,
                kind: "yes_no",
                options: vec!["yes", "no"],
                value: input.get(HEALTH).cloned().unwrap_or_default(),
                error: error_for(HEALTH),
            });
        }
    }
    ConcernView {
        page_title: format!(
            "{} concern {}",
            if health { "Health" } else { "Urgent" },
            concern.case_reference
        ),
        id: concern.id,
        case_reference: concern.case_reference.clone(),
        health,
        raised_by: concern.raised_by.clone(),
        raised_at: local_time(concern.raised_at, tz),
        acknowledged_by: concern.acknowledged_by.clone(),
        acknowledged_at: concern.acknowledged_at.map(|t| local_time(t, tz)),
        acknowledgement: concern.acknowledgement.clone(),
        health_informed: concern.health_informed,
        errors,
        fields,
        action: format!("/concerns/{}?t={token}", concern.id),
        csrf: state.keys.csrf(token),
        notice: None,
        confirmation: false,
    }
}
