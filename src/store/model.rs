//! The values the store takes and gives back. Dates and instants travel as `jiff` values here
//! and as text in the database (see `migrations/`).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

/// Where an assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Still to do.
    Open,
    /// Completed.
    Done,
    /// Withdrawn; no longer expected.
    Cancelled,
}

impl Status {
    /// The database and JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Done => "done",
            Status::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(text: &str) -> Status {
        match text {
            "done" => Status::Done,
            "cancelled" => Status::Cancelled,
            _ => Status::Open,
        }
    }
}

/// A piece of work someone must do, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Database id; what `assignments complete ID` takes.
    pub id: i64,
    /// The schedule activity.
    pub activity_id: String,
    /// `2027-05`, `2027-28 Q3`, …
    pub period_label: String,
    /// First day of the period.
    pub period_start: Date,
    /// Last day of the period.
    pub period_end: Date,
    /// Who it was created for (staff id, `role:NAME`, or `after:ID` for triggered work); with
    /// activity, period and subject it is the unique key that makes creation idempotent.
    pub slot: String,
    /// Who holds it now: a staff id or `role:NAME`.
    pub assignee: String,
    /// The staff id the work is about (the audit's author, for a moderation).
    pub subject: Option<String>,
    /// The completed assignment that caused this one.
    pub trigger_id: Option<i64>,
    /// Last day to do it; overdue from 00:00 after.
    pub due: Date,
    /// Where it stands.
    pub status: Status,
    /// When it was created.
    pub created_at: Timestamp,
    /// Created after its period began (the daemon was down, or this is a first run).
    pub created_late: bool,
    /// When it was completed.
    pub completed_at: Option<Timestamp>,
    /// Who completed it.
    pub completed_by: Option<String>,
    /// The completer's note.
    pub note: Option<String>,
}

impl Assignment {
    /// Open and past its due date on `today` (a local date).
    pub fn is_overdue(&self, today: Date) -> bool {
        self.status == Status::Open && self.due < today
    }
}

/// An assignment the engine wants to exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAssignment {
    /// The schedule activity.
    pub activity_id: String,
    /// Period label.
    pub period_label: String,
    /// First day of the period.
    pub period_start: Date,
    /// Last day of the period.
    pub period_end: Date,
    /// Part of the unique key; see [`Assignment::slot`].
    pub slot: String,
    /// Who gets it.
    pub assignee: String,
    /// Who it is about.
    pub subject: Option<String>,
    /// The completed assignment that caused it.
    pub trigger_id: Option<i64>,
    /// When it is due.
    pub due: Date,
    /// Why the assignee differs from the slot, if it does (a leaver's work), for the history.
    pub note: Option<String>,
}

impl NewAssignment {
    /// The assignment this becomes once stored with `id`: open, created now, not late — what
    /// a notification about fresh work describes before the row is read back.
    pub fn stored(&self, id: i64) -> Assignment {
        Assignment {
            id,
            activity_id: self.activity_id.clone(),
            period_label: self.period_label.clone(),
            period_start: self.period_start,
            period_end: self.period_end,
            slot: self.slot.clone(),
            assignee: self.assignee.clone(),
            subject: self.subject.clone(),
            trigger_id: self.trigger_id,
            due: self.due,
            status: Status::Open,
            created_at: Timestamp::UNIX_EPOCH,
            created_late: false,
            completed_at: None,
            completed_by: None,
            note: None,
        }
    }
}

/// Which assignments to list.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<Status>,
    /// Only open and due before this date.
    pub overdue_on: Option<Date>,
    /// Only held by one of these assignees (empty: anyone).
    pub assignees: Vec<String>,
    /// Only this activity.
    pub activity_id: Option<String>,
}

/// One line of an assignment's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The assignment.
    pub assignment_id: i64,
    /// `created`, `reassigned`, `completed` or `cancelled`.
    pub event: String,
    /// Staff id, or `system:…` for qaloop itself.
    pub actor: String,
    /// When.
    pub at: Timestamp,
    /// What changed (ids and dates only).
    pub detail: String,
}

/// How a staff import changed the organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StaffSyncReport {
    /// Staff ids new to qaloop.
    pub joined: Vec<String>,
    /// Staff ids whose record changed.
    pub changed: Vec<String>,
    /// Staff ids no longer in the file.
    pub left: Vec<String>,
    /// Staff ids back in the file after leaving.
    pub rejoined: Vec<String>,
    /// Assignments moved from a leaver: (assignment id, from, to).
    pub reassigned: Vec<(i64, String, String)>,
}

/// The outcome of completing an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Completed now; these assignments were created by it.
    Completed {
        /// Ids of triggered assignments created.
        triggered: Vec<i64>,
    },
    /// Someone else completed or cancelled it first.
    NotOpen(Status),
}

/// Formats an instant the way the database stores it: UTC, microseconds, fixed width.
pub fn format_instant(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses an instant stored by [`format_instant`].
pub fn parse_instant(text: &str) -> Result<Timestamp, jiff::Error> {
    text.parse()
}
