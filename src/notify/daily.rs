//! The daily notification decision: once per working day, decide today's reminders, chases,
//! escalations and digests and queue them. The imperative shell around [`super::planner`].

use jiff::Timestamp;

use super::planner::{daily_notices, slt_digest};
use crate::domain::Status;
use crate::engine::Context;
use crate::org::Org;
use crate::store::{AssignmentFilter, Store, StoreError};

/// `meta` key: the last local date notices were decided for.
pub const LAST_DATE_KEY: &str = "notify_last_date";
/// `meta` key: the instant of the last decision; work created after it is "new" in the next
/// daily message.
pub const DECIDED_AT_KEY: &str = "notify_decided_at";
/// `meta` key: the overdue total in the last senior-leadership digest.
pub const SLT_TOTAL_KEY: &str = "slt_digest_last_total";

/// What the daily decision did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecisionReport {
    /// Whether today ran in catch-up mode (missed working days, or the first run).
    pub catch_up: bool,
    /// Outbox rows queued.
    pub queued: u64,
}

/// Decides and queues today's notices, once per working day. Safe to call every pass: a day
/// already decided is skipped, and re-deciding queues nothing twice (deterministic keys).
pub async fn decide(
    store: &Store,
    ctx: &Context,
    now: Timestamp,
) -> Result<DecisionReport, StoreError> {
    let Some(router) = super::router::Router::of(ctx) else {
        return Ok(DecisionReport::default());
    };
    let today = ctx.today(now);
    if !ctx.calendar.is_working_day(today) {
        return Ok(DecisionReport::default());
    }
    let last: Option<jiff::civil::Date> = store
        .meta(LAST_DATE_KEY)
        .await?
        .and_then(|d| d.parse().ok());
    if last.is_some_and(|l| l >= today) {
        return Ok(DecisionReport::default());
    }
    let open = store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Open],
            ..Default::default()
        })
        .await?;
    // Catch-up: working days were missed, or this is the first decision on a database that
    // already has work (a first start part-way through a year). A fresh start at a period's
    // beginning has only just-announced work and needs no summary.
    let catch_up = match last {
        None => open
            .iter()
            .any(|a| a.created_late || ctx.today(a.created_at) < today),
        Some(last) => ctx.calendar.working_days_between(last, today) > 1,
    };
    let org = Org::new(store.people().await?);
    let new_since = store
        .meta(DECIDED_AT_KEY)
        .await?
        .and_then(|t| crate::store::parse_instant(&t).ok());
    let mut notices = daily_notices(ctx, router, &org, &open, today, catch_up, new_since);
    let previous: Option<u32> = store
        .meta(SLT_TOTAL_KEY)
        .await?
        .and_then(|t| t.parse().ok());
    let digest = slt_digest(ctx, router, &org, &open, today, previous);
    if let Some((digest_notices, _)) = &digest {
        notices.extend(digest_notices.iter().cloned());
    }
    let rows = router.route(&notices, &org, &ctx.calendar, now);
    let queued = store.enqueue(&rows, now).await?;
    if let Some((_, total)) = digest {
        store.set_meta(SLT_TOTAL_KEY, &total.to_string()).await?;
    }
    store.set_meta(LAST_DATE_KEY, &today.to_string()).await?;
    store
        .set_meta(DECIDED_AT_KEY, &crate::store::format_instant(now))
        .await?;
    if queued > 0 {
        tracing::info!(queued, catch_up, "notifications decided");
    }
    Ok(DecisionReport { catch_up, queued })
}
