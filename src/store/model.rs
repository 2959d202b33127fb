//! The values the store takes and gives back besides the domain types ([`crate::domain`]). Dates and instants travel as `jiff` values here
//! and as text in the database (see `migrations/`).

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use crate::domain::{Assignee, Status};

/// Which assignments to list.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    /// Only these statuses (empty: all).
    pub statuses: Vec<Status>,
    /// Only open and due before this date.
    pub overdue_on: Option<Date>,
    /// Only held by one of these assignees (empty: anyone).
    pub assignees: Vec<Assignee>,
    /// Only this activity.
    pub activity_id: Option<String>,
    /// Only completed after this instant.
    pub completed_after: Option<Timestamp>,
    /// Only these ids (empty: any). Callers keep lists to a few thousand (bind limits).
    pub ids: Vec<i64>,
    /// Only work another completion created (a moderation of an audit): the daily decision
    /// looks for finished moderations among the day's completions without reading them all.
    pub triggered_only: bool,
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
