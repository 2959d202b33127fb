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
/// `meta` key: "overdue,unverified" actions in the last senior-leadership digest.
pub const SLT_ACTIONS_KEY: &str = "slt_digest_last_actions";
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
        let next = ctx.calendar.nth_working_day_after(today, 1);
        tracing::info!(%today, %next, "not a working day: no messages are decided today; the next daily messages are decided on {next}");
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
    // Outside catch-up only the work today's rules can pick (the summary lists it all).
    let chaseable = open
        .iter()
        .filter(|a| catch_up || super::chased::may_be_selected(ctx, a, today, new_since));
    let mut work = super::chased::assignments(ctx, router, &org, chaseable, today);
    work.extend(chased_actions(store, ctx, router, &org, today).await?);
    let mut notices = daily_notices(ctx, router, &org, &work, today, catch_up, new_since);
    let previous: Option<u32> = store
        .meta(SLT_TOTAL_KEY)
        .await?
        .and_then(|t| t.parse().ok());
    let mut digest = slt_digest(ctx, router, &org, &open, today, last, previous);
    let mut actions_counts = None;
    if let Some((digest_notices, _)) = &mut digest {
        let section = actions_section(store, ctx, router, &org, today).await?;
        actions_counts = Some(format!("{},{}", section.overdue, section.unverified));
        for notice in digest_notices.iter_mut() {
            // Each senior leader's own signed link to the tracker page.
            let mut own = section.clone();
            own.tracker_link = router.tracker_link(&notice.recipient, today);
            notice.context.actions = Some(own);
        }
        notices.extend(digest_notices.iter().cloned());
    }
    add_moderation_outcomes(store, ctx, router, &org, &mut notices, new_since, today).await?;
    super::welcome::add_welcomes(store, ctx, router, &org, &open, &mut notices, today).await?;
    let rows = router.route(&notices, &org, &ctx.calendar, now);
    let queued = store.enqueue(&rows, now).await?;
    if let Some((_, total)) = digest {
        store.set_meta(SLT_TOTAL_KEY, &total.to_string()).await?;
    }
    if let Some(counts) = actions_counts {
        store.set_meta(SLT_ACTIONS_KEY, &counts).await?;
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

/// Open actions and done ones waiting for verification, as chased work, with the assignments
/// they were raised from (for their titles and periods).
async fn chased_actions(
    store: &Store,
    ctx: &Context,
    router: &super::router::Router,
    org: &Org,
    today: jiff::civil::Date,
) -> Result<Vec<super::chased::Chased>, StoreError> {
    let actions = store
        .actions(&crate::store::ActionFilter {
            states: vec![
                crate::domain::ActionState::Open,
                crate::domain::ActionState::Done,
            ],
            ..Default::default()
        })
        .await?;
    let mut ids: Vec<i64> = actions.iter().filter_map(|a| a.assignment_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let sources = store
        .assignments_with_ids(&ids, &[])
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    Ok(super::chased::actions(
        ctx, router, org, &actions, &sources, today,
    ))
}

/// The closing-the-loop section of the senior-leadership digest: every action, the audits
/// graded Inadequate (a grade field at the worst of its scale), and the last digest's counts.
async fn actions_section(
    store: &Store,
    ctx: &Context,
    router: &super::router::Router,
    org: &Org,
    today: jiff::civil::Date,
) -> Result<super::tracker::ActionsSection, StoreError> {
    let actions = store
        .actions(&crate::store::ActionFilter::default())
        .await?;
    let mut inadequate = Vec::new();
    for (form_id, form) in &ctx.schedule.forms {
        let worst: Vec<(&str, &str)> = form
            .fields
            .iter()
            .filter_map(|f| match &f.kind {
                crate::schedule::form::FieldKind::Grade { options, .. } => {
                    options.last().map(|w| (f.id.as_str(), w.as_str()))
                }
                _ => None,
            })
            .collect();
        if worst.is_empty() {
            continue;
        }
        for record in store.records_of_form(form_id).await? {
            if worst.iter().any(|(field, grade)| {
                record.fields.get(*field).and_then(|v| v.as_str()) == Some(grade)
            }) {
                inadequate.push((record.assignment_id, record.submitted_by.clone()));
            }
        }
    }
    let previous = store.meta(SLT_ACTIONS_KEY).await?.and_then(|t| {
        let (o, u) = t.split_once(',')?;
        Some((o.parse().ok()?, u.parse().ok()?))
    });
    Ok(super::tracker::actions_section(
        &ctx.calendar,
        &ctx.tz,
        org,
        &actions,
        &inadequate,
        today,
        previous,
        &router.base_url,
    ))
}

/// Tells each auditor, in their next daily message, the outcome of the moderations of their
/// audits completed since the last decision: who moderated, how many grades were agreed, and
/// the audit's page (where the moderated grades and the feedback are).
async fn add_moderation_outcomes(
    store: &Store,
    ctx: &Context,
    router: &super::router::Router,
    org: &Org,
    notices: &mut Vec<super::router::Notice>,
    new_since: Option<Timestamp>,
    today: jiff::civil::Date,
) -> Result<(), StoreError> {
    let Some(since) = new_since else {
        return Ok(());
    };
    let done = store
        .assignments(&AssignmentFilter {
            statuses: vec![Status::Done],
            completed_after: Some(since),
            triggered_only: true,
            ..Default::default()
        })
        .await?;
    for moderation in &done {
        let (Some(audit_id), Some(auditor)) =
            (moderation.trigger_id, moderation.subject.as_deref())
        else {
            continue;
        };
        let outcomes: Vec<_> = store
            .moderation_outcomes(audit_id)
            .await?
            .into_iter()
            .filter(|o| o.moderation_id == moderation.id)
            .collect();
        if outcomes.is_empty() || org.get(auditor).is_none_or(|p| !p.is_current()) {
            continue;
        }
        let audit = store.assignment(audit_id).await?;
        let moderator = moderation.completed_by.as_deref().unwrap_or_default();
        let outcome = super::context::Moderated {
            title: ctx
                .schedule
                .activity(&audit.activity_id)
                .map(|a| a.title.clone())
                .unwrap_or_else(|| audit.activity_id.clone()),
            period: audit.period_label.clone(),
            period_long: crate::schedule::period::describe(
                audit.period_start,
                audit.period_end,
                ctx.fy,
            ),
            moderator_name: org
                .get(moderator)
                .map(|p| p.record.name.clone())
                .unwrap_or_else(|| moderator.to_owned()),
            agreed: outcomes.iter().filter(|o| o.agreed).count() as u32,
            total: outcomes.len() as u32,
            link: router.link(auditor, audit_id, today),
        };
        let daily = |n: &super::router::Notice| {
            n.recipient == auditor && matches!(n.kind, super::Kind::Digest | super::Kind::CatchUp)
        };
        match notices.iter_mut().find(|n| daily(n)) {
            Some(notice) => notice.context.moderated.push(outcome),
            None => {
                let mut context = router.context(super::Kind::Digest, auditor, today);
                context.recipient_name = org.get(auditor).map(|p| p.record.name.clone());
                context.moderated = vec![outcome];
                notices.push(super::router::Notice {
                    kind: super::Kind::Digest,
                    reference: super::Kind::Digest.as_str().to_owned(),
                    date: Some(today),
                    recipient: auditor.to_owned(),
                    post_as: None,
                    assignment_id: None,
                    immediate: false,
                    suppressed: false,
                    context,
                });
            }
        }
    }
    Ok(())
}
