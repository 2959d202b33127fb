//! Planning: which assignments the schedule wants for a period, given who works here.
//!
//! **Invariant:** pure — a function of (schedule, calendar, organisation, period). It never reads
//! the clock or the database, so `qaloop plan` and `reconcile` cannot disagree.

use jiff::civil::Date;

use super::Context;
use crate::domain::{Assignee, Assignment, NewAssignment};
use crate::org::{Org, Person};
use crate::schedule::{Activity, FanOut, Period};

/// The assignments `activity` wants for `period`: one per holder of the owner role who was
/// active when the period began (`each`), or one for the role (`role`). A holder who has since
/// left gets no work: theirs goes to their nearest current manager, and the note says why.
pub fn plan_period(
    ctx: &Context,
    activity: &Activity,
    period: &Period,
    org: &Org,
) -> Vec<NewAssignment> {
    let due = activity.due.due_for_period(period, &ctx.calendar);
    let row = |slot: String, assignee: Assignee, note: Option<String>| NewAssignment {
        activity_id: activity.id.clone(),
        period_label: period.label(),
        period_start: period.start,
        period_end: period.end,
        slot,
        assignee,
        subject: None,
        trigger_id: None,
        due,
        note,
    };
    match activity.fan_out {
        FanOut::Role => {
            let role = Assignee::role(&activity.owner_role);
            vec![row(role.to_string(), role, None)]
        }
        FanOut::Each => org
            .holders_active_on(&activity.owner_role, period.start)
            .into_iter()
            .map(|p| {
                let (assignee, note) = current_holder_for(org, p, &activity.owner_role);
                row(p.record.staff_id.clone(), assignee, note)
            })
            .collect(),
        FanOut::PerCompleted => Vec::new(),
    }
}

/// Who should hold work created for `person`: themselves while they are current, else their
/// nearest current manager, else the role.
fn current_holder_for(org: &Org, person: &Person, role: &str) -> (Assignee, Option<String>) {
    if person.is_current() {
        return (Assignee::person(&person.record.staff_id), None);
    }
    let to = org
        .nearest_current_manager(&person.record.staff_id)
        .map(|m| Assignee::person(&m.record.staff_id))
        .unwrap_or_else(|| Assignee::role(role));
    let note = format!("{} has left; assigned to {to}", person.record.staff_id);
    (to, Some(note))
}

/// The assignment a completion of `trigger` (by `completed_by`, on local date `completed_on`)
/// creates for `activity`: owned by the completer's nearest current line manager (the role, if
/// they have none), about the completer, due relative to the completion.
pub fn plan_triggered(
    ctx: &Context,
    activity: &Activity,
    trigger: &Assignment,
    completed_by: &str,
    completed_on: Date,
    org: &Org,
) -> NewAssignment {
    let assignee = org
        .nearest_current_manager(completed_by)
        .map(|m| Assignee::person(&m.record.staff_id))
        .unwrap_or_else(|| Assignee::role(&activity.owner_role));
    NewAssignment {
        activity_id: activity.id.clone(),
        period_label: trigger.period_label.clone(),
        period_start: trigger.period_start,
        period_end: trigger.period_end,
        slot: format!("after:{}", trigger.id),
        assignee,
        subject: Some(completed_by.to_owned()),
        trigger_id: Some(trigger.id),
        due: activity.due.due_after_trigger(completed_on, &ctx.calendar),
        note: None,
    }
}

/// Everything the schedule will assign for periods starting in `from..=to`, in date order:
/// what `qaloop plan` shows and `qaloop check` counts. Triggered work is not included (it
/// depends on completions).
pub fn plan_window(ctx: &Context, org: &Org, from: Date, to: Date) -> Vec<NewAssignment> {
    let mut rows: Vec<NewAssignment> = ctx
        .schedule
        .activities
        .iter()
        .filter_map(|a| a.cadence.map(|c| (a, c)))
        .flat_map(|(activity, cadence)| {
            Period::starting_between(cadence, ctx.fy, from, to)
                .flat_map(move |period| plan_period(ctx, activity, &period, org))
        })
        .collect();
    rows.sort_by(|a, b| {
        (a.period_start, a.due, &a.activity_id, &a.slot).cmp(&(
            b.period_start,
            b.due,
            &b.activity_id,
            &b.slot,
        ))
    });
    rows
}
