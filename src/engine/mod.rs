//! The engine: turns the schedule and the staff list into assignments, exactly once.
//!
//! [`plan`] is pure; [`reconcile`], [`staff`] and [`complete`] are the imperative shell that
//! reads the store, plans, and writes the difference.

pub mod complete;
pub mod plan;
pub mod reconcile;
pub mod staff;

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use crate::calendar::Calendar;
use crate::schedule::{FinancialYear, Schedule};

pub use complete::{CompleteError, complete};
pub use reconcile::{ReconcileReport, reconcile};
pub use staff::import_staff;

/// Everything the engine needs besides the store and the clock: validated configuration.
#[derive(Debug, Clone)]
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
    /// Notification routing; `None` when no channels are configured (nothing is queued).
    pub router: Option<crate::notify::router::Router>,
}

impl Context {
    /// Outbox rows telling people about freshly created work (none for work created late: the
    /// day's catch-up summary covers that).
    pub fn new_work_notices(
        &self,
        org: &crate::org::Org,
        created: &[(i64, &crate::store::NewAssignment)],
        late: bool,
        now: Timestamp,
    ) -> Vec<crate::store::NewOutbox> {
        match &self.router {
            Some(router) if !late => {
                let notices = crate::notify::planner::new_assignment_notices(
                    self,
                    router,
                    org,
                    created,
                    self.today(now),
                );
                router.route(&notices, org, &self.calendar, now)
            }
            _ => Vec::new(),
        }
    }

    /// The local civil date at `now`: what "today" means for periods and due dates.
    pub fn today(&self, now: Timestamp) -> Date {
        now.to_zoned(self.tz.clone()).date()
    }
}
