//! Deciding notices: what each person should hear today, and when new work is assigned.
//!
//! **Invariant:** pure — a function of (schedule, calendar, organisation, open work, today).
//! Only *today's* notices are ever decided, so downtime never produces a burst of stale
//! reminders; a missed working day switches the day to catch-up mode instead: one summary per
//! person, and escalations that came due meanwhile folded into it.

use std::collections::{BTreeMap, HashMap};

use jiff::civil::Date;

use super::Kind;
use super::chased::{Chased, timing};
use super::context::{Group, Item, TeamGroup, Work};
use super::router::{Notice, Router};
use crate::domain::{Assignee, Assignment, NewAssignment};
use crate::engine::Context;
use crate::org::Org;

/// "Friday 28 May 2027".
pub fn long_date(date: Date) -> String {
    date.strftime("%A %-d %B %Y").to_string()
}

fn title(ctx: &Context, activity_id: &str) -> String {
    ctx.schedule
        .activity(activity_id)
        .map(|a| a.title.clone())
        .unwrap_or_else(|| activity_id.to_owned())
}

/// A person's name from the staff file (current or past). Someone qaloop never knew reads as
/// words, never as a staff id: messages carry no ids.
pub(super) fn name_of(org: &Org, staff_id: &str) -> String {
    org.get(staff_id)
        .map(|p| p.record.name.clone())
        .unwrap_or_else(|| "someone no longer on the staff list".to_owned())
}

/// Who holds work, for people to read: a name, or the role's title from the schedule
/// ("Performance Unit").
pub fn holder_name(ctx: &Context, org: &Org, assignee: &Assignee) -> String {
    match assignee {
        Assignee::Person(id) => name_of(org, id),
        Assignee::Role(role) => ctx.schedule.role_title(role),
    }
}

/// A template item for an assignment as of `today`, with names from `org`.
pub fn item(ctx: &Context, router: &Router, org: &Org, a: &Assignment, today: Date) -> Item {
    let (until, overdue) = timing(ctx, a.due, today);
    Item {
        assignee_name: holder_name(ctx, org, &a.assignee),
        period_long: crate::schedule::period::describe(a.period_start, a.period_end, ctx.fy),
        before_go_live: a.before_go_live,
        subject_name: a.subject.as_deref().map(|s| name_of(org, s)),
        new: false,
        manager_name: None,
        work: Work::Assignment,
        id: a.id,
        activity: a.activity_id.clone(),
        title: title(ctx, &a.activity_id),
        period: a.period_label.clone(),
        due: a.due.to_string(),
        due_long: long_date(a.due),
        days_until_due: until,
        days_overdue: overdue,
        assignee: a.assignee.to_string(),
        subject: a.subject.clone(),
        link: router.link(&a.assignee.to_string(), a.id, today),
    }
}

/// Who holds `assignee` today, and the role to post as (chat channels post once per role).
fn holders(org: &Org, assignee: &Assignee) -> (Vec<String>, Option<String>) {
    let people = assignee
        .current_holders(org)
        .iter()
        .map(|p| p.record.staff_id.clone())
        .collect();
    let post_as = matches!(assignee, Assignee::Role(_)).then(|| assignee.to_string());
    (people, post_as)
}

/// New-work notices for freshly created assignments (`on_assign` per activity).
pub fn new_assignment_notices(
    ctx: &Context,
    router: &Router,
    org: &Org,
    created: &[(i64, &NewAssignment)],
    today: Date,
) -> Vec<Notice> {
    let mut notices = Vec::new();
    for &(id, a) in created {
        if !ctx
            .schedule
            .activity(&a.activity_id)
            .is_some_and(|act| act.notify.on_assign)
        {
            continue;
        }
        // Most people hear of new work in their next daily message: build nothing for them
        // (a period start creates tens of thousands of assignments at national size).
        let (people, _) = holders(org, &a.assignee);
        if people.iter().all(|p| router.wants_digest(p)) {
            continue;
        }
        let stored = a.stored(id);
        // Everyone else hears of it in their next daily message.
        notices.extend(
            assigned_notices(ctx, router, org, &stored, today)
                .into_iter()
                .filter(|n| !router.wants_digest(&n.recipient)),
        );
    }
    notices
}

/// The notice that `a` is now someone's (new or reassigned work).
pub fn assigned_notices(
    ctx: &Context,
    router: &Router,
    org: &Org,
    a: &Assignment,
    today: Date,
) -> Vec<Notice> {
    let (people, post_as) = holders(org, &a.assignee);
    people
        .into_iter()
        .map(|person| {
            let mut context = router.context(Kind::NewAssignment, &person, today);
            context.items = vec![item(ctx, router, org, a, today)];
            Notice {
                kind: Kind::NewAssignment,
                reference: format!("a{}:{}", a.id, a.assignee),
                date: None,
                recipient: person,
                post_as: post_as.clone(),
                assignment_id: Some(a.id),
                immediate: false,
                suppressed: false,
                context,
            }
        })
        .collect()
}

/// One person's daily message as it is built.
#[derive(Default)]
struct Bundle {
    items: Vec<Item>,
    team_items: Vec<Item>,
    action_items: Vec<Item>,
    verify_items: Vec<Item>,
}

impl Bundle {
    fn push_own(&mut self, item: Item) {
        match item.work {
            Work::Assignment => self.items.push(item),
            Work::Action => self.action_items.push(item),
            Work::Verify => self.verify_items.push(item),
        }
    }
}

/// Today's notices for chased `work` (open assignments and actions: see [`super::chased`]).
///
/// By default each person gets **one message** (kind `digest`): the work created since the last
/// decision (`new_since`), what the reminder, due-today and chase rules select today, and, for
/// a manager, their reports' overdue work that reached an escalation point today — sectioned,
/// oldest first; a day with nothing selected sends nothing. Actions are chased by the same
/// rules and land in the same message, in sections of their own (the recipient's actions, and
/// actions waiting for them to verify). People who chose single messages
/// (`daily_digest = false`) get a notice per item instead, and new work at once. In catch-up
/// mode (missed working days, or a first start part-way through) everyone gets one summary
/// (`catch_up`) of all their open work, with their reports' work that escalated meanwhile, and
/// the single escalations that came due are recorded as folded into it.
pub fn daily_notices(
    ctx: &Context,
    router: &Router,
    org: &Org,
    work: &[Chased],
    today: Date,
    catch_up: bool,
    new_since: Option<jiff::Timestamp>,
) -> Vec<Notice> {
    if !ctx.calendar.is_working_day(today) && !catch_up {
        return Vec::new();
    }
    let mut notices = Vec::new();
    let mut bundled: BTreeMap<String, Bundle> = BTreeMap::new();

    for w in work {
        let rules = &w.rules;
        let (until, overdue) = (w.item.days_until_due, w.item.days_overdue);
        let mut item = w.item.clone();
        item.new = item.work != Work::Verify && new_since.is_none_or(|t| w.created_at > t);

        let single = match (until, overdue) {
            (Some(0), _) if rules.on_due_date => Some(Kind::DueToday),
            (Some(n), _) if rules.remind_before.contains(&n) => Some(Kind::Reminder),
            (None, Some(n))
                if rules.chase_every > 0 && n >= 1 && (n - 1) % rules.chase_every == 0 =>
            {
                Some(Kind::Chase)
            }
            _ => None,
        };
        // A done action is only the verifier's business once verification is due.
        let in_catch_up = catch_up && (item.work != Work::Verify || until.is_none_or(|n| n == 0));
        for person in &w.holders {
            if in_catch_up || (router.wants_digest(person) && (single.is_some() || item.new)) {
                bundled
                    .entry(person.clone())
                    .or_default()
                    .push_own(item.clone());
            } else if let Some(kind) = single
                && !router.wants_digest(person)
                && !catch_up
            {
                let mut context = router.context(kind, person, today);
                context.items = vec![item.clone()];
                notices.push(Notice {
                    kind,
                    reference: w.reference.clone(),
                    date: Some(today),
                    recipient: person.clone(),
                    post_as: w.post_as.clone(),
                    assignment_id: w.assignment_id,
                    immediate: false,
                    suppressed: false,
                    context,
                });
            }
        }

        // Escalations: once per level, to the nearest current manager(s) above the holder(s).
        let Some(days) = overdue else { continue };
        for (level, after) in [(1u8, rules.escalate_at[0]), (2u8, rules.escalate_at[1])] {
            if after == 0 || days < after {
                continue;
            }
            let chains: Vec<Vec<&crate::org::Person>> = w
                .holders
                .iter()
                .map(|p| {
                    org.managers_of(p)
                        .into_iter()
                        .filter(|m| m.is_current())
                        .collect()
                })
                .collect();
            let mut managers: Vec<String> = chains
                .iter()
                .filter_map(|chain| {
                    chain
                        .get(usize::from(level) - 1)
                        .map(|m| m.record.staff_id.clone())
                })
                .collect();
            managers.sort();
            managers.dedup();
            let mut escalated = item.clone();
            escalated.new = false;
            escalated.manager_name = chains
                .first()
                .and_then(|chain| chain.first())
                .map(|m| m.record.name.clone());
            for manager in managers {
                // In the manager's daily message on the day it reaches this level; in a
                // catch-up summary if it reached it while qaloop was down.
                let in_message = catch_up || (router.wants_digest(&manager) && days == after);
                if in_message {
                    bundled
                        .entry(manager.clone())
                        .or_default()
                        .team_items
                        .push(escalated.clone());
                }
                if router.wants_digest(&manager) && !catch_up {
                    continue;
                }
                let mut context = router.context(Kind::Escalation, &manager, today);
                context.items = vec![escalated.clone()];
                context.about = Some(escalated.assignee.clone());
                context.about_name = Some(escalated.assignee_name.clone());
                context.level = Some(level);
                notices.push(Notice {
                    kind: Kind::Escalation,
                    reference: format!("{}:L{level}", w.reference),
                    date: None,
                    recipient: manager,
                    post_as: None,
                    assignment_id: w.assignment_id,
                    immediate: false,
                    // After downtime the escalations that came due meanwhile are recorded as
                    // handled by the catch-up summary rather than sent as a burst.
                    suppressed: catch_up,
                    context,
                });
            }
        }
    }

    let kind = if catch_up {
        Kind::CatchUp
    } else {
        Kind::Digest
    };
    let oldest_first = |a: &Item, b: &Item| (&a.due, a.id).cmp(&(&b.due, b.id));
    for (person, mut bundle) in bundled {
        for list in [
            &mut bundle.items,
            &mut bundle.team_items,
            &mut bundle.action_items,
            &mut bundle.verify_items,
        ] {
            list.sort_by(oldest_first);
        }
        bundle
            .team_items
            .dedup_by_key(|i| (i.work.is_action(), i.id));
        let mut context = router.context(kind, &person, today);
        context.recipient_name = org.get(&person).map(|p| p.record.name.clone());
        context.items = bundle.items;
        context.team_items = bundle.team_items;
        context.action_items = bundle.action_items;
        context.verify_items = bundle.verify_items;
        notices.push(Notice {
            kind,
            reference: kind.as_str().to_owned(),
            date: Some(today),
            recipient: person,
            post_as: None,
            assignment_id: None,
            immediate: false,
            suppressed: false,
            context,
        });
    }
    notices
}

/// The day the senior-leadership digest for the review of `period` goes out.
fn slt_digest_day(ctx: &Context, period: &crate::schedule::Period) -> Option<Date> {
    let settings = &ctx.schedule.digest;
    let activity = ctx.schedule.activity(&settings.before_activity)?;
    let due = activity.due.due_for_period(period, &ctx.calendar);
    Some(if settings.days_before == 0 {
        due
    } else {
        ctx.calendar
            .nth_working_day_before(due, settings.days_before)
    })
}

/// The senior-leadership digest, when `today` is its day — or the first decision after its day
/// fell inside downtime (`last` is the previous decision's date): then it goes out late, once,
/// saying so; of two missed digests only the newer is sent, as it carries the same figures.
/// Everything overdue, grouped by service then team, oldest first. Returns the notices and
/// today's overdue total (to store for the next digest's "change since").
pub fn slt_digest(
    ctx: &Context,
    router: &Router,
    org: &Org,
    open: &[Assignment],
    today: Date,
    last: Option<Date>,
    previous_total: Option<u32>,
) -> Option<(Vec<Notice>, u32)> {
    let settings = &ctx.schedule.digest;
    let activity = ctx.schedule.activity(&settings.before_activity)?;
    let cadence = activity.cadence?;
    let current = crate::schedule::Period::containing(cadence, ctx.fy, today);
    // The review a digest precedes may fall in the next period's first days; look at the
    // periods either side of today's, newest first.
    let mut candidates = vec![current.next(), current, current.previous()];
    candidates.retain(|p| {
        slt_digest_day(ctx, p)
            .is_some_and(|day| day == today || (day < today && last.is_some_and(|last| last < day)))
    });
    let period = candidates.into_iter().next()?;
    let send_on = slt_digest_day(ctx, &period)?;
    let mut overdue: Vec<&Assignment> = open
        .iter()
        .filter(|a| a.is_overdue(today) && !a.before_go_live)
        .collect();
    overdue.sort_by_key(|a| (a.due, a.id));
    let mut services: BTreeMap<String, BTreeMap<String, Vec<Item>>> = BTreeMap::new();
    for a in &overdue {
        let person = a.assignee.staff_id().and_then(|id| org.get(id));
        let (service, team) = match (person, &a.assignee) {
            (Some(p), _) => (p.record.service.clone(), p.record.team.clone()),
            (None, Assignee::Role(role)) => (
                "Work owned by a role".to_owned(),
                ctx.schedule.role_title(role),
            ),
            (None, Assignee::Person(_)) => (
                "Former staff".to_owned(),
                holder_name(ctx, org, &a.assignee),
            ),
        };
        services
            .entry(service)
            .or_default()
            .entry(team)
            .or_default()
            .push(item(ctx, router, org, a, today));
    }
    let groups: Vec<Group> = services
        .into_iter()
        .map(|(service, teams)| Group {
            count: teams.values().map(|t| t.len() as u32).sum(),
            service,
            teams: teams
                .into_iter()
                .map(|(team, items)| TeamGroup { team, items })
                .collect(),
        })
        .collect();
    let total = overdue.len() as u32;
    let role = Assignee::role(&settings.role).to_string();
    let notices = org
        .current_holders(&settings.role)
        .into_iter()
        .map(|p| {
            let mut context = router.context(Kind::SltDigest, &p.record.staff_id, today);
            context.groups = groups.clone();
            context.late_from = (send_on < today).then(|| send_on.to_string());
            context.total = Some(total);
            context.previous_total = previous_total;
            Notice {
                kind: Kind::SltDigest,
                reference: format!("slt:{}", period.label()),
                date: None,
                recipient: p.record.staff_id.clone(),
                post_as: Some(role.clone()),
                assignment_id: None,
                immediate: false,
                suppressed: false,
                context,
            }
        })
        .collect();
    Some((notices, total))
}

/// Counts of notices by kind, for logs and reports.
pub fn count_by_kind(notices: &[Notice]) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for n in notices {
        *counts.entry(n.kind.as_str()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::settings::{NotifyConfig, Preference};
    use crate::org::{Person, StaffRecord};
    use crate::schedule::{FinancialYear, Schedule};
    use jiff::ToSpan;
    use jiff::civil::date;

    fn ctx() -> Context {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/schedule.toml"));
        Context {
            schedule: Schedule::parse(&std::fs::read_to_string(path).unwrap(), path).unwrap(),
            calendar: crate::calendar::shipped_for_tests(),
            tz: jiff::tz::TimeZone::get("Europe/London").unwrap(),
            fy: FinancialYear::starting_in(4).unwrap(),
            start_date: None,
            announcer: None,
        }
    }

    fn router(digest_for: &[&str]) -> Router {
        let channels: Vec<crate::notify::ChannelSettings> = toml::from_str::<toml::Table>(
            "[[c]]\nkind = \"file\"\nname = \"mail\"\ndir = \"out\"\nfrom = \"qa@x.test\"\n",
        )
        .unwrap()["c"]
            .clone()
            .try_into()
            .unwrap();
        Router::new(
            &NotifyConfig::default(),
            &channels,
            "Test Council",
            jiff::tz::TimeZone::get("Europe/London").unwrap(),
            // Everyone named gets the daily message; everyone else chose single messages, so
            // each rule's notices can be seen one by one.
            ["HOS", "SL", "TM", "PU1", "PU2"]
                .iter()
                .map(|id| Preference {
                    staff_id: (*id).into(),
                    daily_digest: Some(digest_for.contains(id)),
                    channels: None,
                })
                .collect(),
        )
    }

    fn person(id: &str, role: &str, manager: Option<&str>) -> Person {
        Person {
            record: StaffRecord {
                staff_id: id.into(),
                name: id.into(),
                email: format!("{id}@x.test"),
                roles: [role.to_owned()].into(),
                line_manager_id: manager.map(Into::into),
                team: "T".into(),
                service: "S".into(),
                locality: "L".into(),
                chat_id: None,
                start_date: None,
            },
            active_from: None,
            left_on: None,
        }
    }

    fn org() -> Org {
        Org::new([
            person("HOS", "head_of_service", None),
            person("SL", "service_lead", Some("HOS")),
            person("TM", "team_manager", Some("SL")),
            person("PU1", "performance_unit", Some("HOS")),
            person("PU2", "performance_unit", Some("HOS")),
        ])
    }

    fn audit(id: i64, assignee: &str, due: Date) -> Assignment {
        Assignment {
            id,
            activity_id: "file-audit".into(),
            period_label: "2027-05".into(),
            period_start: date(2027, 5, 1),
            period_end: date(2027, 5, 31),
            slot: assignee.into(),
            assignee: Assignee::parse(assignee),
            subject: None,
            trigger_id: None,
            due,
            status: crate::domain::Status::Open,
            created_at: jiff::Timestamp::UNIX_EPOCH,
            created_late: false,
            before_go_live: false,
            completed_at: None,
            completed_by: None,
            note: None,
        }
    }

    /// The daily rules over open assignments only.
    fn notices_for(
        ctx: &Context,
        router: &Router,
        org: &Org,
        open: &[Assignment],
        today: Date,
        catch_up: bool,
        new_since: Option<jiff::Timestamp>,
    ) -> Vec<Notice> {
        let work = super::super::chased::assignments(ctx, router, org, open, today);
        daily_notices(ctx, router, org, &work, today, catch_up, new_since)
    }

    #[test]
    fn leaving_out_work_the_rules_cannot_pick_changes_no_notice() {
        // Work due on every day of two months, some new since the last decision, for a person
        // on single messages (TM), one on the daily message (SL's own) and a role (PU).
        let since = jiff::Timestamp::from_second(1_000).unwrap();
        let open: Vec<Assignment> = (0..60)
            .map(|i| {
                let holder = ["TM", "SL", "role:performance_unit"][i as usize % 3];
                let mut a = audit(i, holder, date(2027, 5, 1).checked_add(i.days()).unwrap());
                if i % 4 == 0 {
                    a.created_at = jiff::Timestamp::from_second(2_000).unwrap();
                }
                a
            })
            .collect();
        let (ctx, org) = (ctx(), org());
        for digest_for in [&[][..], &["TM", "SL", "HOS"][..]] {
            let router = router(digest_for);
            let mut day = date(2027, 4, 20);
            while day < date(2027, 7, 20) {
                for new_since in [None, Some(since), SEEN] {
                    let picked = open
                        .iter()
                        .filter(|a| super::super::chased::may_be_selected(&ctx, a, day, new_since));
                    let work = super::super::chased::assignments(&ctx, &router, &org, picked, day);
                    assert_eq!(
                        daily_notices(&ctx, &router, &org, &work, day, false, new_since),
                        notices_for(&ctx, &router, &org, &open, day, false, new_since),
                        "{day}, new since {new_since:?}"
                    );
                }
                day = day.tomorrow().unwrap();
            }
        }
    }

    /// A last decision after everything in these tests was created: nothing counts as new.
    const SEEN: Option<jiff::Timestamp> = Some(jiff::Timestamp::MAX);

    fn kinds_on(day: Date, open: &[Assignment], digest_for: &[&str]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> =
            notices_for(&ctx(), &router(digest_for), &org(), open, day, false, SEEN)
                .into_iter()
                .map(|n| (n.kind.as_str().to_owned(), n.recipient))
                .collect();
        v.sort();
        v
    }

    #[test]
    fn reminders_due_today_chases_and_escalations_follow_the_defaults() {
        // Due Friday 28 May 2027 (31 May is a bank holiday).
        let open = [audit(1, "TM", date(2027, 5, 28))];
        let tm = |k: &str| vec![(k.to_owned(), "TM".to_owned())];
        assert_eq!(
            kinds_on(date(2027, 5, 21), &open, &[]),
            tm("reminder"),
            "5 working days before"
        );
        assert_eq!(kinds_on(date(2027, 5, 24), &open, &[]), vec![]);
        assert_eq!(
            kinds_on(date(2027, 5, 27), &open, &[]),
            tm("reminder"),
            "1 working day before"
        );
        assert_eq!(kinds_on(date(2027, 5, 28), &open, &[]), tm("due_today"));
        // Overdue working days: Tue 1 Jun = 1 (chase), 4 Jun = 4 (chase), 7 Jun = 5 (escalate).
        assert_eq!(kinds_on(date(2027, 6, 1), &open, &[]), tm("chase"));
        assert_eq!(kinds_on(date(2027, 6, 2), &open, &[]), vec![]);
        assert_eq!(kinds_on(date(2027, 6, 4), &open, &[]), tm("chase"));
        assert_eq!(
            kinds_on(date(2027, 6, 7), &open, &[]),
            vec![("escalation".into(), "SL".into())]
        );
        // 14 June = 10 working days overdue: chase (10 = 1 + 3×3) and both escalation levels.
        assert_eq!(
            kinds_on(date(2027, 6, 14), &open, &[]),
            vec![
                ("chase".into(), "TM".into()),
                ("escalation".into(), "HOS".into()),
                ("escalation".into(), "SL".into())
            ]
        );
        assert_eq!(
            kinds_on(date(2027, 5, 29), &open, &[]),
            vec![],
            "nothing on a Saturday"
        );
    }

    #[test]
    fn role_work_notifies_every_holder_and_posts_once_for_the_role() {
        let mut a = audit(2, "role:performance_unit", date(2027, 5, 28));
        a.activity_id = "performance-data".into();
        let notices = notices_for(
            &ctx(),
            &router(&[]),
            &org(),
            &[a],
            date(2027, 5, 28),
            false,
            SEEN,
        );
        let recipients: Vec<&str> = notices.iter().map(|n| n.recipient.as_str()).collect();
        assert_eq!(recipients, vec!["PU1", "PU2"]);
        assert!(
            notices
                .iter()
                .all(|n| n.post_as.as_deref() == Some("role:performance_unit"))
        );
    }

    #[test]
    fn a_digest_person_gets_one_digest_and_never_an_empty_one() {
        let open = [
            audit(1, "TM", date(2027, 5, 28)),
            audit(3, "TM", date(2027, 5, 21)),
        ];
        // 28 May: one due today, one 5 working days overdue (chase? 5-1=4, not a multiple of 3).
        let notices = notices_for(
            &ctx(),
            &router(&["TM"]),
            &org(),
            &open,
            date(2027, 5, 28),
            false,
            SEEN,
        );
        let digest: Vec<_> = notices.iter().filter(|n| n.kind == Kind::Digest).collect();
        assert_eq!(digest.len(), 1);
        assert_eq!(
            digest[0].context.items.len(),
            1,
            "only today's notices go in the digest"
        );
        assert!(notices.iter().all(|n| n.kind != Kind::DueToday));
        let quiet = notices_for(
            &ctx(),
            &router(&["TM"]),
            &org(),
            &open[..1],
            date(2027, 5, 24),
            false,
            SEEN,
        );
        assert!(quiet.is_empty(), "no digest on a day with nothing to say");
    }

    #[test]
    fn catch_up_sends_one_summary_per_person_and_folds_escalations() {
        let open = [
            audit(1, "TM", date(2027, 5, 14)),
            audit(3, "TM", date(2027, 6, 30)),
        ];
        let notices = notices_for(
            &ctx(),
            &router(&[]),
            &org(),
            &open,
            date(2027, 6, 14),
            true,
            SEEN,
        );
        let sent: Vec<_> = notices.iter().filter(|n| !n.suppressed).collect();
        let summaries: Vec<(Kind, &str, usize, usize)> = sent
            .iter()
            .map(|n| {
                let c = &n.context;
                (
                    n.kind,
                    n.recipient.as_str(),
                    c.items.len(),
                    c.team_items.len(),
                )
            })
            .collect();
        // TM's own work; SL and HOS, 21 and 10 working days past the escalation points, find
        // TM's late audit in their summaries instead of "nothing overdue".
        assert_eq!(
            summaries,
            [
                (Kind::CatchUp, "HOS", 0, 1),
                (Kind::CatchUp, "SL", 0, 1),
                (Kind::CatchUp, "TM", 2, 0),
            ]
        );
        assert!(
            notices
                .iter()
                .filter(|n| n.suppressed)
                .all(|n| n.kind == Kind::Escalation)
        );
    }

    #[test]
    fn routed_rows_have_deterministic_keys_and_wait_for_working_hours() {
        let r = router(&[]);
        let open = [audit(1, "TM", date(2027, 5, 28))];
        let notices = notices_for(&ctx(), &r, &org(), &open, date(2027, 5, 21), false, SEEN);
        // Decided at 06:00 London (05:00 UTC, BST) on Friday 21 May.
        let now: jiff::Timestamp = "2027-05-21T05:00:00Z".parse().unwrap();
        let rows = r.route(&notices, &org(), &ctx().calendar, now);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key, "reminder:a1:2027-05-21:TM:mail");
        assert_eq!(
            rows[0].not_before,
            "2027-05-21T07:00:00Z".parse().unwrap(),
            "08:00 BST"
        );
        // Decided at 19:00 on a Friday: held until Monday 08:00.
        let late: jiff::Timestamp = "2027-05-21T18:00:00Z".parse().unwrap();
        assert_eq!(
            r.next_working_moment(late, &ctx().calendar),
            "2027-05-24T07:00:00Z".parse().unwrap()
        );
        let again = r.route(&notices, &org(), &ctx().calendar, now);
        assert_eq!(again[0].key, rows[0].key);
    }

    #[test]
    fn the_slt_digest_goes_out_five_working_days_before_the_review() {
        let c = ctx();
        let r = router(&[]);
        let org = Org::new([
            person("D1", "slt", None),
            person("TM", "team_manager", Some("D1")),
        ]);
        // The Jun–Jul review is due Fri 30 July 2027; 5 working days before is Fri 23 July.
        let open = [audit(1, "TM", date(2027, 5, 28))];
        assert!(slt_digest(&c, &r, &org, &open, date(2027, 7, 22), None, None).is_none());
        let (notices, total) =
            slt_digest(&c, &r, &org, &open, date(2027, 7, 23), None, Some(3)).unwrap();
        assert_eq!(total, 1);
        assert_eq!(notices.len(), 1);
        assert_eq!(notices[0].context.previous_total, Some(3));
        assert_eq!(notices[0].context.groups[0].teams[0].items[0].id, 1);
    }
}
