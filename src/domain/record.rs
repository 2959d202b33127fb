//! What was recorded when work was completed through a form: the audit record, and a
//! moderation's judgement on it.

use jiff::Timestamp;
use serde::Serialize;

use super::authz::Via;

/// A record to store with a completion (written in the completion's transaction).
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    /// The form it answers (`case-file-audit`, `moderation`).
    pub form_id: String,
    /// The validated values, a JSON object keyed by field id, stored verbatim.
    pub fields: serde_json::Value,
    /// For a moderation: the judgement on each graded field of the audit it moderates.
    pub outcomes: Vec<ModerationOutcome>,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    /// The assignment it completed.
    pub assignment_id: i64,
    /// The form it answers.
    pub form_id: String,
    /// The values, keyed by field id.
    pub fields: serde_json::Value,
    /// Who submitted it (staff id).
    pub submitted_by: String,
    /// When.
    pub submitted_at: Timestamp,
    /// Through which edge.
    pub via: Via,
}

/// A moderator's judgement on one graded field of an audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModerationOutcome {
    /// The moderation assignment.
    pub moderation_id: i64,
    /// The audit it moderates.
    pub audit_id: i64,
    /// The graded field (`overall_grade`, `thread_assessment`, …).
    pub field: String,
    /// The grade the auditor gave.
    pub audit_grade: String,
    /// Whether the moderator agrees.
    pub agreed: bool,
    /// The grade the moderator would give instead (when not agreed).
    pub moderated_grade: Option<String>,
}

/// What submitting a record sets going besides the record itself: the actions it raised and
/// the urgent or health concerns it flagged. Written in the completion's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordEffects {
    /// Actions from the form's `actions` fields.
    pub actions: Vec<super::NewAction>,
    /// Concerns from its `urgent_concern` / `health_concern` yes/no fields.
    pub concerns: Vec<super::NewConcern>,
}

impl RecordEffects {
    /// Reads the effects out of `record`, submitted on `form` for `assignment` by `by`.
    ///
    /// - every row of an `actions` field becomes an action owned by the staff id given, raised
    ///   by the submitter, marked `inadequate` when any grade on the form is the worst of its
    ///   scale (Ofsted's Inadequate), its source an observation or an audit by the activity;
    /// - a yes/no field `urgent_concern` or `health_concern` answered "yes" records a concern
    ///   with the form's case reference (the first case-reference field).
    pub fn of(
        record: &NewRecord,
        form: &crate::schedule::form::Form,
        assignment: &super::Assignment,
        by: &str,
    ) -> RecordEffects {
        use crate::schedule::form::FieldKind;
        let value = |id: &str| record.fields.get(id).and_then(|v| v.as_str());
        let inadequate = is_inadequate(form, &record.fields);
        let source = source_of(assignment);
        let mut effects = RecordEffects::default();
        for field in &form.fields {
            match &field.kind {
                FieldKind::Actions => {
                    let rows = record.fields.get(&field.id).and_then(|v| v.as_array());
                    for row in rows.into_iter().flatten() {
                        let text = |key: &str| row.get(key).and_then(|v| v.as_str()).unwrap_or("");
                        let Ok(due) = text("due").parse() else {
                            continue;
                        };
                        effects.actions.push(super::NewAction {
                            source,
                            assignment_id: Some(assignment.id),
                            description: text("description").to_owned(),
                            owner: text("owner").to_owned(),
                            raised_by: by.to_owned(),
                            due,
                            inadequate,
                        });
                    }
                }
                FieldKind::YesNo if value(&field.id) == Some("yes") => {
                    let kind = match field.id.as_str() {
                        "urgent_concern" => super::ConcernKind::Urgent,
                        "health_concern" => super::ConcernKind::Health,
                        _ => continue,
                    };
                    let case_reference = case_reference(form, &record.fields)
                        .unwrap_or_default()
                        .to_owned();
                    effects.concerns.push(super::NewConcern {
                        assignment_id: assignment.id,
                        case_reference,
                        kind,
                    });
                }
                _ => {}
            }
        }
        effects
    }
}

/// Whether a record on `form` grades anything at the worst of its scale (Ofsted's Inadequate):
/// its actions get the shorter timelines.
pub fn is_inadequate(form: &crate::schedule::form::Form, fields: &serde_json::Value) -> bool {
    use crate::schedule::form::FieldKind;
    form.fields.iter().any(|f| match &f.kind {
        FieldKind::Grade { options, .. } => options.last().is_some_and(|worst| {
            fields.get(&f.id).and_then(|v| v.as_str()) == Some(worst.as_str())
        }),
        _ => false,
    })
}

/// The case reference a record on `form` gives (its first case-reference field), if any: the
/// only case detail a page or message about its actions and concerns shows.
pub fn case_reference<'v>(
    form: &crate::schedule::form::Form,
    fields: &'v serde_json::Value,
) -> Option<&'v str> {
    use crate::schedule::form::FieldKind;
    form.fields
        .iter()
        .find(|f| matches!(f.kind, FieldKind::CaseReference { .. }))
        .and_then(|f| fields.get(&f.id))
        .and_then(|v| v.as_str())
        .filter(|v| !v.is_empty())
}

/// What raises an action from `assignment`'s record: an observation or an audit, by activity.
pub fn source_of(assignment: &super::Assignment) -> super::ActionSource {
    if assignment.activity_id.contains("observation") {
        super::ActionSource::Observation
    } else {
        super::ActionSource::Audit
    }
}
