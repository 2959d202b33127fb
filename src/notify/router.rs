//! Routing: who hears about a notice, through which channels, with which outbox key, and when.
//!
//! **Invariant:** pure. The key of every outbox row is deterministic —
//! `kind:ref:date:recipient:channel` — so deciding the same notice twice (a re-run, a catch-up,
//! a second instance) queues it once.

use std::collections::{HashMap, HashSet};

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use super::context::TemplateContext;
use super::settings::{NotifyConfig, Preference, Route};
use super::{ChannelSettings, Kind};
use crate::calendar::Calendar;
use crate::org::Org;
use crate::store::NewOutbox;

/// Something qaloop has decided to tell one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What about.
    pub kind: Kind,
    /// What it refers to, for the key: `a123` (an assignment), `a123:L1`, `digest`, `slt:2027-28 B3`.
    pub reference: String,
    /// The local date it was decided for; part of the key for repeating notices.
    pub date: Option<Date>,
    /// The staff id it is for.
    pub recipient: String,
    /// For work owned by a role: `role:NAME`. Chat channels then post once for the role, not
    /// once per holder.
    pub post_as: Option<String>,
    /// The assignment, so completing it cancels the notice.
    pub assignment_id: Option<i64>,
    /// Send at once, ignoring working hours (tests, admin alerts).
    pub immediate: bool,
    /// Record it as already handled (folded into a catch-up summary) instead of sending it, so
    /// it is not decided again tomorrow.
    pub suppressed: bool,
    /// What the template sees.
    pub context: TemplateContext,
}

/// A configured channel as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Its name.
    pub name: String,
    /// Email and file channels reach one person; webhooks post to a shared space.
    pub personal: bool,
    /// An email channel with a `reply_to` (the QA team's mailbox): messages say replies go there.
    pub reply_to: bool,
}

/// When messages may go out: working hours on working days, in the organisation's zone.
/// Messages are held, never dropped, outside them.
#[derive(Debug, Clone)]
pub struct WorkingHours {
    /// The organisation's zone.
    pub tz: TimeZone,
    /// Start, local.
    pub start: Time,
    /// End, local (exclusive).
    pub end: Time,
    /// `false` sends at any hour (the example configuration).
    pub hold: bool,
    /// Delivery times (`notify.deliver_at`), local, sorted; routine messages wait for the next.
    pub deliver_at: Vec<Time>,
}

impl WorkingHours {
    /// Whether a message may go out at `now`.
    pub fn contains(&self, now: Timestamp, calendar: &Calendar) -> bool {
        if !self.hold {
            return true;
        }
        let local = now.to_zoned(self.tz.clone());
        calendar.is_working_day(local.date())
            && local.time() >= self.start
            && local.time() < self.end
    }

    /// When a routine message decided at `now` is delivered: the next delivery time
    /// (`notify.deliver_at`) on a working day. `same_day` (the day's daily decision): when the
    /// day's delivery times have all passed, at once if still inside working hours, so a late
    /// decision does not lose a day. Without holding, at once.
    pub fn next_delivery(&self, now: Timestamp, calendar: &Calendar, same_day: bool) -> Timestamp {
        if !self.hold {
            return now;
        }
        let local = now.to_zoned(self.tz.clone());
        let at = |day: Date, time: Time| {
            day.to_datetime(time)
                .to_zoned(self.tz.clone())
                .map(|z| z.timestamp())
                .unwrap_or(now)
        };
        let today = local.date();
        if calendar.is_working_day(today) {
            if let Some(&slot) = self.deliver_at.iter().find(|&&t| t >= local.time()) {
                return at(today, slot).max(self.next(now, calendar));
            }
            if same_day && self.contains(now, calendar) {
                return now;
            }
        }
        let day = calendar.nth_working_day_after(today, 1);
        let first = self.deliver_at.first().copied().unwrap_or(self.start);
        at(day, first).max(self.next(at(day, Time::midnight()), calendar))
    }

    /// The first moment at or after `now` when a message may go out.
    pub fn next(&self, now: Timestamp, calendar: &Calendar) -> Timestamp {
        if self.contains(now, calendar) {
            return now;
        }
        let local = now.to_zoned(self.tz.clone());
        let mut day = local.date();
        if !(calendar.is_working_day(day) && local.time() < self.start) {
            day = calendar.nth_working_day_after(day, 1);
        }
        day.to_datetime(self.start)
            .to_zoned(self.tz.clone())
            .map(|z| z.timestamp())
            .unwrap_or(now + 1.hour())
    }
}

/// Everything routing needs, validated once.
#[derive(Debug, Clone)]
pub struct Router {
    /// `[notify] base_url`, without a trailing slash.
    pub base_url: String,
    /// Organisation name, for templates.
    pub organisation: String,
    /// When messages may go out.
    pub hours: WorkingHours,
    /// Configured channels.
    pub channels: Vec<ChannelInfo>,
    /// Routes; empty means every kind to every personal channel.
    pub routes: Vec<Route>,
    /// Preferences by staff id.
    pub preferences: HashMap<String, Preference>,
    /// Where admin alerts go: (channel, address).
    pub admin: Option<(String, Option<String>)>,
    /// Signs each recipient's links (`[web] link_key_file`); `None`: plain links.
    pub links: Option<crate::links::LinkKeys>,
}

impl Router {
    /// Builds the router from settings (validated at load) and the parsed preferences.
    pub fn new(
        config: &NotifyConfig,
        channels: &[ChannelSettings],
        organisation: &str,
        tz: TimeZone,
        preferences: Vec<Preference>,
    ) -> Router {
        let parse = |t: &str| crate::config::parse_hh_mm(t).unwrap_or(Time::midnight());
        Router {
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            organisation: organisation.to_owned(),
            hours: WorkingHours {
                tz,
                start: parse(&config.working_hours_start),
                end: parse(&config.working_hours_end),
                hold: config.hold_outside_working_hours,
                deliver_at: {
                    let mut times: Vec<Time> = config
                        .deliver_at
                        .iter()
                        .filter_map(|t| crate::config::parse_hh_mm(t))
                        .collect();
                    times.sort();
                    times
                },
            },
            channels: channels
                .iter()
                .map(|c| ChannelInfo {
                    name: c.name().to_owned(),
                    personal: matches!(c, ChannelSettings::Email(_) | ChannelSettings::File(_)),
                    reply_to: match c {
                        ChannelSettings::Email(e) => e.reply_to.is_some(),
                        ChannelSettings::File(f) => f.reply_to.is_some(),
                        _ => false,
                    },
                })
                .collect(),
            routes: config.routes.clone(),
            preferences: preferences
                .into_iter()
                .map(|p| (p.staff_id.clone(), p))
                .collect(),
            admin: config
                .admin_channel
                .clone()
                .map(|c| (c, config.admin_address.clone())),
            links: None,
        }
    }

    /// The router signing every recipient's links with `keys`.
    pub fn with_links(mut self, keys: crate::links::LinkKeys) -> Router {
        self.links = Some(keys);
        self
    }

    /// Whether `staff_id` gets one daily message (the default) rather than a message per item
    /// (`daily_digest = false` in the preferences file).
    pub fn wants_digest(&self, staff_id: &str) -> bool {
        self.preferences
            .get(staff_id)
            .and_then(|p| p.daily_digest)
            .unwrap_or(true)
    }

    /// The link `recipient` (a staff id) follows to an assignment: signed for them, valid for
    /// `[web] link_days` from the start of `today` (so deciding the same notice twice on one
    /// day gives the same link). Plain when no link key is configured, or for a role's chat
    /// post (the page then offers to email the reader their own link).
    pub fn link(&self, recipient: &str, assignment_id: i64, today: Date) -> String {
        match &self.links {
            Some(_) => self.signed_link(
                recipient,
                crate::links::Purpose::Item,
                Some(assignment_id),
                &format!("/a/{assignment_id}"),
                today,
            ),
            None => format!("{}/a/{assignment_id}", self.base_url),
        }
    }

    /// The link `recipient` follows to acknowledge urgent concern `concern_id` (signed like
    /// [`Router::link`]; plain without a key or for a shared chat post).
    pub fn concern_link(&self, recipient: &str, concern_id: i64, today: Date) -> String {
        self.signed_link(
            recipient,
            crate::links::Purpose::Concern,
            Some(concern_id),
            &format!("/concerns/{concern_id}"),
            today,
        )
    }

    /// The page where `recipient` acts on action `action_id`: the owner marks it done, the
    /// verifier verifies or reopens it (signed like [`Router::link`]).
    pub fn action_link(&self, recipient: &str, action_id: i64, today: Date) -> String {
        self.signed_link(
            recipient,
            crate::links::Purpose::Action,
            Some(action_id),
            &format!("/actions/{action_id}"),
            today,
        )
    }

    /// The closing-the-loop tracker page for `recipient` (signed like [`Router::link`]). The
    /// page decides what they see from their roles (senior leadership or head of service).
    pub fn tracker_link(&self, recipient: &str, today: Date) -> String {
        self.signed_link(
            recipient,
            crate::links::Purpose::Tracker,
            None,
            "/tracker",
            today,
        )
    }

    /// `{base_url}{path}?t=TOKEN` signed for `recipient` from the start of `today`, or plain
    /// `{base_url}{path}` without a key or for a role.
    fn signed_link(
        &self,
        recipient: &str,
        purpose: crate::links::Purpose,
        item: Option<i64>,
        path: &str,
        today: Date,
    ) -> String {
        match &self.links {
            Some(keys) if !recipient.starts_with("role:") => {
                let issued = today
                    .to_zoned(self.hours.tz.clone())
                    .map(|z| z.timestamp())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let token = keys.sign_from(recipient, purpose, item, issued);
                format!("{}{path}?t={token}", self.base_url)
            }
            _ => format!("{}{path}", self.base_url),
        }
    }

    /// Re-makes every item link, and an urgent concern's link, in `context` for its recipient
    /// (a notice is planned once, then routed to several people, each of whom gets links of
    /// their own). A post to a shared chat space (`personal` false) never carries a personal link: anyone there could
    /// act as the recipient.
    fn sign_links(&self, context: &mut TemplateContext, today: Date, personal: bool) {
        if self.links.is_none() {
            return;
        }
        let recipient = if personal {
            context.recipient.clone()
        } else {
            "role:shared-channel".to_owned()
        };
        let grouped = context
            .groups
            .iter_mut()
            .flat_map(|g| g.teams.iter_mut())
            .flat_map(|t| t.items.iter_mut());
        let items = context
            .items
            .iter_mut()
            .chain(context.team_items.iter_mut())
            .chain(context.action_items.iter_mut())
            .chain(context.verify_items.iter_mut())
            .chain(grouped);
        for item in items {
            item.link = if item.work.is_action() {
                self.action_link(&recipient, item.id, today)
            } else {
                self.link(&recipient, item.id, today)
            };
        }
        if let Some(concern) = &mut context.concern {
            concern.link = self.concern_link(&recipient, concern.id, today);
        }
    }

    /// A context of `kind` with the organisation-wide fields filled in.
    pub fn context(&self, kind: Kind, recipient: &str, today: Date) -> TemplateContext {
        TemplateContext {
            organisation: self.organisation.clone(),
            base_url: self.base_url.clone(),
            recipient: recipient.to_owned(),
            today: today.to_string(),
            ..TemplateContext::new(kind)
        }
    }

    /// The channels a notice of `kind` to `staff_id` goes through.
    fn channels_for(&self, kind: Kind, staff_id: &str, org: &Org) -> Vec<&ChannelInfo> {
        // An urgent concern goes out on every channel there is, whatever the routes or anyone's
        // preferences say.
        if kind == Kind::UrgentConcern {
            return self.channels.iter().collect();
        }
        let mandatory = matches!(kind, Kind::Escalation | Kind::SltDigest);
        if !mandatory
            && let Some(chosen) = self
                .preferences
                .get(staff_id)
                .and_then(|p| p.channels.as_ref())
        {
            return self
                .channels
                .iter()
                .filter(|c| chosen.contains(&c.name))
                .collect();
        }
        if self.routes.is_empty() {
            return self.channels.iter().filter(|c| c.personal).collect();
        }
        let holds = |role: &String| org.get(staff_id).is_some_and(|p| p.holds(role));
        self.routes
            .iter()
            .find(|r| {
                r.kinds.iter().any(|k| k == "*" || k == kind.as_str())
                    && (r.roles.is_empty() || r.roles.iter().any(holds))
            })
            .map(|r| {
                self.channels
                    .iter()
                    .filter(|c| r.channels.contains(&c.name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first moment at or after `now` inside working hours on a working day.
    pub fn next_working_moment(&self, now: Timestamp, calendar: &Calendar) -> Timestamp {
        self.hours.next(now, calendar)
    }

    /// Outbox rows for `notices`: one per recipient and channel; for chat channels, one post per
    /// role for role-owned work. Keys are deterministic and duplicates within the batch dropped.
    pub fn route(
        &self,
        notices: &[Notice],
        org: &Org,
        calendar: &Calendar,
        now: Timestamp,
    ) -> Vec<NewOutbox> {
        // Routine messages wait for the next delivery time; new work announced during the day
        // waits for the next delivery, the day's decision goes out the same day.
        let delivery = self.hours.next_delivery(now, calendar, true);
        let next_delivery = self.hours.next_delivery(now, calendar, false);
        let today = now.to_zoned(self.hours.tz.clone()).date();
        let mut seen = HashSet::new();
        let mut rows = Vec::new();
        for notice in notices {
            let not_before = match notice.kind {
                _ if notice.immediate => now,
                Kind::NewAssignment => next_delivery,
                _ => delivery,
            };
            for channel in self.channels_for(notice.kind, &notice.recipient, org) {
                let recipient = match (&notice.post_as, channel.personal) {
                    (Some(role), false) => role.clone(),
                    _ => notice.recipient.clone(),
                };
                let date = notice.date.map(|d| d.to_string()).unwrap_or_default();
                let key = format!(
                    "{}:{}:{date}:{recipient}:{}",
                    notice.kind.as_str(),
                    notice.reference,
                    channel.name
                );
                if !seen.insert(key.clone()) {
                    continue;
                }
                let mut context = notice.context.clone();
                context.recipient = recipient.clone();
                context.replies_to_qa = channel.reply_to;
                if context.recipient_name.is_none() && channel.personal {
                    context.recipient_name = org.get(&recipient).map(|p| p.record.name.clone());
                }
                self.sign_links(&mut context, today, channel.personal);
                rows.push(NewOutbox {
                    key,
                    kind: notice.kind.as_str().to_owned(),
                    channel: channel.name.clone(),
                    recipient,
                    assignment_id: notice.assignment_id,
                    context: serde_json::to_string(&context).unwrap_or_default(),
                    not_before,
                    suppressed: notice.suppressed,
                });
            }
        }
        rows
    }
}

impl Router {
    /// The router the engine context carries as its [`Announcer`], when channels are configured.
    pub fn of(ctx: &crate::engine::Context) -> Option<&Router> {
        let announcer: &dyn std::any::Any = ctx.announcer.as_deref()?;
        announcer.downcast_ref::<Router>()
    }
}

impl crate::engine::Announcer for Router {
    fn new_work(
        &self,
        ctx: &crate::engine::Context,
        org: &Org,
        created: &[(i64, &crate::domain::NewAssignment)],
        now: Timestamp,
    ) -> Vec<NewOutbox> {
        let notices =
            super::planner::new_assignment_notices(ctx, self, org, created, ctx.today(now));
        self.route(&notices, org, &ctx.calendar, now)
    }

    fn moved(
        &self,
        ctx: &crate::engine::Context,
        org: &Org,
        moved: &crate::domain::Assignment,
        now: Timestamp,
    ) -> Vec<NewOutbox> {
        let mut notices = super::planner::assigned_notices(ctx, self, org, moved, ctx.today(now));
        // The move's own instant (its history row's `at`) makes each move a new key, so work
        // that goes A → B → A tells A again; deciding the same move twice still queues it once.
        for notice in &mut notices {
            notice.reference = format!("{}:m{}", notice.reference, now.as_microsecond());
        }
        self.route(&notices, org, &ctx.calendar, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(deliver_at: &[&str]) -> WorkingHours {
        let t = |s: &str| crate::config::parse_hh_mm(s).unwrap();
        WorkingHours {
            tz: TimeZone::get("Europe/London").unwrap(),
            start: t("08:00"),
            end: t("18:00"),
            hold: true,
            deliver_at: deliver_at.iter().map(|s| t(s)).collect(),
        }
    }

    fn london(text: &str) -> Timestamp {
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M", text)
            .unwrap()
            .to_zoned(TimeZone::get("Europe/London").unwrap())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn routine_messages_wait_for_the_next_delivery_time() {
        let calendar = crate::calendar::shipped_for_tests();
        let one = hours(&["08:00"]);
        let two = hours(&["08:00", "13:00"]);

        // Decided at 07:30 on Friday 21 May 2027: 08:00 that day.
        assert_eq!(
            one.next_delivery(london("2027-05-21 07:30"), &calendar, true),
            london("2027-05-21 08:00")
        );
        // New work at 14:00 waits for the next delivery: Monday 08:00 (24 May).
        assert_eq!(
            one.next_delivery(london("2027-05-21 14:00"), &calendar, false),
            london("2027-05-24 08:00")
        );
        // The day's decision made late (10:00) goes out at once, not a day later.
        assert_eq!(
            one.next_delivery(london("2027-05-21 10:00"), &calendar, true),
            london("2027-05-21 10:00")
        );
        // With a 13:00 delivery, new work at 10:00 goes at 13:00.
        assert_eq!(
            two.next_delivery(london("2027-05-21 10:00"), &calendar, false),
            london("2027-05-21 13:00")
        );
        // Over a bank holiday weekend (31 May 2027): Tuesday 1 June 08:00.
        assert_eq!(
            two.next_delivery(london("2027-05-28 19:00"), &calendar, true),
            london("2027-06-01 08:00")
        );
        // Not holding: at once.
        let free = WorkingHours {
            hold: false,
            ..one.clone()
        };
        assert_eq!(
            free.next_delivery(london("2027-05-22 03:00"), &calendar, false),
            london("2027-05-22 03:00")
        );
    }
}
