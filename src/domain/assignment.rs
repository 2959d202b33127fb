//! A piece of work someone must do, where it stands, and its history.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use super::assignee::Assignee;
use super::authz::Via;

/// Where an assignment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

    /// Parses the database spelling; `None` for anything qaloop does not write.
    pub fn parse(text: &str) -> Option<Status> {
        match text {
            "open" => Some(Status::Open),
            "done" => Some(Status::Done),
            "cancelled" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// A piece of work someone must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    /// Database id; what `assignments complete ID` and links take.
    pub id: i64,
    /// The schedule activity.
    pub activity_id: String,
    /// `2027-05`, `2027-28 Q3`, …: the machine label (links and JSON keep it).
    pub period_label: String,
    /// First day of the period.
    pub period_start: Date,
    /// Last day of the period.
    pub period_end: Date,
    /// Who it was created for (staff id, `role:NAME`, or `after:ID` for triggered work); with
    /// activity, period and subject it is the unique key that makes creation idempotent. It
    /// never changes, so reassigning work cannot make reconcile create it again.
    pub slot: String,
    /// Who holds it now.
    pub assignee: Assignee,
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
    /// Created after its period began because qaloop was down (never set at go-live).
    pub created_late: bool,
    /// Already past its due date when qaloop went live: created by a new database's first pass
    /// for a period that started before it. Listed, and shown once in the welcome message, but
    /// never chased or escalated.
    pub before_go_live: bool,
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

    /// Still to do.
    pub fn is_open(&self) -> bool {
        self.status == Status::Open
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
    pub assignee: Assignee,
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
            before_go_live: false,
            completed_at: None,
            completed_by: None,
            note: None,
        }
    }
}

/// One line of an assignment's append-only history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// The assignment.
    pub assignment_id: i64,
    /// `created`, `reassigned`, `completed` or `cancelled`.
    pub event: String,
    /// Staff id, or `system:…` for qaloop itself.
    pub actor: String,
    /// Through which edge the change came.
    pub via: Via,
    /// When.
    pub at: Timestamp,
    /// What changed (ids and dates only).
    pub detail: String,
}
