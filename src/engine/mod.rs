//! The engine: turns the schedule and the staff list into assignments, exactly once.
//!
//! [`plan`] is pure; [`reconcile`], [`staff`], [`complete`] and [`change`] are the imperative
//! shell that reads the store, plans, and writes the difference. The engine never imports
//! `notify`: it asks its [`Announcer`] what to queue.

pub mod actions;
pub mod announce;
pub mod change;
pub mod complete;
pub mod plan;
pub mod reconcile;
pub mod staff;

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::calendar::Calendar;
use crate::domain::{Assignment, NewAssignment};
use crate::org::Org;
use crate::schedule::{FinancialYear, Schedule};
use crate::store::NewOutbox;

pub use announce::Announcer;
pub use change::{ChangeError, cancel, reassign};
pub use complete::{CompleteError, complete, complete_with_record};
pub use reconcile::{ReconcileReport, reconcile};
pub use staff::import_staff;

/// Everything the engine needs besides the store and the clock: validated configuration.
#[derive(Clone)]
pub struct Context {
    /// The schedule table.
    pub schedule: Schedule,
    /// Working days.
    pub calendar: Calendar,
    /// The organisation's zone: periods open at 00:00 local time.
    pub tz: TimeZone,
    /// Financial-year alignment of periods.
    pub fy: FinancialYear,
    /// First day a new database creates work from (default: the periods containing first run).
    pub start_date: Option<Date>,
    /// Decides the notices the engine's changes cause (notify's router); `None` when no
    /// channels are configured, and then nothing is queued.
    pub announcer: Option<Arc<dyn Announcer>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("activities", &self.schedule.activities.len())
            .field("tz", &self.tz)
            .field("start_date", &self.start_date)
            .field("announces", &self.announcer.is_some())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Outbox rows telling people about freshly created work (none for work created late: the
    /// day's catch-up summary covers that).
    pub fn new_work_notices(
        &self,
        org: &Org,
        created: &[(i64, &NewAssignment)],
        late: bool,
        now: Timestamp,
    ) -> Vec<NewOutbox> {
        match &self.announcer {
            Some(announcer) if !late => announcer.new_work(self, org, created, now),
            _ => Vec::new(),
        }
    }

    /// Outbox rows telling the new holder of `moved` (already showing its new assignee) about it.
    pub fn moved_notices(&self, org: &Org, moved: &Assignment, now: Timestamp) -> Vec<NewOutbox> {
        match &self.announcer {
            Some(announcer) => announcer.moved(self, org, moved, now),
            None => Vec::new(),
        }
    }

    /// The local civil date at `now`: what "today" means for periods and due dates.
    pub fn today(&self, now: Timestamp) -> Date {
        now.to_zoned(self.tz.clone()).date()
    }
}
