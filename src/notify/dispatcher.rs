//! The dispatcher: sends what the outbox holds, records each outcome, retries with backoff.
//!
//! **Invariant:** the only caller of [`Channel::deliver`]; it reads the outbox and nothing else
//! decides what is sent. Rows are claimed with a lease, sent one at a time per channel in queue
//! order (channels run side by side), and each outcome is recorded as soon as it is known: a
//! process killed between a send and its record resends that one row once, never loses it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::context::{Failure, TemplateContext};
use super::settings::NotifyConfig;
use super::templates::Templates;
use super::{CalendarEvent, Channel, DeliveryError, Kind, Message, Recipient};
use crate::org::Org;
use crate::store::{NewOutbox, OutboxRow, Store, StoreError};

/// How long a claimed row is reserved for the dispatcher that claimed it.
const LEASE: SignedDuration = SignedDuration::from_secs(300);
/// Rows claimed per round.
const BATCH: i64 = 500;

/// Retry policy, from `[notify]`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts before giving up.
    pub max_attempts: u32,
    /// First delay.
    pub base: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// From settings.
    pub fn from_config(config: &NotifyConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            base: Duration::from_secs(config.backoff_base_seconds),
            max: Duration::from_secs(config.backoff_max_seconds),
        }
    }

    /// The delay before retry number `attempt` (1 for the first retry): exponential, capped,
    /// with "equal jitter" (half fixed, half random) so a relay that comes back is not hit by
    /// every message at once; never shorter than the peer's `Retry-After`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(attempt.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let capped = exp.min(self.max);
        let jittered = capped / 2 + capped.mul_f64(fastrand::f64() / 2.0);
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// What a dispatch run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DispatchReport {
    /// Delivered.
    pub sent: usize,
    /// Failed temporarily; will be retried.
    pub retrying: usize,
    /// Given up on (an admin alert was queued).
    pub dead: usize,
}

/// Sends outbox rows through the configured channels.
pub struct Dispatcher {
    /// Channels by name.
    channels: HashMap<String, Arc<dyn Channel>>,
    /// Rendering.
    templates: Arc<Templates>,
    /// Retries.
    policy: RetryPolicy,
    /// Admin alerts: (channel, address for email channels).
    admin: Option<(String, Option<String>)>,
    /// Nothing is sent outside these (and the calendar's working days); `None`: any time.
    hours: Option<(super::router::WorkingHours, crate::calendar::Calendar)>,
}

enum Outcome {
    Sent,
    Retry(Timestamp, String),
    Dead(String),
    Cancelled,
}

impl Dispatcher {
    /// A dispatcher over `channels`.
    pub fn new(
        channels: HashMap<String, Arc<dyn Channel>>,
        templates: Arc<Templates>,
        policy: RetryPolicy,
        admin: Option<(String, Option<String>)>,
    ) -> Self {
        Self {
            channels,
            templates,
            policy,
            admin,
            hours: None,
        }
    }

    /// Sends nothing outside working hours: rows queued in hours but not yet sent when they end
    /// (a pass late in the day, a retry) wait for the next working morning.
    pub fn with_working_hours(
        mut self,
        hours: super::router::WorkingHours,
        calendar: crate::calendar::Calendar,
    ) -> Self {
        self.hours = Some((hours, calendar));
        self
    }

    /// Sends everything ready at `now`, round after round until nothing is ready.
    pub async fn dispatch(
        &self,
        store: &Store,
        now: Timestamp,
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        if let Some((hours, calendar)) = &self.hours
            && !hours.contains(now, calendar)
        {
            return Ok(report);
        }
        let mut org: Option<Org> = None;
        loop {
            let rows = store.claim(now, now + LEASE, BATCH).await?;
            if rows.is_empty() {
                return Ok(report);
            }
            let org = match &org {
                Some(org) => org,
                None => org.insert(Org::new(store.people().await?)),
            };
            let mut by_channel: BTreeMap<String, Vec<OutboxRow>> = BTreeMap::new();
            for row in rows {
                by_channel.entry(row.channel.clone()).or_default().push(row);
            }
            let lanes = by_channel
                .into_values()
                .map(|rows| self.run_lane(store, org, rows, now));
            for lane in futures_util::future::join_all(lanes).await {
                let lane = lane?;
                report.sent += lane.sent;
                report.retrying += lane.retrying;
                report.dead += lane.dead;
            }
        }
    }

    /// One channel's rows, in order.
    async fn run_lane(
        &self,
        store: &Store,
        org: &Org,
        rows: Vec<OutboxRow>,
        now: Timestamp,
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        for row in rows {
            match self.attempt(&row, org, now).await {
                Outcome::Sent => {
                    store.mark_sent(row.id, now).await?;
                    report.sent += 1;
                }
                Outcome::Retry(at, error) => {
                    tracing::warn!(outbox_id = row.id, channel = %row.channel, recipient = %row.recipient, attempt = row.attempts + 1, %error, "delivery failed; will retry");
                    store.mark_failed(row.id, at, &error).await?;
                    report.retrying += 1;
                }
                Outcome::Dead(error) => {
                    tracing::error!(outbox_id = row.id, channel = %row.channel, recipient = %row.recipient, %error, "delivery abandoned");
                    let alert = self.alert_for(&row, &error, now);
                    store.mark_dead(row.id, &error, &alert, now).await?;
                    report.dead += 1;
                }
                Outcome::Cancelled => {
                    store
                        .mark_cancelled(row.id, "recipient is no longer on the staff list")
                        .await?;
                }
            }
        }
        Ok(report)
    }

    async fn attempt(&self, row: &OutboxRow, org: &Org, now: Timestamp) -> Outcome {
        let Some(channel) = self.channels.get(&row.channel) else {
            return Outcome::Dead(format!("channel `{}` is not configured", row.channel));
        };
        let message = match self.message(row, org) {
            Ok(Some(m)) => m,
            Ok(None) => return Outcome::Cancelled,
            Err(e) => return Outcome::Dead(e),
        };
        if !channel.reaches(&message.recipient) {
            return Outcome::Dead(format!(
                "channel `{}` cannot reach {} (no address)",
                row.channel, row.recipient
            ));
        }
        match channel.deliver(&message).await {
            Ok(()) => Outcome::Sent,
            Err(DeliveryError::Permanent { reason }) => Outcome::Dead(reason),
            Err(DeliveryError::Temporary {
                reason,
                retry_after,
            }) => {
                let attempt = u32::try_from(row.attempts)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1);
                if attempt >= self.policy.max_attempts {
                    Outcome::Dead(format!("gave up after {attempt} attempts: {reason}"))
                } else {
                    let delay = self.policy.delay(attempt, retry_after);
                    let delay =
                        SignedDuration::try_from(delay).unwrap_or(SignedDuration::from_hours(1));
                    Outcome::Retry(now + delay, reason)
                }
            }
        }
    }

    /// Renders a row into a message; `Ok(None)` when its recipient has left.
    fn message(&self, row: &OutboxRow, org: &Org) -> Result<Option<Message>, String> {
        let kind = Kind::parse(&row.kind).ok_or_else(|| format!("unknown kind `{}`", row.kind))?;
        let context: TemplateContext =
            serde_json::from_str(&row.context).map_err(|e| format!("unreadable context: {e}"))?;
        let recipient = if row.recipient.starts_with("role:") {
            Recipient {
                staff_id: row.recipient.clone(),
                email: None,
                chat_id: None,
            }
        } else if row.recipient == "admin" {
            Recipient {
                staff_id: "admin".into(),
                email: self.admin.as_ref().and_then(|(_, address)| address.clone()),
                chat_id: None,
            }
        } else {
            match org.get(&row.recipient) {
                Some(p) if p.is_current() => Recipient {
                    staff_id: p.record.staff_id.clone(),
                    email: Some(p.record.email.clone()),
                    chat_id: p.record.chat_id.clone(),
                },
                _ => return Ok(None),
            }
        };
        let rendered = self
            .templates
            .render(kind, &context)
            .map_err(|e| e.to_string())?;
        let first = context.items.first();
        let calendar = match (kind, first, context.items.len()) {
            (Kind::NewAssignment | Kind::Reminder, Some(item), 1) => {
                item.due.parse().ok().map(|date| CalendarEvent {
                    uid: format!("qaloop-assignment-{}", item.id),
                    date,
                    summary: format!("Due: {} ({})", item.title, item.period),
                    url: Some(item.link.clone()),
                })
            }
            _ => None,
        };
        Ok(Some(Message {
            key: row.key.clone(),
            kind,
            recipient,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            link: first.map(|i| i.link.clone()),
            calendar,
        }))
    }

    /// `qaloop notify test`: renders a test message for `recipient` and sends it through each
    /// channel (or the one named) at once, bypassing the outbox so the operator sees each
    /// channel's answer. Returns (channel, outcome) pairs in name order.
    pub async fn send_test(
        &self,
        recipient: Recipient,
        context: &TemplateContext,
        only: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<(String, Result<(), DeliveryError>)>, String> {
        let rendered = self
            .templates
            .render(Kind::Test, context)
            .map_err(|e| e.to_string())?;
        let mut names: Vec<&String> = self
            .channels
            .keys()
            .filter(|n| only.is_none_or(|o| o == n.as_str()))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(match only {
                Some(name) => format!("no channel is named `{name}`"),
                None => "no channels are configured".to_owned(),
            });
        }
        let mut results = Vec::new();
        for name in names {
            let channel = &self.channels[name];
            let message = Message {
                key: format!(
                    "test:{}:{}:{name}",
                    now.as_millisecond(),
                    recipient.staff_id
                ),
                kind: Kind::Test,
                recipient: recipient.clone(),
                subject: rendered.subject.clone(),
                text: rendered.text.clone(),
                html: rendered.html.clone(),
                link: Some(context.base_url.clone()),
                calendar: None,
            };
            let outcome = if channel.reaches(&recipient) {
                channel.deliver(&message).await
            } else {
                Err(DeliveryError::Permanent {
                    reason: format!("channel cannot reach {} (no address)", recipient.staff_id),
                })
            };
            results.push((name.clone(), outcome));
        }
        Ok(results)
    }

    /// The admin alert about a dead row (none for alerts themselves: no loops).
    fn alert_for(&self, row: &OutboxRow, error: &str, now: Timestamp) -> Vec<NewOutbox> {
        let Some((channel, _)) = &self.admin else {
            return Vec::new();
        };
        if row.kind == Kind::AdminAlert.as_str() {
            return Vec::new();
        }
        let mut context = TemplateContext::new(Kind::AdminAlert);
        context.recipient = "admin".into();
        context.failure = Some(Failure {
            outbox_id: row.id,
            kind: row.kind.clone(),
            channel: row.channel.clone(),
            recipient: row.recipient.clone(),
            attempts: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
            error: error.to_owned(),
        });
        vec![NewOutbox {
            key: format!("admin_alert:{}:{channel}", row.id),
            kind: Kind::AdminAlert.as_str().to_owned(),
            channel: channel.clone(),
            recipient: "admin".into(),
            assignment_id: None,
            context: serde_json::to_string(&context).unwrap_or_default(),
            not_before: now,
            suppressed: false,
        }]
    }
}
