//! What the daily rules chase: assignments and actions, reduced to one shape.
//!
//! The planner's reminder, due-today, chase and escalation rules are written once, against
//! [`Chased`]; this module says how an assignment and an action each become one. An action is
//! chased by its `[actions.notify]` rules, with the escalation points of an action raised from
//! an audit graded Inadequate moved one level (or `inadequate_escalates_sooner` levels) sooner;
//! a done action left unverified for `verify_within` working days becomes work for its verifier.
//!
//! **Invariant:** pure, like the planner.

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::Date;

use super::context::{Item, Work};
use super::planner::{holder_name, long_date};
use super::router::Router;
use crate::domain::{Action, ActionSource, ActionState, Assignee, Assignment};
use crate::engine::Context;
use crate::org::Org;
use crate::schedule::NotifySettings;

/// The rules that time one piece of work's messages (working days).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Remind this many working days before the due date.
    pub remind_before: Vec<u32>,
    /// Tell the holder on the due date.
    pub on_due_date: bool,
    /// Chase every this many working days while overdue (0: never).
    pub chase_every: u32,
    /// Working days overdue at which the first and the second manager up are told (0: never).
    pub escalate_at: [u32; 2],
}

impl Rules {
    fn of(n: &NotifySettings) -> Rules {
        Rules {
            remind_before: n.remind_before.clone(),
            on_due_date: n.on_due_date,
            chase_every: n.chase_every,
            escalate_at: [n.escalate_after, n.escalate_again_after],
        }
    }

    /// The same rules with escalation `levels` sooner: each level is told when the level
    /// before it would have been, and the first on the first overdue day.
    fn escalating_sooner(mut self, levels: u32) -> Rules {
        for _ in 0..levels {
            let [first, second] = self.escalate_at;
            self.escalate_at = [
                if first == 0 { 0 } else { 1 },
                if second == 0 { 0 } else { first.max(1) },
            ];
        }
        self
    }
}

/// One piece of work the daily rules look at.
#[derive(Debug, Clone)]
pub struct Chased {
    /// What it is, as templates show it; `item.work` says which list of the daily message it
    /// goes in.
    pub item: Item,
    /// For outbox keys: `a12` (assignment), `x7` (action), `v7` (an action to verify).
    pub reference: String,
    /// Staff ids of who must act.
    pub holders: Vec<String>,
    /// Role-owned work: chat channels post once for the role.
    pub post_as: Option<String>,
    /// When it is due (for an action to verify: when verification is due).
    pub due: Date,
    /// When it was created; newer than the last decision means "new" in the daily message.
    pub created_at: Timestamp,
    /// Its timing rules.
    pub rules: Rules,
    /// The assignment, so completing it cancels its single notices.
    pub assignment_id: Option<i64>,
}

/// Open assignments as chased work.
pub fn assignments<'a>(
    ctx: &Context,
    router: &Router,
    org: &Org,
    open: impl IntoIterator<Item = &'a Assignment>,
    today: Date,
) -> Vec<Chased> {
    // Work already late when qaloop went live is never chased or escalated (the welcome shows it).
    open.into_iter()
        .filter(|a| !a.before_go_live)
        .filter_map(|a| {
            let activity = ctx.schedule.activity(&a.activity_id)?;
            let people = a
                .assignee
                .current_holders(org)
                .iter()
                .map(|p| p.record.staff_id.clone())
                .collect();
            Some(Chased {
                item: super::planner::item(ctx, router, org, a, today),
                reference: format!("a{}", a.id),
                holders: people,
                post_as: matches!(a.assignee, Assignee::Role(_)).then(|| a.assignee.to_string()),
                due: a.due,
                created_at: a.created_at,
                rules: Rules::of(&activity.notify),
                assignment_id: Some(a.id),
            })
        })
        .collect()
}

/// Whether the daily rules could select open assignment `a` today outside catch-up: it is new
/// since the last decision (`new_since`), overdue (chases, escalations), or due today or on a
/// reminder day. A superset of what [`super::planner::daily_notices`] picks from it, so
/// leaving the rest out changes no message and spares building their items (names, signed
/// links): most open work is none of these on a given day.
pub fn may_be_selected(
    ctx: &Context,
    a: &Assignment,
    today: Date,
    new_since: Option<Timestamp>,
) -> bool {
    if new_since.is_none_or(|t| a.created_at > t) || a.due < today {
        return true;
    }
    let Some(activity) = ctx.schedule.activity(&a.activity_id) else {
        return false; // not chased at all (see `assignments`)
    };
    let until = ctx.calendar.working_days_between(today, a.due);
    (until == 0 && activity.notify.on_due_date) || activity.notify.remind_before.contains(&until)
}

/// Open actions (chased for their owners) and done ones (for their verifiers, once
/// `verify_within` working days have passed), as chased work. `sources` holds the assignments
/// the actions were raised from, for their titles and periods.
pub fn actions(
    ctx: &Context,
    router: &Router,
    org: &Org,
    actions: &[Action],
    sources: &HashMap<i64, Assignment>,
    today: Date,
) -> Vec<Chased> {
    let settings = &ctx.schedule.actions;
    let mut chased = Vec::new();
    for action in actions {
        let item = action_item(ctx, router, org, action, sources, today);
        match action.state {
            ActionState::Open => {
                let rules = Rules::of(&settings.notify);
                chased.push(Chased {
                    item,
                    reference: format!("x{}", action.id),
                    holders: current(org, &action.owner),
                    post_as: None,
                    due: action.due,
                    created_at: action.created_at,
                    rules: if action.inadequate {
                        rules.escalating_sooner(settings.inadequate_escalates_sooner)
                    } else {
                        rules
                    },
                    assignment_id: None,
                });
            }
            ActionState::Done => {
                let Some(done_at) = action.done_at else {
                    continue;
                };
                let done_on = ctx.today(done_at);
                let verify_by = ctx
                    .calendar
                    .nth_working_day_after(done_on, settings.verify_within);
                let mut item = item;
                item.work = Work::Verify;
                item.new = false;
                let (until, overdue) = timing(ctx, verify_by, today);
                item.days_until_due = until;
                item.days_overdue = overdue;
                item.due = verify_by.to_string();
                item.due_long = long_date(verify_by);
                chased.push(Chased {
                    item,
                    reference: format!("v{}", action.id),
                    holders: verifiers(org, action),
                    post_as: None,
                    due: verify_by,
                    created_at: done_at,
                    // Reminded on the day verification is due, then chased like work; never
                    // escalated (the tracker and the senior-leadership digest show it).
                    rules: Rules {
                        remind_before: Vec::new(),
                        on_due_date: true,
                        chase_every: settings.notify.chase_every,
                        escalate_at: [0, 0],
                    },
                    assignment_id: None,
                });
            }
            ActionState::Verified => {}
        }
    }
    chased
}

/// Who verifies a done action: whoever raised it while they are here (and are not its owner),
/// else the nearest current manager above them (who may verify it too).
fn verifiers(org: &Org, action: &Action) -> Vec<String> {
    if action.raised_by != action.owner
        && org.get(&action.raised_by).is_some_and(|p| p.is_current())
    {
        return vec![action.raised_by.clone()];
    }
    org.nearest_current_manager(&action.raised_by)
        .filter(|m| m.record.staff_id != action.owner)
        .map(|m| vec![m.record.staff_id.clone()])
        .unwrap_or_default()
}

/// `id` if they are here today: a leaver's actions are handed over by the staff import.
fn current(org: &Org, id: &str) -> Vec<String> {
    org.get(id)
        .filter(|p| p.is_current())
        .map(|p| vec![p.record.staff_id.clone()])
        .unwrap_or_default()
}

/// An action as templates show it: where it came from and when it is due — never its
/// description, which may carry case detail (the page shows it, behind the signed link).
fn action_item(
    ctx: &Context,
    router: &Router,
    org: &Org,
    action: &Action,
    sources: &HashMap<i64, Assignment>,
    today: Date,
) -> Item {
    let source = action.assignment_id.and_then(|id| sources.get(&id));
    let title = match (action.source, source) {
        (ActionSource::Manual, _) | (_, None) => "Action".to_owned(),
        (_, Some(a)) => format!(
            "Action from the {}",
            ctx.schedule
                .activity(&a.activity_id)
                .map(|act| act.title.to_lowercase())
                .unwrap_or_else(|| a.activity_id.clone())
        ),
    };
    let (until, overdue) = timing(ctx, action.due, today);
    Item {
        id: action.id,
        work: Work::Action,
        activity: source.map(|a| a.activity_id.clone()).unwrap_or_default(),
        title,
        period: source.map(|a| a.period_label.clone()).unwrap_or_default(),
        period_long: source
            .map(|a| crate::schedule::period::describe(a.period_start, a.period_end, ctx.fy))
            .unwrap_or_default(),
        due: action.due.to_string(),
        due_long: long_date(action.due),
        days_until_due: until,
        days_overdue: overdue,
        assignee: action.owner.clone(),
        assignee_name: holder_name(ctx, org, &Assignee::Person(action.owner.clone())),
        subject: None,
        subject_name: None,
        new: false,
        manager_name: None,
        before_go_live: false,
        link: router.action_link(&action.owner, action.id, today),
    }
}

/// (working days until due, working days overdue) on `today`.
pub fn timing(ctx: &Context, due: Date, today: Date) -> (Option<u32>, Option<u32>) {
    if today > due {
        (None, Some(ctx.calendar.working_days_between(due, today)))
    } else {
        (Some(ctx.calendar.working_days_between(today, due)), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(first: u32, second: u32) -> Rules {
        Rules {
            remind_before: vec![],
            on_due_date: true,
            chase_every: 3,
            escalate_at: [first, second],
        }
    }

    #[test]
    fn inadequate_actions_escalate_one_level_sooner() {
        assert_eq!(rules(5, 10).escalating_sooner(0).escalate_at, [5, 10]);
        assert_eq!(rules(5, 10).escalating_sooner(1).escalate_at, [1, 5]);
        assert_eq!(rules(5, 10).escalating_sooner(2).escalate_at, [1, 1]);
        assert_eq!(
            rules(5, 0).escalating_sooner(1).escalate_at,
            [1, 0],
            "a level switched off stays off"
        );
    }
}
