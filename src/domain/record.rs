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
