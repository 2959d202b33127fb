//! Urgent-concern alerts: decided from time alone at every dispatch, queued immediate (never
//! held for working hours, never bundled), one outbox key per concern, round and recipient.
//!
//! [`decide`] is safe to call as often as the daemon likes: a round already queued is not
//! queued again (deterministic keys), a missed round is not replayed (only the current one is
//! due), and an acknowledged concern is due nothing.

use jiff::Timestamp;

use super::Kind;
use super::context::ConcernAlert;
use super::router::{Notice, Router};
use crate::domain::{AlertRound, Concern, ConcernKind, UrgentSettings};
use crate::engine::Context;
use crate::org::Org;
use crate::store::{Store, StoreError};

/// The notices due at `now` for `concerns` (pure).
pub fn urgent_notices(
    ctx: &Context,
    router: &Router,
    org: &Org,
    concerns: &[Concern],
    settings: &UrgentSettings,
    now: Timestamp,
) -> Vec<Notice> {
    let today = ctx.today(now);
    let mut notices = Vec::new();
    for concern in concerns {
        for round in concern.alerts_due(now, settings) {
            let alert = ConcernAlert {
                id: concern.id,
                case_reference: concern.case_reference.clone(),
                health: concern.kind == ConcernKind::Health,
                raised_by: concern.raised_by.clone(),
                raised_by_name: org
                    .get(&concern.raised_by)
                    .map(|p| p.record.name.clone())
                    .unwrap_or_else(|| "an auditor who has since left".to_owned()),
                raised_at_long: concern
                    .raised_at
                    .to_zoned(ctx.tz.clone())
                    .strftime("%A %-d %B %Y at %H:%M")
                    .to_string(),
                round: match round {
                    AlertRound::Alert(n) => n,
                    AlertRound::Escalation => 0,
                },
                escalation: round == AlertRound::Escalation,
                // Plain here; the router signs it for each recipient on a personal channel.
                link: format!("{}/concerns/{}", router.base_url, concern.id),
            };
            for recipient in concern.recipients(round, org, settings) {
                let mut context = router.context(Kind::UrgentConcern, &recipient, today);
                context.concern = Some(alert.clone());
                notices.push(Notice {
                    kind: Kind::UrgentConcern,
                    reference: format!("c{}:{}", concern.id, round.key()),
                    date: None,
                    recipient,
                    // Chat channels post each round once, on behalf of the role alerted.
                    post_as: Some(
                        crate::domain::Assignee::role(match round {
                            AlertRound::Alert(_) => &settings.head_role,
                            AlertRound::Escalation => &settings.escalate_role,
                        })
                        .to_string(),
                    ),
                    // Not tied to the audit: completing or reassigning it must not silence this.
                    assignment_id: None,
                    immediate: true,
                    suppressed: false,
                    context,
                });
            }
        }
    }
    notices
}

/// Queues the alerts due at `now` for every unacknowledged concern. Returns rows queued.
pub async fn decide(
    store: &Store,
    ctx: &Context,
    settings: &UrgentSettings,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let Some(router) = Router::of(ctx) else {
        return Ok(0);
    };
    let open = store.concerns(true).await?;
    if open.is_empty() {
        return Ok(0);
    }
    let org = Org::new(store.people().await?);
    let notices = urgent_notices(ctx, router, &org, &open, settings, now);
    let rows = router.route(&notices, &org, &ctx.calendar, now);
    let queued = store.enqueue(&rows, now).await?;
    if queued > 0 {
        tracing::warn!(
            concerns = open.len(),
            queued,
            "urgent concern alerts queued"
        );
    }
    Ok(queued)
}

/// The next moment an alert round falls due for an unacknowledged concern after `now`, so an
/// idle daemon can sleep until then instead of looking every minute; `None`: none open (or no
/// routing, so [`decide`] queues nothing).
pub async fn next_alert_at(
    store: &Store,
    ctx: &Context,
    settings: &UrgentSettings,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    if Router::of(ctx).is_none() {
        return Ok(None);
    }
    Ok(store
        .concerns(true)
        .await?
        .iter()
        .filter_map(|c| c.next_alert_after(now, settings))
        .min())
}
