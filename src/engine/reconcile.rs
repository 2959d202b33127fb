//! Reconcile: create every assignment whose period has started by `now`, exactly once.
//!
//! Idempotent by construction: each (activity, period) is materialised in one transaction with a
//! marker row, and each assignment has a unique key, so re-runs, catch-up after downtime and two
//! processes at once all converge on the same rows. A no-op pass reads only the marker rows.

use jiff::Timestamp;
use serde::Serialize;

use super::Context;
use super::plan::plan_period;
use crate::org::Org;
use crate::schedule::Period;
use crate::store::{Store, StoreError};

/// The `meta` key holding the first day this database creates work from.
pub const ORIGIN_KEY: &str = "schedule_origin";
/// The `meta` key holding the day qaloop went live on this database (its first pass). Work
/// created that day is not "late", and what was already due before it is `before_go_live`.
pub const GO_LIVE_KEY: &str = "go_live_date";

/// What a reconcile pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Assignments created.
    pub created: usize,
    /// Of those, created after their period began.
    pub created_late: usize,
    /// (activity, period label, assignments created) for each period materialised.
    pub periods: Vec<(String, String, usize)>,
}

/// Whether `today` is the day qaloop went live on this database: recorded by the first pass
/// (a database that already has an origin predates the record and is not going live).
async fn go_live_today(store: &Store, today: jiff::civil::Date) -> Result<bool, StoreError> {
    let recorded = match store.meta(GO_LIVE_KEY).await? {
        Some(day) => day,
        None if store.meta(ORIGIN_KEY).await?.is_none() => {
            store
                .meta_or_insert(GO_LIVE_KEY, &today.to_string())
                .await?
        }
        None => return Ok(false),
    };
    Ok(recorded == today.to_string())
}

/// One pass at `now`. On a new database the origin is fixed at the first pass (or the
/// configured start date): no history before it is invented.
pub async fn reconcile(
    store: &Store,
    ctx: &Context,
    now: Timestamp,
) -> Result<ReconcileReport, StoreError> {
    let today = ctx.today(now);
    let go_live = go_live_today(store, today).await?;
    let origin_default = ctx.start_date.unwrap_or(today);
    let origin = store
        .meta_or_insert(ORIGIN_KEY, &origin_default.to_string())
        .await?
        .parse()
        .unwrap_or(origin_default);

    let mut pending: Vec<(usize, Period)> = Vec::new();
    let mut earliest = today;
    for (index, activity) in ctx.schedule.activities.iter().enumerate() {
        let Some(cadence) = activity.cadence else {
            continue;
        };
        let first = Period::containing(cadence, ctx.fy, origin);
        earliest = earliest.min(first.start);
        pending.extend(
            Period::starting_between(cadence, ctx.fy, first.start, today).map(|p| (index, p)),
        );
    }
    let done = store.materialised_since(earliest).await?;
    pending.retain(|(index, period)| {
        !done.contains(&(ctx.schedule.activities[*index].id.clone(), period.start))
    });

    let mut report = ReconcileReport::default();
    if pending.is_empty() {
        return Ok(report);
    }
    pending.sort_by_key(|(index, period)| (period.start, *index));
    let org = Org::new(store.people().await?);
    for (index, period) in pending {
        let activity = &ctx.schedule.activities[index];
        let rows = plan_period(ctx, activity, &period, &org);
        // At go-live nothing is late and nobody is told of each piece of work: their first
        // daily message is a welcome listing it all.
        let late = !go_live && today > period.start;
        let notices = |created: &[(i64, &crate::domain::NewAssignment)]| {
            ctx.new_work_notices(&org, created, late || go_live, now)
        };
        let go_live_date = go_live.then_some(today);
        let ids = store
            .materialise(
                &activity.id,
                period.start,
                &rows,
                late,
                go_live_date,
                &notices,
                now,
            )
            .await?;
        if !ids.is_empty() {
            tracing::info!(activity = %activity.id, period = %period.label(), created = ids.len(), late, "assigned");
        }
        report.created += ids.len();
        if late {
            report.created_late += ids.len();
        }
        report
            .periods
            .push((activity.id.clone(), period.label(), ids.len()));
    }
    Ok(report)
}
